"""Recalibration beyond one temperature: does a cheap post-hoc map undo what quantization did to calibration, and
which one? Binary maps of the top-label confidence (the top choice's probability against whether it is right),
each cross-fitted exactly as temperature scaling is (`recalibration.fold_ids`: the same seeded folds; a map is
fitted on K-1 folds and applied to the held-out one, so no question is used to fit and score):

  platt      logistic regression of correctness on logit(confidence) (Platt 1999; scikit-learn, C = 1e10, lbfgs;
             confidences clipped to [1e-12, 1 - 1e-12])
  beta       logistic regression on ln(conf) and -ln(1 - conf), slopes kept >= 0 (Kull et al. 2017, beta
             calibration, as their `betacal` package fits it)
  isotonic   the monotone non-decreasing step function of confidence with the least squared error (Zadrozny &
             Elkan 2002; scikit-learn's IsotonicRegression, clipped to [0, 1] outside the fitted range)
  histogram  equal-width histogram binning (Zadrozny & Elkan 2001): the accuracy of the fitting folds' answers in
             the confidence's bin (bins (k/B, (k+1)/B], 0 in the first); a bin with none: its centre, as netcal

Scored by the top-label ECE (equal-width bins, as `metrics.py`'s ece) of the held-out calibrated confidences.
tests/test_recalibration_maps.py requires netcal's maps (platt, isotonic, histogram) and Kull et al.'s `betacal`
(beta) to give the same held-out values on the same folds. The gap to the full model (quantized - full, before and after each map) has a paired percentile
bootstrap interval over the questions both answered, the held-out values fixed (as `recalibration.gap_interval`).
"""

from __future__ import annotations

import numpy as np

from quantconf.analysis.metrics import bootstrap_draws, equal_width_bin, percentile_interval
from quantconf.errors import QuantconfError

EPS = 1e-12


def _logit(conf):
    c = np.clip(np.asarray(conf, dtype=np.float64), EPS, 1 - EPS)
    return np.log(c / (1 - c))


def _constant(correct):
    """One class only (every fitted answer right, or every one wrong): no regression; the map predicts its rate."""
    rate = float(correct[0])
    return lambda c: np.full(len(c), rate)


def _logistic(features_of):
    def fit(conf, correct):
        from sklearn.linear_model import LogisticRegression  # lazy: only the maps need scikit-learn

        if correct.min() == correct.max():
            return _constant(correct)
        clf = LogisticRegression(C=1e10, solver="lbfgs").fit(features_of(conf), correct.astype(int))
        return lambda c: clf.predict_proba(features_of(c))[:, 1]
    return fit


def fit_beta(conf, correct):
    """Kull et al.'s three-parameter beta calibration: logistic regression on ln(c) and -ln(1 - c) (c clipped to
    machine epsilon), both slopes kept non-negative (a negative one: its feature dropped and the fit redone)."""
    from sklearn.linear_model import LogisticRegression

    if correct.min() == correct.max():
        return _constant(correct)
    eps = np.finfo(np.float64).eps

    def features(c):
        c = np.clip(np.asarray(c, dtype=np.float64), eps, 1 - eps)
        return np.column_stack([np.log(c), -np.log(1 - c)])

    x, y = features(conf), correct.astype(int)
    columns = [0, 1]
    clf = LogisticRegression(C=99999999999).fit(x, y)
    if clf.coef_[0][0] < 0 or clf.coef_[0][1] < 0:
        columns = [1] if clf.coef_[0][0] < 0 else [0]
        clf = LogisticRegression(C=99999999999).fit(x[:, columns], y)
    return lambda c: clf.predict_proba(features(c)[:, columns])[:, 1]


def fit_isotonic(conf, correct):
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(conf, correct)
    return lambda c: iso.predict(c)


def histogram_bin(conf, n_bins: int) -> np.ndarray:
    """Bin (k/B, (k+1)/B] -> k; a confidence of 0 in bin 0."""
    return np.searchsorted(np.linspace(0, 1, n_bins + 1)[1:-1], conf, side="left")


def fit_histogram(conf, correct, n_bins: int = 10):
    bins = histogram_bin(conf, n_bins)
    count = np.bincount(bins, minlength=n_bins)
    hits = np.bincount(bins, weights=correct, minlength=n_bins)
    centres = (np.arange(n_bins) + 0.5) / n_bins
    value = np.where(count > 0, hits / np.maximum(count, 1), centres)
    return lambda c: value[histogram_bin(c, n_bins)]


MAPS = {"platt": _logistic(lambda c: _logit(c)[:, None]), "beta": fit_beta,
        "isotonic": fit_isotonic, "histogram": fit_histogram}


def cross_fitted_map(conf, correct, name: str, folds: np.ndarray) -> np.ndarray:
    """Held-out calibrated confidences: for each fold, the map fitted on the other folds applied to it."""
    if name not in MAPS:
        raise QuantconfError(f"unknown recalibration map {name!r}; known: {', '.join(MAPS)}")
    conf, correct = np.asarray(conf, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    out = np.empty(len(conf))
    for f in np.unique(folds):
        held = folds == f
        out[held] = MAPS[name](conf[~held], correct[~held])(conf[held])
    return out


def top_label_ece(conf, correct, weights=None, n_bins: int = 15) -> np.ndarray:
    """Equal-width binned |accuracy - confidence| (as metrics.py's ece), per row of bootstrap weights."""
    conf, correct = np.asarray(conf, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    w = np.ones((1, len(conf))) if weights is None else np.atleast_2d(weights)
    bins = equal_width_bin(conf, n_bins)
    one_hot = np.eye(n_bins)[bins]  # (n, bins)
    gap = (w * (conf - correct)) @ one_hot  # (r, bins): sum of conf - correct per bin
    return np.abs(gap).sum(axis=1) / w.sum(axis=1)


def maps_of(conf, correct, folds: np.ndarray, n_bins: int = 15) -> dict:
    """{"ece_before", map: {"ece_after"}} of one model on one task (held-out values)."""
    out = {"n": int(len(conf)), "ece_before": float(top_label_ece(conf, correct, n_bins=n_bins)[0])}
    for name in MAPS:
        out[name] = {"ece_after": float(top_label_ece(cross_fitted_map(conf, correct, name, folds), correct,
                                                      n_bins=n_bins)[0])}
    return out


def maps_gap(full: tuple, quant: tuple, folds: np.ndarray, n_boot: int = 200, seed: int = 0, n_bins: int = 15,
             alpha: float = 0.05) -> dict:
    """Quantized - full top-label ECE before and after each map on the same (paired) questions, with paired
    percentile bootstrap intervals; `full`, `quant`: (confidence, correct) arrays aligned by question."""
    (cf, yf), (cq, yq) = ((np.asarray(c, dtype=np.float64), np.asarray(y, dtype=np.float64)) for c, y in (full, quant))
    sides = {"before": (cf, cq)}
    sides.update({name: (cross_fitted_map(cf, yf, name, folds), cross_fitted_map(cq, yq, name, folds))
                  for name in MAPS})
    out = {}
    for when, (a, b) in sides.items():
        def gap(w, a=a, b=b):
            return {"gap": top_label_ece(b, yq, w, n_bins) - top_label_ece(a, yf, w, n_bins)}

        draws = bootstrap_draws(gap, len(cf), n_boot, seed)["gap"] if n_boot else np.array([])
        out[when] = {"estimate": float(gap(np.ones((1, len(cf))))["gap"][0]),
                     "ci": percentile_interval(draws, 1 - alpha) if n_boot else [np.nan, np.nan]}
    return out
