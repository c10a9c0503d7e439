"""What a model's files hold, checked before anything loads them: safetensors and GGUF integrity, the
refusal of pickle weights unless asked, the number of weights (from headers), and the `quantize.json`
record a quantized checkpoint carries."""

from __future__ import annotations

import json
import math
import mmap
import struct
from pathlib import Path

from quantconf.errors import QuantconfError
from quantconf.io import read_optional_json

QUANTIZE_RECORD = "quantize.json"  # written by quantizers.run_quantize beside every checkpoint


def check_safetensors(path: Path) -> None:
    """Raise if a .safetensors file is truncated or its header is corrupt (cheap: header only)."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n <= 0 or 8 + n > size:
                raise ValueError("header length beyond end of file")
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if 8 + n + end != size:
            raise ValueError(f"expected {8 + n + end} bytes, file has {size}")
    except (struct.error, ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise QuantconfError(f"{path} is corrupt or truncated ({e}); re-download or re-create it") from None


def check_gguf(path: Path) -> None:
    try:
        from gguf import GGUFReader

        GGUFReader(str(path))
    except Exception as e:
        raise QuantconfError(f"{path} is not a readable GGUF file ({type(e).__name__}: {str(e)[:120]}); re-download it") from None


def dir_weights(path: Path, allow_pickle: bool) -> list[Path]:
    """Weight files of a HF-layout directory, after safety and integrity checks."""
    safetensors = sorted(path.glob("*.safetensors"))
    if safetensors:
        for f in safetensors:
            check_safetensors(f)
        return safetensors
    pickles = sorted([*path.glob("*.bin"), *path.glob("*.pt"), *path.glob("*.pth")])
    if pickles and not allow_pickle:
        raise QuantconfError(
            f"{path} has only pickle weights ({pickles[0].name}); unpickling can run arbitrary code — "
            "convert to safetensors, or pass --allow-pickle if you trust the source"
        )
    if not pickles:
        raise QuantconfError(f"{path} has no model weights (*.safetensors); is it a model directory?")
    return pickles


def weight_elements(path: Path) -> int | None:
    """Number of weights in a model's files without loading them: safetensors headers of a directory,
    or a .gguf file's tensor table; None when it cannot be told (pickle weights, hub ids)."""
    path = Path(path)
    try:
        if path.suffix == ".gguf" and path.is_file():
            return gguf_tensor_elements(path)
        files = sorted(path.glob("*.safetensors")) if path.is_dir() else []
        total = 0
        for f in files:
            with open(f, "rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(n))
            total += sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")
        return total or None
    except Exception:  # a corrupt file: the loader's own checks name it in one line
        return None


# GGUF's scalar value types (the GGUF spec's gguf_type) as struct codes; 8 is a string, 9 an array
GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
GGUF_SCALAR_BYTES = {kind: struct.calcsize(code) for kind, code in GGUF_SCALARS.items()}


def gguf_tensor_elements(path: Path) -> int:
    """Number of weights in a GGUF file, from its tensor table: the key-value metadata is skipped by length,
    not parsed (gguf's GGUFReader builds every field, the 49k-token vocabulary included: 7 s of every model
    load here, for one number)."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return _gguf_tensor_elements(data)  # mapped: only the pages of the header are read


def gguf_metadata(path: Path, keys=None) -> dict:
    """A GGUF file's key-value metadata ({key: value}; only `keys` when given): strings as str, arrays as
    lists. The values gguf's `GGUFReader(...).fields[key].contents()` gives, read in one pass over the
    header (GGUFReader also maps every tensor and builds a numpy view per string: 20 s on Gemma 3's
    262k-token vocabulary, 0.3 s here)."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return _gguf_kv(data, None if keys is None else set(keys))[0]


def _gguf_header(data) -> tuple[int, int]:
    if bytes(data[:4]) != b"GGUF":
        raise ValueError("not a GGUF file")
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", data, 4)
    if version < 2:
        raise ValueError(f"GGUF version {version} (before 2: 32-bit counts) is not read here")
    return n_tensors, n_kv


def _gguf_value(data, kind: int, pos: int, read: bool):
    """(value or None when not `read`, position after it) of a value of GGUF type `kind` at `pos`."""
    if kind in GGUF_SCALARS:
        end = pos + GGUF_SCALAR_BYTES[kind]
        return (struct.unpack_from("<" + GGUF_SCALARS[kind], data, pos)[0] if read else None), end
    if kind == 8:
        (n,) = struct.unpack_from("<Q", data, pos)
        return (bytes(data[pos + 8:pos + 8 + n]).decode("utf-8") if read else None), pos + 8 + n
    if kind == 9:
        item, count = struct.unpack_from("<IQ", data, pos)
        pos += 12
        if item in GGUF_SCALARS:
            end = pos + count * GGUF_SCALAR_BYTES[item]
            return (list(struct.unpack_from(f"<{count}{GGUF_SCALARS[item]}", data, pos)) if read else None), end
        values = []
        for _ in range(count):
            value, pos = _gguf_value(data, item, pos, read)
            values.append(value)
        return (values if read else None), pos
    raise ValueError(f"unknown GGUF value type {kind}")


def _gguf_kv(data, wanted=None) -> tuple[dict, int]:
    """({key: value} of the metadata entries in `wanted` (all when None; the others are skipped by length),
    the position just after the metadata, where the tensor table starts)."""
    _, n_kv = _gguf_header(data)
    pos, values = 24, {}
    for _ in range(n_kv):
        (n,) = struct.unpack_from("<Q", data, pos)
        key = bytes(data[pos + 8:pos + 8 + n]).decode("utf-8")
        (kind,) = struct.unpack_from("<I", data, pos + 8 + n)
        read = wanted is None or key in wanted
        value, pos = _gguf_value(data, kind, pos + 12 + n, read)
        if read:
            values[key] = value
    return values, pos


def _gguf_tensor_elements(data) -> int:
    n_tensors, _ = _gguf_header(data)
    _, pos = _gguf_kv(data, wanted=set())
    total = 0
    for _ in range(n_tensors):
        pos += 8 + struct.unpack_from("<Q", data, pos)[0]  # the name
        (n_dims,) = struct.unpack_from("<I", data, pos)
        total += math.prod(struct.unpack_from(f"<{n_dims}Q", data, pos + 4))
        pos += 4 + 8 * n_dims + 4 + 8  # dims, type, offset
    return int(total)


def read_quantize_record(path: Path) -> dict:
    """The `quantize.json` of a checkpoint directory ({} when it has none)."""
    return read_optional_json(Path(path) / QUANTIZE_RECORD, "re-run quantconf quantize")


def is_quantized_checkpoint(path: Path) -> bool:
    """A checkpoint `quantconf quantize` wrote, or one whose config declares a quantization
    (`"quantization_config": null`, as in our own dequantized cache, declares none)."""
    cfg = path / "config.json"
    if not cfg.is_file():
        return False
    return bool(json.loads(cfg.read_text()).get("quantization_config")) or (path / QUANTIZE_RECORD).is_file()
