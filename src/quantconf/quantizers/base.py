"""What a quantization method is: its configuration (`QuantConfig`) and its interface (`Quantizer`).

A method is one file in this package that calls `register_quantizer(Quantizer(...))`:
    quantize(model_src, calib_samples, config, out_dir) -> dict of extra facts
    check_model(hf_config, config) -> None, raising QuantconfError before any work
    load(path, dtype, device) -> the checkpoint as a model that runs here (default: dense safetensors)
It writes a checkpoint into `out_dir` and reads it back (`load`): a method owns both sides of its
format, as a transformers HfQuantizer does.

Each method says which `QuantConfig` fields it takes (`options`) and its own defaults (`defaults`:
W8A8 is 8-bit, AWQ's default group is 64 because SmolLM2's width 576 is not a multiple of 128).
A field a method does not take must keep its default: `--calib` for bitsandbytes or activation
options for a weight-only method fail before any work, with one line naming what the method takes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

from quantconf.errors import QuantconfError
from quantconf.quantizers.calib_data import CALIB_DATA_VERSION

VALID_BITS = (2, 3, 4, 8)
VALID_GROUPS = (-1, 32, 64, 128)
CALIBRATION_FIELDS = ("calib", "n_samples", "seq_len", "seed")
# fields added with the methods beyond GPTQ/RTN: left out of step keys while at their default, so
# studies run before they existed keep their keys (and their finished steps)
METHOD_FIELDS = ("scheme", "activations", "smoothquant_alpha", "double_quant", "outlier_threshold")


@dataclass(frozen=True)
class QuantConfig:
    """One quantization variant. Its fields (as `key_fields()`) are part of study step keys."""

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
    scheme: str = ""  # a method's named format: bnb nf4|fp4|int8, gguf Q4_0|Q8_0|Q4_K_M|...
    activations: str = ""  # w8a8: "static" (per-tensor scales from the calibration set) | "dynamic" (per token)
    smoothquant_alpha: float = 0.0  # w8a8: SmoothQuant migration strength; 0 = off
    double_quant: bool = False  # bnb 4-bit: quantize the block scales too
    outlier_threshold: float = 6.0  # bnb int8 (LLM.int8): activation columns above it stay in 16 bits

    @classmethod
    def for_method(cls, method: str = "gptq", **given) -> "QuantConfig":
        """The method's defaults, then `given` on top (what the CLI, the API and studies build)."""
        quantizer = load_methods().get(method)
        base = dict(quantizer.defaults) if quantizer else {}
        if quantizer and quantizer.scheme_bits:  # a named format fixes the bits, and bits pick a format
            if "scheme" in given and "bits" not in given and given["scheme"] in quantizer.scheme_bits:
                given = {**given, "bits": quantizer.scheme_bits[given["scheme"]]}
            elif "bits" in given and "scheme" not in given and given["bits"] in quantizer.default_scheme:
                given = {**given, "scheme": quantizer.default_scheme[given["bits"]]}
        return cls(method=method, **{**base, **given})

    def validate(self, known_methods) -> None:
        """Raise QuantconfError naming the field when a value is out of range (before any work)."""
        for f in fields(self):
            value, kind = getattr(self, f.name), type(f.default)
            kind = (int, float) if kind is float else kind
            if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
                raise QuantconfError(f"{f.name} must be of type {getattr(kind, '__name__', 'number')}, got {value!r}",
                                     param=f.name)
        if self.method not in known_methods:
            raise QuantconfError(f"method {self.method!r} is unknown; choose from {', '.join(sorted(known_methods))}",
                                 param="method")
        quantizer = known_methods[self.method]
        for name in not_taken(quantizer, self):
            raise QuantconfError(f"{name} does not apply to method {self.method} (it takes: "
                                 f"{', '.join(quantizer.options) or 'no options'})", param=name)
        if self.bits not in quantizer.bits:
            raise QuantconfError(f"bits must be one of {quantizer.bits} for method {self.method}, got {self.bits}",
                                 param="bits")
        if "group_size" in quantizer.options and self.group_size not in quantizer.group_sizes:
            raise QuantconfError(f"group_size must be one of {quantizer.group_sizes} for method {self.method}, "
                                 f"got {self.group_size}", param="group_size")
        if not 0 < self.damp < 1:
            raise QuantconfError(f"damp must be in (0, 1), got {self.damp}", param="damp")
        if self.n_samples < 1:
            raise QuantconfError(f"n_samples must be >= 1, got {self.n_samples}", param="n_samples")
        if self.seq_len < 8:
            raise QuantconfError(f"seq_len must be >= 8, got {self.seq_len}", param="seq_len")
        quantizer.check_config(self)

    def key_fields(self) -> dict:
        """The fields that identify this variant (study step keys): new method fields only when set."""
        defaults = QuantConfig()
        return {k: v for k, v in asdict(self).items() if k not in METHOD_FIELDS or v != getattr(defaults, k)}

    def label(self) -> str:
        quantizer = load_methods().get(self.method)
        if quantizer is not None and quantizer.label is not None:
            return quantizer.label(self)
        g = "pc" if self.group_size == -1 else f"g{self.group_size}"
        label = f"{self.method}-w{self.bits}{g}"
        if quantizer is None or quantizer.needs_calibration:
            label += calibration_suffix(self)
        return label

    def replicate_family(self) -> str:
        """The label replicates share (quantizations that differ only in their seed): the label without the seed."""
        return replace(self, seed=0).label().removesuffix("-s0")


