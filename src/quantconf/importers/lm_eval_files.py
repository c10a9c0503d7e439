"""Read lm-evaluation-harness outputs into quantconf prediction files.

Two layouts:
  * `--log_samples` files `samples_<task>_<timestamp>.jsonl`, one question per line with
    `doc_id`, `doc`, `target`, `arguments` and `filtered_resps` / `resps`. lm-eval 0.4.13's
    `EvaluationTracker` (what `--log_samples` runs) writes `arguments` as one dict per question,
    {"gen_args_0": {"arg_0": context, "arg_1": continuation}, "gen_args_1": ...}, `target` as a
    string, and the responses as strings: [["-18.63", "False"], ...]. Older versions wrote a list
    of [context, continuation] pairs and numbers; both are read.
    Multiple-input tasks (Winogrande: one context per choice, one shared continuation) log the
    continuation text as `target`; their gold index is what the task's own `doc_to_text` returns
    for the logged `doc` (read through lm-eval's task index when lm-eval is installed), or, for two
    choices, follows from the logged `acc`.
    generate_until tasks log `arguments` as {"gen_args_0": {"arg_0": context, "arg_1": {generation
    kwargs}}}, `resps` [[text]], `filtered_resps` [filtered text], and one line per (doc, filter) with
    `filter`, `metrics` (names) and each metric's value: they become a generation predictions file
    (`predictions.py`) with the raw text as `generation`, the first filter's metrics under lm-eval's
    names and later filters' as `<metric>,<filter>`, and NaN confidence measures (the file has no
    token probabilities: they need the model).
  * the old `--write_out` files `<task>_write_out_info.json`: a list of {doc_id, prompt_0,
    logit_0..logit_{k-1}, truth}. `truth` is a gold index, or the gold continuation text, which we
    match against the task's choices (needs `--data-dir` or the hub, since the file has no choices).

`write_offline_task_yamls` writes lm-eval task files that include lm-eval's own definitions with
only the dataset pointed at local jsonl files, so lm-eval itself can be run offline on the same
items (the agreement tests and `benchmarks/vs_lm_eval.py` do).

Imported rows have `n_tokens` = 0 (lm-eval does not log token counts), so `--normalize tokens`
is unavailable for them; chars/bytes come from the choice text, as lm-eval's acc_norm uses.
"""

from __future__ import annotations

import ast
import functools
import json
import math
import os
import random
import re
from pathlib import Path

import pandas as pd

from quantconf.errors import QuantconfError
from quantconf.io import ensure_writable_dir, locked, package_versions, remove_if_holds_nothing, sha256_file
from quantconf.kinds import kind_of
from quantconf.kinds.choice import MULTIPLE_CHOICE
from quantconf.kinds.generation import GENERATION
from quantconf.predictions import read_manifest, record_tasks, task_file_name, write_predictions
from quantconf.tasks import load_task
from quantconf.tasks.lm_eval_bridge import primary_of, raw_config, task_manager

# quantconf built-in -> (lm-eval yaml relative to lm_eval/tasks, split, file under the data dir)
BUILTIN_LM_EVAL_YAMLS = {
    "piqa": ("piqa/piqa.yaml", "validation", "piqa/validation.jsonl"),
    "arc_easy": ("arc/arc_easy.yaml", "test", "arc_easy/test.jsonl"),
    "arc_challenge": ("arc/arc_challenge.yaml", "test", "arc_challenge/test.jsonl"),
    "hellaswag": ("hellaswag/hellaswag.yaml", "validation", "hellaswag/validation.jsonl"),
    "boolq": ("super_glue/boolq/default.yaml", "validation", "boolq/validation.jsonl"),
    "openbookqa": ("openbookqa/openbookqa.yaml", "test", "openbookqa/test.jsonl"),
    "xstory_cloze_en": ("xstorycloze/default_en.yaml", "eval", "xstory_cloze_en/eval.jsonl"),
    "truthfulqa_mc1": ("truthfulqa/truthfulqa_mc1.yaml", "validation", "truthful_qa/validation.jsonl"),
    "truthfulqa_mc2": ("truthfulqa/truthfulqa_mc2.yaml", "validation", "truthful_qa/validation.jsonl"),
}
# the ones the scoring agreement tests and benchmarks/vs_lm_eval.py run lm-eval on
OFFLINE_TASKS = {name: BUILTIN_LM_EVAL_YAMLS[name] for name in ("piqa", "arc_easy", "hellaswag", "boolq")}
SAMPLES_RE = re.compile(r"samples_(?P<task>.+?)_\d{4}-\d{2}-\d{2}T[\d\-\.]+\.jsonl$")
WRITE_OUT_RE = re.compile(r"(?P<task>.+)_write_out_info\.json$")


