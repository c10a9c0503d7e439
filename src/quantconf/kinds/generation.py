"""The generation kind: a prompt the model answers in its own words (greedy), graded by the task's metric.

Prediction columns (one row per prompt): doc_id, task, context (the prompt), question (what P(True) asks
about), reference (gold answer text, for display), generation (the text, cut at the stop string), token_ids,
token_logprobs, token_entropies (lists, one per kept token), primary_metric (the name of the 0/1 metric that
is "correct"), correct (its value), the task's per-sample metrics under lm-eval's names (exact_match,
bleu_acc, rouge1_acc, ...), and the confidence measures sequence_logprob, mean_logprob, min_token_prob,
mean_entropy, p_true (NaN where unknown, e.g. imported generations without the model). Imports may add
judge_score / judge_acc. Decoding: `generation.py`; metrics and comparison: `analysis/generation.py`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from quantconf.analysis import generation as analysis
from quantconf.analysis import noise_floor
from quantconf.analysis.helm import helm_battery
from quantconf.metric_registry import MEASURES, metric_names
from quantconf.errors import QuantconfError
from quantconf.inference.generation import GENERATOR_VERSION, generate_rows
from quantconf.kinds.base import ATTR, TaskKind, register
from quantconf.kinds.choice import checked_doc_ids, flip_kinds, short
from quantconf.kinds.items import Prompt

COLUMNS = ("doc_id", "task", "context", "generation", "token_ids", "token_logprobs", "primary_metric",
           "correct", "sequence_logprob", "mean_logprob", "min_token_prob", "mean_entropy", "p_true")
LIST_COLUMNS = ("token_ids", "token_logprobs", "token_entropies")
# a run with --samples K: per prompt the K sampled answers and their grouping (inference/generation.py's
# _sampled_columns): lists of K (sample_token_ids / sample_token_logprobs: K lists), the K x K similarity
# row-major, and two numbers
SAMPLE_LIST_COLUMNS = ("samples", "sample_token_ids", "sample_token_logprobs", "sample_clusters", "sample_similarity")
SAMPLE_COLUMNS = (*SAMPLE_LIST_COLUMNS, "greedy_agreement", "lexical_similarity", "equivalence")
# columns of a generation frame that are not grading metrics (confidence measures may be NaN: an empty answer)
NOT_METRIC_COLUMNS = {*COLUMNS, *LIST_COLUMNS, *SAMPLE_COLUMNS, "question", "reference"} - {"correct"}
GENERATION_TABLE = ["n", *metric_names("cli", kind="generation")]  # the registry's (metric_registry.py)


def _is_real(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _spread_metrics(row: dict) -> dict:
    """A row with its grading's metrics as columns, where "metrics" stood (the column order of the file)."""
    out = {}
    for k, v in row.items():
        if k == "metrics":
            out.update(v)
        else:
            out[k] = v
    return out


