"""The study report: self-contained HTML (interactive Plotly figures, plotly.js embedded once; the
outlier heatmaps the outliers step drew, as PNG) + summary.csv / summary.json / questions.csv.

The numbers come from `study_results`; this module only draws and renders them. One function per
section, each returning a `Section` (title, intro, blocks of tables, images, lists); the page is
the Jinja2 template `templates/report.html.j2`, with autoescape on, so every piece of text placed
in the HTML is escaped. Plotly is imported inside the plotting functions: only report writing needs it.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import numpy as np
from markupsafe import Markup
import pandas as pd

from quantconf.io import atomic_write_bytes, atomic_write_json, check_writable_files
from quantconf.kinds import kind_named, kind_of_result
from quantconf.study.results import StudyResults, collect, provenance
from quantconf.study.tables import (FLIP_KINDS, calib_spread, comparison_table, confidence_bin_table, divergence_shown,
                                    frontier_table, headlines, instability_table, methods_table, metrics_table,
                                    model_method_table, noise_floor_table, outliers_vs_loss, question_counts,
                                    maps_table, measures_shown, question_divergence_shown, recalibration_table,
                                    scale_table)

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
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


# ---------------------------------------------------------------------------------------------
# Plots


def plotly_block(fig) -> tuple[str, Markup]:
    """An interactive figure: a div and the call that draws it (plotly.js is embedded once per page).
    Plotly writes the figure as JSON with <, > and / escaped, so text in it cannot end the script."""
    import plotly.io as pio

    fig.update_layout(template="simple_white", margin=dict(l=50, r=20, t=50, b=40))
    return ("plotly", Markup(pio.to_html(fig, include_plotlyjs=False, full_html=False, default_height="420px",
                                         config={"displaylogo": False})))


def reliability_plot(res: StudyResults, model, task):
    """Interactive reliability diagram (bin accuracy with 95% Wilson intervals against bin confidence;
    hover: the bin's range, count and numbers) beside the confidence histogram of every variant (the bins
    each analysis step stored)."""
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go

    fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45], horizontal_spacing=0.1,
                        subplot_titles=(f"reliability: {task}", "questions per confidence bin"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="black", width=1),
                             name="perfect", hoverinfo="skip"), row=1, col=1)
    variants = [(label, {k: np.asarray(v) for k, v in bins.items()})
                for (m, label, t), bins in res.reliability.items() if m == model and t == task]
    for i, (label, rb) in enumerate(variants):
        ok = rb["count"] > 0
        lo, hi = rb["edges"][:-1][ok], rb["edges"][1:][ok]
        hover = [f"{label}<br>confidence {a:.2f}–{b:.2f}: {n} questions<br>mean confidence {c:.3f}<br>"
                 f"accuracy {acc:.3f} [{l:.3f}, {h:.3f}]"
                 for a, b, n, c, acc, l, h in zip(lo, hi, rb["count"][ok], rb["conf"][ok], rb["acc"][ok],
                                                   rb["acc_lo"][ok], rb["acc_hi"][ok])]
        color = COLORS[i % len(COLORS)]
        fig.add_trace(go.Scatter(
            x=rb["conf"][ok], y=rb["acc"][ok], mode="lines+markers", name=label, legendgroup=label,
            line=dict(color=color), hovertext=hover, hoverinfo="text",
            error_y=dict(type="data", symmetric=False, thickness=1,
                         # Wilson bounds can sit a rounding error inside 0 or 1: clip at 0
                         array=np.clip(rb["acc_hi"][ok] - rb["acc"][ok], 0, None),
                         arrayminus=np.clip(rb["acc"][ok] - rb["acc_lo"][ok], 0, None))), row=1, col=1)
        fig.add_trace(go.Bar(x=(rb["edges"][:-1] + rb["edges"][1:]) / 2, y=rb["count"], name=label,
                             legendgroup=label, showlegend=False, marker_color=color, opacity=0.6,
                             hovertemplate=f"{label}<br>confidence %{{x:.2f}}: %{{y}} questions<extra></extra>"),
                      row=1, col=2)
    fig.update_layout(barmode="group", legend=dict(font=dict(size=10)))
    labels = {kind_named(k).confidence_label for (m, _, t), k in res.kinds.items() if m == model and t == task}
    fig.update_xaxes(title_text=labels.pop() if len(labels) == 1 else "confidence", range=[0, 1])
    fig.update_yaxes(title_text="accuracy (95% Wilson CI)", range=[0, 1.02], row=1, col=1)
    fig.update_yaxes(title_text="questions", row=1, col=2)
    return plotly_block(fig)


def frontier_plot(table: pd.DataFrame, divergence: pd.DataFrame | None = None):
    """Size against damage: deployed bits per weight against Δacc and ΔECE (95% CIs), one point per
    quantized variant and task, and (when the study measured it) the mean token-level KL of each variant;
    hover names the variant."""
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go

    with_kld = divergence is not None and not divergence.empty
    titles = ("Δ accuracy (quantized − full)", "Δ ECE (quantized − full)") + (("KL(full‖quant) mean per token",) if with_kld else ())
    fig = make_subplots(rows=1, cols=len(titles), horizontal_spacing=0.08 if with_kld else 0.12, subplot_titles=titles)
    for i, ((model, task), g) in enumerate(table.groupby(["model", "task"], sort=False)):
        color = COLORS[i % len(COLORS)]
        for col, key in ((1, "delta_acc"), (2, "delta_ece")):
            hover = [f"{v}<br>{model} / {task}<br>{b:.3g} bits/weight<br>{key} {d:+.4f} [{lo:+.4f}, {hi:+.4f}]"
                     for v, b, d, lo, hi in zip(g["variant"], g["bits_per_weight"], g[key], g[f"{key}_lo"],
                                                 g[f"{key}_hi"])]
            fig.add_trace(go.Scatter(
                x=g["bits_per_weight"], y=g[key], mode="markers", name=f"{model} / {task}", legendgroup=f"{model}/{task}",
                showlegend=col == 1, marker=dict(color=color, size=9), hovertext=hover, hoverinfo="text",
                error_y=dict(type="data", symmetric=False, thickness=1, array=(g[f"{key}_hi"] - g[key]).fillna(0),
                             arrayminus=(g[key] - g[f"{key}_lo"]).fillna(0))), row=1, col=col)
    if with_kld:  # one point per variant: the divergence is measured on text, not per task
        for model, g in divergence.groupby("model", sort=False):
            hover = [f"{v}<br>{model}<br>{b:.3g} bits/weight<br>KL mean {k:.4g} nats" for v, b, k in
                     zip(g["variant"], g["bits_per_weight"], g["kld_mean"])]
            fig.add_trace(go.Scatter(
                x=g["bits_per_weight"], y=g["kld_mean"], mode="markers", name=f"{model}: KL on {g['text'].iloc[0]}",
                marker=dict(color="black", size=9, symbol="diamond"), hovertext=hover, hoverinfo="text",
                error_y=dict(type="data", symmetric=False, thickness=1, array=(g["kld_mean_hi"] - g["kld_mean"]).fillna(0),
                             arrayminus=(g["kld_mean"] - g["kld_mean_lo"]).fillna(0))), row=1, col=3)
        fig.update_yaxes(type="log", row=1, col=3)
    for col in (1, 2):
        fig.add_hline(y=0, line=dict(color="black", width=0.8), row=1, col=col)
    fig.update_xaxes(title_text="deployed bits per weight (scales and zero points included)")
    fig.update_layout(legend=dict(font=dict(size=10)))
    return plotly_block(fig)


def shift_plot(samples: pd.DataFrame, comparisons, model, task):
    """Confidence shift per question against the full model's confidence (points; squares: the bin means the
    comparison computed) beside the histogram of per-question JS distances; generations have no choice
    distribution, so only the P(True) shift. Hover names the variant and the values."""
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go

    sub = samples[(samples["model"] == model) & (samples["task"] == task)] if not samples.empty else samples
    if sub.empty or sub["full_p_true"].isna().all():
        return None
    kind = kind_of_result(next(c for c in comparisons if c["model"] == model and c["task"] == task))
    titles = [f"confidence shift: {task} (squares: bin means)"]
    if kind.has_choice_distribution:  # a JS distance per question: its histogram beside the shift
        titles.append("JS distance full vs quantized")
    fig = make_subplots(rows=1, cols=len(titles), horizontal_spacing=0.12, subplot_titles=titles)
    for i, (label, g) in enumerate(sub.groupby("variant")):
        color = COLORS[i % len(COLORS)]
        shift = g["quant_p_true"] - g["full_p_true"]
        fig.add_trace(go.Scattergl(x=g["full_conf"], y=shift, mode="markers", name=label, legendgroup=label,
                                   marker=dict(color=color, size=4, opacity=0.4),
                                   hovertemplate=f"{label}<br>full %{{x:.3f}}<br>shift %{{y:+.3f}}<extra></extra>"),
                      row=1, col=1)
        comp = next(c for c in comparisons if c["model"] == model and c["variant"] == label and c["task"] == task)
        b = comp.get("by_confidence_bin", [])
        fig.add_trace(go.Scatter(x=[(x["conf_lo"] + x["conf_hi"]) / 2 for x in b],
                                 y=[x.get("delta_conf_true", x.get("delta_conf")) for x in b], mode="lines+markers",
                                 name=f"{label} bin means", legendgroup=label, showlegend=False,
                                 marker=dict(color=color, symbol="square", size=8), line=dict(color=color, width=2)),
                      row=1, col=1)
        if len(titles) > 1:
            fig.add_trace(go.Histogram(x=g["js"], nbinsx=30, name=label, legendgroup=label, showlegend=False,
                                       marker_color=color, opacity=0.6), row=1, col=2)
    fig.add_hline(y=0, line=dict(color="black", width=0.8), row=1, col=1)
    fig.update_xaxes(title_text=kind.full_confidence_label, row=1, col=1)
    fig.update_yaxes(title_text=kind.shift_label, row=1, col=1)
    if len(titles) > 1:
        fig.update_layout(barmode="overlay")
        fig.update_xaxes(title_text="Jensen-Shannon distance (base 2)", row=1, col=2)
        fig.update_yaxes(title_text="questions", row=1, col=2)
    return plotly_block(fig)


def scale_plot(table: pd.DataFrame):
    """Mean JS distance against the number of parameters (log axis), one line per variant."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for label, g in table.groupby("variant"):
        fig.add_trace(go.Scatter(x=g["n_params"], y=g["js_mean"], mode="lines+markers", name=label))
    fig.update_layout(title="scale trend", xaxis=dict(type="log", title="parameters"),
                      yaxis=dict(title="mean JS distance"))
    return plotly_block(fig)


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
                   "sample was drawn (the replicates' spread), with Welch-Satterthwaite degrees of freedom; CIs are "
                   "per comparison, p is Holm-adjusted over the tasks of each configuration (per statistic; "
                   "summary.json also holds the Bonferroni-widened interval, ci_adjusted). Calibration claims use "
                   "the debiased squared L2 calibration error (Kumar et al. 2019); ΔECE is the binned plug-in "
                   "quantity, whose bias depends on sharpness. Systematic share, multiple choice: the part of the "
                   "movement of the answer probabilities that is not the quantizer's own scatter, tested one-sided "
                   "against 'the mean over calibration draws of the quantized distribution is the full model's'; "
                   "generation: the excess overlap of the prompts the replicates flip, tested by a stratified "
                   "permutation. JS and flip rates to full and between replicates are descriptive. Unstable "
                   "answers: questions whose predicted answer differs between replicates, by the full model's "
                   "confidence; its AUROC is read beside the AUROC that equal noise on every question gives "
                   "(~0.9 by itself), not against 0.5. Warnings name designs the simulations do not validate.",
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
            blocks = [reliability_plot(res, model, task)]
            shift = shift_plot(res.samples, res.comparisons, model, task)
            if shift:
                blocks.append(shift)
            out.append(Section(f"{model} — {task}", blocks=blocks))
    return out


