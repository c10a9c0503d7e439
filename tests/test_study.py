"""The study package (config.py, plan.py, run.py): config validation, planning, running, resuming; the demo study's fallbacks."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import FUZZ, JSON, evaluate_into, write_jsonl, yes_no_task
from quantconf.cli import main
from quantconf.errors import QuantconfError


def forbid_analysis(monkeypatch):
    """Make every statistic a study or report could compute raise: what runs after this only renders."""
    import quantconf.study.steps as steps

    def refuse(*a, **k):
        raise AssertionError("analysis was recomputed")

    for name in ("task_metrics", "compare_task", "recalibrate_task", "gap_interval", "task_noise_floor"):
        monkeypatch.setattr(steps, name, refuse)


def test_study_runs_resumes_and_reports(tiny_model_dir, tmp_path, capsys, monkeypatch):
    rows = [{"query": f"Question: <b>item</b> {i}?\nAnswer:", "choices": ["yes", "no thanks", "maybe"], "gold": i % 3}
            for i in range(30)]
    f = write_jsonl(tmp_path / "mini.jsonl", rows)
    cfg = tmp_path / "study.yaml"
    cfg.write_text(f"""
name: "tiny <script>alert(1)</script>"
models: ["{tiny_model_dir}"]
variants:
  - {{method: rtn, bits: [2, 8], group_size: 32}}