class Generation(TaskKind):
    name = "generation"
    output_types = ("generate_until",)
    columns = COLUMNS
    identifying_columns = ("generation",)
    held = "generations"
    confidence_label = "confidence (P(True) of its own answer)"
    shift_label = "Δ P(True) of its own answer (quant − full)"
    full_confidence_label = "full model P(True)"
    has_choice_distribution = False
    graded_after_run = True

    # -- documents -> prompts, and a model on them
    def item(self, task, doc_id: int, doc: dict, where) -> Prompt:
        loc = f"{where}:{doc_id + 1}" if where else f"{task.name} doc {doc_id}"
        try:
            context, reference = task.doc_to_text(doc), task.doc_to_reference(doc)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            raise QuantconfError(f"{loc}: row does not fit task {task.name} ({type(e).__name__}: {e}); fix that row") from None
        if not isinstance(context, str) or not context:
            raise QuantconfError(f"{loc}: the prompt must be a non-empty string")
        question = doc.get("question") if isinstance(doc.get("question"), str) else context
        return Prompt(doc_id, context, tuple(task.until), task.max_gen_toks, str(reference), question, doc)

    def grader(self, task):
        return lambda prompts, texts: [task.process_results(p.doc, t) for p, t in zip(prompts, texts)]

    def texts(self, loaded):
        for p in loaded.questions:
            yield f"{p.context} {p.reference}"

    def evaluate(self, lm, loaded, batch_size: int = 8, progress: bool = False, scorer: str = "packed",
                 shard=None, max_gen_toks=None, sampling=None) -> pd.DataFrame:
        """Greedy answers (`generation.generate_rows`, `max_gen_toks` overriding the task's budget; a shard
        is every n-th batch of the plan), graded by the task, with their confidence measures and P(True);
        with `sampling`, K sampled answers per prompt beside them (SAMPLE_COLUMNS)."""
        rows = generate_rows(lm, loaded, batch_size=batch_size, max_gen_toks=max_gen_toks, progress=progress,
                             shard=shard, sampling=sampling)
        for row in rows:
            clash = set(row["metrics"]) & set(COLUMNS)
            if clash:
                raise QuantconfError(f"{loaded.task.name}: its metrics {sorted(clash)} clash with prediction columns")
        return self.frame([_spread_metrics(r) for r in rows])

    def run_identity(self, run) -> list:
        # the decoder's version and token budget change answers; sampling adds columns (a run without keeps its key)
        return [GENERATOR_VERSION, run.max_gen_toks] + ([run.sampling.as_dict()] if run.sampling else [])

    def manifest_fields(self, task, run) -> dict:
        return {"output_type": "generate_until", "primary_metric": task.primary_metric,
                "max_gen_toks": run.max_gen_toks, "generator_version": GENERATOR_VERSION,
                **({"sampling": run.sampling.as_dict()} if run.sampling else {})}

    # -- prediction frames
    def frame(self, rows: list[dict]) -> pd.DataFrame:
        df = pd.DataFrame(rows) if rows else pd.DataFrame(columns=COLUMNS)
        df.attrs[ATTR] = self.name
        return df

    def check(self, df: pd.DataFrame, source: str, fix: str) -> None:
        """Integer doc_ids, each once; text generations; one primary metric named, present as a column, with
        0/1 values in `correct`; confidence measures numeric (NaN allowed), probabilities within [0, 1]."""
        missing = [c for c in COLUMNS if c not in df.columns]
        if missing:
            raise QuantconfError(f"{source}: missing columns {missing}; {fix}")
        for where, text in zip(checked_doc_ids(df["doc_id"], source, fix), df["generation"]):
            if not isinstance(text, str):
                raise QuantconfError(f"{where}: generation must be text; {fix}")
        # a number 0 or 1 (a bool counts): a word such as "1" is refused, not read as a number, since the frame
        # would keep the word and every later mean would be of text
        for doc_id, v in zip(df["doc_id"], df["correct"]):
            if not isinstance(v, (int, float, np.integer, np.floating)) or float(v) not in (0.0, 1.0):
                shown = v.item() if isinstance(v, np.generic) else v
                raise QuantconfError(f"{source} doc {doc_id!r}: correct must be 0 or 1, got {shown!r}; {fix}")
        for col in ("min_token_prob", "p_true"):
            values = pd.to_numeric(df[col], errors="coerce")
            if ((values < 0) | (values > 1)).any():
                raise QuantconfError(f"{source}: {col} outside [0, 1]; {fix}")
        # a grading metric (lm-eval's, a judge's) is a finite number on every row: a NaN, an inf or a word among
        # numbers would become a wrong mean (or a pyarrow traceback) without a word
        for col in df.columns:
            if col in NOT_METRIC_COLUMNS:
                continue
            values = list(df[col])
            if not any(_is_real(v) for v in values):
                continue  # a text column (question, reference, ...)
            for doc_id, v in zip(df["doc_id"], values):
                if not _is_real(v) or not np.isfinite(float(v)):
                    raise QuantconfError(f"{source} doc {doc_id!r}: metric {col} is {v!r}, not a finite number; {fix}")

    def read(self, df: pd.DataFrame, source: str, fix: str) -> pd.DataFrame:
        missing = [c for c in COLUMNS if c not in df.columns]
        if missing:
            raise QuantconfError(f"{source}: missing columns {missing}; was it written by quantconf "
                                 "eval/import-generations?")
        for col in LIST_COLUMNS:
            if col in df.columns:
                df[col] = df[col].map(lambda v: [] if v is None else list(v))
        for col in SAMPLE_LIST_COLUMNS:  # parquet gives arrays (of arrays): lists, as the run wrote them
            if col in df.columns:
                df[col] = df[col].map(lambda v: None if v is None else
                                      [list(x) if hasattr(x, "__len__") and not isinstance(x, str) else x for x in v])
        self.check(df, source, fix)
        return df

    def accuracy(self, df: pd.DataFrame) -> dict:
        """acc = mean of `correct` (the task's primary 0/1 metric); acc_norm undefined."""
        if len(df) == 0:
            return {"acc": float("nan"), "acc_norm": float("nan")}
        return {"acc": float(np.mean(np.asarray(df["correct"], float))), "acc_norm": float("nan")}

    def throughput(self, df: pd.DataFrame, seconds: float) -> dict:
        return {"tokens_per_second": round(sum(map(len, df["token_ids"])) / max(seconds, 1e-9), 2)}

    def accuracy_line(self, df: pd.DataFrame, acc: dict) -> str:
        metric = df["primary_metric"].iloc[0] if len(df) else "correct"
        return f"{metric}={acc['acc']:.4f}"

    def acc_norm_cell(self, df: pd.DataFrame, acc: dict) -> str:
        """The eval summary's acc_norm column: a generation's acc is its primary metric, named here."""
        return "(" + (df["primary_metric"].iloc[0] if len(df) else "correct") + ")"

    # -- analysis
    def metrics(self, df, n_bins=15, n_boot=1000, normalize="none", seed=0, compat=None, correctness=None) -> dict:
        out = analysis.generation_metrics(df, n_bins=n_bins, n_boot=n_boot, seed=seed, correctness=correctness)
        if compat == "helm":  # HELM's battery on the headline confidence measure, rows that have it
            conf = analysis.confidence_measures(df)[out["confidence_measure"]]
            _, y = analysis.correctness_of(df, correctness)
            keep = np.isfinite(conf)
            if keep.any():
                out["helm"] = helm_battery(conf[keep], y[keep], n_boot=n_boot, seed=seed)
        return out  # proskurina2024's definitions are of choice distributions: a generation has none

    def compare(self, full, quant, n_bins=15, n_conf_bins=5, n_boot=1000, seed=0, task="", correctness=None) -> dict:
        return analysis.compare_generations(full, quant, n_bins, n_conf_bins, n_boot, seed, task, correctness)

    def paired_confidence(self, full, quant, task: str = "", correctness=None) -> tuple:
        """The headline confidence measure (the full model's choice, for both) and correctness on the paired
        prompts where both models have it."""
        f, q = analysis.pair_generations(full, quant, task)
        mf, mq = analysis.confidence_measures(f), analysis.confidence_measures(q)
        head = analysis.headline_measure(mf)
        (_, yf), (_, yq) = analysis.correctness_of(f, correctness), analysis.correctness_of(q, correctness)
        keep = np.isfinite(mf[head]) & np.isfinite(mq[head])
        return mf[head][keep], yf[keep], mq[head][keep], yq[keep]

    def per_sample_frame(self, full, quant, task: str = "") -> pd.DataFrame:
        return analysis.per_generation_frame(full, quant, task)

    def confidence_and_correctness(self, df: pd.DataFrame) -> tuple:
        """The headline confidence measure (P(True)) and `correct`, rows without a value left out."""
        measures = analysis.confidence_measures(df)
        conf = measures[analysis.headline_measure(measures)]
        _, y = analysis.correctness_of(df)
        keep = np.isfinite(conf)
        return conf[keep], y[keep].astype(bool)

    def why_no_question_divergence(self, loaded) -> str | None:
        return None  # the full model's answer tokens, scored by both models; a flip is the answer changing

    def risk_coverage(self, df: pd.DataFrame) -> dict:
        """Every confidence measure's risk-coverage curve (error rate of the answers it is most confident in)."""
        _, y = analysis.correctness_of(df)
        return {name: analysis.risk_coverage_curve(conf, y) for name, conf in analysis.confidence_measures(df).items()
                if np.isfinite(conf).any()}

    def noise_floor(self, full, replicates, **options) -> dict:
        return noise_floor.generation_noise_floor(full, replicates, **options)

    def single_answer(self, df: pd.DataFrame) -> bool:
        return True

    def not_temperature_scalable(self, df: pd.DataFrame) -> str | None:
        return ("a generation task: temperature scaling rescales per-choice log-likelihoods, and a generation "
                "has no choices")

    def question_rows(self, full: pd.DataFrame, quant: pd.DataFrame, task: str) -> dict:
        """The question explorer's columns: the two answers as written, the reference, the headline confidence
        (P(True)) of each, the flip kind by the task's correctness; `answer_key` (the answer modulo case and
        whitespace) lets replicates that wrote the same answer be counted as agreeing."""
        f, q = analysis.pair_generations(full, quant, task)
        mf, mq = analysis.confidence_measures(f), analysis.confidence_measures(q)
        head = analysis.headline_measure(mf)
        _, yf = analysis.correctness_of(f)
        _, yq = analysis.correctness_of(q)
        question = f["question"] if "question" in f.columns else f["context"]
        return {
            "doc_id": list(f["doc_id"]), "question": [short(t) for t in question],
            "gold_answer": [short(t) for t in (f["reference"] if "reference" in f.columns else [""] * len(f))],
            "full_answer": [short(t) for t in f["generation"]], "quant_answer": [short(t) for t in q["generation"]],
            "full_p_gold": np.nan, "quant_p_gold": np.nan, "delta_p_gold": mq[head] - mf[head],
            "full_conf": mf[head], "js": np.nan, "flip": flip_kinds(yf, yq),
            "choices": [[] for _ in range(len(f))], "full_probs": [[] for _ in range(len(f))],
            "quant_probs": [[] for _ in range(len(f))],
            "answer_key": [analysis.normalise_answer(a) for a in q["generation"]]}

    def headlines(self, comparisons: list[dict]) -> list[str]:
        """One line per generation task: accuracy, changed answers, flips, and the calibration of P(True)."""
        lines = []
        for c in comparisons:
            ci = c.get("ci", {}).get("delta_acc")
            m = c.get("confidence_measure", "p_true")
            ece = (f"; ECE of {m} {c[f'full_ece_{m}']:.3f} -> {c[f'quant_ece_{m}']:.3f}, AUROC {c[f'full_auroc_{m}']:.3f} "
                   f"-> {c[f'quant_auroc_{m}']:.3f}" if f"full_ece_{m}" in c else "")
            lines.append(
                f"{c['model']} / {c['variant']} / {c['task']} (generation, correct = {c['correctness']}): accuracy "
                f"{c['full_acc']:.3f} -> {c['quant_acc']:.3f} (Δ {c['delta_acc'] * 100:+.1f} points"
                + (f", 95% CI [{ci[0] * 100:+.1f}, {ci[1] * 100:+.1f}]" if ci else "") + f"); "
                f"{c['answer_changed'] * 100:.0f}% of answers changed; flips correct→wrong {c['flips_correct_to_wrong']}, "
                f"wrong→correct {c['flips_wrong_to_correct']} (exact McNemar p {c['p_mcnemar']:.3g}){ece}.")
        return lines

    # -- printing
    def format_metrics(self, task: str, m: dict, bootstrap: int) -> str:
        acc_ci = m.get("ci", {}).get("acc")
        width = max([18, *map(len, m["measures"])])
        lines = [f"== {task} (generation, n={m['n']}): {m['correctness']} = {m['acc']:.4f}"
                 + (f" [{acc_ci[0]:.3f}, {acc_ci[1]:.3f}]" if acc_ci and bootstrap else ""),
                 f"  {'confidence measure':<{width}} " + " ".join(f"{c:>9}" for c in GENERATION_TABLE)]
        for name, mm in m["measures"].items():
            vals = " ".join(f"{mm.get(c, float('nan')):>9.4f}" if c != "n" else f"{mm['n']:>9}"
                            for c in GENERATION_TABLE)
            lines.append(f"  {name:<{width}} {vals}")
            if "ci" in mm and bootstrap:
                ci = " ".join(f"{'[%.2f,%.2f]' % tuple(mm['ci'][c]) if c in mm['ci'] else '':>9}"
                              for c in GENERATION_TABLE)
                lines.append(f"  {'  95% CI':<{width}} {ci}")
        return "\n".join(lines) + "\n"

    def format_comparison(self, task: str, c: dict) -> str:
        lines = [f"== {task} (generation, n={c['n']}, correct = {c['correctness']})"]
        ci = c.get("ci", {}).get("delta_acc")
        lines.append(f"  acc full {c['full_acc']:.4f}  quant {c['quant_acc']:.4f}  delta {c['delta_acc']:+.4f}"
                     + (f"  95% CI [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else ""))
        lines.append(f"  answers changed {c['answer_changed']:.3f} (normalised {c['answer_changed_normalised']:.3f}); "
                     f"ROUGE-L between answers {c['rougeL_between']:.3f}; flips correct->wrong "
                     f"{c['flips_correct_to_wrong']}, wrong->correct {c['flips_wrong_to_correct']}; p McNemar "
                     f"{c['p_mcnemar']:.3g}")
        for m, measure in MEASURES.items():
            if f"delta_auroc_{m}" not in c:
                continue
            parts = []
            for metric in ("conf", "ece", "auroc") if measure.probability else ("auroc", "prr"):
                ci = c.get("ci", {}).get(f"delta_{metric}_{m}")
                parts.append(f"{metric} {c[f'full_{metric}_{m}']:.3f}->{c[f'quant_{metric}_{m}']:.3f}"
                             + (f" [{ci[0]:+.3f},{ci[1]:+.3f}]" if ci else ""))
            lines.append(f"  {m:<29} " + "; ".join(parts))
        lines.append(f"  by full-model {c['confidence_measure']}:  conf range      n  answers changed  flip rate  "
                     "delta conf")
        for b in c["by_confidence_bin"]:
            lines.append(f"  {'':<26}{b['conf_lo']:.2f}-{b['conf_hi']:.2f} {b['n']:>6}  "
                         f"{b['answer_changed_rate']:>15.3f}  {b['flip_rate']:>9.3f}  {b['delta_conf']:>+10.4f}")
        return "\n".join(lines)


GENERATION = register(Generation())
