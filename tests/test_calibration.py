"""analysis/metrics.py: metrics against hand computations, netcal, and loops written from the papers."""

import numpy as np
import quantconf as qc
import pandas as pd
import pytest

from quantconf.errors import QuantconfError
from quantconf.analysis.metrics import (accuracy, bootstrap_metrics, calibration_metrics, choice_probs, equal_mass_bin,
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


# --------------------------------------------------------------------------- behaviours pinned by mutation testing


def _pred_df(ll, gold, chars=None, tokens=None):
    n = len(ll)
    return pd.DataFrame({"doc_id": range(n), "task": "t", "choices": [["x"] * len(r) for r in ll], "gold": gold,
                         "loglik": ll, "n_chars": chars or [[1] * len(r) for r in ll],
                         "n_tokens": tokens or [[1] * len(r) for r in ll], "n_bytes": chars or [[1] * len(r) for r in ll],
                         "is_greedy": [[False] * len(r) for r in ll]})


def test_mc2_mass_is_stable_for_large_log_likelihoods():
    from quantconf.analysis.metrics import mc2_mass

    assert mc2_mass([[-10000.0, -10001.0, -10003.0]], [[0, 2]])[0] == pytest.approx(
        (1 + np.exp(-3)) / (1 + np.exp(-1) + np.exp(-3)))


def test_acc_norm_over_several_ragged_rows_with_one_char_and_empty_choices():
    from quantconf.analysis.metrics import acc_norm_correct

    ll = [[-3.0, -1.5], [-2.0, -9.0, -0.5], [-4.0, -0.1]]
    chars = [[3, 1], [1, 9, 0], [4, 1]]
    # row 0: -1 vs -1.5 -> 0; row 1: -2, -1, empty -> 1 (the empty choice never wins); row 2: -1 vs -0.1 -> 1
    assert acc_norm_correct(ll, chars, [0, 1, 1]).tolist() == [True, True, True]
    assert acc_norm_correct(ll, chars, [1, 2, 0]).tolist() == [False, False, False]


def test_task_metrics_wires_every_option_through():
    rng = np.random.default_rng(5)
    ll = (rng.normal(size=(120, 3)) * 3).tolist()
    ll[0] = ll[0][:2]  # one ragged question
    gold = [int(g) % len(r) for g, r in zip(rng.integers(0, 3, 120), ll)]
    chars = [[int(c) for c in rng.integers(1, 30, len(r))] for r in ll]
    df = _pred_df(ll, gold, chars=chars)
    m = task_metrics(df, n_bins=7, n_boot=40, seed=3)
    probs, mask = choice_probs(ll)
    from quantconf.analysis.metrics import acc_norm_correct, bootstrap_metrics as boot

    direct = calibration_metrics(probs, np.array(gold), mask, n_bins=7,
                                 correct_norm=acc_norm_correct(ll, chars, gold))
    for k, v in direct.items():
        assert m[k] == pytest.approx(v, nan_ok=True), k
    assert m["n"] == 120 and m["acc_norm"] == pytest.approx(np.mean(acc_norm_correct(ll, chars, gold)))
    assert m["ci"] == boot(probs, np.array(gold), mask, 7, 40, 3, acc_norm_correct(ll, chars, gold),
                           log_probs=np.log(np.where(mask, probs, 1.0)) + np.where(mask, 0, -np.inf))
    assert task_metrics(df, n_boot=40, seed=4)["ci"] != task_metrics(df, n_boot=40, seed=3, n_bins=7)["ci"]
    normed = task_metrics(df, n_boot=0, normalize="chars")
    pn, _ = choice_probs(ll, lengths=chars)
    assert normed["conf"] == pytest.approx(pn.max(1).mean()) and normed["conf"] != pytest.approx(m["conf"])
    # padded choices are masked out, not a third class with probability 0
    assert m["ace"] == pytest.approx(direct["ace"]) and m["ace"] != pytest.approx(
        calibration_metrics(probs, np.array(gold), None, n_bins=7)["ace"])


def test_task_metrics_errors_and_mc2_interval():
    from quantconf.errors import QuantconfError

    with pytest.raises(ValueError, match="^no questions$"):
        task_metrics(_pred_df([[0.0]], [0]).iloc[:0])
    with pytest.raises(QuantconfError, match=r"^compat 'x' is unknown; known: proskurina2024, helm$") as e:
        task_metrics(_pred_df([[0.0, -1.0]], [0]), compat="x")
    assert e.value.param == "compat"
    with pytest.raises(QuantconfError, match="^n_bins must be >= 1, got 0$") as e:
        task_metrics(_pred_df([[0.0, -1.0]], [0]), n_bins=0)
    assert e.value.param == "n_bins"
    assert task_metrics(_pred_df([[0.0, -1.0]] * 3, [0] * 3), n_bins=1, n_boot=0, compat="none")["n"] == 3
    mc2 = _pred_df([[0.0, -1.0, -2.0], [-1.0, 0.0, -3.0], [-0.5, -0.5, 0.0]], [[0, 1], [1], [2]])
    m = task_metrics(mc2, n_boot=200, seed=9)
    per_q = [(1 + np.exp(-1)) / (1 + np.exp(-1) + np.exp(-2)), 1 / (1 + np.exp(-1) + np.exp(-3)),
             1 / (1 + 2 * np.exp(-0.5))]
    assert m == {"n": 3, "mc2": pytest.approx(np.mean(per_q)), "acc": pytest.approx(np.mean(per_q)),
                 "note": "several true answers: single-label calibration metrics skipped", "ci": m["ci"]}
    rng = np.random.default_rng(9)
    means = [np.asarray(per_q)[rng.integers(0, 3, 3)].mean() for _ in range(200)]
    assert m["ci"] == {"mc2": [pytest.approx(np.quantile(means, 0.025)), pytest.approx(np.quantile(means, 0.975))]}


def test_accuracy_of_nothing_and_of_mixed_rows():
    empty = accuracy(_pred_df([[0.0]], [0]).iloc[:0])
    assert set(empty) == {"acc", "acc_norm"} and np.isnan(empty["acc"]) and np.isnan(empty["acc_norm"])
    only_mc2 = accuracy(_pred_df([[0.0, 0.0]], [[0]]))
    assert only_mc2["acc"] == pytest.approx(0.5) and np.isnan(only_mc2["acc_norm"])
    mixed = accuracy(_pred_df([[0.0, 0.0], [-1.0, -3.0]], [[0], 0], chars=[[1, 1], [1, 2]]))
    assert mixed["acc"] == pytest.approx((0.5 + 1) / 2) and mixed["acc_norm"] == pytest.approx(1.0)


def test_probs_from_predictions_normalizes_and_pads_with_zero():
    from quantconf.analysis.metrics import probs_from_predictions

    df = _pred_df([[-4.0, -4.0], [-1.0, -2.0, -3.0]], [0, 0], chars=[[2, 4], [1, 1, 1]])
    p, mask = probs_from_predictions(df, "chars")
    assert p[0, 1] == pytest.approx(1 / (1 + np.exp(-1))) and p[0, 2] == 0.0 and mask[0].tolist() == [True, True, False]


def test_reliability_bins_values_by_hand():
    rb = reliability_bins(np.array([0.1, 0.15, 0.55, 0.6, 0.65, 1.0]), np.array([0, 1, 1, 1, 0, 1.0]), 4)
    assert rb["edges"].tolist() == [0, 0.25, 0.5, 0.75, 1.0]
    assert rb["count"].tolist() == [2, 0, 3, 1]
    assert rb["conf"][[0, 2, 3]] == pytest.approx([0.125, 0.6, 1.0]) and np.isnan(rb["conf"][1])
    assert rb["acc"][[0, 2, 3]] == pytest.approx([0.5, 2 / 3, 1.0])
    z = 1.959964
    for b, (k, n) in {0: (1, 2), 2: (2, 3), 3: (1, 1)}.items():
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        assert (rb["acc_lo"][b], rb["acc_hi"][b]) == (pytest.approx(centre - half), pytest.approx(centre + half))
    assert np.isnan(rb["acc_lo"][1]) and np.isnan(rb["acc_hi"][1])


def test_empty_choice_acc_norm_is_defined_and_normalize_refuses_it():
    from quantconf.analysis.metrics import accuracy, task_metrics

    df = pd.DataFrame({"doc_id": [0, 1], "task": "t", "loglik": [[-4.0, -0.5], [-6.0, -3.0]],
                       "n_chars": [[8, 0], [2, 6]], "n_tokens": [[2, 1], [1, 2]], "n_bytes": [[8, 0], [2, 6]],
                       "gold": [0, 1], "choices": [["abcdefgh", ""], ["ab", "abcdef"]]})
    # doc 0: the empty choice has the higher loglik but never wins acc_norm (lm-eval: -0.5 / 0 = -inf)
    # doc 1: -6/2 = -3 vs -3/6 = -0.5 -> choice 1 (gold)
    with np.errstate(all="raise"):
        assert accuracy(df) == {"acc": 0.5, "acc_norm": 1.0}
    with pytest.raises(QuantconfError, match="doc 0 choice 1 is empty"):
        task_metrics(df, n_boot=0, normalize="chars")
    assert task_metrics(df, n_boot=0, normalize="tokens")["acc"] == 0.5


def test_metrics_cli_json_is_the_api_on_a_directory_with_a_group(tmp_path, capsys):
    """Group aggregates were made in cli.py: `qc.metrics(DIR)` returns them, and --json prints exactly that."""
    import json

    from conftest import mc_frame
    from quantconf.cli import main
    from quantconf.io import atomic_write_json
    from quantconf.predictions import write_predictions

    rng = np.random.default_rng(1)
    for task, n in (("a", 30), ("b", 10)):
        write_predictions(mc_frame(rng.normal(size=(n, 3)).tolist(), rng.integers(0, 3, n).tolist(), task=task),
                          tmp_path / f"{task}.parquet")
    atomic_write_json(tmp_path / "manifest.json", {"tasks": {"a": {}, "b": {}}, "groups": {"g": {
        "tasks": ["a", "b"], "aggregate_metric_list": [{"metric": "acc", "weight_by_size": True}]}}})
    assert main(["metrics", str(tmp_path), "--json", "--bootstrap", "20"]) == 0
    shown = json.loads(capsys.readouterr().out)
    api = qc.metrics(tmp_path, n_boot=20)
    assert shown == json.loads(json.dumps(api, default=float))
    assert api["g"]["acc"] == pytest.approx((30 * api["a"]["acc"] + 10 * api["b"]["acc"]) / 40)


def test_ragged_rows_pad_in_one_step_as_row_by_row_and_non_finite_entries_are_named():
    """pad_ragged / ragged_mask (one fill from the rows' values in order) equal the row-by-row fill on lists,
    arrays and tuples of different lengths; None is NaN as numpy assigns it; a NaN, inf or None
    log-likelihood is still refused naming its doc and choice."""
    from quantconf.analysis.metrics import check_finite_logliks, pad_ragged, ragged_mask

    rows = [[-1.0, -2.0], np.array([-0.5, -3.0, -4.0]), (-7.0,), [-1.5, -2.5, -3.5, -4.5]]
    expected = np.full((4, 4), -9.0)
    for i, r in enumerate(rows):
        expected[i, :len(r)] = r
    np.testing.assert_array_equal(pad_ragged(rows, fill=-9.0), expected)
    np.testing.assert_array_equal(ragged_mask(rows), expected != -9.0)
    assert np.isnan(pad_ragged([[1.0, None], [2.0]])[0, 1])
    for bad in (float("nan"), float("inf"), None):
        df = pd.DataFrame({"doc_id": [4, 7], "task": "t", "loglik": [[-1.0, -2.0], [-1.0, bad]]})
        with pytest.raises(QuantconfError, match=r"t doc 7 choice 1: log-likelihood .* is not finite"):
            check_finite_logliks(df)
    check_finite_logliks(pd.DataFrame({"doc_id": [4], "loglik": [np.array([-1.0, -2.0])]}))  # no error