def _pair(value, where: str) -> tuple[float, bool]:
    """[loglik, is_greedy] in any of the encodings lm-eval versions used."""
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise QuantconfError(f"{where}: cannot parse response {value!r}") from None
    if isinstance(value, (list, tuple)) and len(value) == 1 and isinstance(value[0], (list, tuple, str)):
        return _pair(value[0], where)  # resps: one more level of nesting
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise QuantconfError(f"{where}: expected [loglik, is_greedy], got {value!r}")
    ll, greedy = value
    try:
        ll = float(ll)
    except (TypeError, ValueError):
        raise QuantconfError(f"{where}: loglik {ll!r} is not a number") from None
    if not math.isfinite(ll):
        raise QuantconfError(f"{where}: log-likelihood {ll} is not finite (NaN/inf); lm-eval wrote a broken "
                             "score there: re-run lm-eval for this task, then import again")
    if isinstance(greedy, str):
        greedy = greedy.strip().lower() == "true"
    return ll, bool(greedy)


def _doc_id(value, where: str) -> int:
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit())):
        raise QuantconfError(f"{where}: doc_id {value!r} is not an integer")
    return int(value)


def _args(arguments, where: str) -> list[tuple[str, str]]:
    if not isinstance(arguments, (list, dict)):
        raise QuantconfError(f"{where}: field 'arguments' must be a list of [context, continuation] pairs "
                             f"or a dict of gen_args_<i>, got {type(arguments).__name__}")
    if isinstance(arguments, dict):  # lm-eval 0.4.13: {"gen_args_0": {"arg_0": ctx, "arg_1": cont}, ...}
        keys = sorted(arguments, key=lambda k: int(re.sub(r"\D", "", k) or -1))
        if not all(re.fullmatch(r"gen_args_\d+", k) for k in keys):
            raise QuantconfError(f"{where}: field 'arguments' must hold [context, continuation] pairs "
                                 f"or gen_args_<i> entries, got keys {keys[:3]}")
        arguments = [arguments[k] for k in keys]
    out = []
    for a in arguments:
        if isinstance(a, dict):
            a = [a.get("arg_0"), a.get("arg_1")] if "arg_0" in a else list(a.values())
            if len(a) == 1 and isinstance(a[0], dict):
                a = [a[0].get("arg_0"), a[0].get("arg_1")]
        if not isinstance(a, (list, tuple)) or len(a) < 2 or not all(isinstance(x, str) for x in a[:2]):
            raise QuantconfError(f"{where}: field 'arguments' must hold [context, continuation] pairs")
        out.append((a[0], a[1]))
    return out


def _gold(task: str, row: dict, choices: list[str], where: str):
    doc = row.get("doc") or {}
    if "mc2" in task and isinstance(doc.get("mc2_targets"), dict):
        return [i for i, v in enumerate(doc["mc2_targets"]["labels"]) if v == 1]
    target = row.get("target")
    if isinstance(target, bool) or target is None:
        raise QuantconfError(f"{where}: field 'target' missing or not an index")
    if isinstance(target, int) or (isinstance(target, str) and target.strip().isdigit()):
        gold = int(target)
    elif isinstance(target, str) and target.strip() in [c.strip() for c in choices]:
        gold = [c.strip() for c in choices].index(target.strip())
    else:
        raise QuantconfError(f"{where}: target {target!r} is neither an index nor one of the choices")
    if not 0 <= gold < len(choices):
        raise QuantconfError(f"{where}: target {gold} out of range for {len(choices)} choices")
    return gold


