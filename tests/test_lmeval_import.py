import json
from pathlib import Path

import numpy as np

import pytest

from quantconf import QuantconfError
from quantconf.cli import main
from quantconf.importers.lm_eval_files import import_lm_eval, read_samples_file
from quantconf.analysis.metrics import accuracy
from quantconf.predictions import read_prediction_dir
from conftest import write_jsonl


def _sample(doc_id, lls, target, numbers=True, newer_args=False):
    ctx = f"Question: q{doc_id}\nAnswer:"
    conts = [" yes", " no", " maybe"][:len(lls)]
    args = ([{"gen_args_0": {"arg_0": ctx, "arg_1": c}} for c in conts] if newer_args else [[ctx, c] for c in conts])
    resp = [[ll, False] if numbers else [str(ll), "False"] for ll in lls]
    return {"doc_id": doc_id, "doc": {"q": doc_id}, "target": target, "arguments": args,
            "resps": [[r] for r in resp], "filtered_resps": resp, "acc": 1.0}


def test_samples_numbers_strings_and_newer_arguments(tmp_path):
    rows = [_sample(0, [-1.0, -2.0, -3.0], 0), _sample(1, [-5.0, -1.5, -2.5], 2, numbers=False),
            _sample(2, [-1.0, -0.5], "no", newer_args=True)]
    f = write_jsonl(tmp_path / "samples_mytask_2026-01-02T03-04-05.678901.jsonl", rows)
    df = read_samples_file(f)
    assert list(df["task"].unique()) == ["mytask"]
    assert df["choices"][0] == ["yes", "no", "maybe"] and df["gold"].tolist() == [0, 2, 1]
    assert df["loglik"][1] == [-5.0, -1.5, -2.5]
    assert accuracy(df)["acc"] == pytest.approx(2 / 3)  # doc 1 predicts "no" but gold is 2
    assert df["n_chars"][0] == [3, 2, 5]


def test_old_write_out_with_index_and_text_truth(tmp_path):
    f = tmp_path / "piqa_write_out_info.json"
    f.write_text(json.dumps([{"doc_id": 0, "prompt_0": "Question: x\nAnswer:", "logit_0": -3.0, "logit_1": -1.0,
                              "truth": "1"}]))
    out = tmp_path / "out"
    assert import_lm_eval([f], out) == {"piqa": 1}
    df = read_prediction_dir(out)["piqa"]
    assert df["gold"][0] == 1 and accuracy(df)["acc"] == 1.0
    # text truth is matched against the row's own prompts (the order its logits were computed in)
    g = tmp_path / "old" / "piqa_write_out_info.json"
    g.parent.mkdir()
    g.write_text(json.dumps([{"doc_id": 0, "prompt_0": "Q: x\nA: twist", "prompt_1": "Q: x\nA: pull", "logit_0": -1.0,
                              "logit_1": -2.0, "truth": " twist"}]))
    assert main(["import-lm-eval", str(g.parent), "--out", str(tmp_path / "o2")]) == 0
    df = read_prediction_dir(tmp_path / "o2")["piqa"]
    assert df["choices"][0] == ["twist", "pull"] and df["gold"][0] == 0 and df["context"][0] == "Q: x\nA:"
    # without the prompts the order is unknown: refused, never guessed from today's task definition
    g.write_text(json.dumps([{"doc_id": 0, "prompt_0": "p", "logit_0": -1.0, "logit_1": -2.0, "truth": " twist"}]))
    with pytest.raises(QuantconfError, match="order its logits were computed in is unknown"):
        import_lm_eval([g], tmp_path / "o3")


# --------------------------------------------------------------------------- lm-eval 0.3 write_out files
# tests/fixtures/lm_eval_03: written by lm-eval 0.3.0's own task classes and the write_out block of its
# evaluator (make_fixtures.py beside them says how), on made-up documents in each hub schema

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "lm_eval_03"
OLD_TASKS = ["boolq", "piqa", "hellaswag", "arc_easy"]


@pytest.mark.parametrize("task", OLD_TASKS)
def test_lm_eval_03_files_give_03s_own_accuracy_and_every_rows_acc(task, tmp_path):
    from quantconf.importers.lm_eval_files import read_write_out_file

    expected = json.loads((FIXTURES / "results.json").read_text())[task]["acc"]
    rows = json.loads((FIXTURES / f"{task}_write_out_info.json").read_text())
    for data_dir in (None, FIXTURES / "data"):
        df = read_write_out_file(FIXTURES / f"{task}_write_out_info.json", data_dir=data_dir)
        assert accuracy(df)["acc"] == expected  # 0.3.0's own aggregation on the same rows, exactly
        by_id = {r["doc_id"]: r for r in rows}
        for doc_id, ll, gold in zip(df["doc_id"], df["loglik"], df["gold"]):
            assert (int(np.argmax(ll)) == gold) == (float(by_id[doc_id]["acc"]) == 1.0)


