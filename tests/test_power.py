"""Power and minimum detectable effects (analysis/power.py): the planned number of questions detects the effect in
80% of simulated studies (Monte-Carlo error stated), the formula is the documented one, and the replicate term
sets a floor more questions cannot pass."""

import math

import pytest

from quantconf.analysis.power import (mde_paired_acc, plan_designs, questions_for, questions_for_se,
                                      simulate_paired_power, z_sum)


def test_formula_by_hand():
    k = (1.959964 + 0.841621) ** 2
    assert z_sum() == pytest.approx(1.959964 + 0.841621, abs=1e-5)
    assert questions_for(0.02, 0.1) == math.ceil(k * 0.1 / 0.02 ** 2)  # 1963
    assert mde_paired_acc(1963, 0.1) == pytest.approx(0.02, abs=1e-4)
    # quantizer noise: variance 1e-4 per replicate; with one replicate delta 0.02 needs k * 1e-4 < 4e-4: no
    assert questions_for(0.02, 0.1, replicate_var=1e-4, replicates=1) is None
    m3 = questions_for(0.02, 0.1, replicate_var=1e-4, replicates=3)
    assert m3 == math.ceil(k * 0.1 / (0.02 ** 2 - k * 1e-4 / 3))
    designs = plan_designs(0.02, 0.1, 1e-4, max_replicates=4)
    assert [d["questions"] is None for d in designs] == [True, False, False, False]
    assert questions_for_se(0.01, se_pilot=0.02, n_pilot=100) == math.ceil(100 * (z_sum() * 2) ** 2)


@pytest.mark.parametrize("delta,discordance", [(0.02, 0.08), (0.01, 0.05), (-0.03, 0.2)])
def test_the_planned_study_detects_the_effect_in_80_percent_of_simulations(delta, discordance):
    """Simulated with the interval `compare` reports (Bonett-Price): 2000 studies each, Monte-Carlo SE 0.9 points;
    the variance used for planning, rho_d / m, is at least the true (rho_d - delta^2) / m, so power can only err
    upwards, by less than delta^2 / rho_d."""
    m = questions_for(abs(delta), discordance)
    p_quant_only = (discordance + delta) / 2  # c - b = delta, b + c = discordance
    rate = simulate_paired_power(m, discordance - p_quant_only, p_quant_only, sims=2000, seed=1)
    mc = 3 * math.sqrt(0.8 * 0.2 / 2000)
    assert 0.8 - mc <= rate <= 0.8 + mc + delta ** 2 / discordance


def test_no_effect_is_detected_at_the_level_of_the_test():
    m = questions_for(0.02, 0.1)
    assert simulate_paired_power(m, 0.05, 0.05, sims=2000, seed=2) <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 2000)


def test_plan_reads_a_studys_discordance_and_replicate_variance(tmp_path, capsys):
    """A replicated configuration's noise floor gives the replicate variance (se_replicates^2 x R): one replicate
    or two cannot reach 2 points, three can, and the questions match the formula; the CLI prints the same plan."""
    import json

    import quantconf as qc
    from quantconf.cli import main

    comparison = {"model": "m", "variant": "rtn-s1", "task": "t", "n": 500, "flips_correct_to_wrong": 30,
                  "flips_wrong_to_correct": 20, "replicates": 3, "replicate_family": "rtn",
                  "ci": {"delta_ece": [0.0, 0.04]}}
    floor = {"model": "m", "variant": "rtn", "task": "t", "replicates": 3, "delta_acc": {"se_replicates": 0.006}}
    (tmp_path / "summary.json").write_text(json.dumps({"comparisons": [comparison], "noise_floor": [floor]}))
    p = qc.plan(tmp_path, delta=[0.02], delta_ece=0.02)
    d = p["designs"][0]
    assert d["discordance"] == pytest.approx(0.1) and d["replicate_var"] == pytest.approx(0.006 ** 2 * 3)
    by_r = {x["replicates"]: x["questions"] for x in d["acc"][0.02]}
    # k * var / R < delta^2 = 4e-4 needs R >= 3 (k = 7.85, var = 1.08e-4)
    assert by_r[1] is None and by_r[2] is None and by_r[3] == questions_for(0.02, 0.1, 0.006 ** 2 * 3, 3) > 500
    assert d["ece"][0.02] == questions_for_se(0.02, 0.04 / (2 * 1.959964), 500)
    assert main(["plan", str(tmp_path), "--delta", "0.02"]) == 0
    assert f"{by_r[3]} questions with 3 replicate(s)" in capsys.readouterr().out


def test_plan_from_one_tasks_two_frames_reads_their_discordance():
    """A pair of frames (one task) plans from their own comparison: discordance = flips / n."""
    import numpy as np

    import quantconf as qc
    from quantconf.kinds.choice import MULTIPLE_CHOICE

    rng = np.random.default_rng(0)
    gold = rng.integers(0, 2, 100)
    rows = lambda ll: MULTIPLE_CHOICE.frame([{"doc_id": i, "task": "t", "context": "q", "choices": ["a", "b"],  # noqa: E731
                                              "gold": int(g), "loglik": list(map(float, ll[i])), "n_tokens": [1, 1],
                                              "n_chars": [1, 1], "n_bytes": [1, 1], "is_greedy": [False, False]}
                                             for i, g in enumerate(gold)])
    a, b = rng.normal(size=(100, 2)), rng.normal(size=(100, 2))
    d = qc.plan((rows(a), rows(b)), delta=0.05)["designs"][0]
    flips = ((a.argmax(1) == gold) != (b.argmax(1) == gold)).mean()
    assert d["n_pilot"] == 100 and d["discordance"] == pytest.approx(flips)
    assert d["acc"][0.05][0]["questions"] == questions_for(0.05, flips)
