"""Is it quantization or noise? Full-vs-quantized effects with intervals over questions *and* replicates.

Two runs of one quantizer that differ only in the calibration sample (another seed draws another
sample) are equally valid quantized models. A claim "quantization did X on this task" must hold
beyond both the questions that happened to be asked and the calibration sample that happened to
be drawn. For one task: the full model's predictions F and replicates Q_1..Q_R (R >= 2) of one
configuration, paired on the questions all of them answered.

effects (delta_<m>, m in EFFECT_METRICS)
    estimate  mean over replicates of metric(Q_r) - metric(F) on the questions
    interval  two variance components (`two_way_effect`): which questions were asked — a bootstrap
              over questions with the replicates held fixed (every model scored on the same
              resampled questions; a metric's data-chosen structure, the smECE bandwidth and the
              sweep's bin count, fixed per model as in paired.py) — and which calibration sample
              was drawn — the sample variance of the R per-replicate deltas / R. se^2 is their sum
              (it counts the question x replicate interaction twice: conservative), the t-interval
              and p use Welch-Satterthwaite degrees of freedom, so when few replicates dominate the
              spread the test becomes a t over replicates. Null: no change of the task-level metric
              in the population of questions and calibration draws. A percentile "pigeonhole"
              bootstrap (questions and replicates resampled together) was liberal with 2-3
              replicates whose calibration draws shift accuracy (rejection .16-.24 at alpha .05).
              Zero spread is "undefined": p is None, never 0.
systematic share, multiple choice (does quantization move the answer distributions themselves?)
    Answer distributions are compared as probability vectors (the Brier geometry: squared Euclidean
    distance between p_F and p_Q over a question's choices). For each question, with mu and Sigma the
    mean and covariance of the replicates' probability vectors,
        E ||F - Q||^2 = ||F - mu||^2 + tr Sigma     and     E ||Q - Q'||^2 = 2 tr Sigma,
    so  systematic_i = mean_{r != s} (F - Q_r) . (F - Q_s)  is unbiased for ||F - mu||^2: how far the
    *average* quantized distribution (over calibration draws) is from the full model's. Averaged over
    questions, as a share of the total divergence mean_r ||F - Q_r||^2; variance from the question
    bootstrap plus the delete-one-replicate jackknife (needs R >= 3). Null, tested one-sided with
    Satterthwaite df: E_calibration[Q_i] = F_i on every question ("the replicates scatter around the
    full model in probability"). Why probabilities: a choice the model gives p ~ 1e-7 weighs ~0, as it
    should for "the answer distribution moved" (in the centred log-probabilities used before, such a
    choice weighed as much as the answer: a shift of two all-but-excluded choices was "detected" in
    100/100 simulated studies, a real shift of the plausible choices under tail scatter in 4/100, and
    Dirichlet scatter with E Q = F was called systematic in 22-42%); and the mean of probability
    vectors is itself a distribution (the mixture), so the null says something a user can read.
    Replicates whose *log*-probabilities scatter symmetrically around the full model are on average
    less confident than it (the mixture is flatter); that is a real change of the mean distribution,
    which this test detects when it is large enough (tests/test_noise_floor.py prints the rates).
systematic share, generation (do the replicates lose the same prompts more often than chance?)
    Per-prompt correctness is 0/1, so replicates cannot "scatter around" the full answer: replicates
    that each flip a random tenth of the prompts share flips by chance. The claim is tested directly:
    the statistic is the number of (replicate pair, prompt) co-flips, sum_i c_i (c_i - 1) / 2 with c_i
    the number of replicates whose correctness differs from the full model's on prompt i; its null
    distribution comes from permutations that shuffle each replicate's flips across the prompts of the
    same full-model correctness (every replicate keeps its own flip rate in each stratum). p = (1 + #
    permutations at least as extreme) / (1 + permutations): exact under the null "each replicate
    flips a random set of prompts of each stratum, independently of the others". The share is the
    excess overlap (co - E0) / (max - E0), E0 the expected co-flips under that null and max the most
    the replicates' own flip counts allow: 0 = as by chance, 1 = the same prompts in every replicate.
    Its interval: prompt bootstrap + delete-one-replicate jackknife, as above.
descriptive (no test)
    mean JS distance to the full model and between replicates, flip rates, the deltas' mean and sd
    over replicates, |delta| between replicate pairs; instability: share of questions whose
    predicted answer is not the same in every replicate, per equal-mass bin of the full model's
    confidence, and the AUROC of low full-model confidence as a predictor of instability, beside its
    reference under equal noise on every question (`instability_reference`): noise of one size added
    to every question's log-probabilities already makes the least confident questions the unstable
    ones (AUROC ~0.9), so only an AUROC above that reference says quantization targets them.

Calibration claims (the verdict's "calibration error") rest on delta_l2_debiased, the change of Kumar
et al. (2019)'s debiased squared L2 calibration error: the binned plug-in ECE is biased upward by an
amount that depends on sharpness, so two perfectly calibrated models of different sharpness differ in
ECE by about a point. delta_ece is reported, as the change of the binned plug-in quantity.

Holm (`adjust_floors`): one family per replicated configuration and statistic, over its tasks; the
same adjustment in `qc.noise_floor`, `quantconf noise-floor` and a study, so the same data get the same
verdict. Every reported p gets its `p_holm`; `ci` is per comparison (unadjusted) and `ci_adjusted`
its Bonferroni-simultaneous widening over the family. `warnings` lists where the design is outside
what the simulations validate (fewer than 5 replicates, fewer than 100 questions).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from quantconf.analysis.metrics import (bootstrap_draws, equal_mass_bin, has_several_true, log_probs_from_predictions,
                                       metric_structure, metrics_weighted)
from quantconf.metric_registry import metric_names
from quantconf.errors import QuantconfError
from quantconf.analysis import generation as gen
from quantconf.analysis.paired import js_distance

EFFECT_METRICS = metric_names("effect")  # the registry's (metric_registry.py)
DESCRIPTIVE_KEYS = ["delta_acc", "delta_nll", "delta_ece", "delta_ace", "delta_smece", "delta_brier",
                    "delta_conf_true", "js_mean", "flip_rate"]
METHOD = ("two-way: a bootstrap over questions plus the variance between replicates, Welch-Satterthwaite t; "
          "systematic share: see `space`")
# the designs the simulations in tests/test_noise_floor.py validate; outside them `warnings` says so
VALIDATED_REPLICATES = 5
VALIDATED_QUESTIONS = 100


# ---------------------------------------------------------------------------------------------
# Inputs: one task's predictions of the full model and every replicate, on common questions


@dataclasses.dataclass
class Aligned:
    """Everything the tests need, as arrays over the questions all runs answered (doc_id order of F)."""
    doc_ids: np.ndarray
    gold: np.ndarray          # (n,)
    mask: np.ndarray          # (n, k) valid choices
    log_probs: list           # [F, Q_1..Q_R], each (n, k) log-softmax, 0 where masked

    _cache: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @property
    def probs(self) -> list:
        if "probs" not in self._cache:
            self._cache["probs"] = [np.where(self.mask, np.exp(lp), 0.0) for lp in self.log_probs]
        return self._cache["probs"]

    def structures(self, n_bins: int) -> list:
        """Each model's data-chosen metric structure (smECE bandwidth, sweep bins: `metric_structure`), found
        once: the bandwidth search is the costliest step of a noise floor."""
        if ("structures", n_bins) not in self._cache:
            # numpy's exp releases the GIL on these (T, n) arrays: the models' searches run on every core the
            # process may use (its affinity, as runtime.available_cores; analysis does not import the runtime)
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            with ThreadPoolExecutor(max_workers=max(1, min(cores, len(self.probs)))) as pool:
                self._cache[("structures", n_bins)] = list(pool.map(
                    lambda p: metric_structure(p, self.mask, self.gold, n_bins), self.probs))
        return self._cache[("structures", n_bins)]


def align(full: pd.DataFrame, replicates: list[pd.DataFrame], task: str = "") -> Aligned:
    if len(replicates) < 2:
        raise QuantconfError(f"{task}: a noise floor needs at least two replicates (got {len(replicates)}); "
                             "for one quantized run use compare", param="replicates")
    common = set(full["doc_id"])
    for q in replicates:
        common &= set(q["doc_id"])
    if not common:
        raise QuantconfError(f"{task}: no questions in common between the full model and the replicates")
    order = [d for d in full["doc_id"] if d in common]
    frames = [df.reset_index(drop=True) if df["doc_id"].tolist() == order else
              df.set_index("doc_id").loc[order].reset_index() for df in [full, *replicates]]
    for i, df in enumerate(frames[1:], 1):
        if _same_choices(frames[0]["choices"].tolist(), df["choices"].tolist()):
            continue  # one comparison of the whole column; the loop below names the first differing doc
        for d, a, b in zip(order, frames[0]["choices"], df["choices"]):
            if list(a) != list(b):
                raise QuantconfError(f"{task} doc {d}: choices differ between the full model and replicate {i}; "
                                     "were they evaluated on the same data?")
    gold_col = list(frames[0]["gold"])
    if has_several_true(gold_col):
        raise QuantconfError(f"{task}: several true answers per question; the noise floor needs one gold answer")
    lps = []
    for df in frames:
        lp, mask = log_probs_from_predictions(df)
        lps.append(np.where(mask, lp, 0.0))
    refuse_identical_replicates([lp.tobytes() for lp in lps[1:]], task)
    return Aligned(np.asarray(order), np.asarray(gold_col, int), mask, lps)


def _same_choices(a: list, b: list) -> bool:
    """Whether two columns of choice lists are equal (False when they cannot be compared whole, as lists of
    arrays: the caller then compares row by row)."""
    try:
        return bool(a == b)
    except ValueError:  # elements are numpy arrays: their == is elementwise
        return False


def refuse_identical_replicates(contents: list, task: str = "") -> None:
    """Two replicates with identical predictions are one run given twice (or a method that ignores its
    calibration draw), not two calibration draws: counted twice they fake agreement (a systematic share of
    1.00 [1.00, 1.00] from one run given twice)."""
    seen: dict = {}
    for i, c in enumerate(contents, 1):
        if c in seen:
            raise QuantconfError(f"{task}: replicates {seen[c]} and {i} have identical predictions (the same run given "
                                 "twice?); a noise floor needs distinct calibration draws: drop the duplicate, or "
                                 "quantize again with another seed", param="replicates")
        seen[c] = i


# ---------------------------------------------------------------------------------------------
# Two sources of variation: questions (bootstrap) and replicates (their spread), Satterthwaite df


def two_way_effect(estimate: float, question_draws, replicate_var: float, n_questions: int, n_replicates: int,
                   alpha: float = 0.05, alternative: str = "two-sided", **extra) -> dict:
    """Estimate, (1 - alpha) t-interval and p from two variance components: `question_draws` (a
    bootstrap over questions with the replicates held fixed: the variance from which questions were
    asked) and `replicate_var` (the variance from which calibration draws were made, estimated from
    the replicates themselves). se^2 = sum of the two; degrees of freedom by Welch-Satterthwaite
    (n_questions - 1 and n_replicates - 1), so with few replicates whose spread dominates the
    interval widens as a t over replicates would. se = 0: p is None (undefined), never 0."""
    from scipy.stats import t as student_t  # lazy: scipy.stats takes ~1 s to import (report)
    q = np.asarray(question_draws, float)
    q = q[np.isfinite(q)]
    v_q = float(q.var(ddof=1)) if q.size > 1 else 0.0
    v_r = float(replicate_var) if np.isfinite(replicate_var) else 0.0
    se = float(np.sqrt(v_q + v_r))
    out = {"estimate": float(estimate), "se": se, "se_questions": float(np.sqrt(v_q)),
           "se_replicates": float(np.sqrt(v_r)), **extra}
    if not np.isfinite(estimate) or se < 1e-12:  # float rounding of identical values is not spread
        return {**out, "ci": [float(estimate)] * 2, "df": None, "p": None}
    terms = v_q ** 2 / max(n_questions - 1, 1) + v_r ** 2 / max(n_replicates - 1, 1)
    df = float((v_q + v_r) ** 2 / terms) if terms > 0 else float("inf")
    half = float(student_t.ppf(1 - alpha / 2, df)) * se
    z = estimate / se
    p = float(2 * student_t.sf(abs(z), df)) if alternative == "two-sided" else float(student_t.sf(z, df))
    return {**out, "ci": [float(estimate - half), float(estimate + half)], "df": df, "p": p}


def delta_effects(a: Aligned, metrics=EFFECT_METRICS, n_bins: int = 15, n_boot: int = 1000, seed: int = 0,
                  alpha: float = 0.05, chunk: int = 100) -> dict:
    """delta_<m> for m in `metrics`: estimate (mean over replicates of metric(Q_r) - metric(F)), with
    the question bootstrap (every model on the same resampled questions) and the replicates' spread."""
    probs, n, r = a.probs, len(a.gold), len(a.log_probs) - 1
    rows = np.arange(n)
    # metrics that are means over questions need only a matrix product; the others all of metrics_weighted
    additive = [{"acc": (p.argmax(1) == a.gold).astype(float), "nll": -lp[rows, a.gold],
                 "brier": ((p - np.eye(p.shape[1])[a.gold]) ** 2).sum(1), "conf_true": p[rows, a.gold]}
                for p, lp in zip(probs, a.log_probs)]
    binned = [m for m in metrics if m not in additive[0]]
    structured = {"smece", "ece_sweep"} & set(binned)
    structures = a.structures(n_bins) if structured else [None] * len(probs)

    def scored(weights):  # (models, metrics, draws)
        out = []
        for p, lp, s, add in zip(probs, a.log_probs, structures, additive):
            full = (metrics_weighted(p, a.mask, a.gold, weights, n_bins, log_probs=lp, structure=s, only=set(binned))
                    if binned else {})
            out.append([weights @ add[m] / weights.sum(1) if m in add else full[m] for m in metrics])
        return np.asarray(out)

    per_rep = (scored(np.ones((1, n)))[:, :, 0])  # (models, metrics)
    per_rep = per_rep[1:] - per_rep[0]  # (R, metrics)

    def replicate_mean_minus_full(weights):
        s = scored(weights)  # (models, metrics, b)
        return {"d": (s[1:].mean(0) - s[0]).T}  # (b, metrics)

    d = bootstrap_draws(replicate_mean_minus_full, n, n_boot, seed, chunk)["d"].T  # (metrics, n_boot)
    return {f"delta_{m}": two_way_effect(per_rep[:, j].mean(), d[j], per_rep[:, j].var(ddof=1) / r, n, r, alpha,
                                         per_replicate=[float(x) for x in per_rep[:, j]])
            for j, m in enumerate(metrics)}