KLD_QUANTILES = (("median", "kld_median"), ("p90", "kld_p90"), ("p99", "kld_p99"), ("p99.9", "kld_p999"),
                 ("max", "kld_max"))


def divergence_plot(table: pd.DataFrame):
    """Left: each variant's distribution of per-token KL(full||quant) as its quantiles (log scale, 95% CIs over
    windows); right: the share of tokens whose top token is unchanged against deployed bits per weight."""
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go

    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=("KL(full‖quant) per token: quantiles", "same top token against size"))
    several_models = table["model"].nunique() > 1
    for i, r in enumerate(table.to_dict("records")):
        color, name = COLORS[i % len(COLORS)], f"{r['model']} / {r['variant']}" if several_models else r["variant"]
        est = [r[k] for _, k in KLD_QUANTILES]
        fig.add_trace(go.Scatter(
            x=[q for q, _ in KLD_QUANTILES], y=est, mode="lines+markers", name=name, legendgroup=name,
            marker_color=color, hovertemplate=f"{name}<br>%{{x}}: %{{y:.4g}} nats<extra></extra>",
            error_y=dict(type="data", symmetric=False, thickness=1,
                         array=[np.nan_to_num(r[f"{k}_hi"] - r[k]) for _, k in KLD_QUANTILES],
                         arrayminus=[np.nan_to_num(r[k] - r[f"{k}_lo"]) for _, k in KLD_QUANTILES])), row=1, col=1)
        fig.add_trace(go.Scatter(
            x=[r["bits_per_weight"]], y=[r["same_top"]], mode="markers", name=name, legendgroup=name, showlegend=False,
            marker=dict(color=color, size=10),
            hovertemplate=f"{name}<br>%{{x:.3g}} bits/weight<br>same top %{{y:.1f}}%<extra></extra>",
            error_y=dict(type="data", symmetric=False, thickness=1, array=[np.nan_to_num(r["same_top_hi"] - r["same_top"])],
                         arrayminus=[np.nan_to_num(r["same_top"] - r["same_top_lo"])])), row=1, col=2)
    fig.update_yaxes(type="log", title_text="KL divergence (nats)", row=1, col=1)
    fig.update_yaxes(title_text="tokens with the same top token (%)", row=1, col=2)
    fig.update_xaxes(title_text="quantile over tokens", row=1, col=1)
    fig.update_xaxes(title_text="deployed bits per weight", row=1, col=2)
    fig.update_layout(legend=dict(font=dict(size=10)))
    return plotly_block(fig)