def _row(task, doc_id, context, choices, gold, pairs) -> dict:
    return {"doc_id": int(doc_id), "task": task, "context": context, "choices": choices, "gold": gold,
            "loglik": [p[0] for p in pairs], "n_tokens": [0] * len(choices),
            "n_chars": [len(c) for c in choices], "n_bytes": [len(c.encode()) for c in choices],
            "is_greedy": [p[1] for p in pairs]}


def _task_doc_function(task: str, field: str):
    """The task's own doc_to_text/doc_to_choice when lm-eval defines it as a Python function."""
    try:
        tm = task_manager()
        fn = raw_config(tm, task).get(field) if task in tm.task_index else None
    except Exception:  # lm-eval missing or the name unknown to it: fall back to the logged acc
        return None
    return fn if callable(fn) else None


def _multiple_input_row(task: str, row: dict, args, pairs, where: str) -> dict:
    """A Winogrande-style question: per-choice contexts, one continuation, gold from the doc."""
    contexts = [ctx for ctx, _ in args]
    continuation = args[0][1][1:] if args[0][1].startswith(" ") else args[0][1]
    doc = row.get("doc") or {}
    to_gold, to_choices = _task_doc_function(task, "doc_to_text"), _task_doc_function(task, "doc_to_choice")
    if to_gold is not None and doc:
        gold = int(to_gold(doc))
    elif len(pairs) == 2 and "acc" in row:  # acc says whether argmax was right; with 2 choices that names gold
        best = max(range(2), key=lambda i: pairs[i][0])
        gold = best if float(row["acc"]) == 1.0 else 1 - best
    else:
        raise QuantconfError(f"{where}: a per-choice-context question whose gold index cannot be recovered "
                             "(install lm-eval so the task's doc_to_text can be read)")
    choices = list(to_choices(doc)) if to_choices is not None and doc else contexts
    if len(choices) != len(contexts) or not 0 <= gold < len(choices):
        raise QuantconfError(f"{where}: gold {gold} / {len(choices)} choices do not fit {len(contexts)} requests")
    out = _row(task, row["doc_id"], os.path.commonprefix(contexts), choices, gold, pairs)
    return {**out, "contexts": contexts, "continuation": continuation}


def _sample_row(task: str, row, where: str) -> dict:
    if not isinstance(row, dict):
        raise QuantconfError(f"{where}: expected a JSON object per line, got {type(row).__name__}")
    for key in ("doc_id", "arguments"):
        if key not in row:
            raise QuantconfError(f"{where}: field {key!r} missing; is this an lm-eval --log_samples file?")
    row = {**row, "doc_id": _doc_id(row["doc_id"], where)}
    resps = row.get("filtered_resps", row.get("resps"))
    if not isinstance(resps, list):
        raise QuantconfError(f"{where}: field 'filtered_resps' (or 'resps') missing or not a list")
    args = _args(row["arguments"], where)
    if len(resps) != len(args):
        raise QuantconfError(f"{where}: {len(resps)} responses for {len(args)} choices")
    pairs = [_pair(r, where) for r in resps]
    if len({ctx for ctx, _ in args}) > 1 and len({cont for _, cont in args}) == 1:
        return _multiple_input_row(task, row, args, pairs, where)
    # lm-eval appends target_delimiter (" ") + choice; the choice text is without it
    choices = [cont[1:] if cont.startswith(" ") else cont for _, cont in args]
    return _row(task, row["doc_id"], args[0][0], choices, _gold(task, row, choices, where), pairs)


