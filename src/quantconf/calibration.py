"""Calibration and confidence metrics for multiple-choice predictions: pure numpy functions.

Notation: n questions, k choices (ragged tasks are padded with probability 0 and a mask),
p[i, j] the model's probability of choice j for question i (softmax over choice log-likelihoods),
y[i] the gold index, conf_i = max_j p[i, j], pred_i = argmax_j p[i, j], correct_i = [pred_i == y_i].

  acc          mean(correct)
  acc_norm     accuracy of argmax(loglik / n_chars) (lm-eval's acc_norm)
  nll          -mean(log p[i, y_i])
  brier        mean_i sum_j (p[i, j] - [j == y_i])^2            (multi-class Brier, range [0, 2])
  entropy      mean_i -sum_j p[i, j] log p[i, j]   (nats; entropy_bits = entropy / ln 2)
  conf         mean(conf_i);  conf_true = mean(p[i, y_i])
  conf_correct / conf_wrong  mean conf_i over correct / wrong predictions (NaN if none)
  ece          top-label, B equal-width bins on [0, 1] (Guo et al. 2017):
               sum_b (n_b / n) |acc_b - conf_b|; bin b = min(floor(conf * B), B - 1), so conf = 1
               lands in the last bin
  mce          max_b |acc_b - conf_b| over non-empty equal-width bins
  rmsce        sqrt(sum_b (n_b / n) (acc_b - conf_b)^2), same bins
  l2_debiased  sum_b (n_b / n) [(acc_b - conf_b)^2 - acc_b (1 - acc_b) / (n_b - 1)]  (Kumar et al.
               2019's debiased estimate of the squared L2 calibration error; bins with n_b < 2
               contribute their plug-in term; may be slightly negative for a calibrated model)
  ace          adaptive calibration error (Nixon et al. 2019): for every class j, sort p[:, j]
               and cut it into R = B equal-mass ranges; ACE = 1/(K R) sum_j sum_r
               |mean([y == j]) - mean(p[:, j])| over the range
  sce          static (class-wise) calibration error (Nixon et al. 2019): for every class j,
               B equal-width bins of p[:, j]; SCE = 1/K sum_j sum_b (n_bj / n) |acc_bj - conf_bj|

Every metric is computed from weighted sums, with one weight vector per (bootstrap) replicate;
the point estimate uses weights of 1, and `bootstrap` draws multinomial weights, so intervals
come from the same code vectorized over replicates. ACE keeps the equal-mass ranges of the
full sample in every replicate (re-cutting ranges per replicate would add quantile noise).
"""

from __future__ import annotations

import numpy as np

METRICS = ["acc", "acc_norm", "nll", "brier", "entropy", "entropy_bits", "conf", "conf_true",
           "conf_correct", "conf_wrong", "ece", "ace", "mce", "sce", "rmsce", "l2_debiased"]
NORMALIZATIONS = ("none", "tokens", "chars", "bytes")


# ---------------------------------------------------------------------------------------------
# From log-likelihoods to choice probabilities


def pad_ragged(rows, fill=np.nan) -> np.ndarray:
    k = max(len(r) for r in rows)
    out = np.full((len(rows), k), fill, dtype=float)
    for i, r in enumerate(rows):
        out[i, :len(r)] = r
    return out


