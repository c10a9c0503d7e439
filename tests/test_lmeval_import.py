import json

import pytest

from quantconf import QuantconfError
from quantconf.cli import main
from quantconf.lmeval_import import import_lm_eval, read_samples_file
from quantconf.calibration import accuracy
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
    # text truth is matched against the task's own choices (from a local data dir)
    (tmp_path / "data" / "piqa").mkdir(parents=True)
    write_jsonl(tmp_path / "data" / "piqa" / "validation.jsonl", [{"goal": "g", "sol1": "twist", "sol2": "pull", "label": 0}])
    g = tmp_path / "old" / "piqa_write_out_info.json"
    g.parent.mkdir()
    g.write_text(json.dumps([{"doc_id": 0, "prompt_0": "p", "logit_0": -1.0, "logit_1": -2.0, "truth": " twist"}]))
    assert main(["import-lm-eval", str(g.parent), "--out", str(tmp_path / "o2"), "--data-dir", str(tmp_path / "data")]) == 0
    df = read_prediction_dir(tmp_path / "o2")["piqa"]
    assert df["choices"][0] == ["twist", "pull"] and df["gold"][0] == 0


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
