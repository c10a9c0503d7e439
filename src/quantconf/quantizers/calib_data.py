"""Calibration data: text (or token ids) the quantizer sees, sampled as fixed-length windows.

  c4, wikitext2   hub datasets (allenai/c4 en validation; wikitext-2-raw-v1 train);
                  offline: `c4:PATH` / `wikitext2:PATH` reads the same text from a local txt/jsonl
  task:<name>     the text (context + gold answer) of a quantconf task's own documents
  random          uniform random token ids (no text at all)
  punct           random punctuation strings (Paglieri et al. 2024's "nonsense" set)
  pydoc           English prose that ships with CPython (`pydoc_data.topics`), offline everywhere
  file:PATH       a local .txt file or .jsonl with a "text" field

Text sets are concatenated, tokenized, and `n_samples` windows of `seq_len` tokens are cut at
random offsets drawn from `seed` (as GPTQ's reference code samples C4).
`datasets` is imported only when a hub set is asked for (seconds to import; offline sets need none).
"""

from __future__ import annotations

import hashlib
import json
import random
import pydoc_data.topics
from dataclasses import dataclass
from pathlib import Path

from quantconf.errors import QuantconfError
from quantconf.tasks import read_jsonl, task_texts

# bump when a change here can change the calibration samples a set yields (part of the step keys of
# every method that takes data)
CALIB_DATA_VERSION = "1"
PUNCTUATION = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


@dataclass
class CalibrationData:
    name: str
    samples: list[list[int]]
    source: str
    n_text_tokens: int

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.samples).encode()).hexdigest()

    def record(self) -> dict:
        return {"name": self.name, "source": self.source, "n_samples": len(self.samples),
                "seq_len": len(self.samples[0]) if self.samples else 0, "sha256": self.sha256(),
                "n_text_tokens": self.n_text_tokens}


def _read_text_file(path: Path) -> str:
    if not path.is_file():
        raise QuantconfError(f"calibration file {path} not found")
    if path.suffix == ".jsonl":
        rows = read_jsonl(path)
        if not all(isinstance(r.get("text"), str) for r in rows):
            raise QuantconfError(f"{path}: every jsonl row needs a string field \"text\"")
        return "\n\n".join(r["text"] for r in rows)
    return path.read_text(encoding="utf-8", errors="replace")


def _hub_text(name: str) -> str:
    try:
        import datasets

        if name == "c4":
            ds = datasets.load_dataset("allenai/c4", data_files={"validation": "en/c4-validation.00000-of-00008.json.gz"},
                                       split="validation")
        else:
            ds = datasets.load_dataset("wikitext", "wikitext-2-raw-v1", split="train")
    except Exception as e:
        raise QuantconfError(f"cannot load calibration set {name} from the hub ({type(e).__name__}); "
                             f"offline, pass --calib {name}:PATH with a local .txt/.jsonl copy") from None
    return "\n\n".join(t for t in ds["text"][:20000] if t.strip())


def calib_text(spec: str, seed: int, data_dir: str | None = None) -> tuple[str, str]:
    """(text, source description) of a text calibration set."""
    if spec == "pydoc":
        return "\n\n".join(pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics)), "pydoc_data.topics"
    if spec == "punct":
        rng = random.Random(seed)
        words = ("".join(rng.choice(PUNCTUATION) for _ in range(rng.randint(1, 6))) for _ in range(200_000))
        return " ".join(words), f"random punctuation, seed {seed}"
    if spec.startswith("file:"):
        return _read_text_file(Path(spec[5:])), spec[5:]
    if spec.startswith("task:"):
        return "\n\n".join(task_texts(spec[5:], data_dir=data_dir, seed=seed)), spec
    name, _, path = spec.partition(":")
    if name in ("c4", "wikitext2"):
        return (_read_text_file(Path(path)), path) if path else (_hub_text(name), f"hub:{name}")
    raise QuantconfError(f"unknown calibration set {spec!r}; use c4, wikitext2, pydoc, punct, random, "
                         "task:<name> or file:PATH")


def text_identity(spec: str) -> str | None:
    """The sha256 of the local file a text set reads (file:PATH, c4:PATH, wikitext2:PATH), for step keys: the
    key follows the file's content, not its path (editing the file re-runs what read it). None for the sets
    whose text is fixed by quantconf's version (pydoc, punct, random), a task's documents or the hub."""
    name, _, path = spec.partition(":")
    if name in ("file", "c4", "wikitext2") and path and Path(path).is_file():
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    return None


def build_calibration(spec: str, tokenizer, n_samples: int, seq_len: int, seed: int,
                      data_dir: str | None = None) -> CalibrationData:
    rng = random.Random(seed)
    if spec == "random":
        vocab = len(tokenizer)
        samples = [[rng.randrange(vocab) for _ in range(seq_len)] for _ in range(n_samples)]
        return CalibrationData(spec, samples, f"uniform token ids 0..{vocab - 1}, seed {seed}", 0)
    text, source = calib_text(spec, seed, data_dir)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) < seq_len:
        raise QuantconfError(f"calibration set {spec} has only {len(ids)} tokens; need at least --seq-len {seq_len} "
                             "(add text or lower --seq-len)")
    starts = [rng.randrange(len(ids) - seq_len + 1) for _ in range(n_samples)]
    return CalibrationData(spec, [ids[s:s + seq_len] for s in starts], source, len(ids))
