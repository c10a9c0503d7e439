"""What a task is (`Task`, `Question`) and the registry that built-in task files add themselves to.

A task says where its documents come from (a Hugging Face hub dataset, mirrored offline as
`<data_dir>/<local_folder>/<split>.jsonl`; or one local file) and how a document becomes a
`Question`: the context text, the list of choice strings, and the gold index (or indices).
Scoring appends `target_delimiter + choice` to the context, exactly as lm-evaluation-harness
does for `output_type: multiple_choice`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable


@dataclass(frozen=True)
class Question:
    doc_id: int
    context: str
    choices: list[str]
    gold: int | list[int]  # list of indices for multi-true tasks (truthfulqa_mc2)


@dataclass(frozen=True)
class Task:
    name: str
    version: str
    doc_to_text: Callable[[dict], str]
    doc_to_choices: Callable[[dict], list[str]]
    doc_to_gold: Callable[[dict], int | list[int]]
    hub_path: str | None = None  # datasets.load_dataset(hub_path, hub_name, split=split)
    hub_name: str | None = None
    split: str | None = "validation"
    local_folder: str | None = None  # <data_dir>/<local_folder>/<split>.jsonl
    file: Path | None = None  # `file:PATH` tasks: their one jsonl file (no hub, no split)
    target_delimiter: str = " "
    generate: Callable[[int], list[dict]] | None = None  # generated tasks: seed -> docs
    description: str = ""


REGISTRY: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    if task.name in REGISTRY:
        raise ValueError(f"task {task.name!r} registered twice")
    REGISTRY[task.name] = task
    return task
