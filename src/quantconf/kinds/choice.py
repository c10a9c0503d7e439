"""The multiple-choice kind: a question with choices, scored by each choice's log-likelihood.

Prediction columns (one row per question): doc_id, task, context, choices, gold (int, or a list of ints
for multi-true tasks), loglik, n_tokens, n_chars, n_bytes, is_greedy (lists, one entry per choice); tasks
whose choices sit in the context (Winogrande-style) add contexts (one per choice) and continuation.
`n_chars`/`n_bytes` are lengths of the choice text without the delimiter, which is what lm-eval's
acc_norm divides by. Metrics: `analysis/metrics.py`; full vs quantized: `analysis/paired.py`.
"""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import pandas as pd

from quantconf.analysis import metrics, noise_floor, paired
from quantconf.analysis.helm import helm_battery
from quantconf.errors import QuantconfError
from quantconf.kinds.base import ATTR, TaskKind, register
from quantconf.inference.scoring import encode_pair, score_questions, score_requests, wants_bos
from quantconf.kinds.items import Question, check_gold

COLUMNS = ("doc_id", "task", "choices", "gold", "loglik", "n_tokens", "n_chars", "n_bytes", "is_greedy")
LIST_COLUMNS = ("choices", "loglik", "n_tokens", "n_chars", "n_bytes", "is_greedy")
# part of the reuse key: bump when the scorer's numbers can change (3: rows packed, LM head in
# blocks; 4: prefix trees)
SCORER_VERSION = "4"
SCORERS = ("packed", "naive")
QUESTION_TEXT_CHARS = 600  # the question explorer shows this much of a text (the full text is in the parquet)


def short(text) -> str:
    text = str(text)
    return text[:QUESTION_TEXT_CHARS] + ("…" if len(text) > QUESTION_TEXT_CHARS else "")


def is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def checked_doc_ids(doc_ids, source: str, fix: str):
    """Yield "<source> doc <id>" for each doc_id, after checking it is an integer not seen before."""
    seen: set = set()
    for doc_id in doc_ids:
        where = f"{source} doc {doc_id!r}"
        if not is_int(doc_id):
            raise QuantconfError(f"{where}: doc_id must be an integer; {fix}")
        if doc_id in seen:
            raise QuantconfError(f"{where}: doc_id appears twice (each question once); {fix}")
        seen.add(doc_id)
        yield where


def task_requests(tokenizer, loaded, add_bos: bool) -> list[tuple[list[int], list[int]]]:
    delim = loaded.task.target_delimiter
    return [encode_pair(tokenizer, ctx, cont, add_bos) for q in loaded.questions for ctx, cont in q.requests(delim)]


def flip_kinds(correct_full: np.ndarray, correct_quant: np.ndarray) -> np.ndarray:
    cf, cq = np.asarray(correct_full, bool), np.asarray(correct_quant, bool)
    return np.where(cf & ~cq, "correct_to_wrong", np.where(~cf & cq, "wrong_to_correct", "none"))


