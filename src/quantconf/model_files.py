"""What a model's files hold, checked before anything loads them: safetensors and GGUF integrity, the
refusal of pickle weights unless asked, the number of weights (from headers), and the `quantize.json`
record a quantized checkpoint carries."""

from __future__ import annotations

import json
import math
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
            from gguf import GGUFReader

            return int(sum(int(t.n_elements) for t in GGUFReader(path).tensors))
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