def divergence_section(res: StudyResults) -> Section | None:
    table = res.divergence
    if table.empty:
        return None
    row = table.iloc[0]
    return Section("How far did each variant drift, token by token?",
                   f"Both models read the same {row['tokens']} tokens of {row['text']} in windows of 512 (stride 256, "
                   "as the ppl steps); per token, the KL divergence between the full and quantized next-token "
                   "distributions over the whole vocabulary, whether the most likely token is the same, and each "
                   "model's probability of the text's next token (Δp: quantized − full). Intervals: 95% percentile "
                   "bootstrap over whole windows (tokens of one window share their context and are not "
                   "independent); none where the text fits one window. KL in nats; ppl_ratio is the quantized "
                   "model's perplexity over the full model's on these tokens.",
                   [divergence_plot(table), table_block(divergence_shown(table))])


def question_divergence_section(res: StudyResults) -> Section | None:
    if res.question_divergence.empty:
        return None
    return Section("Do questions whose answer tokens drifted flip?",
                   "Per question of each single-answer multiple-choice task, both models score every choice's "
                   "answer tokens after the question's context (of a generation task: the full model's answer "
                   "tokens after the prompt, a flip being the answer changing, and no JS); kld_mean is the mean over questions of the answer "
                   "tokens' KL(full‖quant) over the whole vocabulary, js_mean the choice-level JS distance. "
                   "auroc_kld_flip: the probability that a question whose answer flipped has a higher KL than one "
                   "whose answer did not (0.5: KL does not tell them apart; 95% bootstrap CI over questions); "
                   "auroc_js_flip the same for the JS distance, which is computed from the very choice "
                   "probabilities whose argmax flips (a ceiling, not a rival).", [table_block(question_divergence_shown(res.question_divergence))])


