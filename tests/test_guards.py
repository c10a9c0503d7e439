"""Issue 27: quantconf deletes only what it can prove it wrote, and refuses bad data at the door.
The two data-loss cases (`quantize --out . --overwrite`, `--overwrite` of a foreign directory) come
first; each test fails on the code before the guard."""

from __future__ import annotations

import json

import numpy as np
import pytest

from quantconf.cli import main
from conftest import evaluate_into, write_jsonl


def _one_line_error(capsys, args) -> str:
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    # progress bars (carriage-return lines) that libraries write to sys.stderr: pytest replaces sys.stderr,
    # so they land here; on a terminal they go to file descriptor 2, which quantconf captures
    err = "".join(line + "\n" for line in err.split("\n")[:-1] if "\r" not in line)
    assert err.count("\n") == 1, err
    return err


def test_quantize_out_dot_overwrite_never_empties_the_working_directory(tiny_model_dir, tmp_path, capsys,
                                                                        monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "thesis.tex").write_text("years of work")
    (work / "sub").mkdir()
    (work / "sub" / "data.csv").write_text("1,2")
    monkeypatch.chdir(work)
    for out in (".", str(work), str(tmp_path)):  # the working directory, by name, and a parent of it
        err = _one_line_error(capsys, ["quantize", str(tiny_model_dir), "--method", "rtn", "--group-size", "32",
                                       "--out", out, "--overwrite"])
        assert "never deletes it" in err
    assert (work / "thesis.tex").read_text() == "years of work" and (work / "sub" / "data.csv").is_file()


def test_overwrite_refuses_a_directory_quantconf_did_not_write(tiny_model_dir, tmp_path, capsys):
    notes = tmp_path / "mine"
    notes.mkdir()
    (notes / "notes.txt").write_text("keep me")
    err = _one_line_error(capsys, ["quantize", str(tiny_model_dir), "--method", "rtn", "--group-size", "32",
                                   "--out", str(notes), "--overwrite"])
    assert "no quantize.json" in err and (notes / "notes.txt").read_text() == "keep me"