def systematic_movement(a: Aligned, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05, chunk: int = 500) -> dict:
    """The part of the full-vs-quantized movement that is not replicate scatter (module docstring):
    per question mean_{r != s} (F - Q_r).(F - Q_s) on the probability vectors (= mean_r ||F - Q_r||^2 -
    1/2 mean_{r != s} ||Q_r - Q_s||^2), averaged over questions. Its replicate variance is the
    delete-one-replicate jackknife (needs 3 replicates; with 2 it is not estimable and p is None)."""
    return {**systematic_of(a.probs, n_boot, seed, alpha, chunk),
            "space": "answer probabilities: squared Euclidean distance between probability vectors (Brier "
                     "geometry); null: the mean over calibration draws of the quantized distribution is the "
                     "full model's, on every question"}


def systematic_of(x: list[np.ndarray], n_boot: int, seed: int, alpha: float, chunk: int = 500) -> dict:
    """`systematic_movement` on any per-question vectors x = [F, Q_1..Q_R], each (n, k)."""
    dev = np.stack([x[0] - q for q in x[1:]], axis=1)  # (n, R, k): F - Q_r
    n, r = dev.shape[:2]
    gram = np.einsum("nrk,nsk->nrs", dev, dev)  # (n, R, R)
    to_full = np.einsum("nrr->nr", gram)  # ||F - Q_r||^2

    def on(keep):  # per-question total and systematic using the replicates in `keep`
        g = gram[:, keep][:, :, keep]
        m = len(keep)
        off = (g.sum((1, 2)) - np.einsum("nrr->n", g)) / (m * (m - 1))
        return to_full[:, keep].mean(1), off

    total_i, sys_i = on(list(range(r)))
    total, systematic = float(total_i.mean()), float(sys_i.mean())
    share = systematic / total if total > 0 else float("nan")
    draws = bootstrap_draws(lambda w: {"total": w @ total_i / n, "systematic": w @ sys_i / n}, n, n_boot, seed, chunk)
    t_draws, s_draws = draws["total"], draws["systematic"]
    with np.errstate(invalid="ignore", divide="ignore"):
        share_draws = s_draws / t_draws
    if r >= 3:  # delete-one-replicate jackknife
        loo = [on([j for j in range(r) if j != i]) for i in range(r)]
        loo_sys = np.array([s.mean() for _, s in loo])
        with np.errstate(invalid="ignore", divide="ignore"):
            loo_share = np.array([s.mean() / t.mean() for t, s in loo])
        var_sys, var_share = [(r - 1) / r * ((v - v.mean()) ** 2).sum() for v in (loo_sys, loo_share)]
    else:
        var_sys = var_share = float("nan")
    note = {} if r >= 3 else {"note": "2 replicates: the variance between calibration draws is not estimable "
                                      "for this statistic; no test (use at least 3 replicates)"}
    sys_e = two_way_effect(systematic, s_draws, var_sys, n, r, alpha, "greater", **note)
    share_e = two_way_effect(share, share_draws, var_share, n, r, alpha, "greater", **note)
    share_e["p"] = sys_e["p"]  # one test: is the systematic part > 0 (the share's interval describes its size)
    if r < 3:
        sys_e["p"] = share_e["p"] = None
    return {"total_divergence": total, "noise_divergence": total - systematic, "systematic": sys_e,
            "systematic_share": share_e}


