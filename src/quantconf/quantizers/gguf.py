"""llama.cpp's GGUF formats through the `gguf` package's own quantize/dequantize (llama.cpp's exact rounding).

Schemes Q4_0, Q4_1, Q5_0, Q5_1, Q8_0: blocks of 32 weights along each row, one fp16 scale per block
(and an fp16 minimum for the _1 variants). Every linear layer's weight (not embeddings, norms or
lm_head, which llama.cpp also handles separately) is quantized and dequantized with gguf-py's
reference code, which reproduces llama.cpp's rounding; the checkpoint stores those dequantized
values as dense safetensors (what `quantconf eval` reloads, identical numbers on any machine).
When the source model is a GGUF file (the built-in models are), `model.gguf` is written as well:
the source's metadata and tensors, with the same layers re-quantized to the scheme: a file
llama.cpp (and transformers' `gguf_file=`) loads. Quantized from the source's dequantized values,
as `llama-quantize --allow-requantize` does.

K-quants (Q2_K ... Q6_K, Q4_K_M: what most llama.cpp users run) are not implemented in gguf-py;
they need llama.cpp's own quantizer, through the optional `llama-cpp-python` (`pip install
'quantconf[llamacpp]'`); without it they are refused before any work.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from quantconf.models.builtin import save_dequantized_gguf
from quantconf.errors import QuantconfError
from quantconf.quantizers.base import (Quantizer, fake_quantize_linears, layer_record, register_quantizer, relative_error,
                                       source_weights)

BLOCK = 32
# scheme -> (bits, bits per weight in the file: the weights plus each block's fp16 scale / minimum)
SCHEMES = {"Q4_0": (4, 4.5), "Q4_1": (4, 5.0), "Q5_0": (5, 5.5), "Q5_1": (5, 6.0), "Q8_0": (8, 8.5)}
K_QUANTS = {"Q2_K": (2, 2.625), "Q3_K_S": (3, 3.4375), "Q3_K_M": (3, 3.4375), "Q3_K_L": (3, 3.4375),
            "Q4_K_S": (4, 4.5), "Q4_K_M": (4, 4.5), "Q5_K_S": (5, 5.5), "Q5_K_M": (5, 5.5), "Q6_K": (6, 6.5625)}
DEFAULT_SCHEME = {2: "Q2_K", 3: "Q3_K_M", 4: "Q4_0", 5: "Q5_0", 6: "Q6_K", 8: "Q8_0"}


def _check_config(config) -> None:
    known = {**SCHEMES, **K_QUANTS}
    if config.scheme not in known:
        raise QuantconfError(f"scheme {config.scheme!r} is unknown for gguf; choose from {', '.join(known)}", param="scheme")
    if known[config.scheme][0] != config.bits:
        raise QuantconfError(f"bits {config.bits} does not match gguf {config.scheme} ({known[config.scheme][0]}-bit); "
                             "give the scheme alone", param="bits")
    if config.scheme in K_QUANTS:
        try:
            import llama_cpp  # noqa: F401
        except ImportError:
            raise QuantconfError(
                f"scheme {config.scheme} is a llama.cpp k-quant: gguf-py cannot make it; install llama.cpp's quantizer "
                "with `pip install 'quantconf[llamacpp]'` (llama-cpp-python, a C++ build), or use Q4_0, Q4_1, Q5_0, "
                "Q5_1 or Q8_0", param="scheme") from None


def _check_model(hf_config, config) -> None:
    for name in ("hidden_size", "intermediate_size"):
        width = getattr(hf_config, name, None)
        if width is not None and width % BLOCK:
            raise QuantconfError(f"gguf {config.scheme} quantizes blocks of {BLOCK} weights; this model's {name} "
                                 f"{width} is not a multiple of {BLOCK}")


def gguf_roundtrip(w, scheme: str):
    """Weights (rows, columns) quantized to `scheme` and back, with llama.cpp's rounding; and the bytes."""
    import numpy as np
    from gguf import GGMLQuantizationType, quants

    qtype = GGMLQuantizationType[scheme]
    packed = quants.quantize(np.ascontiguousarray(w, dtype=np.float32), qtype)
    return quants.dequantize(packed, qtype), packed


def _quantize(model_src, calib_samples, config, out_dir) -> dict:
    import torch

    if config.scheme in K_QUANTS:
        return _llama_cpp_quantize(model_src, config, out_dir)
    def layer(mod):
        return torch.from_numpy(gguf_roundtrip(mod.weight.numpy(), config.scheme)[0]), SCHEMES[config.scheme][1]

    record = fake_quantize_linears(model_src, out_dir, layer)
    facts = {**record, "library": "gguf", "gguf_scheme": config.scheme,
             "stored_as": "dense safetensors of llama.cpp's dequantized values"}
    source = _source_gguf(model_src)
    if source is not None:
        target = Path(out_dir) / "model.gguf"
        t0 = time.perf_counter()
        n = write_requantized_gguf(source, target, config.scheme)
        # the share of `seconds` spent on the llama.cpp file (a second quantization pass, from the
        # source's own tensors, so its layout and metadata are the source's)
        facts.update(gguf_file="model.gguf", gguf_source=str(source), gguf_tensors_requantized=n,
                     gguf_file_bytes=target.stat().st_size, gguf_file_seconds=round(time.perf_counter() - t0, 2))
    return facts


