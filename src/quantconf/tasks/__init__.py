"""Tasks: find a task by name and load its documents as validated questions.

Definitions live in `registry.py` (`Task`, `register_task`). Every other module in this package
(but `lm_eval_bridge.py`) is imported on first use, so a new built-in task is one new file that
calls `register_task(Task(...))`; nothing else needs editing. `file:PATH.jsonl` names a local task.

Names resolve to the built-in registry first, then to lm-evaluation-harness's tasks, groups and
tags (`lm_eval_bridge.py`); `lm_eval:NAME` forces lm-eval's definition of a built-in name, and a
built-in asked for with num_fewshot > 0 is served by lm-eval's definition of the same name (its
sampler makes the few-shot contexts). `resolve_tasks` expands groups into their leaf tasks.
`datasets` is imported only when a task's documents come from the hub (it takes seconds to import).
"""

from __future__ import annotations

import contextlib

import difflib
import hashlib
import importlib
import json
import os
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from quantconf.errors import QuantconfError
from quantconf.kinds import kind_of_task
from quantconf.io import read_jsonl  # re-exported: calib_data and users read task files through it
from quantconf.tasks import lm_eval_bridge
from quantconf.kinds.items import Prompt, Question
from quantconf.tasks.registry import REGISTRY, Task, register_task

__all__ = ["Question", "Prompt", "Task", "register_task", "get_task", "resolve_tasks", "task_names", "load_task", "LoadedTask",
           "read_jsonl"]
LM_EVAL_PREFIX = "lm_eval:"

DATA_DIR_ENV = "QUANTCONF_DATA_DIR"


_LOADED = False


def _load_builtin_tasks() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for mod in pkgutil.iter_modules(__path__):
        if mod.name not in ("registry", "lm_eval_bridge"):
            importlib.import_module(f"{__name__}.{mod.name}")


def task_names() -> list[str]:
    _load_builtin_tasks()
    return sorted(REGISTRY)


def _check_fewshot(num_fewshot: int | None, fewshot_seed: int) -> None:
    if num_fewshot is not None and (isinstance(num_fewshot, bool) or not isinstance(num_fewshot, int)
                                    or num_fewshot < 0):
        raise QuantconfError(f"num_fewshot must be a whole number >= 0, got {num_fewshot!r}", param="num_fewshot")
    if isinstance(fewshot_seed, bool) or not isinstance(fewshot_seed, int):
        raise QuantconfError(f"fewshot_seed must be an integer, got {fewshot_seed!r}", param="fewshot_seed")


def resolve_tasks(names: list[str], num_fewshot: int | None = None, fewshot_seed: int = 1234,
                  include_path: str | None = None) -> tuple[list[Task], dict[str, dict]]:
    """Requested names -> (leaf tasks in order, groups met: {group: {"tasks", "aggregate_metric_list"}}).

    Built-in and `file:` names are leaves; lm-eval groups and tags expand to their tasks. Nothing
    is loaded; lm-eval names are checked to be multiple-choice tasks."""
    _check_fewshot(num_fewshot, fewshot_seed)
    _load_builtin_tasks()
    leaves: dict[str, Task] = {}
    groups: dict[str, dict] = {}
    for name in names:
        if _is_builtin(name, num_fewshot) or (name in REGISTRY and REGISTRY[name].generate is not None):
            found = [get_task(name, num_fewshot, fewshot_seed, include_path)]
        else:
            lm_name = name.removeprefix(LM_EVAL_PREFIX)
            resolved = _resolve_lm_eval(lm_name, include_path)
            groups.update(resolved.groups)
            found = [lm_eval_bridge.lm_eval_task(leaf, over, num_fewshot, fewshot_seed, include_path)
                     for leaf, over in resolved.leaves]
        for task in found:
            leaves.setdefault(task.name, task)
    return list(leaves.values()), groups


def _is_builtin(name: str, num_fewshot: int | None) -> bool:
    if name.startswith("file:"):
        return True
    return name in REGISTRY and not num_fewshot


def _resolve_lm_eval(name: str, include_path: str | None):
    if not lm_eval_bridge.knows(name, include_path):
        hint = difflib.get_close_matches(name, task_names(), n=3, cutoff=0.6)
        hint += lm_eval_bridge.close_matches(name, include_path)
        raise QuantconfError(f"unknown task {name!r}" + (f"; did you mean {', '.join(dict.fromkeys(hint))}?" if hint
                             else "") + "; built-ins: " + ", ".join(task_names()) +
                             "; lm-eval's: `quantconf tasks --lm-eval PATTERN`; or file:PATH.jsonl",
                             param="tasks")
    return lm_eval_bridge.resolve_lm_eval(name, include_path)


def get_task(name: str, num_fewshot: int | None = None, fewshot_seed: int = 1234,
             include_path: str | None = None) -> Task:
    """One task by name: a built-in, a generic local task for `file:PATH`, or an lm-eval task (not a group)."""
    _check_fewshot(num_fewshot, fewshot_seed)
    _load_builtin_tasks()
    if name.startswith("file:"):
        if num_fewshot:
            raise QuantconfError(f"num_fewshot does not apply to {name}: a file task has no few-shot split",
                                 param="num_fewshot")
        return file_task(Path(name[len("file:"):]))
    if _is_builtin(name, num_fewshot):
        return REGISTRY[name]
    if name in REGISTRY and REGISTRY[name].generate is not None:
        raise QuantconfError(f"num_fewshot does not apply to {name}: a generated task has no few-shot split",
                             param="num_fewshot")
    tasks, groups = resolve_tasks([name], num_fewshot, fewshot_seed, include_path)
    if groups or len(tasks) != 1:
        raise QuantconfError(f"{name} is an lm-eval group or tag of {len(tasks)} tasks; use resolve_tasks",
                             param="tasks")
    return tasks[0]


