"""calibration.py: metrics against hand computations, netcal, and loops written from the papers."""

import numpy as np
import pandas as pd
import pytest

from quantconf.calibration import (accuracy, bootstrap_metrics, calibration_metrics, choice_probs, equal_mass_bin,
                                   reliability_bins, task_metrics)


def _random_case(n=400, k=4, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, k)) * 2
    p = np.exp(logits)
    return p / p.sum(1, keepdims=True), rng.integers(0, k, n)


def test_hand_computed_small_case():
    p = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.5, 0.5]])
    y = np.array([0, 1, 1, 0])
    m = calibration_metrics(p, y, n_bins=2)
    # conf .9 .6 .7 .5 -> all in bin 1 ([.5, 1]); correct 1,0,1,1 (tie -> choice 0)
    assert m["acc"] == pytest.approx(0.75)
    assert m["conf"] == pytest.approx(0.675)
    assert m["ece"] == pytest.approx(abs(0.75 - 0.675))
    assert m["mce"] == pytest.approx(0.075)
    assert m["nll"] == pytest.approx(-np.mean(np.log([0.9, 0.4, 0.7, 0.5])))
    assert m["brier"] == pytest.approx(np.mean([0.02, 0.72, 0.18, 0.5]))
    assert m["conf_true"] == pytest.approx(np.mean([0.9, 0.4, 0.7, 0.5]))
    assert m["conf_correct"] == pytest.approx(np.mean([0.9, 0.7, 0.5]))
    assert m["conf_wrong"] == pytest.approx(0.6)
    ent = -np.mean([sum(q * np.log(q) for q in row) for row in p])
    assert m["entropy"] == pytest.approx(ent) and m["entropy_bits"] == pytest.approx(ent / np.log(2))


def test_ece_mce_match_netcal():
    netcal = pytest.importorskip("netcal.metrics")
    p, y = _random_case()
    for bins in (5, 15):
        m = calibration_metrics(p, y, n_bins=bins)
        assert m["ece"] == pytest.approx(netcal.ECE(bins=bins).measure(p, y), abs=1e-9)
        assert m["mce"] == pytest.approx(netcal.MCE(bins=bins).measure(p, y), abs=1e-9)


