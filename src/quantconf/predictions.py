"""Prediction files: `<dir>/<task>.parquet` (one row per question) + `<dir>/manifest.json`.

All writes are atomic (temp file in the same directory, then `os.replace`), so a killed run
never leaves a half-written file behind, and readers either see the old file or the new one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from quantconf import QuantconfError, __version__

REQUIRED_COLUMNS = ["doc_id", "task", "choices", "gold", "loglik", "n_tokens", "n_chars", "n_bytes", "is_greedy"]
MANIFEST = "manifest.json"


def _umask_mode(full: int) -> int:
    """The mode open()/mkdir() would give (full & ~umask): tempfile creates private 0600/0700
    entries, which would leave reports and results unreadable to the user's group."""
    umask = os.umask(0)
    os.umask(umask)
    return full & ~umask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, _umask_mode(0o666))
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_directory(target: Path):
    """Build a directory under a temporary name beside `target`; on success it replaces `target`,
    on any error (or Ctrl-C) the temporary directory is removed and `target` is left as it was."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        os.chmod(tmp, _umask_mode(0o777))
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def write_predictions(df: pd.DataFrame, path: Path) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"predictions lack columns {missing}")
    import io

    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    atomic_write_bytes(Path(path), buf.getvalue())


def task_file_name(task: str) -> str:
    """`file:/a/b.jsonl` -> `file_b.parquet`; builtin names map to themselves."""
    if task.startswith("file:"):
        stem = Path(task[5:]).stem
        return f"file_{stem}.parquet"
    return f"{task}.parquet"


def read_predictions(path: Path) -> pd.DataFrame:
    path = Path(path)
    try:
        df = pd.read_parquet(path)
    except Exception as e:
        raise QuantconfError(f"{path}: not a readable predictions parquet ({type(e).__name__}); re-run quantconf eval") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise QuantconfError(f"{path}: missing columns {missing}; was it written by quantconf eval/import-lm-eval?")
    for col in ("choices", "loglik", "n_tokens", "n_chars", "n_bytes", "is_greedy"):
        df[col] = df[col].map(lambda v: list(v))
    df["gold"] = df["gold"].map(lambda g: [int(x) for x in g] if isinstance(g, (list, np.ndarray)) else int(g))
    return df


def read_prediction_dir(pred_dir: Path) -> dict[str, pd.DataFrame]:
    """All task predictions in a directory, keyed by task name."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise QuantconfError(f"predictions dir {pred_dir} not found; run quantconf eval ... --out {pred_dir}")
    files = sorted(p for p in pred_dir.glob("*.parquet") if not p.name.startswith("."))
    if not files:
        raise QuantconfError(f"{pred_dir} holds no <task>.parquet files; run quantconf eval ... --out {pred_dir}")
    out = {}
    for f in files:
        df = read_predictions(f)
        out[str(df["task"].iloc[0]) if len(df) else f.stem] = df
    return out


def read_optional_json(path: Path, fix: str) -> dict:
    """The JSON object in `path`, {} if the file does not exist; a corrupt file raises naming `fix`."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise QuantconfError(f"{path} is corrupt; {fix}") from None


def read_manifest(pred_dir: Path) -> dict:
    return read_optional_json(Path(pred_dir) / MANIFEST, "delete it and re-run with --overwrite")


def package_versions() -> dict[str, str]:
    names = ["torch", "transformers", "gguf", "numpy", "scipy", "pandas", "gptqmodel", "datasets"]
    out = {"python": platform.python_version(), "quantconf": __version__}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def stable_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# Accuracy as lm-eval defines it


def accuracy(df: pd.DataFrame) -> dict[str, float]:
    """acc = mean[argmax loglik == gold]; acc_norm = same with loglik / len(choice chars).

    For multi-true rows (gold is a list), lm-eval's truthfulqa_mc2 score is reported as `acc`:
    the probability mass (softmax over raw logliks) on the true answers.
    """
    if len(df) == 0:
        return {"acc": float("nan"), "acc_norm": float("nan")}
    accs, norms = [], []
    for ll, chars, gold in zip(df["loglik"], df["n_chars"], df["gold"]):
        ll = np.asarray(ll, dtype=float)
        if isinstance(gold, list):
            p = np.exp(ll - ll.max())
            accs.append(p[gold].sum() / p.sum())
            norms.append(np.nan)
            continue
        accs.append(float(np.argmax(ll) == gold))
        norms.append(float(np.argmax(ll / np.asarray(chars, dtype=float)) == gold))
    norms = np.asarray(norms)
    return {"acc": float(np.mean(accs)), "acc_norm": float(np.mean(norms)) if not np.isnan(norms).all() else float("nan")}
