"""The calibration-science additions: four defects (each test failed on the old code), the paper's
compat mode against independent loop implementations, modern metrics against second libraries and
hand computations (temperature scaling: test_recalibration.py)."""

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

import quantconf as qc
from conftest import mc_frame
from quantconf.analysis.metrics import (bootstrap_metrics, calibration_metrics, choice_log_probs, equal_mass_bin,
                                   proskurina2024_metrics, reliability_bins, smooth_ece_at, smooth_ece_bandwidth,
                                   sweep_bin_count, task_metrics, weighted_aurc, weighted_auroc, wilson_interval)
from quantconf.errors import QuantconfError
from quantconf.analysis.paired import compare_task, kl_divergence


def _case(n=300, k=4, seed=0, scale=2.0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * scale
    p = np.exp(z - z.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True), rng.integers(0, k, n)


# --------------------------------------------------------------------------- defects


def test_nll_is_exact_when_probabilities_underflow():
    m = task_metrics(mc_frame([[-5.0, -2000.0], [-1.0, -2.0]], [1, 0]), n_boot=0)
    assert m["nll"] == pytest.approx((1995 + np.log1p(np.exp(-1))) / 2, rel=1e-12)  # 997.66, not 345.5
    lp, _ = choice_log_probs([[-5.0, -2000.0]])
    assert lp[0, 1] == pytest.approx(-1995.0)
    c = compare_task(mc_frame([[-1.0, -2.0]] * 2, [1, 1]), mc_frame([[-5.0, -2000.0]] * 2, [1, 1]), n_boot=20)
    assert c["quant_nll"] == pytest.approx(1995.0)
    assert c["ci"]["delta_nll"] == [pytest.approx(1995.0 - np.log1p(np.exp(1)))] * 2  # exact in every replicate


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_accuracy_and_metrics_refuse_non_finite_naming_the_question(bad):
    df = mc_frame([[-1.0, -2.0], [-1.0, bad]], [1, 0], task="piqa")
    for fn in (qc.metrics, lambda d: qc.compare(d, d), lambda d: __import__("quantconf.analysis.metrics").analysis.metrics.accuracy(d)):
        with pytest.raises(QuantconfError, match="piqa doc 1 choice 1: log-likelihood .* is not finite"):
            fn(df)


def test_ace_with_fewer_questions_than_ranges_averages_non_empty_ranges():
    p = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.45, 0.55]])
    y = np.array([0, 1, 0, 1, 0])
    # 5 questions, 15 ranges: each question is its own range; per class the mean of |[y==j] - p_j|
    by_hand = np.mean([np.mean(np.abs((y == j) - p[:, j])) for j in range(2)])
    assert calibration_metrics(p, y, n_bins=15)["ace"] == pytest.approx(by_hand, abs=1e-15)
    # with n >= ranges nothing changes: 4 questions in 2 ranges of 2
    p4, y4 = p[:4], y[:4]
    ranges = [np.argsort(p4[:, j], kind="stable") for j in range(2)]
    by_hand = np.mean([np.mean([abs(np.mean(y4[r] == j) - np.mean(p4[r, j])) for r in (o[:2], o[2:])])
                       for j, o in enumerate(ranges)])
    assert calibration_metrics(p4, y4, n_bins=2)["ace"] == pytest.approx(by_hand, abs=1e-15)


def test_kl_has_no_hidden_epsilon():
    p, q = np.array([[0.5, 0.5]]), np.array([[1.0, 0.0]])
    assert np.isinf(kl_divergence(p, q)[0])
    assert kl_divergence(q, p)[0] == pytest.approx(np.log(2))
    lp, lq = np.log(p), np.array([[0.0, -3000.0]])  # q underflows, its log does not
    assert kl_divergence(p, np.exp(lq), lp, lq)[0] == pytest.approx(0.5 * (lp[0, 0] - 0.0) + 0.5 * (lp[0, 1] + 3000))


# --------------------------------------------------------------------------- the paper's compat mode
# Independent loop implementations of the notebook's definitions (written from its text, not copied).


def nb_bins(conf, n_bins):
    edges = [i / n_bins for i in range(n_bins)]
    return np.array([max(i + 1 for i, e in enumerate(edges) if c >= e) for c in conf])  # digitize: count of edges <= c


