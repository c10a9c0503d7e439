"""import-generations: the seed study's TruthfulQA prediction CSVs (rows the seed wrote:
tests/data/seed_truthfulqa) and lm-eval generate_until --log_samples files written by lm-eval itself
(its HF backend on the tiny model), against lm-eval's own grading and quantconf's own generations."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import quantconf as qc
from conftest import evaluate_into, folder_task_manager
from quantconf.errors import QuantconfError

SEED = Path(__file__).parent / "data" / "seed_truthfulqa"
FULL_CSV, GPTQ_CSV = SEED / "answ_mistral_7b_pred.head.csv", SEED / "answ_mistral_7b_gptq_pred.head.csv"


def test_seed_csvs_import_graded_by_lm_evals_truthfulqa_gen(tmp_path):
    from lm_eval.tasks.truthfulqa.utils import preprocess_function, process_results_gen

    assert qc.import_generations(FULL_CSV, tmp_path / "full") == {"truthfulqa_gen": 6}
    df = qc.read_predictions(tmp_path / "full" / "truthfulqa_gen.parquet")
    raw = pd.read_csv(FULL_CSV, keep_default_na=False, dtype=str)
    assert list(df["generation"]) == list(raw["model_prediction"])
    assert list(df["judge_acc"]) == [float(v) for v in raw["mistral GPT-info acc"]]
    assert list(df["judge_score"]) == pytest.approx([float(v) for v in raw["mistral GPT-info"]])
    for (_, r), (_, row) in zip(raw.iterrows(), df.iterrows()):  # lm-eval's own functions, called directly
        doc = preprocess_function({"question": r["Question"],
                                   "correct_answers": [a.strip() for a in r["Correct Answers"].split(";")],
                                   "incorrect_answers": [a.strip() for a in r["Incorrect Answers"].split(";")]})
        expected = process_results_gen(doc, [r["model_prediction"]])
        for metric in ("bleu_max", "bleu_acc", "rouge1_acc", "rougeL_diff"):
            assert row[metric] == pytest.approx(expected[metric]), metric
        assert row["correct"] == expected["bleu_acc"] and row["context"].endswith("Q: " + r["Question"])
    assert df["p_true"].isna().all()  # no model, no confidence: not invented
    manifest = json.loads((tmp_path / "full" / "manifest.json").read_text())["tasks"]["truthfulqa_gen"]
    assert manifest["model"] == "mistral" and "need the model" in manifest["note"]


def test_seed_full_vs_gptq_question_by_question(tmp_path):
    qc.import_generations(FULL_CSV, tmp_path / "full")
    qc.import_generations(GPTQ_CSV, tmp_path / "gptq")
    c = qc.compare(tmp_path / "full", tmp_path / "gptq", correctness="judge_acc", n_boot=0)["truthfulqa_gen"]
    full = pd.read_csv(FULL_CSV, dtype=str)["mistral GPT-info acc"].astype(int)
    gptq = pd.read_csv(GPTQ_CSV, dtype=str)["mistral-quantized-gptq GPT-info acc"].astype(int)
    assert (c["full_acc"], c["quant_acc"]) == (full.mean(), gptq.mean())
    assert c["flips_correct_to_wrong"] == int(((full == 1) & (gptq == 0)).sum()) == 1
    assert c["flips_wrong_to_correct"] == int(((full == 0) & (gptq == 1)).sum()) == 1
    assert c["answer_changed"] == pytest.approx(2 / 6)  # rows 3 and 6 differ


def test_bad_seed_files_are_refused_with_the_line(tmp_path):
    text = FULL_CSV.read_text()
    broken = tmp_path / "broken.csv"
    broken.write_text(text.replace("wonder/will-a-watermelon-grow-in-your-belly-if-you-swallow-a-seed,0.8534350227426085,1,",
                                   "wonder/will-a-watermelon-grow-in-your-belly-if-you-swallow-a-seed,0.85,yes,"))
    with pytest.raises(QuantconfError, match=r"broken.csv:2: judge label 'yes'"):
        qc.import_generations(broken, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    for score in ("nan", "inf", "NaN"):  # a judge score that is no finite number: refused, not averaged
        broken.write_text(text.replace("swallow-a-seed,0.8534350227426085,1,", f"swallow-a-seed,{score},1,"))
        with pytest.raises(QuantconfError, match=rf"broken.csv:2: judge score '{score}' is not a finite number"):
            qc.import_generations(broken, tmp_path / "out")
    # a repeated question row would become a new doc_id and shift every later row off TruthfulQA's order
    import csv
    import io

    rows = list(csv.reader(io.StringIO(text)))
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([rows[0], rows[1], rows[2], rows[1], *rows[3:]])
    broken.write_text(buf.getvalue())
    with pytest.raises(QuantconfError, match=r"broken.csv:4: repeats the question of line 2"):
        qc.import_generations(broken, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    other = tmp_path / "other.csv"
    other.write_text("Question,answer\nq,a\n")
    with pytest.raises(QuantconfError, match="not a seed TruthfulQA predictions CSV"):
        qc.import_generations(other, tmp_path / "out")
    qc.import_generations(FULL_CSV, tmp_path / "out")
    with pytest.raises(QuantconfError, match="--overwrite"):
        qc.import_generations(FULL_CSV, tmp_path / "out")


@pytest.mark.integration
def test_lm_evals_own_generate_until_samples_import_and_equal_our_generations(tiny_model_dir, tmp_path):
    """lm-eval's HF backend generates on the tiny model and logs its samples; imported, they are the
    strings quantconf's own decoder writes for the same prompts, graded the same."""
    from test_generation_tasks import tiny_gen_yaml

    folder = tiny_gen_yaml(tmp_path)
    run = subprocess.run([sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
                          f"pretrained={tiny_model_dir}", "--tasks", "tiny_gen", "--include_path", str(folder),
                          "--log_samples", "--output_path", str(tmp_path / "lm"), "--device", "cpu",
                          "--batch_size", "2"], capture_output=True, text=True, timeout=600,
                         env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    samples = next((tmp_path / "lm").rglob("samples_tiny_gen_*.jsonl"))
    assert qc.import_generations(samples, tmp_path / "imported") == {"tiny_gen": 5}
    theirs = qc.read_predictions(tmp_path / "imported" / "tiny_gen.parquet")
    evaluate_into(str(tiny_model_dir), ["tiny_gen"], tmp_path / "ours", include_path=str(folder))
    ours = qc.read_predictions(tmp_path / "ours" / "tiny_gen.parquet")
    assert list(theirs["generation"]) == list(ours["generation"])
    assert list(theirs["exact_match"]) == list(ours["exact_match"])
    assert list(theirs["exact_match,raw"]) == list(ours["exact_match,raw"])
    assert list(theirs["context"]) == list(ours["context"])
    c = qc.compare(tmp_path / "ours", tmp_path / "imported", n_boot=0)["tiny_gen"]
    assert c["answer_changed"] == 0.0 and c["n"] == 5


def _lm_eval_generation_samples(tmp_path) -> Path:
    """lm-eval 0.4.13 itself (simple_evaluate + its EvaluationTracker) logs tiny_gen's samples of fixed answers."""
    import copy

    import lm_eval
    from lm_eval.loggers import EvaluationTracker
    from test_generation_tasks import ReplayLM, tiny_gen_yaml

    folder = tiny_gen_yaml(tmp_path)
    loaded = qc.load_task("tiny_gen", include_path=str(folder))
    answers = dict(zip((q.context for q in loaded.questions), [" 1", " 2", "x", " 4 apples", "5"]))
    tracker = EvaluationTracker(output_path=str(tmp_path / "lm"))
    res = lm_eval.simple_evaluate(model=ReplayLM(answers), tasks=["tiny_gen"], log_samples=True,
                                  task_manager=folder_task_manager(folder), evaluation_tracker=tracker)
    tracker.save_results_aggregated(results=res, samples=copy.deepcopy(res["samples"]))
    tracker.save_results_samples(task_name="tiny_gen", samples=copy.deepcopy(res["samples"]["tiny_gen"]))
    return next((tmp_path / "lm").rglob("samples_tiny_gen_*.jsonl"))


def test_import_generations_of_an_output_dir_and_the_older_list_layout(tmp_path):
    """lm-eval's --output_path directory imports (it was "not found"); a directory named *.csv is said to be one;
    a generate_until sample in the older list layout (arguments [[context, {kwargs}]], lm-eval < 0.4.3: its
    evaluator logged `req.args`) imports as the same rows (it was refused as a choice file). The older file is
    lm-eval 0.4.13's own file with only `arguments` rewritten to that layout."""
    samples = _lm_eval_generation_samples(tmp_path)
    assert qc.import_generations(samples, tmp_path / "file") == {"tiny_gen": 5}
    assert qc.import_generations(tmp_path / "lm", tmp_path / "dir") == {"tiny_gen": 5}
    from_file = qc.read_predictions(tmp_path / "file" / "tiny_gen.parquet")
    pd.testing.assert_frame_equal(from_file, qc.read_predictions(tmp_path / "dir" / "tiny_gen.parquet"))
    assert list(from_file["generation"]) == [" 1", " 2", "x", " 4 apples", "5"]
    assert list(from_file["exact_match"]) == [1.0, 1.0, 0.0, 1.0, 1.0]
    older = tmp_path / "old" / "samples_tiny_gen_2024-01-01T00-00-00.000000.jsonl"
    older.parent.mkdir()
    lines = [json.loads(line) for line in samples.read_text().splitlines() if line.strip()]
    for row in lines:
        row["arguments"] = [[a["arg_0"], a["arg_1"]] for a in row["arguments"].values()]
    older.write_text("".join(json.dumps(row) + "\n" for row in lines))
    assert qc.import_generations(older, tmp_path / "older") == {"tiny_gen": 5}
    pd.testing.assert_frame_equal(from_file, qc.read_predictions(tmp_path / "older" / "tiny_gen.parquet"))
    (tmp_path / "answers.csv").mkdir()
    with pytest.raises(QuantconfError, match=r"answers.csv is a directory, not a CSV file"):
        qc.import_generations(tmp_path / "answers.csv", tmp_path / "x")
    with pytest.raises(QuantconfError, match=r"is a directory holding no lm-eval samples_<task>_<date>.jsonl"):
        qc.import_generations(_empty(tmp_path / "empty"), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def _empty(path: Path) -> Path:
    path.mkdir()
    return path
