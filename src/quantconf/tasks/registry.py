"""What a task is (`Task`; the items it becomes, `Question` and `Prompt`, are in `kinds/items.py`) and the registry that built-in task files add themselves to.

A task says where its documents come from (a Hugging Face hub dataset, mirrored offline as
`<data_dir>/<local_folder>/<split>.jsonl`; or one local file) and how a document becomes a
`Question`: the context text, the list of choice strings, and the gold index (or indices).
Scoring appends `target_delimiter + choice` to the context, exactly as lm-evaluation-harness
does for `output_type: multiple_choice`.

Some tasks put the choice in the context instead (lm-eval's "multiple input" tasks, e.g.
Winogrande: "The trophy doesn't fit in the suitcase because the [trophy|suitcase]" + " is too
big."): then `Question.contexts` holds one context per choice and every choice is scored on the
same `continuation`. `Question.requests` gives the (context, continuation) pairs either way.
Tasks served by lm-evaluation-harness itself (`Task.lm_eval`) build their questions through
lm-eval (`tasks/lm_eval_bridge.py`) and have no doc_to_* functions here.

A generation task (`output_type="generate_until"`, as lm-eval names it) has no choices: each document
becomes a `Prompt` (the context the model continues, the stop strings, the token budget) and its
`process_results(doc, generation)` grades what the model wrote, returning lm-eval-style per-sample
metrics ({"exact_match": 1.0, ...}); `primary_metric` names the 0/1 one that counts as "correct".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable



@dataclass(frozen=True)
class Task:
    name: str
    version: str
    doc_to_text: Callable[[dict], str] | None = None
    doc_to_choices: Callable[[dict], list[str]] | None = None
    doc_to_gold: Callable[[dict], int | list[int]] | None = None
    # multiple-input tasks: doc -> the continuation every choice shares (doc_to_choices then gives
    # the per-choice contexts); None for a doc whose choices are continuations as usual
    doc_to_continuation: Callable[[dict], str | None] | None = None
    hub_path: str | None = None  # datasets.load_dataset(hub_path, hub_name, split=split)
    hub_name: str | None = None
    split: str | None = "validation"
    local_folder: str | None = None  # <data_dir>/<local_folder>/<split>.jsonl
    file: Path | None = None  # `file:PATH` tasks: their one jsonl file (no hub, no split)
    target_delimiter: str = " "
    generate: Callable[[int], list[dict]] | None = None  # generated tasks: seed -> docs
    description: str = ""
    lm_eval: str | None = None  # served by lm-evaluation-harness's task of this name
    num_fewshot: int = 0  # lm-eval tasks only
    fewshot_seed: int = 1234
    include_path: str | None = None  # lm-eval: extra YAML task folder
    lm_eval_overrides: dict | None = None  # lm-eval: config keys its group sets for it
    # generation tasks (output_type "generate_until"); doc_to_text gives the context
    output_type: str = "multiple_choice"
    doc_to_reference: Callable[[dict], str] | None = None
    process_results: Callable[[dict, str], dict] | None = None  # (doc, generation) -> {metric: value}
    primary_metric: str | None = None  # the 0/1 metric that is "correct" (e.g. exact_match, bleu_acc)
    until: tuple[str, ...] = ("\n\n",)
    max_gen_toks: int = 256
    # (doc, generation) -> the answer as the task's grading compares it (exact-match tasks), or None
    answer_key: Callable[[dict, str], str] | None = None


REGISTRY: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    if task.name in REGISTRY:
        raise ValueError(f"task {task.name!r} registered twice")
    REGISTRY[task.name] = task
    return task
