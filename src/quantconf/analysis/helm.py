"""HELM's calibration battery, defined as HELM computes it, so quantconf's numbers can be set beside published
HELM tables (stanford-crfm/helm, `compute_calibration_metrics`, which calls the `uncertainty-calibration`
package of Kumar et al. 2019; tests/test_helm.py requires equality with that package on the same inputs).

Inputs: one confidence per question (the top choice's probability; for a generation, its headline measure) and
whether that answer is right (0/1):

  ece_10_bin              ECE with 10 equal-mass bins: the sorted confidences split into 10 near-equal groups
                          (`numpy.array_split`), bin edges halfway between neighbouring groups, the last at 1.0, a
                          confidence equal to an edge in the lower bin; sum_b (n_b / n) |mean conf - mean correct|
  ece_1_bin               the same with one bin: |mean confidence - accuracy|
  selective_acc@10        accuracy on the 10% most confident answers (the first int(0.1 n) + 1 in descending
                          confidence, ties in numpy's default argsort order, as HELM orders them)
  selective_cov_acc_area  the mean over k of the accuracy of the k most confident answers (area under the
                          coverage-accuracy curve)
  platt_coef, platt_intercept  Platt scaling: logistic regression (scikit-learn, C = 1e10, lbfgs) of correctness
                          on logit(confidence clipped to [1e-12, 1 - 1e-12]); undefined (NaN) when every answer is
                          right or every answer is wrong, where HELM reports no coefficients
  platt_ece_10_bin, platt_ece_1_bin  the ECEs above of the Platt-scaled confidences (fit and scored on the same
                          questions, as HELM does: an in-sample number; 0 where the fit is undefined, as HELM)

Intervals: percentile bootstrap over questions (the battery recomputed on each resample: the equal-mass bins and
the Platt fit are part of the statistic).
"""

from __future__ import annotations

import numpy as np

from quantconf.analysis.metrics import percentile_interval
from quantconf.errors import QuantconfError

PLATT_EPS = 1e-12


def equal_mass_edges(conf: np.ndarray, n_bins: int) -> np.ndarray:
    """Right edges of HELM's equal-mass bins (the last is 1.0)."""
    ordered = np.sort(conf)
    groups = np.array_split(ordered, min(n_bins, len(ordered)))
    edges = [(a[-1] + b[0]) / 2.0 for a, b in zip(groups[:-1], groups[1:])] + [1.0]
    return np.unique(edges)


def binned_ece(conf: np.ndarray, correct: np.ndarray, right_edges: np.ndarray) -> float:
    """sum_b (n_b / n) |mean conf_b - mean correct_b|, a confidence equal to an edge counted in the lower bin."""
    bins = np.searchsorted(right_edges, conf, side="left")
    gap = np.bincount(bins, weights=conf - correct, minlength=len(right_edges))
    return float(np.abs(gap).sum() / len(conf))  # |sum (conf - y)| / n_b * n_b / n per bin


def ece_equal_mass(conf, correct, n_bins: int = 10) -> float:
    return binned_ece(conf, correct, equal_mass_edges(conf, n_bins))


def ece_equal_width(conf, correct, n_bins: int = 1) -> float:
    return binned_ece(conf, correct, np.arange(1, n_bins + 1) / n_bins)


def selective_stats(conf: np.ndarray, correct: np.ndarray) -> tuple[float, float]:
    """(area under the coverage-accuracy curve, accuracy of the 10% most confident answers)."""
    ordered = correct[np.argsort(-conf)]
    accs = np.cumsum(ordered) / np.arange(1, len(ordered) + 1)
    return float(accs.mean()), float(accs[int(0.1 * len(ordered))])


def platt_fit(conf: np.ndarray, correct: np.ndarray):
    """(coef, intercept) of HELM's Platt scaling, or None where every answer is right or every one wrong."""
    from sklearn.linear_model import LogisticRegression  # lazy: only this battery needs scikit-learn

    if correct.min() == correct.max():
        return None
    clf = LogisticRegression(C=1e10, solver="lbfgs")
    clf.fit(_logit(conf)[:, None], correct.astype(int))
    return float(clf.coef_[0][0]), float(clf.intercept_[0])


