"""Post-training weight quantization: run a registered method on a model, atomically, with a record.

A method is one file in this package that registers a `Quantizer` (see `base.py`); it writes a
checkpoint that the method's own `load` hook (and transformers or the library) reloads.
`run_quantize` validates everything before any work, builds the calibration set,
quantizes into a temporary directory and renames it into place, so an interrupted run leaves
no half checkpoint; `quantize.json` records method, bits, group size, calibration set + hash,
seed, library versions, wall time, per-layer error, and size before/after.

Methods (`quantconf methods`): gptq (GPTQModel), rtn, awq / w8a8 / fp8 (llm-compressor), bnb
(bitsandbytes), gguf (gguf-py; llama.cpp for k-quants), hqq. Every one records the same per-layer
error (relative squared weight error) and bits per weight, so `deployed_bytes` compares across them.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from quantconf.errors import QuantconfError
from quantconf.io import (atomic_directory, atomic_write_json, check_ours_to_replace, clean_stale_temp,
                          ensure_writable_dir, give_umask_modes, library_output_to, package_versions)
from quantconf.models.builtin import local_model_dir, model_fingerprint
from quantconf.models.files import QUANTIZE_RECORD, weight_elements
from quantconf.models.runtime import set_threads
from quantconf.quantizers.base import QUANTIZERS, QuantConfig, Quantizer, code_identity, load_methods
from quantconf.quantizers.calib_data import build_calibration

__all__ = ["QuantConfig", "Quantizer", "load_methods", "validate_config", "run_quantize"]


def validate_config(config: QuantConfig) -> None:
    config.validate(load_methods())


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).glob("*.safetensors"))


def deployed_bytes(extra: dict, total_params: int | None) -> int | None:
    """Bytes of the weights in the method's deployed format, the same formula for every method:
    quantized layers at their bits per weight (scales and zeros included), every other parameter
    (embeddings, norms, lm_head) at 16 bits. Comparable across methods, whatever the checkpoint
    stores (dense fake-quant, packed, GGUF)."""
    bits, quantized = extra.get("bits_per_weight"), extra.get("quantized_params")
    if not bits or not quantized or not total_params:
        return None
    return round((quantized * bits + (total_params - quantized) * 16) / 8)


def run_quantize(model: str, config: QuantConfig, out: Path, overwrite: bool = False, threads: int | None = None,
                 data_dir: str | None = None, quiet: bool = False, log=print) -> dict:
    """Quantize `model` into `out`. quiet=True sends the library's own output to `out/library.log`."""
    from transformers import AutoConfig, AutoTokenizer  # lazy: seconds to import, only needed here

    validate_config(config)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise QuantconfError(f"out {out} is a file, not a checkpoint directory; choose another out dir", param="out")
    if out.exists() and not overwrite:
        raise QuantconfError(f"out {out} already exists; overwrite it or choose another out dir",
                             param="out")
    check_ours_to_replace(out, QUANTIZE_RECORD, "checkpoint")  # before any work, and before anything is deleted
    ensure_writable_dir(out.parent)
    clean_stale_temp(out.parent, recursive=False)  # checkpoints half-written by killed runs
    n_threads = set_threads(threads)
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
            extra = quantizer.quantize(src, calib.samples if calib else [], config, tmp)
        seconds = time.perf_counter() - t0
        tokenizer.save_pretrained(tmp)
        give_umask_modes(tmp)  # safetensors writes 0600; results get the mode any other file gets
        record = {
            "method": config.method, "config": asdict(config), "label": config.label(),
            "method_version": quantizer.version, "code_identity": code_identity(quantizer),
            "method_options": {k: getattr(config, k) for k in quantizer.options},
            "model_spec": model, "model_fingerprint": model_fingerprint(model),
            "calibration": calib.record() if calib else {"name": "none", "note": f"{config.method} uses no data"},
            "seconds": round(seconds, 2), "threads": n_threads,
            "threads_note": ("the checkpoint depends on the thread count (summation order)"
                             if not quantizer.threads_invariant else "the checkpoint does not depend on threads"),
            "size_before_bytes": dir_size(Path(src)) if Path(src).is_dir() else None,
            "size_after_bytes": dir_size(tmp), "deployed_bytes": deployed_bytes(extra, weight_elements(src)),
            "packages": package_versions(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **extra,
        }
        # what --overwrite may later remove: exactly the entries written here
        record["files"] = sorted({p.name for p in tmp.iterdir()} | {QUANTIZE_RECORD})
        atomic_write_json(tmp / QUANTIZE_RECORD, record)
    log(f"quantized {model} with {config.label()} in {seconds:.1f}s -> {out}")
    return record