def nb_class_gaps(probs, gold, members):
    out = []
    for k in range(probs.shape[1]):
        idx = [i for i in members if gold[i] == k]
        if idx:
            acc = np.mean([probs[i].argmax() == k for i in idx])
            out.append((len(idx), abs(acc - np.mean([probs[i].max() for i in idx]))))
    return out


def nb_reference(ll_rows, gold):
    k0 = len(ll_rows[0])
    keep = [i for i, r in enumerate(ll_rows) if len(r) == k0]
    probs = []
    for i in keep:
        e = np.exp(np.array(ll_rows[i]) - max(ll_rows[i]))
        probs.append(e / e.sum())
    probs, gold = np.array(probs), np.array(gold)[keep]
    n, k = probs.shape
    conf = probs.max(1)
    out = {"conf": conf.mean(), "conf_true": np.mean([probs[i, gold[i]] for i in range(n)])}
    right = [conf[i] for i in range(n) if probs[i].argmax() == gold[i]]
    wrong = [conf[i] for i in range(n) if probs[i].argmax() != gold[i]]
    out["c_pos"], out["c_neg"] = (np.mean(right) if right else np.nan), (np.mean(wrong) if wrong else np.nan)
    out["entropy"] = np.mean([-sum(q * np.log2(q) for q in row) for row in probs])
    if k == 2:
        b = nb_bins(conf, 100)
        diffs = {v: (np.sum(b == v), conf[b == v].mean() - gold[b == v].mean()) for v in set(b.tolist())}
        out["ace"] = sum(c / n * abs(d) for c, d in diffs.values())
        out["mce"] = max(d for _, d in diffs.values())
    else:
        step = n // 15
        cuts = sorted(conf)[0:step * 15:step]
        rng_of = [next((r for r, c in enumerate(cuts) if conf[i] <= c), 0) for i in range(n)]
        out["ace"] = sum(g for r in range(15) for _, g in nb_class_gaps(probs, gold, [i for i in range(n) if rng_of[i] == r])) / (k * 15)
        b = nb_bins(conf, 100)
        out["mce"] = max([g for v in range(100) for _, g in nb_class_gaps(probs, gold, [i for i in range(n) if b[i] == v])],
                         default=-1)
    b = nb_bins(conf, 15)
    out["sce"] = sum(c / n * g for v in range(15) for c, g in nb_class_gaps(probs, gold, [i for i in range(n) if b[i] == v])) / k
    return out


def _fixtures():
    rng = np.random.default_rng(3)
    multi = (rng.normal(size=(60, 4)) * 2).tolist(), rng.integers(0, 4, 60).tolist()
    # ties and confidence 1.0 (a choice 800 nats ahead): binary
    binary = ([[0.0, -1.0], [0.0, -1.0], [-800.0, 0.0], [0.0, -800.0], [-0.3, 0.0], [0.0, 0.0], [-2.0, -0.1]] * 3,
              [1, 0, 1, 0, 0, 1, 1] * 3)
    # ragged: questions with 3 choices among 4-choice ones are dropped by the notebook
    ragged_ll = [r[:3] if i % 5 == 1 else r for i, r in enumerate((rng.normal(size=(40, 4)) * 3).tolist())]
    ragged = ragged_ll, [int(g) % len(r) for g, r in zip(rng.integers(0, 4, 40), ragged_ll)]
    tied_multi = [[0.0, 0.0, -1.0, -2.0]] * 20 + [[-1.0, 0.0, 0.0, -5.0]] * 20, [0, 1, 2, 3] * 10
    return [multi, binary, ragged, tied_multi]


@pytest.mark.parametrize("case", range(4))
def test_compat_equals_independent_notebook_reimplementation(case):
    ll, gold = _fixtures()[case]
    ours, ref = proskurina2024_metrics(ll, gold), nb_reference(ll, gold)
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, abs=1e-12, nan_ok=True), key
    if case == 2:
        assert ours["n_used"] == 32  # 8 of 40 questions have 3 choices


