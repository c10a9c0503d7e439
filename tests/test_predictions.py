"""predictions.py: prediction files round-trip; bad files give one clear error."""

import pandas as pd
import pytest

import quantconf as qc
from quantconf.errors import QuantconfError
from quantconf.predictions import (read_manifest, read_prediction_dir, read_prediction_file, task_file_name,
                                   write_predictions)


def _frame(task="t", gold=(0, 1)):
    n = len(gold)
    return pd.DataFrame({"doc_id": range(n), "task": task, "context": "c", "choices": [["a", "bb"]] * n,
                         "gold": list(gold), "loglik": [[-1.0, -2.5]] * n, "n_tokens": [[1, 2]] * n,
                         "n_chars": [[1, 2]] * n, "n_bytes": [[1, 2]] * n, "is_greedy": [[True, False]] * n})


def test_round_trip_file_and_dir(tmp_path):
    df = _frame()
    mc2 = _frame("mc2", gold=([0, 1], [1]))
    write_predictions(df, tmp_path / task_file_name("t"))
    write_predictions(mc2, tmp_path / task_file_name("mc2"))
    back = read_prediction_file(tmp_path / "t.parquet")
    assert back["loglik"].tolist() == [[-1.0, -2.5]] * 2 and back["gold"].tolist() == [0, 1]
    assert isinstance(back["choices"][0], list) and back["is_greedy"][0] == [True, False]
    both = read_prediction_dir(tmp_path)
    assert sorted(both) == ["mc2", "t"] and both["mc2"]["gold"].tolist() == [[0, 1], [1]]
    # the public reader: a file gives a frame, a directory a dict
    assert isinstance(qc.read_predictions(tmp_path / "t.parquet"), pd.DataFrame)
    assert sorted(qc.read_predictions(tmp_path)) == ["mc2", "t"]
    assert read_manifest(tmp_path) == {}


def test_file_task_names():
    assert task_file_name("file:/a/b/my_set.jsonl") == "file_my_set.parquet"
    assert task_file_name("piqa") == "piqa.parquet"


def test_bad_files(tmp_path):
    with pytest.raises(ValueError, match="lack columns"):
        write_predictions(_frame().drop(columns=["loglik"]), tmp_path / "x.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(QuantconfError, match="not a readable predictions parquet"):
        read_prediction_file(tmp_path / "junk.parquet")
    _frame().drop(columns=["gold"]).to_parquet(tmp_path / "nogold.parquet")
    with pytest.raises(QuantconfError, match=r"missing columns \['gold'\]"):
        read_prediction_file(tmp_path / "nogold.parquet")
    with pytest.raises(QuantconfError, match="not found"):
        read_prediction_dir(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(QuantconfError, match="holds no <task>.parquet"):
        read_prediction_dir(tmp_path / "empty")
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(QuantconfError, match="manifest.json is corrupt; if quantconf wrote it, delete it .*if it is "
                                             "your own file, choose another directory"):
        read_manifest(tmp_path)
    # two files of one task: one silently replaced the other
    write_predictions(_frame(), tmp_path / "twice" / "a.parquet")
    write_predictions(_frame(), tmp_path / "twice" / "b.parquet")
    with pytest.raises(QuantconfError, match=r"a.parquet and b.parquet in .*twice both hold task 't'; keep one"):
        read_prediction_dir(tmp_path / "twice")


def test_generation_metrics_must_be_finite_numbers():
    """A NaN/inf in a grading metric (or a word among its numbers) is refused naming the doc and column,
    rather than averaged into a wrong number or written as a pyarrow traceback."""
    import pandas as pd

    from quantconf.kinds.generation import GENERATION
    check_generations = GENERATION.check

    def frame(values):
        n = len(values)
        return pd.DataFrame({"doc_id": range(n), "task": "g", "context": "c", "generation": "a",
                             "token_ids": [[1]] * n, "token_logprobs": [[-0.1]] * n, "primary_metric": "exact_match",
                             "correct": [1.0] * n, "exact_match": [1.0] * n, "sequence_logprob": float("nan"),
                             "mean_logprob": float("nan"), "min_token_prob": float("nan"),
                             "mean_entropy": float("nan"), "p_true": float("nan"), "question": "q?",
                             "bleu_max": values})

    check_generations(frame([1.0, 2.5]), "f", "fix it")  # NaN confidence measures are allowed
    for bad, shown in ((float("nan"), "nan"), (float("inf"), "inf"), ("high", "'high'")):
        with pytest.raises(QuantconfError, match=rf"f doc 1: metric bleu_max is {shown}, not a finite number; fix it"):
            check_generations(frame([1.0, bad]), "f", "fix it")


@pytest.mark.parametrize("theirs", [{"name": "my web app", "icons": []}, [1, 2], {"tasks": ["x"]}])
def test_a_users_own_manifest_json_is_not_quantconfs_and_is_never_touched(tmp_path, tiny_model_dir, theirs, capsys):
    """It was called "corrupt" with "delete it" as the fix (or merged into and overwritten)."""
    import json

    from quantconf.cli import main

    (tmp_path / "manifest.json").write_text(json.dumps(theirs))
    with pytest.raises(QuantconfError, match=r"manifest.json is not a quantconf manifest .*it is not quantconf's"):
        read_manifest(tmp_path)
    for overwrite in ([], ["--overwrite"]):
        assert main(["eval", str(tiny_model_dir), "--tasks", "arithmetic", "--limit", "3", "--out", str(tmp_path),
                     "--quiet", *overwrite]) == 2
        assert "choose another directory" in capsys.readouterr().err
        assert json.loads((tmp_path / "manifest.json").read_text()) == theirs
        assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]