class MultipleChoice(TaskKind):
    name = "multiple_choice"
    output_types = ("multiple_choice",)
    columns = COLUMNS
    identifying_columns = ("choices", "loglik", "gold")
    held = "choice scores"
    confidence_label = "confidence (top-choice probability)"
    shift_label = "Δ gold-choice probability (quant − full)"
    full_confidence_label = "full model confidence"
    has_choice_distribution = True

    # -- documents -> questions, and a model on them
    def item(self, task, doc_id: int, doc: dict, where) -> Question:
        # jsonl rows skip blank lines, so report the row number (1-based) as the line for files
        loc = f"{where}:{doc_id + 1}" if where else f"{task.name} doc {doc_id}"
        try:
            continuation = task.doc_to_continuation(doc) if task.doc_to_continuation is not None else None
            context = task.doc_to_text(doc) if continuation is None else None
            choices = list(task.doc_to_choices(doc))
            gold = task.doc_to_gold(doc)
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
            raise QuantconfError(f"{loc}: row does not fit task {task.name} ({type(e).__name__}: {e}); fix that row") from None
        if continuation is not None and not isinstance(continuation, str):
            raise QuantconfError(f"{loc}: continuation must be a string")
        if continuation is None and not isinstance(context, str):
            raise QuantconfError(f"{loc}: context must be a string")
        if not choices:
            raise QuantconfError(f"{loc}: empty choice list; every question needs at least one choice")
        if not all(isinstance(c, str) for c in choices):
            raise QuantconfError(f"{loc}: choices must be strings")
        check_gold(gold, len(choices), loc)
        if continuation is not None:  # the choices are the per-choice contexts
            if not continuation:
                raise QuantconfError(f"{loc}: empty continuation; it is the text every choice is scored on")
            return Question(doc_id, os.path.commonprefix(choices), choices, gold, contexts=tuple(choices),
                            continuation=continuation)
        return Question(doc_id, context, choices, gold)

    def texts(self, loaded):
        for q in loaded.questions:
            gold = q.gold[0] if isinstance(q.gold, list) else q.gold
            yield "".join(q.requests(loaded.task.target_delimiter)[gold])

    def evaluate(self, lm, loaded, batch_size: int = 16, progress: bool = False, scorer: str = "packed",
                 shard=None, max_gen_toks=None, sampling=None) -> pd.DataFrame:
        """Score every choice of every question (`sampling` is for generation tasks: nothing to sample here). `scorer`: "packed" (context once per question) or "naive"
        (one sequence per choice); both agree to float rounding. `shard=(i, n)`: only the questions of every
        n-th forward pass of the packed plan (bit-identical to the unsharded run; naive: every n-th question,
        equal to float rounding)."""
        add_bos = wants_bos(lm.model)
        if shard is not None and scorer == "naive":
            loaded = replace(loaded, questions=loaded.questions[shard[0]::shard[1]], grade=None)
            shard = None
        requests = task_requests(lm.tokenizer, loaded, add_bos)
        per_question: list[list | None] = []  # ScoredChoice per choice; None: not in this shard
        if scorer == "naive":
            scored = score_requests(lm.model, requests, batch_size=batch_size, progress=progress, desc=loaded.task.name)
            k = 0
            for q in loaded.questions:
                per_question.append(scored[k:k + len(q.choices)])
                k += len(q.choices)
        else:
            groups, k = [], 0
            for q in loaded.questions:
                reqs = requests[k:k + len(q.choices)]
                k += len(q.choices)
                shared = all(ctx == reqs[0][0] for ctx, _ in reqs)  # false only for per-choice contexts
                groups.append((reqs[0][0] if shared else [ctx for ctx, _ in reqs], [cont for _, cont in reqs]))
            per_question = score_questions(lm.model, groups, batch_size=batch_size, progress=progress,
                                           desc=loaded.task.name, shard=shard)
        rows = []
        for q, s in zip(loaded.questions, per_question):
            if s is None:
                continue
            rows.append({
                "doc_id": q.doc_id, "task": loaded.task.name, "context": q.context, "choices": list(q.choices),
                "gold": q.gold, "loglik": [x.loglik for x in s], "n_tokens": [x.n_tokens for x in s],
                "n_chars": [len(c) for c in q.choices], "n_bytes": [len(c.encode("utf-8")) for c in q.choices],
                "is_greedy": [x.is_greedy for x in s],
                **({"contexts": list(q.contexts), "continuation": q.continuation} if q.contexts is not None else {}),
            })
        return self.frame(rows)

    def run_identity(self, run) -> list:
        return [SCORER_VERSION]  # the scorer (packed or naive) agrees to float rounding: not in the key

    # -- prediction frames
    def frame(self, rows: list[dict]) -> pd.DataFrame:
        """Question rows as a predictions frame. When some question has per-choice contexts, every row gets
        `contexts`/`continuation` (None where it has none); no rows (an empty shard) give an empty frame that
        still has the required columns."""
        if not rows:
            df = pd.DataFrame(columns=["doc_id", "task", "context", *COLUMNS[2:]])
        else:
            if any("contexts" in row for row in rows):
                rows = [{**row, "contexts": row.get("contexts"), "continuation": row.get("continuation")}
                        for row in rows]
            df = pd.DataFrame(rows)
        df.attrs[ATTR] = self.name
        return df

    def check(self, df: pd.DataFrame, source: str, fix: str) -> None:
        """Integer doc_ids, each once; a non-empty list of string choices; one numeric log-likelihood per
        choice; a gold index (or list of them) in range. One error naming source, doc and the fix."""
        for where, choices, loglik, gold in zip(checked_doc_ids(df["doc_id"], source, fix), df["choices"],
                                                df["loglik"], df["gold"]):
            if not isinstance(choices, (list, tuple, np.ndarray)) or len(choices) == 0 or not all(
                    isinstance(c, str) for c in choices):
                raise QuantconfError(f"{where}: choices must be a non-empty list of strings; {fix}")
            if not isinstance(loglik, (list, tuple, np.ndarray)) or len(loglik) != len(choices) or not all(
                    isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) for v in loglik):
                raise QuantconfError(f"{where}: needs one numeric log-likelihood per choice ({len(choices)}); {fix}")
            golds = list(gold) if isinstance(gold, (list, tuple, np.ndarray)) else [gold]
            if not golds or not all(is_int(g) and 0 <= g < len(choices) for g in golds):
                raise QuantconfError(f"{where}: gold {gold!r} is not an index into its {len(choices)} choices; {fix}")

    def read(self, df: pd.DataFrame, source: str, fix: str) -> pd.DataFrame:
        missing = [c for c in COLUMNS if c not in df.columns]
        if missing:
            raise QuantconfError(f"{source}: missing columns {missing}; was it written by quantconf eval/import-lm-eval?")
        for col in LIST_COLUMNS:
            df[col] = df[col].map(lambda v: list(v))
        if "contexts" in df.columns:
            df["contexts"] = df["contexts"].map(lambda v: None if v is None else list(v))
        self.check(df, source, fix)
        df["gold"] = df["gold"].map(lambda g: [int(x) for x in g] if isinstance(g, (list, np.ndarray)) else int(g))
        return df

    def accuracy(self, df: pd.DataFrame) -> dict:
        return metrics.accuracy(df)

    def throughput(self, df: pd.DataFrame, seconds: float) -> dict:
        return {"choices_per_second": round(sum(map(len, df["choices"])) / max(seconds, 1e-9), 2)}

    def accuracy_line(self, df: pd.DataFrame, acc: dict) -> str:
        return f"acc={acc['acc']:.4f} acc_norm={acc['acc_norm']:.4f}"

    def acc_norm_cell(self, df: pd.DataFrame, acc: dict) -> str:
        return f"{acc['acc_norm']:.4f}"

    # -- analysis
    def metrics(self, df, n_bins=15, n_boot=1000, normalize="none", seed=0, compat=None, correctness=None) -> dict:
        out = metrics.task_metrics(df, n_bins=n_bins, n_boot=n_boot, normalize=normalize, seed=seed, compat=compat)
        if compat == "helm" and self.single_answer(df):  # HELM's battery on the top choice's probability
            probs, _ = metrics.probs_from_predictions(df, normalize)
            out["helm"] = helm_battery(*metrics.top_choice_confidence(probs, np.asarray(list(df["gold"]), int)),
                                       n_boot=n_boot, seed=seed)
        return out

    def compare(self, full, quant, n_bins=15, n_conf_bins=5, n_boot=1000, seed=0, task="", correctness=None) -> dict:
        return paired.compare_task(full, quant, n_bins, n_conf_bins, n_boot, seed, task)

    def paired_confidence(self, full, quant, task: str = "", correctness=None) -> tuple:
        """The top choice's probability and whether it is gold, of each model on the paired questions."""
        f, q = paired.pair_predictions(full, quant, task)
        gold = np.asarray(list(f["gold"]), int)
        return (*metrics.top_choice_confidence(metrics.probs_from_predictions(f)[0], gold),
                *metrics.top_choice_confidence(metrics.probs_from_predictions(q)[0], gold))

    def per_sample_frame(self, full, quant, task: str = "") -> pd.DataFrame:
        return paired.per_sample_frame(full, quant, task)

    def confidence_and_correctness(self, df: pd.DataFrame) -> tuple:
        """The top-choice probability and whether it is gold."""
        probs, _ = metrics.probs_from_predictions(df)
        return probs.max(1), probs.argmax(1) == np.asarray(list(df["gold"]), int)

    def noise_floor(self, full, replicates, **options) -> dict:
        return noise_floor.noise_floor(full, replicates, **options)

    def single_answer(self, df: pd.DataFrame) -> bool:
        """Whether every question has one gold answer (truthfulqa_mc2's several true answers: no)."""
        return not metrics.has_several_true(df["gold"])

    def not_temperature_scalable(self, df: pd.DataFrame) -> str | None:
        if not self.single_answer(df):
            return "several true answers per question (truthfulqa_mc2): temperature scaling needs one gold answer"
        return None

    def why_no_question_divergence(self, loaded) -> str | None:
        if any(isinstance(q.gold, list) for q in loaded.questions):
            return "several true answers"  # a flip is the chosen answer changing: one gold answer needed
        return None

    def reliability_shown(self, df: pd.DataFrame) -> bool:
        return self.single_answer(df)

    def question_rows(self, full: pd.DataFrame, quant: pd.DataFrame, task: str) -> dict:
        """The question explorer's columns for one compared pair; `answer_key` (the chosen choice's index) lets
        replicates of a configuration be counted as agreeing with this one."""
        f, q = paired.pair_predictions(full, quant, task)
        pf, _ = metrics.probs_from_predictions(f)
        pq, _ = metrics.probs_from_predictions(q)
        gold_sets = [set(g) if isinstance(g, list) else {int(g)} for g in f["gold"]]
        p_gold_f = np.array([p[list(g)].sum() for p, g in zip(pf, gold_sets)])
        p_gold_q = np.array([p[list(g)].sum() for p, g in zip(pq, gold_sets)])
        af, aq = pf.argmax(1), pq.argmax(1)
        flip = flip_kinds([a in g for a, g in zip(af, gold_sets)], [a in g for a, g in zip(aq, gold_sets)])
        if metrics.has_several_true(f["gold"]):
            flip[:] = "none"  # as `compare`: no flips where a question has several true answers
        choices = [list(ch) for ch in f["choices"]]
        return {
            "doc_id": list(f["doc_id"]), "question": [short(t) for t in f["context"]],
            "gold_answer": [" | ".join(str(ch[i]) for i in sorted(g)) for ch, g in zip(choices, gold_sets)],
            "full_answer": [str(ch[i]) for ch, i in zip(choices, af)],
            "quant_answer": [str(ch[i]) for ch, i in zip(choices, aq)],
            "full_p_gold": p_gold_f, "quant_p_gold": p_gold_q, "delta_p_gold": p_gold_q - p_gold_f,
            "full_conf": pf.max(1), "js": paired.js_distance(pf, pq), "flip": flip,
            "choices": choices, "full_probs": [list(map(float, p[:len(ch)])) for p, ch in zip(pf, choices)],
            "quant_probs": [list(map(float, p[:len(ch)])) for p, ch in zip(pq, choices)], "answer_key": aq}

    def headlines(self, comparisons: list[dict]) -> list[str]:
        """Two plain-language lines per quantized variant over its single-answer tasks: the mean Δacc and where
        accuracy, NLL and ECE moved significantly; whether low-confidence questions were hit hardest."""
        lines = []
        by_variant: dict[tuple[str, str], list[dict]] = {}
        for c in comparisons:
            if "delta_acc" in c:  # several-true-answer tasks have no accuracy comparison
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
                f"ECE significantly higher on {', '.join(ece_up) or 'no task'} (95% paired bootstrap over questions"
                + (f"; {cs[0]['replicates']} replicates, see the two-way verdicts below)." if cs[0].get("replicates", 1) > 1
                   else " of one quantization run: the quantizer's own run-to-run noise is not in it)."))
            verdict = "yes" if js_low > js_high and flip_low >= flip_high else "no"
            lines.append(
                f"{model} / {variant}: low-confidence samples hit hardest? {verdict} — least-confident fifth of questions: "
                f"mean JS {js_low:.3f}, flip rate {flip_low:.2f}; most-confident fifth: mean JS {js_high:.3f}, "
                f"flip rate {flip_high:.2f} (averaged over tasks).")
        return lines

    # -- printing
    def format_comparison(self, task: str, c: dict) -> str:
        lines = [f"== {task} (n={c['n']})"]
        if "note" in c:
            lines.append(f"  {c['note']}: delta_mc2 {c['delta_mc2']:+.4f}, JS mean {c['js_mean']:.4f}")
            return "\n".join(lines)
        for m in ("acc", "nll", "ece", "ace", "conf_true"):
            ci = c.get("ci", {}).get(f"delta_{m}")
            ci_s = f"  95% CI [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else ""
            lines.append(f"  {m:<10} full {c[f'full_{m}']:.4f}  quant {c[f'quant_{m}']:.4f}  delta "
                         f"{c[f'delta_{m}']:+.4f}{ci_s}")
        lines.append(f"  JS mean {c['js_mean']:.4f} median {c['js_median']:.4f}; flips correct->wrong "
                     f"{c['flips_correct_to_wrong']}, wrong->correct {c['flips_wrong_to_correct']}; p McNemar "
                     f"{c['p_mcnemar']:.3g}, p t-test {c['p_ttest']:.3g}, p Wilcoxon {c['p_wilcoxon']:.3g}")
        lines.append("  by full-model confidence:  conf range      n  mean|dp(gold)|  JS mean  flip rate")
        for b in c["by_confidence_bin"]:
            lines.append(f"  {'':<26}{b['conf_lo']:.2f}-{b['conf_hi']:.2f} {b['n']:>6}  "
                         f"{b['mean_abs_delta_conf_true']:>14.4f}  {b['js_mean']:>7.4f}  {b['flip_rate']:>9.3f}")
        return "\n".join(lines)


MULTIPLE_CHOICE = register(MultipleChoice())
