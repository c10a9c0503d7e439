"""`quantconf import-generations FILE --out DIR`: generations another tool wrote, as a quantconf
generation predictions dir (then `metrics` and `compare` work on them as on `quantconf eval`'s).

Two inputs:
  * the seed study's TruthfulQA prediction CSVs (upunaprosk/quantized-lm-confidence,
    truthfulqa_predictions/answ_<model>_pred.csv): columns `Type, Category, Question, Best Answer,
    Correct Answers, Incorrect Answers, Source, <model> GPT-info, <model> GPT-info acc,
    model_prediction`, answers `;`-separated, `<model>` differing per file (`mistral`,
    `mistral-quantized-gptq`). Each row becomes a truthfulqa_gen document in the hub schema
    (answers split on ';' and stripped, as TruthfulQA's own loader does); lm-eval's truthfulqa_gen
    then builds its prompt and grades `model_prediction` with its own process_results (BLEU, ROUGE),
    so the file is graded exactly as a `quantconf eval` of truthfulqa_gen is. The judge's score and
    0/1 label are kept as `judge_score` / `judge_acc` (`--correctness judge_acc`). doc_id is the row
    number, which is TruthfulQA's question order (that of ../shared/data's validation.jsonl).
  * lm-eval `--log_samples` files of generate_until tasks (`lmeval_import`).
Confidence measures need the model that wrote the answers: they are NaN, and said once.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from quantconf.errors import QuantconfError
from quantconf.io import ensure_writable_dir, locked, package_versions, remove_if_holds_nothing, sha256_file
from quantconf.importers.lm_eval_files import import_lm_eval
from quantconf.kinds.generation import GENERATION
from quantconf.predictions import read_manifest, record_tasks, task_file_name, write_predictions
from quantconf.tasks import load_task

SEED_COLUMNS = ["Type", "Category", "Question", "Best Answer", "Correct Answers", "Incorrect Answers", "Source",
                "model_prediction"]
JUDGE_SUFFIX = " GPT-info"
CONFIDENCE_NOTE = "confidence measures need the model that wrote these answers: NaN in imported files"


def split_answers(text) -> list[str]:
    """TruthfulQA's answer lists: ';'-separated, each stripped, empty ones dropped."""
    return [a.strip() for a in str(text).split(";") if a.strip()]


def read_seed_csv(path: Path) -> tuple[pd.DataFrame, str]:
    """The seed CSV checked: (its rows, the model name of its judge columns)."""
    try:
        df = pd.read_csv(path, keep_default_na=False, dtype=str)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        raise QuantconfError(f"{path}: not a readable CSV ({type(e).__name__}: {str(e).splitlines()[0][:120]})") from None
    missing = [c for c in SEED_COLUMNS if c not in df.columns]
    judges = [c for c in df.columns if c.endswith(JUDGE_SUFFIX)]
    if missing or len(judges) != 1 or f"{judges[0]} acc" not in df.columns:
        raise QuantconfError(f"{path}: not a seed TruthfulQA predictions CSV (missing {missing or []}; needs one "
                             f"'<model>{JUDGE_SUFFIX}' and '<model>{JUDGE_SUFFIX} acc' column pair, found "
                             f"{judges or 'none'})")
    if df.empty:
        raise QuantconfError(f"{path}: no rows")
    judge = judges[0]
    first_row: dict = {}
    for i, (score, label) in enumerate(zip(df[judge], df[f"{judge} acc"])):
        where = f"{path}:{i + 2}"  # the header is line 1
        try:
            finite = np.isfinite(float(score))
        except ValueError:
            raise QuantconfError(f"{where}: judge score {score!r} is not a number") from None
        if not finite:
            raise QuantconfError(f"{where}: judge score {score!r} is not a finite number")
        question = df["Question"].iloc[i].strip()
        if question in first_row:  # doc_id is the row's place in TruthfulQA's order: a repeat shifts every later row
            raise QuantconfError(f"{where}: repeats the question of line {first_row[question]} ({question[:60]!r}); "
                                 "each TruthfulQA question once, in TruthfulQA's order")
        first_row[question] = i + 2
        if label.strip() not in ("0", "1", "0.0", "1.0"):
            raise QuantconfError(f"{where}: judge label {label!r} is not 0 or 1")
        if not df["Question"].iloc[i].strip() or not split_answers(df["Correct Answers"].iloc[i]) \
                or not split_answers(df["Incorrect Answers"].iloc[i]):
            raise QuantconfError(f"{where}: a question needs its text and both answer lists")
    return df, judge.removesuffix(JUDGE_SUFFIX)