def file_task(path: Path) -> Task:
    """Any jsonl whose rows hold `query` (str), `choices` (list of str) and `gold` (int), or, for a
    question whose choices sit in the context (Winogrande-style), `contexts` (list of str, one per
    choice), `continuation` (str, scored after each of them) and `gold`."""
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
        doc_to_choices=lambda d: d["contexts"] if "contexts" in d else d["choices"],
        doc_to_gold=lambda d: d["gold"],
        doc_to_continuation=lambda d: d["continuation"] if "contexts" in d else None,
        file=path,
        split=None,
        description=f"local file {path}",
    )


# ---------------------------------------------------------------------------------------------
# Loading documents


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
class TaskOptions:
    """Where a task's questions come from and which: passed down as one object."""

    data_dir: str | None = None  # offline data (DIR/<dataset>/<split>.jsonl); None: $QUANTCONF_DATA_DIR or the hub
    limit: int | None = None  # first N questions (None: all)
    seed: int = 1234  # generated tasks' seed
    num_fewshot: int | None = None  # few-shot examples (lm-eval's sampler); None: each task's default
    fewshot_seed: int = 1234
    include_path: str | None = None  # a folder of your own lm-eval task YAML files

    def resolve(self, names) -> tuple[list, dict]:
        return resolve_tasks(list(names), self.num_fewshot, self.fewshot_seed, self.include_path)

    def load(self, task) -> "LoadedTask":
        return load_task(task, data_dir=self.data_dir, limit=self.limit, seed=self.seed)


@dataclass(frozen=True)
class LoadedTask:
    task: Task
    questions: list  # Question per document; Prompt per document of a generation task
    source: str  # "hub:<path>/<name>:<split>", a local file path, or "generated:seed=N"
    source_sha256: str  # hash of the documents as loaded
    # generation tasks: (prompts, generations) -> per-sample metrics, the task's own grading
    grade: Callable[[list, list[str]], list[dict]] | None = None
    # generation tasks graded by exact match: (prompts, generations) -> each answer normalised as the grading
    # compares it (two answers with one key are the same answer: sampling's `--equivalence answer`)
    answer_key: Callable[[list, list[str]], list[str]] | None = None

    def subset(self, questions: list) -> "LoadedTask":
        return LoadedTask(self.task, questions, self.source, self.source_sha256, self.grade, self.answer_key)


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
    offline = lm_eval_bridge.hub_offline()
    try:
        import datasets

        with lm_eval_bridge.hub_offline_mode() if offline else contextlib.nullcontext():
            ds = datasets.load_dataset(task.hub_path, task.hub_name, split=task.split)
    except Exception as e:  # offline and not cached, unknown dataset, ...: one line naming the fix
        layout = f"pass --data-dir DIR with DIR/{task.local_folder}/{task.split}.jsonl in the hub schema"
        if offline:  # datasets' local cache was tried without the network: no retry loops
            raise QuantconfError(f"task {task.name}: the Hugging Face hub is not reachable (offline) and "
                                 f"{task.hub_path} is not in the local datasets cache; {layout} (the layout of "
                                 "../shared/data)", param="data_dir") from None
        raise QuantconfError(
            f"task {task.name}: cannot load hub dataset {task.hub_path}"
            f"{'/' + task.hub_name if task.hub_name else ''} ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
            f"offline, {layout}"
        ) from None
    return [dict(row) for row in ds]


def load_task(
    name: str | Task, data_dir: str | Path | None = None, limit: int | None = None, seed: int = 1234,
    num_fewshot: int | None = None, fewshot_seed: int = 1234, include_path: str | None = None,
) -> LoadedTask:
    """Documents of a task as validated `Question`s (first `limit` of them). `name` may be a Task
    that `resolve_tasks` returned (then the few-shot arguments are its own)."""
    if limit is not None and limit <= 0:
        raise QuantconfError(f"limit must be a positive number of questions, got {limit}", param="limit")
    task = name if isinstance(name, Task) else get_task(name, num_fewshot, fewshot_seed, include_path)
    data_dir = resolve_data_dir(data_dir)
    if task.lm_eval is not None:
        builtin = REGISTRY.get(task.name)
        questions, source, digest, grade, answer_key = lm_eval_bridge.load_lm_eval_questions(
            task, data_dir, limit, builtin.local_folder if builtin is not None else None)
        if not questions:
            raise QuantconfError(f"task {task.name}: no documents in {source}")
        return LoadedTask(task, questions, source, digest, grade, answer_key)
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
    kind = kind_of_task(task)
    questions = [kind.item(task, i, doc, where) for i, doc in enumerate(docs)]
    if not questions:
        raise QuantconfError(f"task {task.name}: no documents in {source}")
    digest = hashlib.sha256(json.dumps(docs, sort_keys=True, default=str).encode()).hexdigest()
    answer_key = (lambda prompts, texts: [task.answer_key(p.doc, t) for p, t in zip(prompts, texts)]) \
        if task.answer_key is not None else None
    return LoadedTask(task, questions, source, digest, kind.grader(task), answer_key)


def task_texts(name: str, data_dir: str | Path | None = None, seed: int = 1234) -> Iterable[str]:
    """Plain text of a task's documents (context + gold answer), for calibration sets."""
    loaded = load_task(name, data_dir=data_dir, seed=seed)
    yield from kind_of_task(loaded.task).texts(loaded)
