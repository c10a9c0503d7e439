"""The study report: self-contained HTML (plots embedded as PNG) + summary.csv / summary.json.

The numbers come from `study_results`; this module only draws and renders them. One function per
section, each returning a `Section` (title, intro, blocks of tables, images, lists); the page is
the Jinja2 template `templates/report.html.j2`, with autoescape on, so every piece of text placed
in the HTML is escaped. matplotlib is imported inside the plotting functions: it takes a second to
import and only report writing needs it.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd

from quantconf.io import atomic_write_bytes, atomic_write_json
from quantconf.calibration import probs_from_predictions, reliability_bins
from quantconf.study_results import (StudyResults, calib_spread, collect, comparison_table, confidence_bin_table,
                                     headlines, instability_table, methods_table, metrics_table, model_method_table, noise_floor_table,
                                     outliers_vs_loss,
                                     provenance, recalibration_table, recalibration_verdicts, scale_table)

TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("quantconf", "templates"), autoescape=True,
                               trim_blocks=True, lstrip_blocks=True)


@dataclass
class Section:
    title: str
    intro: str = ""
    blocks: list = field(default_factory=list)  # ("table", {columns, rows}) | ("image", {src, alt}) | ("list", [...]) | ("pre", str)
    level: int = 2


def cell(x) -> str:
    if isinstance(x, float):
        return "nan" if np.isnan(x) else f"{x:.4f}"
    return str(x)


def table_block(df: pd.DataFrame) -> tuple[str, dict]:
    return ("table", {"columns": [str(c) for c in df.columns],
                      "rows": [[cell(v) for v in row] for row in df.itertuples(index=False)]})


def png_block(fig, alt: str = "plot") -> tuple[str, dict]:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return ("image", {"alt": alt, "src": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()})


# ---------------------------------------------------------------------------------------------
# Plots


def reliability_plot(preds, model, task, n_bins):
    """Reliability diagram (bin accuracy with 95% Wilson intervals vs bin confidence), a strip of
    per-bin question counts under it, and the confidence histograms, full and quantized overlaid."""
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(9, 4.2))
    grid = fig.add_gridspec(2, 2, height_ratios=(3, 1), hspace=0.08)
    ax, strip, ax2 = fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[1, 0]), fig.add_subplot(grid[:, 1])
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="perfect")
    variants = [(label, p[task]) for (m, label), p in preds.items()
                if m == model and task in p and not any(isinstance(g, list) for g in p[task]["gold"])]
    width = 1 / n_bins / (len(variants) + 1)
    for i, (label, df) in enumerate(variants):
        probs, _ = probs_from_predictions(df)
        gold = np.asarray(list(df["gold"]), int)
        conf, correct = probs.max(1), probs.argmax(1) == gold
        rb = reliability_bins(conf, correct, n_bins)
        ok = rb["count"] > 0
        line, = ax.plot(rb["conf"][ok], rb["acc"][ok], "o-", ms=3, label=label)
        # Wilson bounds can sit a rounding error inside an accuracy of exactly 0 or 1: clip at 0
        yerr = np.clip([rb["acc"][ok] - rb["acc_lo"][ok], rb["acc_hi"][ok] - rb["acc"][ok]], 0, None)
        ax.errorbar(rb["conf"][ok], rb["acc"][ok], yerr=yerr, fmt="none", ecolor=line.get_color(), alpha=0.5,
                    capsize=2)
        strip.bar(rb["edges"][:-1] + (i + 0.5) * width, rb["count"], width=width, color=line.get_color())
        ax2.hist(conf, bins=np.linspace(0, 1, n_bins + 1), histtype="step", lw=1.5, label=label)
    ax.set(ylabel="accuracy (95% Wilson CI)", title=f"reliability: {task}", xlim=(0, 1), ylim=(0, 1))
    ax.tick_params(labelbottom=False)
    ax.legend(fontsize=7)
    strip.set(xlim=(0, 1), xlabel="confidence (top-choice probability)", ylabel="questions")
    ax2.set(xlabel="confidence", ylabel="questions", title=f"confidence histogram: {task}")
    return png_block(fig)


def shift_plot(samples: pd.DataFrame, comparisons, model, task):
    import matplotlib.pyplot as plt

    sub = samples[(samples["model"] == model) & (samples["task"] == task)] if not samples.empty else samples
    if sub.empty or sub["full_p_true"].isna().all():
        return None
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
    for label, g in sub.groupby("variant"):
        ax.scatter(g["full_conf"], g["quant_p_true"] - g["full_p_true"], s=6, alpha=0.4, label=label)
        comp = next(c for c in comparisons if c["model"] == model and c["variant"] == label and c["task"] == task)
        b = comp.get("by_confidence_bin", [])
        ax.plot([(x["conf_lo"] + x["conf_hi"]) / 2 for x in b], [x["delta_conf_true"] for x in b], "s-", lw=2)
        ax2.hist(g["js"], bins=30, histtype="step", lw=1.5, label=label)
    ax.axhline(0, color="k", lw=0.8)
    ax.set(xlabel="full model confidence", ylabel="Δ gold-choice probability (quant - full)",
           title=f"confidence shift: {task} (squares: bin means)")
    ax.legend(fontsize=7)
    ax2.set(xlabel="Jensen-Shannon distance (base 2)", ylabel="questions", title="JS distance full vs quantized")
    return png_block(fig)


def scale_plot(table: pd.DataFrame):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    for label, g in table.groupby("variant"):
        ax.plot(g["n_params"], g["js_mean"], "o-", label=label)
    ax.set(xscale="log", xlabel="parameters", ylabel="mean JS distance", title="scale trend")
    ax.legend(fontsize=7)
    return png_block(fig)


# ---------------------------------------------------------------------------------------------
# Sections


def headline_section(res: StudyResults) -> Section:
    lines = headlines(res.comparisons) + [f"{f['model']} / {f['variant']} ({f['replicates']} replicates) / {f['verdict']}"
                                          for f in res.noise_floors]
    return Section("In short", blocks=[("list", lines)])


def noise_floor_section(res: StudyResults) -> Section | None:
    if not res.noise_floors:
        return None
    return Section("Is it quantization or noise?",
                   "Replicates quantize with the same configuration and another draw of the calibration sample. "
                   "Each Δ is the mean over replicates of quantized − full; its 95% CI and p include both sources "
                   "of variation: which questions were asked (bootstrap over questions) and which calibration "
                   "sample was drawn (the replicates' spread), with Welch-Satterthwaite degrees of freedom; p is "
                   "Holm-adjusted over every configuration × task of the study (per statistic). Systematic share: "
                   "the part of the movement of the answer distributions (centred log-probabilities) that is not "
                   "the quantizer's own scatter around the full model, tested one-sided against 'replicates "
                   "scatter around the full model'. JS and flip rates to full and between replicates are "
                   "descriptive. Unstable answers: questions whose predicted answer differs between replicates, "
                   "by the full model's confidence (AUROC > 0.5: instability concentrates on low-confidence "
                   "questions).",
                   [table_block(noise_floor_table(res.noise_floors)), table_block(instability_table(res.noise_floors))])


def comparison_section(res: StudyResults) -> Section:
    return Section("Did quantization change accuracy and calibration?",
                   "Δ = quantized − full, paired over the same questions; CIs from a paired bootstrap over "
                   "questions of each quantization run, so they do not include the quantizer's own run-to-run "
                   "noise (for configurations with replicates, see 'Is it quantization or noise?').",
                   [table_block(comparison_table(res.comparisons))])


def model_method_section(res: StudyResults) -> Section | None:
    if len({c["model"] for c in res.comparisons}) < 2:
        return None
    return Section("Models side by side",
                   "Per model and quantization variant, the mean over tasks of the full-vs-quantized comparison; "
                   "flip rates in the full model's least- and most-confident equal-mass bins (the bins of the "
                   "next table). Different model families can react differently to the same quantization.",
                   [table_block(model_method_table(res.comparisons))])


def methods_section(res: StudyResults) -> Section | None:
    if len({c["variant"] for c in res.comparisons}) < 2:
        return None
    return Section("Quantization methods side by side",
                   "Per quantized variant: bits per weight (scales and zero points included) and deployed size "
                   "(quantized layers at those bits, every other parameter at 16 bits: the same formula for every "
                   "method), quantization time, and the mean over tasks of Δacc, ΔECE, JS distance and the rate of "
                   "correctness flips (either direction).",
                   [table_block(methods_table(res.comparisons, res.quantize_records))])


def confidence_bin_section(res: StudyResults) -> Section:
    return Section("Were low-confidence samples affected more?",
                   "Questions split into equal-mass bins of the full model's confidence; per bin the mean absolute "
                   "change of the gold-choice probability, mean JS distance and the rate of correctness flips.",
                   [table_block(confidence_bin_table(res.comparisons))])


def metrics_section(res: StudyResults) -> Section:
    return Section("Metrics per model and variant (95% bootstrap CIs)", blocks=[table_block(metrics_table(res.metrics))])


def calib_spread_section(spread: pd.DataFrame) -> Section | None:
    if spread.empty:
        return None
    return Section("Calibration-set sensitivity", "Spread across calibration sets of the same method and bit width "
                   "(range = max − min; std over sets).", [table_block(spread)])


def outlier_sections(res: StudyResults) -> list[Section]:
    if not res.outliers:
        return []
    table, corr = outliers_vs_loss(res.metrics, res.comparisons, res.outliers)
    out = [Section("Do a calibration set's activation outliers predict its quantization loss?",
                   "Outlier statistics of each set on the full model (max |x|, mean kurtosis, channels above the "
                   "threshold, summed over layers and modules) next to the loss of the variant calibrated on it; "
                   "Spearman correlation across sets (few sets: read as a hint, not a test).",
                   [table_block(table), table_block(corr)])]
    for model, rec in res.outliers.items():
        images = [("image", {"alt": png.stem, "src": "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()})
                  for png in sorted(Path(rec["dir"]).glob("*.png"))]
        out.append(Section(f"Activation outliers: {model}", blocks=images, level=3))
    return out


def task_plot_sections(study, res: StudyResults) -> list[Section]:
    """Per model and evaluated task (a group such as mmlu is its subtasks: one parquet, one plot each)."""
    out = []
    for model in study.models:
        for task in study.leaf_tasks():
            blocks = [reliability_plot(res.preds, model, task, study.bins)]
            shift = shift_plot(res.samples, res.comparisons, model, task)
            if shift:
                blocks.append(shift)
            out.append(Section(f"{model} — {task}", blocks=blocks))
    return out


def recalibration_section(res: StudyResults) -> Section | None:
    if not res.recalibration:
        return None
    return Section("Can one temperature undo it?",
                   "Temperature scaling per model and task: T fitted by NLL (95% bootstrap CI), metrics before "
                   "and after, the after values on held-out folds (5-fold cross-fitting). Scaling never changes "
                   "accuracy.", [("list", recalibration_verdicts(res.recalibration)),
                                 table_block(recalibration_table(res.recalibration))])


def scale_section(res: StudyResults) -> Section | None:
    table = scale_table(res.comparisons, res.metrics)
    if table.empty:
        return None
    return Section("Scale trend", blocks=[scale_plot(table), table_block(table)])


def provenance_section(study, steps) -> Section:
    return Section("Configuration and provenance",
                   blocks=[("pre", json.dumps(provenance(study, steps), indent=2, default=str))])


# ---------------------------------------------------------------------------------------------


def write_report(study, study_dir: Path, steps, log=print) -> Path:
    """Write summary.csv, summary.json, calib_spread.csv (when a study sweeps calibration sets)
    and the self-contained report.html into `study_dir`; returns the report's path."""
    import matplotlib

    matplotlib.use("Agg")
    res = collect(study, steps)
    atomic_write_bytes(study_dir / "summary.csv", res.metrics.to_csv(index=False).encode())
    atomic_write_json(study_dir / "summary.json", {"metrics": res.metrics.to_dict(orient="records"),
                                                    "comparisons": res.comparisons,
                                                    "recalibration": res.recalibration,
                                                    "noise_floor": res.noise_floors})
    spread = calib_spread(res.metrics)
    if not spread.empty:
        atomic_write_bytes(study_dir / "calib_spread.csv", spread.to_csv(index=False).encode())
    sections = [headline_section(res), noise_floor_section(res), comparison_section(res), methods_section(res),
                model_method_section(res), confidence_bin_section(res),
                metrics_section(res),
                calib_spread_section(spread), recalibration_section(res), *outlier_sections(res), *task_plot_sections(study, res),
                scale_section(res), provenance_section(study, steps)]
    page = TEMPLATES.get_template("report.html.j2").render(title=study.name, sections=[s for s in sections if s])
    out = study_dir / "report.html"
    atomic_write_bytes(out, page.encode())
    log(f"report: {out}")
    return out