def choice_probs(loglik, lengths=None) -> tuple[np.ndarray, np.ndarray]:
    """Softmax over each question's choices of loglik / length (length=None: raw loglik).

    `loglik`, `lengths`: (n, k) arrays or ragged lists. Returns (probs (n, k) padded with 0,
    mask (n, k) of real choices). Non-finite log-likelihoods raise ValueError.
    """
    if isinstance(loglik, np.ndarray):
        ll, mask = loglik.astype(float), np.ones(loglik.shape, bool)
    else:
        ll = pad_ragged(loglik, fill=0.0)
        mask = pad_ragged([[1.0] * len(r) for r in loglik], fill=0.0).astype(bool)
    if not np.isfinite(ll[mask]).all():
        bad = np.argwhere(mask & ~np.isfinite(ll))[0][0]
        raise ValueError(f"non-finite log-likelihood in question {bad}; the scorer produced NaN/inf")
    if lengths is not None:
        ln = pad_ragged(lengths) if not isinstance(lengths, np.ndarray) else lengths.astype(float)
        if (ln[mask] <= 0).any():
            raise ValueError("normalization lengths must be positive")
        ll = ll / np.where(mask, ln, 1.0)
    z = np.where(mask, ll, -np.inf)
    z = z - z.max(axis=1, keepdims=True)
    e = np.where(mask, np.exp(z), 0.0)
    return e / e.sum(axis=1, keepdims=True), mask


def mc2_mass(loglik_rows, gold_lists) -> np.ndarray:
    """lm-eval's truthfulqa_mc2 score per question: the probability mass on the true answers, from a
    softmax over the raw (unnormalised) choice log-likelihoods, exactly as lm-eval computes it."""
    out = []
    for ll, gold in zip(loglik_rows, gold_lists):
        ll = np.asarray(ll, dtype=float)
        p = np.exp(ll - ll.max())
        out.append(p[list(gold)].sum() / p.sum())
    return np.asarray(out, dtype=float)


def acc_norm_correct(loglik_rows, n_chars_rows, gold) -> np.ndarray:
    """lm-eval's acc_norm per question: argmax of loglik / (characters of the choice) == gold."""
    ll = pad_ragged(list(loglik_rows), fill=-np.inf)
    chars = pad_ragged(list(n_chars_rows), fill=1.0)
    mask = pad_ragged([[1.0] * len(r) for r in loglik_rows], fill=0.0).astype(bool)
    return np.argmax(np.where(mask, ll / chars, -np.inf), axis=1) == np.asarray(gold, int)


def accuracy(df) -> dict[str, float]:
    """acc = mean[argmax loglik == gold]; acc_norm = the same with loglik / len(choice chars), as
    lm-eval defines them (the summary `quantconf eval` prints and records in the manifest).

    For multi-true rows (gold is a list), lm-eval's truthfulqa_mc2 score is reported as `acc`
    (`mc2_mass`) and acc_norm is undefined.
    """
    if len(df) == 0:
        return {"acc": float("nan"), "acc_norm": float("nan")}
    accs, norms = [], []
    for ll, chars, gold in zip(df["loglik"], df["n_chars"], df["gold"]):
        if isinstance(gold, list):
            accs.append(float(mc2_mass([ll], [gold])[0]))
            norms.append(np.nan)
            continue
        accs.append(float(np.argmax(np.asarray(ll, dtype=float)) == gold))
        norms.append(float(acc_norm_correct([ll], [chars], [gold])[0]))
    norms = np.asarray(norms)
    return {"acc": float(np.mean(accs)), "acc_norm": float(np.mean(norms)) if not np.isnan(norms).all() else float("nan")}


def probs_from_predictions(df, normalize: str = "none") -> tuple[np.ndarray, np.ndarray]:
    """Choice probabilities of a predictions DataFrame; normalize none|tokens|chars|bytes."""
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    lengths = None if normalize == "none" else list(df[f"n_{normalize}"])
    if normalize == "tokens" and any(0 in list(x) for x in lengths):
        raise ValueError("token counts are unknown (imported lm-eval samples); use --normalize chars or bytes")
    return choice_probs(list(df["loglik"]), lengths)


