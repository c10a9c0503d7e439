"""analysis/generation.py: calibration of generations and full-vs-quantized comparison, against hand
computations, scikit-learn, rouge_score and scipy; a simulation of the paired interval's coverage."""

import math

import numpy as np
import pandas as pd
import pytest

from quantconf.analysis.generation import (compare_generations, generation_metrics, measure_metrics,
                                           normalise_answer, rouge_l)
from quantconf.errors import QuantconfError


def gen_frame(texts, correct, p_true=None, mean_logprob=None, task="g", primary="exact_match", doc_ids=None):
    n = len(texts)
    nan = [float("nan")] * n
    mean_logprob = nan if mean_logprob is None else mean_logprob
    return pd.DataFrame({
        "doc_id": list(doc_ids if doc_ids is not None else range(n)), "task": task,
        "context": [f"prompt {i}" for i in range(n)], "generation": list(texts),
        "token_ids": [[1]] * n, "token_logprobs": [[v] for v in mean_logprob], "primary_metric": primary,
        "correct": [float(c) for c in correct], primary: [float(c) for c in correct],
        "sequence_logprob": mean_logprob, "mean_logprob": mean_logprob,
        "min_token_prob": [math.exp(v) for v in mean_logprob], "mean_entropy": nan,
        "p_true": nan if p_true is None else list(p_true)})


def test_binary_metrics_equal_hand_computations_and_sklearn():
    from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

    rng = np.random.default_rng(3)
    conf = rng.uniform(0.05, 0.95, 200)
    y = (rng.uniform(size=200) < conf ** 1.5).astype(float)
    m = measure_metrics(conf, y, n_bins=10, n_boot=0)
    assert m["acc"] == pytest.approx(y.mean())
    assert m["brier"] == pytest.approx(brier_score_loss(y, conf))
    assert m["nll"] == pytest.approx(log_loss(y, conf))
    assert m["auroc"] == pytest.approx(roc_auc_score(y, conf))
    ece = 0.0
    for b in range(10):  # equal-width bins by hand
        s = (np.minimum((conf * 10).astype(int), 9) == b)
        if s.any():
            ece += s.mean() * abs(y[s].mean() - conf[s].mean())
    assert m["ece"] == pytest.approx(ece)


def test_generation_metrics_use_the_chosen_correctness_and_skip_missing_measures():
    df = gen_frame(["1", "2", "3", "4"], [1, 0, 1, 0], p_true=[0.9, 0.2, 0.8, 0.3])
    df["rouge1_acc"] = [0.0, 0.0, 1.0, 1.0]
    m = generation_metrics(df, n_boot=0)
    assert (m["correctness"], m["acc"], m["confidence_measure"]) == ("exact_match", 0.5, "p_true")
    assert m["auroc"] == 1.0 and m["measures"]["p_true"]["n"] == 4
    assert m["measures"]["mean_token_prob"]["n"] == 0  # no model: said, not invented
    other = generation_metrics(df, n_boot=0, correctness="rouge1_acc")
    assert other["correctness"] == "rouge1_acc" and other["auroc"] == 0.5
    with pytest.raises(QuantconfError, match="not a column"):
        generation_metrics(df, n_boot=0, correctness="bleu_acc")
    df["bleu_max"] = [3.0, 1.0, 0.0, 2.0]
    with pytest.raises(QuantconfError, match="must be 0 or 1"):
        generation_metrics(df, n_boot=0, correctness="bleu_max")


def test_rouge_l_equals_rouge_score():
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    pairs = [("The cat sat on the mat.", "the cat is on a mat"), ("I have no comment.", "No comment."),
             ("Paris", "London"), ("a b c d e", "e d c b a"), ("It's 42!", "it is 42"), ("x", "x")]
    for a, b in pairs:
        assert rouge_l(a, b) == pytest.approx(scorer.score(a, b)["rougeL"].fmeasure)
    assert rouge_l("", "") == 1.0 and rouge_l("", "x") == 0.0


