"""Issue 27: quantconf deletes only what it can prove it wrote, and refuses bad data at the door.
The two data-loss cases (`quantize --out . --overwrite`, `--overwrite` of a foreign directory) come
first; each test fails on the code before the guard."""

from __future__ import annotations

import json
import pytest

from quantconf.cli import main
from conftest import write_jsonl


def _one_line_error(capsys, args) -> str:
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
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
    from quantconf import evaluation

    preds = tmp_path / "eval"
    evaluation.evaluate_to_dir(str(tiny_model_dir), ["arithmetic"], preds, limit=4, progress=False, log=lambda m: None)
    manifest = (preds / "manifest.json").read_bytes()
    f = _samples_file(tmp_path, "arithmetic", [([-1.0, -2.0], 0)])
    err = _one_line_error(capsys, ["import-lm-eval", str(f), "--out", str(preds), "--overwrite"])
    assert "quantconf eval" in err and (preds / "manifest.json").read_bytes() == manifest
