"""Prediction files: `<dir>/<task>.parquet` (one row per question) + `<dir>/manifest.json`.

Columns: doc_id, task, context, choices, gold (int, or a list of ints for multi-true tasks),
loglik, n_tokens, n_chars, n_bytes, is_greedy (lists, one entry per choice). Written by
`evaluate` and `import-lm-eval`, read by metrics, compare and studies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from quantconf.errors import QuantconfError
from quantconf.io import atomic_write_parquet, read_optional_json

REQUIRED_COLUMNS = ["doc_id", "task", "choices", "gold", "loglik", "n_tokens", "n_chars", "n_bytes", "is_greedy"]
MANIFEST = "manifest.json"


def write_predictions(df: pd.DataFrame, path: Path) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"predictions lack columns {missing}")
    atomic_write_parquet(Path(path), df)


def task_file_name(task: str) -> str:
    """`file:/a/b.jsonl` -> `file_b.parquet`; builtin names map to themselves."""
    if task.startswith("file:"):
        stem = Path(task[5:]).stem
        return f"file_{stem}.parquet"
    return f"{task}.parquet"


def read_prediction_file(path: Path) -> pd.DataFrame:
    """One task's predictions parquet, with list columns as Python lists."""
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
        df = read_prediction_file(f)
        out[str(df["task"].iloc[0]) if len(df) else f.stem] = df
    return out


def read_manifest(pred_dir: Path) -> dict:
    return read_optional_json(Path(pred_dir) / MANIFEST, "delete it and re-run with --overwrite")
