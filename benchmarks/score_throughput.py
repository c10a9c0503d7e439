"""Scoring throughput of the default model on 200 items of hellaswag and piqa (CPU).

Prints questions/s and choices/s for the packed and naive scorers at 1 and 2 threads in float32,
and packed in bfloat16 (reported separately: bf16 changes the numbers), plus peak RSS.
Usage: .venv/bin/python benchmarks/score_throughput.py [--limit 200] [--tasks hellaswag,piqa]
"""

import argparse

from _common import SHARED_DATA, run_child

CHILD = """
import json, time, torch
from quantconf.models.loading import load_model
from quantconf.models.runtime import set_threads
from quantconf.tasks import load_task
from quantconf.evaluation import evaluate_task
set_threads({threads})
lm = load_model("default", dtype="{dtype}")
loaded = load_task("{task}", data_dir="{data}", limit={limit})
evaluate_task(lm, load_task("{task}", data_dir="{data}", limit=8), scorer="{scorer}")  # warm-up
t = time.perf_counter()
df = evaluate_task(lm, loaded, batch_size={batch}, scorer="{scorer}")
s = time.perf_counter() - t
n_choices = sum(map(len, df["choices"]))
emit({{"questions_per_s": round(len(df) / s, 2), "choices_per_s": round(n_choices / s, 2),
                  "seconds": round(s, 2)}})
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--tasks", default="hellaswag,piqa")
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    configs = [("packed", "float32", 2), ("naive", "float32", 2), ("packed", "float32", 1), ("packed", "bfloat16", 2)]
    print(f"{'task':<10} {'scorer':<7} {'dtype':<9} {'threads':>7} {'q/s':>7} {'choices/s':>10} {'peak RSS MiB':>13}")
    for task in args.tasks.split(","):
        for scorer, dtype, threads in configs:
            r = run_child(CHILD.format(task=task, data=SHARED_DATA, limit=args.limit, batch=args.batch_size,
                                       scorer=scorer, dtype=dtype, threads=threads))
            print(f"{task:<10} {scorer:<7} {dtype:<9} {threads:>7} {r['questions_per_s']:>7} {r['choices_per_s']:>10} "
                  f"{r['peak_rss_mib']:>13}", flush=True)


if __name__ == "__main__":
    main()
