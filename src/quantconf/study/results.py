"""A finished study's results as DataFrames and dicts: what the report shows.

`collect` reads the predictions and the analysis steps' outputs (metrics, comparisons, temperature
scaling, noise floors: computed once by the study, see `steps.py`); the other functions derive the
report's tables from them
(calibration-set spread, outliers vs quantization loss, scale trend, headlines, provenance).
Nothing here draws or writes HTML: `report.py` renders these, as scikit-learn's
`CalibrationDisplay` renders what `calibration_curve` computes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from quantconf.metric_registry import metric_names
from quantconf.errors import QuantconfError
from quantconf.kinds import kind_of_result
from quantconf.models.files import read_quantize_record
from quantconf.predictions import read_manifest
from quantconf.quantizers import load_methods
from quantconf.study.steps import (AnalysisStep, DivergenceStep, EvalStep, NoiseFloorStep, OutliersStep, PplStep,
                                   QuantizeStep, QuestionDivergenceStep)

TABLE_METRICS = metric_names("summary")  # the registry's (metric_registry.py)


@dataclass
class StudyResults:
    metrics: pd.DataFrame  # one row per (model, variant, task): metrics and their CIs (summary.csv)
    comparisons: list[dict]  # one per (model, quantized variant, task): compare_task's output
    samples: pd.DataFrame  # one row per paired question (the kind's per_sample_frame), for plots
    questions: pd.DataFrame  # the question explorer: one row per (model, quantized variant, task, question)
    reliability: dict  # (model, variant label, task) -> reliability bins of that evaluation
    kinds: dict  # (model, variant label, task) -> the task kind's name
    outliers: dict = field(default_factory=dict)  # model -> outliers.json content + "dir"
    recalibration: list = field(default_factory=list)  # one per (model, variant, single-label task)
    recalibration_verdicts: list = field(default_factory=list)  # one line per (model, quantized variant, task)
    noise_floors: list = field(default_factory=list)  # one per (model, replicated configuration, task)
    quantize_records: dict = field(default_factory=dict)  # (model, variant label) -> its quantize.json
    divergence: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per (model, variant): divergence_table
    question_divergence: pd.DataFrame = field(default_factory=pd.DataFrame)  # per (model, variant, task)


def step_label(step) -> str:
    return step.label()


def method_order(step) -> tuple:
    """Full model first, then variants by method, bits and label: every table lists methods together."""
    v = step.variant
    return (0, "", 0, "") if v is None else (1, v.method, v.bits, v.label())


def collect(study, steps) -> StudyResults:
    """Metrics and comparisons of every (model, variant, task) of a finished study, read from its
    analysis steps (computed once, when the study ran): nothing here bootstraps or fits."""
    evals = sorted((s for s in steps if isinstance(s, EvalStep)), key=method_order)  # stable: model order kept
    missing = [s for s in evals if not s.done()]
    if missing:
        raise QuantconfError(f"{len(missing)} evaluation step(s) of this study are missing or unfinished (first: "
                             f"{missing[0].describe()}); re-run `quantconf study CONFIG --out "
                             f"{missing[0].path.parent.parent}`: finished steps are reused")
    unanalysed = [s for s in steps if isinstance(s, (AnalysisStep, NoiseFloorStep)) and not s.done()]
    if unanalysed:
        raise QuantconfError(f"{len(unanalysed)} analysis step(s) of this study are missing (first: "
                             f"{unanalysed[0].describe()}); `quantconf report` computes them, or re-run the study")
    analysis = {id(s.evaluation): s.result() for s in steps if isinstance(s, AnalysisStep)}
    rows, comparisons, samples, question_rows, reliability, kinds = [], [], [], {}, {}, {}
    methods = load_methods()
    for s in evals:
        label = step_label(s)
        manifest = read_manifest(s.path)
        kinds.update({(s.model, label, task): k for task, k in analysis[id(s)]["kinds"].items()})
        reliability.update({(s.model, label, task): bins for task, bins in analysis[id(s)]["reliability"].items()})
        for task, m in analysis[id(s)]["metrics"].items():
            row = {"model": s.model, "variant": label, "task": task, "n": m["n"],
                   "method": s.variant.method if s.variant else "full", "bits": s.variant.bits if s.variant else 32,
                   "calib": s.variant.calib if s.variant and methods[s.variant.method].needs_calibration else "",
                   "n_params": manifest.get("model", {}).get("n_params")}
            for k in TABLE_METRICS + ["mc2"]:
                if k in m:
                    row[k] = m[k]
                    if "ci" in m and k in m["ci"]:
                        row[f"{k}_lo"], row[f"{k}_hi"] = m["ci"][k]
            rows.append(row)
    for s in evals:
        if s.variant is None:
            continue
        label = step_label(s)
        for task, c in analysis[id(s)]["comparisons"].items():
            comparisons.append({"model": s.model, "variant": label, "task": task, **c})
            frame = pd.DataFrame(analysis[id(s)]["samples"][task])
            frame["model"], frame["variant"] = s.model, label
            samples.append(frame)
            question_rows[(s.model, label, task)] = pd.DataFrame(analysis[id(s)]["questions"][task])
    ppl = {(s.model, step_label(s)): s.provenance()["perplexity"] for s in steps if isinstance(s, PplStep) and s.done()}
    metrics = pd.DataFrame(rows)
    if ppl and not metrics.empty:
        metrics["ppl"] = [ppl.get((m, v), np.nan) for m, v in zip(metrics["model"], metrics["variant"])]
    outliers = {s.model: {**json.loads((s.path / "outliers.json").read_text()), "dir": str(s.path)}
                for s in steps if isinstance(s, OutliersStep) and s.done()}
    floors = noise_floors(evals, [s for s in steps if isinstance(s, NoiseFloorStep)], comparisons, metrics)
    recal = [{"model": s.model, "variant": step_label(s), "task": task, **r}
             for s in evals for task, r in analysis[id(s)]["recalibration"].items()]
    recal_verdicts = [f"{s.model} / {step_label(s)} / {text}" for s in evals
                      for text in analysis[id(s)]["recalibration_verdicts"].values()]
    records = {(s.model, step_label(s)): read_quantize_record(s.path) for s in steps
               if isinstance(s, QuantizeStep) and s.path.is_dir()}
    return StudyResults(metrics, comparisons, pd.concat(samples, ignore_index=True) if samples else pd.DataFrame(),
                        question_table(question_rows, comparisons), reliability, kinds, outliers, recal,
                        recal_verdicts, floors, records,
                        divergence_table([s for s in steps if isinstance(s, DivergenceStep)], records),
                        question_divergence_table([s for s in steps if isinstance(s, QuestionDivergenceStep)]))


def question_divergence_table(steps) -> pd.DataFrame:
    """One row per (model, quantized variant, task) whose per-question divergence step finished: questions,
    flips, mean answer-token KL and choice JS, the AUROC of each for the flips with its 95% interval, and
    Spearman(KL, JS)."""
    rows = []
    for s in sorted(steps, key=method_order):
        if not s.done():
            continue
        for task, r in s.result()["tasks"].items():
            row = {"model": s.model, "variant": step_label(s), "task": task, "n": r["n"], "flipped": r["flipped"],
                   "correct_to_wrong": r["correct_to_wrong"], "kld_mean": r["kld_mean"], "js_mean": r["js_mean"]}
            for k in ("auroc_kld_flip", "auroc_js_flip"):
                row[k] = r[k]["estimate"]
                row[f"{k}_lo"], row[f"{k}_hi"] = r[k]["ci"] or (np.nan, np.nan)
            row["spearman_kld_js"] = r["spearman_kld_js"]
            rows.append(row)
    return pd.DataFrame(rows)


# the divergence statistics of a study's table (corpus/divergence.py's names), each with its 95% CI over windows
DIVERGENCE_COLUMNS = ["kld_mean", "kld_median", "kld_p90", "kld_p99", "kld_p999", "kld_max", "kld_reverse_mean",
                      "same_top", "delta_p_mean", "delta_p_rms", "ppl_ratio"]


def divergence_table(steps, records: dict) -> pd.DataFrame:
    """One row per (model, quantized variant) whose divergence step finished: the text, tokens and windows
    scored, deployed bits per weight (quantize.json), and each statistic of DIVERGENCE_COLUMNS with its
    interval (`_lo`, `_hi`; NaN where the text fits one window: there is nothing to resample)."""
    rows = []
    for s in sorted(steps, key=method_order):
        if not s.done():
            continue
        d = s.result()
        r = records.get((s.model, step_label(s)), {})
        row = {"model": s.model, "variant": step_label(s), "method": s.variant.method, "bits": s.variant.bits,
               "bits_per_weight": r.get("bits_per_weight", s.variant.bits), "text": d["text"], "tokens": d["tokens"],
               "windows": d["windows"]}
        for k in DIVERGENCE_COLUMNS:
            row[k] = d[k]["estimate"]
            row[f"{k}_lo"], row[f"{k}_hi"] = d[k]["ci"] or (np.nan, np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


NOISE_COLUMNS = ["js_mean", "flip_rate", "delta_acc_sd", "delta_ece_sd"]
# per replicated configuration and task, in summary.csv: the two-way effects (estimate, CI, p, Holm p)
FLOOR_COLUMNS = ["delta_acc", "delta_ece", "delta_l2_debiased", "delta_nll", "delta_smece", "delta_brier",
                 "systematic_share"]


def noise_floors(evals, floor_steps, comparisons, metrics) -> list[dict]:
    """The noise floors the study's noise-floor steps computed (families in the order of `evals`,
    tasks sorted), each Holm-adjusted over its configuration's tasks by its step; records `replicates`, `noise` and the two-way effects
    on every comparison entry and metric row (NaN/None for a single replicate)."""
    families: dict[tuple[str, str], list[str]] = {}
    for s in evals:
        if s.variant is not None:
            families.setdefault((s.model, s.variant.replicate_family()), []).append(step_label(s))
    member_of = {(m, label): (fam, labels) for (m, fam), labels in families.items() for label in labels}
    computed = {(f.model, f.family): f for f in floor_steps}
    floors = []
    for (model, fam), labels in families.items():
        if len(labels) < 2:
            continue
        floors += [{"model": model, "variant": fam, "members": labels, **nf}  # Holm-adjusted by the step
                   for nf in computed[(model, fam)].result()["floors"]]
    by = {(f["model"], f["variant"], f["task"]): f for f in floors}
    for c in comparisons:
        fam, labels = member_of[(c["model"], c["variant"])]
        f = by.get((c["model"], fam, c["task"]))
        c["replicates"] = len(labels)
        c["replicate_family"] = fam
        c["noise"] = f["noise"] if f else {k: None for k in NOISE_COLUMNS}
        c["inference"] = ("two-way: questions × replicates (see noise_floor)" if f else
                          "paired bootstrap over questions of one quantization run: the quantizer's own "
                          "run-to-run noise is not in these intervals")
    if not metrics.empty:
        cols = ["replicates"] + [f"noise_{k}" for k in NOISE_COLUMNS] + [
            f"nf_{k}{x}" for k in FLOOR_COLUMNS for x in ("", "_lo", "_hi", "_lo_adjusted", "_hi_adjusted", "_p", "_p_holm")]
        for col in cols:
            metrics[col] = np.nan
        for i, row in metrics.iterrows():
            if row["variant"] == "full":
                continue
            fam, labels = member_of[(row["model"], row["variant"])]
            metrics.loc[i, "replicates"] = len(labels)
            f = by.get((row["model"], fam, row["task"]))
            if not f:
                continue
            for k in NOISE_COLUMNS:
                metrics.loc[i, f"noise_{k}"] = f["noise"][k]
            for k in FLOOR_COLUMNS:
                e = f.get(k)
                if not e:  # a generation floor without confidence measures has delta_acc only
                    continue
                metrics.loc[i, [f"nf_{k}", f"nf_{k}_lo", f"nf_{k}_hi"]] = [e["estimate"], *e["ci"]]
                metrics.loc[i, [f"nf_{k}_lo_adjusted", f"nf_{k}_hi_adjusted"]] = e.get("ci_adjusted", e["ci"])
                metrics.loc[i, f"nf_{k}_p"] = np.nan if e["p"] is None else e["p"]
                metrics.loc[i, f"nf_{k}_p_holm"] = np.nan if e.get("p_holm") is None else e["p_holm"]
    return floors


def _est_ci(e: dict | None, scale: float = 1.0) -> str:
    if not e:
        return "—"
    lo, hi = e["ci"]
    return f"{e['estimate'] * scale:+.3f} [{lo * scale:+.3f}, {hi * scale:+.3f}]"


def _p(e: dict | None, key: str = "p") -> str:
    p = (e or {}).get(key)
    return "undefined" if p is None else f"{p:.3g}"


def noise_floor_table(floors: list[dict]) -> pd.DataFrame:
    """Per (model, replicated configuration, task): effects with two-way 95% CIs and Holm-adjusted p,
    the systematic share of the answer movement, and the descriptive noise floor."""
    rows = []
    for f in floors:
        e, n = f["effect"], f["noise"]
        rows.append({"model": f["model"], "variant": f["variant"], "task": f["task"], "n": f["n"],
                     "replicates": f["replicates"],
                     "Δacc [95% CI per comparison]": _est_ci(f["delta_acc"]),
                     "p Δacc (Holm)": _p(f["delta_acc"], "p_holm"),
                     "ΔECE, plug-in [95% CI]": _est_ci(f.get("delta_ece")),
                     "Δ debiased L2² ×1e4 [95% CI]": _est_ci(f.get("delta_l2_debiased"), 1e4),
                     "p Δ debiased L2² (Holm)": _p(f.get("delta_l2_debiased"), "p_holm"),
                     "systematic share [95% CI]": _est_ci(f["systematic_share"]),
                     "p systematic (Holm)": _p(f["systematic_share"], "p_holm"),
                     "Δacc sd over replicates": e["delta_acc_sd"], "|Δacc| between replicates": n["delta_acc"],
                     "JS to full": f["js"]["to_full_mean"], "JS between replicates": f["js"]["between_replicates_mean"],
                     "flip rate to full": e["flip_rate_mean"], "flip rate between replicates": n["flip_rate"],
                     "unstable answers": f["instability"]["unstable_share"],
                     "AUROC low conf → unstable": f["instability"]["auroc_low_confidence_predicts_unstable"],
                     "same, under equal noise": f["instability"].get("auroc_reference_equal_noise", {}).get("mean"),
                     "warnings": "; ".join(f.get("warnings", []))})
    return pd.DataFrame(rows)


def instability_table(floors: list[dict]) -> pd.DataFrame:
    """Share of questions whose answer differs between replicates, per bin of the full model's confidence."""
    return pd.DataFrame([{"model": f["model"], "variant": f["variant"], "task": f["task"], "bin": b["bin"],
                          "full conf range": f"{b['conf_lo']:.2f}–{b['conf_hi']:.2f}", "n": b["n"],
                          "unstable share": b["unstable_rate"]}
                         for f in floors for b in f["instability"]["by_full_confidence"]])


