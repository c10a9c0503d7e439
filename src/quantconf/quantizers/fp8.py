"""FP8 W8A8 (llm-compressor's FP8_DYNAMIC): float8 e4m3 weights with one scale per output channel and
float8 activations with a scale per token, measured at inference; no calibration data.

Deployed, it runs on GPUs with FP8 tensor cores (Hopper, Ada). Here compressed-tensors simulates it
exactly on CPU: the reloaded checkpoint keeps fp8-representable weights and quantize-dequantizes
each Linear's input to float8 in every forward, so `quantconf eval` measures FP8's effect on CPU.
"""

from __future__ import annotations

from quantconf.quantizers.base import Quantizer, register_quantizer
from quantconf.quantizers.llm_compressor import load_compressed_tensors, run_oneshot


def _quantize(model_src, calib_samples, config, out_dir) -> dict:
    from llmcompressor.modifiers.quantization import QuantizationModifier

    recipe = [QuantizationModifier(scheme="FP8_DYNAMIC", targets="Linear", ignore=["lm_head"])]
    facts = run_oneshot(model_src, [], recipe, config, out_dir, lambda mod: 8 + 16 / mod.in_features)
    return {**facts, "activations": {"bits": 8, "type": "float8_e4m3", "scales": "dynamic"}}


register_quantizer(Quantizer(
    "fp8", quantize=_quantize, load=load_compressed_tensors, reads=("compressed-tensors",),
    needs_calibration=False, library="llmcompressor", options=(),
    defaults={"bits": 8, "group_size": -1, "activations": "dynamic"}, bits=(8,), label=lambda c: "fp8-dynamic",
    description="FP8 e4m3 weights + dynamic per-token FP8 activations (simulated exactly on CPU)"))