# shown at first in a risk-coverage plot (the others one click away in its legend)
RISK_COVERAGE_SHOWN = ("p_true", "mean_token_prob", "neg_semantic_entropy", "greedy_agreement")


def risk_coverage_plot(res: StudyResults, model, task):
    """Risk against coverage of every confidence measure and variant of one (model, generation task): the error
    rate of the answers a measure is most confident in. Lower is better; a flat line at the error rate is chance."""
    import plotly.graph_objects as go

    fig = go.Figure()
    variants = [v for (m, v, t) in res.risk_coverage if m == model and t == task]
    dashes = ["solid", "dash", "dot", "dashdot", "longdash"]
    for vi, variant in enumerate(variants):
        for mi, (name, curve) in enumerate(res.risk_coverage[(model, variant, task)].items()):
            fig.add_trace(go.Scatter(
                x=curve["coverage"], y=curve["risk"], mode="lines", name=f"{name} · {variant}",
                line=dict(color=COLORS[mi % len(COLORS)], dash=dashes[vi % len(dashes)]),
                visible=True if name in RISK_COVERAGE_SHOWN else "legendonly",
                hovertemplate=f"{name} · {variant}<br>coverage %{{x:.2f}}<br>risk %{{y:.3f}}<br>AURC "
                              f"{curve['aurc']:.3f}<extra></extra>"))
    fig.update_layout(title=f"{model} · {task}: risk-coverage (answers kept most confident first)",
                      xaxis_title="coverage (share of answers kept)", yaxis_title="risk (error rate of those kept)",
                      legend=dict(font=dict(size=10)))
    return plotly_block(fig)


