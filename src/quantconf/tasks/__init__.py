"""Tasks: find a task by name and load its documents as validated questions.

Definitions live in `registry.py` (`Task`, `register_task`). Every other module in this package
is imported on first use, so a new built-in task is one new file that calls
`register_task(Task(...))`; nothing else needs editing. `file:PATH.jsonl` names a local task.
`datasets` is imported only when a task's documents come from the hub (it takes seconds to import).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from quantconf.errors import QuantconfError
from quantconf.tasks.registry import REGISTRY, Question, Task, register_task

__all__ = ["Question", "Task", "register_task", "get_task", "task_names", "load_task", "LoadedTask", "read_jsonl"]

DATA_DIR_ENV = "QUANTCONF_DATA_DIR"


_LOADED = False


def _load_builtin_tasks() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for mod in pkgutil.iter_modules(__path__):
        if mod.name != "registry":
            importlib.import_module(f"{__name__}.{mod.name}")


def task_names() -> list[str]:
    _load_builtin_tasks()
    return sorted(REGISTRY)


def get_task(name: str) -> Task:
    """A registered task by name, or a generic local task for `file:PATH`."""
    _load_builtin_tasks()
    if name.startswith("file:"):
        return file_task(Path(name[len("file:"):]))
    if name not in REGISTRY:
        raise QuantconfError(
            f"unknown task {name!r}; choose from {', '.join(task_names())} or file:PATH.jsonl"
        )
    return REGISTRY[name]


def file_task(path: Path) -> Task:
    """Any jsonl whose rows hold `query` (str), `choices` (list of str) and `gold` (int)."""
    try:
        exists = path.is_file()
    except (ValueError, OSError) as e:  # an embedded NUL byte, a name too long for the file system
        raise QuantconfError(f"task file name {str(path)[:80]!r} is not a usable path ({e})") from None
    if not exists:
        raise QuantconfError(f"task file {path} not found; pass --tasks file:PATH to an existing .jsonl")
    return Task(
        name=f"file:{path}",
        version="file-1",
        doc_to_text=lambda d: d["query"],
        doc_to_choices=lambda d: d["choices"],
        doc_to_gold=lambda d: d["gold"],
        file=path,
        split=None,
        description=f"local file {path}",
    )


# ---------------------------------------------------------------------------------------------
# Loading documents


def read_jsonl(path: Path) -> list[dict]:
    """Rows of a jsonl file; a malformed line raises with file:line."""
    rows = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise QuantconfError(f"{path}:{lineno}: not UTF-8 ({e.reason} at byte {e.start}); "
                                     "save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise QuantconfError(f"{path}:{lineno}: malformed JSON ({e.msg}); fix or remove that line") from None
            except (ValueError, RecursionError) as e:  # a 5000-digit number, nesting deeper than Python recurses
                raise QuantconfError(f"{path}:{lineno}: unreadable JSON ({type(e).__name__}: {str(e)[:80]}); "
                                     "fix or remove that line") from None
            if not isinstance(row, dict):
                raise QuantconfError(f"{path}:{lineno}: expected a JSON object per line")
            rows.append(row)
    return rows


def resolve_data_dir(data_dir: str | Path | None) -> Path | None:
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV) or None
    if data_dir is None:
        return None
    path = Path(data_dir)
    if not path.is_dir():
        raise QuantconfError(f"data dir {path} does not exist; pass --data-dir DIR (layout DIR/<dataset>/<split>.jsonl)")
    return path


@dataclass(frozen=True)
class LoadedTask:
    task: Task
    questions: list[Question]
    source: str  # "hub:<path>/<name>:<split>", a local file path, or "generated:seed=N"
    source_sha256: str  # hash of the documents as loaded


def _local_file(task: Task, data_dir: Path | None) -> Path | None:
    if task.file is not None:
        return task.file
    if data_dir is not None and task.local_folder:
        path = data_dir / task.local_folder / f"{task.split}.jsonl"
        if not path.is_file():
            raise QuantconfError(
                f"task {task.name}: {path} not found; the data dir must hold "
                f"{task.local_folder}/{task.split}.jsonl in the hub schema of {task.hub_path}"
            )
        return path
    return None


def _hub_docs(task: Task) -> list[dict]:
    try:
        import datasets

        ds = datasets.load_dataset(task.hub_path, task.hub_name, split=task.split)
    except Exception as e:  # offline, unknown dataset, ...: one line naming the fix
        raise QuantconfError(
            f"task {task.name}: cannot load hub dataset {task.hub_path}"
            f"{'/' + task.hub_name if task.hub_name else ''} ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
            f"offline, pass --data-dir DIR with {task.local_folder}/{task.split}.jsonl"
        ) from None
    return [dict(row) for row in ds]


def load_task(
    name: str, data_dir: str | Path | None = None, limit: int | None = None, seed: int = 1234
) -> LoadedTask:
    """Documents of a task as validated `Question`s (first `limit` of them)."""
    if limit is not None and limit <= 0:
        raise QuantconfError(f"limit must be a positive number of questions, got {limit}", param="limit")
    task = get_task(name)
    data_dir = resolve_data_dir(data_dir)
    local = _local_file(task, data_dir)
    if task.generate is not None:
        docs, where, source = task.generate(seed), None, f"generated:seed={seed}"
    elif local is not None:
        docs, where, source = read_jsonl(local), local, str(local)
    elif task.hub_path is not None:
        docs, where, source = _hub_docs(task), None, f"hub:{task.hub_path}/{task.hub_name or ''}:{task.split}"
    else:
        raise QuantconfError(f"task {task.name} has no data source; pass --data-dir DIR")
    if limit is not None:
        docs = docs[:limit]
    questions = [_to_question(task, i, doc, where) for i, doc in enumerate(docs)]
    if not questions:
        raise QuantconfError(f"task {task.name}: no documents in {source}")
    digest = hashlib.sha256(json.dumps(docs, sort_keys=True, default=str).encode()).hexdigest()
    return LoadedTask(task, questions, source, digest)


def _to_question(task: Task, doc_id: int, doc: dict, where: Path | None) -> Question:
    # jsonl rows skip blank lines, so report the row number (1-based) as the line for files
    loc = f"{where}:{doc_id + 1}" if where else f"{task.name} doc {doc_id}"
    try:
        context = task.doc_to_text(doc)
        choices = list(task.doc_to_choices(doc))
        gold = task.doc_to_gold(doc)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        raise QuantconfError(f"{loc}: row does not fit task {task.name} ({type(e).__name__}: {e}); fix that row") from None
    if not isinstance(context, str):
        raise QuantconfError(f"{loc}: context must be a string")
    if not choices:
        raise QuantconfError(f"{loc}: empty choice list; every question needs at least one choice")
    if not all(isinstance(c, str) for c in choices):
        raise QuantconfError(f"{loc}: choices must be strings")
    golds = gold if isinstance(gold, list) else [gold]
    if not golds:
        raise QuantconfError(f"{loc}: no gold label")
    for g in golds:
        if isinstance(g, bool) or not isinstance(g, int):
            raise QuantconfError(f"{loc}: gold label must be an integer index, got {g!r}")
        if not 0 <= g < len(choices):
            raise QuantconfError(f"{loc}: gold label {g} out of range for {len(choices)} choices")
    return Question(doc_id, context, choices, gold)


def task_texts(name: str, data_dir: str | Path | None = None, seed: int = 1234) -> Iterable[str]:
    """Plain text of a task's documents (context + gold answer), for calibration sets."""
    loaded = load_task(name, data_dir=data_dir, seed=seed)
    for q in loaded.questions:
        gold = q.gold[0] if isinstance(q.gold, list) else q.gold
        yield q.context + loaded.task.target_delimiter + q.choices[gold]
