"""Seconds per task of `qc.noise_floor` (multiple choice): n questions, R replicates, n_boot resamples.
Synthetic predictions (4 choices, a full model right on ~60% of questions, replicates = full + noise), so no
model is needed; --repeat runs, min and median printed. Target: <= 1 s per task at n=400, R=5, n_boot=400.
Usage: .venv/bin/python benchmarks/noise_floor_speed.py [--n 400] [--replicates 5] [--boot 400] [--repeat 5]
       [--profile]   (cProfile's 25 most expensive functions of one run)"""

import argparse
import statistics
import time

import numpy as np
import pandas as pd

import quantconf as qc


def frame(ll, gold):
    n, k = ll.shape
    return pd.DataFrame({"doc_id": range(n), "task": "t", "choices": [[f"c{i}" for i in range(k)]] * n,
                         "gold": list(gold), "loglik": [list(r) for r in ll], "n_tokens": [[1] * k] * n,
                         "n_chars": [[1] * k] * n, "n_bytes": [[1] * k] * n, "is_greedy": [[False] * k] * n})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--replicates", type=int, default=5)
    ap.add_argument("--boot", type=int, default=400)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n, k = args.n, 4
    gold = rng.integers(0, k, n)
    full = rng.normal(0, 1, (n, k))
    full[np.arange(n), gold] += rng.random(n) < 0.6
    reps = [frame(full + rng.normal(0, 0.3, (n, k)), gold) for _ in range(args.replicates)]
    full_df = frame(full, gold)
    qc.noise_floor(full_df, reps, n_boot=20)  # imports and first-call set-up out of the timing
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.runcall(qc.noise_floor, full_df, reps, n_boot=args.boot)
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
        return
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        qc.noise_floor(full_df, reps, n_boot=args.boot)
        times.append(time.perf_counter() - t)
    print(f"qc.noise_floor, one multiple-choice task: n={n}, {args.replicates} replicates, n_boot={args.boot}: "
          f"min {min(times):.2f} s, median {statistics.median(times):.2f} s per task (target <= 1 s)")


if __name__ == "__main__":
    main()
