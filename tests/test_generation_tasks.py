"""Generation tasks end to end on the tiny model: arithmetic_gen, an lm-eval generate_until task from a
user's YAML (its filters and process_results), evaluate -> parquet -> metrics / compare; grading equal
to lm-eval's own evaluator (a fake LM that returns our generations, --log_samples); truthfulqa_gen
offline (integration)."""

import json
import math

import numpy as np
import pandas as pd
import pytest

import quantconf as qc
from conftest import evaluate_into, write_jsonl, folder_task_manager
from quantconf.kinds import kind_of_task
from quantconf.errors import QuantconfError
from quantconf.tasks import load_task


def test_arithmetic_gen_is_offline_seeded_and_graded_by_exact_digits():
    a, b = load_task("arithmetic_gen", seed=7, limit=30), load_task("arithmetic_gen", seed=7, limit=30)
    assert a.source_sha256 == b.source_sha256 and kind_of_task(a.task).name == "generation"
    assert load_task("arithmetic_gen", seed=8, limit=30).source_sha256 != a.source_sha256
    p = a.questions[0]
    assert p.context.endswith(f"Question: {p.question}\nAnswer:") and p.until == ("\n",)
    left, op, right = p.question.removeprefix("What is ").removesuffix("?").split()
    assert p.reference == str(eval(f"{left} {op} {right}"))  # noqa: S307 - digits and one operator
    graded = a.grade([p, p, p], [f" {p.reference}", f"{p.reference}0", f" {p.reference} "])
    assert [g["exact_match"] for g in graded] == [1.0, 0.0, 1.0]


