"""What a quantization method is: its configuration (`QuantConfig`) and its interface (`Quantizer`).

A method is one file in this package that calls `register_quantizer(Quantizer(...))`:
    quantize(model_src, tokenizer, calib_samples, config, out_dir) -> dict of extra facts
    check_model(hf_config, config) -> None, raising QuantconfError before any work
It writes a checkpoint into `out_dir` that `quantconf.models.load_quantized` reloads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from quantconf.errors import QuantconfError

VALID_BITS = (2, 3, 4, 8)
VALID_GROUPS = (-1, 32, 64, 128)


@dataclass(frozen=True)
class QuantConfig:
    """One quantization variant. Its fields (as `dataclasses.asdict`) are part of study step keys."""

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

    def validate(self, known_methods) -> None:
        """Raise QuantconfError naming the field when a value is out of range (before any work)."""
        for name, kind in (("method", str), ("bits", int), ("group_size", int), ("n_samples", int), ("seq_len", int), ("seed", int),
                           ("damp", (int, float)), ("sym", bool), ("desc_act", bool), ("calib", str)):
            value = getattr(self, name)
            if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
                raise QuantconfError(f"{name} must be of type {getattr(kind, '__name__', 'number')}, got {value!r}",
                                     param=name)
        if self.method not in known_methods:
            raise QuantconfError(f"method {self.method!r} is unknown; choose from {', '.join(sorted(known_methods))}",
                                 param="method")
        if self.bits not in VALID_BITS:
            raise QuantconfError(f"bits must be one of {VALID_BITS}, got {self.bits}", param="bits")
        if self.group_size not in VALID_GROUPS:
            raise QuantconfError(f"group_size must be one of {VALID_GROUPS}, got {self.group_size}", param="group_size")
        if not 0 < self.damp < 1:
            raise QuantconfError(f"damp must be in (0, 1), got {self.damp}", param="damp")
        if self.n_samples < 1:
            raise QuantconfError(f"n_samples must be >= 1, got {self.n_samples}", param="n_samples")
        if self.seq_len < 8:
            raise QuantconfError(f"seq_len must be >= 8, got {self.seq_len}", param="seq_len")
        if self.desc_act and self.method != "gptq":
            raise QuantconfError("desc_act only applies to method gptq", param="desc_act")

    def label(self) -> str:
        g = "pc" if self.group_size == -1 else f"g{self.group_size}"
        calib = self.calib.replace(":", "_").replace("/", "_")
        return f"{self.method}-w{self.bits}{g}" + (f"-{calib}-s{self.seed}" if self.method != "rtn" else "")


def accept_any_model(hf_config, config) -> None:
    """The check of a method that runs on every architecture and layer width."""


@dataclass(frozen=True)
class Quantizer:
    name: str
    quantize: Callable  # (model_src, tokenizer, calib_samples, config, out_dir) -> dict
    check_model: Callable = accept_any_model  # (hf_config, config) -> None; raise QuantconfError before any work
    needs_calibration: bool = True
    # False when the checkpoint depends on the torch thread count (summation order): GPTQ's
    # Hessian updates do; then study step keys and quantize.json record the thread count
    threads_invariant: bool = True
    library: str = "quantconf"  # the distribution doing the work (its version goes in `quantconf methods`)
    devices: tuple[str, ...] = ("cpu", "cuda")  # where its checkpoints can be made and evaluated
    description: str = ""

    def describe(self) -> dict:
        """One row of `quantconf methods`: what the method takes and needs."""
        from importlib.metadata import PackageNotFoundError, version

        try:
            lib_version = version(self.library)
        except PackageNotFoundError:
            lib_version = None
        return {"name": self.name, "needs_calibration": self.needs_calibration, "bits": list(VALID_BITS),
                "group_sizes": list(VALID_GROUPS), "activation_options": [], "library": self.library,
                "library_version": lib_version, "devices": list(self.devices), "description": self.description}


QUANTIZERS: dict[str, Quantizer] = {}


def register_quantizer(q: Quantizer) -> Quantizer:
    QUANTIZERS[q.name] = q
    return q

