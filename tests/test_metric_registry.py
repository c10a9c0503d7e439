"""The registry of metrics and confidence measures (metric_registry.py): every list of metric names is derived
from it, a new confidence measure is one entry, and the docs' metric tables are its own."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import quantconf as qc
from quantconf.analysis import generation as gen
from quantconf import metric_registry as measures
from quantconf.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_the_derived_lists_are_the_ones_that_were_written_by_hand():
    """Before the registry these were literal lists in eight modules; the registry gives the same sets (orders may
    differ: every use is by name)."""
    from quantconf.analysis import metrics, noise_floor, paired, recalibration
    from quantconf.study import results

    assert set(metrics.METRICS) == {
        "acc", "acc_norm", "nll", "brier", "entropy", "entropy_bits", "conf", "conf_true", "conf_correct",
        "conf_wrong", "ece", "ace", "mce", "sce", "rmsce", "l2_debiased", "smece", "ece_sweep", "tace", "auroc",
        "aurc", "eaurc", "brier_reliability", "brier_resolution", "brier_uncertainty", "brier_within_bin"}
    assert results.TABLE_METRICS == [  # summary.csv's column order is kept
        "acc", "acc_norm", "nll", "brier", "ece", "ace", "mce", "conf", "conf_true", "entropy", "smece", "ece_sweep",
        "tace", "auroc", "aurc", "eaurc", "brier_reliability", "brier_resolution", "brier_uncertainty"]
    assert set(paired.DELTA_METRICS) == {"acc", "nll", "ece", "ace", "brier", "conf", "conf_true", "smece",
                                         "ece_sweep", "tace", "auroc", "aurc", "eaurc", "brier_reliability",
                                         "brier_resolution"}
    assert set(noise_floor.EFFECT_METRICS) == {"acc", "nll", "ece", "l2_debiased", "ace", "smece", "brier",
                                               "conf_true", "auroc", "aurc"}
    assert set(noise_floor.GENERATION_EFFECT_METRICS) == {"acc", "ece", "l2_debiased", "smece", "nll", "brier", "auroc"}
    assert set(recalibration.RECALIBRATION_METRICS) == {"acc", "nll", "ece", "ace", "smece", "brier"}
    assert set(gen.PROBABILITY_METRICS) == {"acc", "conf", "ece", "ece_mass", "mce", "smece", "brier", "nll", "auroc",
                                            "aurc", "eaurc", "prr"}
    assert gen.RANKING_METRICS == ["acc", "auroc", "aurc", "eaurc", "prr"]
    assert set(gen.COMPARE_METRICS) == {"ece", "smece", "brier", "auroc", "conf", "prr"}
    assert list(measures.MEASURES) == ["p_true", "sequence_prob", "mean_token_prob", "min_token_prob",
                                       "neg_mean_entropy", "greedy_agreement", "neg_semantic_entropy",
                                       "neg_discrete_semantic_entropy", "neg_num_semantic_sets", "neg_eigv",
                                       "neg_degree", "neg_eccentricity", "neg_mc_sequence_entropy",
                                       "neg_mc_normalized_entropy", "lexical_similarity"]


def test_every_metric_computed_is_registered_and_every_registered_one_is_computed():
    from quantconf.analysis.metrics import calibration_metrics

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), 50)
    out = calibration_metrics(probs, rng.integers(0, 4, 50))
    assert set(out) == set(measures.computed_for("multiple_choice"))
    conf, y = rng.uniform(0, 1, 50), rng.integers(0, 2, 50).astype(float)
    binary = gen.binary_metrics_weighted(conf, y, np.ones((1, 50)), 10, gen._structure(conf, y, 10))
    assert set(binary) == set(measures.computed_for("generation"))
    from quantconf.analysis.helm import helm_metrics

    assert set(helm_metrics(conf, y)) == set(measures.computed_for("multiple_choice", family="helm"))


def _generations(n=60, seed=0):
    rng = np.random.default_rng(seed)
    toks = [list(np.log(rng.uniform(0.05, 1, rng.integers(1, 5)))) for _ in range(n)]
    return pd.DataFrame({
        "doc_id": range(n), "task": "g", "context": "c", "generation": [f"a{i % 7}" for i in range(n)],
        "token_ids": [[1] * len(t) for t in toks], "token_logprobs": toks, "token_entropies": [[0.5] * len(t) for t in toks],
        "primary_metric": "exact_match", "correct": rng.integers(0, 2, n).astype(float),
        "exact_match": 0.0, "sequence_logprob": [sum(t) for t in toks], "mean_logprob": [np.mean(t) for t in toks],
        "min_token_prob": [float(np.exp(min(t))) for t in toks], "mean_entropy": 0.5,
        "p_true": rng.uniform(0, 1, n), "question": "q?"})


def test_a_new_confidence_measure_is_one_registry_entry(tmp_path, capsys):
    """Register `last_token_prob` and nothing else: generation metrics, the full-vs-quantized comparison, the CLI's
    table and `quantconf measures` all carry it, with the numbers measure_metrics gives on its values."""
    last = lambda df: np.array([np.exp(t[-1]) for t in df["token_logprobs"]])  # noqa: E731
    measures.register_measure("last_token_prob", "the last answer token's probability", True, last, "a test")
    try:
        _check_the_new_measure_everywhere(last, tmp_path, capsys)
    finally:
        measures.MEASURES.pop("last_token_prob")
    assert "last_token_prob" not in qc.measures()["confidence_measures"]


def _check_the_new_measure_everywhere(last, tmp_path, capsys):
    full, quant = _generations(seed=0), _generations(seed=1)
    quant["correct"] = full["correct"]
    m = gen.generation_metrics(full, n_boot=50)
    assert m["measures"]["last_token_prob"]["ece"] == pytest.approx(
        gen.measure_metrics(last(full), full["correct"].to_numpy(), n_boot=0)["ece"])
    c = gen.compare_generations(full, quant, n_boot=50)
    assert "delta_ece_last_token_prob" in c and "delta_ece_last_token_prob" in c["ci"]
    from quantconf.kinds.generation import GENERATION
    from quantconf.predictions import write_predictions

    (tmp_path / "g").mkdir()
    write_predictions(GENERATION.frame(full.to_dict("records")), tmp_path / "g" / "g.parquet")
    assert main(["metrics", str(tmp_path / "g"), "--bootstrap", "0"]) == 0
    assert "last_token_prob" in capsys.readouterr().out
    assert "last_token_prob" in [c["name"] for c in qc.measures()["confidence_measures"]]


def test_docs_metric_tables_are_the_registry():
    """docs/metrics.md holds `quantconf measures --markdown` verbatim (regenerate it there when the registry changes)."""
    assert measures.markdown_table() in (ROOT / "docs" / "metrics.md").read_text()


def test_registering_a_name_twice_or_an_unknown_use_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        measures.register_metric("ece", "again", "lower", "[0, 1]", "")
    with pytest.raises(ValueError, match="unknown uses"):
        measures.register_metric("new_metric", "x", "lower", "[0, 1]", "", uses=("nowhere",))
    assert "new_metric" not in measures.METRICS