def test_overwrite_replaces_its_own_checkpoint_but_not_one_with_foreign_files(tiny_model_dir, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    args = ["quantize", str(tiny_model_dir), "--method", "rtn", "--group-size", "32", "--out", str(ckpt)]
    assert main(args) == 0
    record = json.loads((ckpt / "quantize.json").read_text())
    assert set(record["files"]) == {p.name for p in ckpt.iterdir()}  # it lists what it wrote
    first = (ckpt / "quantize.json").stat().st_mtime_ns
    assert main(args + ["--overwrite"]) == 0  # its own checkpoint: replaced
    assert (ckpt / "quantize.json").stat().st_mtime_ns != first
    (ckpt / "notes.txt").write_text("a user's file in a checkpoint dir")
    err = _one_line_error(capsys, args + ["--overwrite"])
    assert "notes.txt" in err and (ckpt / "notes.txt").is_file() and (ckpt / "quantize.json").is_file()
    # a hidden file of the user's is foreign too (only our own lock/temp names are not)
    (ckpt / "notes.txt").unlink()
    (ckpt / ".env").write_text("SECRET=1")
    assert ".env" in _one_line_error(capsys, args + ["--overwrite"]) and (ckpt / ".env").is_file()


def test_legacy_checkpoint_without_a_file_list_is_judged_by_file_names(tmp_path):
    from quantconf.errors import QuantconfError
    from quantconf.io import check_ours_to_replace

    old = tmp_path / "old"
    old.mkdir()
    for name in ("quantize.json", "model.safetensors", "config.json", "library.log", "merges.txt", ".x.lock"):
        (old / name).write_text("{}")
    check_ours_to_replace(old, "quantize.json", "checkpoint")  # nothing foreign: may go
    (old / "results.csv").write_text("x")
    with pytest.raises(QuantconfError, match="results.csv"):
        check_ours_to_replace(old, "quantize.json", "checkpoint")


def test_unwritable_parent_is_one_line_before_the_model_loads(tiny_model_dir, tmp_path, capsys):
    """A parent that cannot hold the checkpoint (here a file in the way, which fails as root too; a
    read-only directory fails the same check for other users) is refused before any work."""
    (tmp_path / "afile").write_text("x")
    err = _one_line_error(capsys, ["quantize", str(tiny_model_dir), "--method", "rtn", "--group-size", "32",
                                   "--out", str(tmp_path / "afile" / "ckpt")])
    assert "is a file, not a directory" in err and (tmp_path / "afile").read_text() == "x"


def _samples_file(folder, task, lls_gold):
    rows = [{"doc_id": i, "doc": {"q": i}, "target": gold,
             "arguments": [[f"Q{i}", c] for c in (" a", " b")][:len(lls)],
             "resps": [[[ll, False]] for ll in lls], "filtered_resps": [[ll, False] for ll in lls]}
            for i, (lls, gold) in enumerate(lls_gold)]
    return write_jsonl(folder / f"samples_{task}_2026-01-01T00-00-00.jsonl", rows)


def test_import_into_an_existing_directory_needs_overwrite_and_keeps_other_tasks(tmp_path, capsys):
    a = _samples_file(tmp_path, "taska", [([-1.0, -2.0], 0), ([-3.0, -1.0], 1)])
    b = _samples_file(tmp_path, "taskb", [([-1.0, -2.0], 1)])
    out = tmp_path / "preds"
    assert main(["import-lm-eval", str(a), "--out", str(out)]) == 0
    before = (out / "taska.parquet").read_bytes()
    err = _one_line_error(capsys, ["import-lm-eval", str(b), "--out", str(out)])
    assert "--overwrite" in err and not (out / "taskb.parquet").exists()
    assert (out / "taska.parquet").read_bytes() == before
    assert main(["import-lm-eval", str(b), "--out", str(out), "--overwrite"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["tasks"]) == {"taska", "taskb"} and (out / "taska.parquet").read_bytes() == before


def test_import_never_mixes_into_a_quantconf_eval_directory(tiny_model_dir, tmp_path, capsys):
    preds = tmp_path / "eval"
    evaluate_into(str(tiny_model_dir), ["arithmetic"], preds, limit=4, progress=False, log=lambda m: None)
    manifest = (preds / "manifest.json").read_bytes()
    f = _samples_file(tmp_path, "arithmetic", [([-1.0, -2.0], 0)])
    err = _one_line_error(capsys, ["import-lm-eval", str(f), "--out", str(preds), "--overwrite"])
    assert "quantconf eval" in err and (preds / "manifest.json").read_bytes() == manifest


# --------------------------------------------------------------------------- bad data refused at the door


def _one_line_quantconf_error(fn, *args, **kwargs) -> str:
    from quantconf.errors import QuantconfError

    with pytest.raises(QuantconfError) as e:
        fn(*args, **kwargs)
    assert "\n" not in str(e.value).strip()
    return str(e.value)


def test_yaml_task_with_a_gold_index_out_of_range_is_refused_before_scoring(tiny_model_dir, tmp_path, capfd):
    """(capfd: what libraries print to file descriptor 2 is captured by quantconf, as on a terminal)"""
    # lm-eval itself checks only the first document's target; quantconf checks every one
    data = write_jsonl(tmp_path / "d.jsonl", [{"q": f"question {i}", "t": 7 if i == 2 else 0} for i in range(4)])
    yaml_dir = tmp_path / "yaml"
    yaml_dir.mkdir()
    (yaml_dir / "my_bad.yaml").write_text(json.dumps({
        "task": "my_bad", "dataset_path": "json", "dataset_kwargs": {"data_files": {"validation": str(data)}},
        "validation_split": "validation", "output_type": "multiple_choice", "doc_to_text": "{{q}}",
        "doc_to_choice": ["a", "b", "c"], "doc_to_target": "{{t}}"}))
    out = tmp_path / "preds"
    err = _one_line_error(capfd, ["eval", str(tiny_model_dir), "--tasks", "my_bad", "--include-path", str(yaml_dir),
                                   "--out", str(out)])
    assert "gold label 7 out of range for 3 choices" in err and not out.exists()


def test_compare_and_recalibrate_refuse_an_impossible_gold_in_a_parquet(tmp_path, capsys):
    from quantconf.predictions import write_predictions

    rows = [{"doc_id": i, "task": "t", "context": "", "choices": ["a", "b", "c"], "gold": 7 if i == 2 else 0,
             "loglik": [-1.0, -2.0, -3.0], "n_tokens": [1] * 3, "n_chars": [1] * 3, "n_bytes": [1] * 3,
             "is_greedy": [False] * 3} for i in range(6)]
    import pandas as pd

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        write_predictions(pd.DataFrame(rows), tmp_path / name / "t.parquet")
    for args in (["compare", str(tmp_path / "a"), str(tmp_path / "b")],
                 ["recalibrate", str(tmp_path / "a"), str(tmp_path / "b")], ["metrics", str(tmp_path / "a")]):
        err = _one_line_error(capsys, args)
        assert "doc 2: gold 7 is not an index into its 3 choices" in err and "--overwrite" in err


@pytest.mark.parametrize("change, message", [
    ({"resps": [[[float("nan"), False]], [[-1.0, False]]]}, "not finite"),
    ({"filtered_resps": [["-inf", "False"], ["-1.0", "False"]]}, "not finite"),
    ({"doc_id": "abc"}, "doc_id 'abc' is not an integer"),
    ({"filtered_resps": [["abc", "False"], ["-1.0", "False"]]}, "loglik 'abc' is not a number"),
    ({"filtered_resps": ["x", "y"]}, "cannot parse response"),
    ({"arguments": 5}, "field 'arguments' must be"),
    ({"arguments": ["a", "b"]}, "field 'arguments' must hold"),
    ({"target": [1]}, "target [1] is neither"),
])
def test_import_refuses_bad_samples_naming_file_and_line(tmp_path, capsys, change, message):
    row = {"doc_id": 0, "doc": {}, "target": 0, "arguments": [["Q", " a"], ["Q", " b"]],
           "resps": [[[-1.0, False]], [[-2.0, False]]], "filtered_resps": [[-1.0, False], [-2.0, False]]}
    row.update(change)
    if "resps" in change:
        row.pop("filtered_resps")
    f = write_jsonl(tmp_path / "samples_t_2026-01-01T00-00-00.jsonl", [row])
    err = _one_line_error(capsys, ["import-lm-eval", str(f), "--out", str(tmp_path / "out")])
    assert f"{f}:1" in err and message in err and not (tmp_path / "out").exists()


def test_import_refuses_repeated_doc_ids(tmp_path, capsys):
    row = {"doc_id": 3, "doc": {}, "target": 0, "arguments": [["Q", " a"], ["Q", " b"]],
           "filtered_resps": [[-1.0, False], [-2.0, False]]}
    f = write_jsonl(tmp_path / "samples_t_2026-01-01T00-00-00.jsonl", [row, {**row, "doc": {"x": 1}}, row])
    err = _one_line_error(capsys, ["import-lm-eval", str(f), "--out", str(tmp_path / "out")])
    assert f"{f}:2: doc_id 3 already at line 1" in err
    w = tmp_path / "piqa_write_out_info.json"
    w.write_text(json.dumps([{"doc_id": 1, "logit_0": -1.0, "logit_1": -2.0, "truth": "0"}] * 2))
    assert "already in entry 0" in _one_line_error(capsys, ["import-lm-eval", str(w), "--out", str(tmp_path / "o2")])
    w.write_text(json.dumps([{"doc_id": 1, "logit_0": "nan", "logit_1": -2.0, "truth": "0"}]))
    assert "not finite" in _one_line_error(capsys, ["import-lm-eval", str(w), "--out", str(tmp_path / "o3")])


def test_binary_or_garbage_study_configs_are_one_line(tmp_path, capsys):
    cfg = tmp_path / "study.yaml"
    cfg.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    assert "not UTF-8" in _one_line_error(capsys, ["study", str(cfg), "--out", str(tmp_path / "s")])
    d = tmp_path / "sdir"
    d.mkdir()
    (d / "study.yaml").write_bytes(b"\xff\xfe garbage")
    assert "not UTF-8" in _one_line_error(capsys, ["report", str(d)])
    (d / "study.yaml").write_text("just a string")
    assert "must be a mapping" in _one_line_error(capsys, ["report", str(d)])


def test_limit_true_is_refused_not_read_as_one():
    from quantconf.study import load_study

    err = _one_line_quantconf_error(load_study, data={"models": ["default"], "variants": [{"method": "rtn"}],
                                                      "tasks": ["arithmetic"], "limit": True})
    assert "`limit`" in err and "True" in err


def test_malformed_yaml_in_include_path_is_named(tiny_model_dir, tmp_path, capsys):
    yaml_dir = tmp_path / "yaml"
    yaml_dir.mkdir()
    (yaml_dir / "good.yaml").write_text("task: fine\nclass: !function utils.Thing\n")  # lm-eval's tags parse
    (yaml_dir / "my_task.yaml").write_text("task: my_task\ndataset_path: x\n  bad: [\n")
    err = _one_line_error(capsys, ["eval", str(tiny_model_dir), "--tasks", "my_task", "--include-path",
                                   str(yaml_dir), "--out", str(tmp_path / "o")])
    assert f"{yaml_dir / 'my_task.yaml'}: invalid YAML" in err and "line 3" in err


def test_truncated_lm_eval_data_file_names_the_line_not_the_hub(tiny_model_dir, tmp_path, capfd):
    data = tmp_path / "data" / "aps" / "super_glue" / "copa"
    data.mkdir(parents=True)
    (data / "validation.jsonl").write_text('{"premise": "The man fell.", "choice1": "a", "choice2": "b", '
                                           '"question": "cause", "label": 0, "idx": 0}\n{"premise": "The wo')
    err = _one_line_error(capfd, ["eval", str(tiny_model_dir), "--tasks", "copa", "--data-dir",
                                   str(tmp_path / "data"), "--out", str(tmp_path / "o")])
    assert "validation.jsonl:2: malformed JSON" in err and "offline, pass --data-dir" not in err


def test_recalibrate_with_no_task_in_common_is_refused(tmp_path, capsys):
    import pandas as pd

    from quantconf.predictions import write_predictions

    for name, task in (("a", "t1"), ("b", "t2")):
        (tmp_path / name).mkdir()
        write_predictions(pd.DataFrame([{"doc_id": i, "task": task, "context": "", "choices": ["a", "b"], "gold": i % 2,
                                         "loglik": [-1.0, -1.5], "n_tokens": [1, 1], "n_chars": [1, 1],
                                         "n_bytes": [1, 1], "is_greedy": [False, False]} for i in range(10)]),
                          tmp_path / name / f"{task}.parquet")
    err = _one_line_error(capsys, ["recalibrate", str(tmp_path / "a"), str(tmp_path / "b"), "--bootstrap", "5"])
    assert "share no temperature-scaled task" in err


def _study_cfg(tmp_path, model, tasks, extra=""):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(f"models: ['{model}']\nvariants:\n  - {{method: rtn, bits: 4, group_size: 32}}\n"
                   f"tasks: {json.dumps(tasks)}\nlimit: 8\nbootstrap: 20\n{extra}")
    return cfg


def test_study_with_missing_data_stops_before_quantizing_and_dry_run_says_so(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    cfg = _study_cfg(tmp_path, tiny_model_dir, ["arithmetic", "piqa"], f"data_dir: {tmp_path / 'empty'}\n")
    out = tmp_path / "study"
    err = _one_line_error(capsys, ["study", str(cfg), "--out", str(out), "--dry-run"])
    assert "piqa" in err and "nothing was run" in err
    err = _one_line_error(capsys, ["study", str(cfg), "--out", str(out)])
    assert "nothing was run" in err and not list(out.glob("steps/quant-*"))


def test_report_on_a_study_whose_step_was_deleted_says_rerun_the_study(tiny_model_dir, tmp_path, capsys):
    import shutil

    cfg = _study_cfg(tmp_path, tiny_model_dir, ["arithmetic"])
    out = tmp_path / "study"
    assert main(["study", str(cfg), "--out", str(out)]) == 0
    shutil.rmtree(next(out.glob("steps/eval-*")))
    err = _one_line_error(capsys, ["report", str(out)])
    assert "quantconf study CONFIG --out" in err and "quantconf eval" not in err


# --------------------------------------------------------------------------- fuzzing the two readers

from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=10)
PAIR = st.lists(JSON | st.floats(allow_nan=True) | st.sampled_from(["-1.5", "True", "nan", "-inf"]), max_size=3)
SAMPLE = st.fixed_dictionaries({}, optional={
    "doc_id": JSON | st.integers(0, 3) | st.sampled_from(["1", "abc"]),
    "doc": JSON, "target": JSON | st.integers(-1, 3) | st.sampled_from([" a", "b", "7"]),
    "arguments": JSON | st.lists(st.lists(st.sampled_from(["Q", " a", " b", "Q2"]), max_size=3), max_size=3),
    "filtered_resps": JSON | st.lists(PAIR, max_size=3), "resps": JSON, "acc": JSON})
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(rows=st.lists(SAMPLE.map(json.dumps) | st.text(max_size=20), max_size=4))
def test_fuzz_lm_eval_samples_reader_gives_predictions_or_one_error(tmp_path, rows):
    from quantconf.errors import QuantconfError
    from quantconf.importers.lm_eval_files import read_samples_file
    from quantconf.kinds import kind_of

    f = tmp_path / "samples_fuzz_2026-01-01T00-00-00.jsonl"
    f.write_text("\n".join(rows) + "\n", encoding="utf-8", errors="surrogatepass")
    try:
        df = read_samples_file(f)
        kind_of(df).check(df, str(f), "fix it")
    except QuantconfError as e:
        assert "\n" not in str(e).strip()
        return
    for ll in df["loglik"]:
        assert all(np.isfinite(ll))
    assert df["doc_id"].is_unique


@FUZZ
@given(rows=st.lists(st.fixed_dictionaries({
    "doc_id": st.integers(-2, 3) | st.booleans() | st.text(max_size=3),
    "choices": st.lists(st.text(max_size=3), max_size=3) | st.lists(st.integers(), max_size=2),
    "gold": st.integers(-2, 4) | st.lists(st.integers(-1, 3), max_size=2),
    "loglik": st.lists(st.floats(allow_nan=True, width=64), max_size=3)}), min_size=1, max_size=4))
def test_fuzz_predictions_reader_gives_frames_or_one_error(tmp_path, rows):
    import pandas as pd

    from quantconf.errors import QuantconfError
    from quantconf.predictions import read_prediction_file

    frame = pd.DataFrame([{**r, "task": "t", "context": "", "n_tokens": [1] * len(r["choices"]),
                           "n_chars": [1] * len(r["choices"]), "n_bytes": [1] * len(r["choices"]),
                           "is_greedy": [False] * len(r["choices"])} for r in rows])
    path = tmp_path / "t.parquet"
    try:
        frame.to_parquet(path)
    except Exception:  # a column pyarrow cannot store (mixed types): not a file quantconf could meet
        return
    try:
        df = read_prediction_file(path)
    except QuantconfError as e:
        assert "\n" not in str(e).strip()
        return
    for choices, gold, ll in zip(df["choices"], df["gold"], df["loglik"]):
        golds = gold if isinstance(gold, list) else [gold]
        assert len(ll) == len(choices) > 0 and all(0 <= g < len(choices) for g in golds)
    assert df["doc_id"].is_unique


SEED_HEADER = ["Type", "Category", "Question", "Best Answer", "Correct Answers", "Incorrect Answers", "Source",
               "m GPT-info", "m GPT-info acc", "model_prediction"]
CELL = st.sampled_from(["", "a; b", "x", "0", "1", "0.5", "nan", "inf", "-1e400", "yes", ";", "Q?"]) | st.text(max_size=6)


PLAIN = st.sampled_from(["", "x", "a; b", "0", "Q?"])
SEED_ROW = st.tuples(PLAIN, PLAIN, st.sampled_from(["Q1?", "Q2?", "Q3?", " Q1? ", ""]), PLAIN,
                     st.sampled_from(["a; b", "a", "a;", ";"]), st.sampled_from(["c; d", "c", "d", ""]), PLAIN,
                     st.sampled_from(["0.5", "0.9", "1e3", "0", "nan"]), st.sampled_from(["0", "1", "1.0", "0.0", "yes"]),
                     PLAIN | CELL).map(list)


@FUZZ  # st.one_of picks a branch uniformly: the repeated branch makes well-formed files common enough
@given(header=st.one_of(st.just(SEED_HEADER), st.just(SEED_HEADER),
                        st.lists(st.sampled_from(SEED_HEADER + ["other", "n GPT-info"]), max_size=11)),
       rows=st.one_of(st.lists(SEED_ROW, min_size=1, max_size=2), st.lists(SEED_ROW, min_size=1, max_size=2),
                      st.lists(st.lists(CELL, max_size=11), max_size=3)),
       raw_bytes=st.one_of(st.just(b""), st.just(b""), st.binary(max_size=6)))
def test_fuzz_seed_csv_reader_gives_checked_rows_or_one_error(tmp_path, header, rows, raw_bytes):
    """The seed TruthfulQA CSV reader: checked rows (every judge score finite, every label 0/1, each question
    once with both answer lists) or one QuantconfError line; never a pandas/numpy traceback."""
    import csv
    import io

    from quantconf.errors import QuantconfError
    from quantconf.importers.generations import read_seed_csv, split_answers

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *rows])
    f = tmp_path / "fuzz.csv"
    f.write_bytes(buf.getvalue().encode("utf-8", "surrogatepass") + raw_bytes)
    try:
        df, model = read_seed_csv(f)
    except QuantconfError as e:
        assert "\n" not in str(e).strip()
        return
    judge = f"{model} GPT-info"
    assert len(df) > 0 and all(np.isfinite(float(v)) for v in df[judge])
    assert all(v.strip() in ("0", "1", "0.0", "1.0") for v in df[f"{judge} acc"])
    assert df["Question"].str.strip().is_unique
    assert all(split_answers(v) for v in df["Correct Answers"]) and all(split_answers(v) for v in df["Incorrect Answers"])


