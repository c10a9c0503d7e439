"""Why does GPTQ's checkpoint depend on the torch thread count, and how much?

Quantizes the default model with GPTQ (same seed, same calibration tokens) at --threads 1 and 2,
for each damp value given, and prints: the share of quantized weights whose integer level differs,
the largest dequantized-weight difference (in units of the group's step), in which layers the first
differences appear, and the log-likelihood / accuracy difference on a few arc_easy items.
Usage: .venv/bin/python benchmarks/gptq_threads.py [--damp 0.01,0.1] [--n-samples 8] [--seq-len 256] [--limit 40]
"""

import argparse
import json
import tempfile
from pathlib import Path

from _common import SHARED_DATA, run_child

QUANTIZE = """
from quantconf.quantizers import QuantConfig, run_quantize
run_quantize("default", QuantConfig(method="gptq", bits=4, group_size=128, calib="pydoc", n_samples={n}, seq_len={L},
             damp={damp}, seed=0), __import__("pathlib").Path("{out}"), threads={threads}, quiet=True, log=lambda m: None)
emit({{}})
"""

COMPARE = """
import numpy as np, torch
from quantconf.models.loading import load_model
from quantconf.evaluation import evaluate_task
from quantconf.tasks import load_task
torch.set_num_threads(2)
a, b = load_model("{a}"), load_model("{b}")
rows, first = [], None
for (name, pa), (_, pb) in zip(a.model.named_parameters(), b.model.named_parameters()):
    if pa.dim() != 2 or "embed" in name or "lm_head" in name:
        continue
    d = (pa - pb).abs()
    step = pa.abs().max().item() / 7  # a 4-bit symmetric step of the largest group, for scale
    changed = (d > 1e-7).float().mean().item()
    rows.append((name, changed, d.max().item() / step))
    if first is None and changed > 0:
        first = name
task = load_task("arc_easy", data_dir="{data}", limit={limit})
la = evaluate_task(a, task)["loglik"].tolist()
lb = evaluate_task(b, task)["loglik"].tolist()
gold = [q.gold for q in task.questions]
acc = lambda ll: float(np.mean([int(np.argmax(x) == g) for x, g in zip(ll, gold)]))
diff = max(abs(x - y) for ra, rb in zip(la, lb) for x, y in zip(ra, rb))
emit({{"share_changed": float(np.mean([r[1] for r in rows])), "max_diff_in_steps": max(r[2] for r in rows),
      "first_layer_with_differences": first, "layers_changed": sum(r[1] > 0 for r in rows), "layers": len(rows),
      "acc_threads1": acc(la), "acc_threads2": acc(lb), "max_abs_delta_loglik": diff}})
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--damp", default="0.01,0.1")
    ap.add_argument("--n-samples", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--limit", type=int, default=40)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for damp in [float(x) for x in args.damp.split(",")]:
            outs = {}
            for threads in (1, 2):
                out = Path(tmp) / f"gptq-d{damp}-t{threads}"
                r = run_child(QUANTIZE.format(n=args.n_samples, L=args.seq_len, damp=damp, out=out, threads=threads))
                outs[threads] = out
                print(f"damp {damp} threads {threads}: quantized in {r['wall_s']} s, peak RSS {r['peak_rss_mib']} MiB")
            res = run_child(COMPARE.format(a=outs[1], b=outs[2], data=SHARED_DATA, limit=args.limit))
            print(f"damp {damp}, {args.n_samples} x {args.seq_len} tokens, threads 1 vs 2:", json.dumps(res))


if __name__ == "__main__":
    main()