def test_lm_eval_03_boolq_keeps_the_files_yes_no_order():
    """0.3 asked " yes" then " no" (lm-eval 0.4 orders the choices no, yes): truth " yes" is logit_0."""
    from quantconf.importers.lm_eval_files import read_write_out_file

    rows = json.loads((FIXTURES / "boolq_write_out_info.json").read_text())
    df = read_write_out_file(FIXTURES / "boolq_write_out_info.json")
    assert all(c == ["yes", "no"] for c in df["choices"])
    truth = {r["doc_id"]: r["truth"] for r in rows}
    assert [truth[d] for d in df["doc_id"]] == [[" yes", " no"][g] for g in df["gold"]]
    flipped = [{**r, "truth": " no" if r["truth"] == " yes" else " yes"} if i == 3 else r for i, r in enumerate(rows)]
    bad = FIXTURES.parent / "boolq_write_out_info.json"
    try:
        bad.write_text(json.dumps(flipped))
        with pytest.raises(QuantconfError, match="entry 3: the file's own acc"):
            read_write_out_file(bad)
    finally:
        bad.unlink(missing_ok=True)


def test_lm_eval_03_doc_ids_are_positions_after_the_seeded_shuffle():
    """With the data, each doc_id is looked up where 0.3's Random(42) shuffle took it from: the document
    found there has the file's truth as its gold and reproduces every prompt; read as a plain index
    (no unshuffle) it would be another document."""
    from quantconf.importers.lm_eval_files import unshuffled_position
    from quantconf.tasks import load_task

    for task in ("piqa", "hellaswag", "arc_easy"):
        questions = load_task(task, data_dir=FIXTURES / "data").questions
        rows = json.loads((FIXTURES / f"{task}_write_out_info.json").read_text())
        plain = 0
        for r in rows:
            q = questions[unshuffled_position(r["doc_id"], len(questions))]
            assert q.gold == r["truth"]
            assert all(r[f"prompt_{j}"].endswith(" " + c) for j, c in enumerate(q.choices))
            plain += questions[r["doc_id"]].gold == r["truth"]
        assert plain < 0.6 * len(rows)  # chance agreement only


def test_lm_eval_03_compat_metrics_equal_the_notebook_code(tmp_path, capsys):
    from test_calibration_science import nb_reference

    from quantconf.analysis.metrics import proskurina2024_metrics

    assert main(["import-lm-eval", str(FIXTURES), "--out", str(tmp_path / "o")]) == 0
    preds = read_prediction_dir(tmp_path / "o")
    for task in OLD_TASKS:
        rows = json.loads((FIXTURES / f"{task}_write_out_info.json").read_text())
        k = sum(1 for key in rows[0] if key.startswith("logit_"))
        ll = [[r[f"logit_{j}"] for j in range(k)] for r in rows]
        # the notebook's truth: an index, or (BoolQ) the position of the truth text in 0.3's request order
        gold = [r["truth"] if isinstance(r["truth"], int) else [" yes", " no"].index(r["truth"]) for r in rows]
        ref = nb_reference(ll, gold)
        df = preds[task].set_index("doc_id").loc[[r["doc_id"] for r in rows]]
        ours = proskurina2024_metrics(list(df["loglik"]), list(df["gold"]))
        for key in ("conf", "conf_true", "c_pos", "c_neg", "ace", "mce", "sce", "entropy"):
            assert ours[key] == pytest.approx(ref[key], abs=1e-12), (task, key)


@pytest.mark.parametrize("row, message", [
    ({"doc_id": 0, "target": 0, "filtered_resps": [[-1, False]]}, "field 'arguments' missing"),
    ({"doc_id": 0, "target": 0, "arguments": [["c", " a"]]}, "'filtered_resps'"),
    ({"doc_id": 0, "target": 0, "arguments": [["c", " a"]], "filtered_resps": [["x", "False"]]}, "not a number"),
    ({"doc_id": 0, "target": "zzz", "arguments": [["c", " a"]], "filtered_resps": [[-1, False]]}, "neither an index"),
    ({"doc_id": 0, "target": 5, "arguments": [["c", " a"]], "filtered_resps": [[-1, False]]}, "out of range"),
])
def test_unknown_layouts_name_file_and_field(tmp_path, row, message):
    f = write_jsonl(tmp_path / "samples_t_2026-01-01T00-00-00.0.jsonl", [row])
    with pytest.raises(QuantconfError, match=message) as e:
        read_samples_file(f)
    assert str(f) in str(e.value)


def test_unknown_file_kind(tmp_path, capsys):
    f = tmp_path / "results.json"
    f.write_text("{}")
    assert main(["import-lm-eval", str(f), "--out", str(tmp_path / "o")]) == 2
    assert "unknown layout" in capsys.readouterr().err