def test_comparison_counts_flips_changes_and_mcnemar_by_hand():
    from scipy.stats import binomtest

    full = gen_frame([" 5", "7", "Yes", "no", "12", "3"], [1, 1, 1, 0, 0, 1], p_true=[.9, .8, .7, .6, .5, .4])
    quant = gen_frame(["5", "8", "yes", "no", "12", "4"], [1, 0, 1, 0, 1, 0], p_true=[.8, .8, .9, .5, .6, .3])
    c = compare_generations(full, quant, n_boot=0, n_conf_bins=2)
    assert (c["n"], c["full_acc"], c["quant_acc"]) == (6, 4 / 6, 3 / 6)
    assert c["delta_acc"] == pytest.approx(-1 / 6)
    assert c["answer_changed"] == pytest.approx(4 / 6)  # " 5"/"5", "7"/"8", "Yes"/"yes", "3"/"4"
    assert c["answer_changed_normalised"] == pytest.approx(2 / 6)
    assert (c["flips_correct_to_wrong"], c["flips_wrong_to_correct"]) == (2, 1)
    assert c["p_mcnemar"] == pytest.approx(binomtest(2, 3, 0.5).pvalue)
    assert c["delta_mean_p_true"] == pytest.approx(np.mean([.8, .8, .9, .5, .6, .3]) - np.mean([.9, .8, .7, .6, .5, .4]))
    assert [b["n"] for b in c["by_confidence_bin"]] == [3, 3]
    # the less confident half (docs 3, 4, 5: p_true .6, .5, .4) changed one answer; the other half all three
    assert [b["answer_changed_rate"] for b in c["by_confidence_bin"]] == pytest.approx([1 / 3, 1.0])
    for key in ("n", "full_acc", "quant_acc", "delta_acc", "answer_changed", "flips_correct_to_wrong",
                "flips_wrong_to_correct", "p_mcnemar"):
        assert key in c


def test_comparison_pairs_by_doc_id_and_refuses_different_prompts():
    full = gen_frame(["a", "b", "c"], [1, 0, 1])
    quant = gen_frame(["c", "a"], [1, 1], doc_ids=[2, 0])
    quant["context"] = ["prompt 2", "prompt 0"]
    c = compare_generations(full, quant, n_boot=0)
    assert c["n"] == 2 and c["answer_changed"] == 0.0
    quant["context"] = ["another prompt", "prompt 0"]
    with pytest.raises(QuantconfError, match="different prompts"):
        compare_generations(full, quant, n_boot=0)


def test_normalised_answers_ignore_case_and_whitespace_only():
    assert normalise_answer("  The  Answer\n") == normalise_answer("the answer")
    assert normalise_answer("the answer.") != normalise_answer("the answer")


def simulate_flips(rng, n, p_discordant, p_quant_right_given_discordant, sims):
    """(b, c) counts of simulated paired prompts: each prompt discordant with p_discordant, then right
    only in the quantized model with the given probability."""
    d = rng.binomial(n, p_discordant, sims)
    c = rng.binomial(d, p_quant_right_given_discordant)
    return d - c, c


@pytest.mark.parametrize("n, p_disc, pi", [(120, 0.48, 0.5), (24, 0.15, 0.5), (200, 0.02, 0.5)])
def test_delta_acc_interval_excludes_zero_at_its_level_under_the_null(n, p_disc, pi):
    """Null: quantization changes which prompts are right but not how many (pi = 1/2). Bonett-Price's
    interval excludes 0 about 5% of the time; with few flips it is cautious (a percentile bootstrap of 4
    one-way flips in 24 prompts excluded 0 while McNemar's p was 0.125)."""
    from quantconf.analysis.metrics import paired_difference_interval

    rng = np.random.default_rng(11)
    b, c = simulate_flips(rng, n, p_disc, pi, 4000)
    misses = [not (lo <= 0 <= hi) for lo, hi in (paired_difference_interval(x, y, n) for x, y in zip(b, c))]
    rate = float(np.mean(misses))
    print(f"n={n} discordance {p_disc}: delta_acc 95% interval excludes 0 in {rate:.3f} of null simulations")
    assert rate <= 0.05 + 2.5 * np.sqrt(0.05 * 0.95 / 4000)
    assert paired_difference_interval(4, 0, 24)[0] < 0  # the case a bootstrap got wrong