def measures_section(res: StudyResults) -> Section | None:
    if res.measures.empty:
        return None
    sampled = res.measures["measure"].isin(["neg_semantic_entropy", "greedy_agreement"]).any()
    keys = sorted({(m, t) for (m, v, t) in res.risk_coverage}, key=str)
    return Section("Which confidence measures detect wrong answers, and what did quantization do to them?",
                   "For each generation task, every confidence measure of an answer as a detector of the answer being "
                   "wrong: AUROC (0.5: chance) and PRR, the prediction rejection ratio (share of the oracle's gain "
                   "in accuracy that rejecting the least confident answers achieves; 0: chance, 1: perfect), each "
                   "with its 95% bootstrap interval over prompts, and for each quantized variant the change from "
                   "the full model (paired bootstrap over prompts)."
                   + (" The sampling-based measures (greedy_agreement, semantic entropy, EigV, Deg, Ecc, lexical "
                      "similarity, Monte-Carlo entropies) read the K sampled answers per prompt (study key "
                      "`samples`); each equals LM-Polygraph's estimator of that name, negated so higher means "
                      "more confident." if sampled else "")
                   + " Below, the risk-coverage curves (a few measures shown; the legend adds the others).",
                   [table_block(measures_shown(res.measures))] + [risk_coverage_plot(res, m, t) for m, t in keys])


def recalibration_section(res: StudyResults) -> Section | None:
    if not res.recalibration:
        return None
    return Section("Can one temperature undo it?",
                   "Temperature scaling per model and task: T fitted by NLL (95% bootstrap CI), metrics before "
                   "and after, the after values on held-out folds (5-fold cross-fitting). Scaling never changes "
                   "accuracy.", [("list", res.recalibration_verdicts),
                                 table_block(recalibration_table(res.recalibration))])


def maps_section(res: StudyResults) -> Section | None:
    if not res.recalibration_maps:
        return None
    return Section("Which recalibration map undoes it?",
                   "Top-label ECE (the top answer's confidence against whether it is right; a generation's P(True)) "
                   "before and after each map, every map fitted on four folds and scored on the fifth (Platt, beta "
                   "calibration, isotonic regression, histogram binning; temperature scaling beside them where it "
                   "applies), and each quantized variant's gap to the full model after the map with its 95% paired "
                   "bootstrap interval over questions: an interval containing 0 means no calibration gap is "
                   "detectable once mapped.",
                   [table_block(maps_table(res.recalibration_maps, res.recalibration))])


def scale_section(res: StudyResults) -> Section | None:
    table = scale_table(res.comparisons, res.metrics)
    if table.empty:
        return None
    return Section("Scale trend", blocks=[scale_plot(table), table_block(table)])


def frontier_section(res: StudyResults) -> Section | None:
    table = frontier_table(res.comparisons, res.quantize_records)
    if table.empty or table["bits_per_weight"].isna().all():
        return None
    return Section("Size against damage",
                   "Each point is one quantized variant on one task: its deployed bits per weight (from quantize.json) "
                   "against Δacc and ΔECE with 95% paired-bootstrap CIs over questions (one quantization run each: "
                   "replicates appear as separate points)" + ("; right: each variant's mean token-level KL "
                   "divergence from the full model (log scale; see the divergence section)" if not res.divergence.empty
                   else "") + ". Hover a point for its variant and numbers.",
                   [frontier_plot(table, res.divergence)])