def read_samples_file(path: Path, task: str | None = None) -> pd.DataFrame:
    """One lm-eval --log_samples file as predictions; any row that does not fit is one error naming file:line."""
    m = SAMPLES_RE.search(path.name)
    task = task or (m.group("task") if m else path.stem.removeprefix("samples_"))
    rows, seen = [], {}
    try:
        with open(path, encoding="utf-8") as f:
            lines = list(f)
    except UnicodeDecodeError:
        raise QuantconfError(f"{path}: not UTF-8 text; is this an lm-eval --log_samples file?") from None
    parsed = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            parsed.append((where, json.loads(line)))
        except json.JSONDecodeError:
            raise QuantconfError(f"{where}: malformed JSON") from None
    if parsed and _is_generation_sample(parsed[0][1]):
        return _generation_frame(task, parsed, path)
    for where, row in parsed:
        lineno = int(where.rsplit(":", 1)[1])
        try:
            out = _sample_row(task, row, where)
        except QuantconfError:
            raise
        except (TypeError, ValueError, AttributeError, KeyError, IndexError) as e:  # any other shape lm-eval never writes
            raise QuantconfError(f"{where}: row does not have lm-eval's --log_samples layout "
                                 f"({type(e).__name__}: {e})") from None
        if out["doc_id"] in seen:
            raise QuantconfError(f"{where}: doc_id {out['doc_id']} already at line {seen[out['doc_id']]}; "
                                 "each question once (were two runs concatenated?)")
        seen[out["doc_id"]] = lineno
        rows.append(out)
    if not rows:
        raise QuantconfError(f"{path}: no samples")
    return MULTIPLE_CHOICE.frame(rows).sort_values("doc_id").reset_index(drop=True)


def _generation_request(row) -> tuple | None:
    """(context, generation kwargs) of a generate_until line, or None when it is not one: its first request's
    second argument is the generation kwargs (a dict), in lm-eval 0.4.13's {"gen_args_0": {"arg_0", "arg_1"}}
    layout or the older list layout [[context, {kwargs}]]."""
    args = row.get("arguments") if isinstance(row, dict) else None
    if isinstance(args, dict):
        first = args.get("gen_args_0")
        first = (first.get("arg_0"), first.get("arg_1")) if isinstance(first, dict) else None
    elif isinstance(args, list) and args and isinstance(args[0], (list, tuple)) and len(args[0]) == 2:
        first = tuple(args[0])
    else:
        first = None
    return first if first is not None and isinstance(first[1], dict) else None


def _is_generation_sample(row) -> bool:
    return _generation_request(row) is not None


def _generation_frame(task: str, parsed: list[tuple[str, dict]], path: Path) -> pd.DataFrame:
    """The generation predictions of a generate_until --log_samples file (module docstring)."""
    by_doc: dict[int, dict] = {}
    filters: list[str] = []
    for where, row in parsed:
        if not _is_generation_sample(row):
            raise QuantconfError(f"{where}: not a generate_until sample like the file's first line")
        doc_id = _doc_id(row.get("doc_id"), where)
        flt = str(row.get("filter", "none"))
        if flt not in filters:
            filters.append(flt)
        resps = row.get("resps")
        if not (isinstance(resps, list) and resps and isinstance(resps[0], list) and resps[0]
                and isinstance(resps[0][0], str)):
            raise QuantconfError(f"{where}: field 'resps' must be [[generated text]]")
        names = row.get("metrics")
        if not isinstance(names, list) or not all(isinstance(m, str) and m in row for m in names):
            raise QuantconfError(f"{where}: field 'metrics' must list metric names whose values the line holds")
        entry = by_doc.setdefault(doc_id, {"where": where, "row": row, "metrics": {}, "primary": primary_of(names)})
        if flt in entry["metrics"]:
            raise QuantconfError(f"{where}: doc_id {doc_id} with filter {flt!r} twice (were two runs concatenated?)")
        if resps[0][0] != entry["row"]["resps"][0][0]:
            raise QuantconfError(f"{where}: doc_id {doc_id} has another generation than at {entry['where']}")
        entry["metrics"][flt] = {m: row[m] for m in names}
    rows = []
    nan = float("nan")
    for doc_id in sorted(by_doc):
        entry = by_doc[doc_id]
        row, where = entry["row"], entry["where"]
        context = _generation_request(row)[0]
        if not isinstance(context, str):
            raise QuantconfError(f"{where}: the prompt (the first argument of its request) is not text")
        metrics = {}
        for j, flt in enumerate(f for f in filters if f in entry["metrics"]):
            for m, v in entry["metrics"][flt].items():
                metrics[m if j == 0 else f"{m},{flt}"] = float(v) if isinstance(v, (int, float)) else v
        primary = entry["primary"]
        doc = row.get("doc") if isinstance(row.get("doc"), dict) else {}
        rows.append({"doc_id": doc_id, "task": task, "context": context,
                     "question": doc["question"] if isinstance(doc.get("question"), str) else context,
                     "reference": str(row.get("target", "")), "generation": row["resps"][0][0],
                     "token_ids": [], "token_logprobs": [], "token_entropies": [], "primary_metric": primary,
                     "correct": metrics.get(primary, nan), **metrics,
                     "sequence_logprob": nan, "mean_logprob": nan, "min_token_prob": nan, "mean_entropy": nan,
                     "p_true": nan})
    df = GENERATION.frame(rows)
    GENERATION.check(df, str(path), f"its primary metric {rows[0]['primary_metric']!r} must be 0/1; import it with a "
                                     "task whose metrics include exact_match or an *_acc metric")
    return df