def _logit(conf: np.ndarray) -> np.ndarray:
    x = np.clip(np.asarray(conf, dtype=np.float64), PLATT_EPS, 1 - PLATT_EPS)
    return np.log(x / (1 - x))


def helm_metrics(conf, correct) -> dict[str, float]:
    """The battery of the module docstring on one set of questions."""
    conf, correct = np.asarray(conf, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    if len(conf) == 0:
        raise QuantconfError("no questions to compute HELM's calibration metrics on")
    if ((conf < 0) | (conf > 1)).any() or not np.isin(correct, (0.0, 1.0)).all():
        raise QuantconfError("HELM's calibration metrics need confidences in [0, 1] and 0/1 correctness")
    area, top10 = selective_stats(conf, correct)
    out = {"ece_10_bin": ece_equal_mass(conf, correct, 10), "ece_1_bin": ece_equal_width(conf, correct, 1),
           "selective_acc@10": top10, "selective_cov_acc_area": area}
    fit = platt_fit(conf, correct)
    if fit is None:  # HELM: the calibration error after scaling is estimated as 0, no coefficients
        return {**out, "platt_ece_10_bin": 0.0, "platt_ece_1_bin": 0.0, "platt_coef": float("nan"),
                "platt_intercept": float("nan")}
    coef, intercept = fit
    scaled = 1 / (1 + np.exp(-(_logit(conf) * coef + intercept)))
    return {**out, "platt_ece_10_bin": ece_equal_mass(scaled, correct, 10),
            "platt_ece_1_bin": ece_equal_width(scaled, correct, 1), "platt_coef": coef, "platt_intercept": intercept}


def helm_battery(conf, correct, n_boot: int = 1000, seed: int = 0) -> dict:
    """{"n", each metric, "ci": {metric: [lo, hi]}} (percentile bootstrap over questions; no "ci" for n_boot 0)."""
    conf, correct = np.asarray(conf, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    out = {"n": int(len(conf)), **helm_metrics(conf, correct)}
    if n_boot:
        rng = np.random.default_rng(seed)
        draws = [helm_metrics(conf[idx], correct[idx]) for idx in rng.integers(0, len(conf), (n_boot, len(conf)))]
        out["ci"] = {k: percentile_interval(np.array([d[k] for d in draws])) for k in draws[0]}
    return out


def helm_deltas(conf_full, correct_full, conf_quant, correct_quant, n_boot: int = 1000, seed: int = 0) -> dict:
    """Full vs quantized on the same questions (rows paired): {"n", "full": battery, "quant": battery, "delta":
    quant - full per metric, "ci": {metric: [lo, hi]} of the delta (paired percentile bootstrap: both models on the
    same resampled questions)}."""
    f = np.asarray(conf_full, dtype=np.float64), np.asarray(correct_full, dtype=np.float64)
    q = np.asarray(conf_quant, dtype=np.float64), np.asarray(correct_quant, dtype=np.float64)
    if len(f[0]) != len(q[0]):
        raise QuantconfError("HELM's deltas need the two models' answers to the same questions, paired")
    full, quant = helm_metrics(*f), helm_metrics(*q)
    out = {"n": int(len(f[0])), "full": full, "quant": quant, "delta": {k: quant[k] - full[k] for k in full}}
    if n_boot:
        rng = np.random.default_rng(seed)
        draws = []
        for idx in rng.integers(0, len(f[0]), (n_boot, len(f[0]))):
            a, b = helm_metrics(f[0][idx], f[1][idx]), helm_metrics(q[0][idx], q[1][idx])
            draws.append({k: b[k] - a[k] for k in a})
        out["ci"] = {k: percentile_interval(np.array([d[k] for d in draws])) for k in full}
    return out
