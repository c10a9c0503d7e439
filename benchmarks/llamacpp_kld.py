"""quantconf's token-level divergence against llama.cpp's own `llama-perplexity --kl-divergence`, on the same model
files and the same text.

The full model is the default model's GGUF (Q4_1: llama.cpp computes with its Q4_1 blocks; quantconf with their
dequantized values, the same numbers as weights); each quantized model is quantconf's `gguf` method at a scheme
(Q8_0, Q4_0): its `model.gguf` for llama.cpp, its dense dequantized checkpoint for quantconf (the same weight
values). llama.cpp scores the text in chunks of --ctx tokens, each token of a chunk's second half predicted from
the chunk before it (`llama-perplexity`'s rule); quantconf's per-token values are taken on exactly those
positions (one window per chunk). Printed per scheme: mean, median, p99 and max KLD, same top token % and the
perplexity ratio from both, and their differences.

Why they differ: llama.cpp quantizes the activations to 8 bits (q8_0 / q8_1 blocks) in its matrix products for
both models and accumulates in its own order; quantconf runs float32 products on the dequantized weights. Both
models of a pair see that rounding in llama.cpp, so the KL between them keeps most of it; the text is tokenized by
each tool's own tokenizer (a difference would show as a token count mismatch, printed).

Needs a llama.cpp build with the perplexity tool (the llama-cpp-python source distribution carries llama.cpp):
    pip download llama-cpp-python --no-binary :all: --no-deps -d /tmp/llcpp && tar xzf ... (vendor/llama.cpp)
    cmake -B build -DLLAMA_CURL=OFF -DLLAMA_BUILD_TOOLS=ON -DCMAKE_BUILD_TYPE=Release
    cmake --build build --target llama-perplexity -j2
Usage: .venv/bin/python benchmarks/llamacpp_kld.py --bin LLAMA_CPP/build/bin [--schemes Q8_0,Q4_0] [--chunks 16]
"""

import argparse
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np

STATS = {"kld_mean": r"Mean\s+KLD:\s+([-\d.e+]+)", "kld_median": r"Median\s+KLD:\s+([-\d.e+]+)",
         "kld_p99": r"99\.0%\s+KLD:\s+([-\d.e+]+)", "kld_max": r"Maximum\s+KLD:\s+([-\d.e+]+)",
         "same_top": r"Same top p:\s+([-\d.e+]+)", "ppl_ratio": r"Mean\s+PPL\(Q\)/PPL\(base\)\s*:\s+([-\d.e+]+)"}