def check_probs(probs: np.ndarray, gold: np.ndarray, atol: float = 1e-6) -> None:
    probs, gold = np.asarray(probs, float), np.asarray(gold)
    if probs.ndim != 2 or gold.shape != (probs.shape[0],):
        raise ValueError(f"expected probs (n, k) and gold (n,), got {probs.shape} and {gold.shape}")
    if not np.isfinite(probs).all() or (probs < 0).any():
        raise ValueError("probabilities must be finite and non-negative")
    sums = probs.sum(axis=1)
    if not np.allclose(sums, 1.0, atol=atol):
        i = int(np.argmax(np.abs(sums - 1)))
        raise ValueError(f"probabilities of question {i} sum to {sums[i]:.6g}, not 1")
    if gold.size and ((gold < 0) | (gold >= probs.shape[1])).any():
        raise ValueError("gold index out of range")


# ---------------------------------------------------------------------------------------------
# Binning


def equal_width_bin(values: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin index in 0..n_bins-1 of values in [0, 1]; 1.0 goes to the last bin."""
    return np.minimum((np.asarray(values) * n_bins).astype(int), n_bins - 1)


def equal_mass_bin(values: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin index by rank: each of n_bins ranges holds n/n_bins samples (ties broken by order)."""
    n = len(values)
    ranks = np.empty(n, dtype=int)
    ranks[np.argsort(values, kind="stable")] = np.arange(n)
    return np.minimum(ranks * n_bins // max(n, 1), n_bins - 1)


def _bin_sums(weights, bins, n_bins, *values):
    """Weighted per-bin sums: returns (count (r, B), [sum of each value (r, B)])."""
    onehot = np.zeros((len(bins), n_bins))
    onehot[np.arange(len(bins)), bins] = 1.0
    count = weights @ onehot
    return count, [weights @ (onehot * v[:, None]) for v in values]


def _safe_div(a, b):
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def reliability_bins(conf, correct, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Reliability-diagram data: per equal-width bin edges, count, mean confidence, accuracy."""
    conf, correct = np.asarray(conf, float), np.asarray(correct, float)
    bins = equal_width_bin(conf, n_bins)
    count, (sc, sa) = _bin_sums(np.ones((1, len(conf))), bins, n_bins, conf, correct)
    return {"edges": np.linspace(0, 1, n_bins + 1), "count": count[0].astype(int),
            "conf": _safe_div(sc, count)[0], "acc": _safe_div(sa, count)[0]}


# ---------------------------------------------------------------------------------------------
# All metrics, for one or many weight vectors


def metrics_weighted(probs, mask, gold, weights, n_bins, correct_norm=None) -> dict[str, np.ndarray]:
    n, k = probs.shape
    w = weights  # (r, n), rows sum to n
    total = w.sum(axis=1)
    rows = np.arange(n)
    conf = probs.max(axis=1)
    pred = probs.argmax(axis=1)
    correct = (pred == gold).astype(float)
    p_true = probs[rows, gold]
    onehot_gold = np.zeros_like(probs)
    onehot_gold[rows, gold] = 1.0
    per_sample = {
        "acc": correct,
        "nll": -np.log(np.clip(p_true, 1e-300, None)),
        "brier": ((probs - onehot_gold) ** 2).sum(axis=1),
        "entropy": -(np.where(probs > 0, probs * np.log(np.where(probs > 0, probs, 1)), 0.0)).sum(axis=1),
        "conf": conf,
        "conf_true": p_true,
    }
    if correct_norm is not None:
        per_sample["acc_norm"] = correct_norm.astype(float)
    out = {name: (w @ v) / total for name, v in per_sample.items()}
    if correct_norm is None:
        out["acc_norm"] = np.full(len(w), np.nan)
    out["entropy_bits"] = out["entropy"] / np.log(2)
    out["conf_correct"] = _safe_div(w @ (conf * correct), w @ correct)
    out["conf_wrong"] = _safe_div(w @ (conf * (1 - correct)), w @ (1 - correct))

    # top-label, equal-width bins
    count, (sc, sa) = _bin_sums(w, equal_width_bin(conf, n_bins), n_bins, conf, correct)
    gap = np.abs(sa - sc) / total[:, None]
    out["ece"] = gap.sum(axis=1)
    acc_b, conf_b = _safe_div(sa, count), _safe_div(sc, count)
    out["mce"] = np.nanmax(np.where(count > 0, np.abs(acc_b - conf_b), np.nan), axis=1)
    sq = np.where(count > 0, (acc_b - conf_b) ** 2, 0.0)
    out["rmsce"] = np.sqrt((count * sq).sum(axis=1) / total)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.where(count > 1, np.nan_to_num(acc_b * (1 - acc_b)) / (count - 1), 0.0)
    out["l2_debiased"] = (count * (sq - var)).sum(axis=1) / total

    # class-wise: ACE (equal-mass ranges) and SCE (equal-width bins), over real classes
    ace_terms, sce_terms = [], []
    for j in range(k):
        rows_j = mask[:, j]
        pj, yj, wj = probs[rows_j, j], onehot_gold[rows_j, j], w[:, rows_j]
        if pj.size == 0:
            continue
        c, (sp, sy) = _bin_sums(wj, equal_mass_bin(pj, n_bins), n_bins, pj, yj)
        ace_terms.append(np.nansum(np.where(c > 0, np.abs(_safe_div(sy, c) - _safe_div(sp, c)), np.nan), axis=1)
                         / n_bins)
        c, (sp, sy) = _bin_sums(wj, equal_width_bin(pj, n_bins), n_bins, pj, yj)
        sce_terms.append(np.abs(sy - sp).sum(axis=1) / total)
    out["ace"] = np.mean(ace_terms, axis=0)
    out["sce"] = np.mean(sce_terms, axis=0)
    return out


def calibration_metrics(probs, gold, mask=None, n_bins: int = 15, correct_norm=None) -> dict[str, float]:
    """All metrics of the module docstring for probs (n, k) and gold (n,)."""
    probs, gold = np.asarray(probs, float), np.asarray(gold, int)
    check_probs(probs, gold)
    if len(gold) == 0:
        raise ValueError("no questions to score")
    if n_bins < 1:
        raise ValueError(f"--bins must be >= 1, got {n_bins}")
    mask = np.ones_like(probs, bool) if mask is None else np.asarray(mask, bool)
    res = metrics_weighted(probs, mask, gold, np.ones((1, len(gold))), n_bins, correct_norm)
    return {m: float(res[m][0]) for m in METRICS}


def resample_weights(rng: np.random.Generator, n: int, replicates: int) -> np.ndarray:
    """(replicates, n) counts of each question in a bootstrap resample of size n."""
    return np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(replicates)]).astype(float)


def bootstrap_draws(statistic, n: int, n_boot: int, seed: int, chunk: int = 50) -> dict[str, np.ndarray]:
    """Resample n questions with replacement n_boot times: `statistic(weights)` gets resample
    weights [r, n] (r <= chunk at a time) and returns {name: [r] values}; -> {name: [n_boot]}."""
    rng = np.random.default_rng(seed)
    draws: dict[str, list[np.ndarray]] = {}
    for start in range(0, n_boot, chunk):
        for name, values in statistic(resample_weights(rng, n, min(chunk, n_boot - start))).items():
            draws.setdefault(name, []).append(values)
    return {name: np.concatenate(values) for name, values in draws.items()}


def percentile_interval(draws, level: float = 0.95) -> list[float]:
    """[lo, hi] percentile interval of the finite draws ([nan, nan] if none are finite)."""
    d = np.asarray(draws, float)
    d = d[np.isfinite(d)]
    alpha = (1 - level) / 2
    return [float(np.quantile(d, alpha)), float(np.quantile(d, 1 - alpha))] if d.size else [np.nan, np.nan]


def bootstrap_metrics(probs, gold, mask=None, n_bins: int = 15, n_boot: int = 1000, seed: int = 0,
                      correct_norm=None, level: float = 0.95, chunk: int = 50) -> dict[str, list[float]]:
    """Percentile bootstrap intervals {metric: [lo, hi]}, resampling questions with replacement."""
    probs, gold = np.asarray(probs, float), np.asarray(gold, int)
    mask = np.ones_like(probs, bool) if mask is None else np.asarray(mask, bool)
    draws = bootstrap_draws(lambda w: metrics_weighted(probs, mask, gold, w, n_bins, correct_norm),
                            len(gold), n_boot, seed, chunk)
    return {m: percentile_interval(draws[m], level) for m in METRICS}


# ---------------------------------------------------------------------------------------------
# The seed paper's definitions (Proskurina et al. 2024), kept for comparability


def proskurina2024_metrics(probs, gold, n_bins_ace: int = 15, n_bins_binary: int = 100) -> dict[str, float]:
    """Calibration numbers as the seed notebook computed them — NOT the standard definitions.

    * >2 choices: ACE with 15 equal-mass ranges per class (as `ace` above), reported as "ace".
    * 2 choices: a 100-bin equal-width "ECE" that compares each bin's mean top-label confidence
      with the mean *gold label index* of the bin (not the accuracy), reported as "ece".
    * Bins are half-open [lo, hi), so samples with confidence exactly 1.0 are dropped.
    Why we differ by default: comparing confidence with a label index only measures calibration
    when the top choice happens to be choice 1; dropping conf = 1 hides the most over-confident
    samples. Use this mode only to compare with numbers published by the paper.
    """
    probs, gold = np.asarray(probs, float), np.asarray(gold, int)
    check_probs(probs, gold)
    conf = probs.max(axis=1)
    if probs.shape[1] > 2:
        res = metrics_weighted(probs, np.ones_like(probs, bool), gold, np.ones((1, len(gold))), n_bins_ace)
        return {"ace": float(res["ace"][0])}
    edges = np.linspace(0, 1, n_bins_binary + 1)
    keep = conf < 1.0
    bins = np.digitize(conf[keep], edges) - 1
    total, ece = keep.sum(), 0.0
    for b in np.unique(bins):
        sel = bins == b
        ece += sel.sum() / total * abs(gold[keep][sel].mean() - conf[keep][sel].mean())
    return {"ece": float(ece)}


# ---------------------------------------------------------------------------------------------
# A task's predictions -> metrics


def task_metrics(df, n_bins: int = 15, n_boot: int = 1000, normalize: str = "none", seed: int = 0,
                 compat: str | None = None) -> dict:
    """Metrics (+ bootstrap CIs) of one task's predictions DataFrame."""
    n = len(df)
    if n == 0:
        raise ValueError("no questions")
    gold_col = list(df["gold"])
    if any(isinstance(g, list) for g in gold_col):
        # truthfulqa_mc2: lm-eval's mc2, always from raw log-likelihoods (`normalize` does not apply)
        probs_from_predictions(df, normalize)  # same validation as single-label tasks
        mc2 = mc2_mass(df["loglik"], gold_col)
        out = {"n": n, "mc2": float(mc2.mean()), "acc": float(mc2.mean()),
               "note": "several true answers: single-label calibration metrics skipped"}
        if n_boot:
            rng = np.random.default_rng(seed)
            means = [mc2[rng.integers(0, n, n)].mean() for _ in range(n_boot)]
            out["ci"] = {"mc2": [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]}
        return out
    probs, mask = probs_from_predictions(df, normalize)
    gold = np.asarray(gold_col, int)
    correct_norm = acc_norm_correct(df["loglik"], df["n_chars"], gold)
    out = {"n": n, **calibration_metrics(probs, gold, mask, n_bins, correct_norm)}
    if n_boot:
        out["ci"] = bootstrap_metrics(probs, gold, mask, n_bins, n_boot, seed, correct_norm)
    if compat == "proskurina2024":
        out["proskurina2024"] = proskurina2024_metrics(probs, gold)
    elif compat not in (None, "none"):
        raise ValueError(f"unknown --compat {compat!r}; known: proskurina2024")
    return out