@functools.lru_cache(maxsize=8)
def _shuffled_positions(n_docs: int) -> tuple[int, ...]:
    positions = list(range(n_docs))
    rng = random.Random()
    rng.seed(42)
    rng.shuffle(positions)
    return tuple(positions)


def unshuffled_position(doc_id: int, n_docs: int) -> int:
    """Where lm-eval 0.3's doc_id `doc_id` sits in the split's own order: its evaluator shuffled each
    task's documents with random.Random() seeded 42 before numbering them (a shuffle depends only on
    the length and the seed, so shuffling positions replays it; once per length)."""
    return _shuffled_positions(n_docs)[doc_id]


def _choices_from_prompts(prompts: list[str]) -> tuple[str, list[str]]:
    """(context, choices) from prompt_i = context + " " + choice_i: the prompts' common prefix, cut back to
    its last space (exact unless the choices share leading words, which only changes their lengths)."""
    prefix = os.path.commonprefix(prompts)
    cut = prefix.rfind(" ") if len(prompts) > 1 else -1
    if cut < 0:
        return prefix, [p[len(prefix):] for p in prompts]
    return prefix[:cut], [p[cut + 1:] for p in prompts]


def _gold_from_text_truth(prompts: list[str], truth: str, where: str) -> tuple[int, str, list[str]]:
    """The index of the prompt that is context + truth, where the context starts every prompt: the
    order the logits were computed in, whatever today's task definition says."""
    for text in dict.fromkeys([truth, " " + truth.strip(), truth.strip()]):
        if not text:
            continue
        hits = [j for j, p in enumerate(prompts)
                if p.endswith(text) and all(q.startswith(p[:len(p) - len(text)]) for q in prompts)]
        if len(hits) == 1:
            ctx = prompts[hits[0]][:len(prompts[hits[0]]) - len(text)]
            return hits[0], ctx, [p[len(ctx):].removeprefix(" ") for p in prompts]
        if len(hits) > 1:
            raise QuantconfError(f"{where}: truth {truth!r} ends {len(hits)} of the prompts; cannot tell which is gold")
    raise QuantconfError(f"{where}: truth {truth!r} is not the continuation of any prompt_<i>")


def _file_acc(value) -> bool | None:
    try:
        return {"true": True, "false": False}.get(str(value).strip().lower(), float(value) == 1.0)
    except (TypeError, ValueError):
        return None


