"""The public API (`import quantconf as qc`): names, numpydoc docstrings, and the same results as the CLI."""

import argparse
import doctest
import inspect
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import quantconf as qc
import quantconf.api
from quantconf.cli import main
from conftest import SHARED_DATA, write_jsonl

PUBLIC = ["load_model", "load_task", "evaluate", "quantize", "metrics", "compare", "noise_floor", "recalibrate", "run_study",
          "read_predictions"]
README = Path(__file__).resolve().parents[1] / "README.md"


def test_public_names_and_numpydoc_docstrings():
    assert set(PUBLIC) <= set(qc.__all__)
    for name in PUBLIC:
        fn = getattr(qc, name)
        assert callable(fn) and fn.__module__ == "quantconf.api", name
        doc = inspect.getdoc(fn)
        for section in ("Parameters\n----------", "Returns\n-------", "Raises\n------", "Examples\n--------"):
            assert section in doc, f"{name} lacks {section.splitlines()[0]}"
        for param in inspect.signature(fn).parameters:
            if param not in ("log",):
                assert re.search(rf"\b{param}\b", doc.split("Returns")[0]), f"{name}: parameter {param} undocumented"
    # a function and a module of one name would shadow each other: the modules are named otherwise
    assert callable(qc.metrics) and callable(qc.compare) and callable(qc.evaluate) and callable(qc.quantize)


