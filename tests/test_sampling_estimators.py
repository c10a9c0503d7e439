"""analysis/sampling_estimators.py and PRR equal LM-Polygraph 0.7.0's own estimator classes on the same samples.

LM-Polygraph's package imports OpenAI, spaCy and a model zoo at its top; its estimator and UE-metric modules
need only numpy, scipy, torch, rouge_score and nltk. The Makefile installs it with --no-deps and these tests
load those modules from it (the package's own files, not a copy) under namespace stubs of its parents."""

import importlib
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from quantconf.analysis import sampling_estimators as est
from quantconf.analysis.generation import binary_metrics_weighted, confidence_measures, measure_metrics
from quantconf.inference import equivalence


@pytest.fixture(scope="module")
def polygraph():
    spec = importlib.util.find_spec("lm_polygraph")
    if spec is None:
        pytest.skip("lm-polygraph is not installed (make install puts it in .venv with --no-deps)")
    root = Path(spec.submodule_search_locations[0])
    saved = {k: v for k, v in sys.modules.items() if k == "lm_polygraph" or k.startswith("lm_polygraph.")}
    for name, path in (("lm_polygraph", root), ("lm_polygraph.utils", root / "utils"),
                       ("lm_polygraph.estimators", root / "estimators"), ("lm_polygraph.ue_metrics", root / "ue_metrics")):
        stub = types.ModuleType(name)
        stub.__path__ = [str(path)]
        sys.modules[name] = stub
    mods = {m: importlib.import_module(f"lm_polygraph.estimators.{m}") for m in (
        "semantic_entropy", "num_sem_sets", "lexical_similarity", "eig_val_laplacian", "deg_mat", "eccentricity",
        "monte_carlo_sequence_entropy", "monte_carlo_normalized_sequence_entropy")}
    mods["pred_rej_area"] = importlib.import_module("lm_polygraph.ue_metrics.pred_rej_area")
    mods["ue_metric"] = importlib.import_module("lm_polygraph.ue_metrics.ue_metric")
    yield types.SimpleNamespace(**mods)
    for k in [k for k in sys.modules if k == "lm_polygraph" or k.startswith("lm_polygraph.")]:
        del sys.modules[k]
    sys.modules.update(saved)


ANSWERS = ["4", "four", "5", "4", "the answer is 4", "4", "5", "", "4 apples", "four"]


