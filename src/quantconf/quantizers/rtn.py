"""Round-to-nearest (RTN): the baseline — quantize each weight group independently, no data.

Per output row and group of `group_size` input columns (the whole row for -1), with
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
from quantconf.quantizers.base import Quantizer, linear_in_features, register_quantizer


def rtn_quantize_weight(w, bits: int, group_size: int, sym: bool):
    import torch

    out_f, in_f = w.shape
    g = in_f if group_size == -1 else group_size
    if in_f % g:
        raise ValueError(f"in_features {in_f} not divisible by group size {g}")
    maxq = 2**bits - 1
    wg = w.float().reshape(out_f, in_f // g, g)
    if sym:
        scale = 2 * wg.abs().amax(-1, keepdim=True) / maxq
        zero = torch.full_like(scale, (maxq + 1) / 2)
    else:
        lo, hi = wg.amin(-1, keepdim=True), wg.amax(-1, keepdim=True)
        scale = (hi - lo) / maxq
        zero = torch.round(-lo / torch.where(scale > 0, scale, torch.ones_like(scale)))
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round(wg / scale) + zero, 0, maxq)
    return (scale * (q - zero)).reshape(out_f, in_f).to(w.dtype)


def _check_model(hf_config, config) -> None:
    if config.group_size == -1:
        return
    bad = [f for f in linear_in_features(hf_config) if f % config.group_size]
    if bad:
        ok = [g for g in (32, 64, 128) if all(f % g == 0 for f in linear_in_features(hf_config))]
        raise QuantconfError(f"RTN group size {config.group_size} does not divide layer width {bad[0]}; "
                             f"use --group-size {' or '.join(map(str, ok)) or '-1'}")


def _quantize(model_src, tokenizer, calib_samples, config, out_dir) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_src), dtype=torch.float32)
    layers = {}
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear) and "lm_head" not in name:
                w = mod.weight
                wq = rtn_quantize_weight(w, config.bits, config.group_size, config.sym)
                layers[name] = float(((w - wq).norm() / w.norm()).item() ** 2)
                w.copy_(wq)
    if not layers:
        raise QuantconfError("no linear layers found to quantize; unsupported architecture for RTN")
    model.save_pretrained(out_dir, safe_serialization=True)
    return {"layer_error": {"metric": "relative squared weight error ||W - Wq||^2 / ||W||^2", "layers": layers},
            "library": "quantconf.rtn"}


register_quantizer(Quantizer("rtn", quantize=_quantize, check_model=_check_model, needs_calibration=False))