def question_block(questions: pd.DataFrame) -> tuple[str, dict]:
    """The explorer's rows as the template needs them: filter keys as attributes, sort keys beside
    the shown text (the template escapes every string)."""
    rows = []
    for r in questions.itertuples(index=False):
        choices = [{"text": c, "full": f"{pf:.3f}", "quant": f"{pq:.3f}"}
                   for c, pf, pq in zip(r.choices, r.full_probs, r.quant_probs)]
        rows.append({"model": r.model, "variant": r.variant, "task": r.task, "doc_id": int(r.doc_id),
                     "question": r.question, "choices": choices, "gold": r.gold_answer, "full": r.full_answer,
                     "quant": r.quant_answer, "flip": r.flip, "agreement": r.replicate_agreement,
                     "numbers": [(f"{x:.3f}", repr(float(x))) for x in
                                 (r.full_p_gold, r.quant_p_gold, r.delta_p_gold, r.full_conf, r.js)]})
    return ("questions", {"rows": rows, "models": sorted(questions["model"].unique()),
                          "variants": list(dict.fromkeys(questions["variant"])),
                          "tasks": sorted(questions["task"].unique()), "flips": FLIP_KINDS})


def question_section(questions: pd.DataFrame) -> Section | None:
    if questions.empty:
        return None
    return Section("Questions quantization changed",
                   "Every question of every full-vs-quantized comparison: the gold answer, each model's answer and "
                   "the probability it gave the gold answer, the Jensen-Shannon distance between the two answer "
                   "distributions, the flip kind, and (replicated configurations) how many replicates give this "
                   "answer. Filter by model, variant, task, flip kind, |Δp(gold)| or text; click a column header "
                   "to sort; open a question for its choices with both models' probabilities. Also in questions.csv."
                   + (" Generation tasks: the answers as written (correct by the task's own metric), no choice "
                      "probabilities or JS distance, and Δp(gold) / full confidence are the model's P(True) of its "
                      "own answer." if questions["full_p_gold"].isna().any() else ""),
                   [question_block(questions)])


def provenance_section(study, steps) -> Section:
    return Section("Configuration and provenance",
                   blocks=[("pre", json.dumps(provenance(study, steps), indent=2, default=str))])


# ---------------------------------------------------------------------------------------------


REPORT_FILES = ("summary.csv", "questions.csv", "summary.json", "calib_spread.csv", "divergence.csv", "report.html")


def write_report(study, study_dir: Path, steps, log=print) -> Path:
    """Write summary.csv, summary.json, calib_spread.csv (when a study sweeps calibration sets)
    and the self-contained report.html into `study_dir`; returns the report's path."""
    check_writable_files(*(study_dir / name for name in REPORT_FILES))
    res = collect(study, steps)
    atomic_write_bytes(study_dir / "summary.csv", res.metrics.to_csv(index=False).encode())
    questions = res.questions
    atomic_write_bytes(study_dir / "questions.csv", questions.to_csv(index=False).encode())
    atomic_write_json(study_dir / "summary.json", {"metrics": res.metrics.to_dict(orient="records"),
                                                    "comparisons": res.comparisons,
                                                    "questions": question_counts(questions),
                                                    "recalibration": res.recalibration,
                                                    "recalibration_maps": res.recalibration_maps,
                                                    "noise_floor": res.noise_floors,
                                                    "divergence": res.divergence.to_dict(orient="records"),
                                                    "question_divergence": res.question_divergence.to_dict(orient="records"),
                                                    "confidence_measures": res.measures.to_dict(orient="records")})
    if not res.divergence.empty:
        atomic_write_bytes(study_dir / "divergence.csv", res.divergence.to_csv(index=False).encode())
    spread = calib_spread(res.metrics)
    if not spread.empty:
        atomic_write_bytes(study_dir / "calib_spread.csv", spread.to_csv(index=False).encode())
    sections = [headline_section(res), noise_floor_section(res), comparison_section(res), frontier_section(res),
                divergence_section(res), question_divergence_section(res), methods_section(res),
                model_method_section(res), confidence_bin_section(res),
                metrics_section(res), measures_section(res),
                calib_spread_section(spread), recalibration_section(res), maps_section(res), *outlier_sections(res), *task_plot_sections(study, res),
                question_section(questions), scale_section(res), provenance_section(study, steps)]
    sections = [s for s in sections if s]
    plotly_js = None
    if any(kind == "plotly" for s in sections for kind, _ in s.blocks):
        from plotly.offline import get_plotlyjs

        plotly_js = Markup(get_plotlyjs())  # embedded: the page works offline, no CDN
    page = TEMPLATES.get_template("report.html.j2").render(title=study.name, sections=sections, plotly_js=plotly_js)
    out = study_dir / "report.html"
    atomic_write_bytes(out, page.encode())
    log(f"report: {out}")
    return out
