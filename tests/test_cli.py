"""cli.py: every bad input gives one line naming the flag at fault, no traceback."""

import pytest
from conftest import evaluate_into
from quantconf.cli import main


@pytest.mark.parametrize("args, message", [
    (["metrics", "{preds}", "--bootstrap", "-5"], "--bootstrap must be >= 0"),
    (["compare", "{preds}", "{preds}", "--bootstrap", "-5"], "--bootstrap must be >= 0"),
    (["quantize", "{model}", "--method", "rtn", "--group-size", "32", "--out", "{file}", "--overwrite"],
     "is a file"),
])
def test_bad_inputs_give_one_line(args, message, tiny_model_dir, tmp_path, capsys):
    preds = tmp_path / "preds"
    evaluate_into(str(tiny_model_dir), ["arithmetic"], preds, limit=4, progress=False, log=lambda m: None)
    (tmp_path / "f").write_text("x")
    fill = {"preds": str(preds), "model": str(tiny_model_dir), "file": str(tmp_path / "f")}
    capsys.readouterr()
    assert main([a.format(**fill) for a in args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
