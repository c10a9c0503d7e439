"""The same small study through the local and the Ray executor: wall time of each and the overhead ratio.

The study: the default model, full + RTN w4 g64 + RTN w3 g64, piqa and arc_easy (first --limit items
of ../shared/data), bootstrap 200. Each run starts from an empty study dir in its own child process
(Ray starts a local 2-CPU instance inside it: its start-up is part of the cost), --rounds times,
alternating the executors so slow spells of this shared machine hit both. Prints every run, the min
and median ratio ray/local (goal: <= 1.15 on 2 cores, where Ray cannot run much in parallel), and
checks the two executors' summary.csv numbers are equal.
Usage: .venv/bin/python benchmarks/study_executors.py [--limit 60] [--rounds 2] [--shards 1]
"""

import argparse
import tempfile

import numpy as np

from _common import SHARED_DATA, run_child

RUN = """
import json, time
from pathlib import Path
import pandas as pd
from quantconf.study import load_study, run_study
study = load_study(data={{"models": ["default"], "tasks": ["piqa", "arc_easy"], "limit": {limit}, "bootstrap": 200,
                         "data_dir": "{data}", "threads": 2, "shards": {shards},
                         "variants": [{{"method": "rtn", "bits": [4, 3], "group_size": 64}}]}})
t = time.perf_counter()
run_study(study, Path("{out}"), executor="{executor}", log=lambda m: None)
seconds = time.perf_counter() - t
df = pd.read_csv(Path("{out}") / "summary.csv")
emit({{"seconds": seconds, "summary": df[[c for c in df.columns if "second" not in c]].to_json()}})
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--shards", type=int, default=1)
    args = ap.parse_args()
    # the float copy of the default model is made once, before any timing
    run_child("from quantconf.models.loading import load_model\nload_model('default')\nemit({})")
    times = {"local": [], "ray": []}
    summaries = {}
    for _ in range(args.rounds):
        for executor in ("local", "ray"):
            with tempfile.TemporaryDirectory() as tmp:
                res = run_child(RUN.format(limit=args.limit, data=SHARED_DATA, out=f"{tmp}/s", executor=executor,
                                           shards=args.shards))
            times[executor].append(res["wall_s"])
            summaries[executor] = res["summary"]
            print(f"{executor:<6} study {res['seconds']:.1f}s, process {res['wall_s']:.1f}s, "
                  f"peak RSS {res['peak_rss_mib']} MiB", flush=True)
    lo, hi = min(times["local"]), min(times["ray"])
    print(f"ray/local wall time: min {hi / lo:.2f}x, median {np.median(times['ray']) / np.median(times['local']):.2f}x "
          f"(local {[round(t, 1) for t in times['local']]}, ray {[round(t, 1) for t in times['ray']]})")
    print("summary numbers equal:", summaries["local"] == summaries["ray"])


if __name__ == "__main__":
    main()