def test_generation_eval_writes_what_it_generated_and_reuses_it(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    logs = []
    evaluate_into(str(tiny_model_dir), ["arithmetic_gen"], out, logs.append, limit=6, max_gen_toks=5)
    df = qc.read_predictions(out / "arithmetic_gen.parquet")
    assert len(df) == 6 and set(df["primary_metric"]) == {"exact_match"}
    for _, row in df.iterrows():
        assert len(row["token_ids"]) == len(row["token_logprobs"]) <= 5
        if row["token_logprobs"]:
            assert row["sequence_logprob"] == pytest.approx(sum(row["token_logprobs"]))
            assert row["min_token_prob"] == pytest.approx(math.exp(min(row["token_logprobs"])))
        assert row["correct"] == row["exact_match"] == float(row["generation"].strip() == str(row["reference"]))
        assert 0 <= row["p_true"] <= 1
    manifest = json.loads((out / "manifest.json").read_text())["tasks"]["arithmetic_gen"]
    assert manifest["output_type"] == "generate_until" and manifest["primary_metric"] == "exact_match"
    logs.clear()
    evaluate_into(str(tiny_model_dir), ["arithmetic_gen"], out, logs.append, limit=6, max_gen_toks=5)
    assert any("reusing" in m for m in logs)
    logs.clear()  # another token budget is another result
    evaluate_into(str(tiny_model_dir), ["arithmetic_gen"], out, logs.append, limit=6, max_gen_toks=3)
    assert not any("reusing" in m for m in logs)
    assert max(map(len, qc.read_predictions(out / "arithmetic_gen.parquet")["token_ids"])) <= 3


def test_generation_shards_merge_into_the_unsharded_rows_bit_for_bit(tiny_model_dir, tmp_path):
    """A shard runs every n-th batch of the unsharded plan and P(True) is computed per batch, so the merged
    shards equal the unsharded run exactly (every-n-th-prompt shards differed by 2.2e-5: other padding). Three
    shards of 4 batches: the third runs one batch; five shards: the fifth runs none."""
    evaluate_into(str(tiny_model_dir), ["arithmetic_gen"], tmp_path / "a", limit=7, max_gen_toks=4, batch_size=2)
    a = qc.read_predictions(tmp_path / "a" / "arithmetic_gen.parquet")
    for n in (3, 5):
        for i in range(n):
            evaluate_into(str(tiny_model_dir), ["arithmetic_gen"], tmp_path / f"b{n}", limit=7, max_gen_toks=4,
                          batch_size=2, shard=(i, n))
        b = qc.read_predictions(tmp_path / f"b{n}" / "arithmetic_gen.parquet")
        assert list(b["doc_id"]) == list(range(7))
        pd.testing.assert_frame_equal(a, b, check_exact=True)
        manifests = [json.loads((tmp_path / d / "manifest.json").read_text())["tasks"]["arithmetic_gen"]
                     for d in ("a", f"b{n}")]
        assert manifests[0]["key"] == manifests[1]["key"]  # the same reuse key: one may stand for the other


def test_metrics_and_compare_of_generation_dirs_through_the_cli(tiny_model_dir, tmp_path, capsys):
    from quantconf.cli import main

    evaluate_into(str(tiny_model_dir), ["arithmetic_gen"], tmp_path / "full", limit=12, max_gen_toks=4)
    evaluate_into(str(tiny_model_dir), ["arithmetic_gen"], tmp_path / "other", limit=12, max_gen_toks=2)
    assert main(["metrics", str(tmp_path / "full"), "--json", "--bootstrap", "20"]) == 0
    m = json.loads(capsys.readouterr().out)["arithmetic_gen"]
    assert m["kind"] == "generation" and m["correctness"] == "exact_match" and set(m["measures"]) >= {"p_true"}
    assert main(["compare", str(tmp_path / "full"), str(tmp_path / "other"), "--json", "--bootstrap", "20"]) == 0
    c = json.loads(capsys.readouterr().out)["arithmetic_gen"]
    for key in ("n", "full_acc", "quant_acc", "delta_acc", "answer_changed", "flips_correct_to_wrong",
                "flips_wrong_to_correct", "p_mcnemar"):
        assert key in c
    assert c["n"] == 12
    assert main(["compare", str(tmp_path / "full"), str(tmp_path / "other"), "--bootstrap", "0"]) == 0
    assert "answers changed" in capsys.readouterr().out
    assert main(["metrics", str(tmp_path / "full"), "--correctness", "bleu_acc"]) != 0
    assert "--correctness 'bleu_acc' is not a column of task arithmetic_gen's predictions" in capsys.readouterr().err


def tiny_gen_yaml(tmp_path):
    data = write_jsonl(tmp_path / "data" / "test.jsonl", [{"q": f"{i} plus 1", "a": str(i + 1)} for i in range(5)])
    folder = tmp_path / "yaml"
    folder.mkdir()
    (folder / "tiny_gen.yaml").write_text(f"""task: tiny_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "Q: {{{{q}}}}\\nA:"
doc_to_target: "{{{{a}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 6
  do_sample: false
filter_list:
  - name: strict
    filter:
      - function: regex
        regex_pattern: "(\\\\d+)"
      - function: take_first
  - name: raw
    filter:
      - function: take_first
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
""")
    return folder


class ReplayLM:
    """An lm-eval LM whose generate_until answers from a table (our generations), so lm-eval's own
    evaluator grades exactly the strings quantconf graded."""

    def __new__(cls, answers):
        from lm_eval.api.model import LM

        class Replay(LM):
            def generate_until(self, requests, disable_tqdm=False):
                return [answers[r.args[0]] for r in requests]

            def loglikelihood(self, requests, disable_tqdm=False):
                raise NotImplementedError

            def loglikelihood_rolling(self, requests, disable_tqdm=False):
                raise NotImplementedError

        return Replay()


def lm_eval_samples(task: str, answers: dict, include_path=None, data_dir=None, limit=None) -> dict[str, list]:
    """lm-eval's per-sample records ({filter: records in doc order}) of `answers` ({context: text})."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    kwargs = {}
    if data_dir is not None:  # point truthfulqa_gen at the offline file, as quantconf does
        from quantconf.tasks import lm_eval_bridge

        tm = TaskManager()
        cfg = lm_eval_bridge.raw_config(tm, task, {"task": task})
        over = lm_eval_bridge._split_files(cfg, task, data_dir, 0, None)
        kwargs["tasks"] = [{**cfg, **over}]
    out = lm_eval.simple_evaluate(model=ReplayLM(answers), tasks=kwargs.get("tasks", [task]), limit=limit,
                                  task_manager=TaskManager(include_path=str(include_path) if include_path else None),
                                  log_samples=True)
    by_filter: dict[str, list] = {}
    for sample in sorted(out["samples"][task], key=lambda s: s["doc_id"]):
        by_filter.setdefault(sample["filter"], []).append(sample)
    return by_filter


def test_an_lm_eval_generate_until_task_is_graded_as_lm_eval_grades_it(tmp_path):
    folder = tiny_gen_yaml(tmp_path)
    loaded = load_task("tiny_gen", include_path=str(folder))
    assert kind_of_task(loaded.task).name == "generation" and loaded.task.primary_metric == "exact_match"
    p = loaded.questions[0]
    assert (p.context, p.until, p.max_gen_toks, p.reference) == ("Q: 0 plus 1\nA:", ("\n",), 6, "1")
    texts = [" 1", " it is 2", "3", " 4 apples", "no idea"]
    ours = loaded.grade(loaded.questions, texts)
    samples = lm_eval_samples("tiny_gen", {q.context: t for q, t in zip(loaded.questions, texts)}, folder)
    assert set(samples) == {"strict", "raw"}
    # the first filter's metrics keep lm-eval's names; a later filter's are named metric,filter
    assert [r["exact_match"] for r in ours] == [s["exact_match"] for s in samples["strict"]] == [1, 1, 1, 1, 0]
    assert [r["exact_match,raw"] for r in ours] == [s["exact_match"] for s in samples["raw"]] == [0, 0, 1, 0, 0]


def test_a_user_yaml_task_reads_its_own_files_beside_data_dir_and_names_a_broken_one(tmp_path):
    """With --data-dir (for the built-ins beside it) quantconf looked for DIR/json/test.jsonl; a data file cut
    mid-line or empty was "lm-eval could not load its documents ... check doc_to_text"."""
    folder = tiny_gen_yaml(tmp_path)
    data = tmp_path / "data" / "test.jsonl"
    (tmp_path / "hub_files").mkdir()  # what --data-dir points at for the built-ins
    loaded = load_task("tiny_gen", include_path=str(folder), data_dir=tmp_path / "hub_files")
    assert len(loaded.questions) == 5 and loaded.source == f"lm_eval:{data}"
    good = data.read_text()
    data.write_text(good[:-12])  # cut mid-line
    with pytest.raises(QuantconfError, match=rf"{data}:5: malformed JSON"):
        load_task("tiny_gen", include_path=str(folder))
    data.write_text("")
    with pytest.raises(QuantconfError, match=rf"task tiny_gen: its data file {data} is empty"):
        load_task("tiny_gen", include_path=str(folder), data_dir=tmp_path)
    data.unlink()
    with pytest.raises(QuantconfError, match=rf"task tiny_gen: its data file {data} not found"):
        load_task("tiny_gen", include_path=str(folder))


def test_sampling_tasks_are_refused(tmp_path):
    folder = tiny_gen_yaml(tmp_path)
    text = (folder / "tiny_gen.yaml").read_text().replace("do_sample: false", "do_sample: true")
    (folder / "tiny_gen.yaml").write_text(text)
    with pytest.raises(QuantconfError, match="greedily"):
        load_task("tiny_gen", include_path=str(folder))


def test_corpus_level_metrics_are_refused_before_generating_or_left_out(tmp_path, tiny_model_dir):
    """A generate_until task whose only metric is lm-eval's corpus BLEU was a TypeError after every prompt was
    generated: refused when the task is named; beside a per-sample metric it is left out of the rows."""
    folder = tiny_gen_yaml(tmp_path)
    text = (folder / "tiny_gen.yaml").read_text()
    corpus_only = text.replace("  - metric: exact_match\n    aggregation: mean\n", "  - metric: bleu\n")
    (folder / "tiny_gen.yaml").write_text(corpus_only)
    with pytest.raises(QuantconfError, match=r"task tiny_gen's metrics \['bleu'\] are corpus-level .*exact_match"):
        load_task("tiny_gen", include_path=str(folder))
    from quantconf.cli import main

    out = tmp_path / "out"
    assert main(["eval", str(tiny_model_dir), "--tasks", "tiny_gen", "--include-path", str(folder),
                 "--out", str(out), "--quiet"]) == 2
    assert not out.exists()  # refused before the model was loaded or anything written
    both = text.replace("metric_list:\n", "metric_list:\n  - metric: bleu\n")
    (folder / "tiny_gen.yaml").write_text(both)
    loaded = load_task("tiny_gen", include_path=str(folder))
    assert loaded.task.primary_metric == "exact_match"
    rows = loaded.grade(loaded.questions, [" 1", "2", "x", "4", "6"])
    assert [sorted(r) for r in rows] == [["exact_match", "exact_match,raw"]] * 5


@pytest.mark.integration
def test_truthfulqa_gen_offline_is_graded_as_lm_eval_grades_it(shared_data):
    loaded = load_task("truthfulqa_gen", data_dir=shared_data, limit=8)
    assert loaded.task.primary_metric == "bleu_acc" and len(loaded.questions) == 8
    p = loaded.questions[0]
    assert p.context.endswith("Q: " + p.question) and p.until == ("\n\n",)
    texts = ["\nA: " + q.reference for q in loaded.questions[:4]] + ["\nA: I have no comment."] * 2 + \
        ["\nA: Nothing happens.", ""]
    ours = loaded.grade(loaded.questions, texts)
    samples = lm_eval_samples("truthfulqa_gen", {q.context: t for q, t in zip(loaded.questions, texts)},
                              data_dir=shared_data, limit=8)
    assert len(samples["none"]) == 8
    for row, sample in zip(ours, samples["none"]):
        for metric in ("bleu_max", "bleu_acc", "rouge1_acc", "rougeL_max", "rougeL_diff"):
            assert row[metric] == pytest.approx(sample[metric], abs=1e-9), metric


def test_a_study_mixing_choice_and_generation_tasks_runs_resumes_and_reports(tiny_model_dir, tmp_path):
    from quantconf.study import load_study, run_study

    study = load_study(data={"models": [str(tiny_model_dir)], "tasks": ["arithmetic", "arithmetic_gen"], "limit": 10,
                             "bootstrap": 20, "max_gen_toks": 3,
                             "variants": [{"method": "rtn", "bits": 2, "group_size": 32}]})
    out = tmp_path / "s"
    report = run_study(study, out, log=lambda m: None)
    summary = json.loads((out / "summary.json").read_text())
    gen = [c for c in summary["comparisons"] if c["task"] == "arithmetic_gen"]
    assert len(gen) == 1 and gen[0]["kind"] == "generation" and gen[0]["n"] == 10
    assert [c for c in summary["comparisons"] if c["task"] == "arithmetic"][0].get("kind") != "generation"
    questions = pd.read_csv(out / "questions.csv")
    rows = questions[questions["task"] == "arithmetic_gen"]
    assert len(rows) == 10
    assert (rows["flip"] == "correct_to_wrong").sum() == gen[0]["flips_correct_to_wrong"]
    assert (rows["flip"] == "wrong_to_correct").sum() == gen[0]["flips_wrong_to_correct"]
    html = report.read_text()
    assert "arithmetic_gen (generation, correct = exact_match)" in html
    log = []
    run_study(study, out, log=log.append)  # resumed: every step reused
    assert sum("arithmetic_gen: reusing" in m for m in log) == 2  # full and quantized
    assert not any("exact_match=" in m or " acc=" in m for m in log), log  # nothing evaluated again


@pytest.mark.integration
def test_default_model_writes_what_lm_evals_hf_backend_writes_on_truthfulqa_gen(shared_data, tmp_path):
    """Agreement on the embedded default model: lm-eval's HF backend (model.generate with its stop
    criteria) and quantconf's decoder give identical strings and metrics (benchmarks/vs_lm_eval.py
    --generate measures more questions)."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from pathlib import Path

    from quantconf.evaluation import evaluate_task
    from quantconf.models.loading import load_model

    lm = load_model("default")
    root = Path(lm_eval.__file__).parent / "tasks"
    (tmp_path / "qc_truthfulqa_gen.yaml").write_text(json.dumps({
        "include": str(root / "truthfulqa/truthfulqa_gen.yaml"), "task": "qc_truthfulqa_gen", "tag": [],
        "dataset_path": "json", "dataset_name": None, "validation_split": "validation",
        "dataset_kwargs": {"data_files": {"validation": str(shared_data / "truthfulqa/truthful_qa/generation/validation.jsonl")}}}))
    res = lm_eval.simple_evaluate(model=HFLM(pretrained=lm.model, tokenizer=lm.tokenizer, batch_size=4, device="cpu"),
                                  tasks=["qc_truthfulqa_gen"], limit=4, log_samples=True, bootstrap_iters=0,
                                  task_manager=folder_task_manager(tmp_path))
    theirs = sorted(res["samples"]["qc_truthfulqa_gen"], key=lambda x: x["doc_id"])
    ours = evaluate_task(lm, load_task("truthfulqa_gen", data_dir=shared_data, limit=4), batch_size=4)
    assert [x["resps"][0][0] for x in theirs] == list(ours["generation"])
    for metric in ("bleu_max", "bleu_acc", "rouge1_acc", "rougeL_max"):
        assert [x[metric] for x in theirs] == pytest.approx(list(ours[metric]))


def test_replicated_generation_study_has_a_noise_floor(tiny_model_dir, tmp_path):
    from quantconf.study import load_study, run_study

    study = load_study(data={
        "models": [str(tiny_model_dir)], "tasks": ["arithmetic_gen"], "limit": 12, "bootstrap": 20, "threads": 1,
        "max_gen_toks": 3, "variants": [{"method": "gptq", "bits": 2, "group_size": 32, "n_samples": 2, "seq_len": 32,
                                         "calib": "pydoc", "replicates": 3}]})
    out = tmp_path / "s"
    report = run_study(study, out, log=lambda m: None)
    summary = json.loads((out / "summary.json").read_text())
    (floor,) = summary["noise_floor"]
    assert floor["kind"] == "generation" and floor["replicates"] == 3 and floor["n"] == 12
    assert set(floor["delta_acc"]) >= {"estimate", "ci", "p", "p_holm"} and "systematic_share" in floor
    assert "on arithmetic_gen" in floor["verdict"]
    per_rep = [c["delta_acc"] for c in summary["comparisons"]]
    assert floor["delta_acc"]["estimate"] == pytest.approx(np.mean(per_rep))
    assert "Is it quantization or noise?" in report.read_text()
