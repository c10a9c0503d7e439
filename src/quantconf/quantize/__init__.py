"""Post-training weight quantization behind one small interface.

A method is one file in this package that registers a `Quantizer`:
    quantize(model_src, tokenizer, calib_samples, config, out_dir) -> dict of extra facts
It writes a checkpoint into `out_dir` that `load_quantized` (and transformers or the library)
reloads. `run_quantize` validates everything before any work, builds the calibration set,
quantizes into a temporary directory and renames it into place, so an interrupted run leaves
no half checkpoint; `quantize.json` records method, bits, group size, calibration set + hash,
seed, library versions, wall time, per-layer error, and size before/after.

Methods: `gptq` (GPTQModel 7.6, GPTQ v1 checkpoint) and `rtn` (round-to-nearest baseline).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import pkgutil
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from quantconf import QuantconfError

VALID_BITS = (2, 3, 4, 8)
VALID_GROUPS = (-1, 32, 64, 128)
QUANTIZE_JSON = "quantize.json"


@dataclass(frozen=True)
class QuantConfig:
    method: str = "gptq"
    bits: int = 4
    group_size: int = 128
    sym: bool = True
    desc_act: bool = False
    damp: float = 0.01
    calib: str = "c4"
    n_samples: int = 128
    seq_len: int = 512
    seed: int = 0

    def validate(self) -> None:
        _load_methods()
        if self.method not in QUANTIZERS:
            raise QuantconfError(f"unknown --method {self.method!r}; choose from {', '.join(sorted(QUANTIZERS))}")
        if self.bits not in VALID_BITS:
            raise QuantconfError(f"--bits must be one of {VALID_BITS}, got {self.bits}")
        if self.group_size not in VALID_GROUPS:
            raise QuantconfError(f"--group-size must be one of {VALID_GROUPS}, got {self.group_size}")
        if not 0 < self.damp < 1:
            raise QuantconfError(f"--damp must be in (0, 1), got {self.damp}")
        if self.n_samples < 1 or self.seq_len < 8:
            raise QuantconfError("--n-samples must be >= 1 and --seq-len >= 8")
        if self.desc_act and self.method != "gptq":
            raise QuantconfError("--desc-act only applies to --method gptq")

    def label(self) -> str:
        g = "pc" if self.group_size == -1 else f"g{self.group_size}"
        calib = self.calib.replace(":", "_").replace("/", "_")
        return f"{self.method}-w{self.bits}{g}" + (f"-{calib}-s{self.seed}" if self.method != "rtn" else "")


@dataclass(frozen=True)
class Quantizer:
    name: str
    quantize: Callable  # (model_src, tokenizer, calib_samples, config, out_dir) -> dict
    check_model: Callable  # (hf_config, config) -> None; raise QuantconfError before any work
    needs_calibration: bool = True


QUANTIZERS: dict[str, Quantizer] = {}


def register_quantizer(q: Quantizer) -> Quantizer:
    QUANTIZERS[q.name] = q
    return q


def _load_methods() -> None:
    for mod in pkgutil.iter_modules(__path__):
        if mod.name != "calibration":
            importlib.import_module(f"{__name__}.{mod.name}")


def linear_in_features(hf_config) -> list[int]:
    """Input widths of the decoder's linear layers (hidden and MLP intermediate sizes)."""
    return [v for v in (getattr(hf_config, "hidden_size", None), getattr(hf_config, "intermediate_size", None)) if v]


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).glob("*.safetensors"))


@contextlib.contextmanager
def library_output_to(path: Path | None):
    """Send everything written to fds 1/2 (the libraries' progress bars) to `path`; None: leave it."""
    if path is None:
        yield
        return
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(path, "ab") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def run_quantize(model: str, config: QuantConfig, out: Path, overwrite: bool = False, threads: int | None = None,
                 data_dir: str | None = None, quiet: bool = False, log=print) -> dict:
    """Quantize `model` into `out`. quiet=True sends the library's own output to `out/library.log`."""
    from transformers import AutoConfig, AutoTokenizer

    from quantconf.models import local_model_dir, model_fingerprint, set_threads
    from quantconf.predictions import atomic_directory, atomic_write_json, package_versions
    from quantconf.quantize.calibration import build_calibration

    config.validate()
    out = Path(out)
    if out.exists() and not overwrite:
        raise QuantconfError(f"{out} already exists; pass --overwrite to replace it or choose another --out")
    set_threads(threads)
    src = local_model_dir(model)
    hf_config = AutoConfig.from_pretrained(str(src))
    quantizer = QUANTIZERS[config.method]
    quantizer.check_model(hf_config, config)
    tokenizer = AutoTokenizer.from_pretrained(str(src))
    calib = (build_calibration(config.calib, tokenizer, config.n_samples, config.seq_len, config.seed,
                               data_dir=data_dir) if quantizer.needs_calibration else None)
    with atomic_directory(out) as tmp:
        t0 = time.perf_counter()
        with library_output_to(tmp / "library.log" if quiet else None):
            extra = quantizer.quantize(src, tokenizer, calib.samples if calib else [], config, tmp)
        seconds = time.perf_counter() - t0
        tokenizer.save_pretrained(tmp)
        record = {
            "method": config.method, "config": asdict(config), "label": config.label(),
            "model_spec": model, "model_fingerprint": model_fingerprint(model),
            "calibration": calib.record() if calib else {"name": "none", "note": f"{config.method} uses no data"},
            "seconds": round(seconds, 2),
            "size_before_bytes": dir_size(Path(src)) if Path(src).is_dir() else None,
            "size_after_bytes": dir_size(tmp), "packages": package_versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **extra,
        }
        atomic_write_json(tmp / QUANTIZE_JSON, record)
    log(f"quantized {model} with {config.label()} in {seconds:.1f}s -> {out}")
    return record


def read_quantize_record(path: Path) -> dict:
    from quantconf.predictions import read_optional_json

    return read_optional_json(Path(path) / QUANTIZE_JSON, "re-run quantconf quantize")


def load_quantized(path: Path, dtype, device: str):
    """A quantized checkpoint as a model that runs here. On CPU, GPTQ layers are dequantized to dense
    weights once (same numbers as the library's torch kernel, much faster per forward)."""
    record = read_quantize_record(path)
    cfg = json.loads((Path(path) / "config.json").read_text()).get("quantization_config") or {}
    info = {"quantization": record.get("config") or cfg, "calibration": record.get("calibration")}
    if cfg.get("quant_method") == "gptq" or record.get("method") == "gptq":
        from quantconf.quantize.gptq import load_gptq

        return load_gptq(Path(path), dtype, device), info
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, use_safetensors=True).to(device)
    return model, info