def recalibration_table(recalibration: list[dict]) -> pd.DataFrame:
    """Per (model, variant, task): the fitted temperature and metrics before/after cross-fitted scaling."""
    rows = []
    for r in recalibration:
        lo, hi = r["temperature_ci"]
        row = {"model": r["model"], "variant": r["variant"], "task": r["task"], "n": r["n"], "T": r["temperature"],
               "T 95% CI": f"[{lo:.2f}, {hi:.2f}]"}
        for m in ("ece", "smece", "ace", "nll"):
            row[f"{m} before"], row[f"{m} after"] = r["before"][m], r["after"][m]
        rows.append(row)
    return pd.DataFrame(rows)


def comparison_table(comparisons: list[dict]) -> pd.DataFrame:
    """Full vs quantized per (model, variant, task): deltas with CIs, JS, flips, p-values."""
    return pd.DataFrame([
        {"model": c["model"], "variant": c["variant"], "task": c["task"], "n": c["n"],
         "Δacc": c.get("delta_acc", np.nan), "Δacc 95% CI": _ci(c, "delta_acc"),
         "ΔNLL": c.get("delta_nll", np.nan), "ΔECE": c.get("delta_ece", np.nan),
         "ΔECE 95% CI": _ci(c, "delta_ece"), "ΔACE": c.get("delta_ace", np.nan),
         "Δp(gold)": c.get("delta_conf_true", np.nan), "JS mean": c.get("js_mean", np.nan),
         "correct→wrong": c.get("flips_correct_to_wrong", ""), "wrong→correct": c.get("flips_wrong_to_correct", ""),
         "p McNemar": c.get("p_mcnemar", np.nan), "p Wilcoxon p(gold)": c.get("p_wilcoxon", np.nan)}
        for c in comparisons])


