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


# byte sizes of GGUF's scalar value types (the GGUF spec's gguf_type: 8 is a string, 9 an array)
GGUF_SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def gguf_tensor_elements(path: Path) -> int:
    """Number of weights in a GGUF file, from its tensor table: the key-value metadata is skipped by length,
    not parsed (gguf's GGUFReader builds every field, the 49k-token vocabulary included: 7 s of every model
    load here, for one number)."""
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return _gguf_tensor_elements(data)  # mapped: only the pages of the header are read


def _gguf_tensor_elements(data) -> int:
    if bytes(data[:4]) != b"GGUF":
        raise ValueError("not a GGUF file")
    version, n_tensors, n_kv = struct.unpack_from("<IQQ", data, 4)
    if version < 2:
        raise ValueError(f"GGUF version {version} (before 2: 32-bit counts) is not read here")
    pos = 24

    def skip_value(kind: int, pos: int) -> int:
        if kind in GGUF_SCALAR_BYTES:
            return pos + GGUF_SCALAR_BYTES[kind]
        if kind == 8:
            return pos + 8 + struct.unpack_from("<Q", data, pos)[0]
        if kind == 9:
            item, count = struct.unpack_from("<IQ", data, pos)
            pos += 12
            if item in GGUF_SCALAR_BYTES:
                return pos + count * GGUF_SCALAR_BYTES[item]
            for _ in range(count):
                pos = skip_value(item, pos)
            return pos
        raise ValueError(f"unknown GGUF value type {kind}")

    for _ in range(n_kv):
        pos += 8 + struct.unpack_from("<Q", data, pos)[0]  # the key
        (kind,) = struct.unpack_from("<I", data, pos)
        pos = skip_value(kind, pos + 4)
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
