"""The report's tables, derived from a finished study's results (`results.py` reads them): metrics, comparisons,
noise floors, recalibration, methods, confidence bins, divergence, calibration-set spread, outliers vs quantization
loss, scale trend, the size-against-damage frontier, headlines. Pure pandas on what the study's steps stored;
nothing here draws or writes HTML (`report.py` renders these, as scikit-learn's `CalibrationDisplay` renders what
`calibration_curve` computes).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from quantconf.kinds import kind_of_result


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


def measures_shown(table: pd.DataFrame) -> pd.DataFrame:
    """The confidence-measure table as shown: AUROC and PRR with their 95% intervals as text, and each quantized
    variant's change from the full model with its paired interval."""
    show = table.copy()
    for k in ("auroc", "prr", "delta_auroc", "delta_prr"):
        show[f"{k} CI"] = ci_text(show, k)
    return show[["model", "task", "measure", "variant", "n", "auroc", "auroc CI", "prr", "prr CI", "delta_auroc",
                 "delta_auroc CI", "delta_prr", "delta_prr CI"]].sort_values(["model", "task", "measure"], kind="stable")


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


FLIP_KINDS = ("correct_to_wrong", "wrong_to_correct", "none")


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


def maps_table(maps: list[dict], recalibration: list[dict]) -> pd.DataFrame:
    """Per (model, variant, task): top-label ECE before, after temperature scaling (where it applies) and after each
    recalibration map (held-out folds); for a quantized variant, its gap to the full model after each map with the
    95% paired interval ("is it as calibrated as the full model once mapped?")."""
    temperature = {(r["model"], r["variant"], r["task"]): r["after"]["ece"] for r in recalibration}
    rows = []
    for m in maps:
        row = {"model": m["model"], "variant": m["variant"], "task": m["task"], "n": m["n"],
               "ECE before": m["ece_before"],
               "after T": temperature.get((m["model"], m["variant"], m["task"]), np.nan)}
        names = [k for k, v in m.items() if isinstance(v, dict) and "ece_after" in v]
        row.update({f"after {name}": m[name]["ece_after"] for name in names})
        for name in names if "gap" in m else ():
            g = m["gap"][name]
            row[f"gap after {name}"] = f"{g['estimate']:+.3f} [{g['ci'][0]:+.3f}, {g['ci'][1]:+.3f}]"
        rows.append(row)
    return pd.DataFrame(rows)