def model_method_table(comparisons: list[dict]) -> pd.DataFrame:
    """Per (model, variant), the mean over tasks of Δacc, ΔECE, JS and the correctness-flip rate in
    the full model's least- and most-confident equal-mass bins: model families side by side."""
    rows = []
    for c in comparisons:
        bins = c.get("by_confidence_bin") or []
        rows.append({"model": c["model"], "variant": c["variant"], "Δacc": c.get("delta_acc", np.nan),
                     "ΔECE": c.get("delta_ece", np.nan), "JS mean": c.get("js_mean", np.nan),
                     "flip rate, least-confident bin": bins[0]["flip_rate"] if bins else np.nan,
                     "flip rate, most-confident bin": bins[-1]["flip_rate"] if bins else np.nan})
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    out = df.groupby(["model", "variant"], sort=False).mean(numeric_only=True).reset_index()
    out.insert(2, "tasks", df.groupby(["model", "variant"], sort=False).size().to_numpy())
    return out


def methods_table(comparisons: list[dict], records: dict) -> pd.DataFrame:
    """Per (model, variant), ordered by method: what the method costs (bits per weight, deployed size,
    quantize time; from quantize.json) and what it does (mean over tasks of Δacc, ΔECE, JS distance and
    the rate of correctness flips in either direction)."""
    rows = []
    for c in comparisons:
        n = c.get("n") or np.nan
        flips = c.get("flips_correct_to_wrong", np.nan) + c.get("flips_wrong_to_correct", np.nan)
        rows.append({"model": c["model"], "variant": c["variant"], "Δacc": c.get("delta_acc", np.nan),
                     "ΔECE": c.get("delta_ece", np.nan), "JS mean": c.get("js_mean", np.nan), "flip rate": flips / n})
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows).groupby(["model", "variant"], sort=False).mean(numeric_only=True).reset_index()
    facts = []
    for model, variant in zip(df["model"], df["variant"]):
        r = records.get((model, variant), {})
        deployed = r.get("deployed_bytes")
        facts.append({"method": r.get("method", variant.split("-")[0]), "bits/weight": r.get("bits_per_weight", np.nan),
                      "size (MB)": deployed / 1e6 if deployed else np.nan,
                      "quantize (s)": r.get("seconds", np.nan)})
    out = pd.concat([pd.DataFrame(facts), df], axis=1)
    return out[["model", "method", "variant", "bits/weight", "size (MB)", "quantize (s)", "Δacc", "ΔECE",
                "JS mean", "flip rate"]]


