"""Prediction files: `<dir>/<task>.parquet` (one row per question or prompt) + `<dir>/manifest.json`.

What a row holds is the task kind's (`kinds/choice.py`: per-choice log-likelihoods; `kinds/generation.py`:
one answer per prompt); the kind is stored in each parquet file's metadata and in its manifest entry, and
read back from there. Written by `evaluate` and the importers, read by metrics, compare and studies.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from quantconf.errors import QuantconfError
from quantconf.io import atomic_write_json, atomic_write_parquet, locked, read_optional_json, sha256_file
from quantconf.kinds import kind_of, kind_named

MANIFEST = "manifest.json"


def write_predictions(df: pd.DataFrame, path: Path) -> None:
    """A predictions frame to `path`, its kind in the file's metadata (pandas stores DataFrame.attrs there)."""
    kind = kind_of(df)
    missing = [c for c in kind.columns if c not in df.columns]
    if missing:
        raise ValueError(f"predictions lack columns {missing}")
    df.attrs["kind"] = kind.name
    atomic_write_parquet(Path(path), df)


def task_file_name(task: str) -> str:
    """`file:/a/b.jsonl` -> `file_b.parquet`; builtin names map to themselves."""
    if task.startswith("file:"):
        stem = Path(task[5:]).stem
        return f"file_{stem}.parquet"
    return f"{task}.parquet"


def read_prediction_file(path: Path, kind: str | None = None) -> pd.DataFrame:
    """One task's predictions parquet, with list columns as Python lists, checked by its kind (`kind`: the
    manifest's entry; else the file's metadata; a file written before kinds were recorded, by its columns)."""
    path = Path(path)
    try:
        df = pd.read_parquet(path)
    except Exception as e:
        raise QuantconfError(f"{path}: not a readable predictions parquet ({type(e).__name__}); re-run quantconf eval") from None
    fix = "recompute it (quantconf eval --overwrite, or import-lm-eval --overwrite for imported results)"
    kind = kind_named(kind) if kind else kind_of(df)  # the manifest's word, else the file's metadata
    df.attrs["kind"] = kind.name
    return kind.read(df, str(path), fix)


def read_prediction_dir(pred_dir: Path) -> dict[str, pd.DataFrame]:
    """All task predictions in a directory, keyed by task name."""
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise QuantconfError(f"predictions dir {pred_dir} not found; run quantconf eval ... --out {pred_dir}")
    files = sorted(p for p in pred_dir.glob("*.parquet") if not p.name.startswith("."))
    if not files:
        raise QuantconfError(f"{pred_dir} holds no <task>.parquet files; run quantconf eval ... --out {pred_dir}")
    out, source = {}, {}
    kinds = {e.get("file"): e.get("kind") for e in _manifest_or_none(pred_dir).get("tasks", {}).values()}
    for f in files:
        df = read_prediction_file(f, kinds.get(f.name))
        task = str(df["task"].iloc[0]) if len(df) else f.stem
        if task in out:  # one would silently replace the other
            raise QuantconfError(f"{source[task].name} and {f.name} in {pred_dir} both hold task {task!r}; keep one "
                                 "(or move one to another directory)")
        out[task], source[task] = df, f
    return out


def _manifest_or_none(pred_dir: Path) -> dict:
    """The manifest when it is quantconf's (a directory of parquet files may sit beside a manifest of its own)."""
    try:
        return read_manifest(pred_dir)
    except QuantconfError:
        return {}


def intact(pred_dir: Path, entry: dict) -> bool:
    """Whether a manifest entry's predictions file is there and is what was written: its sha256 equals
    the one recorded (entries from before the hash was recorded: the file reads as predictions)."""
    path = Path(pred_dir) / entry.get("file", "")
    if not entry.get("file") or not path.is_file():
        return False
    if entry.get("sha256"):
        return sha256_file(path) == entry["sha256"]
    try:
        read_prediction_file(path)
    except QuantconfError:
        return False
    return True


def read_manifest(pred_dir: Path) -> dict:
    """The predictions manifest of `pred_dir` ({} when there is none). A manifest.json that is not quantconf's
    (not an object with a "tasks" object) is refused, never merged into or overwritten: it is the user's file."""
    path = Path(pred_dir) / MANIFEST
    manifest = read_optional_json(path, "if quantconf wrote it, delete it and re-run with --overwrite; if it is "
                                        "your own file, choose another directory")
    if path.is_file() and not (isinstance(manifest, dict) and isinstance(manifest.get("tasks"), dict)):
        raise QuantconfError(f"{path} is not a quantconf manifest (no \"tasks\" object): it is not quantconf's, and "
                             f"quantconf writes its own {MANIFEST} there; choose another directory")
    return manifest


def record_tasks(out: Path, entries: dict[str, dict], header=lambda manifest: {}, fresh: bool = False,
                 check=lambda manifest: None, log=None) -> None:
    """Add finished tasks to `out`'s manifest, the one writer of manifests (eval and both importers).

    Under the manifest's lock: the manifest is re-read (another writer may have added tasks meanwhile; `fresh`
    starts from nothing, as `--overwrite`), `check(manifest)` may refuse, `header(manifest)` gives the top-level
    fields to set, and each entry is stored with its predictions file's sha256. An entry's `file` is always the
    predictions file's name inside `out` (where it came from, for imports, is its `source`)."""
    out = Path(out)
    with locked(out / f".{MANIFEST}.lock", log, what=str(out / MANIFEST)):
        manifest = {} if fresh else read_manifest(out)
        check(manifest)
        tasks = dict(manifest.get("tasks", {}))
        for task, entry in entries.items():
            if Path(entry["file"]).name != entry["file"]:
                raise ValueError(f"manifest entry of {task}: file must be a name inside {out}, got {entry['file']!r}")
            if entry.get("kind") is None:  # the kind is recorded when the predictions are made, never guessed later
                raise ValueError(f"manifest entry of {task}: no task kind")
            tasks[task] = {**entry, "sha256": sha256_file(out / entry["file"])}
        atomic_write_json(out / MANIFEST, {**manifest, **header(manifest), "tasks": tasks})


def group_metrics(results: dict[str, dict], groups: dict[str, dict]) -> dict[str, dict]:
    """lm-eval's aggregate of each group over its members' metrics, as lm-eval computes it.

    `results`: {task: metrics dict with "n"}; `groups`: the manifest's {group: {"tasks": [member
    names], "aggregate_metric_list": [{"metric", "weight_by_size", ...}]}}. A member is a task or
    a group (its aggregate and total size are used). `weight_by_size`: mean weighted by members'
    question counts (lm-eval's default for MMLU, a micro average), else the plain mean of members.
    Groups without an aggregate_metric_list, or missing a member's result, are left out."""
    out: dict[str, dict] = {}

    def of(name: str) -> dict | None:
        if name in results:
            return results[name]
        if name not in groups:
            return None
        if name not in out:
            members = [of(m) for m in groups[name]["tasks"]]
            rules = groups[name].get("aggregate_metric_list") or []
            if not rules or any(m is None for m in members):
                return None
            sizes = np.array([m["n"] for m in members], dtype=float)
            agg = {"group": True, "n": int(sizes.sum()), "tasks": list(groups[name]["tasks"])}
            for rule in rules:
                metric = rule.get("metric")
                if not all(metric in m for m in members):
                    continue
                values = np.array([m[metric] for m in members], dtype=float)
                weights = sizes if rule.get("weight_by_size", True) else np.ones_like(sizes)
                agg[metric] = float(np.sum(values * weights) / np.sum(weights))
            out[name] = agg
        return out[name]

    for group in groups:
        of(group)
    return out