PROMPT = st.sampled_from(["Q: 1\nA:", "Q: 2\nA:", "Q: 3\nA:"])
KWARGS = st.just({"until": ["\n"]})
GEN_ARGS = (st.fixed_dictionaries({"gen_args_0": st.fixed_dictionaries({"arg_0": PROMPT | JSON, "arg_1": KWARGS})})
            | st.lists(st.tuples(PROMPT, KWARGS | JSON).map(list), min_size=1, max_size=2) | JSON)
GEN_SAMPLE = st.fixed_dictionaries({
    "arguments": GEN_ARGS, "doc_id": st.integers(0, 3) | st.sampled_from(["1", None]),
    "resps": st.lists(st.lists(st.sampled_from([" 1", "2", ""]), min_size=1, max_size=1), min_size=1, max_size=1)
    | JSON,
    "metrics": st.just(["exact_match"]) | st.lists(st.sampled_from(["exact_match", "bleu", "x"]), max_size=2),
    "exact_match": st.sampled_from([0, 1, 1.0, 0.5, "nan", None, "1"]),
}, optional={"doc": JSON | st.just({"question": "1?"}), "target": JSON, "filter": st.sampled_from(["none", "strict"]),
             "bleu": JSON})


@FUZZ
@given(rows=st.lists(GEN_SAMPLE.map(json.dumps), min_size=1, max_size=4), junk=st.lists(st.text(max_size=12), max_size=1))
# found by CI: a metric given as the word "1" was read as a number by the check but kept as text in the frame
@example(rows=['{"arguments": {"gen_args_0": {"arg_0": "Q: 1\\nA:", "arg_1": {"until": ["\\n"]}}}, "doc_id": 0, '
               '"resps": [[" 1"]], "metrics": ["exact_match"], "exact_match": "1"}'], junk=[])
def test_fuzz_generation_samples_reader_gives_generations_or_one_error(tmp_path, rows, junk):
    """lm-eval generate_until --log_samples lines (both argument layouts): a checked generation frame (finite
    0/1 correctness, one row per doc) or one QuantconfError line."""
    from quantconf.errors import QuantconfError
    from quantconf.importers.lm_eval_files import read_samples_file
    from quantconf.kinds import kind_of

    f = tmp_path / "samples_gen_2026-01-01T00-00-00.jsonl"
    f.write_text("\n".join(rows + junk) + "\n", encoding="utf-8", errors="surrogatepass")
    try:
        df = read_samples_file(f)
    except QuantconfError as e:
        assert "\n" not in str(e).strip()
        return
    if kind_of(df).name == "generation":
        assert df["doc_id"].is_unique and df["correct"].isin([0.0, 1.0]).all()
        assert all(isinstance(t, str) for t in df["generation"]) and all(isinstance(c, str) for c in df["context"])


def test_outliers_into_an_existing_result_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "outliers.json").write_text('{"mine": 1}')
    err = _one_line_error(capsys, ["outliers", "default", "--out", str(out)])  # refused before the model loads
    assert "--overwrite" in err and (out / "outliers.json").read_text() == '{"mine": 1}'