def _ci(c, key) -> str:
    ci = c.get("ci", {}).get(key)
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else ""


def confidence_bin_table(comparisons: list[dict]) -> pd.DataFrame:
    """Per equal-mass bin of the full model's confidence: accuracy, change of p(gold), JS, flips."""
    rows = []
    for c in comparisons:
        for b in c.get("by_confidence_bin", []):
            rows.append({"variant": c["variant"], "task": c["task"], "bin": b["bin"],
                         "full conf range": f"{b['conf_lo']:.2f}–{b['conf_hi']:.2f}", "n": b["n"],
                         "full acc": b["full_acc"], "quant acc": b["quant_acc"],
                         # generations: the change of the headline confidence (P(True)) instead of p(gold)
                         "mean |Δp(gold)|": b.get("mean_abs_delta_conf_true", b.get("mean_abs_delta_conf")),
                         "mean Δp(gold)": b.get("delta_conf_true", b.get("delta_conf")),
                         "JS mean": b.get("js_mean", np.nan), "flip rate": b["flip_rate"],
                         "answer changed": b.get("pred_change_rate", b.get("answer_changed_rate"))})
    return pd.DataFrame(rows)


def ci_text(frame: pd.DataFrame, name: str, fmt: str = ".3f") -> list[str]:
    """Column `name`'s 95% CI (`name_lo`, `name_hi`) as shown in tables: "[lo, hi]", empty where there is none."""
    return [f"[{a:{fmt}}, {b:{fmt}}]" if pd.notna(a) else "" for a, b in zip(frame[f"{name}_lo"], frame[f"{name}_hi"])]


