"""HQQ (half-quadratic quantization) through the `hqq` package: calibration-free, like RTN, but each
group's zero point (and scale) is fitted by a half-quadratic solver that minimises an lp (p < 1)
error of the weights, so outliers weigh less than under RTN's min/max grid.

`HQQLinear` quantizes each linear layer on CPU; its PYTORCH backend computes with exactly the
weights `dequantize()` returns (x @ W_dq^T), so the checkpoint stores those dequantized values as
dense safetensors, which `quantconf eval` reloads with identical numbers. (transformers' HqqConfig
refuses CPU.) Asymmetric by construction (a zero point per group); embeddings and lm_head stay float.
"""

from __future__ import annotations

from quantconf.errors import QuantconfError
from quantconf.quantizers.base import Quantizer, group_bits, layer_record, register_quantizer, relative_error


def _check_model(hf_config, config) -> None:
    if config.group_size == -1:
        return
    for name in ("hidden_size", "intermediate_size"):
        width = getattr(hf_config, name, None)
        if width is not None and width % config.group_size:
            raise QuantconfError(f"hqq group_size {config.group_size} does not divide this model's {name} {width}; "
                                 "choose a group size that does (e.g. 64 or 32)", param="group_size")


def hqq_roundtrip(linear, bits: int, group_size: int):
    """The weights HQQLinear computes with after quantizing `linear` (which is left unchanged)."""
    import torch
    from hqq.core.quantize import BaseQuantizeConfig, HQQBackend, HQQLinear

    HQQLinear.set_backend(HQQBackend.PYTORCH)
    cfg = BaseQuantizeConfig(nbits=bits, group_size=None if group_size == -1 else group_size)
    layer = HQQLinear(linear, quant_config=cfg, compute_dtype=torch.float32, device="cpu", del_orig=False)
    return layer.dequantize().float().reshape(linear.weight.shape)


def _quantize(model_src, tokenizer, calib_samples, config, out_dir) -> dict:
    import hqq
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_src), dtype=torch.float32)
    errors, bits, numel = {}, {}, {}
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear) and "lm_head" not in name:
                w = mod.weight
                wq = hqq_roundtrip(mod, config.bits, config.group_size)
                # fp16 scale and zero per group (hqq's default: neither is itself quantized)
                errors[name] = relative_error(w, wq)
                bits[name] = group_bits(config.bits, config.group_size, w.shape[1], 16, 16)
                numel[name] = w.numel()
                w.copy_(wq)
    model.save_pretrained(out_dir, safe_serialization=True)
    return {**layer_record(errors, bits, numel), "library": f"hqq {hqq.__version__ if hasattr(hqq, '__version__') else ''}".strip(),
            "stored_as": "dense fake-quant safetensors (HQQLinear.dequantize())"}


register_quantizer(Quantizer(
    "hqq", quantize=_quantize, check_model=_check_model, needs_calibration=False, library="hqq",
    options=("bits", "group_size"), defaults={"group_size": 64, "sym": False}, group_sizes=(-1, 32, 64, 128),
    description="half-quadratic quantization (fitted zero points, no data); dense dequantized checkpoint"))
