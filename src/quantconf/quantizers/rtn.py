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

from quantconf.quantizers.base import Quantizer, fake_quantize_linears, group_bits, register_quantizer


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


def _quantize(model_src, calib_samples, config, out_dir) -> dict:
    def layer(mod):
        w = mod.weight
        return (rtn_quantize_weight(w, config.bits, config.group_size, config.sym),
                group_bits(config.bits, config.group_size, w.shape[1], 16, 0 if config.sym else config.bits))

    return {**fake_quantize_linears(model_src, out_dir, layer), "library": "quantconf.rtn",
            "stored_as": "dense fake-quant safetensors (the dequantized values)"}


register_quantizer(Quantizer("rtn", quantize=_quantize, needs_calibration=False,
                             description="round-to-nearest per weight group, no data (the baseline)"))