def metrics_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """The per-model metric table as shown: values and their 95% CIs as text."""
    show = metrics.copy()
    for m in ("acc", "nll", "ece", "ace", "smece", "auroc"):
        if f"{m}_lo" in show:
            show[f"{m} CI"] = ci_text(show, m)
    cols = [c for c in ["model", "variant", "task", "n", "acc", "acc CI", "acc_norm", "nll", "nll CI", "brier", "ece",
                        "ece CI", "smece", "smece CI", "ece_sweep", "ace", "tace", "mce", "auroc", "auroc CI", "aurc",
                        "eaurc", "brier_reliability", "brier_resolution", "brier_uncertainty", "conf", "conf_true",
                        "entropy", "mc2", "ppl"] if c in show]
    return show[cols]


def divergence_shown(divergence: pd.DataFrame) -> pd.DataFrame:
    """The divergence table as shown: the headline statistics, their 95% CIs over windows as text."""
    show = divergence.copy()
    for m in ("kld_mean", "same_top", "ppl_ratio"):
        show[f"{m} CI"] = ci_text(show, m, ".4g")
    return show[["model", "variant", "bits_per_weight", "tokens", "windows", "kld_mean", "kld_mean CI", "kld_median",
                 "kld_p99", "kld_max", "kld_reverse_mean", "same_top", "same_top CI", "delta_p_rms", "ppl_ratio",
                 "ppl_ratio CI"]]


