"""What a task kind is (`TaskKind`: the questions asked of every kind) and the registry of kinds.

A task kind is what a model is asked and what a prediction holds: multiple choice (per-choice
log-likelihoods, `choice.py`) or generation (one written answer per prompt, `generation.py`). Each kind
is one class that answers, for its predictions: how a task's documents become items, how a model runs
on them, which columns a prediction frame has and how they are checked, accuracy, metrics, the full vs
quantized comparison, the per-question table, the noise floor, whether temperature scaling applies, and
how its results are printed and labelled in the report. Nothing outside `kinds/` asks "which kind?":
it asks the kind object.

The kind is decided by the task's definition (its lm-eval `output_type`), written into the predictions
manifest and each parquet's metadata at evaluation time, and read back from there (`kind_of`).
"""

from __future__ import annotations

import pandas as pd

from quantconf.errors import QuantconfError

# where a frame carries its kind (pandas keeps DataFrame.attrs through slicing, sorting and parquet files)
ATTR = "kind"


class TaskKind:
    """The interface every kind implements (one instance per kind, registered with `register`)."""

    name: str = ""  # written into manifests and parquet metadata
    output_types: tuple[str, ...] = ()  # the lm-eval output_type(s) a task of this kind declares
    columns: tuple[str, ...] = ()  # columns every prediction frame of this kind has
    identifying_columns: tuple[str, ...] = ()  # columns only this kind's frames have (a frame without a kind)
    held: str = "predictions"  # what its prediction files hold, in messages ("choice scores", "generations")
    confidence_label: str = "confidence"  # what its confidence is, for report axes
    full_confidence_label: str = "full model confidence"  # the same, of the full model
    shift_label: str = "Δ confidence (quant − full)"  # what the per-question shift plot shows
    has_choice_distribution: bool = False  # a distribution over choices (JS distances) per question
    graded_after_run: bool = False  # answers are graded by the task after the model ran (not scored as choices)

    # a task's documents -> items, and a model on them
    def item(self, task, doc_id: int, doc: dict, where):
        raise NotImplementedError

    def grader(self, task):
        """(prompts, answers) -> per-item metric dicts, for kinds whose answers are graded after the run."""
        return None

    def texts(self, loaded):
        """Plain text of each item with its gold answer (calibration sets)."""
        raise NotImplementedError

    def evaluate(self, lm, loaded, batch_size: int, progress: bool, scorer: str, shard, max_gen_toks,
                 sampling=None) -> pd.DataFrame:
        raise NotImplementedError

    def run_identity(self, run) -> list:
        """What of the evaluation options (an EvalOptions) changes this kind's numbers: part of the reuse key."""
        raise NotImplementedError

    def manifest_fields(self, task, run) -> dict:
        """Fields a manifest entry of this kind records beyond the common ones."""
        return {}

    # prediction frames
    def frame(self, rows: list[dict]) -> pd.DataFrame:
        raise NotImplementedError

    def check(self, df: pd.DataFrame, source: str, fix: str) -> None:
        raise NotImplementedError

    def read(self, df: pd.DataFrame, source: str, fix: str) -> pd.DataFrame:
        """A frame read from parquet, with list columns as lists, checked."""
        raise NotImplementedError

    def accuracy(self, df: pd.DataFrame) -> dict:
        raise NotImplementedError

    def throughput(self, df: pd.DataFrame, seconds: float) -> dict:
        raise NotImplementedError

    def accuracy_line(self, df: pd.DataFrame, acc: dict) -> str:
        raise NotImplementedError

    def acc_norm_cell(self, df: pd.DataFrame, acc: dict) -> str:
        """What the eval summary shows in its acc_norm column."""
        raise NotImplementedError

    # analysis
    def metrics(self, df: pd.DataFrame, n_bins: int, n_boot: int, normalize: str, seed: int, compat, correctness):
        raise NotImplementedError

    def compare(self, full, quant, n_bins, n_conf_bins, n_boot, seed, task, correctness) -> dict:
        raise NotImplementedError

    def paired_confidence(self, full: pd.DataFrame, quant: pd.DataFrame, task: str = "", correctness=None) -> tuple:
        """(confidence, correct) of the full model and of the quantized one on the same questions, paired."""
        raise NotImplementedError

    def per_sample_frame(self, full: pd.DataFrame, quant: pd.DataFrame, task: str = "") -> pd.DataFrame:
        raise NotImplementedError

    def confidence_and_correctness(self, df: pd.DataFrame) -> tuple:
        raise NotImplementedError

    def noise_floor(self, full: pd.DataFrame, replicates: list, **options) -> dict:
        raise NotImplementedError

    def not_temperature_scalable(self, df: pd.DataFrame) -> str | None:
        """Why temperature scaling does not apply to these predictions (None when it does)."""
        raise NotImplementedError

    def why_no_question_divergence(self, loaded) -> str | None:
        """Why the per-question token divergence (answer tokens of each choice) does not apply (None: it does)."""
        return f"a {self.name} task"

    def reliability_shown(self, df: pd.DataFrame) -> bool:
        """Whether a reliability diagram of these predictions means something."""
        return True

    def risk_coverage(self, df: pd.DataFrame) -> dict:
        """{confidence measure: its risk-coverage curve} for the report (empty: the kind shows none)."""
        return {}

    def headlines(self, comparisons: list[dict]) -> list[str]:
        """Plain-language lines on this kind's full-vs-quantized comparisons (the report's headlines)."""
        raise NotImplementedError

    # printing
    def format_metrics(self, task: str, m: dict, bootstrap: int) -> str | None:
        """The CLI's text for this kind's metrics (None: the shared multiple-choice table shows it)."""
        return None

    def format_comparison(self, task: str, c: dict) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<task kind {self.name}>"


KINDS: dict[str, TaskKind] = {}


def register(kind: TaskKind) -> TaskKind:
    if kind.name in KINDS:
        raise ValueError(f"task kind {kind.name!r} registered twice")
    KINDS[kind.name] = kind
    return kind


def kind_named(name: str) -> TaskKind:
    if name not in KINDS:
        raise QuantconfError(f"unknown task kind {name!r}; known: {', '.join(KINDS)}")
    return KINDS[name]