def _coflip_parts(flips: np.ndarray, strata: np.ndarray, weights: np.ndarray):
    """Co-flips, their expectation under the stratified-permutation null, and their maximum given the
    replicates' flip counts, for each row of prompt weights (b, n). flips: (R, n) 0/1."""
    r = flips.shape[0]
    counts = flips.sum(0)
    co = weights @ (counts * (counts - 1) / 2)
    expected = np.zeros(len(weights))
    most = np.zeros(len(weights))
    for g in np.unique(strata):
        in_g = strata == g
        n_g = weights[:, in_g].sum(1)
        k = weights[:, in_g] @ flips[:, in_g].T  # (b, R): each replicate's flips in the stratum
        for i, j in itertools.combinations(range(r), 2):
            with np.errstate(invalid="ignore", divide="ignore"):
                expected += np.where(n_g > 0, k[:, i] * k[:, j] / np.where(n_g > 0, n_g, 1), 0.0)
            most += np.minimum(k[:, i], k[:, j])
    return co, expected, most


def _permuted_coflips(flips: np.ndarray, strata: np.ndarray, n_perm: int, rng) -> np.ndarray:
    """sum_i c_i (c_i - 1) / 2 after shuffling each replicate's flips within each stratum, n_perm times."""
    r = flips.shape[0]
    counts = np.zeros((n_perm, flips.shape[1]))
    for g in np.unique(strata):
        idx = np.flatnonzero(strata == g)
        for i in range(r):
            order = np.argsort(rng.random((n_perm, idx.size)), axis=1)
            counts[:, idx] += flips[i, idx][order]
    return (counts * (counts - 1) / 2).sum(1)


