"""A finished study's results, read from what its steps stored: `collect` gathers the analysis steps' outputs
(metrics, comparisons, per-question rows, reliability bins, temperature scaling, noise floors: computed once by
the study, see `steps.py`), the divergence steps' statistics and the quantize records into `StudyResults`.
Reading only: nothing here bootstraps, fits or compares (`tables.py` shapes these into the report's tables).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from quantconf.metric_registry import metric_names
from quantconf.errors import QuantconfError
from quantconf.models.files import read_quantize_record
from quantconf.predictions import read_manifest
from quantconf.quantizers import load_methods
from quantconf.study.steps import (AnalysisStep, DivergenceStep, EvalStep, NoiseFloorStep, OutliersStep, PplStep,
                                   QuantizeStep, QuestionDivergenceStep)

TABLE_METRICS = metric_names("summary")  # the registry's (metric_registry.py)


@dataclass
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
    recalibration_maps: list = field(default_factory=list)  # one per (model, variant, single-answer task)
    noise_floors: list = field(default_factory=list)  # one per (model, replicated configuration, task)
    quantize_records: dict = field(default_factory=dict)  # (model, variant label) -> its quantize.json
    divergence: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per (model, variant): divergence_table
    question_divergence: pd.DataFrame = field(default_factory=pd.DataFrame)  # per (model, variant, task)
    # generation tasks: one row per (model, variant, task, confidence measure): its AUROC / PRR with intervals and,
    # for a quantized variant, their change from the full model (paired intervals): measure_table
    measures: pd.DataFrame = field(default_factory=pd.DataFrame)
    risk_coverage: dict = field(default_factory=dict)  # (model, variant label, task) -> {measure: curve}


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
    maps = [{"model": s.model, "variant": step_label(s), "task": task, **m}
            for s in evals for task, m in analysis[id(s)]["recalibration_maps"].items()]
    recal_verdicts = [f"{s.model} / {step_label(s)} / {text}" for s in evals
                      for text in analysis[id(s)]["recalibration_verdicts"].values()]
    records = {(s.model, step_label(s)): read_quantize_record(s.path) for s in steps
               if isinstance(s, QuantizeStep) and s.path.is_dir()}
    curves = {(s.model, step_label(s), task): c for s in evals for task, c in analysis[id(s)].get("risk_coverage", {}).items()}
    measures = measure_table([(s.model, step_label(s), analysis[id(s)]["metrics"]) for s in evals], comparisons)
    return StudyResults(metrics, comparisons, pd.concat(samples, ignore_index=True) if samples else pd.DataFrame(),
                        question_table(question_rows, comparisons), reliability, kinds, outliers, recal,
                        recal_verdicts, maps, floors, records,
                        divergence_table([s for s in steps if isinstance(s, DivergenceStep)], records),
                        question_divergence_table([s for s in steps if isinstance(s, QuestionDivergenceStep)]),
                        measures, curves)


MEASURE_COLUMNS = ("auroc", "prr", "aurc")


def measure_table(metrics: list[tuple], comparisons: list[dict]) -> pd.DataFrame:
    """One row per (model, variant, generation task, confidence measure): n, AUROC, PRR, AURC with their 95%
    intervals, and for a quantized variant delta_auroc / delta_prr (quantized - full, paired bootstrap over
    prompts) from its comparison. `metrics`: (model, variant label, {task: the analysis step's metrics})."""
    deltas = {(c["model"], c["variant"], c["task"]): c for c in comparisons}
    rows = []
    for model, label, by_task in metrics:
        for task, m in by_task.items():
            for name, mm in m.get("measures", {}).items():
                row = {"model": model, "variant": label, "task": task, "measure": name, "n": mm.get("n")}
                for k in MEASURE_COLUMNS:
                    row[k] = mm.get(k, np.nan)
                    row[f"{k}_lo"], row[f"{k}_hi"] = mm.get("ci", {}).get(k, (np.nan, np.nan))
                c = deltas.get((model, label, task), {})
                for k in ("auroc", "prr"):
                    row[f"delta_{k}"] = c.get(f"delta_{k}_{name}", np.nan)
                    row[f"delta_{k}_lo"], row[f"delta_{k}_hi"] = c.get("ci", {}).get(f"delta_{k}_{name}", (np.nan, np.nan))
                rows.append(row)
    return pd.DataFrame(rows)


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


def provenance(study, steps) -> dict:
    """What produced every step: the config, and per step the record that step wrote."""
    return {"study": study.as_dict(),
            "steps": [{"kind": s.kind, "model": s.model, "variant": step_label(s), "path": str(s.path),
                       **s.provenance()} for s in steps]}


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


