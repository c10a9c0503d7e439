"""What the llm-compressor methods (awq.py, w8a8.py, fp8.py) share: run `oneshot` with a recipe on
our calibration windows, read each quantized layer's error, save compressed-tensors, and load it back.

The checkpoint is compressed-tensors (pack-quantized for int4, int-/float-quantized for 8-bit);
plain transformers with `compressed-tensors` reloads it as dense layers and, where config.json
declares `input_activations`, wraps each Linear's forward in activation quantize-dequantize:
W8A8 and FP8 really quantize activations at inference, on CPU too.
Not a method itself: it registers nothing.
"""

from __future__ import annotations

import contextlib

from quantconf.errors import QuantconfError
from quantconf.quantizers.base import layer_record, relative_error


def load_compressed_tensors(path, dtype, device: str):
    """A compressed-tensors checkpoint with its weights decompressed now: left compressed, they are
    decompressed by a hook on the model's own forward, which our scorer bypasses (it runs the decoder,
    then the head). Activation quantization (W8A8, FP8) stays: each Linear's forward keeps its
    quantize-dequantize wrapper."""
    import warnings

    from transformers import AutoModelForCausalLM, CompressedTensorsConfig

    with warnings.catch_warnings():  # "loading attributes ... will be overwritten": what we ask for
        warnings.filterwarnings("ignore", message="You passed `quantization_config`")
        model = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=dtype, quantization_config=CompressedTensorsConfig(dequantize=True))
    return model.to(device)


@contextlib.contextmanager
def cpu_pinning_disabled():
    """llm-compressor 0.14's AWQ pins cached activations (`IntermediatesCache.pin_memory`), which
    raises "Cannot access accelerator device" without a GPU; pinning only speeds up host-to-GPU
    copies, so on CPU it is skipped (results are unchanged)."""
    import torch
    from llmcompressor.pipelines.cache import IntermediatesCache

    original = IntermediatesCache.pin_memory
    if not torch.cuda.is_available():
        IntermediatesCache.pin_memory = lambda self, *args, **kwargs: None
    try:
        yield
    finally:
        IntermediatesCache.pin_memory = original


def weight_args(bits: int, group_size: int, sym: bool, kind: str = "int"):
    from compressed_tensors.quantization import QuantizationArgs

    if group_size == -1:
        return QuantizationArgs(num_bits=bits, type=kind, symmetric=sym, strategy="channel")
    return QuantizationArgs(num_bits=bits, type=kind, symmetric=sym, strategy="group", group_size=group_size)


def scheme(weights, input_activations=None):
    from compressed_tensors.quantization import QuantizationScheme

    return {"group_0": QuantizationScheme(targets=["Linear"], weights=weights, input_activations=input_activations)}


def run_oneshot(model_src, calib_samples, recipe, config, out_dir, bits_per_weight) -> dict:
    """Quantize with `recipe`, save compressed-tensors into out_dir; per-layer relative error of the
    weights as quantized (after any AWQ/SmoothQuant scaling: the float weights fed to the quantizer)."""
    import llmcompressor
    import torch
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize
    from datasets import Dataset
    from llmcompressor import oneshot
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_src), dtype=torch.float32)
    kwargs = {}
    if calib_samples:
        rows = [{"input_ids": s, "attention_mask": [1] * len(s)} for s in calib_samples]
        kwargs = {"dataset": Dataset.from_list(rows), "max_seq_length": max(len(s) for s in calib_samples),
                  "num_calibration_samples": len(rows),
                  "shuffle_calibration_samples": False}  # our windows are already a seeded draw
    with cpu_pinning_disabled():
        oneshot(model=model, recipe=recipe, **kwargs)
    errors, bits, numel = {}, {}, {}
    with torch.no_grad():
        for name, mod in model.named_modules():
            scheme_ = getattr(mod, "quantization_scheme", None)
            if scheme_ is None or not hasattr(mod, "weight_scale"):
                continue
            w = mod.weight
            wq = fake_quantize(w, mod.weight_scale, getattr(mod, "weight_zero_point", None), scheme_.weights)
            errors[name], bits[name], numel[name] = relative_error(w, wq), bits_per_weight(mod), w.numel()
    if not numel:
        raise QuantconfError("llm-compressor quantized no layer of this model")
    model.save_pretrained(out_dir, save_compressed=True)
    return {**layer_record(errors, bits, numel), "library": f"llmcompressor {llmcompressor.__version__}",
            "stored_as": "compressed-tensors (transformers + compressed-tensors reload it)",
            "recipe": [type(m).__name__ for m in recipe]}
