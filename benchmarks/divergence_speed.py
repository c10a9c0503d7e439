"""Token-level divergence against what it replaces: two perplexity runs (full and quantized) on the same tokens.
Both models are loaded once; then, alternating for --rounds, `token_divergence(full, quant, ids)` (both
forward passes plus the per-token KL both ways over the vocabulary in float64) and `perplexity(full, ids)` +
`perplexity(quant, ids)`. Prints min and median of each and their ratio (issue 37's target: divergence
<= 1.2x the two ppl runs), and the divergence's own numbers, so a run also checks that the two agree
(the perplexity ratio from the divergence equals the ratio of the two perplexities).
Usage: .venv/bin/python benchmarks/divergence_speed.py [QUANT_DIR] [--text pydoc] [--tokens 4096] [--rounds 3]
QUANT_DIR: a quantized default model (default: runs/bench-rtn4, made with RTN w4g64 when absent).
"""

import argparse
import statistics
import time

from _common import ROOT


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("quant_dir", nargs="?", default=str(ROOT / "runs" / "bench-rtn4"))
    ap.add_argument("--text", default="pydoc")
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    import quantconf as qc
    from quantconf.corpus.divergence import divergence_statistics, token_divergence
    from quantconf.models.loading import load_model
    from quantconf.corpus.perplexity import perplexity, text_ids
    from quantconf.models.runtime import set_threads
    from quantconf.tasks import TaskOptions

    set_threads(args.threads)
    quant_dir = ROOT / args.quant_dir
    if not (quant_dir / "quantize.json").is_file():
        qc.quantize("default", quant_dir, method="rtn", bits=4, group_size=64, overwrite=True)
    full, quant = load_model("default"), load_model(str(quant_dir))
    ids, source = text_ids(full.tokenizer, args.text, args.tokens, TaskOptions(seed=0))
    div, ppl = [], []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        td = token_divergence(full.model, quant.model, ids)
        div.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        p_full, p_quant = perplexity(full.model, ids), perplexity(quant.model, ids)
        ppl.append(time.perf_counter() - t0)
    stats = divergence_statistics(td, n_boot=0)
    print(f"{len(ids)} tokens of {source}, windows of 512 / stride 256, {args.rounds} rounds alternating")
    print(f"divergence (both models + KL)   min {min(div):.2f} s  median {statistics.median(div):.2f} s")
    print(f"two ppl runs (full + quant)     min {min(ppl):.2f} s  median {statistics.median(ppl):.2f} s")
    print(f"ratio divergence / two ppl runs: {min(div) / min(ppl):.2f} (min), "
          f"{statistics.median(div) / statistics.median(ppl):.2f} (median)")
    print(f"check: ppl ratio from the divergence {stats['ppl_ratio']['estimate']:.6f}, from the two ppl runs "
          f"{p_quant / p_full:.6f}; KL mean {stats['kld_mean']['estimate']:.4f} nats")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
