"""Can one temperature undo what quantization did to calibration? Temperature scaling, cross-fitted.

Temperature scaling (Guo et al. 2017) divides every choice log-likelihood by one number T before the
softmax: T > 1 softens over-confident predictions, T < 1 sharpens under-confident ones, and the
argmax (so accuracy) never changes. T is fitted by minimising the NLL with scipy.

Fitting T on the questions it is then judged on would flatter it, so `recalibrate_task` cross-fits:
the questions are split into K folds (seeded); for each fold T is fitted on the other K-1 folds and
applied to it; metrics "after" are computed on these held-out probabilities. The reported T is the
one fitted on all questions, with a percentile bootstrap interval (questions resampled, T refitted).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from quantconf.analysis.metrics import (bootstrap_draws, calibration_metrics, check_finite_logliks, choice_log_probs,
                                       has_several_true, masked_log_softmax, metric_structure, metrics_weighted,
                                       percentile_interval)
from quantconf.metric_registry import metric_names
from quantconf.errors import QuantconfError
from quantconf.analysis.paired import pair_predictions

RECALIBRATION_METRICS = metric_names("recalibration")  # the registry's (metric_registry.py)
# T in [0.0067, 148]. A fit at the upper bound means "flatten to uniform": the confidence ranks answers
# no better than chance (AUROC ~0.5), so no finite temperature is better; it is flagged, not hidden
LOG_T_BOUNDS = (-5.0, 5.0)


def scaled_log_probs(ll: np.ndarray, mask: np.ndarray, temperature: float) -> np.ndarray:
    """Log-softmax of ll / T over each row's real choices (padded entries -inf)."""
    return masked_log_softmax(ll / temperature, mask)