def test_compat_quirks_by_hand():
    # confidence 1.0 is kept (top bin), compared with the gold label INDEX: |mean(1, .7309) - mean(0, 1)|
    ll, gold = [[0.0, -800.0], [0.0, -1.0]], [0, 1]
    c2 = 1 / (1 + np.exp(-1))
    ours = proskurina2024_metrics(ll, gold)
    assert ours["ace"] == pytest.approx(0.5 * abs(1.0 - 0) + 0.5 * abs(c2 - 1))
    # standard ECE: both predictions are choice 0, one right (conf 1.0), one wrong (conf c2)
    probs = np.exp(choice_log_probs(ll)[0])
    assert calibration_metrics(probs, np.array(gold), n_bins=15)["ece"] == pytest.approx(0.5 * abs(1 - 1) + 0.5 * c2)


def test_compat_in_cli_table_and_unknown_mode(tmp_path, capsys):
    from quantconf.cli import main
    from quantconf.predictions import write_predictions

    ll, gold = _fixtures()[0]
    write_predictions(mc_frame(ll, gold, task="multi"), tmp_path / "multi.parquet")
    assert main(["metrics", str(tmp_path), "--bootstrap", "0", "--compat", "proskurina2024"]) == 0
    out = capsys.readouterr().out
    assert "proskurina2024" in out and f"{nb_reference(ll, gold)['ace']:.4f}" in out
    mc2 = mc_frame([[0.0, -1.0]], [[0]], task="mc2")
    with pytest.raises(QuantconfError, match="compat 'bogus' is unknown"):
        task_metrics(mc2, compat="bogus")


# --------------------------------------------------------------------------- modern metrics


def test_auroc_equals_mann_whitney():
    p, y = _case(n=500)
    conf, correct = p.max(1), (p.argmax(1) == y)
    conf = np.round(conf, 2)  # plenty of ties
    u = mannwhitneyu(conf[correct], conf[~correct]).statistic
    assert weighted_auroc(conf, correct.astype(float), np.ones((1, 500)))[0] == pytest.approx(
        u / (correct.sum() * (~correct).sum()), abs=1e-12)
    # integer weights = repeating questions
    w = np.random.default_rng(1).integers(0, 3, 500)
    rep = np.repeat(np.arange(500), w)
    c2, k2 = conf[rep], correct[rep]
    u2 = mannwhitneyu(c2[k2], c2[~k2]).statistic / (k2.sum() * (~k2).sum())
    assert weighted_auroc(conf, correct.astype(float), w[None, :].astype(float))[0] == pytest.approx(u2, abs=1e-12)


def test_aurc_is_tie_invariant_and_counts_bootstrap_copies_as_copies():
    import itertools

    conf = np.array([0.9, 0.7, 0.7, 0.7, 0.5, 0.5])
    correct = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])

    def classic(order):  # risk(k) = errors among the first k, averaged over k
        wrong = 1 - correct[list(order)]
        return np.mean(np.cumsum(wrong) / np.arange(1, len(wrong) + 1))

    # the expectation over every order that sorts confidence decreasingly (ties in any order)
    orders = [o for o in itertools.permutations(range(6)) if np.all(np.diff(conf[list(o)]) <= 0)]
    expected = np.mean([classic(o) for o in orders])
    aurc, _ = weighted_aurc(conf, correct, np.ones((1, 6)))
    assert aurc[0] == pytest.approx(expected)
    perm = [3, 0, 5, 2, 4, 1]  # the question order does not matter
    assert weighted_aurc(conf[perm], correct[perm], np.ones((1, 6)))[0][0] == pytest.approx(expected)
    # a bootstrap weight of 2 is two copies: the same as the expanded sample with unit weights
    w = np.array([2.0, 0.0, 1.0, 3.0, 1.0, 1.0])
    rep = np.repeat(np.arange(6), w.astype(int))
    a_w, e_w = weighted_aurc(conf, correct, w[None])
    a_x, e_x = weighted_aurc(conf[rep], correct[rep], np.ones((1, len(rep))))
    assert a_w[0] == pytest.approx(a_x[0]) and e_w[0] == pytest.approx(e_x[0])


def test_aurc_by_hand():
    conf = np.array([0.9, 0.8, 0.7, 0.6])
    correct = np.array([1.0, 0.0, 1.0, 0.0])
    aurc, eaurc = weighted_aurc(conf, correct, np.ones((1, 4)))
    risks = [0 / 1, 1 / 2, 1 / 3, 2 / 4]
    best = [0, 0, 1 / 3, 2 / 4]  # correct ones first
    assert aurc[0] == pytest.approx(np.mean(risks)) and eaurc[0] == pytest.approx(np.mean(risks) - np.mean(best))