def question_divergence_shown(table: pd.DataFrame) -> pd.DataFrame:
    """The per-question divergence table as shown: the AUROCs' 95% CIs as text."""
    show = table.copy()
    for k in ("auroc_kld_flip", "auroc_js_flip"):
        show[f"{k} CI"] = ci_text(show, k)
    return show[["model", "variant", "task", "n", "flipped", "correct_to_wrong", "kld_mean", "js_mean",
                 "auroc_kld_flip", "auroc_kld_flip CI", "auroc_js_flip", "auroc_js_flip CI", "spearman_kld_js"]]


def calib_spread(metrics: pd.DataFrame) -> pd.DataFrame:
    """Spread across calibration sets of one method/bits: max - min and std of acc, NLL, ECE."""
    q = metrics[(metrics["method"] != "full") & (metrics["calib"] != "")]
    rows = []
    for (model, method, bits, task), g in q.groupby(["model", "method", "bits", "task"]):
        if g["calib"].nunique() < 2:
            continue
        row = {"model": model, "method": method, "bits": bits, "task": task, "n_sets": g["calib"].nunique()}
        for m in ("acc", "nll", "ece", "ppl"):
            if m in g:
                row[f"{m}_range"] = float(g[m].max() - g[m].min())
                row[f"{m}_std"] = float(g[m].std(ddof=0))
        rows.append(row)
    return pd.DataFrame(rows)


