"""The items a task's documents become: a `Question` (multiple choice) or a `Prompt` (generation), and the
gold-label check every reader of task data applies. Defined beside the kinds that run them; `tasks/`
builds them (each kind's `item`, or lm-eval's request builder).
"""

from __future__ import annotations

from dataclasses import dataclass

from quantconf.errors import QuantconfError


def check_gold(gold, n_choices: int, loc: str) -> int | list[int]:
    """The gold label(s) as ints in range of the choices, or one error naming the question: every
    reader of task data (built-in, file:, lm-eval YAML) refuses an impossible label at the door."""
    golds = gold if isinstance(gold, list) else [gold]
    if not golds:
        raise QuantconfError(f"{loc}: no gold label")
    for g in golds:
        if isinstance(g, bool) or not isinstance(g, int):
            raise QuantconfError(f"{loc}: gold label must be an integer index, got {g!r}")
        if not 0 <= g < n_choices:
            raise QuantconfError(f"{loc}: gold label {g} out of range for {n_choices} choices; fix the task's "
                                 "data or its doc_to_target")
    return gold


@dataclass(frozen=True)
class Question:
    doc_id: int
    context: str  # with per-choice contexts: the part all of them share (for display)
    choices: list[str]  # what lm-eval's doc_to_choice returns; acc_norm divides by their lengths
    gold: int | list[int]  # list of indices for multi-true tasks (truthfulqa_mc2)
    contexts: tuple[str, ...] | None = None  # one context per choice (multiple-input tasks)
    continuation: str | None = None  # with `contexts`: the one continuation all choices score

    def requests(self, target_delimiter: str) -> list[tuple[str, str]]:
        """(context, continuation) per choice, as lm-eval's `construct_requests` builds them."""
        if self.contexts is not None:
            return [(c, target_delimiter + self.continuation) for c in self.contexts]
        return [(self.context, target_delimiter + c) for c in self.choices]


@dataclass(frozen=True)
class Prompt:
    """One document of a generation task: what the model continues, and how far."""

    doc_id: int
    context: str
    until: tuple[str, ...]  # stop strings (the text is cut at the first of them, as lm-eval cuts)
    max_gen_toks: int
    reference: str  # the gold answer(s) as text, for display only (grading is process_results')
    question: str  # the question alone, for the P(True) prompt (the context may hold few-shot examples)
    doc: dict  # the document, for process_results
