"""The study report: self-contained HTML (plots embedded as PNG) + summary.csv / summary.json.

Sections: metric table full vs each variant with 95% CIs; per-task reliability diagrams (full and
quantized overlaid); confidence histograms; change of gold-choice probability vs the full model's
confidence (scatter + binned means); JS-distance distribution; flip table; calibration-set spread
when a study sweeps calibration sets; scale trend when it has several models; config and manifests.
Every piece of text placed in HTML goes through html.escape.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from quantconf.predictions import atomic_write_bytes, atomic_write_json, read_manifest, read_prediction_dir

TABLE_METRICS = ["acc", "acc_norm", "nll", "brier", "ece", "ace", "mce", "conf", "conf_true", "entropy"]


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _esc(x) -> str:
    if isinstance(x, float):
        return "nan" if np.isnan(x) else f"{x:.4f}"
    return html.escape(str(x))


def _table(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{_esc(v)}</td>" for v in row) + "</tr>" for row in df.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def collect(study, study_dir: Path, steps) -> dict:
    """Metrics and comparisons of every (model, variant, task) of a finished study."""
    from quantconf.compare import compare_task, per_sample_frame
    from quantconf.metrics import task_metrics

    evals = [s for s in steps if s.kind == "eval"]
    full_dirs = {s.model: s.path for s in evals if s.variant is None}
    rows, comparisons, samples, preds = [], [], [], {}
    for s in evals:
        label = s.variant.label() if s.variant else "full"
        p = read_prediction_dir(s.path)
        preds[(s.model, label)] = p
        manifest = read_manifest(s.path)
        for task, df in p.items():
            m = task_metrics(df, n_bins=study.bins, n_boot=study.bootstrap)
            row = {"model": s.model, "variant": label, "task": task, "n": m["n"],
                   "method": s.variant.method if s.variant else "full", "bits": s.variant.bits if s.variant else 32,
                   "calib": s.variant.calib if s.variant and s.variant.method != "rtn" else "",
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
        label = s.variant.label()
        full = preds[(s.model, "full")]
        quant = preds[(s.model, label)]
        for task in sorted(set(full) & set(quant)):
            c = compare_task(full[task], quant[task], n_bins=study.bins, n_boot=study.bootstrap, task=task)
            comparisons.append({"model": s.model, "variant": label, "task": task, **c})
            frame = per_sample_frame(full[task], quant[task], task)
            frame["model"], frame["variant"] = s.model, label
            samples.append(frame)
    ppl = {}
    for s in steps:
        if s.kind == "ppl" and s.path.is_file():
            ppl[(s.model, s.variant.label() if s.variant else "full")] = json.loads(s.path.read_text())["perplexity"]
    metrics = pd.DataFrame(rows)
    if ppl and not metrics.empty:
        metrics["ppl"] = [ppl.get((m, v), np.nan) for m, v in zip(metrics["model"], metrics["variant"])]
    outliers = {s.model: {**json.loads((s.path / "outliers.json").read_text()), "dir": str(s.path)}
                for s in steps if s.kind == "outliers" and (s.path / "outliers.json").is_file()}
    return {"metrics": metrics, "comparisons": comparisons, "outliers": outliers,
            "samples": pd.concat(samples, ignore_index=True) if samples else pd.DataFrame(), "preds": preds,
            "full_dirs": full_dirs}


def _reliability_plot(preds, model, task, n_bins):
    import matplotlib.pyplot as plt

    from quantconf.metrics import probs_from_predictions, reliability_bins

    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="perfect")
    for (m, label), p in preds.items():
        if m != model or task not in p or any(isinstance(g, list) for g in p[task]["gold"]):
            continue
        probs, _ = probs_from_predictions(p[task])
        gold = np.asarray(list(p[task]["gold"]), int)
        conf, correct = probs.max(1), probs.argmax(1) == gold
        rb = reliability_bins(conf, correct, n_bins)
        ok = rb["count"] >= 3  # bins with fewer questions are noise in a plot (they count in ECE)
        ax.plot(rb["conf"][ok], rb["acc"][ok], "o-", ms=3, label=label)
        ax2.hist(conf, bins=np.linspace(0, 1, n_bins + 1), histtype="step", lw=1.5, label=label)
    ax.set(xlabel="confidence (top-choice probability)", ylabel="accuracy", title=f"reliability: {task} (bins n>=3)",
           xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=7)
    ax2.set(xlabel="confidence", ylabel="questions", title=f"confidence histogram: {task}")
    return _png(fig)


def _shift_plot(samples: pd.DataFrame, comparisons, model, task):
    import matplotlib.pyplot as plt

    sub = samples[(samples["model"] == model) & (samples["task"] == task)]
    if sub.empty or sub["full_p_true"].isna().all():
        return ""
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
    return _png(fig)


def _scale_plot(comparisons, metrics):
    import matplotlib.pyplot as plt

    cdf = pd.DataFrame([{k: c[k] for k in ("model", "variant", "task", "js_mean") if k in c} for c in comparisons])
    params = metrics.drop_duplicates("model").set_index("model")["n_params"]
    if cdf.empty or cdf["model"].nunique() < 2:
        return "", pd.DataFrame()
    cdf["n_params"] = cdf["model"].map(params)
    table = cdf.groupby(["variant", "model", "n_params"], as_index=False)["js_mean"].mean().sort_values("n_params")
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for label, g in table.groupby("variant"):
        ax.plot(g["n_params"], g["js_mean"], "o-", label=label)
    ax.set(xscale="log", xlabel="parameters", ylabel="mean JS distance", title="scale trend")
    ax.legend(fontsize=7)
    return _png(fig), table


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
    from scipy.stats import spearmanr

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


def write_report(study, study_dir: Path, steps, log=print) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    data = collect(study, study_dir, steps)
    metrics, comparisons = data["metrics"], data["comparisons"]
    atomic_write_bytes(study_dir / "summary.csv", metrics.to_csv(index=False).encode())
    atomic_write_json(study_dir / "summary.json", {"metrics": metrics.to_dict(orient="records"),
                                                    "comparisons": comparisons})
    parts = [f"<h1>quantconf study: {_esc(study.name)}</h1>"]
    comp_rows = [{"model": c["model"], "variant": c["variant"], "task": c["task"], "n": c["n"],
                  "Δacc": c.get("delta_acc", np.nan), "Δacc 95% CI": _ci(c, "delta_acc"),
                  "ΔNLL": c.get("delta_nll", np.nan), "ΔECE": c.get("delta_ece", np.nan),
                  "ΔECE 95% CI": _ci(c, "delta_ece"), "ΔACE": c.get("delta_ace", np.nan),
                  "Δp(gold)": c.get("delta_conf_true", np.nan), "JS mean": c["js_mean"],
                  "correct→wrong": c.get("flips_correct_to_wrong", ""), "wrong→correct": c.get("flips_wrong_to_correct", ""),
                  "p McNemar": c.get("p_mcnemar", np.nan), "p Wilcoxon p(gold)": c.get("p_wilcoxon", np.nan)}
                 for c in comparisons]
    parts.append("<h2>In short</h2><ul>" + "".join(f"<li>{_esc(line)}</li>" for line in headlines(comparisons))
                 + "</ul>")
    parts.append("<h2>Did quantization change accuracy and calibration?</h2>"
                 "<p>Δ = quantized − full, paired over the same questions; CIs from a paired bootstrap.</p>")
    parts.append(_table(pd.DataFrame(comp_rows)))
    low = _low_conf_summary(comparisons)
    parts.append("<h2>Were low-confidence samples affected more?</h2>"
                 "<p>Questions split into equal-mass bins of the full model's confidence; per bin the mean absolute "
                 "change of the gold-choice probability, mean JS distance and the rate of correctness flips.</p>")
    parts.append(_table(low))
    parts.append("<h2>Metrics per model and variant (95% bootstrap CIs)</h2>")
    show = metrics.copy()
    for m in ("acc", "nll", "ece", "ace"):
        if f"{m}_lo" in show:
            show[f"{m} CI"] = [f"[{a:.3f}, {b:.3f}]" if pd.notna(a) else "" for a, b in zip(show[f"{m}_lo"], show[f"{m}_hi"])]
    cols = [c for c in ["model", "variant", "task", "n", "acc", "acc CI", "acc_norm", "nll", "nll CI", "brier", "ece",
                        "ece CI", "ace", "mce", "conf", "conf_true", "entropy", "mc2", "ppl"] if c in show]
    parts.append(_table(show[cols]))
    spread = calib_spread(metrics)
    if not spread.empty:
        parts.append("<h2>Calibration-set sensitivity</h2><p>Spread across calibration sets of the same method and "
                     "bit width (range = max − min; std over sets).</p>" + _table(spread))
        atomic_write_bytes(study_dir / "calib_spread.csv", spread.to_csv(index=False).encode())
    if data["outliers"]:
        table, corr = outliers_vs_loss(metrics, comparisons, data["outliers"])
        parts.append("<h2>Do a calibration set's activation outliers predict its quantization loss?</h2>"
                     "<p>Outlier statistics of each set on the full model (max |x|, mean kurtosis, channels above "
                     "the threshold, summed over layers and modules) next to the loss of the variant calibrated on it; "
                     "Spearman correlation across sets (few sets: read as a hint, not a test).</p>"
                     + _table(table) + _table(corr))
        for model, rec in data["outliers"].items():
            parts.append(f"<h3>Activation outliers: {_esc(model)}</h3>")
            for png in sorted(Path(rec["dir"]).glob("*.png")):
                parts.append(f'<img alt="{_esc(png.stem)}" src="data:image/png;base64,'
                             f'{base64.b64encode(png.read_bytes()).decode()}">')
    for model in study.models:
        for task in study.tasks:
            name = task if not task.startswith("file:") else task
            parts.append(f"<h2>{_esc(model)} — {_esc(name)}</h2>")
            parts.append(_reliability_plot(data["preds"], model, name, study.bins))
            parts.append(_shift_plot(data["samples"], comparisons, model, name))
    scale_img, scale_table = _scale_plot(comparisons, metrics)
    if scale_img:
        parts.append("<h2>Scale trend</h2>" + scale_img + _table(scale_table))
    parts.append("<h2>Configuration and provenance</h2><pre>" + _esc(json.dumps(_provenance(study, steps), indent=2,
                                                                                default=str)) + "</pre>")
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>quantconf report</title><style>"
            "body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;font-size:12px;"
            "margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#f0f0f0}"
            "pre{background:#f7f7f7;padding:1em;font-size:11px;overflow:auto}img{max-width:100%}</style></head><body>"
            + "\n".join(parts) + "</body></html>")
    out = study_dir / "report.html"
    atomic_write_bytes(out, page.encode())
    log(f"report: {out}")
    return out


def headlines(comparisons) -> list[str]:
    """Plain-language answers computed from the comparison numbers, one line per variant."""
    lines = []
    by_variant: dict[tuple[str, str], list[dict]] = {}
    for c in comparisons:
        if "delta_acc" in c:
            by_variant.setdefault((c["model"], c["variant"]), []).append(c)
    for (model, variant), cs in by_variant.items():
        def sig(key, sign):
            return [c["task"] for c in cs if (ci := c.get("ci", {}).get(key)) and (ci[0] > 0 if sign > 0 else ci[1] < 0)]

        dacc = np.mean([c["delta_acc"] for c in cs])
        nll_up, acc_down, ece_up = sig("delta_nll", +1), sig("delta_acc", -1), sig("delta_ece", +1)
        low = [c["by_confidence_bin"][0] for c in cs if c.get("by_confidence_bin")]
        high = [c["by_confidence_bin"][-1] for c in cs if c.get("by_confidence_bin")]
        js_low, js_high = np.mean([b["js_mean"] for b in low]), np.mean([b["js_mean"] for b in high])
        flip_low, flip_high = np.mean([b["flip_rate"] for b in low]), np.mean([b["flip_rate"] for b in high])
        lines.append(
            f"{model} / {variant}: mean Δacc {dacc * 100:+.1f} points over {len(cs)} tasks; accuracy significantly "
            f"lower on {', '.join(acc_down) or 'no task'}; NLL significantly higher on {', '.join(nll_up) or 'no task'}; "
            f"ECE significantly higher on {', '.join(ece_up) or 'no task'} (95% paired bootstrap).")
        verdict = "yes" if js_low > js_high and flip_low >= flip_high else "no"
        lines.append(
            f"{model} / {variant}: low-confidence samples hit hardest? {verdict} — least-confident fifth of questions: "
            f"mean JS {js_low:.3f}, flip rate {flip_low:.2f}; most-confident fifth: mean JS {js_high:.3f}, "
            f"flip rate {flip_high:.2f} (averaged over tasks).")
    return lines


def _ci(c, key) -> str:
    ci = c.get("ci", {}).get(key)
    return f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else ""


def _low_conf_summary(comparisons) -> pd.DataFrame:
    rows = []
    for c in comparisons:
        for b in c.get("by_confidence_bin", []):
            rows.append({"variant": c["variant"], "task": c["task"], "bin": b["bin"],
                         "full conf range": f"{b['conf_lo']:.2f}–{b['conf_hi']:.2f}", "n": b["n"],
                         "full acc": b["full_acc"], "quant acc": b["quant_acc"],
                         "mean |Δp(gold)|": b["mean_abs_delta_conf_true"], "mean Δp(gold)": b["delta_conf_true"],
                         "JS mean": b["js_mean"], "flip rate": b["flip_rate"]})
    return pd.DataFrame(rows)


def _provenance(study, steps) -> dict:
    from dataclasses import asdict

    from quantconf.quantize import read_quantize_record

    out = {"study": {**asdict(study), "variants": [asdict(v) for v in study.variants]}, "steps": []}
    for s in steps:
        entry = {"kind": s.kind, "model": s.model, "variant": s.variant.label() if s.variant else "full",
                 "path": str(s.path)}
        if s.kind == "quantize":
            rec = read_quantize_record(s.path)
            entry.update({k: rec.get(k) for k in ("calibration", "seconds", "library", "packages", "model_fingerprint")})
        else:
            man = read_manifest(s.path)
            entry.update({k: man.get(k) for k in ("model", "dtype", "device", "packages")})
            entry["tasks"] = {t: {k: v.get(k) for k in ("source", "source_sha256", "n", "version")}
                              for t, v in man.get("tasks", {}).items()}
        out["steps"].append(entry)
    return out