def outliers_vs_loss(metrics: pd.DataFrame, comparisons, outliers: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per calibration set: its activation-outlier statistics (full model) next to the quantization
    loss of the variants calibrated on it, and Spearman correlations across sets."""
    from scipy.stats import spearmanr  # lazy: scipy.stats takes ~1 s to import
    rows = []
    cdf = pd.DataFrame([{k: c.get(k, np.nan) for k in ("model", "variant", "delta_acc", "delta_nll", "delta_ece")}
                        for c in comparisons])
    variants = metrics[metrics["calib"] != ""].drop_duplicates(["model", "variant"])
    for _, v in variants.iterrows():
        stats = outliers.get(v["model"], {}).get("per_set", {}).get(v["calib"])
        if not stats:
            continue
        loss = cdf[(cdf["model"] == v["model"]) & (cdf["variant"] == v["variant"])]
        row = {"model": v["model"], "calib": v["calib"], "variant": v["variant"], **stats,
               "mean_delta_acc": float(loss["delta_acc"].mean()), "mean_delta_nll": float(loss["delta_nll"].mean()),
               "mean_delta_ece": float(loss["delta_ece"].mean())}
        if "ppl" in metrics:
            full = metrics[(metrics["model"] == v["model"]) & (metrics["variant"] == "full")]["ppl"]
            row["delta_ppl"] = float(v["ppl"] - full.iloc[0]) if len(full) else np.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    corr = []
    if len(table) >= 3:
        for stat in ("max_abs", "mean_kurtosis", "outlier_channels"):
            for loss in ("mean_delta_acc", "mean_delta_nll", "mean_delta_ece", "delta_ppl"):
                if loss in table and table[stat].nunique() > 1 and table[loss].nunique() > 1:
                    r = spearmanr(table[stat], table[loss])
                    corr.append({"outlier statistic": stat, "quantization loss": loss, "spearman rho": float(r.statistic),
                                 "p": float(r.pvalue), "n sets": len(table)})
    return table, pd.DataFrame(corr)


def scale_table(comparisons, metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean JS distance per (variant, model) with the model's parameter count; empty unless the
    study has at least two models."""
    cdf = pd.DataFrame([{k: c[k] for k in ("model", "variant", "task", "js_mean") if k in c} for c in comparisons])
    if cdf.empty or cdf["model"].nunique() < 2:
        return pd.DataFrame()
    params = metrics.drop_duplicates("model").set_index("model")["n_params"]
    cdf["n_params"] = cdf["model"].map(params)
    return cdf.groupby(["variant", "model", "n_params"], as_index=False)["js_mean"].mean().sort_values("n_params")


def headlines(comparisons) -> list[str]:
    """Plain-language answers computed from the comparison numbers, as each task kind words them (multiple
    choice: two lines per variant over its tasks; generation: one per task)."""
    by_kind: dict = {}
    for c in comparisons:
        by_kind.setdefault(kind_of_result(c), []).append(c)
    return [line for kind, cs in by_kind.items() for line in kind.headlines(cs)]


def provenance(study, steps) -> dict:
    """What produced every step: the config, and per step the record that step wrote."""
    return {"study": study.as_dict(),
            "steps": [{"kind": s.kind, "model": s.model, "variant": step_label(s), "path": str(s.path),
                       **s.provenance()} for s in steps]}


FLIP_KINDS = ("correct_to_wrong", "wrong_to_correct", "none")


def question_table(rows: dict, comparisons: list[dict]) -> pd.DataFrame:
    """One row per (model, quantized variant, task, question) compared in the study: the report's question
    explorer (and questions.csv), as each analysis step stored it (the kind's `question_rows`). Per question:
    its text, the gold answer, both models' answers and confidences, the change of the gold answer's
    probability, the JS distance, the flip kind (`correct_to_wrong`, `wrong_to_correct`, `none`; always `none`
    where a question has several true answers, as in `compare`) and, for replicated configurations, how many
    replicates give this variant's answer ("k/R", from the stored answers). Row counts per flip kind equal the
    comparisons' `flips_correct_to_wrong` / `flips_wrong_to_correct`."""
    family_members: dict[tuple, list[str]] = {}
    for c in comparisons:
        family_members.setdefault((c["model"], c.get("replicate_family", c["variant"]), c["task"]), []).append(c["variant"])
    frames = []
    for c in comparisons:
        model, label, task = c["model"], c["variant"], c["task"]
        frame = rows[(model, label, task)].copy()
        members = family_members[(model, c.get("replicate_family", label), task)]
        frame["replicate_agreement"] = ""
        if len(members) > 1:
            votes = pd.concat([rows[(model, m, task)].set_index("doc_id")["answer_key"] for m in members], axis=1)
            votes = votes.reindex(list(frame["doc_id"]))
            same = (votes.to_numpy() == frame["answer_key"].to_numpy()[:, None]).sum(1)
            frame["replicate_agreement"] = [f"{k}/{len(members)}" for k in same]
        frame["model"], frame["variant"], frame["task"] = model, label, task
        frames.append(frame[QUESTION_COLUMNS])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=QUESTION_COLUMNS)