def test_docstring_examples_that_need_no_model_run():
    result = doctest.testmod(quantconf.api, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted >= 4


def _task(tmp_path, n=12):
    rows = [{"query": f"Question: is {i} even?\nAnswer:", "choices": ["yes", "no", "maybe not"], "gold": i % 2}
            for i in range(n)]
    return f"file:{write_jsonl(tmp_path / 'even.jsonl', rows)}"


def test_evaluate_in_memory_equals_written_and_cli(tiny_model_dir, tiny_lm, tmp_path, capsys):
    task = _task(tmp_path)
    mem = qc.evaluate(tiny_lm, [task, "arithmetic"], limit=10)
    assert sorted(mem) == sorted([task, "arithmetic"]) and len(mem["arithmetic"]) == 10
    out = tmp_path / "out"
    written = qc.evaluate(str(tiny_model_dir), f"{task},arithmetic", limit=10, out=out)
    for name in mem:
        pd.testing.assert_frame_equal(mem[name], written[name])
    stamp = (out / "arithmetic.parquet").stat().st_mtime_ns
    log = []
    again = qc.evaluate(tiny_model_dir, [task, "arithmetic"], limit=10, out=out, log=log.append)  # a Path works too
    assert (out / "arithmetic.parquet").stat().st_mtime_ns == stamp and all("reusing" in m for m in log)
    pd.testing.assert_frame_equal(again["arithmetic"], written["arithmetic"])
    # a loaded model writes to a dir and reuses what the spec wrote (same weights hash)
    log.clear()
    qc.evaluate(tiny_lm, ["arithmetic"], limit=10, out=out, log=log.append)
    assert log == [f"arithmetic: reusing {out / 'arithmetic.parquet'}"]
    # the CLI reads the same files: metrics/compare --json equal the API
    assert main(["metrics", str(out), "--json", "--bootstrap", "30"]) == 0
    cli = json.loads(capsys.readouterr().out)
    api = qc.metrics(qc.read_predictions(out), n_boot=30)
    assert cli.keys() == api.keys()
    for t in api:
        assert cli[t].keys() == api[t].keys()
        assert cli[t]["ece"] == pytest.approx(api[t]["ece"])
        assert {k: pytest.approx(v) for k, v in cli[t]["ci"].items()} == api[t]["ci"]
    ckpt = qc.quantize(tiny_model_dir, tmp_path / "rtn2", method="rtn", bits=2, group_size=32)
    assert isinstance(ckpt, Path) and (ckpt / "quantize.json").is_file()
    quant = qc.evaluate(ckpt, ["arithmetic"], limit=10)
    assert main(["eval", str(ckpt), "--tasks", "arithmetic", "--limit", "10", "--out", str(tmp_path / "q"),
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main(["compare", str(out), str(tmp_path / "q"), "--json", "--bootstrap", "30"]) == 0
    cli = json.loads(capsys.readouterr().out)["arithmetic"]
    direct = qc.compare(written["arithmetic"], quant["arithmetic"], n_boot=30)
    assert cli.keys() == direct.keys()
    assert cli["js_mean"] == pytest.approx(direct["js_mean"])
    assert {k: pytest.approx(v) for k, v in cli["ci"].items()} == direct["ci"]
    assert qc.compare(out, tmp_path / "q", n_boot=0)["arithmetic"]["js_mean"] == pytest.approx(direct["js_mean"])


@pytest.mark.parametrize("call, message", [
    (lambda: qc.load_task("arithmetic", limit=0), "limit must be a positive"),
    (lambda: qc.evaluate("x", []), "tasks is empty"),
    (lambda: qc.evaluate("x", ["arithmetic"], batch_size=0), "batch_size must be >= 1"),
    (lambda: qc.evaluate("x", ["arithmetic"], scorer="fast"), "scorer must be one of"),
    (lambda: qc.quantize("x", "y", bits=5), "bits must be one of"),
    (lambda: qc.metrics(pd.DataFrame(), n_boot=-5), "n_boot must be >= 0"),
    (lambda: qc.run_study({"models": ["x"], "tasks": ["arithmetic"], "variants": [], "limit": 5}, "o"),
     "field `variants`"),
])
def test_errors_name_the_parameter(call, message):
    with pytest.raises(qc.QuantconfError, match=message) as e:
        call()
    assert e.value.param is None or str(e.value).startswith(e.value.param)


def test_cli_maps_parameter_names_to_flags(tiny_model_dir, tmp_path, capsys):
    assert main(["eval", str(tiny_model_dir), "--tasks", "arithmetic", "--limit", "3", "--out", str(tmp_path / "p"),
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main(["metrics", str(tmp_path / "p"), "--bootstrap", "-5"]) == 2
    assert capsys.readouterr().err == "quantconf: error: --bootstrap must be >= 0, got -5\n"


def test_run_study_from_a_dict(tiny_model_dir, tmp_path):
    cfg = {"models": [str(tiny_model_dir)], "tasks": ["arithmetic"], "limit": 12, "bootstrap": 20,
           "variants": [{"method": "rtn", "bits": 4, "group_size": 32}]}
    assert qc.run_study(cfg, tmp_path / "s", dry_run=True, log=lambda m: None) is None
    report = qc.run_study(cfg, tmp_path / "s", log=lambda m: None)
    assert report == tmp_path / "s" / "report.html" and report.is_file()


def readme_python_example() -> str:
    text = README.read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.integration
def test_readme_python_api_example_runs(tmp_path, monkeypatch, capsys):
    if not SHARED_DATA.is_dir():
        pytest.skip(f"integration data {SHARED_DATA} absent (it lives in ../shared/data beside the project)")
    code = readme_python_example().replace('"../shared/data"', repr(str(SHARED_DATA)))
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "piqa" in printed and "arc_easy" in printed
    full, quant, c = namespace["full"], namespace["quant"], namespace["c"]
    assert len(full["piqa"]) == 50 and set(c) == {"piqa", "arc_easy"}
    assert 0.55 < qc.metrics(full["piqa"], n_boot=0)["acc"]  # the default model is above chance (.5)
    assert c["piqa"]["flips_correct_to_wrong"] == int(
        ((full["piqa"]["loglik"].map(lambda x: x.index(max(x))) == full["piqa"]["gold"])
         & (quant["piqa"]["loglik"].map(lambda x: x.index(max(x))) != quant["piqa"]["gold"])).sum())


def test_readme_commands_parse_and_readme_stays_short():
    """Every `$Q ...` line of the README's command-line block is a valid command of today's parser, and
    the README stays the newcomer's page (the reference lives in docs/)."""
    import shlex

    from quantconf.cli import build_parser

    text = README.read_text()
    block = text.split("## The command line", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0] for line in block.splitlines() if line.startswith("$Q ")]
    assert len(commands) >= 6
    for line in commands:
        build_parser().parse_args(shlex.split(line)[1:])  # argparse exits (SystemExit) on a stale flag
    assert len(text.splitlines()) <= 150
    for link in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (README.parent / link).is_file(), link


def _choice_dir(path, seed: int, shift: float = 0.0):
    """A predictions dir of one hand-made multiple-choice task (60 questions, 4 choices), as eval writes it."""
    from quantconf.kinds.choice import MULTIPLE_CHOICE
    from quantconf.predictions import record_tasks, write_predictions

    rng = np.random.default_rng(seed)
    gold = np.random.default_rng(0).integers(0, 4, 60)
    base = np.random.default_rng(1).normal(size=(60, 4))
    base[np.arange(60), gold] += 1.0
    ll = base + shift * rng.normal(size=(60, 4))
    rows = [{"doc_id": i, "task": "t", "context": f"q{i}", "choices": list("abcd"), "gold": int(g),
             "loglik": list(map(float, ll[i])), "n_tokens": [1] * 4, "n_chars": [1] * 4, "n_bytes": [1] * 4,
             "is_greedy": [False] * 4} for i, g in enumerate(gold)]
    path.mkdir(parents=True)
    write_predictions(MULTIPLE_CHOICE.frame(rows), path / "t.parquet")
    record_tasks(path, {"t": {"file": "t.parquet", "kind": "multiple_choice", "n": 60}})
    return str(path)


def test_every_json_subcommand_prints_exactly_what_its_api_function_returns(tmp_path, capsys):
    """The CLI only formats (issue 35): for every subcommand with --json, its output is the API function's return
    printed as JSON, character for character. divergence is checked in test_divergence.py (it loads two models)."""
    from quantconf.cli import build_parser

    full = _choice_dir(tmp_path / "full", 0)
    reps = [_choice_dir(tmp_path / f"r{i}", i + 1, shift=0.5) for i in range(2)]
    cases = {
        "metrics": (["metrics", full, "--bootstrap", "20"], lambda: qc.metrics(full, n_boot=20)),
        "compare": (["compare", full, reps[0], "--bootstrap", "20"], lambda: qc.compare(full, reps[0], n_boot=20)),
        "noise-floor": (["noise-floor", full, *reps, "--bootstrap", "30"],
                        lambda: qc.noise_floor(full, reps, n_boot=30)),
        "recalibrate": (["recalibrate", full, reps[0], "--bootstrap", "10"],
                        lambda: {full: qc.recalibrate(full, n_boot=10),
                                 reps[0]: qc.recalibrate(reps[0], n_boot=10, full=full)}),
        "methods": (["methods"], qc.methods),
        "measures": (["measures"], qc.measures),
        "plan": (["plan", full, reps[0], "--delta", "0.02", "0.05"], lambda: qc.plan((full, reps[0]), delta=[0.02, 0.05])),
    }
    parser = build_parser()
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    with_json = {name for name, p in subcommands.items() if any("--json" in a.option_strings for a in p._actions)}
    assert with_json == set(cases) | {"divergence"}, "a new --json subcommand needs its case here"
    for name, (argv, api) in cases.items():
        assert main([*argv, "--json"]) == 0, name
        printed = capsys.readouterr().out
        assert printed == json.dumps(api(), indent=2, default=float) + "\n", name


def test_all_lists_every_api_function_and_no_module_shares_a_functions_name():
    """`import quantconf.divergence` gave the function qc.divergence, not the module (the package re-exports API
    functions under their names): no module of the package may be named like an API function; `__all__` is whole."""
    import importlib.util

    assert set(qc.__all__) == set(quantconf.api.__all__) | {"QuantconfError", "__version__"}
    assert all(hasattr(qc, name) for name in qc.__all__)
    public = [n for n, f in vars(quantconf.api).items() if inspect.isfunction(f) and f.__module__ == "quantconf.api"
              and not n.startswith("_")]
    assert set(public) <= set(quantconf.api.__all__)
    clashes = [n for n in quantconf.api.__all__ if importlib.util.find_spec(f"quantconf.{n}") is not None]
    # the one kept: the tasks package (what users extend, `from quantconf.tasks import register_task` works) and
    # qc.tasks() (lists them, as qc.methods() and qc.measures() list theirs)
    assert clashes == ["tasks"]
