"""Calibration and confidence metrics for multiple-choice predictions: pure numpy functions.

Notation: n questions, k choices (ragged tasks are padded with probability 0 and a mask),
p[i, j] the model's probability of choice j for question i (softmax over choice log-likelihoods),
y[i] the gold index, conf_i = max_j p[i, j], pred_i = argmax_j p[i, j], correct_i = [pred_i == y_i].

  acc          mean(correct)
  acc_norm     accuracy of argmax(loglik / n_chars) (lm-eval's acc_norm)
  nll          -mean(log p[i, y_i]), with log p = z - logsumexp(z) computed from the log-likelihoods
               (exact even when p underflows: a gold choice 2000 nats behind costs 2000, not 690)
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
               and cut it into R = B equal-mass ranges; ACE = 1/K sum_j mean_r
               |mean([y == j]) - mean(p[:, j])| over the range. Nixon et al. write 1/(KR) sum_r
               with every range holding n/R predictions; with fewer predictions than ranges some
               ranges are empty, and we average over the non-empty ones (dividing by R would count
               empty ranges as perfectly calibrated: n=5, R=15 gave a third of the value)
  tace         thresholded ACE (Nixon et al.): ACE over the class probabilities above 1e-2 only
  sce          static (class-wise) calibration error (Nixon et al. 2019): for every class j,
               B equal-width bins of p[:, j]; SCE = 1/K sum_j sum_b (n_bj / n) |acc_bj - conf_bj|
  smece        smooth ECE (Błasiok & Nakkiran 2023), top-label: residuals correct - conf smoothed by a
               reflected Gaussian kernel of bandwidth sigma*, the fixed point sigma* = smECE(sigma*)
               (`smooth_ece_at`, `smooth_ece_bandwidth`; agrees with the relplot package)
  ece_sweep    top-label ECE with equal-mass bins, as many as keep bin accuracy monotone in
               confidence (Roelofs et al. 2022, p = 1)
  auroc        area under the ROC of confidence as a detector of its own correctness
               (= Mann-Whitney U / (n_correct n_wrong), ties count 1/2)
  aurc, eaurc  area under the risk-coverage curve (Geifman & El-Yaniv 2017; tied confidences in
               random order, expectation taken), and its excess over a perfect ranking
  brier_reliability, brier_resolution, brier_uncertainty, brier_within_bin
               Murphy's decomposition of the multi-class Brier score, summed over classes: for class
               j, B equal-width bins of p[:, j]; REL = sum_b n_b/n (mean p - mean y)^2, RES =
               sum_b n_b/n (mean y_b - mean y)^2, UNC = (n_j/n) mean y (1 - mean y). With forecasts
               that vary inside a bin, brier = REL - RES + UNC + within-bin terms (Stephenson et al.
               2008); brier_within_bin is that remainder, so the identity holds exactly

Every metric is computed from weighted sums, with one weight vector per (bootstrap) replicate;
the point estimate uses weights of 1, and `bootstrap` draws multinomial weights, so intervals
come from the same code vectorized over replicates. ACE keeps the equal-mass ranges of the
full sample in every replicate (re-cutting ranges per replicate would add quantile noise); in the
same way smECE keeps the full sample's bandwidth and ece_sweep its bin count (`metric_structure`).
"""

from __future__ import annotations

import contextlib
import itertools

import numpy as np

from quantconf.metric_registry import computed_for
from quantconf.errors import QuantconfError

METRICS = computed_for("multiple_choice")  # every registered one (metric_registry.py), computed together
TACE_THRESHOLD = 1e-2  # Nixon et al.'s thresholded ACE: only class probabilities above this count
NORMALIZATIONS = ("none", "tokens", "chars", "bytes")


# ---------------------------------------------------------------------------------------------
# From log-likelihoods to choice probabilities


def ragged_mask(rows) -> np.ndarray:
    """(n, k) mask of the entries of ragged rows (k: the longest row)."""
    lengths = np.fromiter(map(len, rows), int, count=len(rows))
    return np.arange(lengths.max()) < lengths[:, None]


def pad_ragged(rows, fill=np.nan) -> np.ndarray:
    """Ragged rows (lists or arrays) as one (n, k) float array padded with `fill`; filled in one step from
    the rows' values in order (the simulations call this thousands of times)."""
    mask = ragged_mask(rows)
    out = np.full(mask.shape, fill, dtype=float)
    try:
        out[mask] = np.fromiter(itertools.chain.from_iterable(rows), float, count=int(mask.sum()))
    except (TypeError, ValueError):  # entries fromiter does not take (None: NaN, as numpy assigns it)
        for i, r in enumerate(rows):
            out[i, :len(r)] = r
    return out