def test_generation_and_choice_comparisons_give_delta_acc_one_interval():
    """One estimand, one interval: the same paired correctness gives the same delta_acc interval whether
    the task writes answers or picks choices."""
    from quantconf.analysis.metrics import paired_difference_interval
    from quantconf.analysis.paired import compare_task

    rng = np.random.default_rng(4)
    n = 80
    yf, yq = rng.random(n) < 0.6, rng.random(n) < 0.5
    gen_c = compare_generations(gen_frame(["a"] * n, yf), gen_frame(["b"] * n, yq), n_boot=20)

    def choice_frame(correct):
        ll = [[0.0, -1.0] if ok else [-1.0, 0.0] for ok in correct]
        return pd.DataFrame({"doc_id": range(n), "task": "t", "choices": [["x", "y"]] * n, "gold": 0, "loglik": ll,
                             "n_tokens": [[1, 1]] * n, "n_chars": [[1, 1]] * n, "n_bytes": [[1, 1]] * n,
                             "is_greedy": [[False, False]] * n})

    mc = compare_task(choice_frame(yf), choice_frame(yq), n_boot=20)
    b, c = int(np.sum(yf & ~yq)), int(np.sum(~yf & yq))
    assert gen_c["ci"]["delta_acc"] == pytest.approx(mc["ci"]["delta_acc"])
    assert mc["ci"]["delta_acc"] == pytest.approx(paired_difference_interval(b, c, n))


def test_generation_noise_floor_separates_a_systematic_shift_from_replicate_scatter():
    """Replicates that each flip a random tenth of prompts (scatter) vs replicates that all lose the
    same prompts (a systematic shift): the systematic share's test rejects only the second."""
    from quantconf.analysis.noise_floor import generation_noise_floor

    rng = np.random.default_rng(2)
    n = 150
    yf = rng.uniform(size=n) < 0.6
    pt = np.clip(0.3 + 0.4 * yf + rng.normal(0, 0.1, n), 0.01, 0.99)
    full = gen_frame(["a"] * n, yf, p_true=pt)

    def replicate(y, seed):
        r = np.random.default_rng(seed)
        return gen_frame([f"r{seed}"] * n, y, p_true=np.clip(pt + r.normal(0, 0.02, n), 0.01, 0.99))

    scatter = [replicate(yf ^ (np.random.default_rng(10 + s).uniform(size=n) < 0.1), s) for s in range(4)]
    shifted = yf.copy()
    shifted[np.flatnonzero(yf)[:20]] = False  # the same 20 right answers lost in every replicate
    systematic = [replicate(shifted, s) for s in range(4)]
    a = generation_noise_floor(full, scatter, n_boot=200, task="g")
    b = generation_noise_floor(full, systematic, n_boot=200, task="g")
    assert a["systematic_share"]["p"] > 0.05 and b["systematic_share"]["p"] < 0.01
    assert b["delta_acc"]["estimate"] == pytest.approx(-20 / n)
    assert b["delta_acc"]["ci"][1] < 0 and "delta_ece" in b and a["instability"]["unstable_share"] == 1.0
    assert b["effect"]["flip_rate_mean"] == pytest.approx(20 / n)


def _flip_study(rng, n, r, kind):
    """Full-model correctness and R replicates' correctness. random: every replicate flips a uniformly random
    10% of prompts; stratified: 15% of the full model's right answers and 5% of its wrong ones, at random
    (a pooled permutation would call that overlap); same40: 40 prompts lost in each replicate with
    probability .8, plus random 5% flips elsewhere."""
    yf = rng.random(n) < 0.6
    reps = []
    for _ in range(r):
        if kind == "random":
            flip = rng.random(n) < 0.10
        elif kind == "stratified":
            flip = rng.random(n) < np.where(yf, 0.15, 0.05)
        else:
            flip = rng.random(n) < 0.05
            lost = np.flatnonzero(yf)[:40]
            flip[lost] = rng.random(lost.size) < 0.8
        reps.append(yf ^ flip)
    return yf, reps


@pytest.mark.parametrize("n, r", [(150, 3), (150, 4), (150, 5), (400, 5), (817, 3), (817, 5)])
def test_flip_overlap_holds_its_level_under_random_flips(n, r, capsys):
    """The old systematic share on 0/1 correctness rejected random flips in 31% (n 150, R 4) to 100% (n 817)
    of studies; the stratified permutation test holds alpha under random and stratum-dependent flips."""
    from quantconf.analysis.noise_floor import flip_overlap

    rng = np.random.default_rng(n * 10 + r)
    studies = 200
    rates, shares = {}, {}
    for kind in ("random", "stratified"):
        ps, est = [], []
        for s in range(studies):
            yf, reps = _flip_study(rng, n, r, kind)
            o = flip_overlap(yf, reps, n_boot=20, seed=s, n_perm=199)
            ps.append(o["systematic_share"]["p"]), est.append(o["systematic_share"]["estimate"])
        rates[kind], shares[kind] = float(np.mean(np.array(ps) < 0.05)), float(np.nanmean(est))
    with capsys.disabled():
        print(f"\nflip overlap, n={n} R={r}, {studies} studies: P(reject) random {rates['random']:.3f} "
              f"(share {shares['random']:+.3f}), stratified {rates['stratified']:.3f} (share {shares['stratified']:+.3f})")
    bound = 0.05 + 2.5 * np.sqrt(0.05 * 0.95 / studies)
    assert rates["random"] <= bound and rates["stratified"] <= bound
    assert abs(shares["random"]) < 0.03