def read_write_out_file(path: Path, data_dir=None) -> pd.DataFrame:
    """An lm-eval 0.3-era `<task>_write_out_info.json` as predictions. The choice order is the row's
    own (prompt_i is the i-th request's context + continuation, logit_i its log-likelihood), never
    today's task definition: 0.3 scored BoolQ as (" yes", " no") and wrote truth " yes"/" no". An
    index truth is used as it is. With `data_dir`, the document is found at its place before 0.3's
    seeded shuffle (`unshuffled_position`) for its exact choice texts, used only where they
    reproduce the row's prompts. A row's own `acc` must agree with argmax == gold (ties aside)."""
    task = WRITE_OUT_RE.search(path.name).group("task")
    try:
        entries = json.loads(path.read_text())
    except json.JSONDecodeError:
        raise QuantconfError(f"{path}: malformed JSON") from None
    except UnicodeDecodeError:
        raise QuantconfError(f"{path}: not UTF-8 text; is this an lm-eval write_out file?") from None
    if not isinstance(entries, list):
        raise QuantconfError(f"{path}: expected a JSON list of per-document entries")
    questions = None
    rows, seen = [], {}
    for i, e in enumerate(entries):
        where = f"{path} entry {i}"
        if not isinstance(e, dict):
            raise QuantconfError(f"{where}: expected an object with doc_id, logit_<i> and truth")
        logits = sorted((int(k.split("_")[1]), v) for k, v in e.items() if re.fullmatch(r"logit_\d+", k))
        if not logits or "truth" not in e or "doc_id" not in e:
            raise QuantconfError(f"{where}: needs doc_id, logit_<i> and truth fields")
        if [j for j, _ in logits] != list(range(len(logits))):
            raise QuantconfError(f"{where}: logit_<i> fields must run 0..{len(logits) - 1}")
        e = {**e, "doc_id": _doc_id(e["doc_id"], where)}
        if e["doc_id"] in seen:
            raise QuantconfError(f"{where}: doc_id {e['doc_id']} already in entry {seen[e['doc_id']]}; each question once")
        seen[e["doc_id"]] = i
        values = [_pair([v, False], where)[0] for _, v in logits]
        prompts = [e.get(f"prompt_{j}") for j in range(len(values))]
        has_prompts = all(isinstance(p, str) for p in prompts)
        truth = e["truth"]
        if isinstance(truth, bool) or not isinstance(truth, (int, str)):
            raise QuantconfError(f"{where}: truth {truth!r} is neither an index nor a continuation text")
        if isinstance(truth, int) or truth.strip().isdigit():
            gold = int(truth)
            context, choices = _choices_from_prompts(prompts) if has_prompts else (
                e.get("prompt_0", ""), [f"choice_{j}" for j in range(len(values))])
            if data_dir is not None:
                if questions is None:
                    questions = load_task(task, data_dir=data_dir).questions
                if e["doc_id"] >= len(questions):
                    raise QuantconfError(f"{where}: doc_id {e['doc_id']} beyond the {len(questions)} documents of "
                                         f"{task} under {data_dir}")
                q = questions[unshuffled_position(e["doc_id"], len(questions))]
                if len(q.choices) == len(values) and (not has_prompts or all(
                        p.endswith(" " + c) or p.endswith(c) for p, c in zip(prompts, q.choices))):
                    choices = list(q.choices)
        else:
            if not has_prompts:
                raise QuantconfError(f"{where}: truth {truth!r} is text and the entry has no prompt_0.."
                                     f"prompt_{len(values) - 1}, so the order its logits were computed in is unknown")
            gold, context, choices = _gold_from_text_truth(prompts, truth, where)
        if not 0 <= gold < len(values):
            raise QuantconfError(f"{where}: gold {gold} out of range for {len(values)} logits")
        own = _file_acc(e["acc"]) if "acc" in e else None
        if own is not None and values.count(max(values)) == 1 and (max(range(len(values)), key=values.__getitem__)
                                                                   == gold) != own:
            raise QuantconfError(f"{where}: the file's own acc ({e['acc']}) disagrees with gold {gold} and its "
                                 "logits; the choice order or truth of this file is not the one assumed")
        rows.append(_row(task, e["doc_id"], context, choices, gold, [(v, False) for v in values]))
    return pd.DataFrame(rows).sort_values("doc_id").reset_index(drop=True)


