"""Task kinds as types (kinds/): the kind is recorded where predictions are made and read back from there, a frame
without one is identified once by its kind's own columns, and a new kind is one class plus its registration."""

import json

import numpy as np
import pandas as pd
import pytest

from quantconf import kinds
from quantconf.errors import QuantconfError
from quantconf.kinds.base import KINDS, TaskKind, register
from quantconf.kinds.choice import MULTIPLE_CHOICE
from quantconf.kinds.generation import GENERATION
from quantconf.predictions import read_prediction_dir, read_prediction_file, record_tasks, write_predictions


def _choice_rows(n=5):
    return [{"doc_id": i, "task": "t", "context": "q", "choices": ["a", "b"], "gold": 0, "loglik": [-1.0, -2.0],
             "n_tokens": [1, 1], "n_chars": [1, 1], "n_bytes": [1, 1], "is_greedy": [True, False]} for i in range(n)]


def test_the_kind_travels_with_the_file_and_the_manifest(tmp_path):
    df = MULTIPLE_CHOICE.frame(_choice_rows())
    assert df.attrs["kind"] == "multiple_choice" and kinds.kind_of(df[df["doc_id"] > 1]) is MULTIPLE_CHOICE
    write_predictions(df, tmp_path / "t.parquet")
    assert read_prediction_file(tmp_path / "t.parquet").attrs["kind"] == "multiple_choice"  # parquet metadata
    record_tasks(tmp_path, {"t": {"file": "t.parquet", "kind": "multiple_choice"}})
    assert json.loads((tmp_path / "manifest.json").read_text())["tasks"]["t"]["kind"] == "multiple_choice"
    assert kinds.kind_of(read_prediction_dir(tmp_path)["t"]) is MULTIPLE_CHOICE
    with pytest.raises(ValueError, match="no task kind"):  # the one writer of manifests records it, always
        record_tasks(tmp_path, {"u": {"file": "t.parquet"}})


def test_the_manifests_word_wins_over_the_files_columns(tmp_path):
    """A frame holding both kinds' identifying columns is read as the manifest says (the kind is read, not guessed)."""
    df = MULTIPLE_CHOICE.frame(_choice_rows())
    df["generation"] = "an answer"  # a column a generation frame would have
    write_predictions(df, tmp_path / "t.parquet")
    record_tasks(tmp_path, {"t": {"file": "t.parquet", "kind": "multiple_choice"}})
    assert kinds.kind_of(read_prediction_dir(tmp_path)["t"]) is MULTIPLE_CHOICE
    df.attrs.clear()
    with pytest.raises(QuantconfError, match="cannot tell which kind"):  # without a record: refused, not guessed
        kinds.kind_of(df)


def test_a_frame_without_a_kind_is_identified_by_its_kinds_own_columns():
    """Frames built by hand (and files written before kinds were recorded): choices/loglik/gold, or generation."""
    assert kinds.kind_of(pd.DataFrame({"doc_id": [0], "loglik": [[0.0]], "gold": [0]})) is MULTIPLE_CHOICE
    assert kinds.kind_of(pd.DataFrame({"doc_id": [0], "generation": ["x"]})) is GENERATION
    with pytest.raises(QuantconfError, match="cannot tell which kind"):
        kinds.kind_of(pd.DataFrame({"doc_id": [0]}))
    assert kinds.kind_of_output_type("generate_until") is GENERATION
    with pytest.raises(QuantconfError, match="no task kind evaluates output_type 'loglikelihood_rolling'"):
        kinds.kind_of_output_type("loglikelihood_rolling")


def test_a_new_kind_is_one_class_and_its_registration():
    """A kind registered from outside the package: found by name, by output type and by the frames it makes; the
    dispatchers (metrics, comparison, noise floor, ...) call its own methods."""

    class Ranking(TaskKind):
        name = "ranking_test"
        output_types = ("rank_test",)
        columns = ("doc_id", "score")
        identifying_columns = ("score",)

        def frame(self, rows):
            df = pd.DataFrame(rows)
            df.attrs["kind"] = self.name
            return df

        def metrics(self, df, **options):
            return {"n": len(df), "mean_score": float(np.mean(df["score"]))}

        def compare(self, full, quant, *args):
            return {"delta_score": float(np.mean(quant["score"]) - np.mean(full["score"]))}

    kind = register(Ranking())
    try:
        df = kind.frame([{"doc_id": 0, "score": 1.0}, {"doc_id": 1, "score": 3.0}])
        assert kinds.kind_named("ranking_test") is kind and kinds.kind_of_output_type("rank_test") is kind
        assert kinds.task_metrics(df) == {"n": 2, "mean_score": 2.0}
        other = kind.frame([{"doc_id": 0, "score": 2.0}, {"doc_id": 1, "score": 4.0}])
        assert kinds.compare_task(df, other) == {"delta_score": 1.0}
        with pytest.raises(QuantconfError, match="hold predictions, the quantized model's hold choice scores"):
            kinds.compare_task(df, MULTIPLE_CHOICE.frame(_choice_rows()))
        with pytest.raises(ValueError, match="registered twice"):
            register(Ranking())
    finally:
        KINDS.pop("ranking_test")