def seed_generations(path: Path) -> tuple[pd.DataFrame, dict]:
    """The generation predictions of one seed CSV, graded by lm-eval's truthfulqa_gen."""
    df, model = read_seed_csv(path)
    docs = [{"type": r["Type"], "category": r["Category"], "question": r["Question"],
             "best_answer": r["Best Answer"], "correct_answers": split_answers(r["Correct Answers"]),
             "incorrect_answers": split_answers(r["Incorrect Answers"]), "source": r["Source"]}
            for _, r in df.iterrows()]
    with tempfile.TemporaryDirectory() as tmp:  # lm-eval's offline layout for truthfulqa_gen
        data = Path(tmp) / "truthfulqa" / "truthful_qa" / "generation"
        data.mkdir(parents=True)
        (data / "validation.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
        loaded = load_task("truthfulqa_gen", data_dir=tmp)
    if len(loaded.questions) != len(df):
        raise QuantconfError(f"{path}: lm-eval built {len(loaded.questions)} prompts from {len(df)} rows")
    texts = list(df["model_prediction"])
    graded = loaded.grade(loaded.questions, texts)
    primary = loaded.task.primary_metric
    judge = f"{model}{JUDGE_SUFFIX}"
    nan = float("nan")
    rows = []
    for p, text, metrics, score, label in zip(loaded.questions, texts, graded, df[judge], df[f"{judge} acc"]):
        rows.append({"doc_id": p.doc_id, "task": "truthfulqa_gen", "context": p.context, "question": p.question,
                     "reference": p.reference, "generation": text, "token_ids": [], "token_logprobs": [],
                     "token_entropies": [], "primary_metric": primary, "correct": float(metrics[primary]),
                     **{k: float(v) for k, v in metrics.items()},
                     "judge_score": float(score), "judge_acc": float(label),
                     "sequence_logprob": nan, "mean_logprob": nan, "min_token_prob": nan, "mean_entropy": nan,
                     "p_true": nan})
    frame = GENERATION.frame(rows)
    GENERATION.check(frame, str(path), "fix the file")
    entry = {"file": task_file_name("truthfulqa_gen"), "kind": GENERATION.name, "n": len(frame), "source": str(path),
             "source_sha256": sha256_file(path), "model": model, "imported_from": "seed TruthfulQA predictions CSV",
             "output_type": "generate_until", "primary_metric": primary, "version": loaded.task.version,
             "note": CONFIDENCE_NOTE}
    return frame, entry


def import_generations(path: str | Path, out: str | Path, overwrite: bool = False, log=print) -> dict[str, int]:
    """Import one file of generations into the prediction dir `out` (module docstring); {task: rows}."""
    path, out = Path(path), Path(out)
    if path.is_dir() and path.suffix.lower() == ".csv":
        raise QuantconfError(f"{path} is a directory, not a CSV file; pass the seed TruthfulQA predictions CSV itself")
    if path.is_dir() and not any(path.rglob("samples_*.jsonl")):
        raise QuantconfError(f"{path} is a directory holding no lm-eval samples_<task>_<date>.jsonl file; pass a "
                             "seed TruthfulQA predictions CSV, an lm-eval samples file, or lm-eval's --output_path "
                             "directory")
    if not path.exists():
        raise QuantconfError(f"{path} not found; pass a seed TruthfulQA predictions CSV, an lm-eval "
                             "samples_<task>_<date>.jsonl file or lm-eval's --output_path directory")
    if path.is_dir() or path.suffix.lower() != ".csv":  # lm-eval's output: its samples files
        done = import_lm_eval([path], out, overwrite=overwrite)
        log(f"imported {', '.join(f'{t} ({n} rows)' for t, n in done.items())} into {out}; {CONFIDENCE_NOTE}")
        return done
    if out.is_dir() and any(not e.name.startswith(".") for e in out.iterdir()) and not overwrite:
        raise QuantconfError(f"out {out} already exists; pass --overwrite or choose another out dir", param="out")
    if read_manifest(out).get("model_fingerprint"):
        raise QuantconfError(f"out {out} holds quantconf eval predictions; choose another out dir", param="out")
    frame, entry = seed_generations(path)  # read and graded before anything is written
    created = not out.exists()
    out = ensure_writable_dir(out)
    try:
        with locked(out / f".{entry['file']}.lock", what=f"truthfulqa_gen in {out}"):
            write_predictions(frame, out / entry["file"])
        record_tasks(out, {"truthfulqa_gen": entry},
                     lambda manifest: {"imported_from": entry["imported_from"], "packages": package_versions()})
    except BaseException:
        if created:
            remove_if_holds_nothing(out)
        raise
    log(f"imported truthfulqa_gen ({len(frame)} rows, model {entry['model']}, judge accuracy "
        f"{frame['judge_acc'].mean():.3f}, bleu_acc {frame['bleu_acc'].mean():.3f}) into {out}; {CONFIDENCE_NOTE}")
    return {"truthfulqa_gen": len(frame)}