def import_lm_eval(paths: list[Path], out: Path, data_dir=None, overwrite: bool = False) -> dict[str, int]:
    """Convert lm-eval output files into a prediction directory `out`. An existing `out` that holds
    anything needs `overwrite`: the imported tasks' files and manifest entries are then replaced
    (under the locks eval uses), other tasks' entries are kept; a directory of `quantconf eval`
    predictions of a model is never mixed with imported ones."""
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(p.rglob("samples_*.jsonl")) + sorted(p.rglob("*_write_out_info.json"))
        elif p.is_file():
            files.append(p)
        else:
            raise QuantconfError(f"{p} not found")
    if not files:
        raise QuantconfError("no samples_<task>_*.jsonl or *_write_out_info.json files found")
    out = Path(out)
    if out.is_dir() and any(not e.name.startswith(".") for e in out.iterdir()) and not overwrite:
        raise QuantconfError(f"out {out} already exists; pass --overwrite to write the imported tasks into it "
                             "(its other tasks are kept), or choose another out dir", param="out")
    existing = read_manifest(out)
    if existing.get("model_fingerprint"):
        raise QuantconfError(f"out {out} holds predictions quantconf eval made of {existing.get('model_spec')}; "
                             "imported lm-eval results would be mixed with them: choose another out dir",
                             param="out")
    frames = {}
    for f in files:  # every file is read and checked before anything is written
        if WRITE_OUT_RE.search(f.name):
            df = read_write_out_file(f, data_dir)
        elif f.suffix == ".jsonl":
            df = read_samples_file(f)
        else:
            raise QuantconfError(f"{f}: unknown layout; expected samples_<task>_<date>.jsonl or "
                                 "<task>_write_out_info.json")
        task = df["task"].iloc[0]
        if task in frames:
            raise QuantconfError(f"{f}: task {task} is also in {frames[task][0]}; import one file per task")
        kind_of(df).check(df, str(f), "fix the file or re-run lm-eval for this task")
        frames[task] = (f, df)
    created = not out.exists()
    out = ensure_writable_dir(out)
    try:
        done = {}
        for task, (f, df) in frames.items():
            path = out / task_file_name(task)
            with locked(out / f".{path.name}.lock", what=f"{task} in {out}"):
                write_predictions(df, path)
            done[task] = {"file": path.name, "kind": kind_of(df).name, "source": str(f), "source_sha256": sha256_file(f), "n": len(df),
                          "imported_from": "lm-evaluation-harness"}

        def no_eval(manifest: dict) -> None:
            if manifest.get("model_fingerprint"):  # an eval wrote it meanwhile
                raise QuantconfError(f"out {out} now holds quantconf eval predictions; choose another out dir",
                                     param="out")

        record_tasks(out, done, lambda manifest: {"imported_from": "lm-evaluation-harness",
                                                  "packages": package_versions()}, check=no_eval)
    except BaseException:
        if created:
            remove_if_holds_nothing(out)
        raise
    return {t: d["n"] for t, d in done.items()}


def write_offline_task_yamls(folder: Path, data_dir: Path, tasks: dict = OFFLINE_TASKS) -> list[str]:
    """Write `qc_<task>.yaml` files into `folder` that include lm-eval's own task definition and
    read the documents from `data_dir` (the ../shared/data layout); returns the lm-eval task names.
    Use with `lm_eval.tasks.TaskManager(include_path=folder)`."""
    import lm_eval  # lazy: optional at run time, and seconds to import

    root = Path(lm_eval.__file__).parent / "tasks"
    for name, (yaml_rel, split, local) in tasks.items():
        splits = {"validation_split": split if split != "test" else None,
                  "test_split": split if split == "test" else None}
        (Path(folder) / f"qc_{name}.yaml").write_text(json.dumps({  # JSON is valid YAML
            "include": str(root / yaml_rel), "task": f"qc_{name}", "tag": [], "dataset_path": "json",
            "dataset_name": None, "dataset_kwargs": {"data_files": {split: str(Path(data_dir) / local)}},
            "training_split": None, "fewshot_split": None, **splits,
        }))
    return [f"qc_{name}" for name in tasks]