QUESTION_COLUMNS = ["model", "variant", "task", "doc_id", "question", "gold_answer", "full_answer", "quant_answer",
                    "full_p_gold", "quant_p_gold", "delta_p_gold", "full_conf", "js", "flip", "replicate_agreement",
                    "choices", "full_probs", "quant_probs"]


def question_counts(questions: pd.DataFrame) -> dict:
    """Rows of the question explorer and how many of each flip kind (summary.json's `questions`)."""
    counts = questions["flip"].value_counts() if len(questions) else pd.Series(dtype=int)
    return {"rows": int(len(questions)), **{k: int(counts.get(k, 0)) for k in FLIP_KINDS}}


def frontier_table(comparisons: list[dict], records: dict) -> pd.DataFrame:
    """Size against damage: per (model, quantized variant, task) the deployed bits per weight (from
    quantize.json; the nominal bit width where a record has none) with Δacc and ΔECE and their CIs."""
    rows = []
    for c in comparisons:
        if "delta_acc" not in c:
            continue
        r = records.get((c["model"], c["variant"]), {})
        ci = c.get("ci", {})
        rows.append({"model": c["model"], "variant": c["variant"], "task": c["task"],
                     "method": r.get("method", c["variant"].split("-")[0]),
                     "bits_per_weight": r.get("bits_per_weight", (r.get("config") or {}).get("bits", np.nan)),
                     "delta_acc": c["delta_acc"], "delta_ece": c["delta_ece"],
                     **{f"{k}_{end}": (ci.get(k) or (np.nan, np.nan))[i] for k in ("delta_acc", "delta_ece")
                        for i, end in enumerate(("lo", "hi"))}})
    return pd.DataFrame(rows)
