"""bitsandbytes: NF4 / FP4 (4-bit blocks of 64, optionally with double quantization of the block
scales) and LLM.int8 (8-bit rows; at inference, activation columns above `outlier_threshold`
(default 6.0, the same threshold our outlier analysis counts) run in 16 bits). No calibration data.

transformers quantizes on load (`BitsAndBytesConfig`) and saves bitsandbytes' own serialization;
`_load` reads it back through transformers. bitsandbytes 0.50 runs all modes on CPU.
One trap: on CPU a 4-bit layer rewrites its block scales into a CPU layout on its first forward,
and a model saved after that reloads broken (perplexity x7 on SmolLM2). So the checkpoint is saved
straight after loading, before any forward, and the per-layer error is read before that too.
"""

from __future__ import annotations

from quantconf.errors import QuantconfError
from quantconf.quantizers.base import Quantizer, layer_record, register_quantizer, relative_error, source_weights

SCHEME_BITS = {"nf4": 4, "fp4": 4, "int8": 8}
BLOCK = 64  # bitsandbytes' 4-bit block size (transformers' default)


def _check_config(config) -> None:
    if config.scheme not in SCHEME_BITS:
        raise QuantconfError(f"scheme {config.scheme!r} is unknown for bnb; choose from nf4, fp4, int8", param="scheme")
    if SCHEME_BITS[config.scheme] != config.bits:
        raise QuantconfError(f"bits {config.bits} does not match bnb {config.scheme} ({SCHEME_BITS[config.scheme]}-bit); "
                             "give the scheme alone", param="bits")
    if config.double_quant and config.scheme == "int8":
        raise QuantconfError("double_quant applies to bnb nf4/fp4, not int8", param="double_quant")
    if config.outlier_threshold != 6.0 and config.scheme != "int8":
        raise QuantconfError("outlier_threshold applies to bnb int8 (LLM.int8), not 4-bit", param="outlier_threshold")
    if config.outlier_threshold < 0:
        raise QuantconfError(f"outlier_threshold must be >= 0, got {config.outlier_threshold}",
                             param="outlier_threshold")


def bnb_config(config):
    import torch
    from transformers import BitsAndBytesConfig

    if config.scheme == "int8":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=config.outlier_threshold)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=config.scheme,
                              bnb_4bit_use_double_quant=config.double_quant, bnb_4bit_compute_dtype=torch.float32)


def dequantized_weight(module):
    """The float weight a bitsandbytes layer computes with (read before any forward on CPU)."""
    import bitsandbytes.functional as F

    weight = module.weight
    if getattr(weight, "quant_state", None) is not None:  # Params4bit
        return F.dequantize_4bit(weight.data, weight.quant_state)
    scb = weight.SCB if getattr(weight, "SCB", None) is not None else module.state.SCB
    return weight.data.float() * scb.float()[:, None] / 127


def _quantize(model_src, calib_samples, config, out_dir) -> dict:
    import bitsandbytes
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_src), quantization_config=bnb_config(config),
                                                 dtype=torch.float32, device_map="cpu")
    sources = source_weights(model_src)
    errors, bits, numel = {}, {}, {}
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, (bitsandbytes.nn.Linear4bit, bitsandbytes.nn.Linear8bitLt)):
                numel[name] = mod.in_features * mod.out_features
                if config.scheme == "int8":
                    bits[name] = 8 + 32 / mod.in_features  # an fp32 scale per row
                else:  # fp32 absmax per block; double quant: int8 absmax + fp32 per 256 blocks
                    bits[name] = 4 + (8 / BLOCK + 32 / (BLOCK * 256) if config.double_quant else 32 / BLOCK)
                if f"{name}.weight" in sources.files:
                    errors[name] = relative_error(sources[f"{name}.weight"], dequantized_weight(mod))
    if not numel:
        raise QuantconfError("bitsandbytes quantized no layer of this model")
    model.save_pretrained(out_dir, safe_serialization=True)  # before any forward: see the module docstring
    return {**layer_record(errors, bits, numel), "library": f"bitsandbytes {bitsandbytes.__version__}",
            "bnb_config": {k: v for k, v in bnb_config(config).to_dict().items() if not k.startswith("_")},
            "stored_as": "bitsandbytes serialization (transformers quantization_config)"}


def _load(path, dtype, device: str):
    """bitsandbytes' serialization, through transformers: placed on the device while loading (.to() is
    refused for 4-bit layers)."""
    import logging

    from transformers import AutoModelForCausalLM

    logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)  # a warning per int8 matmul
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, device_map=device)


def _label(config) -> str:
    if config.scheme == "int8":
        return "bnb-int8" + ("" if config.outlier_threshold == 6.0 else f"-t{config.outlier_threshold:g}")
    return f"bnb-{config.scheme}" + ("-dq" if config.double_quant else "")


register_quantizer(Quantizer(
    "bnb", quantize=_quantize, load=_load, reads=("bitsandbytes",), needs_calibration=False, library="bitsandbytes",
    options=("bits", "scheme", "double_quant", "outlier_threshold"), defaults={"scheme": "nf4", "group_size": BLOCK},
    bits=(4, 8), scheme_bits=SCHEME_BITS, default_scheme={4: "nf4", 8: "int8"}, check_config=_check_config,
    label=_label, description="bitsandbytes NF4/FP4 (double quant optional) and LLM.int8 with its outlier threshold"))
