"""Prediction files: `<dir>/<task>.parquet` (one row per question) + `<dir>/manifest.json`.

Columns: doc_id, task, context, choices, gold (int, or a list of ints for multi-true tasks),
loglik, n_tokens, n_chars, n_bytes, is_greedy (lists, one entry per choice); tasks whose choices
sit in the context (Winogrande-style) add contexts (one per choice) and continuation. Written by
`evaluate` and `import-lm-eval`, read by metrics, compare and studies.

Generation tasks (a file with a `generation` column) have one row per prompt instead: doc_id, task,
context (the prompt), question (what P(True) asks about), reference (gold answer text, for display),
generation (the text, cut at the stop string), token_ids, token_logprobs, token_entropies (lists, one
per kept token), primary_metric (the name of the 0/1 metric that is "correct"), correct (its value),
the task's per-sample metrics under lm-eval's names (exact_match, bleu_acc, rouge1_acc, ...), and the
confidence measures sequence_logprob, mean_logprob, min_token_prob, mean_entropy, p_true (NaN where
unknown, e.g. imported generations without the model). Imports may add judge_score / judge_acc.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from quantconf.errors import QuantconfError
from quantconf.io import atomic_write_json, atomic_write_parquet, locked, read_optional_json, sha256_file

REQUIRED_COLUMNS = ["doc_id", "task", "choices", "gold", "loglik", "n_tokens", "n_chars", "n_bytes", "is_greedy"]
MANIFEST = "manifest.json"


GENERATION_COLUMNS = ["doc_id", "task", "context", "generation", "token_ids", "token_logprobs", "primary_metric",
                      "correct", "sequence_logprob", "mean_logprob", "min_token_prob", "mean_entropy", "p_true"]
GENERATION_LIST_COLUMNS = ("token_ids", "token_logprobs", "token_entropies")


def checked_doc_ids(doc_ids, source: str, fix: str):
    """Yield "<source> doc <id>" for each doc_id, after checking it is an integer not seen before."""
    seen: set = set()
    for doc_id in doc_ids:
        where = f"{source} doc {doc_id!r}"
        if not _is_int(doc_id):
            raise QuantconfError(f"{where}: doc_id must be an integer; {fix}")
        if doc_id in seen:
            raise QuantconfError(f"{where}: doc_id appears twice (each question once); {fix}")
        seen.add(doc_id)
        yield where


def is_generation_frame(df: pd.DataFrame) -> bool:
    """Whether a predictions frame holds generations (one row per prompt) rather than choice scores."""
    return "generation" in df.columns


def generations_frame(rows: list[dict]) -> pd.DataFrame:
    """Generation rows as a predictions frame (no rows: the columns alone)."""
    if not rows:
        return pd.DataFrame(columns=GENERATION_COLUMNS)
    return pd.DataFrame(rows)


def check_generations(df: pd.DataFrame, source: str, fix: str) -> None:
    """The rules every generation prediction set meets: integer doc_ids, each once; text generations;
    one primary metric named, present as a column, with 0/1 values in `correct`; confidence measures
    numeric (NaN allowed), probabilities within [0, 1]."""
    for where, text in zip(checked_doc_ids(df["doc_id"], source, fix), df["generation"]):
        if not isinstance(text, str):
            raise QuantconfError(f"{where}: generation must be text; {fix}")
    # a number 0 or 1 (a bool counts): a word such as "1" is refused, not read as a number, since the frame
    # would keep the word and every later mean would be of text
    for doc_id, v in zip(df["doc_id"], df["correct"]):
        if not isinstance(v, (int, float, np.integer, np.floating)) or float(v) not in (0.0, 1.0):
            shown = v.item() if isinstance(v, np.generic) else v
            raise QuantconfError(f"{source} doc {doc_id!r}: correct must be 0 or 1, got {shown!r}; {fix}")
    for col in ("min_token_prob", "p_true"):
        values = pd.to_numeric(df[col], errors="coerce")
        if ((values < 0) | (values > 1)).any():
            raise QuantconfError(f"{source}: {col} outside [0, 1]; {fix}")
    # a grading metric (lm-eval's, a judge's) is a finite number on every row: a NaN, an inf or a word among
    # numbers would become a wrong mean (or a pyarrow traceback) without a word
    for col in df.columns:
        if col in NOT_METRIC_COLUMNS:
            continue
        values = list(df[col])
        if not any(_is_real(v) for v in values):
            continue  # a text column (question, reference, ...)
        for doc_id, v in zip(df["doc_id"], values):
            if not _is_real(v) or not np.isfinite(float(v)):
                raise QuantconfError(f"{source} doc {doc_id!r}: metric {col} is {v!r}, not a finite number; {fix}")


# columns of a generation frame that are not grading metrics (confidence measures may be NaN: an empty answer)
NOT_METRIC_COLUMNS = {*GENERATION_COLUMNS, *GENERATION_LIST_COLUMNS, "question", "reference"} - {"correct"}


def _is_real(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def predictions_frame(rows: list[dict]) -> pd.DataFrame:
    """Question rows as a predictions frame. When some question has per-choice contexts, every row
    gets `contexts`/`continuation` (None where it has none); no rows (an empty shard) give an empty
    frame that still has the required columns."""
    if not rows:
        return pd.DataFrame(columns=["doc_id", "task", "context", *REQUIRED_COLUMNS[2:]])
    if any("contexts" in row for row in rows):
        rows = [{**row, "contexts": row.get("contexts"), "continuation": row.get("continuation")} for row in rows]
    return pd.DataFrame(rows)


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def check_predictions(df: pd.DataFrame, source: str, fix: str) -> None:
    """The rules every prediction set meets, checked where it enters (a parquet read, an import):
    integer doc_ids, each once; a non-empty list of string choices; one numeric log-likelihood per
    choice; a gold index (or list of them) in range. One error naming source, doc and the fix."""
    for where, choices, loglik, gold in zip(checked_doc_ids(df["doc_id"], source, fix), df["choices"], df["loglik"],
                                            df["gold"]):
        if not isinstance(choices, (list, tuple, np.ndarray)) or len(choices) == 0 or not all(
                isinstance(c, str) for c in choices):
            raise QuantconfError(f"{where}: choices must be a non-empty list of strings; {fix}")
        if not isinstance(loglik, (list, tuple, np.ndarray)) or len(loglik) != len(choices) or not all(
                isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in loglik):
            raise QuantconfError(f"{where}: needs one numeric log-likelihood per choice ({len(choices)}); {fix}")
        golds = list(gold) if isinstance(gold, (list, tuple, np.ndarray)) else [gold]
        if not golds or not all(_is_int(g) and 0 <= g < len(choices) for g in golds):
            raise QuantconfError(f"{where}: gold {gold!r} is not an index into its {len(choices)} choices; {fix}")


def write_predictions(df: pd.DataFrame, path: Path) -> None:
    missing = [c for c in (GENERATION_COLUMNS if is_generation_frame(df) else REQUIRED_COLUMNS) if c not in df.columns]
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
    fix = "recompute it (quantconf eval --overwrite, or import-lm-eval --overwrite for imported results)"
    if is_generation_frame(df):
        missing = [c for c in GENERATION_COLUMNS if c not in df.columns]
        if missing:
            raise QuantconfError(f"{path}: missing columns {missing}; was it written by quantconf eval/import-generations?")
        for col in GENERATION_LIST_COLUMNS:
            if col in df.columns:
                df[col] = df[col].map(lambda v: [] if v is None else list(v))
        check_generations(df, str(path), fix)
        return df
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise QuantconfError(f"{path}: missing columns {missing}; was it written by quantconf eval/import-lm-eval?")
    for col in ("choices", "loglik", "n_tokens", "n_chars", "n_bytes", "is_greedy"):
        df[col] = df[col].map(lambda v: list(v))
    if "contexts" in df.columns:
        df["contexts"] = df["contexts"].map(lambda v: None if v is None else list(v))
    check_predictions(df, str(path), fix)
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
    out, source = {}, {}
    for f in files:
        df = read_prediction_file(f)
        task = str(df["task"].iloc[0]) if len(df) else f.stem
        if task in out:  # one would silently replace the other
            raise QuantconfError(f"{source[task].name} and {f.name} in {pred_dir} both hold task {task!r}; keep one "
                                 "(or move one to another directory)")
        out[task], source[task] = df, f
    return out


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
