"""paired.py: full vs quantized question by question, against scipy and counts done by hand."""

import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import jensenshannon

from quantconf import QuantconfError
from quantconf.paired import compare_predictions, compare_task, js_distance, kl_divergence, per_sample_frame


def _df(ll, gold):
    n = len(ll)
    return pd.DataFrame({"doc_id": range(n), "task": "t", "choices": [["a", "b", "c"][:len(r)] for r in ll],
                         "gold": gold, "loglik": ll, "n_tokens": [[1] * len(r) for r in ll],
                         "n_chars": [[1] * len(r) for r in ll], "n_bytes": [[1] * len(r) for r in ll],
                         "is_greedy": [[False] * len(r) for r in ll]})


def test_js_and_kl_match_scipy():
    rng = np.random.default_rng(0)
    p, q = rng.dirichlet([1] * 4, 50), rng.dirichlet([1] * 4, 50)
    assert js_distance(p, q) == pytest.approx(jensenshannon(p, q, base=2, axis=1), abs=1e-12)
    from scipy.stats import entropy

    assert kl_divergence(p, q) == pytest.approx(entropy(p, q, axis=1), abs=1e-12)


def test_compare_counts_flips_and_bins():
    rng = np.random.default_rng(1)
    n = 200
    full = rng.normal(size=(n, 3)) * 2
    quant = full + rng.normal(size=(n, 3)) * 0.8
    gold = list(rng.integers(0, 3, n))
    f, q = _df(full.tolist(), gold), _df(quant.tolist(), gold)
    c = compare_task(f, q, n_boot=100)
    assert sum(b["n"] for b in c["by_confidence_bin"]) == n and len(c["by_confidence_bin"]) == 5
    lo, hi = c["ci"]["delta_acc"]
    assert lo <= c["delta_acc"] <= hi
    same = compare_task(f, f, n_boot=0)
    assert same["js_mean"] == 0 and same["delta_nll"] == 0 and same["p_mcnemar"] == 1.0


def test_compare_refuses_mismatched_choices():
    f = _df([[0.0, -1.0]], [0])
    q = f.copy()
    q["choices"] = [["x", "y"]]
    with pytest.raises(QuantconfError, match="choices differ"):
        compare_task(f, q)


def test_flips_and_bins_against_hand_counts():
    # 6 questions, 2 choices, gold always 0. Full model correct on 0-3, quantized on 0, 1, 4:
    # correct->wrong = questions 2, 3 (2), wrong->correct = question 4 (1), predictions changed: 2, 3, 4.
    full = [[-0.1, -3.0], [-0.5, -1.0], [-0.2, -2.0], [-0.9, -1.0], [-2.0, -0.1], [-3.0, -0.2]]
    quant = [[-0.1, -2.0], [-0.4, -1.0], [-2.0, -0.2], [-1.0, -0.9], [-0.1, -2.0], [-3.0, -0.3]]
    gold = [0] * 6
    c = compare_task(_df(full, gold), _df(quant, gold), n_boot=0, n_conf_bins=2)
    assert c["flips_correct_to_wrong"] == 2 and c["flips_wrong_to_correct"] == 1 and c["pred_changed"] == 3
    assert c["full_acc"] == pytest.approx(4 / 6) and c["quant_acc"] == pytest.approx(3 / 6)
    assert c["delta_acc"] == pytest.approx(-1 / 6)
    # exact McNemar: 2 vs 1 discordant pairs -> two-sided binomial p = P(X<=1 | n=3) * 2 = 1.0
    assert c["p_mcnemar"] == pytest.approx(1.0)
    # full-model confidence (softmax of two log-likelihoods) per question, by hand
    conf = [1 / (1 + np.exp(-abs(a - b))) for a, b in full]
    order = np.argsort(conf, kind="stable")  # equal-mass bins: the 3 least confident, then the rest
    low, high = set(order[:3].tolist()), set(order[3:].tolist())
    flips = {2, 3, 4}
    b0, b1 = c["by_confidence_bin"]
    assert (b0["n"], b1["n"]) == (3, 3)
    assert b0["flip_rate"] == pytest.approx(len(flips & low) / 3)
    assert b1["flip_rate"] == pytest.approx(len(flips & high) / 3)
    assert b0["conf_lo"] == pytest.approx(min(conf[i] for i in low))
    assert b1["conf_hi"] == pytest.approx(max(conf[i] for i in high))


def test_per_sample_frame_and_compare_predictions():
    full, quant, gold = [[-0.1, -3.0], [-3.0, -0.1]], [[-3.0, -0.1], [-3.0, -0.1]], [0, 1]
    frame = per_sample_frame(_df(full, gold), _df(quant, gold), "t")
    p0 = 1 / (1 + np.exp(-2.9))
    assert frame["full_p_true"].tolist() == pytest.approx([p0, p0])
    assert frame["quant_p_true"].tolist() == pytest.approx([1 - p0, p0])
    assert frame["full_correct"].tolist() == [True, True] and frame["quant_correct"].tolist() == [False, True]
    assert frame["js"][1] == pytest.approx(0, abs=1e-12) and frame["js"][0] > 0.5
    res = compare_predictions({"t": _df(full, gold)}, {"t": _df(quant, gold), "other": _df(full, gold)}, n_boot=0)
    assert list(res) == ["t"] and res["t"]["flips_correct_to_wrong"] == 1
    with pytest.raises(QuantconfError, match="share no task"):
        compare_predictions({"a": _df(full, gold)}, {"b": _df(full, gold)})