tasks: ["file:{f}", arithmetic]
limit: 30
bootstrap: 50
""")
    out = tmp_path / "study"
    assert main(["study", str(cfg), "--out", str(out), "--dry-run"]) == 0
    planned = capsys.readouterr().out
    # full eval; per variant quantize + eval; an analysis per evaluation
    assert planned.count("[todo]") == 8 and planned.count("[todo] analysis") == 3
    assert main(["study", str(cfg), "--out", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;" in page and "data:image/png;base64" in page
    summary = json.loads((out / "summary.json").read_text())
    by = {(c["variant"], c["task"]): c for c in summary["comparisons"]}
    # 2-bit RTN moves predictions more than 8-bit
    assert by[("rtn-w2g32", "arithmetic")]["js_mean"] > by[("rtn-w8g32", "arithmetic")]["js_mean"]
    assert (out / "summary.csv").read_text().startswith("model,")
    assert main(["study", str(cfg), "--out", str(out), "--dry-run"]) == 0
    assert capsys.readouterr().out.count("[done]") == 8
    # a finished study, resumed, and its report: rendered from the analysis steps, nothing recomputed
    forbid_analysis(monkeypatch)
    before = (out / "summary.json").read_text()
    assert main(["study", str(cfg), "--out", str(out)]) == 0
    assert main(["report", str(out)]) == 0
    assert (out / "summary.json").read_text() == before


@pytest.mark.parametrize("text, message", [
    ("models: [x]\ntasks: [piqa]\n", "field `variants`: Field required"),
    ("models: [x]\nvariants: []\ntasks: [piqa]\n", "field `variants`: List should have at least 1 item"),
    ("models: [x]\nvariants: [{method: rtn}]\ntasks: [piqa]\nbootstrap: abc\n", "field `bootstrap`: Input should be a valid integer"),
    ("models: [x]\nvariants: [{method: rtn}]\ntasks: [piqa]\nthreads: two\n", "field `threads`"),
    ("models: [x]\nvariants: [{method: rtn}]\ntasks: [piqa]\ncolour: red\n", "field `colour`: Extra inputs"),
    ("models: [x]\nvariants: [{method: rtn, bits: four}]\ntasks: [piqa]\n", "--bits must be of type int"),
    ("models: [x]\nvariants: [{method: rtn, bits: 9}]\ntasks: [piqa]\n", "--bits"),
    ("models: [x]\nvariants: [{method: rtn, colour: red}]\ntasks: [piqa]\n", "unknown variant field"),
    ("models: [x]\nvariants: [{method: rtn}]\ntasks: [nope]\n", "unknown task"),
    ("models: [x]\nvariants: [{method: rtn}]\ntasks: [piqa]\nlimit: 0\n", "field `limit`: Input should be greater than 0"),
    ("models: [x\n", "invalid YAML"),
    ("models: [x]\nvariants: [{method: rtn}]\ntasks: [piqa]\nlimit: 3\n", "cannot fill the 5 folds"),
])
def test_study_config_errors(tmp_path, capsys, text, message):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(text)
    assert main(["study", str(cfg), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1  # one line, no traceback
    assert not (tmp_path / "o").exists()  # refused before creating the study dir


def test_killed_study_resumes_without_redoing_steps(tiny_model_dir, tmp_path, monkeypatch):
    import quantconf.study.steps as study_mod
    from quantconf.study import load_study, plan, run_study

    study = load_study(data={"models": [str(tiny_model_dir)], "tasks": ["arithmetic"], "limit": 12, "bootstrap": 20,
                             "variants": [{"method": "rtn", "bits": 4, "group_size": 32}]})
    out = tmp_path / "s"
    real = study_mod.evaluate_to_dir
    calls = []

    def flaky(*a, **k):
        calls.append(a[0])
        if len(calls) == 2:  # killed while evaluating the quantized model
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(study_mod, "evaluate_to_dir", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_study(study, out, log=lambda m: None)
    steps = [s for s in plan(study, out) if s.kind in ("eval", "quantize")]
    assert [s.done() for s in steps] == [True, True, False]  # full eval, quantize done; quantized eval not
    quant_json = steps[1].path / "quantize.json"
    stamp = quant_json.stat().st_mtime_ns
    log = []
    assert run_study(study, out, log=log.append).is_file()
    assert quant_json.stat().st_mtime_ns == stamp
    assert any("done, reusing" in m for m in log) and all(s.done() for s in steps)
    # a corrupt analysis file of a finished study is recomputed by the next run, not stuck for good
    analysis = next(s for s in plan(study, out) if s.kind == "analysis" and s.label() != "full")
    good = json.loads(analysis.path.read_text())
    analysis.path.write_text(analysis.path.read_text()[:40])
    assert not analysis.done()
    from quantconf.errors import QuantconfError

    with pytest.raises(QuantconfError, match="is corrupt; re-run the study"):
        analysis.result()
    assert run_study(study, out, log=lambda m: None).is_file()
    assert analysis.done() and json.loads(analysis.path.read_text())["inputs"] == good["inputs"]


def test_calibration_set_sweep_spread_ppl_and_outliers(tiny_model_dir, tmp_path):
    from quantconf.study import load_study, run_study

    study = load_study(data={
        "name": "sweep", "models": [str(tiny_model_dir)], "tasks": ["arithmetic"], "limit": 30, "bootstrap": 20,
        "variants": [{"method": "gptq", "bits": 2, "group_size": 32, "n_samples": 2, "seq_len": 32,
                      "calib": ["pydoc", "random", "punct", "task:arithmetic"]}],
        "ppl_text": "pydoc", "ppl_tokens": 300, "outliers": True, "outlier_samples": 2})
    out = tmp_path / "sweep"
    report = run_study(study, out, log=lambda m: None)
    page = report.read_text()
    assert "Calibration-set sensitivity" in page and "predict its quantization loss" in page
    assert 'alt="heatmap_pydoc"' in page
    spread = pd.read_csv(out / "calib_spread.csv")
    assert spread["n_sets"].tolist() == [4] and (spread["ppl_range"] > 0).all()
    metrics = pd.read_csv(out / "summary.csv")
    assert metrics["ppl"].notna().all() and metrics["calib"].nunique(dropna=True) == 4
    outlier_files = list(out.glob("steps/outliers-*/outliers_*.parquet"))
    assert len(outlier_files) == 4


def test_demo_study_uses_the_packaged_sample_of_real_questions_offline(monkeypatch, tmp_path):
    import quantconf.study.demo as study_mod
    from quantconf.tasks import load_task

    monkeypatch.delenv("QUANTCONF_DATA_DIR", raising=False)
    monkeypatch.setattr(study_mod, "SHARED_DATA_BESIDE_CHECKOUT", tmp_path / "nowhere")
    s = study_mod.demo_study(None)
    assert s.tasks == ["hellaswag", "openbookqa", "truthfulqa_mc1"] and s.data_dir == str(study_mod.SAMPLE_DATA)
    assert "sample shipped with quantconf" in s.name  # the report's title says which data it used
    assert [v.method for v in s.variants] == ["gptq", "rtn"] and s.variants[0].group_size == 128
    for task in s.tasks:  # real benchmark questions, at least the demo's limit of each
        loaded = load_task(task, data_dir=s.data_dir)
        assert len(loaded.questions) >= s.limit and str(study_mod.SAMPLE_DATA) in loaded.source
    licences = (study_mod.SAMPLE_DATA / "README.md").read_text()
    assert "MIT" in licences and licences.count("Apache-2.0") >= 2


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_example_study_loads(path):
    """The examples the README points to validate (every method and option they use exists)."""
    from quantconf.study import load_study

    study = load_study(path)
    assert study.variants and study.tasks


def test_methods_sweep_example_covers_every_cpu_method():
    from quantconf.quantizers import load_methods
    from quantconf.study import load_study

    study = load_study(Path(__file__).resolve().parents[1] / "examples" / "methods_sweep.yaml")
    assert {v.method for v in study.variants} == set(load_methods())
    calib = load_study(Path(__file__).resolve().parents[1] / "examples" / "calib_sweep.yaml")
    static = [v for v in calib.variants if v.method == "w8a8"]
    assert {v.activations for v in static} == {"static"} and len({v.calib for v in static}) == 4


def test_only_methods_that_use_data_name_a_calibration_set():
    """bnb, gguf, hqq and fp8 take no calibration data, like RTN: an outliers study does not measure
    (or, offline, fail to load) a calibration set they never used."""
    from quantconf.study import load_study, outlier_calib_sets

    study = load_study(data={"models": ["default"], "tasks": ["arithmetic"], "variants": [
        {"method": "gptq", "calib": "pydoc"}, {"method": "rtn"}, {"method": "bnb"}, {"method": "hqq"},
        {"method": "gguf", "scheme": "Q4_0"}]})
    assert outlier_calib_sets(study) == ["pydoc"]


def test_a_methods_version_invalidates_only_its_own_steps(tmp_path, monkeypatch):
    """Quantize keys carry each method's code identity: bumping RTN's version changes the keys of RTN's
    quantize step and everything downstream of it (eval, ppl, analysis), and no other step's."""
    import dataclasses

    from quantconf.quantizers.base import QUANTIZERS
    from quantconf.study import load_study, plan

    study = load_study(data={"models": ["default"], "tasks": ["arithmetic"], "ppl_text": "pydoc",
                             "variants": [{"method": "rtn", "bits": 4, "group_size": 64},
                                          {"method": "gptq", "bits": 4, "group_size": 128, "calib": "pydoc"}]})

    def paths():
        return {(s.kind, s.variant.method if s.variant else "full"): s.path.name for s in plan(study, tmp_path)}

    before = paths()
    monkeypatch.setitem(QUANTIZERS, "rtn", dataclasses.replace(QUANTIZERS["rtn"], version="2"))
    after = paths()
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {("quantize", "rtn"), ("eval", "rtn"), ("ppl", "rtn"), ("analysis", "rtn")}
    # the library doing the work counts too: a new gptqmodel re-runs GPTQ's steps
    monkeypatch.setattr("quantconf.quantizers.base.library_version", lambda lib: "9.9" if lib == "gptqmodel" else "1")
    changed = {k for k, v in paths().items() if v != after[k]}
    assert ("quantize", "gptq") in changed and ("eval", "full") not in changed