def calibration_suffix(config: QuantConfig) -> str:
    return "-" + config.calib.replace(":", "_").replace("/", "_") + f"-s{config.seed}"


def not_taken(quantizer: "Quantizer", config: QuantConfig) -> list[str]:
    """Fields set away from the method's defaults that the method does not take."""
    base = QuantConfig()
    return [f.name for f in fields(config) if f.name != "method" and f.name not in quantizer.options
            and getattr(config, f.name) != quantizer.defaults.get(f.name, getattr(base, f.name))]


def accept_any_model(hf_config, config) -> None:
    """The check of a method that runs on every architecture and layer width."""


def accept_config(config) -> None:
    """The extra config check of a method whose options the generic checks cover."""


def group_bits(bits: int, group_size: int, in_features: int, scale_bits: int = 16, zero_bits: int = 0) -> float:
    """Bits per weight of a grouped format: the weights plus each group's scale (and zero point)."""
    g = in_features if group_size == -1 else min(group_size, in_features)
    return bits + (scale_bits + zero_bits) / g


def relative_error(w, wq) -> float:
    """||W - Wq||^2 / ||W||^2: the per-layer error every method records, so methods compare."""
    w, wq = w.float(), wq.float()
    return float(((w - wq).norm() / w.norm()).item() ** 2)


def source_weights(model_src) -> dict:
    """Float weights of a model directory by tensor name, read lazily from its safetensors
    (the reference each method's per-layer error is measured against)."""
    from pathlib import Path

    from safetensors import safe_open

    class _Weights(dict):
        def __missing__(self, name):
            with safe_open(str(self.files[name]), "pt") as st:
                return st.get_tensor(name)

    weights = _Weights()
    weights.files = {}
    for f in sorted(Path(model_src).glob("*.safetensors")) if Path(model_src).is_dir() else []:
        with safe_open(str(f), "pt") as st:
            weights.files.update({k: f for k in st.keys()})
    return weights


def fake_quantize_linears(model_src, out_dir, quantize_layer) -> dict:
    """Load `model_src` in float32, replace every Linear's weight but lm_head's with
    `quantize_layer(module) -> (dequantized weight, bits per weight)`, save dense safetensors to
    `out_dir`; the layer record. The loop of every method that stores fake-quant weights (rtn, hqq, gguf)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_src), dtype=torch.float32)
    errors, bits, numel = {}, {}, {}
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear) and "lm_head" not in name:
                wq, bits[name] = quantize_layer(mod)
                errors[name], numel[name] = relative_error(mod.weight, wq), mod.weight.numel()
                mod.weight.copy_(wq)
    if not errors:
        raise QuantconfError("no linear layers found to quantize; unsupported architecture for this method")
    model.save_pretrained(out_dir, safe_serialization=True)
    return layer_record(errors, bits, numel)


def check_group_divides(hf_config, config, hint: str) -> None:
    """Refuse (before any work) a group size that does not divide the model's hidden or MLP width."""
    if config.group_size == -1:
        return
    for name in ("hidden_size", "intermediate_size"):
        width = getattr(hf_config, name, None)
        if width is not None and width % config.group_size:
            raise QuantconfError(f"group_size {config.group_size} does not divide this model's {name} {width} "
                                 f"for method {config.method}{hint}; choose 64 or 32", param="group_size")


