"""Full vs quantized, question by question.

Questions are paired by (task, doc_id); their choice lists must match. Per task:
  delta_*            metric(quantized) - metric(full), with paired bootstrap CIs (the same resampled
                     questions for both models); delta_acc's is Bonett & Price's paired interval
                     (`metrics.paired_difference_interval`: near-nominal exact coverage, enumerated in
                     the tests), as for generation tasks
  delta_conf_true    mean change of the gold choice's probability
  js_*               Jensen-Shannon distance (base 2, in [0, 1]) between the two choice distributions
  kl_full_quant / kl_quant_full   mean KL divergence (nats) each way
  flips              correct->wrong and wrong->correct counts
  p_ttest, p_wilcoxon  paired tests on the gold-choice probability; p_mcnemar exact McNemar on
                     correctness (binomial test on the discordant pairs)
  by_confidence_bin  questions split into equal-mass bins of the FULL model's top-choice probability;
                     per bin: n, confidence range, mean delta gold prob, mean JS, flip rates — so
                     "low-confidence samples are hit hardest" can be read off directly.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from quantconf.metric_registry import metric_names
from quantconf.errors import QuantconfError
from quantconf.analysis.metrics import (bootstrap_draws, equal_mass_bin, has_several_true, log_probs_from_predictions,
                                       mc2_mass, metric_structure, metrics_weighted, paired_difference_interval,
                                       percentile_interval,
                                       probs_from_predictions)

DELTA_METRICS = metric_names("delta")  # the registry's (metric_registry.py)


def pair_predictions(full: pd.DataFrame, quant: pd.DataFrame, task: str = "") -> tuple[pd.DataFrame, pd.DataFrame]:
    merged = full[["doc_id"]].merge(quant[["doc_id"]], on="doc_id")
    if merged.empty:
        raise QuantconfError(f"{task}: no questions in common between the two prediction sets")
    f = full.set_index("doc_id").loc[merged["doc_id"]].reset_index()
    q = quant.set_index("doc_id").loc[merged["doc_id"]].reset_index()
    for i, (a, b) in enumerate(zip(f["choices"], q["choices"])):
        if list(a) != list(b):
            raise QuantconfError(f"{task} doc {f['doc_id'][i]}: choices differ between the two runs; "
                                 "were they evaluated on the same data?")
    return f, q


def js_distance(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row-wise Jensen-Shannon distance, base 2 (sqrt of the JS divergence), in [0, 1]."""
    m = 0.5 * (p + q)

    def kl(a, b):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(a > 0, a * np.log2(np.where(a > 0, a, 1) / np.where(b > 0, b, 1)), 0.0).sum(1)

    return np.sqrt(np.clip(0.5 * kl(p, m) + 0.5 * kl(q, m), 0, None))