def test_ppl_and_file_text_keys_follow_what_the_steps_read(tmp_path):
    """Perplexity steps were keyed without the dtype (and the seed and data dir) although PplStep.run reads them:
    a finished study switched to bfloat16 reused its float32 perplexities. A file: text was keyed by its path:
    editing the file re-ran nothing."""
    from quantconf.study import load_study, plan

    calib = tmp_path / "calib.txt"
    calib.write_text("some calibration text " * 50)
    base = {"models": ["default"], "tasks": ["arithmetic"], "ppl_text": f"file:{calib}",
            "variants": [{"method": "gptq", "bits": 4, "group_size": 128, "calib": f"file:{calib}"},
                         {"method": "rtn", "bits": 4, "group_size": 64}]}

    def paths(**changes):
        return {(s.kind, s.variant.method if s.variant else "full"): s.path.name
                for s in plan(load_study(data={**base, **changes}), tmp_path)}

    before = paths()
    for change in ({"dtype": "bfloat16"}, {"seed": 7}, {"data_dir": str(tmp_path)}):
        after = paths(**change)
        assert before[("ppl", "full")] != after[("ppl", "full")], change
        assert before[("ppl", "rtn")] != after[("ppl", "rtn")], change
    calib.write_text("other calibration text " * 50)  # same path, new content
    after = paths()
    assert {k for k in before if before[k] != after[k]} == {
        ("quantize", "gptq"), ("eval", "gptq"), ("analysis", "gptq"), ("ppl", "gptq"), ("ppl", "full"),
        ("ppl", "rtn")}


