"""GPTQ through GPTQModel (the maintained successor of AutoGPTQ); GPTQ v1 checkpoint format.

Group size vs layer width: when a layer's width is not a multiple of the group size (SmolLM2's
hidden size 576 with the seed's group 128), GPTQModel pads the last group and quantizes at the
requested size; we keep that, so the seed configuration runs unchanged. Its int4 CPU kernel
cannot run such a checkpoint: `load_gptq` says how we load it.
GPTQModel is imported inside `_quantize`: it takes seconds to import and only this step needs it.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import json
import os
from pathlib import Path

from quantconf.errors import QuantconfError
from quantconf.io import atomic_write_json, captured_library_output, working_directory
from quantconf.models.runtime import available_cores
from quantconf.quantizers.base import (Quantizer, group_bits, layer_record, register_quantizer, relative_error,
                                       source_weights)


def _check_model(hf_config, config) -> None:
    with captured_library_output():  # GPTQModel prints a banner on import
        from gptqmodel.models.auto import MODEL_MAP

    if hf_config.model_type not in MODEL_MAP:
        raise QuantconfError(f"GPTQModel does not support architecture {hf_config.model_type!r}; "
                             "use --method rtn or a supported model (llama, qwen2, gemma3, ...)")


def _restore_rope_parameters(hf_config) -> None:
    """GPTQModel 7.6's Gemma 3 support adds top-level "rope_type"/"rope_theta" entries to a config
    whose rope_parameters are per layer type ({"full_attention": {...}, "sliding_attention": {...}}),
    and transformers then refuses to save it ("'str' object has no attribute 'get'"). Drop the
    added entries: the per-layer-type parameters, which the model uses, are untouched."""
    rope, layer_types = getattr(hf_config, "rope_parameters", None), set(getattr(hf_config, "layer_types", None) or [])
    if isinstance(rope, dict) and layer_types & set(rope):  # per layer type: parameter names do not belong here
        for key in ("rope_type", "type", "rope_theta"):
            rope.pop(key, None)


def _quantize(model_src, calib_samples, config, out_dir) -> dict:
    # GPTQModel's pool needs at least 2 CPU workers (its model loader asks for 2), even on one allowed core
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(max(2, available_cores())))
    from gptqmodel import GPTQModel, QuantizeConfig

    qcfg = QuantizeConfig(bits=config.bits, group_size=config.group_size, desc_act=config.desc_act,
                          sym=config.sym, damp_percent=config.damp)
    data = [{"input_ids": s, "attention_mask": [1] * len(s)} for s in calib_samples]
    out_dir = Path(out_dir).resolve()
    if Path(model_src).exists():  # a local directory, not a hub id
        model_src = Path(model_src).resolve()
    import torch

    with working_directory(out_dir):  # GPTQModel writes ./logs/ here: keep it inside the checkpoint
        # float32, not GPTQModel's "auto" (bfloat16 on CPU): CPUs without bfloat16 units run its forward
        # passes at half speed (GPTQ on the default model 157 -> 75 s on one core), and the Hessians are
        # accumulated from the float model's own activations rather than rounded ones
        model = GPTQModel.load(str(model_src), qcfg, device="cpu", dtype=torch.float32)
        model.quantize(data, batch_size=1)
        _restore_rope_parameters(model.model.config)
        model.save(str(out_dir))
    del model  # before the checkpoint is reloaded for the weight error: one model in memory, not two
    _store_unquantized_in_bfloat16(out_dir)
    gc.collect()
    weight_facts = _weight_errors(out_dir, model_src, config)
    layers = {}
    log = out_dir / "quant_log.csv"
    if log.is_file():
        with open(log) as f:
            for row in csv.DictReader(f):
                name = row.get("module") or row.get("name")
                loss = row.get("loss") or row.get("error")
                if name and loss:
                    with contextlib.suppress(ValueError):
                        layers[f"layer{row.get('layer', '')}.{name}"] = float(loss)
    import gptqmodel

    return {**weight_facts, "gptq_loss": {
                "metric": "GPTQModel reconstruction loss (quant_log.csv)", "layers": layers},
            "library": f"gptqmodel {gptqmodel.__version__}"}


def _store_unquantized_in_bfloat16(out_dir: Path) -> None:
    """The layers GPTQ leaves unquantized (embeddings, norms, lm_head) were loaded in float32 for the
    quantization (see `_quantize`); store them in bfloat16 as GPTQModel's "auto" load would have, so the
    checkpoint keeps its size. Packed weights, zeros and scales are integer / float16: untouched."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    for path in sorted(out_dir.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        if not any(t.dtype == torch.float32 for t in tensors.values()):
            continue
        tensors = {k: t.to(torch.bfloat16) if t.dtype == torch.float32 else t for k, t in tensors.items()}
        tmp = path.with_name(f".{path.name}.tmp")
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    config_path = out_dir / "config.json"
    atomic_write_json(config_path, {**json.loads(config_path.read_text()), "dtype": "bfloat16"})


