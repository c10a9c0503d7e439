"""One task's predictions, whatever their kind: multiple choice (per-choice log-likelihoods; metrics.py,
paired.py) or generation (one answer per prompt; generation.py). What the API, the CLI and a study's
analysis step call, so each of them handles both kinds without asking which.
"""

from __future__ import annotations

import pandas as pd

from quantconf.analysis import generation, metrics, noise_floor, paired
from quantconf.errors import QuantconfError


def is_generation(df: pd.DataFrame) -> bool:
    return "generation" in df.columns


def task_metrics(df: pd.DataFrame, n_bins: int = 15, n_boot: int = 1000, normalize: str = "none", seed: int = 0,
                 compat: str | None = None, correctness: str | None = None) -> dict:
    """Metrics (+ bootstrap CIs) of one task. `correctness` picks a generation task's 0/1 column (a
    multiple-choice answer is right when its argmax is gold: there is nothing to pick)."""
    if is_generation(df):
        return generation.generation_metrics(df, n_bins=n_bins, n_boot=n_boot, seed=seed, correctness=correctness)
    return metrics.task_metrics(df, n_bins=n_bins, n_boot=n_boot, normalize=normalize, seed=seed, compat=compat)


def check_same_kind(full: pd.DataFrame, other: pd.DataFrame, whose: str, fix: str, task: str = "") -> None:
    """Refuse a pair where one run holds generations and the other choice scores (the same task name)."""
    if is_generation(full) != is_generation(other):
        task = task or (str(full["task"].iloc[0]) if len(full) else "?")
        kinds = ("generations", "choice scores") if is_generation(full) else ("choice scores", "generations")
        raise QuantconfError(f"{task}: the full model's predictions hold {kinds[0]}, {whose} hold {kinds[1]}; {fix}")


def compare_task(full: pd.DataFrame, quant: pd.DataFrame, n_bins: int = 15, n_conf_bins: int = 5,
                 n_boot: int = 1000, seed: int = 0, task: str = "", correctness: str | None = None) -> dict:
    """Full vs quantized on one task, question by question."""
    check_same_kind(full, quant, "the quantized model's", "compare runs of the same task", task)
    if is_generation(full):
        return generation.compare_generations(full, quant, n_bins, n_conf_bins, n_boot, seed, task, correctness)
    return paired.compare_task(full, quant, n_bins, n_conf_bins, n_boot, seed, task)


def compare_predictions(full: dict[str, pd.DataFrame], quant: dict[str, pd.DataFrame], **kwargs) -> dict:
    """compare_task for every task both prediction sets hold, keyed by task."""
    common = sorted(set(full) & set(quant))
    if not common:
        raise QuantconfError("the two prediction sets share no task; evaluate both on the same tasks")
    return {t: compare_task(full[t], quant[t], task=t, **kwargs) for t in common}


def confidence_and_correctness(df: pd.DataFrame) -> tuple:
    """(confidence, correct) per question, for reliability diagrams: the top-choice probability and
    whether it is gold; for generations the headline confidence measure (P(True)) and `correct`
    (rows without a value left out)."""
    import numpy as np

    if is_generation(df):
        measures = generation.confidence_measures(df)
        conf = measures[generation.headline_measure(measures)]
        _, y = generation.correctness_of(df)
        keep = np.isfinite(conf)
        return conf[keep], y[keep].astype(bool)
    probs, _ = metrics.probs_from_predictions(df)
    return probs.max(1), probs.argmax(1) == np.asarray(list(df["gold"]), int)


def per_sample_frame(full: pd.DataFrame, quant: pd.DataFrame, task: str = "") -> pd.DataFrame:
    """One row per paired question or prompt: both models' confidence and correctness (for plots)."""
    if is_generation(full):
        return generation.per_generation_frame(full, quant, task)
    return paired.per_sample_frame(full, quant, task)


def task_noise_floor(full: pd.DataFrame, replicates: list[pd.DataFrame], **options) -> dict:
    """The noise floor of one task (`noise_floor.noise_floor`, or `generation_noise_floor` for generations)."""
    for i, rep in enumerate(replicates):
        check_same_kind(full, rep, f"replicate {i + 1}'s", "a noise floor needs every run of the same task")
    if is_generation(full):
        return noise_floor.generation_noise_floor(full, replicates, **options)
    return noise_floor.noise_floor(full, replicates, **options)