def test_a_method_cannot_register_twice():
    from quantconf.quantizers.base import QUANTIZERS, register_quantizer

    with pytest.raises(ValueError, match="registered twice"):
        register_quantizer(QUANTIZERS["rtn"])


def test_gptq_step_key_and_record_include_threads(tiny_model_dir, tmp_path):
    from quantconf.quantizers import QuantConfig, run_quantize
    from quantconf.study import load_study, plan

    base = {"models": [str(tiny_model_dir)], "tasks": ["arithmetic"],
            "variants": [{"method": "gptq", "bits": 4, "group_size": 32}, {"method": "rtn", "bits": 4, "group_size": 32}]}
    one, two = (plan(load_study(data={**base, "threads": t}), tmp_path) for t in (1, 2))
    q1 = [s.path for s in one if s.kind == "quantize"]
    q2 = [s.path for s in two if s.kind == "quantize"]
    assert q1[0] != q2[0]  # GPTQ: different summation order, different checkpoint
    assert q1[1] == q2[1]  # RTN does not depend on threads
    rec = run_quantize(str(tiny_model_dir), QuantConfig(method="rtn", bits=4, group_size=32), tmp_path / "r", threads=1)
    assert rec["threads"] == 1


def test_dry_run_does_not_call_a_half_finished_eval_done(tiny_model_dir, tmp_path, capsys):
    from quantconf.study import load_study, plan

    study = load_study(data={"models": [str(tiny_model_dir)], "tasks": ["arithmetic", yes_no_task(tmp_path)], "limit": 5,
                             "variants": [{"method": "rtn", "bits": 4, "group_size": 32}]})
    full = plan(study, tmp_path / "s")[0]
    evaluate_into(str(tiny_model_dir), ["arithmetic"], full.path, limit=5, progress=False,
                               log=lambda m: None)
    assert not full.done()
    evaluate_into(str(tiny_model_dir), study.tasks, full.path, limit=5, progress=False,
                               log=lambda m: None)
    assert full.done()


def _study_cfg(tiny_model_dir, tmp_path):
    cfg = tmp_path / "study.yaml"
    cfg.write_text(json.dumps({
        "name": "kill", "models": [str(tiny_model_dir)], "tasks": ["arithmetic"], "limit": 40, "bootstrap": 30,
        "threads": 1, "variants": [{"method": "rtn", "bits": [2, 4], "group_size": 32}]}))
    return cfg