def _weight_errors(out_dir, model_src, config) -> dict:
    """The relative weight error every method records: the saved checkpoint's layers dequantized
    (as `quantconf eval` loads them) vs the source's float weights; bits per weight with fp16 scales
    and zeros packed at `bits` (GPTQ v1). GPTQ minimises output error, not weight error, so its
    weight error can exceed RTN's while its outputs are closer."""
    import torch

    sources = source_weights(model_src)
    errors, bits, numel = {}, {}, {}
    model = load_gptq(Path(out_dir), torch.float32, "cpu")
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and f"{name}.weight" in sources.files and "lm_head" not in name:
            w = sources[f"{name}.weight"]
            if w.shape != mod.weight.shape or torch.equal(w, mod.weight):
                continue  # not a quantized layer
            errors[name] = relative_error(w, mod.weight)
            bits[name] = group_bits(config.bits, config.group_size, mod.in_features, 16, config.bits)
            numel[name] = mod.weight.numel()
    return layer_record(errors, bits, numel)


def load_gptq(path: Path, dtype, device: str):
    """A GPTQ v1 checkpoint. On CUDA, GPTQModel's own kernels. On CPU the int4 kernel cannot run a
    layer whose width is not a multiple of the group size (SmolLM2's 576 at group 128), so we load
    with GPTQModel's pure-torch kernel and turn every quantized layer into a dense nn.Linear holding
    the dequantized weights (identical values, much faster per forward)."""
    import torch

    with captured_library_output():  # GPTQModel's banner and INFO lines
        from gptqmodel import BACKEND, GPTQModel

    path = Path(path).resolve()
    if device == "cuda":
        with captured_library_output():
            return GPTQModel.load(str(path), device="cuda").model
    try:
        with working_directory(path.parent), captured_library_output():
            qmodel = GPTQModel.load(str(path), backend=BACKEND.GPTQ_TORCH, device="cpu")
    except Exception as e:
        raise QuantconfError(f"cannot load GPTQ checkpoint {path} ({type(e).__name__}: {str(e)[:160]})") from None
    model = qmodel.model
    with torch.no_grad():
        for name, mod in list(model.named_modules()):
            if hasattr(mod, "dequantize_weight") and hasattr(mod, "qweight"):
                w = mod.dequantize_weight().T[: mod.out_features, : mod.in_features]  # (in, out) -> (out, in)
                dense = torch.nn.Linear(mod.in_features, mod.out_features, bias=mod.bias is not None)
                dense.weight.copy_(w.float())
                if mod.bias is not None:
                    dense.bias.copy_(mod.bias.float())
                parent = model.get_submodule(name.rsplit(".", 1)[0])
                setattr(parent, name.rsplit(".", 1)[1], dense)
    model.to(dtype=dtype)
    if hasattr(model.config, "quantization_config"):
        model.config.quantization_config = None
    return model


register_quantizer(Quantizer("gptq", quantize=_quantize, check_model=_check_model, load=load_gptq, reads=("gptq",),
                             threads_invariant=False,
                             library="gptqmodel",
                             options=("bits", "group_size", "sym", "desc_act", "damp", "calib", "n_samples",
                                      "seq_len", "seed"),
                             description="GPTQ (second-order error compensation on a calibration set), v1 format"))
