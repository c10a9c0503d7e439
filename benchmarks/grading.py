"""Grading speed: truthfulqa_gen as lm-eval grades it (process_results_gen: BLEU, and ROUGE through rouge_score's
1,000-fold bootstrap of each single score) against quantconf's equal (tasks/lm_eval_graders), and the wall time
of `quantconf import-generations` on an 817-row seed-format CSV.

The CSV is made from ../shared's TruthfulQA generation set (its own answers as the "model_prediction": a correct
one, an incorrect one, the best answer, the empty answer, in turn; a judge score column), so no model and no
seed file are needed. Grading is timed row by row in this process, both ways on the same rows, --rounds times
alternating; min and median per-row ratios are printed, and every row's metrics must be identical (values and
types) or the script exits 1. lm-eval takes ~1.6 s a row here, so by default it grades the first --lm-eval-rows
rows; --all grades all 817 both ways (~25 minutes).
Usage: .venv/bin/python benchmarks/grading.py [--lm-eval-rows 40] [--rounds 3] [--all]
"""

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, SHARED_DATA

TRUTHFULQA = SHARED_DATA / "truthfulqa" / "truthful_qa" / "generation" / "validation.jsonl"


def seed_csv(rows: list[dict], answers: list[str], path: Path) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Type", "Category", "Question", "Best Answer", "Correct Answers", "Incorrect Answers", "Source",
                    "bench GPT-info", "bench GPT-info acc", "model_prediction"])
        for i, (r, a) in enumerate(zip(rows, answers)):
            w.writerow([r["type"], r["category"], r["question"], r["best_answer"], "; ".join(r["correct_answers"]),
                        "; ".join(r["incorrect_answers"]), r["source"], (i % 10) / 10, i % 2, a])
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lm-eval-rows", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--all", action="store_true", help="lm-eval grades all 817 rows (~25 min)")
    args = ap.parse_args()
    if not TRUTHFULQA.is_file():
        raise SystemExit(f"{TRUTHFULQA} absent: the benchmark needs ../shared/data")
    import datasets
    from lm_eval.tasks.truthfulqa import utils

    from quantconf.tasks.lm_eval_graders import fast_process_results

    raw = [json.loads(line) for line in TRUTHFULQA.read_text().splitlines()]
    docs = list(utils.process_docs_gen(datasets.Dataset.from_list(raw)))
    answers = [[d["correct_answers"][0], d["incorrect_answers"][-1], d["best_answer"], ""][i % 4]
               for i, d in enumerate(docs)]
    fast = fast_process_results(utils.process_results_gen)
    if fast is None:
        raise SystemExit("lm-eval's process_results_gen is not the one lm_eval_graders checked: no fast equal")
    n = len(docs) if args.all else min(args.lm_eval_rows, len(docs))

    ratios, lm_times, fast_times = [], [], []
    for _ in range(args.rounds if not args.all else 1):
        t = time.perf_counter()
        expected = [utils.process_results_gen(d, [a]) for d, a in zip(docs[:n], answers[:n])]
        lm_times.append((time.perf_counter() - t) / n)
        t = time.perf_counter()
        got = [fast(d, [a]) for d, a in zip(docs, answers)]
        fast_times.append((time.perf_counter() - t) / len(docs))
        ratios.append(lm_times[-1] / fast_times[-1])
        bad = [i for i, (e, g) in enumerate(zip(expected, got)) if list(e) != list(g)
               or any(e[k] != g[k] or type(e[k]) is not type(g[k]) for k in e)]
        if bad:
            print(f"NOT EQUAL on rows {bad[:20]}")
            sys.exit(1)
    print(f"grading truthfulqa_gen, per row: lm-eval {min(lm_times) * 1e3:.1f} ms (min of {len(lm_times)}, "
          f"{n} rows), quantconf {min(fast_times) * 1e3:.2f} ms ({len(docs)} rows)")
    print(f"speed ratio: min {min(ratios):.0f}x, median {statistics.median(ratios):.0f}x; "
          f"identical on {n} rows x {len(expected[0])} metrics")

    with tempfile.TemporaryDirectory() as tmp:
        path = seed_csv(raw, answers, Path(tmp) / "bench_pred.csv")
        t = time.perf_counter()
        done = subprocess.run([str(Path(sys.executable).with_name("quantconf")), "import-generations", str(path),
                               "--out", str(Path(tmp) / "out")], cwd=ROOT, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if done.returncode:
            sys.stderr.write(done.stderr[-3000:])
            raise SystemExit("import-generations failed")
        print(f"quantconf import-generations of an {len(raw)}-row seed CSV: {wall:.1f} s wall "
              f"(process start, imports and parquet write included; target <= 60 s)")


if __name__ == "__main__":
    main()