def choice_log_probs(loglik, lengths=None) -> tuple[np.ndarray, np.ndarray]:
    """Log-softmax over each question's choices of loglik / length (length=None: raw loglik).

    `loglik`, `lengths`: (n, k) arrays or ragged lists. Returns (log_probs (n, k) padded with -inf,
    mask (n, k) of real choices). Computed as z - logsumexp(z), so a choice thousands of nats behind
    keeps its exact log-probability (its probability underflows to 0, its NLL does not).
    Non-finite log-likelihoods raise ValueError.
    """
    if isinstance(loglik, np.ndarray):
        ll, mask = loglik.astype(float), np.ones(loglik.shape, bool)
    else:
        ll, mask = pad_ragged(loglik, fill=0.0), ragged_mask(loglik)
    if not np.isfinite(ll[mask]).all():
        bad = np.argwhere(mask & ~np.isfinite(ll))[0][0]
        raise ValueError(f"non-finite log-likelihood in question {bad}; the scorer produced NaN/inf")
    if lengths is not None:
        ln = pad_ragged(lengths) if not isinstance(lengths, np.ndarray) else lengths.astype(float)
        if (ln[mask] <= 0).any():
            raise ValueError("normalization lengths must be positive")
        ll = ll / np.where(mask, ln, 1.0)
    return masked_log_softmax(ll, mask), mask


def masked_log_softmax(z: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Log-softmax of each row of `z` over its real entries (`mask`); padded entries are -inf.
    z - max - log(sum exp): exact for entries far behind the best (their probability underflows, their
    log-probability does not)."""
    z = np.where(mask, z, -np.inf)
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.where(mask, np.exp(z), 0.0).sum(axis=1, keepdims=True))
    return np.where(mask, z - log_norm, -np.inf)


def choice_probs(loglik, lengths=None) -> tuple[np.ndarray, np.ndarray]:
    """Softmax over each question's choices (see `choice_log_probs`): (probs padded with 0, mask)."""
    log_probs, mask = choice_log_probs(loglik, lengths)
    return np.where(mask, np.exp(log_probs), 0.0), mask


def check_finite_logliks(df) -> None:
    """One rule everywhere: a NaN or infinite choice log-likelihood is an error naming task, doc and choice."""
    with contextlib.suppress(TypeError, ValueError):  # None, text: the loop below names them
        if np.isfinite(np.fromiter(itertools.chain.from_iterable(df["loglik"]), float)).all():
            return  # the common case, in one step; the loop below names the first bad entry
    doc_ids = df["doc_id"] if "doc_id" in df else range(len(df))
    tasks = df["task"] if "task" in df else ["predictions"] * len(df)
    for doc_id, task, ll in zip(doc_ids, tasks, df["loglik"]):
        ll = np.asarray(ll, dtype=float)
        if not np.isfinite(ll).all():
            j = int(np.argmax(~np.isfinite(ll)))
            raise QuantconfError(f"{task} doc {doc_id} choice {j}: log-likelihood {ll[j]} is not finite "
                                 "(the scorer produced NaN/inf: a broken model or checkpoint); re-run eval")


def has_several_true(gold_column) -> bool:
    """Whether a task's questions have several true answers (gold is a list: TruthfulQA mc2): such a
    task has no single gold choice, so single-label metrics, flips and temperature scaling skip it."""
    return any(isinstance(g, (list, tuple, np.ndarray)) for g in gold_column)


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
    """lm-eval's acc_norm per question: argmax of loglik / (characters of the choice) == gold.

    An empty choice (0 characters; TruthfulQA's hub data has a few) scores -inf, so it is never the
    acc_norm prediction: what lm-eval's loglik / 0 gives for a negative log-likelihood, without its
    division warning."""
    ll = pad_ragged(list(loglik_rows), fill=-np.inf)
    chars = pad_ragged(list(n_chars_rows), fill=1.0)
    mask = ragged_mask(list(loglik_rows))
    score = np.where(mask & (chars > 0), ll / np.where(chars > 0, chars, 1.0), -np.inf)
    return np.argmax(score, axis=1) == np.asarray(gold, int)


def accuracy(df) -> dict[str, float]:
    """acc = mean[argmax loglik == gold]; acc_norm = the same with loglik / len(choice chars), as
    lm-eval defines them (the summary `quantconf eval` prints and records in the manifest).

    For multi-true rows (gold is a list), lm-eval's truthfulqa_mc2 score is reported as `acc`
    (`mc2_mass`) and acc_norm is undefined. (Either kind of task: `kinds.accuracy`.)
    """
    if len(df) == 0:
        return {"acc": float("nan"), "acc_norm": float("nan")}
    check_finite_logliks(df)
    accs, norms = [], []
    for ll, chars, gold in zip(df["loglik"], df["n_chars"], df["gold"]):
        if isinstance(gold, list):
            accs.append(float(mc2_mass([ll], [gold])[0]))
            norms.append(np.nan)
            continue
        accs.append(float(np.argmax(np.asarray(ll, dtype=float)) == gold))
        norms.append(float(acc_norm_correct([ll], [chars], [gold])[0]))
    norms = np.asarray(norms)
    # acc_norm over the single-label rows (undefined when every row has several true answers)
    return {"acc": float(np.mean(accs)), "acc_norm": float(np.nanmean(norms)) if not np.isnan(norms).all() else float("nan")}


def log_probs_from_predictions(df, normalize: str = "none") -> tuple[np.ndarray, np.ndarray]:
    """Choice log-probabilities of a predictions DataFrame; normalize none|tokens|chars|bytes."""
    if normalize not in NORMALIZATIONS:
        raise QuantconfError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}", param="normalize")
    check_finite_logliks(df)
    lengths = None if normalize == "none" else list(df[f"n_{normalize}"])
    if normalize == "tokens" and any(0 in list(x) for x in lengths):
        raise ValueError("token counts are unknown (imported lm-eval samples); use --normalize chars or bytes")
    if lengths is not None:
        for doc_id, row in zip(df["doc_id"] if "doc_id" in df else range(len(df)), lengths):
            if 0 in list(row):
                raise QuantconfError(f"doc {doc_id} choice {list(row).index(0)} is empty (0 {normalize}): "
                                     f"normalize {normalize} is undefined for it; use normalize none")
    return choice_log_probs(list(df["loglik"]), lengths)


