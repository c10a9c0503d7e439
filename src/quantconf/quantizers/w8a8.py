"""W8A8: int8 weights and int8 *activations* through llm-compressor, optionally after SmoothQuant.

Weights: int8 symmetric, one scale per output channel. Activations (the input of every Linear but
lm_head), quantized at inference:
  - `static` (default): one scale per layer, measured on the calibration set (min-max). A channel
    with a huge activation in some tokens (the outliers of Dettmers et al. / Paglieri et al.) sets
    that scale, and every other value of the layer is rounded on its coarse grid: this is where the
    calibration set matters.
  - `dynamic`: one scale per token, measured at inference; no calibration needed for it.
SmoothQuant (`smoothquant_alpha` 0.5 / 0.8; 0 = off) migrates activation range into the weights
channel by channel (x / s, W * s with s = max|x|^a / max|W|^(1-a)) before quantizing.
The checkpoint declares `input_activations`, so transformers + compressed-tensors quantize
activations again when `quantconf eval` reloads it, on CPU (quantize-dequantize in each forward).
"""

from __future__ import annotations

from quantconf.errors import QuantconfError
from quantconf.quantizers.base import Quantizer, calibration_suffix, register_quantizer
from quantconf.quantizers.llm_compressor import load_compressed_tensors, run_oneshot, scheme, weight_args

ACTIVATIONS = ("static", "dynamic")


def activation_args(kind: str, type_: str = "int"):
    from compressed_tensors.quantization import QuantizationArgs

    if kind == "static":
        return QuantizationArgs(num_bits=8, type=type_, symmetric=True, strategy="tensor", dynamic=False)
    return QuantizationArgs(num_bits=8, type=type_, symmetric=True, strategy="token", dynamic=True)


def _check_config(config) -> None:
    if config.activations not in ACTIVATIONS:
        raise QuantconfError(f"w8a8 activations must be static or dynamic, got {config.activations!r}",
                             param="activations")
    if not 0 <= config.smoothquant_alpha < 1:
        raise QuantconfError(f"smoothquant_alpha must be in [0, 1) (0 = off), got {config.smoothquant_alpha}",
                             param="smoothquant_alpha")


def _quantize(model_src, calib_samples, config, out_dir) -> dict:
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier

    recipe = [SmoothQuantModifier(smoothing_strength=config.smoothquant_alpha)] if config.smoothquant_alpha else []
    recipe.append(QuantizationModifier(config_groups=scheme(weight_args(8, -1, True), activation_args(config.activations)),
                                       ignore=["lm_head"]))
    facts = run_oneshot(model_src, calib_samples, recipe, config, out_dir, lambda mod: 8 + 16 / mod.in_features)
    return {**facts, "activations": {"bits": 8, "scales": config.activations,
                                     "smoothquant_alpha": config.smoothquant_alpha or None}}


def _label(config) -> str:
    sq = f"-sq{config.smoothquant_alpha:g}" if config.smoothquant_alpha else ""
    return f"w8a8-{config.activations}{sq}" + calibration_suffix(config)


register_quantizer(Quantizer(
    "w8a8", quantize=_quantize, load=load_compressed_tensors, reads=("compressed-tensors",),
    library="llmcompressor",
    options=("activations", "smoothquant_alpha", "calib", "n_samples", "seq_len", "seed"),
    defaults={"bits": 8, "group_size": -1, "activations": "static"}, bits=(8,), check_config=_check_config,
    label=_label, description="int8 weights + int8 activations (static per-tensor or dynamic per-token "
                              "scales), SmoothQuant optional; llm-compressor"))
