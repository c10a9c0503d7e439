"""Wall time and peak RSS of `quantconf quantize` vs calling GPTQModel directly, same settings.

Default: the embedded model, GPTQ 4-bit g128, pydoc calibration 16 x 512 tokens, 2 threads.
Usage: .venv/bin/python benchmarks/quantize_time.py [--n-samples 16] [--seq-len 512]
"""

import argparse
import tempfile

from _common import run_child

OURS = """
import json, time
from quantconf.quantizers import QuantConfig, run_quantize
cfg = QuantConfig(method="gptq", bits=4, group_size=128, calib="pydoc", n_samples={n}, seq_len={L})
t = time.perf_counter()
run_quantize("default", cfg, "{out}/ours", threads=2, log=lambda m: None)
emit({{"seconds": time.perf_counter() - t}})
"""

DIRECT = """
import json, os, time, torch
os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")
torch.set_num_threads(2)
from quantconf.models import local_model_dir
from quantconf.quantizers.calib_data import build_calibration
from transformers import AutoTokenizer
src = str(local_model_dir("default"))
samples = build_calibration("pydoc", AutoTokenizer.from_pretrained(src), {n}, {L}, 0).samples
from gptqmodel import GPTQModel, QuantizeConfig
os.chdir("{out}")
t = time.perf_counter()
m = GPTQModel.load(src, QuantizeConfig(bits=4, group_size=128, desc_act=False, sym=True, damp_percent=0.01), device="cpu")
m.quantize([{{"input_ids": s, "attention_mask": [1] * len(s)}} for s in samples], batch_size=1)
m.save("{out}/direct")
emit({{"seconds": time.perf_counter() - t}})
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-samples", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=512)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as out:
        direct = run_child(DIRECT.format(n=args.n_samples, L=args.seq_len, out=out))
        ours = run_child(OURS.format(n=args.n_samples, L=args.seq_len, out=out))
    print(f"{'':<22} {'quantize s':>10} {'process wall s':>15} {'peak RSS MiB':>13}")
    print(f"{'GPTQModel directly':<22} {direct['seconds']:>10.1f} {direct['wall_s']:>15} {direct['peak_rss_mib']:>13}")
    print(f"{'quantconf quantize':<22} {ours['seconds']:>10.1f} {ours['wall_s']:>15} {ours['peak_rss_mib']:>13}")
    print(f"overhead: {ours['seconds'] / direct['seconds'] - 1:+.1%} (quantize step; ours includes calibration "
          "sampling, tokenizer save and quantize.json)")


if __name__ == "__main__":
    main()
