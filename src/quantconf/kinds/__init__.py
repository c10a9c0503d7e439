"""Task kinds: which kind a task or a prediction frame is, and what the API, the CLI and a study's steps
call for one task's predictions whatever its kind (metrics, comparison, noise floor, ...).

Every module of this package but `base.py` (the interface and the registry) and `items.py` (the items tasks
become) defines one kind and registers it (`base.register`); they are imported here by name, so a new kind is one
new module. `kind_of(df)` reads the kind a frame carries
(`df.attrs["kind"]`: set by the kind that made the frame, stored in the parquet file's metadata and the
predictions manifest); a frame built by hand, or a file written before kinds were recorded, is identified
once, here, by its kind's identifying columns.
"""

from __future__ import annotations

import importlib
import pkgutil

import numpy as np
import pandas as pd

from quantconf.analysis.helm import helm_deltas
from quantconf.analysis.power import mde_paired_acc, minimum_detectable
from quantconf.analysis.recalibration import fold_ids
from quantconf.analysis.recalibration_maps import maps_gap, maps_of
from quantconf.errors import QuantconfError
from quantconf.kinds.base import ATTR, KINDS, TaskKind, kind_named, register

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in ("base", "items"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["TaskKind", "KINDS", "register", "kind_named", "kind_of", "kind_of_task", "kind_of_output_type", "kind_of_result",
           "task_metrics", "compare_task", "compare_predictions", "check_same_kind", "per_sample_frame",
           "confidence_and_correctness", "task_noise_floor", "task_recalibration_maps", "accuracy"]


def kind_of_output_type(output_type: str) -> TaskKind:
    for kind in KINDS.values():
        if output_type in kind.output_types:
            return kind
    known = sorted(t for k in KINDS.values() for t in k.output_types)
    raise QuantconfError(f"no task kind evaluates output_type {output_type!r}; known: {', '.join(known)}")


def kind_of_task(task) -> TaskKind:
    """The kind of a task definition (its `output_type`)."""
    return kind_of_output_type(task.output_type)


def kind_of(df: pd.DataFrame) -> TaskKind:
    """The kind of a predictions frame: the one it carries, else (a frame built by hand, a file written before
    kinds were recorded) the one kind whose identifying columns it has (its own check then names anything
    else missing)."""
    name = df.attrs.get(ATTR)
    if name is not None:
        return kind_named(name)
    fits = [k for k in KINDS.values() if set(df.columns) & set(k.identifying_columns)]
    if len(fits) == 1:
        return fits[0]
    raise QuantconfError(f"cannot tell which kind of predictions these are (columns {sorted(df.columns)}); "
                         f"known kinds: {', '.join(KINDS)}")


def kind_of_result(result: dict) -> TaskKind:
    """The kind of a metrics or comparison result: the one it names (multiple-choice results name none, as
    their JSON predates kinds and is kept as it was)."""
    return kind_named(result.get("kind", "multiple_choice"))


def accuracy(df: pd.DataFrame) -> dict:
    """acc (and acc_norm where it is defined) as lm-eval defines them for the frame's kind."""
    return kind_of(df).accuracy(df)


def task_metrics(df: pd.DataFrame, n_bins: int = 15, n_boot: int = 1000, normalize: str = "none", seed: int = 0,
                 compat: str | None = None, correctness: str | None = None) -> dict:
    """Metrics (+ bootstrap CIs) of one task. `correctness` picks a generation task's 0/1 column (a
    multiple-choice answer is right when its argmax is gold: there is nothing to pick)."""
    return kind_of(df).metrics(df, n_bins=n_bins, n_boot=n_boot, normalize=normalize, seed=seed, compat=compat,
                               correctness=correctness)


def check_same_kind(full: pd.DataFrame, other: pd.DataFrame, whose: str, fix: str, task: str = "") -> TaskKind:
    """The kind both runs share; refuse a pair where they differ (the same task name, another kind)."""
    kf, ko = kind_of(full), kind_of(other)
    if kf is not ko:
        task = task or (str(full["task"].iloc[0]) if len(full) and "task" in full.columns else "?")
        raise QuantconfError(f"{task}: the full model's predictions hold {kf.held}, {whose} hold {ko.held}; {fix}")
    return kf


def compare_task(full: pd.DataFrame, quant: pd.DataFrame, n_bins: int = 15, n_conf_bins: int = 5,
                 n_boot: int = 1000, seed: int = 0, task: str = "", correctness: str | None = None,
                 compat: str | None = None) -> dict:
    """Full vs quantized on one task, question by question (`compat="helm"`: also HELM's battery of each model and
    its deltas with paired intervals, under "helm")."""
    kind = check_same_kind(full, quant, "the quantized model's", "compare runs of the same task", task)
    out = kind.compare(full, quant, n_bins, n_conf_bins, n_boot, seed, task, correctness)
    if "flips_correct_to_wrong" in out and out.get("n"):  # what this design could detect (analysis/power.py)
        out["discordance"] = (out["flips_correct_to_wrong"] + out["flips_wrong_to_correct"]) / out["n"]
        out["mde_acc"] = mde_paired_acc(out["n"], out["discordance"])
    if compat == "helm" and kind.single_answer(full):
        paired = kind.paired_confidence(full, quant, task, correctness)
        if len(paired[0]):
            out["helm"] = helm_deltas(*paired, n_boot=n_boot, seed=seed)
    elif compat not in (None, "none", "helm"):
        raise QuantconfError(f"compat {compat!r} is unknown for compare; known: helm", param="compat")
    return out


def compare_predictions(full: dict[str, pd.DataFrame], quant: dict[str, pd.DataFrame], **kwargs) -> dict:
    """compare_task for every task both prediction sets hold, keyed by task."""
    common = sorted(set(full) & set(quant))
    if not common:
        raise QuantconfError("the two prediction sets share no task; evaluate both on the same tasks")
    return {t: compare_task(full[t], quant[t], task=t, **kwargs) for t in common}


def confidence_and_correctness(df: pd.DataFrame) -> tuple:
    """(confidence, correct) per question, for reliability diagrams."""
    return kind_of(df).confidence_and_correctness(df)


def per_sample_frame(full: pd.DataFrame, quant: pd.DataFrame, task: str = "") -> pd.DataFrame:
    """One row per paired question or prompt: both models' confidence and correctness (for plots)."""
    return kind_of(full).per_sample_frame(full, quant, task)


def task_recalibration_maps(df: pd.DataFrame, full: pd.DataFrame | None = None, n_folds: int = 5, n_boot: int = 200,
                            seed: int = 0, n_bins: int = 15, task: str = "") -> dict | None:
    """Each recalibration map (analysis/recalibration_maps.py) on the task's confidence (top choice; a generation's
    headline measure), cross-fitted on temperature scaling's folds: {"n", "ece_before", map: {"ece_after"}}, and
    with `full` the gap quantized - full before and after each map ("gap", paired intervals). None where the task
    has several true answers (no single confidence to recalibrate)."""
    kind = kind_of(df)
    if not kind.single_answer(df):
        return None
    conf, correct = kind.confidence_and_correctness(df)
    if n_folds < 2 or n_folds > len(conf):
        raise QuantconfError(f"n_folds must be between 2 and the number of questions ({len(conf)}), got {n_folds}",
                             param="n_folds")
    out = maps_of(conf, np.asarray(correct, float), fold_ids(len(conf), n_folds, seed), n_bins)
    if full is not None:
        check_same_kind(full, df, "the quantized model's", "compare runs of the same task", task)
        cf, yf, cq, yq = kind.paired_confidence(full, df, task)
        if len(cf) >= n_folds:
            out["gap"] = maps_gap((cf, yf), (cq, yq), fold_ids(len(cf), n_folds, seed), n_boot, seed, n_bins)
    return out


def task_noise_floor(full: pd.DataFrame, replicates: list[pd.DataFrame], **options) -> dict:
    """The noise floor of one task (the kind's: two-way effects over questions and replicates)."""
    kind = kind_of(full)
    for i, rep in enumerate(replicates):
        check_same_kind(full, rep, f"replicate {i + 1}'s", "a noise floor needs every run of the same task")
    floor = kind.noise_floor(full, replicates, **options)
    if floor.get("delta_acc"):  # the smallest Δacc this design (questions and replicates) detects at 80% power
        floor["delta_acc"]["mde"] = minimum_detectable(floor["delta_acc"]["se"], options.get("alpha", 0.05))
    return floor