def flip_overlap(y_full: np.ndarray, y_replicates: list, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                 n_perm: int | None = None) -> dict:
    """Do the replicates lose (or gain) the same prompts more often than chance? (module docstring,
    "systematic share, generation"). y_full: (n,) 0/1 correctness of the full model; y_replicates: R
    arrays of the same. Returns `systematic` (excess co-flip rate per prompt and replicate pair) and
    `systematic_share` (excess overlap, 0 = chance, 1 = the same prompts), each {estimate, ci, p, ...}
    with p from the stratified permutation test (`n_perm` permutations, default max(n_boot, 999))."""
    y_full = np.asarray(y_full).astype(int)
    flips = np.stack([np.asarray(y).astype(int) != y_full for y in y_replicates]).astype(float)  # (R, n)
    r, n = flips.shape
    pairs = r * (r - 1) / 2
    ones = np.ones((1, n))

    def share_of(co, expected, most):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(most - expected > 1e-12, (co - expected) / (most - expected), np.nan)

    co, expected, most = (v[0] for v in _coflip_parts(flips, y_full, ones))
    excess = (co - expected) / (n * pairs)
    share = float(share_of(co, expected, most))
    draws = bootstrap_draws(lambda w: dict(zip(("co", "e", "m"), _coflip_parts(flips, y_full, w))), n, n_boot, seed)
    d_excess = (draws["co"] - draws["e"]) / (n * pairs)
    d_share = share_of(draws["co"], draws["e"], draws["m"])
    if r >= 3:  # delete-one-replicate jackknife
        loo = [_coflip_parts(np.delete(flips, i, 0), y_full, ones) for i in range(r)]
        loo_excess = np.array([(c[0] - e[0]) / (n * (r - 1) * (r - 2) / 2) for c, e, _ in loo])
        loo_share = np.array([float(share_of(c, e, m)[0]) for c, e, m in loo])
        var_excess, var_share = [(r - 1) / r * np.nansum((v - np.nanmean(v)) ** 2) if np.isfinite(v).any()
                                 else float("nan") for v in (loo_excess, loo_share)]
    else:
        var_excess = var_share = float("nan")
    n_perm = n_perm or max(n_boot, 999)
    p = None
    if flips.sum() > 0 and np.isfinite(share):
        null = _permuted_coflips(flips, y_full, n_perm, np.random.default_rng(seed + 7919))
        p = float((1 + np.sum(null >= co - 1e-9)) / (1 + n_perm))
    test = (f"stratified permutation test ({n_perm} permutations of each replicate's flips among the prompts "
            "of the same full-model correctness): do the replicates flip the same prompts more often than chance?")
    sys_e = two_way_effect(excess, d_excess, var_excess, n, r, alpha, test=test)
    share_e = two_way_effect(share, d_share, var_share, n, r, alpha, test=test)
    sys_e["p"] = share_e["p"] = p
    return {"total_divergence": float(flips.mean()), "noise_divergence": float("nan"), "systematic": sys_e,
            "systematic_share": share_e, "expected_coflips_by_chance": float(expected), "coflips": float(co)}