def _source_gguf(model_src) -> Path | None:
    """The GGUF file a model directory was dequantized from (quantconf's cache records it), if any."""
    record = Path(model_src) / "quantconf-source.json"
    if not record.is_file():
        return None
    path = Path(json.loads(record.read_text())["gguf"])
    return path if path.is_file() else None


def is_linear_tensor(name: str, n_dims: int) -> bool:
    """A GGUF tensor that is one of the model's linear layers (attention and MLP projections)."""
    return name.startswith("blk.") and name.endswith(".weight") and n_dims == 2


def write_requantized_gguf(source: Path, target: Path, scheme: str) -> int:
    """Copy `source` to `target` (metadata and every tensor) with its linear layers re-quantized."""
    import gguf

    reader = gguf.GGUFReader(str(source))
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    writer = gguf.GGUFWriter(str(target), arch=arch, endianess=reader.endianess)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # written by GGUFWriter itself
        if field.name == gguf.Keys.General.FILE_TYPE:
            writer.add_file_type(int(gguf.LlamaFileType[f"MOSTLY_{scheme}"]))
            continue
        val_type = field.types[0]
        sub_type = field.types[-1] if val_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), val_type, sub_type=sub_type)
    qtype = gguf.GGMLQuantizationType[scheme]
    tensors, n = [], 0
    for t in reader.tensors:
        data, ttype = t.data, t.tensor_type
        if is_linear_tensor(t.name, len(t.shape)):
            floats = gguf.quants.dequantize(t.data, t.tensor_type)
            data, ttype, n = gguf.quants.quantize(floats.astype("float32"), qtype), qtype, n + 1
        tensors.append((t.name, data, ttype))
        writer.add_tensor_info(t.name, data.shape, data.dtype, data.nbytes, ttype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _, data, _ in tensors:
        writer.write_tensor_data(data, tensor_endianess=reader.endianess)
    writer.close()
    return n


def _llama_cpp_quantize(model_src, config, out_dir) -> dict:
    """K-quants through llama.cpp's own `llama_model_quantize` (needs llama-cpp-python and a GGUF source)."""
    import llama_cpp

    source = _source_gguf(model_src)
    if source is None:
        raise QuantconfError(f"gguf {config.scheme} quantizes a GGUF file with llama.cpp; {model_src} is not one "
                             "(convert it with llama.cpp's convert_hf_to_gguf.py first)")
    target = Path(out_dir) / "model.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{config.scheme}"))
    params.allow_requantize = True
    if llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), params) != 0:
        raise QuantconfError(f"llama.cpp could not quantize {source} to {config.scheme}")
    dense = save_dequantized_gguf(target, out_dir).state_dict()  # the dense checkpoint
    sources = source_weights(model_src)
    errors = {name.removesuffix(".weight"): relative_error(sources[name], w) for name, w in dense.items()
              if name.endswith(".weight") and w.dim() == 2 and ".layers." in name and name in sources.files}
    # bits per weight as written: llama.cpp mixes types per tensor (and falls back from k-quants to
    # Q5_0/Q8_0 where a row is not a multiple of 256, as SmolLM2's 576)
    import gguf

    bits, numel, types = {}, {}, {}
    for t in gguf.GGUFReader(str(target)).tensors:
        if is_linear_tensor(t.name, len(t.shape)):
            numel[t.name], bits[t.name] = int(t.n_elements), 8 * int(t.n_bytes) / int(t.n_elements)
            types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    return {**layer_record(errors, bits, numel), "library": f"llama-cpp-python {llama_cpp.__version__}",
            "gguf_scheme": config.scheme, "gguf_file": "model.gguf", "gguf_source": str(source),
            "gguf_file_bytes": target.stat().st_size, "gguf_linear_tensor_types": types,
            "stored_as": "model.gguf + its dequantized values"}


def _label(config) -> str:
    return f"gguf-{config.scheme}"


register_quantizer(Quantizer(
    "gguf", quantize=_quantize, check_model=_check_model, needs_calibration=False, library="gguf",
    options=("bits", "scheme"), defaults={"bits": 4, "scheme": "Q4_0", "group_size": BLOCK},
    bits=(2, 3, 4, 5, 6, 8),
    scheme_bits={k: v[0] for k, v in {**SCHEMES, **K_QUANTS}.items()}, default_scheme=DEFAULT_SCHEME, check_config=_check_config, label=_label,
    description="llama.cpp formats (gguf-py's exact rounding); writes model.gguf when the source is GGUF"))