def _loop_ace_sce(p, y, bins):
    """Nixon et al.'s ACE / SCE written as plain loops (independent of the vectorized code)."""
    n, k = p.shape
    ace, sce = 0.0, 0.0
    for j in range(k):
        order = np.argsort(p[:, j], kind="stable")
        for r in range(bins):
            idx = [order[i] for i in range(n) if min(i * bins // n, bins - 1) == r]
            if idx:
                ace += abs(np.mean(y[idx] == j) - np.mean(p[idx, j]))
        for b in range(bins):
            idx = [i for i in range(n) if min(int(p[i, j] * bins), bins - 1) == b]
            if idx:
                sce += len(idx) / n * abs(np.mean(y[idx] == j) - np.mean(p[idx, j]))
    return ace / (k * bins), sce / k


def test_ace_sce_rms_against_loops():
    p, y = _random_case(n=97, k=3, seed=3)
    m = calibration_metrics(p, y, n_bins=7)
    ace, sce = _loop_ace_sce(p, y, 7)
    assert m["ace"] == pytest.approx(ace, abs=1e-12) and m["sce"] == pytest.approx(sce, abs=1e-12)
    rb = reliability_bins(p.max(1), p.argmax(1) == y, 7)
    w = rb["count"] / rb["count"].sum()
    gaps = np.nan_to_num(rb["acc"] - rb["conf"])
    assert m["rmsce"] == pytest.approx(np.sqrt((w * gaps**2).sum()))
    assert m["ece"] == pytest.approx((w * np.abs(gaps)).sum())


def test_edge_cases():
    # conf exactly 1 goes to the last bin, not dropped
    p = np.array([[1.0, 0.0], [0.0, 1.0]])
    m = calibration_metrics(p, np.array([0, 1]))
    assert m["ece"] == 0 and m["acc"] == 1
    assert reliability_bins(np.array([1.0]), np.array([1.0]), 15)["count"][-1] == 1
    # all wrong: ece = mean conf
    p = np.array([[0.8, 0.2], [0.3, 0.7]])
    m = calibration_metrics(p, np.array([1, 0]))
    assert m["acc"] == 0 and m["ece"] == pytest.approx(0.75) and np.isnan(m["conf_correct"])
    # n < bins, empty bins ignored in MCE
    m = calibration_metrics(np.array([[0.55, 0.45]]), np.array([0]), n_bins=15)
    assert m["mce"] == pytest.approx(0.45)
    # ties in equal-mass ranges: deterministic split
    assert list(equal_mass_bin(np.array([0.5, 0.5, 0.5, 0.5]), 2)) == [0, 0, 1, 1]


def test_bad_inputs():
    with pytest.raises(ValueError, match="sum to"):
        calibration_metrics(np.array([[0.5, 0.6]]), np.array([0]))
    with pytest.raises(ValueError, match="non-finite"):
        choice_probs([[0.0, float("nan")]])
    with pytest.raises(ValueError, match="non-finite"):
        choice_probs([[0.0, float("inf")]])


def test_ragged_choices_and_normalization():
    probs, mask = choice_probs([[-1.0, -2.0], [-1.0, -1.0, -1.0]])
    assert probs.shape == (2, 3) and mask.sum() == 5
    assert probs[1] == pytest.approx([1 / 3] * 3) and probs[0, 2] == 0
    assert probs[0, 0] == pytest.approx(1 / (1 + np.exp(-1)))
    norm, _ = choice_probs([[-4.0, -4.0]], lengths=[[2, 4]])  # -2 vs -1
    assert norm[0, 1] > norm[0, 0]
    df = pd.DataFrame({"loglik": [[-1.0, -2.0], [-1.0, -3.0, -0.5]], "n_chars": [[1, 1], [1, 1, 1]],
                       "n_tokens": [[1, 1], [1, 1, 1]], "n_bytes": [[1, 1], [1, 1, 1]], "gold": [0, 2]})
    m = task_metrics(df, n_boot=0)
    assert m["acc"] == 1.0 and m["n"] == 2


def test_bootstrap_contains_point_and_is_seeded():
    p, y = _random_case(n=2000)
    point = calibration_metrics(p, y)
    ci = bootstrap_metrics(p, y, n_boot=200, seed=1)
    assert ci == bootstrap_metrics(p, y, n_boot=200, seed=1)
    for m in ("acc", "nll", "ece", "brier", "ace"):
        assert ci[m][0] <= point[m] <= ci[m][1] or m == "ece"  # ECE is biased upward under resampling
        assert ci[m][0] < ci[m][1]
    # standard error of acc ~ sqrt(p(1-p)/n): the interval width should be close to 3.92 * se
    se = np.sqrt(point["acc"] * (1 - point["acc"]) / len(y))
    assert (ci["acc"][1] - ci["acc"][0]) == pytest.approx(3.92 * se, rel=0.25)


def test_mc2_ignores_normalization_as_lm_eval_does():
    df = pd.DataFrame({"loglik": [[0.0, 0.0, np.log(0.5)], [-1.0, -30.0, -2.0]], "n_chars": [[1, 9, 3], [2, 50, 7]],
                       "n_tokens": [[1, 4, 2], [1, 9, 2]], "n_bytes": [[1, 9, 3], [2, 50, 7]], "gold": [[0, 1], [1]]})
    m = task_metrics(df, n_boot=10)
    lm_eval_mc2 = [0.8, np.exp(-30) / (np.exp(-1) + np.exp(-30) + np.exp(-2))]  # softmax over raw logliks
    assert m["mc2"] == pytest.approx(np.mean(lm_eval_mc2)) and "ece" not in m and "skipped" in m["note"]
    for normalize in ("chars", "tokens", "bytes"):
        assert task_metrics(df, n_boot=0, normalize=normalize)["mc2"] == m["mc2"]


def test_accuracy_matches_hand_computation():
    df = pd.DataFrame({
        "loglik": [[-1.0, -2.0], [-3.0, -2.5], [-10.0, -12.0]],
        "n_chars": [[1, 10], [10, 1], [1, 100]],
        "gold": [0, 0, 1],
    })
    # acc: argmax -> 0, 1, 0 vs gold 0,0,1 -> 1/3; acc_norm: ll/len -> [-1,-.2]->1, [-.3,-2.5]->0, [-10,-.12]->1
    assert accuracy(df) == {"acc": pytest.approx(1 / 3), "acc_norm": pytest.approx(2 / 3)}
    mc2 = pd.DataFrame({"loglik": [[0.0, 0.0, float(-np.log(2))]],
                        "n_chars": [[1, 1, 1]], "gold": [[0, 1]]})
    assert accuracy(mc2)["acc"] == pytest.approx(2 / 2.5)
