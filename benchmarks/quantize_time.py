"""Wall time and peak RSS of `quantconf quantize` vs calling each method's library directly, same settings.

Every method on the embedded default model, 2 threads; the methods that use data get pydoc
calibration (16 x 256 tokens by default). Each measurement is a fresh process (its own peak RSS);
quantconf and the direct call alternate, `--repeats` times, and the script prints min and median of
both and their ratios (goal: quantconf <= 1.1x the library). quantconf's time includes what the
direct call does not: drawing the calibration windows, the per-layer error of every layer (for GPTQ a
reload of the checkpoint), quantize.json. Both sides import torch and transformers' auto classes before
the clock starts; each method's library is imported inside the timed part on both sides.
RTN has no library (quantconf is the implementation).
Usage: .venv/bin/python benchmarks/quantize_time.py [--methods gguf,bnb] [--repeats 3] [--n-samples 16] [--seq-len 256]
"""

import argparse
import statistics
import tempfile

from _common import run_child

SETUP = """
import os, time, torch
os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")
torch.set_num_threads(2)
from quantconf.models.builtin import local_model_dir
from quantconf.quantizers.calib_data import build_calibration
from transformers import AutoModelForCausalLM, AutoTokenizer
src = str(local_model_dir("default"))
samples = build_calibration("pydoc", AutoTokenizer.from_pretrained(src), {n}, {L}, 0).samples
t = time.perf_counter()
"""

OURS = """
import time, torch
torch.set_num_threads(2)
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # imported before the clock, as in SETUP
from quantconf.quantizers import QuantConfig, run_quantize
cfg = QuantConfig.for_method("{method}", **{options})
t = time.perf_counter()
record = run_quantize("default", cfg, "{out}/ours-{i}", threads=2, quiet=True, log=lambda m: None)
emit({{"seconds": time.perf_counter() - t, "extra_file_seconds": record.get("gguf_file_seconds", 0)}})
"""

LLMCOMPRESSOR = """
from datasets import Dataset
from llmcompressor import oneshot
from quantconf.quantizers.llm_compressor import cpu_pinning_disabled
model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
data = dict(dataset=Dataset.from_list([{{"input_ids": s, "attention_mask": [1] * len(s)}} for s in samples]),
            max_seq_length={L}, num_calibration_samples={n}, shuffle_calibration_samples=False) if {uses_data} else {{}}
with cpu_pinning_disabled():
    oneshot(model=model, recipe=RECIPE, **data)
model.save_pretrained("{out}/direct-{i}", save_compressed=True)
"""

