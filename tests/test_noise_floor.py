"""noise_floor.py: effects with intervals over questions *and* replicates, a systematic-movement
test that holds its level when replicates scatter around the full model, hand computations of every
statistic, and simulations with a known truth showing each test's type-I error and power."""

import itertools
import json

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon

from quantconf.analysis.noise_floor import (adjust_floors, align, delta_effects, holm, noise_floor,
                                   systematic_movement, two_way_effect, verdict)
from quantconf.quantizers import QuantConfig

CHOICES = ["a", "b", "c", "d"]


def _df(ll, gold):
    n, k = np.shape(ll)
    return pd.DataFrame({"doc_id": range(n), "task": "t", "choices": [CHOICES[:k]] * n, "gold": list(gold),
                         "loglik": [list(r) for r in ll], "n_tokens": [[1] * k] * n, "n_chars": [[1] * k] * n,
                         "n_bytes": [[1] * k] * n, "is_greedy": [[False] * k] * n})


def _softmax(ll):
    e = np.exp(ll - ll.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


# --------------------------------------------------------------------------- hand computations


def test_descriptive_statistics_equal_hand_computation():
    rng = np.random.default_rng(0)
    n = 60
    full = rng.normal(size=(n, 3)) * 2
    gold = rng.integers(0, 3, n)
    reps = [full + rng.normal(size=(n, 3)) * s for s in (0.8, 1.0, 1.2)]
    nf = noise_floor(_df(full, gold), [_df(r, gold) for r in reps], n_bins=5, n_conf_bins=3, n_boot=50)
    pf, pr = _softmax(full), [_softmax(r) for r in reps]
    correct_f, correct_r = pf.argmax(1) == gold, [p.argmax(1) == gold for p in pr]
    d_acc = [c.mean() - correct_f.mean() for c in correct_r]
    assert nf["replicates"] == 3 and nf["pairs"] == 3 and nf["n"] == n
    assert nf["delta_acc"]["estimate"] == pytest.approx(np.mean(d_acc))
    assert nf["delta_acc"]["per_replicate"] == pytest.approx(d_acc)
    assert nf["effect"]["delta_acc_mean"] == pytest.approx(np.mean(d_acc))
    assert nf["noise"]["delta_acc_sd"] == pytest.approx(np.std(d_acc, ddof=1))
    pairs = list(itertools.combinations(range(3), 2))
    js_pair = [jensenshannon(pr[i], pr[j], base=2, axis=1) for i, j in pairs]
    assert nf["noise"]["js_mean"] == pytest.approx(np.mean([x.mean() for x in js_pair]))
    assert nf["js"]["to_full_mean"] == pytest.approx(np.mean([jensenshannon(pf, p, base=2, axis=1).mean() for p in pr]))
    flips = [np.mean(correct_r[i] != correct_r[j]) for i, j in pairs]
    assert nf["noise"]["flip_rate"] == pytest.approx(np.mean(flips))
    preds = np.stack([p.argmax(1) for p in pr])
    unstable = (preds != preds[0]).any(0)
    assert nf["instability"]["unstable_share"] == pytest.approx(unstable.mean())
    assert sum(b["n"] for b in nf["instability"]["by_full_confidence"]) == n


def test_systematic_movement_equals_its_definition_in_probability_space():
    rng = np.random.default_rng(1)
    n, r = 40, 4
    full = rng.normal(size=(n, 4))
    gold = rng.integers(0, 4, n)
    reps = [full + rng.normal(size=(n, 4)) * 0.7 + 0.5 for _ in range(r)]
    f, q = _softmax(full), [_softmax(x) for x in reps]
    total = np.mean([((f - x) ** 2).sum(1).mean() for x in q])
    between = np.mean([((q[i] - q[j]) ** 2).sum(1).mean() for i in range(r) for j in range(r) if i != j])
    m = systematic_movement(align(_df(full, gold), [_df(x, gold) for x in reps]), n_boot=100)
    assert m["total_divergence"] == pytest.approx(total)
    assert m["systematic"]["estimate"] == pytest.approx(total - between / 2)
    assert m["systematic_share"]["estimate"] == pytest.approx((total - between / 2) / total)
    # the same estimate as ||F - mean of the replicates||^2 minus the bias of that plug-in (tr Sigma / R)
    mu = np.mean(q, axis=0)
    cov_trace = np.mean([np.sum((x - mu) ** 2, 1) for x in q], axis=0) * r / (r - 1)
    assert m["systematic"]["estimate"] == pytest.approx(np.mean(((f - mu) ** 2).sum(1) - cov_trace / r))
    # a constant added to one question's log-likelihoods is the same distribution: nothing changes
    shifted = [x + rng.normal(size=(n, 1)) * 5 for x in reps]
    m2 = systematic_movement(align(_df(full, gold), [_df(x, gold) for x in shifted]), n_boot=100)
    assert m2["systematic"]["estimate"] == pytest.approx(m["systematic"]["estimate"])
    # the jackknife over replicates by hand
    loo = []
    for i in range(r):
        keep = [q[j] for j in range(r) if j != i]
        t = np.mean([((f - x) ** 2).sum(1).mean() for x in keep])
        b = np.mean([((keep[a] - keep[c]) ** 2).sum(1).mean() for a in range(r - 1) for c in range(r - 1) if a != c])
        loo.append(t - b / 2)
    loo = np.array(loo)
    assert m["systematic"]["se_replicates"] ** 2 == pytest.approx((r - 1) / r * ((loo - loo.mean()) ** 2).sum())
    assert "probabilit" in m["space"]


def test_two_way_effect_combines_questions_and_replicates_with_satterthwaite_df():
    from scipy.stats import t

    draws = np.random.default_rng(0).normal(0.1, 0.02, 5000)
    v_q, v_r = draws.var(ddof=1), 0.03 ** 2
    e = two_way_effect(0.1, draws, v_r, 500, 5, alpha=0.05)
    se = np.sqrt(v_q + v_r)
    df = (v_q + v_r) ** 2 / (v_q ** 2 / 499 + v_r ** 2 / 4)
    assert e["se"] == pytest.approx(se) and e["df"] == pytest.approx(df)
    assert e["ci"] == pytest.approx([0.1 - t.ppf(0.975, df) * se, 0.1 + t.ppf(0.975, df) * se])
    assert e["p"] == pytest.approx(2 * t.sf(0.1 / se, df))
    # replicate spread dominating: the interval is a t over replicates (df -> R - 1)
    wide = two_way_effect(0.1, draws * 0 + 0.1, 0.05 ** 2, 500, 5)
    assert wide["df"] == pytest.approx(4) and wide["ci"][1] - 0.1 == pytest.approx(t.ppf(0.975, 4) * 0.05)


def test_question_variance_matches_the_analytic_variance_of_a_mean():
    rng = np.random.default_rng(2)
    n = 300
    full = rng.normal(size=(n, 4)) * 2
    gold = rng.integers(0, 4, n)
    reps = [full + rng.normal(size=(n, 4)) for _ in range(3)]
    a = align(_df(full, gold), [_df(x, gold) for x in reps])
    e = delta_effects(a, ["acc", "nll"], n_boot=4000, seed=3)
    cf = (_softmax(full).argmax(1) == gold).astype(float)
    per_q = np.mean([(_softmax(x).argmax(1) == gold) - cf for x in reps], axis=0)
    assert e["delta_acc"]["se_questions"] == pytest.approx(per_q.std(ddof=1) / np.sqrt(n), rel=0.06)
    d = e["delta_acc"]["per_replicate"]
    assert e["delta_acc"]["se_replicates"] == pytest.approx(np.std(d, ddof=1) / np.sqrt(3))


def test_zero_spread_is_undefined_never_p_zero():
    rng = np.random.default_rng(3)
    full = rng.normal(size=(50, 3))
    gold = rng.integers(0, 3, 50)
    same = [full + 1e-9 * (i + 1) * (np.arange(3) == 0) for i in range(3)]  # distinct runs, same answers
    nf = noise_floor(_df(full, gold), [_df(x, gold) for x in same], n_boot=50)
    assert nf["delta_acc"]["p"] is None and "no test" in nf["verdict"] and "p = 0" not in nf["verdict"]
    # identical replicate deltas but questions that change: the question variance makes a real test
    moved = full.copy()
    moved[:10, 0] += 10
    nf = noise_floor(_df(full, gold), [_df(moved + 1e-9 * i, gold) for i in range(3)], n_boot=200)
    assert nf["delta_acc"]["se_replicates"] == 0 and nf["delta_acc"]["p"] is not None
    assert 0 < nf["delta_acc"]["p"] <= 1


def test_identical_replicates_are_one_run_given_twice_and_refused(tmp_path, capsys):
    """`quantconf noise-floor FULL REP REP` with one run given twice counted it as two calibration draws
    (systematic share 1.00 [1.00, 1.00]); now it is refused in one line and nothing is written."""
    from quantconf.cli import main
    from quantconf.errors import QuantconfError
    from quantconf.predictions import write_predictions

    rng = np.random.default_rng(9)
    full, reps = _simulated_study("loss", rng, n=80, r=2)
    with pytest.raises(QuantconfError, match="replicates 1 and 2 have identical predictions"):
        noise_floor(full, [reps[0], reps[0].copy()], n_boot=20)
    dirs = []
    for i, df in enumerate([full, reps[0]]):
        (tmp_path / str(i)).mkdir()
        write_predictions(df, tmp_path / str(i) / "t.parquet")
        dirs.append(str(tmp_path / str(i)))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main(["noise-floor", dirs[0], dirs[1], dirs[1], "--bootstrap", "20"]) == 2
    err = capsys.readouterr().err
    assert "identical predictions" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_a_replicate_holding_generations_under_a_choice_task_name_is_refused(tmp_path, capsys):
    """It was a KeyError 'choices'; now one line naming the task and the replicate, as compare refuses it."""
    from test_generation_analysis import gen_frame

    from quantconf.cli import main
    from quantconf.predictions import write_predictions

    rng = np.random.default_rng(9)
    full, reps = _simulated_study("loss", rng, n=30, r=2)
    task = str(full["task"].iloc[0])
    for name, df in (("full", full), ("r1", reps[0]), ("r2", gen_frame(["1"] * 30, [1] * 30, task=task))):
        write_predictions(df, tmp_path / name / "t.parquet")
    assert main(["noise-floor", str(tmp_path / "full"), str(tmp_path / "r1"), str(tmp_path / "r2"),
                 "--bootstrap", "20"]) == 2
    err = capsys.readouterr().err
    assert f"{task}: the full model's predictions hold choice scores, replicate 2's hold generations" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_refuses_one_replicate_and_bad_options():
    from quantconf.errors import QuantconfError

    full = np.zeros((5, 2))
    with pytest.raises(QuantconfError, match="at least two replicates"):
        noise_floor(_df(full, [0] * 5), [_df(full, [0] * 5)])
    with pytest.raises(QuantconfError, match="alpha"):
        noise_floor(_df(full, [0] * 5), [_df(full, [0] * 5)] * 2, alpha=1.5)
    with pytest.raises(QuantconfError, match="n_boot"):
        noise_floor(_df(full, [0] * 5), [_df(full, [0] * 5)] * 2, n_boot=0)


def test_holm_equals_statsmodels():
    from statsmodels.stats.multitest import multipletests

    p = [0.01, 0.04, 0.03, 0.2, 0.005, 0.5]
    assert holm(p) == pytest.approx(list(multipletests(p, method="holm")[1]))
    assert holm([0.01, None, 0.04]) == pytest.approx([0.02, None, 0.04])


def test_verdict_words_match_the_test_and_say_holm():
    e = {"estimate": -0.044, "ci": [-0.084, -0.004], "p": 0.03, "se": 0.02, "df": 40.0}
    nf = {"task": "piqa", "n": 200, "replicates": 5, "alpha": 0.05, "delta_acc": dict(e),
          "delta_ece": {"estimate": 0.01, "ci": [-0.01, 0.03], "p": 0.001},
          "delta_l2_debiased": {"estimate": 0.0002, "ci": [-0.0001, 0.0005], "p": 0.3},
          "systematic_share": {"estimate": 0.65, "ci": [0.4, 0.9], "p": 0.0004}}
    text = verdict(nf)
    assert text.startswith("quantization lowers accuracy on piqa: -4.4 points (95% CI per comparison [-8.4, -0.4]), "
                           "p = .030 (200 questions × 5 calibration draws)")
    # the calibration claim rests on the debiased estimator, not on the plug-in ECE (p .001 here)
    assert "no calibration error (debiased squared L2, Kumar et al. 2019) change on piqa detectable" in text
    assert "ECE" not in text and "p < .001" in text
    assert "beyond the quantizer's own run-to-run scatter" in text and "Caution" not in text
    floors = [nf, {**nf, "task": "arc", "delta_acc": {**e, "p": 0.02}}]
    adjust_floors(floors)
    assert floors[0]["delta_acc"]["p_holm"] == pytest.approx(0.04) and floors[0]["delta_acc"]["holm_tests"] == 2
    assert "Holm-adjusted over 2 tasks" in floors[0]["verdict"]
    # every reported p is adjusted, not only accuracy's; the adjusted interval is Bonferroni-simultaneous
    assert floors[0]["delta_ece"]["p_holm"] == pytest.approx(0.002)
    assert floors[0]["delta_l2_debiased"]["p_holm"] == pytest.approx(0.6)  # Holm of .3 and .3
    from scipy.stats import t

    half = t.ppf(1 - 0.05 / 4, 40.0) * 0.02
    assert floors[0]["delta_acc"]["ci_adjusted"] == pytest.approx([-0.044 - half, -0.044 + half])
    floors[0]["delta_acc"]["p"] = floors[1]["delta_acc"]["p"] = 0.04
    adjust_floors(floors)
    assert "no accuracy change on piqa detectable" in floors[0]["verdict"]  # .08 after Holm
    adjust_floors(floors)  # idempotent
    assert floors[0]["delta_acc"]["p_holm"] == pytest.approx(0.08)


def test_holm_family_is_one_configuration_over_its_tasks():
    """A study's floors of two configurations: each is adjusted over its own tasks, as `qc.noise_floor`
    and `quantconf noise-floor` adjust one configuration's tasks, so the same data get the same p."""
    def floor(model, variant, task, p):
        return {"model": model, "variant": variant, "task": task, "n": 200, "replicates": 5, "alpha": 0.05,
                "delta_acc": {"estimate": -0.01, "ci": [-0.02, 0.0], "p": p, "se": 0.005, "df": 30.0},
                "systematic_share": {"estimate": 0.3, "ci": [0.1, 0.5], "p": p, "se": 0.1, "df": 30.0}}

    study = [floor("m", "gptq", "a", 0.01), floor("m", "gptq", "b", 0.04), floor("m", "awq", "a", 0.001),
             floor("m", "awq", "b", 0.2), floor("m", "awq", "c", 0.3)]
    adjust_floors(study)
    alone = [floor(None, None, "a", 0.01), floor(None, None, "b", 0.04)]  # what the API and CLI see
    adjust_floors(alone)
    assert [f["delta_acc"]["p_holm"] for f in study[:2]] == pytest.approx([f["delta_acc"]["p_holm"] for f in alone])
    assert [f["delta_acc"]["p_holm"] for f in study[:2]] == pytest.approx([0.02, 0.04])
    assert [f["systematic_share"]["holm_tests"] for f in study] == [2, 2, 3, 3, 3]
    assert study[2]["delta_acc"]["p_holm"] == pytest.approx(0.003)


# --------------------------------------------------------------------------- simulations with a known truth
#
# Four kinds of truth, 200 questions x 5 replicates (examples/noise_floor.yaml's shape), 4 choices:
#   hetero    no population change of accuracy, but a quarter of the questions react to quantization,
#             each in its own direction (correct -> wrong or wrong -> correct, balanced in expectation)
#   loss      the same, with correct -> wrong more likely: a real accuracy loss
#   scatter   replicates scatter around the full model (zero-mean noise in log-probability space,
#             per question and shared within a replicate): no systematic movement
#   shift     a fixed shift of the answer distribution on 30% of the questions, plus the scatter


def _full_model(rng, n: int, k: int, a0: float = 0.6):
    """Gold answers and a full model right on a share a0 of the questions: (gold, log-likelihoods, correct, top)."""
    gold = rng.integers(0, k, n)
    full = rng.normal(0, 1.0, (n, k))
    correct = rng.random(n) < a0
    top = np.where(correct, gold, (gold + rng.integers(1, k, n)) % k)
    full[np.arange(n), top] = full.max(1) + rng.exponential(1.0, n) + 0.05
    return gold, full, correct, top


def _simulated_study(kind: str, rng, n: int = 200, r: int = 5, k: int = 4):
    a0 = 0.6
    gold, full, correct, top = _full_model(rng, n, k, a0)
    reps = []
    if kind in ("hetero", "loss"):
        react = rng.random(n) < 0.25
        # expected flips balance: P(correct) * rate(c->w) = P(wrong) * rate(w->c)
        rate = np.where(correct, 0.6 * (1 - a0), 0.6 * a0) * np.where(correct, 1.6, 0.4) ** (kind == "loss")
        for _ in range(r):
            q = full + rng.normal(0, 0.05, full.shape)
            flip = react & (rng.random(n) < rate)
            new_top = np.where(flip, np.where(correct, (gold + rng.integers(1, k, n)) % k, gold), top)
            q[np.arange(n), new_top] = q.max(1) + 0.3 + rng.exponential(0.5, n)
            reps.append(q)
    else:
        spread = rng.gamma(2, 0.25, n)[:, None]
        shared = rng.normal(0, 1, (n, k)) * 0.3
        shift = np.zeros((n, k))
        if kind == "shift":
            some = rng.random(n) < 0.3
            shift[some] = rng.normal(0, 1.0, (some.sum(), k))
        reps = [full + shift + rng.normal() * shared + rng.normal(0, 1, (n, k)) * spread for _ in range(r)]
    return _df(full, gold), [_df(q, gold) for q in reps]


def _rejection_rates(kind: str, studies: int = 300, alpha: float = 0.05) -> dict:
    rng = np.random.default_rng({"hetero": 11, "loss": 12, "scatter": 13, "shift": 14}[kind])
    acc = sysm = 0
    for s in range(studies):
        full, reps = _simulated_study(kind, rng)
        a = align(full, reps)
        p_acc = delta_effects(a, ["acc"], n_boot=200, seed=s)["delta_acc"]["p"]
        p_sys = systematic_movement(a, n_boot=200, seed=s)["systematic"]["p"]
        acc += p_acc is not None and p_acc < alpha
        sysm += p_sys is not None and p_sys < alpha
    return {"delta_acc": acc / studies, "systematic": sysm / studies}


def _bound(alpha=0.05, studies=300):  # alpha + 2.5 binomial standard errors of the simulated rate
    return alpha + 2.5 * np.sqrt(alpha * (1 - alpha) / studies)


def test_simulation_type_one_error_and_power(capsys):
    rates = {kind: _rejection_rates(kind) for kind in ("hetero", "loss", "scatter", "shift")}
    with capsys.disabled():
        print("\nnoise-floor simulations (300 studies each, 200 questions x 5 replicates, alpha .05): "
              + "; ".join(f"{k}: P(reject Δacc=0) {v['delta_acc']:.3f}, P(reject no systematic) {v['systematic']:.3f}"
                          for k, v in rates.items()))
    # the null of each test holds its level ...
    assert rates["hetero"]["delta_acc"] <= _bound()      # no population change despite question heterogeneity
    assert rates["scatter"]["systematic"] <= _bound()    # replicates scatter around the full model
    # ... and each finds what is there
    assert rates["loss"]["delta_acc"] >= 0.4             # a 3.4-point loss on 200 questions
    assert rates["shift"]["systematic"] >= 0.9
    assert rates["hetero"]["systematic"] >= 0.9          # per-question reactions are systematic movement


# --------------------------------------------------------------------------- truths that fooled the clr geometry
#
# Six choices per question: four plausible, two all-but-excluded (p ~ 1e-7).
#   dirichlet        replicates scattered around the full model in probability: Q ~ Dirichlet(30 p_F), E Q = p_F
#   tail_shift       a consistent shift of the two excluded choices only (+3 nats: still ~1e-6), small scatter
#   plausible_shift  a consistent shift of the plausible choices (sd .25 nats per question), hidden under
#                    large scatter of the excluded ones (sd 4 nats)


def _log_softmax(z):
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def _tail_study(kind: str, rng, n: int = 300, r: int = 5):
    base = np.concatenate([rng.normal(0, 1.5, (n, 4)), np.full((n, 2), -16.0)], axis=1)
    gold = rng.integers(0, 4, n)
    full = _log_softmax(base)
    reps = []
    if kind == "dirichlet":
        pf = np.exp(full)
        for _ in range(r):
            q = np.array([rng.dirichlet(30 * p) for p in pf])
            reps.append(np.log(np.clip(q, 1e-300, None)))
    elif kind == "tail_shift":
        for _ in range(r):
            z = base + rng.normal(0, 0.3, base.shape) * np.r_[1, 1, 1, 1, 0, 0]
            z[:, 4:] += 3.0 + rng.normal(0, 0.1, (n, 2))
            reps.append(_log_softmax(z))
    elif kind == "plausible_shift":
        shift = rng.normal(0, 0.25, (n, 4))
        for _ in range(r):
            z = base.copy()
            z[:, :4] += shift + rng.normal(0, 0.1, (n, 4))
            z[:, 4:] += rng.normal(0, 4, (n, 2))
            reps.append(_log_softmax(z))
    return _df(full, gold), [_df(q, gold) for q in reps]


def test_systematic_share_is_not_fooled_by_excluded_choices_or_probability_scatter(capsys):
    studies = 150
    rates, shares = {}, {}
    for i, kind in enumerate(("dirichlet", "tail_shift", "plausible_shift")):
        rng = np.random.default_rng(40 + i)
        found, est = 0, []
        for s in range(studies):
            full, reps = _tail_study(kind, rng)
            m = systematic_movement(align(full, reps), n_boot=100, seed=s)
            found += m["systematic"]["p"] is not None and m["systematic"]["p"] < 0.05
            est.append(m["systematic_share"]["estimate"])
        rates[kind], shares[kind] = found / studies, float(np.mean(est))
    with capsys.disabled():
        print(f"\nsystematic share, {studies} studies each (300 questions x 5 replicates, 6 choices, alpha .05): "
              + "; ".join(f"{k}: P(detected) {rates[k]:.3f}, mean share {shares[k]:.3f}" for k in rates)
              + " (the clr geometry: 0.22-0.42, 1.00, 0.04)")
    assert rates["dirichlet"] <= _bound(studies=studies)   # E Q = p_F: the null holds
    assert rates["tail_shift"] <= _bound(studies=studies)  # only choices nobody picks moved
    assert shares["tail_shift"] < 0.05
    assert rates["plausible_shift"] >= 0.9                 # the answer distribution moved


def _drawn_direction_study(rng, n: int = 200, r: int = 3, k: int = 4, sd: float = 0.6):
    """No population change of accuracy, but each calibration draw pushes the reacting quarter of the
    questions one way or the other (u ~ N(0, sd) per replicate: c->w rate x (1 + u), w->c x (1 - u))."""
    a0 = 0.6
    gold, full, correct, top = _full_model(rng, n, k, a0)
    react = rng.random(n) < 0.25
    reps = []
    for _ in range(r):
        u = np.clip(rng.normal(0, sd), -0.95, 0.95)
        rate = np.where(correct, 0.6 * (1 - a0) * (1 + u), 0.6 * a0 * (1 - u))
        q = full + rng.normal(0, 0.05, full.shape)
        flip = react & (rng.random(n) < rate)
        new_top = np.where(flip, np.where(correct, (gold + rng.integers(1, k, n)) % k, gold), top)
        q[np.arange(n), new_top] = q.max(1) + 0.3 + rng.exponential(0.5, n)
        reps.append(q)
    return _df(full, gold), [_df(q, gold) for q in reps]


def test_two_way_delta_acc_test_is_liberal_below_five_replicates(capsys):
    """Why `warnings` names designs below 5 replicates: calibration draws that each shift accuracy (no
    shift in their population) make the two-way test reject a true null too often with 2-3 replicates."""
    studies, rates = 300, {}
    for r in (2, 3, 5):
        rng = np.random.default_rng(20 + r)
        rejects = 0
        for s in range(studies):
            full, reps = _drawn_direction_study(rng, r=r)
            p = delta_effects(align(full, reps), ["acc"], n_boot=100, seed=s)["delta_acc"]["p"]
            rejects += p is not None and p < 0.05
        rates[r] = rejects / studies
    with capsys.disabled():
        print("\nΔacc test, calibration draws that shift accuracy each their own way, 200 questions, "
              f"{studies} studies, alpha .05: rejection " + ", ".join(f"{v:.3f} at R={r}" for r, v in rates.items()))
    assert rates[5] <= _bound(studies=studies)
    nf = noise_floor(full, reps[:3], n_boot=50)
    assert any("3 replicates" in w for w in nf["warnings"]) and "Caution: 3 replicates" in nf["verdict"]
    assert noise_floor(full, reps, n_boot=50)["warnings"] == []
    few, few_reps = _drawn_direction_study(rng, n=60, r=5)
    assert any("60 questions" in w for w in noise_floor(few, few_reps, n_boot=50)["warnings"])


def _calibrated_study(rng, n: int, r: int, sharp_full: float, sharp_quant: float, k: int = 4):
    """Perfectly calibrated models: the top choice has probability c and is right with probability c.
    The full model and the replicates differ only in sharpness (the spread of c)."""
    def model(sharp):
        c = np.clip(rng.beta(sharp * 2.5, sharp * 1.0, n), 1 / k + 1e-3, 1 - 1e-6)
        right = rng.random(n) < c
        rest = (1 - c) / (k - 1)
        lp = np.log(np.repeat(rest[:, None], k, 1))
        top = np.where(right, 0, rng.integers(1, k, n))
        lp[np.arange(n), top] = np.log(c)
        return lp
    gold = np.zeros(n, int)
    return _df(model(sharp_full), gold), [_df(model(sharp_quant), gold) for _ in range(r)]


def test_calibration_claims_use_the_debiased_error_not_the_plug_in_ece(capsys):
    """Two perfectly calibrated models of different sharpness: the binned plug-in ECE differs by about a
    point, so a claim "calibration changed" resting on it would be wrong; the debiased L2 error's delta
    holds its level. (The ECE interval is the binned plug-in's: it rarely covers a calibrated model's 0.)"""
    from quantconf.analysis.metrics import bootstrap_metrics, probs_from_predictions

    rng = np.random.default_rng(31)
    studies, rejects_debiased, rejects_ece, d_ece = 150, 0, 0, []
    for s in range(studies):
        full, reps = _calibrated_study(rng, 400, 5, 1.0, 4.0)
        e = delta_effects(align(full, reps), ["ece", "l2_debiased"], n_boot=100, seed=s)
        rejects_debiased += e["delta_l2_debiased"]["p"] is not None and e["delta_l2_debiased"]["p"] < 0.05
        rejects_ece += e["delta_ece"]["p"] is not None and e["delta_ece"]["p"] < 0.05
        d_ece.append(e["delta_ece"]["estimate"])
    covers = 0
    for s in range(40):
        df, _ = _calibrated_study(rng, 400, 1, 1.0, 1.0)
        probs, mask = probs_from_predictions(df)
        ci = bootstrap_metrics(probs, np.zeros(400, int), mask, n_boot=100, seed=s)["ece"]
        covers += ci[0] <= 0 <= ci[1]
    with capsys.disabled():
        print(f"\ncalibrated models of different sharpness (400 questions x 5 replicates, {studies} studies): "
              f"mean plug-in ΔECE {np.mean(d_ece) * 100:+.2f} points, ΔECE test rejects {rejects_ece / studies:.3f}, "
              f"Δ debiased L2 test rejects {rejects_debiased / studies:.3f}; plug-in ECE 95% CI covers a calibrated "
              f"model's 0 in {covers}/40")
    assert rejects_debiased / studies <= _bound(studies=studies)
    assert np.mean(d_ece) < -0.002 and covers <= 4  # the sharper models' smaller plug-in bias; a CI that misses 0


def test_instability_auroc_is_read_against_equal_noise(capsys):
    """Noise of one size on every question already makes the least confident questions unstable; the
    reference says so (p not small), while noise aimed at the uncertain questions exceeds it."""
    from scipy.stats import mannwhitneyu

    from quantconf.analysis.noise_floor import instability_reference

    def study(rng, targeted):
        n, k = 300, 4
        full = rng.normal(0, 1.5, (n, k))
        gold = rng.integers(0, k, n)
        lp = _log_softmax(full)
        conf = np.exp(lp).max(1)
        sd = np.where(conf < np.median(conf), 1.2, 0.05) if targeted else np.full(n, 0.6)
        reps = [full + rng.normal(0, 1, (n, k)) * sd[:, None] for _ in range(5)]
        return align(_df(full, gold), [_df(q, gold) for q in reps])

    rng = np.random.default_rng(51)
    out = {}
    for targeted in (False, True):
        ps, aurocs, refs = [], [], []
        for _ in range(60):
            a = study(rng, targeted)
            preds = np.stack([p.argmax(1) for p in a.probs[1:]])
            unstable = (preds != preds[0]).any(0)
            conf = a.probs[0].max(1)
            auroc = mannwhitneyu(conf[~unstable], conf[unstable]).statistic / (unstable.sum() * (~unstable).sum())
            ref = instability_reference(a.log_probs[0], a.mask, unstable.mean(), auroc, 5, sims=100)
            ps.append(ref["p"]), aurocs.append(auroc), refs.append(ref["mean"])
        out[targeted] = (np.mean(np.array(ps) < 0.05), np.mean(aurocs), np.mean(refs))
    with capsys.disabled():
        print("\ninstability AUROC vs its equal-noise reference (60 studies each): "
              f"equal noise: AUROC {out[False][1]:.2f}, reference {out[False][2]:.2f}, P(p < .05) {out[False][0]:.3f}; "
              f"noise aimed at uncertain questions: AUROC {out[True][1]:.2f}, reference {out[True][2]:.2f}, "
              f"P(p < .05) {out[True][0]:.3f}")
    assert out[False][1] > 0.8                       # the raw AUROC alone looks like "targeting"
    assert out[False][0] <= _bound(studies=60)       # the reference does not
    assert out[True][0] >= 0.8


def test_the_old_replicate_t_test_fails_the_same_null():
    """The test this module replaced (a t-test over the 5 replicate deltas) says "real effect" far too
    often under the heterogeneity null; kept as a regression witness of why."""
    from scipy.stats import ttest_1samp

    rng = np.random.default_rng(11)
    rejects = 0
    for _ in range(100):
        full, reps = _simulated_study("hetero", rng)
        d = align(full, reps)
        cf = d.probs[0].argmax(1) == d.gold
        deltas = [(p.argmax(1) == d.gold).mean() - cf.mean() for p in d.probs[1:]]
        rejects += ttest_1samp(deltas, 0).pvalue < 0.05
    assert rejects / 100 > 0.15


def test_public_api_noise_floor(tmp_path):
    import quantconf as qc
    from quantconf.predictions import write_predictions

    rng = np.random.default_rng(5)
    full, reps = _simulated_study("loss", rng, n=120, r=3)
    res = qc.noise_floor(full, reps, n_boot=100)
    for key in ("delta_acc", "delta_ece", "delta_nll", "delta_smece", "delta_brier", "delta_auroc", "systematic_share"):
        assert set(res[key]) >= {"estimate", "ci", "p"} and len(res[key]["ci"]) == 2
    assert set(res) >= {"instability", "verdict"}
    # dicts by task and directories, as qc.compare takes them
    by_task = qc.noise_floor({"t": full}, [{"t": q} for q in reps], n_boot=50)
    assert by_task["t"]["delta_acc"]["estimate"] == pytest.approx(res["delta_acc"]["estimate"])
    dirs = []
    for i, df in enumerate([full, *reps]):
        (tmp_path / str(i)).mkdir()
        write_predictions(df, tmp_path / str(i) / "t.parquet")
        dirs.append(tmp_path / str(i))
    from_dirs = qc.noise_floor(dirs[0], dirs[1:], n_boot=50)
    assert from_dirs["t"]["delta_acc"]["estimate"] == pytest.approx(res["delta_acc"]["estimate"])


def test_replicate_family_drops_only_the_seed():
    a = QuantConfig(method="gptq", calib="pydoc", seed=3)
    assert a.replicate_family() == "gptq-w4g128-pydoc" == QuantConfig(method="gptq", calib="pydoc").replicate_family()
    assert QuantConfig(method="rtn").replicate_family() == "rtn-w4g128"


def test_replicated_study_differs_per_replicate_and_resumes(tiny_model_dir, tmp_path, capsys):
    from quantconf.study import load_study, plan, run_study

    def study(n):
        return load_study(data={
            "name": "noise", "models": [str(tiny_model_dir)], "tasks": ["arithmetic"], "limit": 40, "bootstrap": 20,
            "threads": 1, "variants": [
                {"method": "gptq", "bits": 2, "group_size": 32, "n_samples": 2, "seq_len": 32, "calib": "pydoc",
                 "replicates": n},
                {"method": "rtn", "bits": 4, "group_size": 32, "replicates": n}]})

    s2 = study(2)
    assert "deterministic" in capsys.readouterr().err
    assert [v.seed for v in s2.variants if v.method == "gptq"] == [0, 1] and sum(v.method == "rtn" for v in s2.variants) == 1
    out = tmp_path / "s"
    run_study(s2, out, log=lambda m: None)
    quant = [s.path for s in plan(s2, out) if s.kind == "quantize"]
    weights = [(p / "model.safetensors").read_bytes() for p in quant[:2]]
    assert weights[0] != weights[1]  # another calibration draw, another checkpoint
    stamps = {p: (p / "quantize.json").stat().st_mtime_ns for p in quant}
    s3 = study(3)
    log = []
    run_study(s3, out, log=log.append)
    assert all((p / "quantize.json").stat().st_mtime_ns == stamps[p] for p in quant)
    # 4 quantize steps start, 3 of them find their checkpoint done: one new quantization
    assert sum("quantize" in m and "done, reusing" in m for m in log) == 3
    assert sum(m.startswith("[") and " start quantize" in m for m in log) == 4
    summary = json.loads((out / "summary.json").read_text())
    gptq = [c for c in summary["comparisons"] if c["variant"].startswith("gptq")]
    assert len(gptq) == 3 and all(c["replicates"] == 3 for c in gptq)
    for c in gptq:
        assert set(c["noise"]) >= {"js_mean", "flip_rate", "delta_acc_sd", "delta_ece_sd"}
        assert c["noise"]["js_mean"] > 0
    rtn = [c for c in summary["comparisons"] if c["variant"].startswith("rtn")]
    assert rtn[0]["replicates"] == 1 and rtn[0]["noise"]["js_mean"] is None
    (floor,) = summary["noise_floor"]
    assert floor["variant"] == "gptq-w2g32-pydoc" and len(floor["members"]) == 3
    assert set(floor["delta_acc"]) >= {"estimate", "ci", "p", "p_holm"} and "systematic_share" in floor
    assert "on arithmetic" in floor["verdict"] and "3 calibration draws" in floor["verdict"]
    # the study's numbers are the API's on the same prediction directories (one Holm family definition)
    import quantconf as qc

    evals = {s.label(): s for s in plan(s3, out) if s.kind == "eval"}
    api = qc.noise_floor(evals["full"].path, [evals[m].path for m in floor["members"]], n_boot=200, n_bins=15)
    for key in ("delta_acc", "delta_l2_debiased", "delta_nll", "systematic_share"):
        assert floor[key]["p_holm"] == pytest.approx(api["arithmetic"][key]["p_holm"])
        assert floor[key]["ci"] == pytest.approx(api["arithmetic"][key]["ci"])
    assert floor["verdict"] == api["arithmetic"]["verdict"]
    assert all("quantizer's own run-to-run noise is not in these intervals" in c["inference"] for c in rtn)
    csv = pd.read_csv(out / "summary.csv")
    assert {"replicates", "noise_js_mean", "noise_flip_rate", "noise_delta_acc_sd", "noise_delta_ece_sd",
            "nf_delta_acc", "nf_delta_acc_lo", "nf_delta_acc_hi", "nf_delta_acc_p_holm", "nf_systematic_share"} <= set(csv)
    row = csv[csv["variant"] == "gptq-w2g32-pydoc-s0"].iloc[0]
    assert row["nf_delta_acc"] == pytest.approx(floor["delta_acc"]["estimate"])
    page = (out / "report.html").read_text()
    assert "Is it quantization or noise?" in page and "between replicates" in page
    # the README findings script reads this summary as it reads examples/noise_floor.yaml's
    from test_findings import _findings

    f = _findings()
    text = f.render(f.extract(out))
    assert "| arithmetic | 40 |" in text and "systematic share" in text


def test_cli_noise_floor_on_prediction_directories(tmp_path, capsys):
    from quantconf.cli import main
    from quantconf.predictions import write_predictions

    rng = np.random.default_rng(8)
    full, reps = _simulated_study("loss", rng, n=150, r=3)
    dirs = []
    for i, df in enumerate([full, *reps]):
        for task in ("t1", "t2"):
            (tmp_path / str(i)).mkdir(exist_ok=True)
            write_predictions(df.assign(task=task), tmp_path / str(i) / f"{task}.parquet")
        dirs.append(str(tmp_path / str(i)))
    assert main(["noise-floor", *dirs, "--bootstrap", "100"]) == 0
    out = capsys.readouterr().out
    assert "== t1 (n=150, 3 replicates)" in out and "systematic_share" in out and "Holm-adjusted over 2 tasks" in out
    assert "Caution: 3 replicates" in out  # below the 5 the simulations validate
    # the CLI's numbers are the API's on one frame holding both tasks: one Holm family, one definition
    assert main(["noise-floor", *dirs, "--bootstrap", "100", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    import quantconf as qc

    both = pd.concat([full.assign(task="t1"), full.assign(task="t2")], ignore_index=True)
    reps_both = [pd.concat([q.assign(task="t1"), q.assign(task="t2")], ignore_index=True) for q in reps]
    api = qc.noise_floor(both, reps_both, n_boot=100)
    assert set(api) == {"t1", "t2"}
    for task in ("t1", "t2"):
        for key in ("delta_acc", "delta_nll", "delta_smece", "delta_l2_debiased", "systematic_share"):
            assert cli[task][key]["p_holm"] == pytest.approx(api[task][key]["p_holm"])
            assert cli[task][key]["ci_adjusted"] == pytest.approx(api[task][key]["ci_adjusted"])
            assert api[task][key]["holm_tests"] == 2
        assert cli[task]["verdict"] == api[task]["verdict"]
    assert main(["noise-floor", dirs[0], dirs[1], "--bootstrap", "50", "--json"]) == 2  # two replicates needed
    assert "at least two" in capsys.readouterr().err


def test_metrics_say_the_ece_interval_is_for_the_binned_plug_in_quantity():
    from quantconf.analysis.metrics import task_metrics

    full, _ = _calibrated_study(np.random.default_rng(3), 200, 1, 1.0, 1.0)
    m = task_metrics(full, n_boot=50)
    assert "binned plug-in" in m["ci_note"] and "l2_debiased" in m["ci_note"]
    assert "ci_note" not in task_metrics(full, n_boot=0)


def test_instability_reference_aurocs_equal_scipys_mann_whitney_per_simulation():
    """The equal-noise reference scores its simulations' AUROCs at once from the confidence ranks: each equals
    scipy's Mann-Whitney U / (n_stable n_unstable) exactly, ties and all-stable / all-unstable rows included."""
    from quantconf.analysis.noise_floor import _low_confidence_aurocs, low_confidence_auroc

    rng = np.random.default_rng(1)
    for n in (5, 60, 400):
        conf = np.round(rng.random(n), 2)  # ties
        unstable = rng.random((200, n)) < rng.random((200, 1)) * 0.5
        unstable[0], unstable[1] = False, True
        expected = np.array([low_confidence_auroc(conf, u) for u in unstable])
        assert np.array_equal(_low_confidence_aurocs(conf, unstable), expected, equal_nan=True)