def test_brier_decomposition_identity_and_constant_bins():
    p, y = _case(n=400)
    m = calibration_metrics(p, y, n_bins=10)
    assert m["brier"] == pytest.approx(m["brier_reliability"] - m["brier_resolution"] + m["brier_uncertainty"]
                                       + m["brier_within_bin"], abs=1e-14)
    # forecasts constant inside each bin: the within-bin term vanishes and REL/RES/UNC are the textbook ones
    p2 = np.array([[0.85, 0.15]] * 6 + [[0.35, 0.65]] * 4)
    y2 = np.array([0, 0, 0, 0, 1, 1, 0, 1, 1, 1])
    m2 = calibration_metrics(p2, y2, n_bins=10)
    assert m2["brier_within_bin"] == pytest.approx(0, abs=1e-14)
    rel = 2 * (0.6 * (0.15 - 2 / 6) ** 2 + 0.4 * (0.65 - 3 / 4) ** 2)  # both classes mirror each other
    ybar = 5 / 10
    res = 2 * (0.6 * (2 / 6 - ybar) ** 2 + 0.4 * (3 / 4 - ybar) ** 2)
    assert m2["brier_reliability"] == pytest.approx(rel) and m2["brier_resolution"] == pytest.approx(res)
    assert m2["brier_uncertainty"] == pytest.approx(2 * ybar * (1 - ybar))


def test_tace_ignores_probabilities_below_threshold():
    p = np.array([[0.995, 0.004, 0.001], [0.6, 0.39, 0.01], [0.2, 0.3, 0.5]])
    y = np.array([0, 1, 2])
    m = calibration_metrics(p, y, n_bins=1)
    per_class = []
    for j in range(3):
        sel = p[:, j] > 1e-2
        per_class.append(abs(np.mean(y[sel] == j) - np.mean(p[sel, j])))
    assert m["tace"] == pytest.approx(np.mean(per_class))
    assert m["tace"] != pytest.approx(m["ace"])


def test_ece_sweep_by_loop():
    p, y = _case(n=200, seed=4, scale=1.0)
    conf, correct = p.max(1), (p.argmax(1) == y).astype(float)
    best = 1
    for b in range(2, 201):
        bins = equal_mass_bin(conf, b)
        accs = [correct[bins == i].mean() for i in range(b)]
        if any(accs[i + 1] < accs[i] for i in range(b - 1)):
            break
        best = b
    assert sweep_bin_count(conf, correct) == best
    bins = equal_mass_bin(conf, best)
    ece = sum(np.sum(bins == i) / 200 * abs(correct[bins == i].mean() - conf[bins == i].mean()) for i in range(best))
    assert calibration_metrics(p, y)["ece_sweep"] == pytest.approx(ece, abs=1e-14)


def _informative_case(n, k, seed, scale, sharpen):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * scale
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    truth = p ** sharpen / (p ** sharpen).sum(1, keepdims=True)  # labels drawn from a miscalibrated "truth"
    return p, np.array([rng.choice(k, p=row) for row in truth])


@pytest.mark.parametrize("n, k, seed, scale, sharpen, tol", [
    (300, 4, 5, 0.5, 0.0, 1e-5),
    (300, 4, 1, 1.5, 0.7, 1e-5),
    (1000, 2, 2, 1.0, 0.7, 1e-5),
    # labels independent of predictions: smECE and sigma ~0.42; relplot evaluates its kernel on
    # [-0.5, 0.5] only and reflects once, which at this bandwidth shifts its value by ~1e-4
    (300, 4, 0, 2.0, 0.0, 1e-3),
])
def test_smooth_ece_matches_relplot(n, k, seed, scale, sharpen, tol):
    relplot = pytest.importorskip("relplot")
    p, y = _informative_case(n, k, seed, scale, sharpen)
    conf, correct = p.max(1), (p.argmax(1) == y).astype(float)
    ours = calibration_metrics(p, y)["smece"]
    assert ours == pytest.approx(float(relplot.smECE(conf, correct)), abs=tol)
    assert smooth_ece_at(conf, correct, smooth_ece_bandwidth(conf, correct))[0] == pytest.approx(ours)
    assert smooth_ece_at(conf, correct, 0.05)[0] == pytest.approx(float(relplot.smECE_sigma(conf, correct, 0.05)),
                                                                  abs=1e-5)