DIRECT = {
    "gptq": """
from gptqmodel import GPTQModel, QuantizeConfig
os.chdir("{out}")
m = GPTQModel.load(src, QuantizeConfig(bits=4, group_size=64, desc_act=False, sym=True, damp_percent=0.01), device="cpu")
m.quantize([{{"input_ids": s, "attention_mask": [1] * len(s)}} for s in samples], batch_size=1)
m.save("{out}/direct-{i}")
""",
    "awq": """
from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
from llmcompressor.modifiers.quantization import QuantizationModifier
from llmcompressor.modifiers.transform.awq import AWQModifier
w = QuantizationArgs(num_bits=4, type="int", symmetric=False, strategy="group", group_size=64)
RECIPE = [AWQModifier(duo_scaling="both"), QuantizationModifier(
    config_groups={{"g": QuantizationScheme(targets=["Linear"], weights=w)}}, ignore=["lm_head"])]
""" + LLMCOMPRESSOR,
    "w8a8": """
from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
from llmcompressor.modifiers.quantization import QuantizationModifier
from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier
w = QuantizationArgs(num_bits=8, type="int", symmetric=True, strategy="channel")
a = QuantizationArgs(num_bits=8, type="int", symmetric=True, strategy="tensor", dynamic=False)
RECIPE = [SmoothQuantModifier(smoothing_strength=0.8), QuantizationModifier(
    config_groups={{"g": QuantizationScheme(targets=["Linear"], weights=w, input_activations=a)}}, ignore=["lm_head"])]
""" + LLMCOMPRESSOR,
    "fp8": """
from llmcompressor.modifiers.quantization import QuantizationModifier
RECIPE = [QuantizationModifier(scheme="FP8_DYNAMIC", targets="Linear", ignore=["lm_head"])]
""" + LLMCOMPRESSOR,
    "bnb": """
from transformers import BitsAndBytesConfig
cfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
model = AutoModelForCausalLM.from_pretrained(src, quantization_config=cfg, dtype=torch.float32, device_map="cpu")
model.save_pretrained("{out}/direct-{i}")
""",
    "gguf": """
from gguf import GGMLQuantizationType, quants
model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
with torch.no_grad():
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and "lm_head" not in name:
            q = quants.quantize(mod.weight.numpy(), GGMLQuantizationType.Q4_0)
            mod.weight.copy_(torch.from_numpy(quants.dequantize(q, GGMLQuantizationType.Q4_0)))
model.save_pretrained("{out}/direct-{i}")
""",
    "hqq": """
from hqq.core.quantize import BaseQuantizeConfig, HQQBackend, HQQLinear
HQQLinear.set_backend(HQQBackend.PYTORCH)
model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
with torch.no_grad():
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and "lm_head" not in name:
            h = HQQLinear(mod, quant_config=BaseQuantizeConfig(nbits=4, group_size=64), compute_dtype=torch.float32,
                          device="cpu", del_orig=False)
            mod.weight.copy_(h.dequantize().reshape(mod.weight.shape))
model.save_pretrained("{out}/direct-{i}")
""",
}

CONFIGS = {  # the same settings as DIRECT above
    "gptq": {"bits": 4, "group_size": 64, "calib": "pydoc"},
    "awq": {"bits": 4, "group_size": 64, "calib": "pydoc"},
    "w8a8": {"activations": "static", "smoothquant_alpha": 0.8, "calib": "pydoc"},
    "fp8": {}, "bnb": {"scheme": "nf4"}, "gguf": {"scheme": "Q4_0"}, "hqq": {"bits": 4, "group_size": 64},
    "rtn": {"bits": 4, "group_size": 64},
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", default="rtn,hqq,gguf,bnb,fp8,w8a8,awq,gptq")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n-samples", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    args = ap.parse_args()
    n, L = args.n_samples, args.seq_len
    print(f"{'method':<6} {'who':<10} {'min s':>7} {'median s':>9} {'peak RSS MiB':>13}   ratio ours/direct (min, median)")
    for method in args.methods.split(","):
        options = dict(CONFIGS[method])
        if "calib" in options:
            options.update(n_samples=n, seq_len=L)
        ours, direct = [], []
        with tempfile.TemporaryDirectory() as out:
            for i in range(args.repeats):
                if method in DIRECT:
                    code = SETUP + DIRECT[method] + 'emit({{"seconds": time.perf_counter() - t}})\n'
                    direct.append(run_child(code.format(n=n, L=L, out=out, i=i, uses_data="calib" in options)))
                ours.append(run_child(OURS.format(method=method, options=repr(options), out=out, i=i)))
        rows = [("quantconf", ours)] + ([("direct", direct)] if direct else [])
        for who, runs in rows:
            secs = [r["seconds"] for r in runs]
            print(f"{method:<6} {who:<10} {min(secs):>7.1f} {statistics.median(secs):>9.1f} "
                  f"{max(r['peak_rss_mib'] for r in runs):>13.0f}", end="")
            if who == "direct":
                o, d = [r["seconds"] for r in ours], secs
                print(f"   {min(o) / min(d):.2f}x, {statistics.median(o) / statistics.median(d):.2f}x", end="")
                extra = [r["seconds"] - r.get("extra_file_seconds", 0) for r in ours]
                if any(r.get("extra_file_seconds") for r in ours):  # gguf also writes model.gguf; direct does not
                    print(f"; without writing model.gguf {min(extra) / min(d):.2f}x, "
                          f"{statistics.median(extra) / statistics.median(d):.2f}x", end="")
            print(flush=True)


if __name__ == "__main__":
    main()
