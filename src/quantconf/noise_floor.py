"""Is it quantization or noise? Full-vs-quantized effects measured against replicate quantizations.

Two runs of one quantizer that differ only in the calibration sample (another seed draws another
sample from the same calibration set) are equally valid quantized models. The differences between
them are the noise floor: an "effect of quantization" smaller than that is not an effect of
quantization as such, but of which calibration sample happened to be drawn.

For one task, the full model's predictions F and replicates Q_1..Q_R (R >= 2) of one configuration:
  effect   every full-vs-quantized statistic of `paired.compare_task(F, Q_i)`, as mean and sd over i
  noise    the same statistics between replicate pairs, `compare_task(Q_i, Q_j)` for i < j (the
           signed deltas of a pair have no meaningful sign, so the noise of a delta is the mean
           |delta| over pairs, and `delta_<m>_sd` is the sd of the full-vs-Q_i deltas over i)
  test     (a) per question, its mean JS(F, Q_i) over replicates against its mean JS(Q_i, Q_j) over
           pairs: a one-sided Wilcoxon signed-rank test over questions that quantization moves a
           question's answer distribution more than re-drawing the calibration sample does;
           (b) for the task-level deltas (Δacc, ΔECE): a one-sample t-test over replicates that the
           mean delta is not 0 (consistent across calibration draws, so an effect of quantization)
  instability   share of questions whose predicted answer is not the same in every replicate, per
           equal-mass bin of the full model's confidence, and the AUROC of low full-model
           confidence as a predictor of instability (0.5: no concentration on low confidence)
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu, ttest_1samp, wilcoxon

from quantconf.calibration import equal_mass_bin, probs_from_predictions
from quantconf.paired import compare_task, js_distance, pair_predictions

EFFECT_KEYS = ["delta_acc", "delta_nll", "delta_ece", "delta_ace", "delta_smece", "delta_brier", "delta_conf_true",
               "js_mean", "flip_rate"]


def replicate_family(config) -> str:
    """The label shared by replicates: a QuantConfig's label with its seed left out."""
    return dataclasses.replace(config, seed=0).label().removesuffix("-s0")


def _with_flip_rate(c: dict) -> dict:
    return {**c, "flip_rate": (c["flips_correct_to_wrong"] + c["flips_wrong_to_correct"]) / c["n"]}


def noise_floor(full: pd.DataFrame, replicates: list[pd.DataFrame], n_bins: int = 15, n_conf_bins: int = 5,
                alpha: float = 0.05, task: str = "") -> dict:
    """Effect (full vs each replicate), noise floor (replicate vs replicate), the per-question test and
    the instability of predictions across replicates, for one task. See the module docstring."""
    if len(replicates) < 2:
        raise ValueError("a noise floor needs at least two replicates")
    effect = [_with_flip_rate(compare_task(full, q, n_bins=n_bins, n_boot=0, task=task)) for q in replicates]
    pairs = list(itertools.combinations(range(len(replicates)), 2))
    noise = [_with_flip_rate(compare_task(replicates[i], replicates[j], n_bins=n_bins, n_boot=0, task=task))
             for i, j in pairs]
    out: dict = {"replicates": len(replicates), "pairs": len(pairs), "effect": {}, "noise": {}}
    for key in EFFECT_KEYS:
        e = np.array([c[key] for c in effect], float)
        nz = np.array([c[key] for c in noise], float)
        out["effect"][f"{key}_mean"] = float(e.mean())
        out["effect"][f"{key}_sd"] = float(e.std(ddof=1))
        # a replicate pair has no direction: its size is what counts
        out["noise"][key] = float(np.abs(nz).mean() if key.startswith("delta_") else nz.mean())
        if key.startswith("delta_"):
            out["noise"][f"{key}_sd"] = float(e.std(ddof=1))  # how much the effect itself moves between replicates

    # per question: JS to the full model vs JS between replicates, paired over questions
    f0, _ = pair_predictions(full, replicates[0], task)
    probs = []
    for q in replicates:
        _, qq = pair_predictions(f0, q, task)
        probs.append(probs_from_predictions(qq)[0])
    pf, _ = probs_from_predictions(f0)
    js_effect = np.mean([js_distance(pf, p) for p in probs], axis=0)
    js_noise = np.mean([js_distance(probs[i], probs[j]) for i, j in pairs], axis=0)
    diff = js_effect - js_noise
    p = float(wilcoxon(diff, alternative="greater").pvalue) if np.any(diff != 0) else 1.0
    clears = bool(p < alpha and js_effect.mean() > js_noise.mean())
    out["test"] = {"js_effect_mean": float(js_effect.mean()), "js_noise_mean": float(js_noise.mean()),
                   "p_wilcoxon_greater": p, "alpha": alpha, "clears_noise_floor": clears}
    for key in ("delta_acc", "delta_ece"):
        d = np.array([c[key] for c in effect], float)
        out["test"][f"p_ttest_{key}"] = float(ttest_1samp(d, 0.0).pvalue) if d.std() > 0 else (
            1.0 if d.mean() == 0 else 0.0)

    # instability: does the predicted answer change between replicates, and where?
    preds = np.stack([p.argmax(1) for p in probs])
    unstable = (preds != preds[0]).any(axis=0)
    conf = pf.max(1)
    k = min(n_conf_bins, len(conf))
    bins = equal_mass_bin(conf, k)
    by_bin = [{"bin": b, "n": int((bins == b).sum()), "conf_lo": float(conf[bins == b].min()),
               "conf_hi": float(conf[bins == b].max()), "unstable_rate": float(unstable[bins == b].mean())}
              for b in range(k) if (bins == b).any()]
    auroc = np.nan
    if unstable.any() and (~unstable).any():  # P(full conf of an unstable question < that of a stable one)
        auroc = float(mannwhitneyu(conf[~unstable], conf[unstable]).statistic / (unstable.sum() * (~unstable).sum()))
    out["instability"] = {"unstable_share": float(unstable.mean()), "by_full_confidence": by_bin,
                          "auroc_low_confidence_predicts_unstable": auroc}
    out["verdict"] = verdict(task, out)
    return out


def verdict(task: str, nf: dict) -> str:
    """Plain sentences: does the effect of quantization clear the noise floor, per question and on average?"""
    t, e = nf["test"], nf["effect"]
    js = (f"mean JS to full {t['js_effect_mean']:.3f} vs {t['js_noise_mean']:.3f} between replicates, one-sided "
          f"Wilcoxon p = {t['p_wilcoxon_greater']:.2g}")
    if t["clears_noise_floor"]:
        answers = f"quantization moves answers more than re-drawing the calibration sample does ({js})"
    else:
        answers = (f"quantization moves answers no more than re-drawing the calibration sample does ({js}): "
                   "per question, read full-vs-quantized differences as noise of the quantizer")
    acc = (f"Δacc {e['delta_acc_mean']:+.3f} ± {e['delta_acc_sd']:.3f} over {nf['replicates']} replicates "
           f"(t-test p = {t['p_ttest_delta_acc']:.2g})")
    if t["p_ttest_delta_acc"] < t["alpha"]:
        average = f"on average the accuracy change is consistent across calibration draws, a real effect: {acc}"
    else:
        average = f"the accuracy change is not distinguishable from zero across calibration draws: {acc}"
    return f"{task}: {answers}; {average}."