def _run(cfg, out, kill_after=None):
    p = subprocess.Popen([sys.executable, "-m", "quantconf.cli", "study", str(cfg), "--out", str(out)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if kill_after is None:
        return p.wait(timeout=600)
    time.sleep(kill_after)
    p.send_signal(signal.SIGKILL)
    return p.wait()


def _snapshot(out: Path) -> dict:
    files = {}
    for p in sorted(out.rglob("*")):
        if p.is_file() and (p.suffix == ".parquet" or p.name in ("summary.json", "summary.csv", "model.safetensors")):
            files[str(p.relative_to(out))] = p.read_bytes()
    return files


@pytest.mark.integration
def test_killed_studies_resume_to_identical_results(tiny_model_dir, tmp_path):
    cfg = _study_cfg(tiny_model_dir, tmp_path)
    assert _run(cfg, tmp_path / "clean") == 0
    reference = _snapshot(tmp_path / "clean")
    assert any(k.endswith("summary.json") for k in reference)
    out = tmp_path / "killed"
    for delay in (2.5, 4.5, 6.5, 8.5, 10.5):
        _run(cfg, out, kill_after=delay)
    assert _run(cfg, out) == 0
    assert _snapshot(out) == reference
    leftovers = [p for p in out.rglob(".*") if ".tmp" in p.name]
    assert leftovers == []


STUDY_KEYS = ["name", "models", "variants", "tasks", "limit", "data_dir", "batch_size", "threads", "seed", "dtype",
              "bootstrap", "bins", "ppl_text", "ppl_tokens", "outliers", "outlier_samples", "colour"]


VARIANT = st.dictionaries(st.sampled_from(["method", "bits", "group_size", "sym", "calib", "n_samples", "seed", "x",
                                           "scheme", "activations", "smoothquant_alpha", "double_quant",
                                           "outlier_threshold", "replicates"]),
                          JSON | st.sampled_from(["rtn", "gptq", "bnb", "gguf", "w8a8", "hqq", 4, 8, 32, [2, 4],
                                                  "pydoc", "nf4", "Q4_0", "static", 0.5, ["rtn", "bnb"]]),
                          max_size=4)


@FUZZ
@given(data=st.dictionaries(st.sampled_from(STUDY_KEYS),
                            JSON | st.lists(VARIANT, max_size=2) | st.sampled_from([["arithmetic"], ["x"], "file:\x00"]),
                            max_size=7))
def test_fuzz_study_loader_gives_a_study_or_one_error(data):
    from quantconf.study import Study, load_study

    try:
        study = load_study(data=data)
    except QuantconfError as e:
        assert "\n" not in str(e).strip()
        return
    assert isinstance(study, Study) and study.models and study.variants and study.tasks


def _other(value):
    """A different value of the same kind, for the key-sensitivity walk."""
    import dataclasses

    from quantconf.quantizers import QuantConfig

    if isinstance(value, QuantConfig):
        return dataclasses.replace(value, bits=3 if value.bits != 3 else 4)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, tuple):
        return value + ("x",)
    if value is None:
        return "set"
    return f"{value}-changed"


def test_every_step_kind_keys_every_field_of_its_inputs_and_run_sees_nothing_else(tmp_path):
    """A step keys exactly what it reads: for every step kind of a study with every kind of step, changing any
    field of its frozen inputs object changes its key (and so its path), `run` takes no Study, and the step's
    only other state is its Execution (threads, batch size: not keyed) and the steps it reads."""
    import dataclasses
    import inspect

    from quantconf.study import load_study, plan
    from quantconf.study.steps import STEP_KINDS, Execution, StepInputs

    study = load_study(data={
        "models": ["default"], "tasks": ["arithmetic"], "ppl_text": "pydoc", "divergence": True,
        "divergence_questions": True, "outliers": True,
        "variants": [{"method": "gptq", "bits": 4, "group_size": 128, "calib": "pydoc", "seed": [0, 1]},
                     {"method": "rtn", "bits": 4, "group_size": 64}]})
    steps = plan(study, tmp_path)
    assert {s.kind for s in steps} == set(STEP_KINDS)
    for step in steps:
        inputs = step.inputs
        assert isinstance(inputs, StepInputs) and dataclasses.is_dataclass(inputs)
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(inputs, dataclasses.fields(inputs)[0].name, None)
        assert inputs.key() in step.path.name
        for f in dataclasses.fields(inputs):
            changed = dataclasses.replace(inputs, **{f.name: _other(getattr(inputs, f.name))})
            assert changed.key() != inputs.key(), (step.kind, f.name)
        # the execution settings are not keyed: the same plan with other threads / batch size, same paths
    other = plan(load_study(data={**study.as_dict(), "batch_size": 3}), tmp_path)
    assert [s.path for s in other] == [s.path for s in steps]
    # no key holds the study dir: a study moved (or run under another dir, locally or on Ray) keys the same
    assert [s.path.name for s in plan(study, tmp_path / "elsewhere")] == [s.path.name for s in steps]
    assert all(s.execution == Execution(threads=study.threads, batch_size=3) for s in other)
    for kind, cls in STEP_KINDS.items():
        params = inspect.signature(cls.run).parameters
        assert "study" not in params and list(params) == ["self", "log", "tasks", "shard", "lm"], kind
        names = {f.name for f in dataclasses.fields(cls)}
        step_refs = {"source", "evaluation", "full", "members"}  # the steps it reads, named by its inputs
        assert names - step_refs <= {"model", "variant", "path", "inputs", "execution", "tasks", "family"}, kind