def probs_from_predictions(df, normalize: str = "none") -> tuple[np.ndarray, np.ndarray]:
    """Choice probabilities of a predictions DataFrame; normalize none|tokens|chars|bytes."""
    log_probs, mask = log_probs_from_predictions(df, normalize)
    return np.where(mask, np.exp(log_probs), 0.0), mask


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


def wilson_interval(successes, count, z: float = 1.959964) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a binomial proportion (95% by default); NaN where count is 0."""
    successes, count = np.asarray(successes, float), np.asarray(count, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = successes / count
        centre = (p + z * z / (2 * count)) / (1 + z * z / count)
        half = z * np.sqrt(p * (1 - p) / count + z * z / (4 * count * count)) / (1 + z * z / count)
    return np.where(count > 0, centre - half, np.nan), np.where(count > 0, centre + half, np.nan)


def paired_difference_interval(b, c, n, level: float = 0.95) -> list[float]:
    """Bonett & Price's (2012) adjusted Wald interval of a paired difference of proportions: here
    delta_acc = (c - b) / n in expectation, b the questions right only in the first (full) model, c
    those right only in the second (quantized). With one added to each discordant count,
    p_b = (b + 1) / (n + 2), p_c = (c + 1) / (n + 2), the interval is
    (p_c - p_b) +- z sqrt((p_b + p_c - (p_c - p_b)^2) / (n + 2)), clipped to [-1, 1].
    Its exact coverage (every multinomial outcome enumerated, tests/test_paired.py) is 0.950-0.958
    from 150 questions on and 0.954-1 with 24-50, for flip rates from 1e-4 to 0.25: near-nominal, where
    the earlier Clopper-Pearson x Bonferroni interval covered 0.978-0.9985 and was 1.5-1.75x wider.
    One interval for both kinds of task (multiple choice and generation): one estimand, one interval."""
    from scipy.stats import norm

    if n <= 0:
        return [float("nan"), float("nan")]
    z = float(norm.ppf(1 - (1 - level) / 2))
    pb, pc = (b + 1) / (n + 2), (c + 1) / (n + 2)
    d = pc - pb
    half = z * np.sqrt(max(pb + pc - d * d, 0.0) / (n + 2))
    return [float(max(d - half, -1.0)), float(min(d + half, 1.0))]


def reliability_bins(conf, correct, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Reliability-diagram data: per equal-width bin edges, count, mean confidence, accuracy, and
    the accuracy's 95% Wilson interval (acc_lo, acc_hi), so a reader sees which points mean something."""
    conf, correct = np.asarray(conf, float), np.asarray(correct, float)
    bins = equal_width_bin(conf, n_bins)
    count, (sc, sa) = _bin_sums(np.ones((1, len(conf))), bins, n_bins, conf, correct)
    lo, hi = wilson_interval(sa[0], count[0])
    return {"edges": np.linspace(0, 1, n_bins + 1), "count": count[0].astype(int),
            "conf": _safe_div(sc, count)[0], "acc": _safe_div(sa, count)[0], "acc_lo": lo, "acc_hi": hi}


