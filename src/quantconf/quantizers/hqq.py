"""HQQ (half-quadratic quantization) through the `hqq` package: calibration-free, like RTN, but each
group's zero point (and scale) is fitted by a half-quadratic solver that minimises an lp (p < 1)
error of the weights, so outliers weigh less than under RTN's min/max grid.

`HQQLinear` quantizes each linear layer on CPU; its PYTORCH backend computes with exactly the
weights `dequantize()` returns (x @ W_dq^T), so the checkpoint stores those dequantized values as
dense safetensors, which `quantconf eval` reloads with identical numbers. (transformers' HqqConfig
refuses CPU.) Asymmetric by construction (a zero point per group); embeddings and lm_head stay float.
"""

from __future__ import annotations

from quantconf.quantizers.base import Quantizer, check_group_divides, fake_quantize_linears, group_bits, register_quantizer


def _check_model(hf_config, config) -> None:
    check_group_divides(hf_config, config, "")


def hqq_roundtrip(linear, bits: int, group_size: int):
    """The weights HQQLinear computes with after quantizing `linear` (which is left unchanged)."""
    import torch
    from hqq.core.quantize import BaseQuantizeConfig, HQQBackend, HQQLinear

    HQQLinear.set_backend(HQQBackend.PYTORCH)
    cfg = BaseQuantizeConfig(nbits=bits, group_size=None if group_size == -1 else group_size)
    layer = HQQLinear(linear, quant_config=cfg, compute_dtype=torch.float32, device="cpu", del_orig=False)
    return layer.dequantize().float().reshape(linear.weight.shape)


def _quantize(model_src, calib_samples, config, out_dir) -> dict:
    import hqq

    def layer(mod):  # fp16 scale and zero per group (hqq's default: neither is itself quantized)
        return (hqq_roundtrip(mod, config.bits, config.group_size),
                group_bits(config.bits, config.group_size, mod.in_features, 16, 16))

    return {**fake_quantize_linears(model_src, out_dir, layer),
            "library": f"hqq {getattr(hqq, '__version__', '')}".strip(),
            "stored_as": "dense fake-quant safetensors (HQQLinear.dequantize())"}


register_quantizer(Quantizer(
    "hqq", quantize=_quantize, check_model=_check_model, needs_calibration=False, library="hqq",
    options=("bits", "group_size"), defaults={"group_size": 64, "sym": False}, group_sizes=(-1, 32, 64, 128),
    description="half-quadratic quantization (fitted zero points, no data); dense dequantized checkpoint"))
