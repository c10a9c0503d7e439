"""Round-to-nearest (RTN): the baseline — quantize each weight group independently, no data.

Per output row and group of `group_size` input columns (the whole row for -1; when the group size
does not divide a layer's width, the last group is shorter, as GPTQModel does), with
maxq = 2^bits - 1:
  asymmetric: scale = (max - min) / maxq, zero = round(-min / scale)
  symmetric:  scale = 2 max|w| / maxq,     zero = (maxq + 1) / 2      (GPTQ's convention)
  w_q = scale * (clamp(round(w / scale) + zero, 0, maxq) - zero)
The checkpoint stores the dequantized ("fake-quant") weights as dense safetensors, so any
transformers install reloads it; quantize.json says which bits and groups they carry.
Embeddings and lm_head stay in full precision, as in GPTQ.
torch and transformers are imported inside the functions (seconds to import; only this step needs them).
"""

from __future__ import annotations

from quantconf.errors import QuantconfError
from quantconf.quantizers.base import Quantizer, group_bits, layer_record, register_quantizer, relative_error


def rtn_quantize_weight(w, bits: int, group_size: int, sym: bool):
    import torch

    out_f, in_f = w.shape
    g = in_f if group_size == -1 else min(group_size, in_f)
    full = in_f - in_f % g  # columns in whole groups; the rest is one shorter group
    parts = [_rtn_groups(w[:, :full].float().reshape(out_f, full // g, g), bits, sym).reshape(out_f, full)]
    if full < in_f:
        parts.append(_rtn_groups(w[:, full:].float().reshape(out_f, 1, in_f - full), bits, sym).reshape(out_f, -1))
    return torch.cat(parts, dim=1).to(w.dtype)


def _rtn_groups(wg, bits: int, sym: bool):
    """Fake-quantize [rows, groups, width] along the last axis, one scale and zero per group."""
    import torch

    maxq = 2**bits - 1
    if sym:
        scale = 2 * wg.abs().amax(-1, keepdim=True) / maxq
        zero = torch.full_like(scale, (maxq + 1) / 2)
    else:
        lo, hi = wg.amin(-1, keepdim=True), wg.amax(-1, keepdim=True)
        scale = (hi - lo) / maxq
        zero = torch.round(-lo / torch.where(scale > 0, scale, torch.ones_like(scale)))
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round(wg / scale) + zero, 0, maxq)
    return scale * (q - zero)


def _quantize(model_src, tokenizer, calib_samples, config, out_dir) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_src), dtype=torch.float32)
    errors, bits, numel = {}, {}, {}
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear) and "lm_head" not in name:
                w = mod.weight
                wq = rtn_quantize_weight(w, config.bits, config.group_size, config.sym)
                errors[name] = relative_error(w, wq)
                bits[name] = group_bits(config.bits, config.group_size, w.shape[1], 16, 0 if config.sym else config.bits)
                numel[name] = w.numel()
                w.copy_(wq)
    if not errors:
        raise QuantconfError("no linear layers found to quantize; unsupported architecture for RTN")
    model.save_pretrained(out_dir, safe_serialization=True)
    return {**layer_record(errors, bits, numel), "library": "quantconf.rtn",
            "stored_as": "dense fake-quant safetensors (the dequantized values)"}


register_quantizer(Quantizer("rtn", quantize=_quantize, needs_calibration=False,
                             description="round-to-nearest per weight group, no data (the baseline)"))