# ---------------------------------------------------------------------------------------------
# Metrics that need more than bin sums: smooth ECE, the monotone sweep, AUROC, risk-coverage


def reflected_gaussian_kernel(t: np.ndarray, f: np.ndarray, sigma: float) -> np.ndarray:
    """K[a, i]: Gaussian density of width sigma at t[a] around f[i], reflected at 0 and 1 (so the
    kernel keeps its mass on [0, 1]), the kernel of Błasiok & Nakkiran's smooth ECE."""
    d = t[:, None] - f[None, :]
    s = t[:, None] + f[None, :]
    out = np.zeros_like(d)
    ranges = ((t.min() - f.max(), t.max() - f.min()), (t.min() + f.min(), t.max() + f.max()))  # of d, of s

    def image(x, span, m):  # one image's terms, or None where every one underflows to exactly 0.0
        nearest = max(span[0] - 2 * m, 2 * m - span[1], 0.0)
        return np.exp(-0.5 * ((x - 2 * m) / sigma) ** 2) if np.exp(-0.5 * (nearest / sigma) ** 2) > 0.0 else None

    for m in range(-3, 4):  # images at 2m +- f; |m| <= 3 is exact to float precision for sigma <= 1
        # An image whose distances are all beyond ~38.6 sigma adds exact zeros: skipping it leaves the sum bit
        # for bit the same (x + 0.0 == x), and small bandwidths keep 4-6 of the 14 images.
        a, b = image(d, ranges[0], m), image(s, ranges[1], m)
        if a is not None or b is not None:
            out += a + b if a is not None and b is not None else (a if a is not None else b)
    return out / (np.sqrt(2 * np.pi) * sigma)


def smooth_ece_at(conf, correct, sigma: float, weights=None, kernel=None) -> np.ndarray:
    """Smooth ECE at bandwidth sigma (Błasiok & Nakkiran 2023): with residuals r_i = correct_i - conf_i,
    the kernel-smoothed residual integrated against the kernel density of the confidences,
    ``sum_t |sum_i w_i K(t, conf_i) r_i| / sum_t sum_i w_i K(t, conf_i)`` on an even grid t of [0, 1]
    (max(200, 10 / sigma) points, as relplot evaluates it). `weights` (r, n): one value per row. `kernel`:
    `smooth_ece_kernel(conf, sigma)`, when the caller scores the same confidences many times."""
    conf, correct = np.asarray(conf, float), np.asarray(correct, float)
    w = np.ones((1, len(conf))) if weights is None else np.asarray(weights, float)
    k = smooth_ece_kernel(conf, sigma) if kernel is None else kernel  # (T, n)
    num = np.abs((w * (correct - conf)) @ k.T).sum(axis=1)
    return num / (w @ k.T).sum(axis=1)


def smooth_ece_kernel(conf, sigma: float) -> np.ndarray:
    """The (T, n) kernel of `smooth_ece_at` on its grid of T = max(200, 10 / sigma) points."""
    return reflected_gaussian_kernel(np.linspace(0, 1, max(200, int(round(10 / sigma)))), np.asarray(conf, float),
                                     sigma)


def smooth_ece_bandwidth(conf, correct, eps: float = 1e-3, refine: int = 10) -> float:
    """The bandwidth sigma* with smECE_sigma* = sigma*, found as relplot does: bisection on [0, 1]
    for the smallest sigma with sigma >= smECE_sigma (`refine` halvings, stopping below `eps`)."""
    def at_or_above(sigma):
        return sigma < eps or sigma < smooth_ece_at(conf, correct, sigma)[0]

    if at_or_above(1.0):
        return 1.0
    hi, lo = 1.0, 0.0
    for _ in range(refine):
        mid = (hi + lo) / 2
        if at_or_above(mid):
            lo = mid
        else:
            hi = mid
    return hi