def test_smooth_ece_near_saturated_confidence():
    """Where many confidences sit at 1.0, relplot's grid reflection does not mirror the mass of a point on
    the boundary itself (half its kernel is dropped); the reflected kernel of the definition keeps it.
    The two then differ by a few thousandths; our value is the definition's."""
    relplot = pytest.importorskip("relplot")
    p, y = _informative_case(300, 4, 7, 4.0, 0.0)
    conf, correct = p.max(1), (p.argmax(1) == y).astype(float)
    assert (conf > 0.99).mean() > 0.15
    assert calibration_metrics(p, y)["smece"] == pytest.approx(float(relplot.smECE(conf, correct)), abs=5e-3)
    # the definition by quadrature: with a kernel that keeps its mass on [0, 1], at a point on the boundary
    # the reflected density integrates to 1
    from quantconf.analysis.metrics import reflected_gaussian_kernel

    t = np.linspace(0, 1, 20001)
    k = reflected_gaussian_kernel(t, np.array([1.0, 0.0, 0.3]), 0.2)
    assert np.trapezoid(k, t, axis=0) == pytest.approx([1, 1, 1], abs=1e-6)


def test_smooth_ece_kernel_skipping_underflowed_images_is_bit_identical():
    """The kernel skips reflection images whose every term underflows to 0.0 (speed): equal bit for bit to the
    sum over all 14 images, at every bandwidth the bisection visits and at confidences on the boundary."""
    from quantconf.analysis.metrics import reflected_gaussian_kernel

    def all_images(t, f, sigma):
        d, s = t[:, None] - f[None, :], t[:, None] + f[None, :]
        out = np.zeros_like(d)
        for m in range(-3, 4):
            out += np.exp(-0.5 * ((d - 2 * m) / sigma) ** 2) + np.exp(-0.5 * ((s - 2 * m) / sigma) ** 2)
        return out / (np.sqrt(2 * np.pi) * sigma)

    f = np.concatenate([np.random.default_rng(0).random(200), [0.0, 1.0, 1e-12, 1 - 1e-12]])
    for sigma in [1.0, 0.5, 0.25, 0.1, 0.05, 0.02, 0.01, 0.004, 0.001]:
        t = np.linspace(0, 1, max(200, int(round(10 / sigma))))
        assert np.array_equal(reflected_gaussian_kernel(t, f, sigma), all_images(t, f, sigma)), sigma


def test_new_metrics_have_bootstrap_intervals_and_paired_deltas():
    p, y = _case(n=300)
    point = calibration_metrics(p, y)
    ci = bootstrap_metrics(p, y, n_boot=100, seed=2)
    for m in ("smece", "ece_sweep", "tace", "auroc", "aurc", "eaurc", "brier_reliability", "brier_resolution"):
        assert ci[m][0] < ci[m][1], m
        assert ci[m][0] - 0.05 <= point[m] <= ci[m][1] + 0.05, m
    rng = np.random.default_rng(0)
    ll = rng.normal(size=(200, 4)) * 2
    gold = rng.integers(0, 4, 200).tolist()
    c = compare_task(mc_frame(ll.tolist(), gold), mc_frame((ll * 0.5 + rng.normal(size=ll.shape)).tolist(), gold), n_boot=50)
    for m in ("smece", "auroc", "aurc", "eaurc", "tace", "ece_sweep", "brier_reliability"):
        assert c[f"delta_{m}"] == pytest.approx(c[f"quant_{m}"] - c[f"full_{m}"]) and f"delta_{m}" in c["ci"]


def test_reliability_bins_carry_counts_and_wilson_intervals():
    lo, hi = wilson_interval(np.array([8.0]), np.array([10.0]))
    assert lo[0] == pytest.approx(0.4902, abs=1e-4) and hi[0] == pytest.approx(0.9433, abs=1e-4)
    rb = reliability_bins(np.array([0.05, 0.95, 0.95, 0.97]), np.array([0.0, 1.0, 1.0, 0.0]), 10)
    assert rb["count"][0] == 1 and rb["count"][-1] == 3 and np.isnan(rb["acc_lo"][5])
    assert rb["acc_lo"][-1] < 2 / 3 < rb["acc_hi"][-1]


