"""AWQ (activation-aware weight quantization, W4A16) through llm-compressor's `AWQModifier`.

On the calibration set AWQ measures each input channel's activation magnitude and scales the
weights of salient channels up before quantizing (folding the inverse into the preceding norm or
projection), so the channels that carry large activations lose less. Weight-only: activations stay
float. Asymmetric with a zero point per group by default (AWQ's usual W4A16_ASYM).
Default group size 64, not 128: llm-compressor refuses a group that does not divide a layer's width
(SmolLM2's 576). The per-layer error is of the scaled weights as quantized.
"""

from __future__ import annotations

from quantconf.quantizers.base import Quantizer, check_group_divides, group_bits, register_quantizer
from quantconf.quantizers.llm_compressor import load_compressed_tensors, run_oneshot, scheme, weight_args


def _check_model(hf_config, config) -> None:
    check_group_divides(hf_config, config, " (llm-compressor refuses it)")


def _quantize(model_src, calib_samples, config, out_dir) -> dict:
    from llmcompressor.modifiers.transform.awq import AWQModifier
    from llmcompressor.modifiers.quantization import QuantizationModifier

    # AWQ's scaling search, then the quantization it searched for (llm-compressor 0.14's form of
    # AWQModifier(scheme=...); duo_scaling "both" tries activation-only and activation+weight scales)
    recipe = [AWQModifier(duo_scaling="both"),
              QuantizationModifier(config_groups=scheme(weight_args(config.bits, config.group_size, config.sym)),
                                   ignore=["lm_head"])]
    return run_oneshot(model_src, calib_samples, recipe, config, out_dir, lambda mod: group_bits(
        config.bits, config.group_size, mod.in_features, 16, 0 if config.sym else config.bits))


register_quantizer(Quantizer(
    "awq", quantize=_quantize, load=load_compressed_tensors, reads=("compressed-tensors",),
    check_model=_check_model, library="llmcompressor",
    options=("bits", "group_size", "sym", "calib", "n_samples", "seq_len", "seed"),
    defaults={"group_size": 64, "sym": False}, bits=(4, 8),
    description="AWQ W4A16 (activation-aware channel scaling) via llm-compressor; compressed-tensors"))