def layer_record(errors: dict, bits_per_weight: dict, numel: dict) -> dict:
    """The `layer_error` and size facts of quantize.json, the same for every method:
    bits_per_weight is the numel-weighted mean over quantized layers (scales and zeros included)."""
    total = sum(numel.values())
    mean_bits = sum(bits_per_weight[k] * numel[k] for k in numel) / total if total else None
    return {"layer_error": {"metric": "relative squared weight error ||W - Wq||^2 / ||W||^2", "layers": errors},
            "bits_per_weight": None if mean_bits is None else round(mean_bits, 4), "quantized_params": total}


def load_dense(path: Path, dtype, device: str):
    """A fake-quant checkpoint (rtn, hqq, gguf: dense weights holding the quantized values), as plain
    safetensors."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, use_safetensors=True).to(device)


@dataclass(frozen=True)
class Quantizer:
    name: str
    quantize: Callable  # (model_src, calib_samples, config, out_dir) -> dict
    check_model: Callable = accept_any_model  # (hf_config, config) -> None; raise QuantconfError before any work
    load: Callable = None  # (path, dtype, device) -> model; None: `load_dense` (fake-quant checkpoints)
    # the `quant_method`s of config.json this method reads, for checkpoints other tools wrote
    reads: tuple[str, ...] = ()
    needs_calibration: bool = True
    # False when the checkpoint depends on the torch thread count (summation order): GPTQ's
    # Hessian updates do; then study step keys and quantize.json record the thread count
    threads_invariant: bool = True
    library: str = "quantconf"  # the distribution doing the work (its version goes in `quantconf methods`)
    # bump when a change to this method's code can change the checkpoints it writes: the version (with
    # the library's installed version) is part of every study's quantize step key for this method
    version: str = "1"
    devices: tuple[str, ...] = ("cpu", "cuda")  # where its checkpoints can be made and evaluated
    description: str = ""
    options: tuple[str, ...] = ("bits", "group_size", "sym")  # QuantConfig fields the method takes
    defaults: dict = field(default_factory=dict)  # its own defaults for QuantConfig fields
    bits: tuple[int, ...] = VALID_BITS
    group_sizes: tuple[int, ...] = VALID_GROUPS
    scheme_bits: dict = field(default_factory=dict)  # scheme -> its bits
    default_scheme: dict = field(default_factory=dict)  # bits -> the scheme given bits alone select
    check_config: Callable = accept_config  # (config) -> None; method-specific rules
    label: Callable | None = None  # (config) -> str; None: method-wN[gG][-calib-sS]

    def __post_init__(self):
        if self.load is None:
            object.__setattr__(self, "load", load_dense)

    def describe(self) -> dict:
        """One row of `quantconf methods`: what the method takes and needs."""
        lib_version = library_version(self.library)
        activation = [o for o in ("activations", "smoothquant_alpha", "outlier_threshold") if o in self.options]
        return {"name": self.name, "needs_calibration": self.needs_calibration, "bits": list(self.bits),
                "group_sizes": list(self.group_sizes) if "group_size" in self.options else [],
                "schemes": list(self.scheme_bits), "options": list(self.options), "activation_options": activation,
                "defaults": dict(self.defaults), "library": self.library, "library_version": lib_version,
                "devices": list(self.devices), "description": self.description}


def library_version(library: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(library)
    except PackageNotFoundError:
        return None


def code_identity(quantizer: Quantizer) -> list:
    """What identifies the code that writes a method's checkpoints, for step keys: the method's own
    version, its library's installed version, and (for methods that take data) the version of the
    calibration-set builder. A fix in one method re-runs that method's steps and nothing else."""
    return [quantizer.name, quantizer.version, quantizer.library, library_version(quantizer.library),
            *([CALIB_DATA_VERSION] if quantizer.needs_calibration else [])]


QUANTIZERS: dict[str, Quantizer] = {}
NOT_METHODS = ("__init__", "base", "calib_data", "llm_compressor")  # modules of this package that register nothing


def load_methods() -> dict[str, Quantizer]:
    """Import every method module of this package once (each registers itself); the registry."""
    import importlib
    import pkgutil
    from pathlib import Path

    for mod in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if mod.name not in NOT_METHODS:
            importlib.import_module(f"{__package__}.{mod.name}")
    return QUANTIZERS


def register_quantizer(q: Quantizer) -> Quantizer:
    if q.name in QUANTIZERS:
        raise ValueError(f"quantization method {q.name!r} registered twice")
    QUANTIZERS[q.name] = q
    return q