def low_confidence_auroc(conf: np.ndarray, unstable: np.ndarray) -> float:
    """P(the full model's confidence on an unstable question < on a stable one), ties 1/2; NaN when every
    question is stable or every one unstable."""
    from scipy.stats import mannwhitneyu  # lazy: scipy.stats takes ~1 s to import
    if not (unstable.any() and (~unstable).any()):
        return float("nan")
    return float(mannwhitneyu(conf[~unstable], conf[unstable]).statistic / (unstable.sum() * (~unstable).sum()))


def _low_confidence_aurocs(conf: np.ndarray, unstable: np.ndarray) -> np.ndarray:
    """`low_confidence_auroc` for each row of `unstable` (sims, n) at once: the stable and unstable questions
    always make up all of them, so the Mann-Whitney U of the stable ones is the sum of their mid-ranks in
    `conf` (ranked once) minus its minimum; half-integer sums are exact, so each value equals scipy's."""
    from scipy.stats import rankdata  # lazy: scipy.stats takes ~1 s to import
    ranks = rankdata(conf)
    n_unstable = unstable.sum(1)
    n_stable = unstable.shape[1] - n_unstable
    u = (~unstable) @ ranks - n_stable * (n_stable + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_unstable > 0) & (n_stable > 0), u / (n_stable * n_unstable), np.nan)


