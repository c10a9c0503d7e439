"""analysis/recalibration.py: temperature scaling recovers a known temperature, keeps accuracy, equals
grid searches and scipy on ragged rows; cross-fitting holds each fold out; the gap intervals equal a
direct resampling and their verdicts keep their error rate in simulation."""

import numpy as np
import pandas as pd
import pytest

import quantconf as qc
from conftest import mc_frame
from quantconf.analysis.metrics import calibration_metrics, choice_log_probs
from quantconf.analysis.recalibration import fit_temperature, recalibrate_task
from quantconf.errors import QuantconfError


def _tempered(n=4000, k=4, temperature=2.0, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * 1.5
    probs = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    gold = np.array([rng.choice(k, p=row) for row in probs])
    return mc_frame((z * temperature).tolist(), gold.tolist())  # over-confident by a factor T


@pytest.mark.parametrize("temperature", [2.0, 0.5])
def test_temperature_is_recovered_and_accuracy_kept(temperature):
    df = _tempered(temperature=temperature)
    res = recalibrate_task(df, n_boot=20)
    assert res["temperature"] == pytest.approx(temperature, rel=0.05)
    assert res["temperature_ci"][0] <= res["temperature"] <= res["temperature_ci"][1]
    assert all(t == pytest.approx(temperature, rel=0.08) for t in res["fold_temperatures"])
    assert res["after"]["acc"] == res["before"]["acc"]
    assert res["after"]["nll"] < res["before"]["nll"] and res["after"]["ece"] < res["before"]["ece"]


def test_fit_temperature_minimises_nll():
    df = _tempered(n=500, seed=3)
    lp, mask = choice_log_probs(list(df["loglik"]))
    gold = np.asarray(df["gold"])
    t = fit_temperature(np.where(mask, lp, 0), mask, gold)

    def nll(temp):
        z = lp / temp
        return -np.mean(z[np.arange(500), gold] - np.log(np.exp(z).sum(1)))

    assert nll(t) <= min(nll(t * 0.98), nll(t * 1.02))


def test_recalibrate_api_cli_and_errors(tmp_path, capsys):
    from quantconf.cli import main
    from quantconf.predictions import write_predictions

    write_predictions(_tempered(n=300, temperature=2.0), tmp_path / "full" / "t.parquet")
    write_predictions(_tempered(n=300, temperature=3.0), tmp_path / "quant" / "t.parquet")
    res = qc.recalibrate(tmp_path / "quant", n_boot=10)
    assert res["t"]["temperature"] > 2
    assert main(["recalibrate", str(tmp_path / "full"), str(tmp_path / "quant"), "--bootstrap", "10"]) == 0
    out = capsys.readouterr().out
    assert "quantized minus full ECE" in out
    with pytest.raises(QuantconfError, match="one gold answer"):
        recalibrate_task(mc_frame([[0.0, -1.0]], [[0]]))
    with pytest.raises(QuantconfError, match="n_folds must be between 2"):
        recalibrate_task(mc_frame([[0.0, -1.0]] * 3, [0] * 3), n_folds=5)


def test_gap_verdict_wording_for_every_case():
    from quantconf.analysis.recalibration import gap_verdict

    def r(before, after, t=2.0, bound=False):
        return {"before": {"ece": before, "smece": before}, "after": {"ece": after, "smece": after},
                "temperature": t, "temperature_at_bound": bound}

    full = r(0.10, 0.05, 1.5)
    assert gap_verdict("piqa", full, r(0.20, 0.06)) == (
        "piqa: quantized minus full ECE +0.100 before scaling, +0.010 after (no interval) (T full 1.50, quantized "
        "2.00): smaller after scaling (point estimates only: no test).")
    assert gap_verdict("piqa", full, r(0.20, 0.20)).endswith("not smaller after scaling (point estimates only: no test).")
    assert gap_verdict("piqa", full, r(0.10, 0.30)).endswith("there was no gap to close.")
    assert gap_verdict("piqa", full, r(0.20, 0.10), metric="smece").startswith("piqa: quantized minus full SMECE +0.100")

    def g(b, blo, bhi, a, alo, ahi):
        return {"before": {"estimate": b, "ci": [blo, bhi]}, "after": {"estimate": a, "ci": [alo, ahi]}}

    closed = gap_verdict("piqa", full, r(0.20, 0.06), gap=g(0.1, 0.05, 0.15, 0.01, -0.02, 0.04))
    assert closed == ("piqa: quantized minus full ECE +0.100 [+0.050, +0.150] before scaling, +0.010 [-0.020, +0.040] "
                      "after (95% paired bootstrap over questions) (T full 1.50, quantized 2.00): after temperature "
                      "scaling no gap is detectable.")
    assert gap_verdict("piqa", full, r(0.2, 0.1), gap=g(0.1, 0.05, 0.15, 0.05, 0.01, 0.09)).endswith(
        "temperature scaling narrows it, but a gap remains.")
    assert gap_verdict("piqa", full, r(0.2, 0.2), gap=g(0.1, 0.05, 0.15, 0.12, 0.06, 0.2)).endswith(
        "temperature scaling does not close it.")
    assert gap_verdict("piqa", full, r(0.2, 0.2), gap=g(0.02, -0.01, 0.05, 0.0, -0.02, 0.02)).endswith(
        "no gap was detectable before scaling.")
    bound = gap_verdict("obqa", r(0.1, 0.1, 148.4, True), r(0.3, 0.1, 148.4, True))
    assert bound.endswith("T of the full and quantized model is at the search bound: its confidence carries almost "
                          "no information on this task, and the best single temperature flattens it towards uniform.")
    assert "T of the quantized model is at" in gap_verdict("obqa", r(0.1, 0.1), r(0.3, 0.1, 148.4, True))


def test_recalibrate_task_record_and_bound_flag():
    flat = mc_frame([[0.0, -0.001]] * 20 + [[-0.001, 0.0]] * 20, [0, 1] * 20)  # confidence says nothing
    res = recalibrate_task(flat, n_boot=5, n_folds=4, seed=1)
    assert res["temperature_at_bound"] and res["n_folds"] == 4 and len(res["fold_temperatures"]) == 4
    assert set(res["before"]) == set(res["after"]) == {"acc", "nll", "ece", "ace", "smece", "brier"}
    sharp = _tempered(n=400, temperature=2.0, seed=5)
    res = recalibrate_task(sharp, n_boot=0)
    assert not res["temperature_at_bound"] and res["temperature"] == pytest.approx(2.0, rel=0.1)
    assert len(res["temperature_ci"]) == 2 and np.isnan(res["temperature_ci"]).all()  # no bootstrap asked for


def _ragged(n=300, seed=1, scale=3.0):
    """Questions with 2, 3 or 4 choices; gold drawn from the softmax of ll / 2 (over-confident by 2)."""
    rng = np.random.default_rng(seed)
    ll, gold = [], []
    for i in range(n):
        z = rng.normal(size=2 + i % 3) * scale
        p = np.exp(z / 2) / np.exp(z / 2).sum()
        ll.append(list(z - 5.0))
        gold.append(int(rng.choice(len(z), p=p)))
    return ll, gold


def _grid_temperature(ll_rows, gold, weights=None):
    """Independent T fit: the NLL (scipy's logsumexp over -inf-padded rows) on a log-spaced grid,
    then a finer grid around its minimum."""
    from scipy.special import logsumexp

    table = np.full((len(ll_rows), max(map(len, ll_rows))), -np.inf)
    for i, r in enumerate(ll_rows):
        table[i, :len(r)] = r
    w = np.ones(len(gold)) if weights is None else np.asarray(weights, float)
    rows, gold = np.arange(len(gold)), np.asarray(gold)

    def nll(t):
        z = table / t
        return float((w * (logsumexp(z, axis=1) - z[rows, gold])).sum() / w.sum())

    best = 1.0
    for grid in (np.exp(np.linspace(-3, 3, 601)), None):
        grid = grid if grid is not None else best * np.exp(np.linspace(-0.012, 0.012, 241))
        best = float(grid[int(np.argmin([nll(t) for t in grid]))])
    return best


def test_scaled_log_probs_equal_scipy_on_ragged_rows_and_huge_logits():
    from scipy.special import log_softmax

    from quantconf.analysis.recalibration import scaled_log_probs

    rows = [[-1e4, -1e4 - 3.0], [-2.0, -1.0, -7.5], [5e3, 5e3 + 1.0, 5e3 - 2.0, 5e3 + 0.5]]
    ll, mask = np.zeros((3, 4)), np.zeros((3, 4), bool)
    for i, r in enumerate(rows):
        ll[i, :len(r)], mask[i, :len(r)] = r, True
    for t in (0.5, 1.0, 3.0):
        out = scaled_log_probs(ll, mask, t)
        for i, r in enumerate(rows):
            np.testing.assert_allclose(out[i, :len(r)], log_softmax(np.array(r) / t), rtol=1e-12, atol=1e-12)
            assert np.all(out[i, len(r):] == -np.inf)


def test_fit_temperature_equals_a_grid_search_and_weights_are_counts():
    ll_rows, gold = _ragged()
    lp, mask = choice_log_probs(ll_rows)
    lp = np.where(mask, lp, 0.0)
    g = np.array(gold)
    t = fit_temperature(lp, mask, g)
    assert t == pytest.approx(_grid_temperature(ll_rows, gold), rel=2e-3)
    assert 1.5 < t < 2.6  # the data are over-confident by a factor 2
    # integer weights are the same as repeating rows
    w = np.random.default_rng(0).integers(0, 4, len(gold)).astype(float)
    rep = np.repeat(np.arange(len(gold)), w.astype(int))
    assert fit_temperature(lp, mask, g, w) == pytest.approx(fit_temperature(lp[rep], mask[rep], g[rep]), rel=1e-5)
    assert fit_temperature(lp, mask, g, w) != pytest.approx(t, rel=1e-3)


def test_fold_ids_are_balanced_and_seeded():
    from quantconf.analysis.recalibration import fold_ids

    f = fold_ids(103, 5, seed=3)
    assert sorted(np.bincount(f).tolist()) == [20, 20, 21, 21, 21]
    assert (f == fold_ids(103, 5, seed=3)).all() and not (f == fold_ids(103, 5, seed=4)).all()


def test_cross_fitting_holds_out_each_fold():
    from quantconf.analysis.recalibration import cross_fitted_log_probs, fold_ids, scaled_log_probs

    ll_rows, gold = _ragged(n=200, seed=5)
    lp, mask = choice_log_probs(ll_rows)
    lp = np.where(mask, lp, 0.0)
    g = np.array(gold)
    out, temps = cross_fitted_log_probs(lp, mask, g, n_folds=4, seed=7)
    folds = fold_ids(len(g), 4, 7)
    assert np.isfinite(out[mask]).all() and (out[~mask] == -np.inf).all()
    for f, t in enumerate(temps):
        held = folds == f
        rows = [r for r, h in zip(ll_rows, held) if not h]
        assert t == pytest.approx(_grid_temperature(rows, [x for x, h in zip(gold, held) if not h]), rel=2e-3)
        np.testing.assert_allclose(out[held], scaled_log_probs(lp[held], mask[held], t))


def test_recalibrate_task_on_ragged_rows_against_hand_references():
    ll_rows, gold = _ragged(n=240, seed=2)
    df = mc_frame(ll_rows, gold)
    res = recalibrate_task(df, n_folds=2, n_boot=30, seed=1)
    assert res["n"] == 240 and res["n_folds"] == 2 and len(res["fold_temperatures"]) == 2
    # "before": the metrics of the plain softmax of the log-likelihoods
    probs = np.zeros((240, 4))
    for i, r in enumerate(ll_rows):
        probs[i, :len(r)] = np.exp(np.array(r) - np.logaddexp.reduce(r))
    mask = np.zeros((240, 4), bool)
    for i, r in enumerate(ll_rows):
        mask[i, :len(r)] = True
    ref = calibration_metrics(probs, np.array(gold), mask, 15)
    for m in ("acc", "nll", "ece", "brier"):
        assert res["before"][m] == pytest.approx(ref[m], rel=1e-9)
    assert res["after"]["acc"] == res["before"]["acc"] and res["after"]["nll"] < res["before"]["nll"]
    lo, hi = res["temperature_ci"]
    assert lo < res["temperature"] < hi  # bootstrap refits with resampling weights spread T
    again = recalibrate_task(df, n_folds=2, n_boot=30, seed=1)
    assert again["temperature_ci"] == res["temperature_ci"] and again["after"] == res["after"]
    assert recalibrate_task(df, n_folds=2, n_boot=30, seed=2)["temperature_ci"] != res["temperature_ci"]
    assert all(np.isnan(recalibrate_task(df, n_folds=2, n_boot=0)["temperature_ci"]))


@pytest.mark.parametrize("n_folds", [1, 241])
def test_recalibrate_task_n_folds_bounds(n_folds):
    df = mc_frame(*_ragged(n=240, seed=2))
    with pytest.raises(QuantconfError, match=r"n_folds must be between 2 and the number of questions \(240\)"):
        recalibrate_task(df, n_folds=n_folds, n_boot=0)
    assert recalibrate_task(df, n_folds=240, n_boot=0)["n_folds"] == 240


def test_temperature_near_the_lower_bound_is_not_flagged():
    """An under-confident model (log-likelihoods / 100) is fitted T ~ 0.01: inside the bounds."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(400, 3)) * 3
    gold = [int(np.argmax(r + rng.gumbel(size=3))) for r in z]
    res = recalibrate_task(mc_frame((z / 100).tolist(), gold), n_boot=0)
    assert 0.008 < res["temperature"] < 0.013  # above the bound exp(-5) = 0.0067, below twice it
    assert res["temperature_at_bound"] is False


@pytest.mark.parametrize("before_q, after_q, verdict", [
    (1e-12, 0.0, "smaller after scaling"),        # a gap of exactly 1e-12 is a gap
    (0.2, 0.2, "not smaller after scaling"),      # exactly equal: not smaller
    (0.2, 0.15, "smaller after scaling"),
    (0.0, 0.3, "there was no gap to close"),
])
def test_gap_verdict_boundaries(before_q, after_q, verdict):
    from quantconf.analysis.recalibration import gap_verdict

    full = {"before": {"ece": 0.0}, "after": {"ece": 0.0}, "temperature": 1.0}
    quant = {"before": {"ece": before_q}, "after": {"ece": after_q}, "temperature": 2.0}
    line = gap_verdict("piqa", full, quant)
    assert verdict in line and line.startswith("piqa: quantized minus full ECE")
    assert "search bound" not in line
    quant["temperature_at_bound"] = True
    assert "T of the quantized model is at the search bound" in gap_verdict("piqa", full, quant)


@pytest.mark.parametrize("before_ci, after_ci, verdict", [
    ([0.0, 0.1], [0.0, 0.1], "no gap was detectable before scaling"),   # an interval ending at 0 contains it
    ([0.01, 0.1], [-0.1, 0.0], "no gap is detectable"),
    ([0.01, 0.1], [0.001, 0.05], "narrows it, but a gap remains"),
    ([-0.1, -0.01], [-0.3, -0.2], "does not close it"),
])
def test_gap_verdict_with_intervals_boundaries(before_ci, after_ci, verdict):
    from quantconf.analysis.recalibration import gap_verdict

    r = {"before": {"ece": 0.0}, "after": {"ece": 0.0}, "temperature": 1.0}
    gap = {"before": {"estimate": float(np.mean(before_ci)), "ci": before_ci},
           "after": {"estimate": float(np.mean(after_ci)), "ci": after_ci}}
    assert gap_verdict("piqa", r, r, gap=gap).endswith(verdict + ".")


def test_gap_interval_against_a_direct_resampling():
    from quantconf.analysis.metrics import calibration_metrics
    from quantconf.analysis.recalibration import choice_log_probs, cross_fitted_log_probs, gap_interval

    rng = np.random.default_rng(4)
    z = rng.normal(size=(300, 3)) * 2
    gold = [int(np.argmax(r + rng.gumbel(size=3))) for r in z]
    full, quant = mc_frame(z.tolist(), gold), mc_frame((z * 3.0).tolist(), gold)  # quantized: over-confident
    res = gap_interval(full, quant, n_boot=300, seed=1)
    ece = {}
    for name, df in (("full", full), ("quant", quant)):
        ll, mask = choice_log_probs(list(df["loglik"]))
        after, _ = cross_fitted_log_probs(ll, mask, np.array(gold), 5, 1)
        ece[name] = calibration_metrics(np.exp(after), np.array(gold), mask)["ece"]
    assert res["after"]["estimate"] == pytest.approx(ece["quant"] - ece["full"])
    assert res["before"]["estimate"] > 0 and res["before"]["ci"][0] > 0  # the over-confident model: a real gap
    lo, hi = res["after"]["ci"]
    assert lo < res["after"]["estimate"] < hi and hi - lo < res["before"]["ci"][1] - res["before"]["ci"][0] + 0.1


def test_recalibrate_task_defaults_bins_folds_seed_and_bootstrap_against_references():
    from quantconf.analysis.recalibration import cross_fitted_log_probs, recalibrate_task as rt

    ll_rows, gold = _ragged(n=150, seed=9)
    df = mc_frame(ll_rows, gold)
    assert rt(df) == rt(df, n_folds=5, n_boot=200, seed=0, n_bins=15)  # the documented defaults
    lp, mask = choice_log_probs(ll_rows)
    lp = np.where(mask, lp, 0.0)
    g = np.array(gold)
    assert cross_fitted_log_probs(lp, mask, g)[1] == cross_fitted_log_probs(lp, mask, g, 5, 0)[1]
    res = rt(df, n_folds=3, n_boot=20, seed=4, n_bins=5)
    # "after": the held-out probabilities of the cross-fit with this seed, at 5 bins, ragged mask honoured
    after_lp, _ = cross_fitted_log_probs(lp, mask, g, 3, 4)
    ref = calibration_metrics(np.where(mask, np.exp(after_lp), 0.0), g, mask, 5, log_probs=after_lp)
    for m in ("acc", "nll", "ece", "ace", "smece", "brier"):
        assert res["after"][m] == pytest.approx(ref[m], rel=1e-9), m
    probs = np.where(mask, np.exp(lp), 0.0)
    before = calibration_metrics(probs, g, mask, 5)
    assert res["before"]["ace"] == pytest.approx(before["ace"], rel=1e-9)
    assert res["before"]["ece"] == pytest.approx(before["ece"], rel=1e-9)
    # the bootstrap: questions resampled with numpy's default_rng(seed), all n of them eligible
    rng = np.random.default_rng(4)
    boot = [_grid_temperature(ll_rows, gold, np.bincount(rng.integers(0, 150, 150), minlength=150))
            for _ in range(20)]
    lo, hi = res["temperature_ci"]
    assert lo == pytest.approx(np.percentile(boot, 2.5), rel=3e-3) and hi == pytest.approx(np.percentile(boot, 97.5), rel=3e-3)


def test_recalibrate_task_keeps_underflowing_gold_probabilities_finite_and_errors_name_the_parameter():
    ll = [[0.0, -900.0], [-1.0, -2.0], [-2.0, -1.0], [-0.5, -3.0]] * 10
    gold = [1, 0, 1, 0] * 10
    res = recalibrate_task(mc_frame(ll, gold), n_folds=2, n_boot=0)
    assert np.isfinite(res["before"]["nll"]) and res["before"]["nll"] > 900 / 4 * 0.9
    with pytest.raises(QuantconfError, match="^temperature scaling needs one gold answer per question"):
        recalibrate_task(mc_frame([[0.0, -1.0]] * 3, [[0], [1], [0]]), n_boot=0)
    with pytest.raises(QuantconfError) as e:
        recalibrate_task(mc_frame(ll, gold), n_folds=1, n_boot=0)
    assert e.value.param == "n_folds"


def test_temperature_at_the_lower_bound_is_flagged():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(300, 3)) * 3
    gold = [int(np.argmax(r)) for r in z]  # the model is always right, but 1e6 times too unsure
    res = recalibrate_task(mc_frame((z / 1e6).tolist(), gold), n_boot=0)
    assert res["temperature"] == pytest.approx(np.exp(-5.0), rel=1e-3) and res["temperature_at_bound"] is True


def test_gap_interval_simulation_false_positive_rate_and_power(capsys):
    """The temperature-scaling verdict reads the gap intervals: under an exchangeable null (full and
    quantized are two equally noisy copies of one model: the same ECE in expectation) the before- and
    after-scaling intervals exclude 0 at about the nominal 5%; an over-confident quantized model
    (logits x2.5) is found before scaling and not after."""
    from quantconf.analysis.recalibration import gap_interval

    def frame(ll, gold):
        n = len(ll)
        return pd.DataFrame({"doc_id": range(n), "task": "t", "choices": [list("abcd")] * n, "gold": gold,
                             "loglik": [list(r) for r in ll], "n_tokens": [[1] * 4] * n, "n_chars": [[1] * 4] * n,
                             "n_bytes": [[1] * 4] * n, "is_greedy": [[False] * 4] * n})

    rng = np.random.default_rng(0)
    studies, null_before, null_after, found_before, closed_after = 60, 0, 0, 0, 0
    for s in range(studies):
        z = rng.normal(size=(200, 4)) * 1.5
        gold = [int(rng.choice(4, p=np.exp(r) / np.exp(r).sum())) for r in z]
        f, q = z + rng.normal(size=z.shape) * 0.7, z + rng.normal(size=z.shape) * 0.7
        g = gap_interval(frame(f, gold), frame(q, gold), n_boot=100, seed=s)
        null_before += not g["before"]["ci"][0] <= 0 <= g["before"]["ci"][1]
        null_after += not g["after"]["ci"][0] <= 0 <= g["after"]["ci"][1]
        if s < 20:
            h = gap_interval(frame(f, gold), frame(q * 2.5, gold), n_boot=100, seed=s)
            found_before += h["before"]["ci"][0] > 0
            closed_after += h["after"]["ci"][0] <= 0 <= h["after"]["ci"][1]
    with capsys.disabled():
        print(f"\ngap intervals: null rejects {null_before / studies:.3f} before, {null_after / studies:.3f} after "
              f"scaling; over-confident model found before scaling {found_before / 20:.2f}, no gap after "
              f"{closed_after / 20:.2f}")
    bound = 0.05 + 2.5 * np.sqrt(0.05 * 0.95 / studies)
    assert null_before / studies <= bound and null_after / studies <= bound
    assert found_before / 20 >= 0.8 and closed_after / 20 >= 0.7


def test_recalibrate_skips_generation_and_multi_true_tasks_and_says_why(tmp_path, capsys):
    """recalibrate on a generation dir, a mixed dir and a generation pair was KeyError 'gold': the choice tasks
    are scaled, the others listed as skipped with the reason; a dir with nothing to scale is one line, exit 2."""
    from test_generation_analysis import gen_frame

    from quantconf.cli import main
    from quantconf.predictions import write_predictions

    for d, temperature in (("full", 2.0), ("quant", 3.0)):
        write_predictions(_tempered(n=300, temperature=temperature), tmp_path / d / "t.parquet")
        write_predictions(gen_frame(["1", "2", "3"] * 10, [1, 0, 1] * 10, task="g"), tmp_path / d / "g.parquet")
        write_predictions(mc_frame([[0.0, -1.0, -2.0]] * 8, [[0, 1]] * 8, task="mc2"), tmp_path / d / "mc2.parquet")
    res = qc.recalibrate(tmp_path / "quant", n_boot=0)
    assert list(res["g"]) == ["skipped"] and "generation task" in res["g"]["skipped"]
    assert "several true answers" in res["mc2"]["skipped"] and res["t"]["temperature"] > 2
    assert res["t"] == qc.recalibrate(qc.read_predictions(tmp_path / "quant")["t"], n_boot=0)
    assert main(["recalibrate", str(tmp_path / "full"), str(tmp_path / "quant"), "--bootstrap", "5"]) == 0
    out = capsys.readouterr().out
    assert out.count("skipped: a generation task") == 2 and out.count("skipped: several true answers") == 2
    assert "quantized minus full ECE" in out
    # only generations: nothing to scale, one line
    write_predictions(gen_frame(["1"] * 6, [1] * 6, task="g"), tmp_path / "gen" / "g.parquet")
    write_predictions(gen_frame(["2"] * 6, [0] * 6, task="g"), tmp_path / "gen2" / "g.parquet")
    assert main(["recalibrate", str(tmp_path / "gen"), str(tmp_path / "gen2")]) == 2
    err = capsys.readouterr().err
    assert "no task here can be temperature-scaled: g: a generation task" in err and "Traceback" not in err
    with pytest.raises(QuantconfError, match="cannot temperature-scale this task: a generation task"):
        qc.recalibrate(gen_frame(["1"] * 6, [1] * 6))
    # a choice task in one dir, generations under its name in the other: no gap to judge, said
    write_predictions(gen_frame(["1"] * 300, [1] * 300, task="t"), tmp_path / "genq" / "t.parquet")
    write_predictions(_tempered(n=300, temperature=2.0).assign(task="u"), tmp_path / "genq" / "u.parquet")
    assert main(["recalibrate", str(tmp_path / "full"), str(tmp_path / "genq"), "--bootstrap", "2"]) == 2
    assert "share no temperature-scaled task" in capsys.readouterr().err


def test_recalibrate_cli_json_is_the_api_with_the_gap(tmp_path, capsys):
    """The gap intervals were made in cli.py (and missing from --json): now `qc.recalibrate(QUANT, full=FULL)`
    returns them and the verdict, and the CLI prints exactly that."""
    import json

    from quantconf.cli import main
    from quantconf.predictions import write_predictions

    for d, temperature in (("full", 2.0), ("quant", 3.0)):
        write_predictions(_tempered(n=300, temperature=temperature), tmp_path / d / "t.parquet")
    full, quant = str(tmp_path / "full"), str(tmp_path / "quant")
    assert main(["recalibrate", full, quant, "--bootstrap", "8", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    api = {full: qc.recalibrate(full, n_boot=8), quant: qc.recalibrate(quant, n_boot=8, full=full)}
    assert shown == json.loads(json.dumps(api, default=float))
    gap = shown[quant]["t"]["gap"]
    assert set(gap) >= {"before", "after"} and "verdict" in shown[quant]["t"] and "gap" not in shown[full]["t"]
    assert main(["recalibrate", full, quant, "--bootstrap", "8"]) == 0
    assert f"{quant}: {shown[quant]['t']['verdict']}" in capsys.readouterr().out