def fit_temperature(ll: np.ndarray, mask: np.ndarray, gold: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The T > 0 minimising the (weighted) mean NLL of softmax(ll / T) at the gold choices."""
    from scipy.optimize import minimize_scalar  # lazy: scipy.optimize takes ~0.6 s to import (the report needs none)

    rows = np.arange(len(gold))
    w = np.ones(len(gold)) if weights is None else weights

    def nll(log_t):
        return float(-(w * scaled_log_probs(ll, mask, np.exp(log_t))[rows, gold]).sum() / w.sum())

    res = minimize_scalar(nll, bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6})
    return float(np.exp(res.x))


def fold_ids(n: int, n_folds: int, seed: int) -> np.ndarray:
    """A seeded random assignment of n questions to folds of (nearly) equal size."""
    return np.random.default_rng(seed).permutation(np.arange(n) % n_folds)


def cross_fitted_log_probs(ll, mask, gold, n_folds: int = 5, seed: int = 0) -> tuple[np.ndarray, list[float]]:
    """Held-out temperature-scaled log-probabilities of every question, and the T of each fold."""
    folds = fold_ids(len(gold), n_folds, seed)
    out = np.full(ll.shape, -np.inf)
    temps = []
    for f in range(n_folds):
        test = folds == f
        t = fit_temperature(ll[~test], mask[~test], gold[~test])
        out[test] = scaled_log_probs(ll[test], mask[test], t)
        temps.append(t)
    return out, temps


def recalibrate_task(df: pd.DataFrame, n_folds: int = 5, n_boot: int = 200, seed: int = 0, n_bins: int = 15) -> dict:
    """Temperature scaling of one task's predictions: T (+ bootstrap CI), the folds' T, and the
    metrics in RECALIBRATION_METRICS before and after (cross-fitted)."""
    if has_several_true(df["gold"]):
        raise QuantconfError("temperature scaling needs one gold answer per question (not truthfulqa_mc2)")
    if n_folds < 2 or n_folds > len(df):
        raise QuantconfError(f"n_folds must be between 2 and the number of questions ({len(df)}), got {n_folds}",
                             param="n_folds")
    check_finite_logliks(df)
    ll, mask = choice_log_probs(list(df["loglik"]))  # log-softmax: the same temperature problem, better scaled
    ll = np.where(mask, ll, 0.0)
    gold = np.asarray(list(df["gold"]), int)
    temperature = fit_temperature(ll, mask, gold)
    boot = list(bootstrap_draws(lambda w: {"t": np.array([fit_temperature(ll, mask, gold, wi) for wi in w])},
                                len(gold), n_boot, seed)["t"]) if n_boot else []
    before_lp = scaled_log_probs(ll, mask, 1.0)
    after_lp, fold_t = cross_fitted_log_probs(ll, mask, gold, n_folds, seed)

    def metrics(lp):
        probs = np.where(mask, np.exp(lp), 0.0)
        m = calibration_metrics(probs, gold, mask, n_bins, log_probs=lp)
        return {k: m[k] for k in RECALIBRATION_METRICS}

    at_bound = not (np.exp(LOG_T_BOUNDS[0]) * 1.01 < temperature < np.exp(LOG_T_BOUNDS[1]) * 0.99)
    return {"n": len(gold), "temperature": temperature, "temperature_at_bound": bool(at_bound),
            "temperature_ci": percentile_interval(boot) if boot else [np.nan, np.nan],
            "fold_temperatures": fold_t, "n_folds": n_folds, "before": metrics(before_lp), "after": metrics(after_lp)}


def gap_interval(full: pd.DataFrame, quant: pd.DataFrame, metric: str = "ece", n_folds: int = 5, n_boot: int = 200,
                 seed: int = 0, n_bins: int = 15, alpha: float = 0.05) -> dict:
    """The calibration gap quantized - full in `metric`, before and after (cross-fitted) temperature
    scaling, each with a paired percentile bootstrap CI over the questions both answered (the same
    resampled questions for both models). The held-out probabilities are computed once: the CI is
    for the gap on these questions given the fitted folds, not for the refitting of T."""
    f, q = pair_predictions(full, quant, str(full["task"].iloc[0]) if len(full) else "")
    gold = np.asarray(list(f["gold"]), int)
    sides = {}
    for name, df in (("full", f), ("quant", q)):
        check_finite_logliks(df)
        ll, mask = choice_log_probs(list(df["loglik"]))
        ll = np.where(mask, ll, 0.0)
        sides[name] = {"before": scaled_log_probs(ll, mask, 1.0),
                       "after": cross_fitted_log_probs(ll, mask, gold, n_folds, seed)[0], "mask": mask}
    out = {"metric": metric, "n": len(gold)}
    for when in ("before", "after"):
        lps = [sides[m][when] for m in ("full", "quant")]
        masks = [sides[m]["mask"] for m in ("full", "quant")]
        probs = [np.where(mk, np.exp(lp), 0.0) for lp, mk in zip(lps, masks)]
        structs = [metric_structure(p, mk, gold, n_bins) for p, mk in zip(probs, masks)]

        def gap(w, lps=lps, masks=masks, probs=probs, structs=structs):
            a, b = (metrics_weighted(p, mk, gold, w, n_bins, log_probs=lp, structure=st)[metric]
                    for p, mk, lp, st in zip(probs, masks, lps, structs))
            return {"gap": b - a}

        point = float(gap(np.ones((1, len(gold))))["gap"][0])
        draws = bootstrap_draws(gap, len(gold), n_boot, seed)["gap"] if n_boot else np.array([])
        out[when] = {"estimate": point, "ci": percentile_interval(draws, 1 - alpha) if n_boot else [np.nan, np.nan]}
    return out


def gap_verdict(task: str, full: dict, quant: dict, metric: str = "ece", gap: dict | None = None) -> str:
    """One plain line: does the quantized model's calibration gap to the full model close after scaling?
    With `gap` (gap_interval's output) the words follow the intervals: a gap is "closed" only when
    the after-scaling interval contains 0, and there was one to close only when the before interval
    excludes it."""
    before = quant["before"][metric] - full["before"][metric]
    after = quant["after"][metric] - full["after"][metric]
    name = metric.upper()
    if gap is not None:
        (b, (blo, bhi)), (a, (alo, ahi)) = ((gap[w]["estimate"], gap[w]["ci"]) for w in ("before", "after"))
        numbers = (f"quantized minus full {name} {b:+.3f} [{blo:+.3f}, {bhi:+.3f}] before scaling, "
                   f"{a:+.3f} [{alo:+.3f}, {ahi:+.3f}] after (95% paired bootstrap over questions)")
        if blo <= 0 <= bhi:
            verdict = "no gap was detectable before scaling"
        elif alo <= 0 <= ahi:
            verdict = "after temperature scaling no gap is detectable"
        elif abs(a) < abs(b):
            verdict = "temperature scaling narrows it, but a gap remains"
        else:
            verdict = "temperature scaling does not close it"
    else:
        numbers = f"quantized minus full {name} {before:+.3f} before scaling, {after:+.3f} after (no interval)"
        if abs(before) < 1e-12:
            verdict = "there was no gap to close"
        elif abs(after) < abs(before):
            verdict = "smaller after scaling (point estimates only: no test)"
        else:
            verdict = "not smaller after scaling (point estimates only: no test)"
    bound = [name_ for name_, r in (("full", full), ("quantized", quant)) if r.get("temperature_at_bound")]
    note = (f" T of the {' and '.join(bound)} model is at the search bound: its confidence carries almost no "
            "information on this task, and the best single temperature flattens it towards uniform."
            if bound else "")
    return (f"{task}: {numbers} (T full {full['temperature']:.2f}, quantized {quant['temperature']:.2f}): "
            f"{verdict}.{note}")