def sweep_bin_count(conf, correct) -> int:
    """Roelofs et al. (2022)'s ECE_sweep: the largest number of equal-mass bins (`equal_mass_bin`)
    for which bin accuracy, in order of confidence, is monotonically non-decreasing."""
    conf, correct = np.asarray(conf, float), np.asarray(correct, float)
    # Bins are contiguous runs in rank order, so if correctness itself never decreases in that order
    # (all correct, all wrong, or confidence separating them perfectly) every bin count is monotone
    # and the sweep would run to n: answer n at once (the same value, without the O(n^2) loop)
    if np.all(np.diff(correct[np.argsort(conf, kind="stable")]) >= 0):
        return len(conf)
    best = 1
    for b in range(2, len(conf) + 1):
        count, (sa,) = _bin_sums(np.ones((1, len(conf))), equal_mass_bin(conf, b), b, correct)
        if np.any(np.diff(sa[0] / count[0]) < 0):
            break
        best = b
    return best


def weighted_auroc(conf, correct, weights) -> np.ndarray:
    """AUROC of confidence as a detector of its own correctness = Mann-Whitney U / (n_correct n_wrong):
    P(conf of a correct answer > conf of a wrong one) + 0.5 P(tie), with question weights (r, n)."""
    order = np.argsort(conf, kind="stable")
    c_sorted, ok = conf[order], correct[order].astype(bool)
    w = weights[:, order]
    wrong_w = np.where(~ok, w, 0.0)
    cum = np.cumsum(wrong_w, axis=1)
    first = np.searchsorted(c_sorted, c_sorted, side="left")  # start of each sample's tie group
    last = np.searchsorted(c_sorted, c_sorted, side="right") - 1
    below = np.where(first > 0, cum[:, np.maximum(first - 1, 0)], 0.0)
    tied = cum[:, last] - below
    pairs = (np.where(ok, w, 0.0) * (below + 0.5 * tied)).sum(axis=1)
    return _safe_div(pairs, np.where(ok, w, 0).sum(axis=1) * wrong_w.sum(axis=1))


