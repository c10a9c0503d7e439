"""GPTQ through GPTQModel (the maintained successor of AutoGPTQ); GPTQ v1 checkpoint format.

Group size vs layer width: when a layer's width is not a multiple of the group size (SmolLM2's
hidden size 576 with the seed's group 128), GPTQModel pads the last group and quantizes at the
requested size; we keep that, so the seed configuration runs unchanged. Its int4 CPU kernel
cannot run such a checkpoint, so on CPU `load_gptq` loads with the pure-torch kernel and turns
every quantized layer into a dense nn.Linear holding the dequantized weights (identical values,
much faster per forward). On CUDA the library's kernels are used as they are.
"""

from __future__ import annotations

import contextlib
import csv
import os
from pathlib import Path

from quantconf import QuantconfError
from quantconf.quantize import Quantizer, register_quantizer


@contextlib.contextmanager
def _cwd(path: Path):
    # GPTQModel writes ./logs/gptq_log_*.log into the working directory; keep it inside the checkpoint.
    # Paths handed to GPTQModel inside this block must be absolute (a relative one would now nest).
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _check_model(hf_config, config) -> None:
    from gptqmodel.models.auto import MODEL_MAP

    if hf_config.model_type not in MODEL_MAP:
        raise QuantconfError(f"GPTQModel does not support architecture {hf_config.model_type!r}; "
                             "use --method rtn or a supported model (llama, qwen2, gemma3, ...)")
    if config.bits not in (2, 3, 4, 8):
        raise QuantconfError(f"GPTQ supports 2/3/4/8 bits, got {config.bits}")


def _quantize(model_src, tokenizer, calib_samples, config, out_dir) -> dict:
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(os.cpu_count() or 1))
    from gptqmodel import GPTQModel, QuantizeConfig

    qcfg = QuantizeConfig(bits=config.bits, group_size=config.group_size, desc_act=config.desc_act,
                          sym=config.sym, damp_percent=config.damp)
    data = [{"input_ids": s, "attention_mask": [1] * len(s)} for s in calib_samples]
    out_dir = Path(out_dir).resolve()
    if Path(model_src).exists():  # a local directory, not a hub id
        model_src = Path(model_src).resolve()
    with _cwd(out_dir):
        model = GPTQModel.load(str(model_src), qcfg, device="cpu")
        model.quantize(data, batch_size=1)
        model.save(str(out_dir))
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

    return {"layer_error": {"metric": "GPTQModel reconstruction loss (quant_log.csv)", "layers": layers},
            "library": f"gptqmodel {gptqmodel.__version__}"}


def load_gptq(path: Path, dtype, device: str):
    import torch
    from gptqmodel import BACKEND, GPTQModel

    path = Path(path).resolve()
    if device == "cuda":
        return GPTQModel.load(str(path), device="cuda").model
    try:
        with _cwd(path.parent):
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


register_quantizer(Quantizer("gptq", quantize=_quantize, check_model=_check_model))