def instability_reference(log_probs_full: np.ndarray, mask: np.ndarray, unstable_share: float, observed_auroc: float,
                          replicates: int, sims: int = 200, seed: int = 0) -> dict:
    """The AUROC of "low full-model confidence predicts an unstable answer" that noise of one size on every
    question gives: R replicates = the full model's log-probabilities plus N(0, s^2) on every choice of
    every question, s set (bisection, common random numbers) so that the expected unstable share equals
    the observed one; `sims` such simulated studies give the reference's mean and 95% range, and p =
    share of them with an AUROC at least the observed (one-sided: does quantization target the full
    model's uncertain questions more than equal noise would?)."""
    lp = np.where(mask, log_probs_full, -np.inf)
    conf = np.exp(lp).max(1)
    n, k = lp.shape
    out = {"method": "equal Gaussian noise on every choice's log-probability, scaled to the observed unstable share",
           "sims": sims}
    if not (0 < unstable_share < 1) or n < 4:
        return {**out, "mean": float("nan"), "range": [float("nan")] * 2, "p": None, "noise_sd": None}
    sims = int(min(sims, max(20, 4e6 // (replicates * n * k))))  # bounded memory on large tasks
    out["sims"] = sims
    z = np.random.default_rng(seed).normal(size=(sims, replicates, n, k))

    def unstable(sd, first=None):  # (sims, n), of the first `first` simulations
        preds = np.argmax(lp[None, None] + sd * z[:first], axis=3)
        return (preds != preds[:, :1]).any(axis=1)

    # the scale is set on the first 40 simulations (common random numbers)
    lo, hi = 0.0, 1.0
    while unstable(hi, 40).mean() < unstable_share and hi < 1e3:
        hi *= 2
    for _ in range(16):  # to 2^-16 of the bracket: far below the simulations' own noise
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if unstable(mid, 40).mean() < unstable_share else (lo, mid)
    sd = (lo + hi) / 2
    aurocs = _low_confidence_aurocs(conf, unstable(sd))
    aurocs = aurocs[np.isfinite(aurocs)]
    if not aurocs.size:
        return {**out, "mean": float("nan"), "range": [float("nan")] * 2, "p": None, "noise_sd": float(sd)}
    p = float((1 + np.sum(aurocs >= observed_auroc)) / (1 + aurocs.size)) if np.isfinite(observed_auroc) else None
    return {**out, "mean": float(aurocs.mean()), "range": [float(np.quantile(aurocs, 0.025)),
                                                          float(np.quantile(aurocs, 0.975))],
            "p": p, "noise_sd": float(sd)}


def design_warnings(n: int, replicates: int) -> list[str]:
    """Where a noise floor's design is outside what the simulations validate (tests/test_noise_floor.py)."""
    out = []
    if replicates < VALIDATED_REPLICATES:
        out.append(f"{replicates} replicates: the two-way effect tests are validated from {VALIDATED_REPLICATES} "
                   "replicates on; with fewer they reject a true null more often than alpha says (simulated at "
                   "alpha .05, calibration draws that each shift accuracy: .06-.08 with 3 replicates, .09 with 2; an "
                   "audit measured up to .12) and their intervals cover less; quantize more replicates (study: "
                   "replicates: 5)")
    if replicates < 3:
        out.append("2 replicates: the systematic share has no test (its variance between calibration draws is "
                   "not estimable); use at least 3")
    if n < VALIDATED_QUESTIONS:
        out.append(f"{n} questions: the t-approximation over questions is validated from {VALIDATED_QUESTIONS} on")
    return out


# ---------------------------------------------------------------------------------------------
# Descriptive: effect and between-replicate statistics, instability


def _descriptive(a: Aligned, n_bins: int, n_conf_bins: int, reference_sims: int = 200) -> dict:
    probs = a.probs
    pf, reps = probs[0], probs[1:]
    r = len(reps)
    pairs = list(itertools.combinations(range(r), 2))
    rows = np.arange(len(a.gold))

    ones = np.ones((1, len(a.gold)))
    wanted = ("acc", "nll", "ece", "ace", "smece", "brier")
    # each model's metrics once (their smECE bandwidth search is most of the cost), not once per pair
    scores = [metrics_weighted(p, a.mask, a.gold, ones, n_bins, log_probs=lp, structure=st, only=set(wanted))
              for p, lp, st in zip(probs, a.log_probs, a.structures(n_bins))]

    def stats(i, j):  # model j against model i (0 = the full model, i >= 1 = replicate i)
        p, q, mp, mq = probs[i], probs[j], scores[i], scores[j]
        cp, cq = p.argmax(1) == a.gold, q.argmax(1) == a.gold
        out = {f"delta_{m}": float(mq[m][0] - mp[m][0]) for m in wanted}
        out["delta_conf_true"] = float((q[rows, a.gold] - p[rows, a.gold]).mean())
        out["js_mean"] = float(js_distance(p, q).mean())
        out["flip_rate"] = float((cp != cq).mean())
        return out

    effect = [stats(0, i + 1) for i in range(r)]
    noise = [stats(i + 1, j + 1) for i, j in pairs]
    out = {"effect": {}, "noise": {}}
    for key in DESCRIPTIVE_KEYS:
        e = np.array([c[key] for c in effect])
        nz = np.array([c[key] for c in noise])
        out["effect"][f"{key}_mean"] = float(e.mean())
        out["effect"][f"{key}_sd"] = float(e.std(ddof=1))
        out["noise"][key] = float(np.abs(nz).mean() if key.startswith("delta_") else nz.mean())  # pairs have no sign
        if key.startswith("delta_"):
            out["noise"][f"{key}_sd"] = float(e.std(ddof=1))
    out["js"] = {"to_full_mean": float(np.mean([js_distance(pf, q).mean() for q in reps])),
                 "between_replicates_mean": float(np.mean([js_distance(reps[i], reps[j]).mean() for i, j in pairs]))}

    preds = np.stack([p.argmax(1) for p in reps])
    unstable = (preds != preds[0]).any(axis=0)
    conf = pf.max(1)
    k = min(n_conf_bins, len(conf))
    bins = equal_mass_bin(conf, k)
    by_bin = [{"bin": b, "n": int((bins == b).sum()), "conf_lo": float(conf[bins == b].min()),
               "conf_hi": float(conf[bins == b].max()), "unstable_rate": float(unstable[bins == b].mean())}
              for b in range(k) if (bins == b).any()]
    auroc = low_confidence_auroc(conf, unstable)
    out["instability"] = {"unstable_share": float(unstable.mean()), "by_full_confidence": by_bin,
                          "auroc_low_confidence_predicts_unstable": auroc,
                          "auroc_reference_equal_noise": instability_reference(
                              a.log_probs[0], a.mask, float(unstable.mean()), auroc, r, reference_sims)}
    return out


# ---------------------------------------------------------------------------------------------
# One task


def noise_floor(full: pd.DataFrame, replicates: list[pd.DataFrame], n_bins: int = 15, n_conf_bins: int = 5,
                alpha: float = 0.05, task: str = "", n_boot: int = 1000, seed: int = 0,
                metrics=EFFECT_METRICS) -> dict:
    """Effects with two-way intervals, the systematic share of the movement, the descriptive noise
    floor and instability, and a verdict, for one task. See the module docstring."""
    if n_boot < 1:
        raise QuantconfError(f"n_boot must be >= 1 for a noise floor, got {n_boot}", param="n_boot")
    if not 0 < alpha < 1:
        raise QuantconfError(f"alpha must be between 0 and 1, got {alpha}", param="alpha")
    a = align(full, replicates, task)
    out: dict = {"task": task, "n": len(a.gold), "replicates": len(replicates),
                 "pairs": len(replicates) * (len(replicates) - 1) // 2, "alpha": alpha, "n_boot": n_boot,
                 "seed": seed, "method": METHOD, "warnings": design_warnings(len(a.gold), len(replicates))}
    out.update(delta_effects(a, metrics, n_bins, n_boot, seed, alpha))
    out.update(systematic_movement(a, n_boot, seed + 1, alpha))
    out.update(_descriptive(a, n_bins, n_conf_bins))
    out["verdict"] = verdict(out)
    return out


# ---------------------------------------------------------------------------------------------
# Several verdicts: Holm's adjustment, and the words


def holm(pvalues: list) -> list:
    """Holm's step-down adjusted p-values (None stays None and is not counted)."""
    idx = [i for i, p in enumerate(pvalues) if p is not None and np.isfinite(p)]
    m = len(idx)
    adjusted: list = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def tested_keys(floor: dict) -> list[str]:
    """Every statistic of a noise floor that carries a p-value (the effects and the systematic share)."""
    return [k for k, v in floor.items() if isinstance(v, dict) and "p" in v and "ci" in v]


def adjust_floors(floors: list[dict]) -> None:
    """Holm's adjustment, one family per replicated configuration ((model, variant) when the floors carry
    them: a study; else all the floors given: one `qc.noise_floor` or `quantconf noise-floor` call) and
    per statistic, over its tasks. Every statistic with a p gets `p_holm`, `holm_tests` and `ci_adjusted`
    (Bonferroni-simultaneous over the family's tests: t quantile at 1 - alpha / (2 m)); the verdict is
    rewritten with the adjusted p. Idempotent: the same floors give the same numbers wherever adjusted."""
    families: dict = {}
    for f in floors:
        families.setdefault((f.get("model"), f.get("variant")), []).append(f)
    for members in families.values():
        for key in sorted({k for f in members for k in tested_keys(f)}):
            tests = [(f[key], f.get("alpha", 0.05)) for f in members if key in f]
            adjusted = holm([e["p"] for e, _ in tests])
            m = sum(x is not None for x in adjusted)
            for (e, alpha), p in zip(tests, adjusted):
                e["p_holm"], e["holm_tests"] = p, m
                e["ci_adjusted"] = _widened(e, m, alpha)
    for f in floors:
        f["verdict"] = verdict(f)


def _widened(e: dict, m: int, alpha: float) -> list:
    from scipy.stats import t as student_t  # lazy: scipy.stats takes ~1 s to import (report)
    if not e.get("df") or m <= 1 or not np.isfinite(e.get("se", np.nan)):
        return list(e["ci"])
    half = float(student_t.ppf(1 - alpha / (2 * m), e["df"])) * e["se"]
    return [float(e["estimate"] - half), float(e["estimate"] + half)]


def _p_text(e: dict) -> str:
    p = e.get("p_holm", e["p"])
    if p is None:
        return "p undefined"
    shown = "p < .001" if p < 0.001 else f"p = {p:.3f}".replace("0.", ".")
    if "p_holm" in e and e.get("holm_tests", 1) > 1:
        shown += f", Holm-adjusted over {e['holm_tests']} tasks"
    return shown


def _significant(e: dict, alpha: float) -> bool | None:
    p = e.get("p_holm", e["p"])
    return None if p is None else p < alpha


def _points(e: dict, scale: float = 100.0, unit: str = "points", digits: int = 1) -> str:
    lo, hi = e["ci"]
    return (f"{e['estimate'] * scale:+.{digits}f} {unit} (95% CI per comparison "
            f"[{lo * scale:+.{digits}f}, {hi * scale:+.{digits}f}])")


CLAIMS = (  # (effect, what the words say, scale, unit, digits)
    ("delta_acc", "accuracy", 100.0, "points", 1),
    ("delta_l2_debiased", "calibration error (debiased squared L2, Kumar et al. 2019)", 1e4, "x 1e-4", 1),
)


# what a significant / not significant systematic share says, per kind of floor (its "kind" field)
SYSTEMATIC_WORDING = {
    "multiple_choice": ("quantization moves the average answer distribution away from the full model's, beyond the "
                        "quantizer's own run-to-run scatter",
                        "the answer distributions are not distinguishable from the quantizer's run-to-run scatter "
                        "around the full model"),
    "generation": ("the replicates flip the same prompts more often than chance",
                   "the prompts the replicates flip overlap no more than by chance"),
}


def verdict(nf: dict) -> str:
    """Plain sentences whose words match the tests: accuracy, calibration error (the debiased estimator:
    the plug-in ECE's bias depends on sharpness), the systematic share, and the design's warnings."""
    task, alpha = nf["task"] or "this task", nf["alpha"]
    design = f"{nf['n']} questions × {nf['replicates']} calibration draws"
    parts = []
    for key, what, scale, unit, digits in CLAIMS:
        if key not in nf:
            continue
        e = nf[key]
        sig = _significant(e, alpha)
        if sig is None:
            parts.append(f"{what} did not change on any question in any replicate (no test: zero spread)")
        elif sig:
            parts.append(f"quantization {'lowers' if e['estimate'] < 0 else 'raises'} {what} on {task}: "
                         f"{_points(e, scale, unit, digits)}, {_p_text(e)} ({design})")
        else:
            parts.append(f"no {what} change on {task} detectable beyond questions and calibration draws: "
                         f"{_points(e, scale, unit, digits)}, {_p_text(e)} ({design})")
    s = nf["systematic_share"]
    lo, hi = s["ci"]
    share = f"systematic share {s['estimate']:.2f} (95% CI per comparison [{lo:.2f}, {hi:.2f}]), {_p_text(s)}"
    sig = _significant(s, alpha)
    moved, not_moved = SYSTEMATIC_WORDING[nf.get("kind", "multiple_choice")]
    if sig:
        parts.append(f"{moved} ({share})")
    elif sig is None:
        parts.append(f"the systematic share has no test ({share})")
    else:
        parts.append(f"{not_moved} ({share})")
    text = "; ".join(parts) + "."
    if nf.get("warnings"):
        text += " Caution: " + "; ".join(nf["warnings"]) + "."
    return text


# ---------------------------------------------------------------------------------------------
# Generation tasks: the same questions, asked of what the replicates wrote


GENERATION_EFFECT_METRICS = metric_names("effect", kind="generation")


def generation_noise_floor(full: pd.DataFrame, replicates: list[pd.DataFrame], n_bins: int = 15,
                           n_conf_bins: int = 5, alpha: float = 0.05, task: str = "", n_boot: int = 1000,
                           seed: int = 0) -> dict:
    """The noise floor of a generation task, with the keys of `noise_floor`: effects (delta_acc on every
    prompt; delta_<m> of the headline confidence measure's calibration, P(True)'s, on the prompts where
    every run has it) with two-way intervals over prompts and replicates (`two_way_effect`); the systematic
    share as the excess overlap of the prompts the replicates flip, tested by stratified permutation
    (`flip_overlap`); answer instability (share of prompts whose answer, case and whitespace folded, is not
    the same in every replicate) by the full model's confidence. No JS distance: a generation has no choice
    distribution, and so no equal-noise reference for the instability AUROC."""
    if n_boot < 1:
        raise QuantconfError(f"n_boot must be >= 1 for a noise floor, got {n_boot}", param="n_boot")
    if len(replicates) < 2:
        raise QuantconfError(f"{task}: a noise floor needs at least two replicates (got {len(replicates)}); "
                             "for one quantized run use compare", param="replicates")
    common = set(full["doc_id"]).intersection(*[set(q["doc_id"]) for q in replicates])
    if not common:
        raise QuantconfError(f"{task}: no prompts in common between the full model and the replicates")
    order = [d for d in full["doc_id"] if d in common]
    frames = [df.set_index("doc_id").loc[order].reset_index() for df in [full, *replicates]]
    ys = [gen.correctness_of(df)[1].astype(float) for df in frames]
    measures = [gen.confidence_measures(df) for df in frames]
    refuse_identical_replicates([repr((list(df["generation"]), y.tobytes(), {k: v.tobytes() for k, v in m.items()}))
                                 for df, y, m in zip(frames[1:], ys[1:], measures[1:])], task)
    head = gen.headline_measure(measures[0])
    confs = [m[head] for m in measures]
    keep = np.all([np.isfinite(c) for c in confs], axis=0)
    n, r = len(order), len(replicates)
    out: dict = {"task": task, "n": n, "replicates": r, "pairs": r * (r - 1) // 2, "alpha": alpha, "n_boot": n_boot,
                 "seed": seed, "method": METHOD, "kind": "generation", "confidence_measure": head,
                 "warnings": design_warnings(n, r)}

    def effects(metrics, conf_list, y_list, rows):
        """delta_<m> over the prompts `rows` (every prompt for accuracy, those with a confidence else)."""
        cs, yk = [c[rows] for c in conf_list], [y[rows] for y in y_list]
        m_k = int(rows.sum())
        structures = [gen._structure(c, y, n_bins) for c, y in zip(cs, yk)]

        def scored(weights):  # (models, metrics, draws)
            return np.asarray([[gen.binary_metrics_weighted(c, y, weights, n_bins, st)[m] for m in metrics]
                               for c, y, st in zip(cs, yk, structures)])

        per_rep = scored(np.ones((1, m_k)))[:, :, 0]
        per_rep = per_rep[1:] - per_rep[0]
        d = bootstrap_draws(lambda w: {"d": (lambda x: (x[1:].mean(0) - x[0]).T)(scored(w))}, m_k, n_boot,
                            seed)["d"].T
        return {f"delta_{m}": two_way_effect(per_rep[:, j].mean(), d[j], per_rep[:, j].var(ddof=1) / r, m_k, r, alpha,
                                             n=m_k, per_replicate=[float(x) for x in per_rep[:, j]])
                for j, m in enumerate(metrics)}

    every = np.ones(n, bool)
    out.update(effects(["acc"], [np.full(n, 0.5) for _ in frames], ys, every))  # accuracy: every prompt
    if keep.sum() >= 2:  # calibration of the headline measure where every run has it (not imported answers)
        out.update(effects([m for m in GENERATION_EFFECT_METRICS if m != "acc"], confs, ys, keep))
        if keep.sum() < n:
            out["warnings"].append(f"{n - int(keep.sum())} of {n} prompts have no {head} in some run: its "
                                   "calibration effects use the other prompts; accuracy uses all")
    out.update(flip_overlap(ys[0], ys[1:], n_boot, seed + 1, alpha))
    out["space"] = ("per-prompt correctness (0/1): excess overlap of the prompts the replicates flip, "
                    "stratified permutation test")
    texts = [[gen.normalise_answer(t) for t in df["generation"]] for df in frames]
    pairs = list(itertools.combinations(range(1, r + 1), 2))
    changed = lambda i, j: np.array([a != b for a, b in zip(texts[i], texts[j])])  # noqa: E731
    flips = lambda i, j: float((ys[i] != ys[j]).mean())  # noqa: E731
    out["effect"], out["noise"] = {}, {}
    for key, fn in (("flip_rate", flips), ("answer_changed", lambda i, j: float(changed(i, j).mean()))):
        e = np.array([fn(0, i) for i in range(1, r + 1)])
        out["effect"][f"{key}_mean"], out["effect"][f"{key}_sd"] = float(e.mean()), float(e.std(ddof=1))
        out["noise"][key] = float(np.mean([fn(i, j) for i, j in pairs]))
    for m in ("acc", "ece", "nll", "smece", "brier"):
        if f"delta_{m}" in out:
            e = np.array(out[f"delta_{m}"]["per_replicate"])
            out["effect"][f"delta_{m}_mean"], out["effect"][f"delta_{m}_sd"] = float(e.mean()), float(e.std(ddof=1))
            nz = [abs(e[i - 1] - e[j - 1]) for i, j in pairs]
            out["noise"][f"delta_{m}"], out["noise"][f"delta_{m}_sd"] = float(np.mean(nz)), float(e.std(ddof=1))
    out["noise"]["js_mean"] = float("nan")
    out["js"] = {"to_full_mean": float("nan"), "between_replicates_mean": float("nan")}
    unstable = np.zeros(n, bool)
    for i, j in pairs:
        unstable |= changed(i, j)
    conf = confs[0]
    k = min(n_conf_bins, n)
    bins = equal_mass_bin(conf, k)
    out["instability"] = {
        "unstable_share": float(unstable.mean()),
        "by_full_confidence": [{"bin": b, "n": int((bins == b).sum()), "conf_lo": float(conf[bins == b].min()),
                                "conf_hi": float(conf[bins == b].max()), "unstable_rate": float(unstable[bins == b].mean())}
                               for b in range(k) if (bins == b).any()],
        "auroc_low_confidence_predicts_unstable": (
            low_confidence_auroc(conf, unstable) if np.isfinite(conf).all() else float("nan")),
        "auroc_reference_equal_noise": {"mean": float("nan"), "range": [float("nan")] * 2, "p": None,
                                        "note": "no reference for generations (no choice distribution to add "
                                                "noise to)"}}
    out["verdict"] = verdict(out)
    return out