def random_prompts(seed: int, n: int = 12, k: int = 6):
    """Prompts with K samples each: texts drawn from ANSWERS, token log-probabilities random, clusters by the
    text's first word (a transitive equivalence), similarity a random symmetric-ish matrix with unit diagonal."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        texts = [ANSWERS[i] for i in rng.integers(0, len(ANSWERS), k)]
        lps = [list(-rng.exponential(0.7, size=rng.integers(1, 5))) for _ in texts]
        keys = [t.split()[0] if t.split() else "" for t in texts]
        clusters = equivalence.clusters_of(lambda i, j: keys[i] == keys[j], k)
        sim = rng.uniform(0.05, 1, (k, k))
        np.fill_diagonal(sim, 1.0)
        rows.append({"samples": texts, "sample_token_logprobs": lps, "sample_clusters": clusters,
                     "sample_similarity": list(sim.ravel()), "keys": keys})
    return rows


def polygraph_stats(rows):
    k = len(rows[0]["samples"])
    class_to_sample, sample_to_class = {}, {}
    for i, r in enumerate(rows):
        classes: dict[int, list] = {}
        for j, c in enumerate(r["sample_clusters"]):
            classes.setdefault(c, []).append(j)
        class_to_sample[i] = [classes[c] for c in sorted(classes)]
        sample_to_class[i] = dict(enumerate(r["sample_clusters"]))
    same = np.array([[[float(a == b) for b in r["keys"]] for a in r["keys"]] for r in rows])
    return {"sample_texts": [r["samples"] for r in rows],
            "sample_log_probs": [[float(np.sum(lp)) for lp in r["sample_token_logprobs"]] for r in rows],
            "sample_tokens": [[list(range(len(lp))) for lp in r["sample_token_logprobs"]] for r in rows],
            "semantic_classes_entail": {"class_to_sample": class_to_sample, "sample_to_class": sample_to_class},
            "semantic_matrix_entail": np.array([np.asarray(r["sample_similarity"]).reshape(k, k) for r in rows]),
            "same_answer": same}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_estimator_equals_lm_polygraphs_on_the_same_samples(polygraph, seed):
    rows = random_prompts(seed)
    df = pd.DataFrame(rows)
    stats = polygraph_stats(rows)
    ours = confidence_measures(df)
    p = polygraph
    theirs = {
        "neg_semantic_entropy": p.semantic_entropy.SemanticEntropy()(stats),
        "neg_discrete_semantic_entropy": p.semantic_entropy.SemanticEntropy(class_probability_estimation="frequency")(stats),
        "neg_eigv": p.eig_val_laplacian.EigValLaplacian()(stats),
        "neg_degree": p.deg_mat.DegMat()(stats),
        "neg_eccentricity": p.eccentricity.Eccentricity()(stats),
        "neg_mc_sequence_entropy": p.monte_carlo_sequence_entropy.MonteCarloSequenceEntropy()(stats),
        "neg_mc_normalized_entropy":
            p.monte_carlo_normalized_sequence_entropy.MonteCarloNormalizedSequenceEntropy()(stats),
        # NumSemSets reads entailment > contradiction both ways: our transitive "same first word" as that
        "neg_num_semantic_sets": p.num_sem_sets.NumSemSets()({**stats, "semantic_matrix_entail": stats["same_answer"],
                                                             "semantic_matrix_contra": 1 - stats["same_answer"]}),
    }
    for name, values in theirs.items():
        np.testing.assert_allclose(ours[name], -np.asarray(values, float), rtol=1e-9, atol=1e-12, err_msg=name)
    # lexical similarity is computed when a run groups its samples (inference/equivalence.py), from the texts
    lexical = [equivalence.lexical_similarity(r["samples"]) for r in rows]
    np.testing.assert_allclose(lexical, -p.lexical_similarity.LexicalSimilarity("rougeL")(stats), rtol=1e-12)


def test_semantic_entropy_by_hand():
    """Two clusters: samples {0, 1} with p = .5, .25 and {2} with p = .125: log P(c) = log .75 and log .125;
    SE = -(2 log .75 + log .125) / 3; discrete: -(2 log(2/3) + log(1/3)) / 3."""
    lp = np.log([0.5, 0.25, 0.125])
    assert est.semantic_entropy(lp, np.array([0, 0, 1])) == pytest.approx(-(2 * np.log(.75) + np.log(.125)) / 3)
    assert est.discrete_semantic_entropy(np.array([0, 0, 1])) == pytest.approx(-(2 * np.log(2 / 3) + np.log(1 / 3)) / 3)
    # a similarity graph of two disconnected cliques: two eigenvalues 0 -> EigV 2; Deg: 1 - (sum W) / K^2
    w = np.kron(np.eye(2), np.ones((2, 2)))
    assert est.eigv(w) == pytest.approx(2.0)
    assert est.degree(w) == pytest.approx(1 - 8 / 16)


def test_prr_equals_lm_polygraphs_normalised_prediction_rejection_area(polygraph):
    """PRR = (PRA - PRA_random) / (PRA_oracle - PRA_random) with LM-Polygraph's PredictionRejectionArea; ours is
    the exact expectation of the random order where LM-Polygraph averages 1,000 shuffles: equal within their
    Monte-Carlo error, and equal exactly once the exact random value is used."""
    rng = np.random.default_rng(5)
    area = polygraph.pred_rej_area.PredictionRejectionArea()
    for n in (20, 57, 200):
        conf = rng.normal(size=n)  # no ties: LM-Polygraph's order of tied values is numpy's unstable argsort
        y = (rng.uniform(size=n) < 1 / (1 + np.exp(-conf))).astype(float)
        ours = float(binary_metrics_weighted(conf, y, np.ones((1, n)), 10, {}, ranking_only=True)["prr"][0])
        ue = -conf
        pra, oracle = area(ue, y), area(-y, y)
        random_mc = polygraph.ue_metric.get_random_scores(area, y)
        assert polygraph.ue_metric.normalize_metric(pra, oracle, y.mean()) == pytest.approx(ours, abs=1e-12)
        theirs = polygraph.ue_metric.normalize_metric(pra, oracle, random_mc)
        assert abs(theirs - ours) < 0.05, (n, theirs, ours)
        assert random_mc == pytest.approx(y.mean(), abs=4 * 0.5 / np.sqrt(1000))


def test_prr_is_1_for_a_perfect_ranking_about_0_for_noise_and_undefined_without_both_outcomes():
    y = np.array([1, 1, 1, 0, 0, 0, 1, 0], float)
    w = np.ones((1, len(y)))
    assert binary_metrics_weighted(y + 0.1, y, w, 10, {}, True)["prr"][0] == pytest.approx(1.0)
    assert binary_metrics_weighted(-y, y, w, 10, {}, True)["prr"][0] < 0
    assert np.isnan(binary_metrics_weighted(np.arange(8.0), np.ones(8), w, 10, {}, True)["prr"][0])
    rng = np.random.default_rng(0)
    noise = [binary_metrics_weighted(rng.normal(size=400), (rng.uniform(size=400) < .4).astype(float),
                                     np.ones((1, 400)), 10, {}, True)["prr"][0] for _ in range(200)]
    assert abs(np.mean(noise)) < 0.03
    # a ranking-only measure's metrics carry PRR with an interval
    m = measure_metrics(np.arange(8.0), y, n_boot=50, ranking_only=True)
    assert "prr" in m and "prr" in m["ci"]


def test_a_frame_without_samples_has_no_sampling_measures():
    df = pd.DataFrame({"p_true": [0.5], "sequence_logprob": [-1.0], "mean_logprob": [-0.5], "min_token_prob": [0.4],
                       "mean_entropy": [1.0]})
    assert set(confidence_measures(df)) == {"p_true", "sequence_prob", "mean_token_prob", "min_token_prob",
                                            "neg_mean_entropy"}
