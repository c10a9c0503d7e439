"""Calibration of what a model writes, and full vs quantized generations question by question: pure
numpy/scipy functions on generation predictions (`predictions.py` lists their columns).

Correctness is a 0/1 column: the task's primary metric (`correct`: exact_match, bleu_acc, ...) or
another one named with `correctness` (e.g. rouge1_acc, or judge_acc of an imported judged file).
A confidence measure is a number per generation that should be high when the answer is right::

  p_true            P(True) of the model for its own answer (Kadavath et al. 2022)
  sequence_prob     exp(sum of the answer tokens' log-probabilities)
  mean_token_prob   exp(mean token log-probability): the geometric-mean token probability
  min_token_prob    the smallest token probability of the answer
  neg_mean_entropy  minus the mean next-token entropy (not a probability: ranking metrics only)

For the four probabilities, with conf_i the measure and y_i the correctness::

  acc        mean(y);  conf  mean(conf)
  ece        sum_b (n_b / n) |mean_b y - mean_b conf|, B equal-width bins of conf (as for choices)
  ece_mass   the same with B equal-mass bins (the bins of the full sample, kept in every replicate)
  mce        max_b |mean_b y - mean_b conf| over non-empty equal-width bins
  l2_debiased  Kumar et al. 2019's debiased squared L2 calibration error, the same bins (metrics.py)
  smece      smooth ECE (Błasiok & Nakkiran 2023), bandwidth chosen on the full sample
  brier      mean((conf - y)^2)
  nll        -mean(y log conf + (1 - y) log(1 - conf)), conf clipped to [1e-12, 1 - 1e-12]
  auroc      P(conf of a right answer > conf of a wrong one) + P(tie) / 2
  aurc, eaurc  area under the risk-coverage curve and its excess over a perfect ranking
  prr        prediction rejection ratio (LM-Polygraph's PRR, max_rejection 1): (AURC_random - AURC) /
             (AURC_random - AURC_perfect), AURC_random = 1 - acc, the expected AURC of a random order
             (LM-Polygraph estimates it from 1,000 shuffles; this is its exact value), AURC_perfect = AURC - E-AURC.
             Its rejection-curve area is 1 - AURC; ties in the measure are in random order, expectation taken
             (LM-Polygraph's order of ties is numpy's unstable argsort). Undefined (NaN) when every answer is
             right or every one wrong.

The interval of delta_acc (quant - full) is Bonett & Price's paired interval
(`metrics.paired_difference_interval`), the one a multiple-choice comparison uses: near-nominal
exact coverage (enumerated in tests/test_paired.py). A percentile bootstrap did not hold its level on
few flips (four one-way flips in 24 prompts: it excluded 0 while McNemar's exact p was 0.125); the
Clopper-Pearson x Bonferroni interval used before covered 97.8-99.85% while saying 95%.

A ranking-only measure (neg_mean_entropy, the sampling estimators) gets auroc, aurc, eaurc, prr only. Rows where a measure is NaN (an empty answer has no
tokens; an imported file has no model) are left out of that measure's metrics, and its `n` says how
many remained. Intervals: percentile bootstrap over prompts (`bootstrap_draws`), paired for deltas.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from quantconf.analysis.metrics import (_bin_sums, _safe_div, bootstrap_draws, equal_mass_bin, equal_width_bin,
                                        paired_difference_interval, percentile_interval, smooth_ece_at,
                                        smooth_ece_bandwidth, weighted_auroc, weighted_aurc)
from quantconf.metric_registry import MEASURES, metric_names
from quantconf.errors import QuantconfError

PROBABILITY_METRICS = metric_names("measure", kind="generation")
RANKING_METRICS = metric_names("ranking", kind="generation")
# the measure whose metrics are a generation task's headline (the `ece`, `auroc`, ... of its row in a
# study's tables): P(True), the one that claims to be a probability of being right; when a file has
# none (imports without the model), the mean token probability
COMPARE_METRICS = metric_names("measure_delta", kind="generation")


def confidence_measures(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """Every registered confidence measure (metric_registry.py) of a generation predictions frame."""
    return {name: m.compute(df) for name, m in MEASURES.items() if set(m.needs) <= set(df.columns)}


def correctness_of(df: pd.DataFrame, correctness: str | None = None) -> tuple[str, np.ndarray]:
    """(name, 0/1 values) of the correctness column: `correct` (the task's primary metric) by default."""
    if correctness is None or correctness == "correct":
        name = str(df["primary_metric"].iloc[0]) if len(df) and "primary_metric" in df.columns else "correct"
        values = df["correct"]
    else:
        if correctness not in df.columns:
            known = [c for c in df.columns if c.endswith("_acc") or c in ("exact_match", "correct", "judge_acc")]
            task = str(df["task"].iloc[0]) if len(df) and "task" in df.columns else "these predictions"
            raise QuantconfError(f"correctness {correctness!r} is not a column of task {task}'s predictions; 0/1 "
                                 f"columns there: {', '.join(known) or 'correct'} (name one every generation task "
                                 "here has, or pass a directory of the tasks that have it)", param="correctness")
        name, values = correctness, df[correctness]
    y = pd.to_numeric(values, errors="coerce").to_numpy(float)
    if not np.isin(y, (0.0, 1.0)).all():
        bad = values[~np.isin(y, (0.0, 1.0))].iloc[0]
        raise QuantconfError(f"correctness {name!r} must be 0 or 1 for every generation, found {bad!r}; pick a 0/1 "
                             "metric (e.g. bleu_acc, rouge1_acc, exact_match)", param="correctness")
    return name, y


def binary_metrics_weighted(conf, y, weights, n_bins: int, structure: dict, ranking_only: bool = False) -> dict:
    """The metrics of the module docstring for each row of prompt weights (r, n)."""
    w = weights
    total = w.sum(axis=1)
    out = {"acc": (w @ y) / total}
    out["auroc"] = weighted_auroc(conf, y, w)
    out["aurc"], out["eaurc"] = weighted_aurc(conf, y, w)
    random_aurc, best = 1 - out["acc"], out["aurc"] - out["eaurc"]
    with np.errstate(invalid="ignore", divide="ignore"):
        out["prr"] = np.where(np.abs(random_aurc - best) > 1e-12, (random_aurc - out["aurc"]) / (random_aurc - best),
                              np.nan)
    if ranking_only:
        return out
    out["conf"] = (w @ conf) / total
    count, (sc, sa) = _bin_sums(w, equal_width_bin(conf, n_bins), n_bins, conf, y)
    out["ece"] = np.abs(sa - sc).sum(axis=1) / total
    acc_b, conf_b = _safe_div(sa, count), _safe_div(sc, count)
    out["mce"] = np.nanmax(np.where(count > 0, np.abs(acc_b - conf_b), np.nan), axis=1)
    sq = np.where(count > 0, (acc_b - conf_b) ** 2, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.where(count > 1, np.nan_to_num(acc_b * (1 - acc_b)) / (count - 1), 0.0)
    out["l2_debiased"] = (count * (sq - var)).sum(axis=1) / total  # as metrics.py (Kumar et al. 2019)
    _, (sc_m, sa_m) = _bin_sums(w, structure["mass_bins"], n_bins, conf, y)
    out["ece_mass"] = np.abs(sa_m - sc_m).sum(axis=1) / total
    out["smece"] = smooth_ece_at(conf, y, structure["sigma"], w)
    out["brier"] = (w @ (conf - y) ** 2) / total
    c = np.clip(conf, 1e-12, 1 - 1e-12)
    out["nll"] = -(w @ (y * np.log(c) + (1 - y) * np.log(1 - c))) / total
    return out


def _structure(conf, y, n_bins) -> dict:
    # chosen once on the full sample and kept in every replicate (as metrics.metric_structure does)
    return {"mass_bins": equal_mass_bin(conf, n_bins), "sigma": smooth_ece_bandwidth(conf, y)}


def measure_metrics(conf, y, n_bins: int = 15, n_boot: int = 1000, seed: int = 0,
                    ranking_only: bool = False) -> dict:
    """Metrics (+ CIs) of one confidence measure against correctness, over the rows where it is finite."""
    keep = np.isfinite(conf)
    conf, y = np.asarray(conf, float)[keep], np.asarray(y, float)[keep]
    n = len(conf)
    names = RANKING_METRICS if ranking_only else PROBABILITY_METRICS
    if n == 0:
        return {"n": 0, **{m: float("nan") for m in names}, "note": "no values (needs the model)"}
    if not ranking_only and ((conf < 0) | (conf > 1)).any():
        raise QuantconfError("a probability measure lies outside [0, 1]")
    structure = {} if ranking_only else _structure(conf, y, n_bins)
    point = binary_metrics_weighted(conf, y, np.ones((1, n)), n_bins, structure, ranking_only)
    out = {"n": n, **{m: float(point[m][0]) for m in names}}
    if n_boot:
        draws = bootstrap_draws(lambda w: binary_metrics_weighted(conf, y, w, n_bins, structure, ranking_only),
                                n, n_boot, seed)
        out["ci"] = {m: percentile_interval(draws[m]) for m in names}
    return out


def risk_coverage_curve(conf, y, points: int = 41) -> dict:
    """The risk-coverage curve of a measure (Geifman & El-Yaniv 2017): answers taken most confident first, the
    error rate of the first k at coverage k / n, at `points` coverages from 1/n to 1 (ties in stable order: a
    picture, not a metric; `aurc` is the tie-invariant area)."""
    keep = np.isfinite(conf)
    conf, y = np.asarray(conf, float)[keep], np.asarray(y, float)[keep]
    n = len(conf)
    if n == 0:
        return {"coverage": [], "risk": [], "aurc": float("nan")}
    wrong = np.cumsum(1 - y[np.argsort(-conf, kind="stable")])
    k = np.unique(np.linspace(1, n, min(points, n)).round().astype(int))
    return {"coverage": (k / n).tolist(), "risk": (wrong[k - 1] / k).tolist(),
            "aurc": float(weighted_aurc(conf, y, np.ones((1, n)))[0][0])}


def headline_measure(measures: dict[str, np.ndarray]) -> str:
    ranked = sorted((m for m in MEASURES.values() if m.headline_rank is not None), key=lambda m: m.headline_rank)
    for name in (m.name for m in ranked):
        if np.isfinite(measures[name]).any():
            return name
    return ranked[0].name


def generation_metrics(df: pd.DataFrame, n_bins: int = 15, n_boot: int = 1000, seed: int = 0,
                       correctness: str | None = None) -> dict:
    """Accuracy and the calibration of every confidence measure of one generation task.

    Returns {"n", "kind": "generation", "correctness", "acc", "confidence_measure", the headline
    measure's metrics at the top level (ece, smece, brier, nll, auroc, ...), "ci" (theirs and acc's),
    "measures": {measure: {"n", metric..., "ci"}}}."""
    if len(df) == 0:
        raise ValueError("no generations")
    if n_bins < 1:
        raise QuantconfError(f"n_bins must be >= 1, got {n_bins}", param="n_bins")
    name, y = correctness_of(df, correctness)
    measures = confidence_measures(df)
    per = {m: measure_metrics(measures[m], y, n_bins, n_boot, seed, ranking_only=not MEASURES[m].probability)
           for m in measures}
    head = headline_measure(measures)
    out = {"n": len(df), "kind": "generation", "correctness": name, "acc": float(y.mean()),
           "confidence_measure": head,
           **{m: v for m, v in per[head].items() if m not in ("n", "ci", "acc", "note")}, "measures": per}
    if n_boot:
        acc_draws = bootstrap_draws(lambda w: {"acc": (w @ y) / w.sum(axis=1)}, len(y), n_boot, seed)["acc"]
        out["ci"] = {**per[head].get("ci", {}), "acc": percentile_interval(acc_draws)}
    return out


# ---------------------------------------------------------------------------------------------
# Full vs quantized


def normalise_answer(text: str) -> str:
    """Whitespace runs to one space, ends stripped, case folded: "answer changed" modulo formatting."""
    return " ".join(str(text).split()).casefold()


def _rouge_tokens(text: str) -> list[str]:
    # rouge_score's default tokenizer without stemming: lower case, runs of [a-z0-9] only
    return re.sub(r"[^a-z0-9]+", " ", str(text).lower()).split()


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F1 between two answers (longest common subsequence of tokens; rouge_score's tokenizer,
    no stemming). Both empty: 1; one empty: 0."""
    x, z = _rouge_tokens(a), _rouge_tokens(b)
    if not x and not z:
        return 1.0
    if not x or not z:
        return 0.0
    prev = [0] * (len(z) + 1)
    for tx in x:
        cur = [0]
        for j, tz in enumerate(z):
            cur.append(prev[j] + 1 if tx == tz else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(z), lcs / len(x)
    return 2 * precision * recall / (precision + recall)


def pair_generations(full: pd.DataFrame, quant: pd.DataFrame, task: str = "") -> tuple[pd.DataFrame, pd.DataFrame]:
    """The prompts both runs answered, in doc_id order; one error when the prompts differ."""
    common = sorted(set(full["doc_id"]) & set(quant["doc_id"]))
    if not common:
        raise QuantconfError(f"{task}: the two generation sets share no doc_id; evaluate both on the same prompts")
    f = full.set_index("doc_id").loc[common].reset_index()
    q = quant.set_index("doc_id").loc[common].reset_index()
    if "context" in f.columns and "context" in q.columns:
        differ = [d for d, a, b in zip(f["doc_id"], f["context"], q["context"])
                  if isinstance(a, str) and isinstance(b, str) and a != b]
        if differ:
            raise QuantconfError(f"{task} doc {differ[0]}: the two runs had different prompts (another few-shot "
                                 "setting or task version?); compare runs of the same prompts")
    return f, q


def compare_generations(full: pd.DataFrame, quant: pd.DataFrame, n_bins: int = 15, n_conf_bins: int = 5,
                        n_boot: int = 1000, seed: int = 0, task: str = "", correctness: str | None = None) -> dict:
    """Full vs quantized generations, prompt by prompt (keys in `quantconf compare --json`): n, full_acc,
    quant_acc, delta_acc, answer_changed (rate, exact text), answer_changed_normalised,
    flips_correct_to_wrong, flips_wrong_to_correct, p_mcnemar (exact), rougeL_between (mean ROUGE-L of
    the two answers), per confidence measure the full, quant and delta values of its mean and of ece,
    smece, brier, auroc (keys ``full_mean_<measure>``, ``delta_ece_<measure>``, ...), p_wilcoxon of the headline measure's per-prompt change, ci
    (paired bootstrap; delta_acc's Bonett-Price, `paired_difference_interval`), by_confidence_bin (equal-mass bins of the full model's headline confidence)."""
    from scipy import stats  # lazy: scipy.stats takes ~1 s to import (the report needs none)
    f, q = pair_generations(full, quant, task)
    name, yf = correctness_of(f, correctness)
    _, yq = correctness_of(q, correctness)
    n = len(f)
    changed = np.array([a != b for a, b in zip(f["generation"], q["generation"])])
    changed_norm = np.array([normalise_answer(a) != normalise_answer(b) for a, b in zip(f["generation"], q["generation"])])
    rouge = np.array([rouge_l(a, b) for a, b in zip(f["generation"], q["generation"])])
    cf, cq = yf.astype(bool), yq.astype(bool)
    b, c = int(np.sum(cf & ~cq)), int(np.sum(~cf & cq))
    out: dict = {"n": n, "kind": "generation", "correctness": name, "full_acc": float(yf.mean()),
                 "quant_acc": float(yq.mean()), "delta_acc": float(yq.mean() - yf.mean()),
                 "answer_changed": float(changed.mean()), "answer_changed_normalised": float(changed_norm.mean()),
                 "flips_correct_to_wrong": b, "flips_wrong_to_correct": c,
                 "p_mcnemar": float(stats.binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0,
                 "rougeL_between": float(rouge.mean())}
    mf, mq = confidence_measures(f), confidence_measures(q)
    head = headline_measure(mf)
    out["confidence_measure"] = head
    shared = [m for m in mf if m in mq]  # sampling estimators: only when both runs kept samples
    both = {m: np.isfinite(mf[m]) & np.isfinite(mq[m]) for m in shared}
    structures = {}  # measure -> (full's, quant's) structure, None for a ranking-only measure

    def compared(m):  # the metrics compared for a measure: a ranking-only one has no calibration
        return COMPARE_METRICS if MEASURES[m].probability else [x for x in COMPARE_METRICS if x in RANKING_METRICS]

    for m in shared:
        k, ranking = both[m], not MEASURES[m].probability
        if not ranking:
            out[f"full_mean_{m}"] = float(mf[m][k].mean()) if k.any() else float("nan")
            out[f"quant_mean_{m}"] = float(mq[m][k].mean()) if k.any() else float("nan")
            out[f"delta_mean_{m}"] = out[f"quant_mean_{m}"] - out[f"full_mean_{m}"]
        if k.sum() >= 2:
            structures[m] = (None, None) if ranking else (_structure(mf[m][k], yf[k], n_bins),
                                                          _structure(mq[m][k], yq[k], n_bins))
            a = binary_metrics_weighted(mf[m][k], yf[k], np.ones((1, k.sum())), n_bins, structures[m][0], ranking)
            z = binary_metrics_weighted(mq[m][k], yq[k], np.ones((1, k.sum())), n_bins, structures[m][1], ranking)
            for metric in compared(m):
                out[f"full_{metric}_{m}"], out[f"quant_{metric}_{m}"] = float(a[metric][0]), float(z[metric][0])
                out[f"delta_{metric}_{m}"] = float(z[metric][0] - a[metric][0])
    # the headline measure's deltas under the names a multiple-choice comparison uses (study tables)
    for metric in COMPARE_METRICS:
        if f"delta_{metric}_{head}" in out:
            out[f"delta_{metric}"] = out[f"delta_{metric}_{head}"]
    diff = (mq[head] - mf[head])[both[head]]
    out["p_wilcoxon"] = float(stats.wilcoxon(diff).pvalue) if np.any(diff != 0) else 1.0
    if n_boot:
        def paired(w):
            res = {"answer_changed": (w @ changed) / w.sum(axis=1)}
            for m, (sa, sz) in structures.items():
                k, ranking = both[m], not MEASURES[m].probability
                a = binary_metrics_weighted(mf[m][k], yf[k], w[:, k], n_bins, sa, ranking)
                z = binary_metrics_weighted(mq[m][k], yq[k], w[:, k], n_bins, sz, ranking)
                for metric in compared(m):
                    res[f"delta_{metric}_{m}"] = z[metric] - a[metric]
            return res

        draws = bootstrap_draws(paired, n, n_boot, seed)
        out["ci"] = {key: percentile_interval(v) for key, v in draws.items()}
        out["ci"]["delta_acc"] = paired_difference_interval(b, c, n)  # module docstring
        for metric in COMPARE_METRICS:
            if f"delta_{metric}_{head}" in out["ci"]:
                out["ci"][f"delta_{metric}"] = out["ci"][f"delta_{metric}_{head}"]
    out["by_confidence_bin"] = _by_confidence_bin(mf[head], mq[head], cf, cq, changed, n_conf_bins)
    return out


def _by_confidence_bin(conf_f, conf_q, cf, cq, changed, n_conf_bins) -> list[dict]:
    """Are the full model's least confident generations the ones quantization changes most?"""
    k = np.isfinite(conf_f)
    if not k.any():
        return []
    idx = np.flatnonzero(k)
    n_b = min(n_conf_bins, len(idx))
    bins = equal_mass_bin(conf_f[idx], n_b)
    table = []
    for b in range(n_b):
        s = idx[bins == b]
        if not len(s):
            continue
        delta = conf_q[s] - conf_f[s]
        table.append({"bin": b, "n": int(len(s)), "conf_lo": float(conf_f[s].min()), "conf_hi": float(conf_f[s].max()),
                      "full_acc": float(cf[s].mean()), "quant_acc": float(cq[s].mean()),
                      "answer_changed_rate": float(changed[s].mean()),
                      "flip_rate": float((cf != cq)[s].mean()), "correct_to_wrong_rate": float((cf & ~cq)[s].mean()),
                      "delta_conf": float(np.nanmean(delta)) if np.isfinite(delta).any() else float("nan"),
                      "mean_abs_delta_conf": float(np.nanmean(np.abs(delta))) if np.isfinite(delta).any()
                      else float("nan")})
    return table


def per_generation_frame(full: pd.DataFrame, quant: pd.DataFrame, task: str = "") -> pd.DataFrame:
    """One row per paired prompt: both answers, correctness, headline confidence, changed (for tables)."""
    f, q = pair_generations(full, quant, task)
    _, yf = correctness_of(f)
    _, yq = correctness_of(q)
    mf, mq = confidence_measures(f), confidence_measures(q)
    head = headline_measure(mf)
    return pd.DataFrame({"task": task, "doc_id": f["doc_id"], "full_conf": mf[head], "quant_conf": mq[head],
                         "full_p_true": mf[head], "quant_p_true": mq[head],
                         "full_correct": yf.astype(bool), "quant_correct": yq.astype(bool),
                         "js": np.nan, "full_generation": f["generation"], "quant_generation": q["generation"]})