def kl_divergence(p: np.ndarray, q: np.ndarray, log_p=None, log_q=None) -> np.ndarray:
    """Row-wise KL(p || q) in nats, no smoothing: a choice with p > 0 and q = 0 gives inf, as the
    definition says. Pass log-probabilities (`log_p`, `log_q`) to get the exact value where a
    probability underflowed to 0 in float (log-likelihoods hundreds of nats apart)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        lp = np.log(p) if log_p is None else log_p
        lq = np.log(q) if log_q is None else log_q
        return np.where(p > 0, p * (lp - lq), 0.0).sum(1)


def _pvalues(pf_true, pq_true, cf, cq) -> dict:
    from scipy import stats  # lazy: scipy.stats takes ~1 s to import (the report needs none)
    diff = pq_true - pf_true
    p_t = float(stats.ttest_rel(pq_true, pf_true).pvalue) if np.any(diff != 0) else 1.0
    p_w = float(stats.wilcoxon(diff).pvalue) if np.any(diff != 0) else 1.0
    b, c = int(np.sum(cf & ~cq)), int(np.sum(~cf & cq))
    p_m = float(stats.binomtest(b, b + c, 0.5).pvalue) if b + c else 1.0
    return {"p_ttest": p_t, "p_wilcoxon": p_w, "p_mcnemar": p_m}


def compare_task(full: pd.DataFrame, quant: pd.DataFrame, n_bins: int = 15, n_conf_bins: int = 5,
                 n_boot: int = 1000, seed: int = 0, task: str = "") -> dict:
    """Full vs quantized on one multiple-choice task (either kind: `kinds.compare_task`)."""
    f, q = pair_predictions(full, quant, task)
    lf, mask = log_probs_from_predictions(f)
    lq, _ = log_probs_from_predictions(q)
    pf, pq = np.where(mask, np.exp(lf), 0.0), np.where(mask, np.exp(lq), 0.0)
    n = len(f)
    js = js_distance(pf, pq)
    out: dict = {"n": n, "js_mean": float(js.mean()), "js_median": float(np.median(js)),
                 "js_quantiles": {str(k): float(np.quantile(js, k)) for k in (0.1, 0.25, 0.75, 0.9, 0.99)},
                 "kl_full_quant": float(kl_divergence(pf, pq, lf, lq).mean()),
                 "kl_quant_full": float(kl_divergence(pq, pf, lq, lf).mean())}
    gold_col = list(f["gold"])
    conf_f = pf.max(1)
    if has_several_true(gold_col):  # multi-true: mc2 mass instead of single-label metrics
        mf, mq = mc2_mass(f["loglik"], gold_col), mc2_mass(q["loglik"], gold_col)
        out.update(delta_mc2=float(mq.mean() - mf.mean()), note="several true answers: delta of mc2 mass only")
        return out
    gold = np.asarray(gold_col, int)
    rows = np.arange(n)
    cf, cq = pf.argmax(1) == gold, pq.argmax(1) == gold
    tf, tq = pf[rows, gold], pq[rows, gold]
    ones = np.ones((1, n))
    # data-chosen metric structure (smooth-ECE bandwidth, sweep bins) of each model, fixed in replicates
    sf, sq = metric_structure(pf, mask, gold, n_bins), metric_structure(pq, mask, gold, n_bins)
    mfull = metrics_weighted(pf, mask, gold, ones, n_bins, log_probs=lf, structure=sf)
    mquant = metrics_weighted(pq, mask, gold, ones, n_bins, log_probs=lq, structure=sq)
    for m in DELTA_METRICS:
        out[f"full_{m}"] = float(mfull[m][0])
        out[f"quant_{m}"] = float(mquant[m][0])
        out[f"delta_{m}"] = float(mquant[m][0] - mfull[m][0])
    out["flips_correct_to_wrong"] = int(np.sum(cf & ~cq))
    out["flips_wrong_to_correct"] = int(np.sum(~cf & cq))
    out["pred_changed"] = int(np.sum(pf.argmax(1) != pq.argmax(1)))
    out.update(_pvalues(tf, tq, cf, cq))
    if n_boot:
        def paired_deltas(w):  # the same resampled questions for both models
            a = metrics_weighted(pf, mask, gold, w, n_bins, log_probs=lf, structure=sf)
            b = metrics_weighted(pq, mask, gold, w, n_bins, log_probs=lq, structure=sq)
            return {m: b[m] - a[m] for m in DELTA_METRICS}

        draws = bootstrap_draws(paired_deltas, n, n_boot, seed)
        out["ci"] = {f"delta_{m}": percentile_interval(draws[m]) for m in DELTA_METRICS}
        # one estimand, one interval: delta_acc as a generation comparison gives it (Bonett-Price)
        out["ci"]["delta_acc"] = paired_difference_interval(out["flips_correct_to_wrong"],
                                                            out["flips_wrong_to_correct"], n)
    bins = equal_mass_bin(conf_f, min(n_conf_bins, n))
    table = []
    for b in range(min(n_conf_bins, n)):
        s = bins == b
        if not s.any():
            continue
        table.append({"bin": b, "n": int(s.sum()), "conf_lo": float(conf_f[s].min()), "conf_hi": float(conf_f[s].max()),
                      "full_acc": float(cf[s].mean()), "quant_acc": float(cq[s].mean()),
                      "delta_conf_true": float((tq - tf)[s].mean()), "mean_abs_delta_conf_true": float(np.abs(tq - tf)[s].mean()),
                      "js_mean": float(js[s].mean()),
                      "flip_rate": float((cf != cq)[s].mean()),
                      "correct_to_wrong_rate": float((cf & ~cq)[s].mean()),
                      "pred_change_rate": float((pf.argmax(1) != pq.argmax(1))[s].mean())})
    out["by_confidence_bin"] = table
    return out


def per_sample_frame(full: pd.DataFrame, quant: pd.DataFrame, task: str = "") -> pd.DataFrame:
    """One row per paired question: full/quant confidence, gold prob, correctness, JS (for plots)."""
    f, q = pair_predictions(full, quant, task)
    pf, _ = probs_from_predictions(f)
    pq, _ = probs_from_predictions(q)
    frame = pd.DataFrame({"task": task, "doc_id": f["doc_id"], "full_conf": pf.max(1), "quant_conf": pq.max(1),
                          "full_p_true": np.nan, "quant_p_true": np.nan, "full_correct": False,
                          "quant_correct": False, "js": js_distance(pf, pq)})
    gold_col = list(f["gold"])
    if not has_several_true(gold_col):  # several true answers: no single gold choice
        gold, rows = np.asarray(gold_col, int), np.arange(len(f))
        frame["full_p_true"], frame["quant_p_true"] = pf[rows, gold], pq[rows, gold]
        frame["full_correct"], frame["quant_correct"] = pf.argmax(1) == gold, pq.argmax(1) == gold
    return frame
