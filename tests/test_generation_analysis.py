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
def test_delta_acc_interval_excludes_zero_at_most_at_its_level_under_the_null(n, p_disc, pi):
    """Null: quantization changes which prompts are right but not how many (pi = 1/2). The exact
    interval must exclude 0 at most 5% of the time: also with few flips, where a percentile bootstrap
    of 4 one-way flips in 24 prompts excluded 0 (McNemar p = 0.125)."""
    from quantconf.analysis.generation import paired_accuracy_interval

    rng = np.random.default_rng(11)
    b, c = simulate_flips(rng, n, p_disc, pi, 4000)
    misses = [not (lo <= 0 <= hi) for lo, hi in (paired_accuracy_interval(x, y, n) for x, y in zip(b, c))]
    rate = float(np.mean(misses))
    print(f"n={n} discordance {p_disc}: delta_acc 95% interval excludes 0 in {rate:.3f} of null simulations")
    assert rate <= 0.055
    assert paired_accuracy_interval(4, 0, 24)[1] > 0  # the case a bootstrap got wrong


@pytest.mark.parametrize("n, p_disc, pi", [(200, 0.10, 0.2), (120, 0.4, 0.35), (30, 0.3, 0.9), (817, 0.5, 0.45)])
def test_delta_acc_interval_covers_the_true_difference(n, p_disc, pi):
    from quantconf.analysis.generation import paired_accuracy_interval

    rng = np.random.default_rng(5)
    truth = p_disc * (2 * pi - 1)
    b, c = simulate_flips(rng, n, p_disc, pi, 4000)
    covered = np.mean([lo <= truth <= hi for lo, hi in (paired_accuracy_interval(x, y, n) for x, y in zip(b, c))])
    print(f"n={n}: coverage of the true delta_acc {truth:+.3f}: {covered:.3f}")
    assert covered >= 0.95


def test_delta_acc_interval_never_contradicts_mcnemar():
    from scipy.stats import binomtest

    from quantconf.analysis.generation import paired_accuracy_interval

    for b in range(0, 15):
        for c in range(0, 15):
            if b + c == 0:
                continue
            lo, hi = paired_accuracy_interval(b, c, 50)
            if lo > 0 or hi < 0:  # excludes 0 only when exact McNemar rejects at alpha / 2
                assert binomtest(b, b + c, 0.5).pvalue < 0.025, (b, c)
            assert lo <= (c - b) / 50 <= hi


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