def _risk_coverage_area(key, wrong, weights) -> np.ndarray:
    """Mean selective risk over coverage, questions taken in decreasing `key`, weights as multiplicities
    (a bootstrap count of 2 is two copies) and every group of equal keys in uniformly random order:
    the expected area, so it depends on neither the question order nor how duplicates are counted.
    A group of W copies with E errors after K copies with C errors adds
        sum_{j=1..W} (C + j E/W) / (K + j) = C dH + (E/W) (W - K dH),  dH = sum_{j=1..W} 1/(K + j)
    (digamma differences, which also take fractional weights)."""
    from scipy.special import digamma

    order = np.argsort(-key, kind="stable")
    k = key[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    w = weights[:, order]
    group_w = np.add.reduceat(w, starts, axis=1)
    group_e = np.add.reduceat(w * wrong[order], starts, axis=1)
    before_w = np.cumsum(group_w, axis=1) - group_w
    before_e = np.cumsum(group_e, axis=1) - group_e
    dh = digamma(before_w + group_w + 1) - digamma(before_w + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        area = np.where(group_w > 0, before_e * dh + group_e / group_w * (group_w - before_w * dh), 0.0)
    return area.sum(axis=1) / w.sum(axis=1)


def weighted_aurc(conf, correct, weights) -> tuple[np.ndarray, np.ndarray]:
    """(AURC, E-AURC) of Geifman & El-Yaniv: questions in order of decreasing confidence; risk(k) =
    error rate of the k most confident; AURC = mean over k of risk(k). Tied confidences (and the copies
    a bootstrap draws) are in random order and the expectation is taken (`_risk_coverage_area`), so
    point estimates and bootstrap replicates use one tie-invariant definition. E-AURC subtracts the
    AURC of a perfect ranking (every correct answer first)."""
    wrong = 1.0 - correct
    aurc = _risk_coverage_area(np.asarray(conf, float), wrong, weights)
    best = _risk_coverage_area(np.asarray(correct, float), wrong, weights)
    return aurc, aurc - best


# ---------------------------------------------------------------------------------------------
# All metrics, for one or many weight vectors


def metric_structure(probs, mask, gold, n_bins) -> dict:
    """What some metrics choose from the data once, on the full sample, and keep fixed in every
    bootstrap replicate (re-choosing per replicate would add selection noise): the smooth-ECE
    bandwidth and the ECE_sweep bin count. The smooth-ECE kernel depends only on these confidences and
    that bandwidth, so it is kept too (every resample reuses it) unless it would exceed KEPT_KERNEL_CELLS."""
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == gold).astype(float)
    sigma = smooth_ece_bandwidth(conf, correct)
    out = {"smece_sigma": sigma, "sweep_bins": sweep_bin_count(conf, correct)}
    if max(200, int(round(10 / sigma))) * len(conf) <= KEPT_KERNEL_CELLS:
        out["smece_kernel"] = smooth_ece_kernel(conf, sigma)
    return out


KEPT_KERNEL_CELLS = 4_000_000  # 32 MB of float64 per model: a few thousand questions


def metrics_weighted(probs, mask, gold, weights, n_bins, correct_norm=None, log_probs=None,
                     structure=None, tace_threshold: float = TACE_THRESHOLD, only=None) -> dict[str, np.ndarray]:
    """Every metric in METRICS for each row of question weights (r, n); see the module docstring.
    `log_probs` (exact log-softmax) makes NLL exact where a probability underflows to 0. `only` (a set
    of names) skips the costly groups none of whose metrics is asked for (smECE, the sweep, ranking,
    class-wise); the means and the top-label binned metrics are always computed."""
    def wanted(*names):
        return only is None or any(x in only for x in names)

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
    with np.errstate(divide="ignore"):
        log_p_true = log_probs[rows, gold] if log_probs is not None else np.log(p_true)
    per_sample = {
        "acc": correct,
        "nll": -log_p_true,
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

    # data-chosen structure (fixed across replicates): smooth ECE, ECE_sweep
    if wanted("smece", "ece_sweep"):
        structure = structure or metric_structure(probs, mask, gold, n_bins)
        out["smece"] = smooth_ece_at(conf, correct, structure["smece_sigma"], w, structure.get("smece_kernel"))
        b = structure["sweep_bins"]
        count_s, (sc_s, sa_s) = _bin_sums(w, equal_mass_bin(conf, b), b, conf, correct)
        out["ece_sweep"] = np.abs(sa_s - sc_s).sum(axis=1) / total

    # confidence as a detector of correctness; selective risk
    if wanted("auroc", "aurc", "eaurc"):
        out["auroc"] = weighted_auroc(conf, correct, w)
        out["aurc"], out["eaurc"] = weighted_aurc(conf, correct, w)
    if not wanted("ace", "tace", "sce", "brier_reliability", "brier_resolution", "brier_uncertainty",
                  "brier_within_bin"):
        return out

    # class-wise: ACE and TACE (equal-mass ranges, mean over non-empty ranges), SCE (equal-width
    # bins), and Murphy's decomposition of the multi-class Brier score (per class, equal-width bins)
    ace_terms, tace_terms, sce_terms = [], [], []
    rel, res, unc = np.zeros(len(w)), np.zeros(len(w)), np.zeros(len(w))
    for j in range(k):
        rows_j = mask[:, j]
        pj, yj, wj = probs[rows_j, j], onehot_gold[rows_j, j], w[:, rows_j]
        if pj.size == 0:
            continue
        ace_terms.append(_range_gap(pj, yj, wj, n_bins))
        above = pj > tace_threshold
        if above.any():
            tace_terms.append(_range_gap(pj[above], yj[above], wj[:, above], n_bins))
        c, (sp, sy) = _bin_sums(wj, equal_width_bin(pj, n_bins), n_bins, pj, yj)
        sce_terms.append(np.abs(sy - sp).sum(axis=1) / total)
        y_bar_b, p_bar_b = _safe_div(sy, c), _safe_div(sp, c)
        wsum = wj.sum(axis=1)  # 0 in a resample that drew no question with a choice j (ragged tasks)
        y_bar = np.where(wsum > 0, (wj @ yj) / np.where(wsum > 0, wsum, 1.0), 0.0)
        rel += np.nansum(c * (p_bar_b - y_bar_b) ** 2, axis=1) / total
        res += np.nansum(c * (y_bar_b - y_bar[:, None]) ** 2, axis=1) / total
        unc += wj.sum(axis=1) * y_bar * (1 - y_bar) / total
    out["ace"] = np.mean(ace_terms, axis=0)
    out["tace"] = np.mean(tace_terms, axis=0) if tace_terms else np.full(len(w), np.nan)
    out["sce"] = np.mean(sce_terms, axis=0)
    out["brier_reliability"], out["brier_resolution"], out["brier_uncertainty"] = rel, res, unc
    out["brier_within_bin"] = out["brier"] - (rel - res + unc)
    return out


def _range_gap(p, y, w, n_ranges):
    """Mean over the non-empty equal-mass ranges of p of |mean y - mean p| (Nixon et al.'s ACE term
    for one class). With fewer predictions than ranges, only the ranges that hold one count."""
    c, (sp, sy) = _bin_sums(w, equal_mass_bin(p, n_ranges), n_ranges, p, y)
    gaps = np.where(c > 0, np.abs(_safe_div(sy, c) - _safe_div(sp, c)), 0.0)
    return _safe_div(gaps.sum(axis=1), (c > 0).sum(axis=1))


def calibration_metrics(probs, gold, mask=None, n_bins: int = 15, correct_norm=None,
                        log_probs=None) -> dict[str, float]:
    """All metrics of the module docstring for probs (n, k) and gold (n,)."""
    probs, gold = np.asarray(probs, float), np.asarray(gold, int)
    check_probs(probs, gold)
    if len(gold) == 0:
        raise ValueError("no questions to score")
    if n_bins < 1:
        raise QuantconfError(f"n_bins must be >= 1, got {n_bins}", param="n_bins")
    mask = np.ones_like(probs, bool) if mask is None else np.asarray(mask, bool)
    res = metrics_weighted(probs, mask, gold, np.ones((1, len(gold))), n_bins, correct_norm, log_probs)
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
                      correct_norm=None, level: float = 0.95, chunk: int = 50, log_probs=None) -> dict[str, list[float]]:
    """Percentile bootstrap intervals {metric: [lo, hi]}, resampling questions with replacement."""
    probs, gold = np.asarray(probs, float), np.asarray(gold, int)
    mask = np.ones_like(probs, bool) if mask is None else np.asarray(mask, bool)
    structure = metric_structure(probs, mask, gold, n_bins)
    draws = bootstrap_draws(lambda w: metrics_weighted(probs, mask, gold, w, n_bins, correct_norm, log_probs, structure),
                            len(gold), n_boot, seed, chunk)
    return {m: percentile_interval(draws[m], level) for m in METRICS}


# ---------------------------------------------------------------------------------------------
# The seed paper's definitions (Proskurina et al. 2024, notebook 3_Calibration_Error_Metrics), kept
# for comparability with its numbers, quirks and all. Each quirk, and what the standard metric does:
#  * rows: only questions with as many choices as the first one are kept (ragged tasks lose rows);
#    standard: every question, padded choices masked out.
#  * 2 choices, "ace": a 100-bin equal-width ECE comparing the bin's mean confidence with the mean
#    gold *label index* (not the accuracy); standard ECE compares with accuracy.
#  * 2 choices, "mce": the largest signed (conf - label index) bin difference, not |acc - conf|.
#  * >2 choices, "ace": ranges cut at every (n // 15)-th sorted top-label confidence; a confidence
#    above the last cut goes to range 0; within a range, questions are grouped by gold label and
#    top-label accuracy/confidence compared; standard ACE ranks each class's own probability.
#  * >2 choices, "mce" (100 bins) and "sce" (15 bins): bins from np.digitize on [0, 1) edges, and
#    the top bin (confidence >= 0.99, resp. >= 14/15) is never visited: those questions are dropped.
#  * entropy in bits; a probability of exactly 0 makes it NaN (0 * log 0).


def _digitize_unit(conf, n_bins):
    """The notebook's binning: np.digitize against the left edges 0, 1/B, ..., i.e. indices 1..B."""
    return np.digitize(conf, np.arange(0.0, 1.0, 1.0 / n_bins))


def _by_gold_label_gaps(probs, gold, in_bin):
    """For each gold label k: |accuracy - mean top-label confidence| of the bin's questions with label k."""
    gaps = []
    for k in range(probs.shape[1]):
        sel = in_bin & (gold == k)
        if sel.any():
            gaps.append((sel.sum(), abs(np.mean(probs[sel].argmax(1) == k) - np.mean(probs[sel].max(1)))))
    return gaps


def proskurina2024_metrics(loglik_rows, gold) -> dict[str, float]:
    """The seed notebook's numbers (see the comment above for what differs from the standard)."""
    k0 = len(loglik_rows[0])
    keep = [i for i, r in enumerate(loglik_rows) if len(r) == k0]
    ll = np.asarray([loglik_rows[i] for i in keep], float)
    gold = np.asarray(gold, int)[keep]
    probs = np.exp(ll - ll.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    n, k = probs.shape
    conf, pred = probs.max(1), probs.argmax(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -(probs * np.log2(probs)).sum(1)
    out = {"n_used": n, "conf": float(conf.mean()), "conf_true": float(probs[np.arange(n), gold].mean()),
           "c_pos": float(conf[pred == gold].mean()) if (pred == gold).any() else float("nan"),
           "c_neg": float(conf[pred != gold].mean()) if (pred != gold).any() else float("nan"),
           "entropy": float(entropy.mean())}
    if k <= 2:
        bins = _digitize_unit(conf, 100)
        groups = [(np.sum(bins == b), conf[bins == b].mean() - gold[bins == b].mean()) for b in np.unique(bins)]
        out["ace"] = float(sum(c / n * abs(d) for c, d in groups))
        out["mce"] = float(max(d for _, d in groups))
    else:
        out["ace"] = _proskurina2024_ace(probs, gold, 15)
        bins = _digitize_unit(conf, 100)
        out["mce"] = float(max([g for b in range(100) for _, g in _by_gold_label_gaps(probs, gold, bins == b)],
                               default=-1))
    bins = _digitize_unit(conf, 15)
    out["sce"] = float(sum(c / n * g for b in range(15) for c, g in _by_gold_label_gaps(probs, gold, bins == b)) / k)
    return out


def _proskurina2024_ace(probs, gold, n_ranges):
    n, k = probs.shape
    step = n // n_ranges
    if step == 0:  # the notebook fails here (a range step of 0); say so instead of inventing a value
        return float("nan")
    conf = probs.max(1)
    cuts = np.sort(conf)[0:step * n_ranges:step]
    above = conf[:, None] <= cuts[None, :]
    ranges = np.argmax(above, axis=1)  # no cut at or above the confidence -> range 0
    total = sum(g for r in range(n_ranges) for _, g in _by_gold_label_gaps(probs, gold, ranges == r))
    return float(total / (k * n_ranges))


COMPAT_MODES = ("proskurina2024", "helm")


# ---------------------------------------------------------------------------------------------
# A task's predictions -> metrics


CI_NOTE = ("percentile bootstrap intervals over questions; those of ece, ace, mce, sce, rmsce and ece_sweep are for "
           "the binned plug-in quantity, which is biased upward (a perfectly calibrated model's ECE is > 0 and its "
           "interval rarely covers 0: 0/40 simulated studies of 400 questions); for claims about calibration error "
           "use l2_debiased (Kumar et al. 2019)")


def task_metrics(df, n_bins: int = 15, n_boot: int = 1000, normalize: str = "none", seed: int = 0,
                 compat: str | None = None) -> dict:
    """Metrics (+ bootstrap CIs) of one multiple-choice task's predictions DataFrame (either kind:
    `kinds.task_metrics`)."""
    n = len(df)
    if n == 0:
        raise ValueError("no questions")
    if compat not in (None, "none", *COMPAT_MODES):
        raise QuantconfError(f"compat {compat!r} is unknown; known: {', '.join(COMPAT_MODES)}", param="compat")
    if n_bins < 1:
        raise QuantconfError(f"n_bins must be >= 1, got {n_bins}", param="n_bins")
    gold_col = list(df["gold"])
    if has_several_true(gold_col):
        # truthfulqa_mc2: lm-eval's mc2, always from raw log-likelihoods (`normalize` does not apply)
        log_probs_from_predictions(df, normalize)  # same validation as single-label tasks
        mc2 = mc2_mass(df["loglik"], gold_col)
        out = {"n": n, "mc2": float(mc2.mean()), "acc": float(mc2.mean()),
               "note": "several true answers: single-label calibration metrics skipped"}
        if n_boot:
            means = bootstrap_draws(lambda w: {"mc2": w @ mc2 / n}, n, n_boot, seed)["mc2"]
            out["ci"] = {"mc2": [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]}
        return out
    log_probs, mask = log_probs_from_predictions(df, normalize)
    probs = np.where(mask, np.exp(log_probs), 0.0)
    gold = np.asarray(gold_col, int)
    correct_norm = acc_norm_correct(df["loglik"], df["n_chars"], gold)
    out = {"n": n, **calibration_metrics(probs, gold, mask, n_bins, correct_norm, log_probs)}
    if n_boot:
        out["ci"] = bootstrap_metrics(probs, gold, mask, n_bins, n_boot, seed, correct_norm, log_probs=log_probs)
        out["ci_note"] = CI_NOTE
    if compat == "proskurina2024":
        out["proskurina2024"] = proskurina2024_metrics(list(df["loglik"]), gold)
    return out


def top_choice_confidence(probs: np.ndarray, gold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the top choice's probability, whether it is gold) per question: the confidence HELM's battery reads."""
    return probs.max(1), (probs.argmax(1) == gold).astype(float)