def llama_stats(output: str) -> dict:
    out = {}
    for name, pattern in STATS.items():
        m = re.search(pattern, output)
        out[name] = float(m.group(1)) if m else float("nan")
    m = re.search(r"(\d+) chunks", output) or re.search(r"calculating perplexity over (\d+) chunks", output)
    out["chunks"] = int(m.group(1)) if m else -1
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True, help="llama.cpp's build/bin folder (with llama-perplexity)")
    ap.add_argument("--schemes", default="Q8_0,Q4_0")
    ap.add_argument("--chunks", type=int, default=16)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--text", default="pydoc")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default=None, help="a folder for the text, checkpoints and logits (default: a temp dir)")
    args = ap.parse_args()

    import torch

    import quantconf as qc
    from quantconf.corpus.divergence import token_divergence
    from quantconf.models.builtin import default_gguf_path
    from quantconf.models.loading import load_model
    from quantconf.models.runtime import set_threads
    from quantconf.quantizers.calib_data import calib_text

    set_threads(args.threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="llamacpp-kld-"))
    work.mkdir(parents=True, exist_ok=True)
    full = load_model("default")
    body, source = calib_text(args.text, 0, None)
    need = args.chunks * args.ctx
    ids = full.tokenizer(body, add_special_tokens=False)["input_ids"]
    if len(ids) < need + 1:
        raise SystemExit(f"text {args.text} has {len(ids)} tokens; {need + 1} needed")
    # the text cut after the tokens llama.cpp will use (a little more: it stops at whole chunks)
    text = full.tokenizer.decode(ids[:need + 64])
    text_file = work / "text.txt"
    text_file.write_text(text)
    ids = full.tokenizer(text, add_special_tokens=False)["input_ids"][:need]
    perplexity = str(Path(args.bin) / "llama-perplexity")
    common = ["-f", str(text_file), "-c", str(args.ctx), "--chunks", str(args.chunks), "-t", str(args.threads),
              "-b", str(args.ctx)]
    base = work / "base.kld"
    run = subprocess.run([perplexity, "-m", str(default_gguf_path()), *common, "--kl-divergence-base", str(base)],
                         capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(run.stderr[-3000:])
    n_llama = re.search(r"tokenizing the input .*?\n.*?(\d+) tokens", run.stderr + run.stdout, re.S)
    print(f"text {source}: {len(ids)} tokens by quantconf's tokenizer in {args.chunks} chunks of {args.ctx}"
          + (f"; llama.cpp's log: {n_llama.group(1)} tokens" if n_llama else ""))
    half = args.ctx // 2
    quantize = Path(args.bin) / "llama-quantize"
    if quantize.is_file():  # llama.cpp's own rounding floor: the full model's weights in F32, no 8-bit activations
        f32 = work / "full-f32.gguf"
        if not f32.is_file():
            subprocess.run([str(quantize), "--allow-requantize", str(default_gguf_path()), str(f32), "F32", "1"],
                           capture_output=True, check=True)
        run = subprocess.run([perplexity, "-m", str(f32), *common, "--kl-divergence-base", str(base), "--kl-divergence"],
                             capture_output=True, text=True)
        floor = llama_stats(run.stdout + run.stderr)
        print(f"llama.cpp's floor: the full model's own weights in F32 against its Q4_1 path (8-bit activations): KLD "
              f"mean {floor['kld_mean']:.5f}, p99 {floor['kld_p99']:.5f}, same top {floor['same_top']:.2f}% "
              "(quantconf: 0, the same float32 numbers)")
    for scheme in args.schemes.split(","):
        ckpt = work / f"gguf-{scheme}"
        if not (ckpt / "model.gguf").is_file():
            qc.quantize("default", ckpt, method="gguf", scheme=scheme, bits=int(scheme[1]), overwrite=True, quiet=True)
        run = subprocess.run([perplexity, "-m", str(ckpt / "model.gguf"), *common, "--kl-divergence-base", str(base),
                              "--kl-divergence"], capture_output=True, text=True)
        if run.returncode:
            raise SystemExit(run.stderr[-3000:])
        theirs = llama_stats(run.stdout + run.stderr)
        quant = load_model(str(ckpt))
        parts = []
        for c in range(args.chunks):  # llama.cpp's rule: tokens half+1 .. ctx-1 of each chunk, from the chunk before
            chunk = ids[c * args.ctx:(c + 1) * args.ctx]
            td = token_divergence(full.model, quant.model, chunk, window=args.ctx, stride=args.ctx)
            parts.append(td.subset(np.arange(len(td)) >= half))  # td row j predicts chunk token j + 1
        kld = np.concatenate([p.kld for p in parts])
        same = np.concatenate([p.same_top for p in parts])
        lf, lq = (np.log(np.concatenate([getattr(p, k) for p in parts])) for k in ("p_full", "p_quant"))
        ours = {"kld_mean": float(kld.mean()), "kld_median": float(np.median(kld)),
                "kld_p99": float(np.quantile(kld, 0.99)), "kld_max": float(kld.max()),
                "same_top": float(same.mean() * 100), "ppl_ratio": float(np.exp(lf.mean() - lq.mean()))}
        print(f"\n{scheme} ({len(kld)} scored tokens here; llama.cpp: {theirs['chunks']} chunks)")
        print(f"  {'statistic':<11} {'llama.cpp':>11} {'quantconf':>11} {'difference':>11} {'relative':>9}")
        for k in STATS:
            a, b = theirs[k], ours[k]
            print(f"  {k:<11} {a:>11.5f} {b:>11.5f} {b - a:>+11.5f} {(b - a) / a if a else float('nan'):>+9.1%}")
        del quant
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    print(f"\nwork dir: {work}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
