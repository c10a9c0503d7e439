"""Seconds for bootstrap CIs of every calibration metric: 100k questions x 1000 resamples, 4 choices.
Usage: .venv/bin/python benchmarks/bootstrap_speed.py [--n 100000] [--boot 1000]"""

import argparse
import time

import numpy as np

from quantconf.analysis.metrics import bootstrap_metrics

ap = argparse.ArgumentParser()
ap.add_argument("--n", type=int, default=100_000)
ap.add_argument("--boot", type=int, default=1000)
ap.add_argument("--k", type=int, default=4)
args = ap.parse_args()
rng = np.random.default_rng(0)
probs = rng.dirichlet(np.ones(args.k), args.n)
gold = rng.integers(0, args.k, args.n)
t = time.perf_counter()
bootstrap_metrics(probs, gold, n_boot=args.boot)
print(f"bootstrap of all metrics: n={args.n}, k={args.k}, {args.boot} resamples: {time.perf_counter() - t:.1f} s")