def test_compat_edges_all_right_all_wrong_and_far_log_likelihoods():
    import warnings

    ll = [[-1000.0, -1001.0], [-1003.0, -1000.0]]  # far from 0: the softmax must subtract the row max
    p1, p2 = 1 / (1 + np.exp(-1)), 1 / (1 + np.exp(-3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no mean of an empty slice: undefined is said, not computed
        right = proskurina2024_metrics(ll, [0, 1])
        wrong = proskurina2024_metrics(ll, [1, 0])
    assert right["c_pos"] == pytest.approx((p1 + p2) / 2) and np.isnan(right["c_neg"])
    assert wrong["c_neg"] == pytest.approx((p1 + p2) / 2) and np.isnan(wrong["c_pos"])
    assert right["conf_true"] == pytest.approx((p1 + p2) / 2) and wrong["conf_true"] == pytest.approx(1 - (p1 + p2) / 2)
    ent = lambda p: -(p * np.log2(p) + (1 - p) * np.log2(1 - p))  # noqa: E731
    assert right["entropy"] == pytest.approx((ent(p1) + ent(p2)) / 2)
    with np.errstate(divide="raise", invalid="raise"):  # a probability of exactly 0: NaN entropy, quietly
        assert np.isnan(proskurina2024_metrics([[0.0, -800.0], [0.0, -1.0]], [0, 1])["entropy"])
    # fewer than 15 questions with > 2 choices: the notebook's ace cannot be computed
    assert np.isnan(proskurina2024_metrics([[0.0, -1.0, -2.0]] * 10, [0] * 10)["ace"])


def test_sweep_answers_n_at_once_when_no_bin_count_can_break_monotonicity():
    """All correct, all wrong, or confidence separating correct from wrong: every equal-mass binning is
    monotone, so the sweep's answer is n, the value the full loop reaches (checked by a reference loop)."""
    from quantconf.analysis.metrics import _bin_sums, equal_mass_bin

    def reference(conf, correct):
        best = 1
        for b in range(2, len(conf) + 1):
            count, (sa,) = _bin_sums(np.ones((1, len(conf))), equal_mass_bin(conf, b), b, correct)
            if np.any(np.diff(sa[0] / count[0]) < 0):
                break
            best = b
        return best

    rng = np.random.default_rng(0)
    conf = rng.uniform(0.3, 1, 40)
    for correct in (np.ones(40), np.zeros(40), (conf > 0.6).astype(float)):
        assert sweep_bin_count(conf, correct) == reference(conf, correct) == 40
    mixed = (rng.random(40) < conf).astype(float)
    assert sweep_bin_count(conf, mixed) == reference(conf, mixed) < 40
    assert sweep_bin_count(rng.uniform(size=20000), np.ones(20000)) == 20000  # no O(n^2) loop to get there


def test_brier_decomposition_is_finite_in_a_resample_without_a_choice_column():
    """Ragged tasks (truthfulqa_mc1): a bootstrap resample can hold no question with a 3rd choice; that
    class then adds nothing to the decomposition instead of making it NaN (and dropping the draw)."""
    from quantconf.analysis.metrics import metrics_weighted

    probs = np.array([[0.7, 0.3, 0.0], [0.4, 0.6, 0.0], [0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    mask = np.array([[1, 1, 0], [1, 1, 0], [1, 1, 1], [1, 1, 1]], bool)
    gold = np.array([0, 1, 2, 0])
    w = np.array([[2.0, 2.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    out = metrics_weighted(probs, mask, gold, w, 5)
    for key in ("brier_uncertainty", "brier_resolution", "brier_reliability"):
        assert np.isfinite(out[key]).all(), key
    rows = [0, 0, 1, 1]  # the resample spelled out: the same numbers with unit weights
    expanded = metrics_weighted(probs[rows], mask[rows], gold[rows], np.ones((1, 4)), 5)
    for key in ("brier_uncertainty", "brier_resolution", "brier_reliability"):
        assert out[key][0] == pytest.approx(expanded[key][0]), key