@pytest.mark.parametrize("n, r", [(150, 3), (400, 5), (817, 4)])
def test_flip_overlap_finds_the_same_prompts_lost_in_most_replicates(n, r, capsys):
    from quantconf.analysis.noise_floor import flip_overlap

    rng = np.random.default_rng(7 + n + r)
    ps, est = [], []
    for s in range(100):
        yf, reps = _flip_study(rng, n, r, "same40")
        o = flip_overlap(yf, reps, n_boot=20, seed=s, n_perm=199)
        ps.append(o["systematic_share"]["p"]), est.append(o["systematic_share"]["estimate"])
    power = float(np.mean(np.array(ps) < 0.05))
    with capsys.disabled():
        print(f"\nflip overlap, same 40 prompts lost (p .8 each), n={n} R={r}: power {power:.3f}, "
              f"mean share {np.mean(est):.3f}")
    assert power >= 0.95 and np.mean(est) > 0.3


def test_flip_overlap_equals_hand_counts():
    from quantconf.analysis.noise_floor import flip_overlap

    yf = np.array([1, 1, 1, 1, 0, 0])
    reps = [np.array([0, 0, 1, 1, 0, 1]), np.array([0, 1, 1, 1, 1, 0]), np.array([1, 0, 1, 1, 0, 0])]
    o = flip_overlap(yf, reps, n_boot=50, n_perm=500)
    # flips per prompt: [2, 2, 0, 0, 1, 1] -> co-flips 1 + 1 = 2; stratum right (4 prompts): replicate flip
    # counts 2, 1, 1 -> expected co-flips (2*1 + 2*1 + 1*1) / 4 = 1.25, most min(2,1)+min(2,1)+min(1,1) = 3;
    # stratum wrong (2): counts 1, 1, 0 -> expected 1*1/2 = .5, most 1. So E0 = 1.75, max = 4.
    assert o["coflips"] == 2 and o["expected_coflips_by_chance"] == pytest.approx(1.75)
    assert o["systematic_share"]["estimate"] == pytest.approx((2 - 1.75) / (4 - 1.75))
    assert o["systematic"]["estimate"] == pytest.approx((2 - 1.75) / (6 * 3))
    assert 0 < o["systematic_share"]["p"] <= 1


def test_generation_floor_delta_acc_uses_every_prompt_without_p_true():
    """Hand-built frames without P(True): delta_acc is -0.092, not 0.0000 (item 8 of the audit)."""
    from quantconf.analysis.noise_floor import METHOD, generation_noise_floor

    n = 250
    yf = np.zeros(n, bool)
    yf[:150] = True
    y = yf.copy()
    y[:23] = False  # -23 / 250 = -0.092 in every replicate
    nf = generation_noise_floor(gen_frame(["a"] * n, yf), [gen_frame([f"r{i}"] * n, y) for i in range(3)],
                                n_boot=50, task="g")
    assert nf["delta_acc"]["estimate"] == pytest.approx(-0.092) and nf["n"] == n
    assert "pigeonhole" not in METHOD and "pigeonhole" not in nf["method"]


def test_correctness_column_missing_on_one_task_names_that_task(tmp_path, capsys):
    from quantconf.cli import main
    from quantconf.predictions import write_predictions

    write_predictions(gen_frame(["1", "2"] * 10, [1, 0] * 10, task="a").assign(judge_acc=[1.0, 1.0] * 10),
                      tmp_path / "a.parquet")
    write_predictions(gen_frame(["1", "2"] * 10, [1, 0] * 10, task="b"), tmp_path / "b.parquet")
    assert main(["metrics", str(tmp_path), "--correctness", "judge_acc", "--bootstrap", "0"]) == 2
    err = capsys.readouterr().err
    assert "--correctness 'judge_acc' is not a column of task b's predictions" in err and "Traceback" not in err
