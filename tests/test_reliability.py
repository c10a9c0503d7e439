"""Nothing lost, nothing silently reused: concurrent writers, thread-dependent GPTQ keys, stale temp
dirs, half-finished steps, and bad inputs that must give one line, not a traceback."""

import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import quantconf.evaluation as evaluation
from quantconf.cli import main
from quantconf.errors import QuantconfError
from quantconf.io import atomic_directory, clean_stale_temp, locked
from quantconf.predictions import read_manifest
from conftest import evaluate_into, write_jsonl


def _task_file(tmp_path, name="mini", n=8):
    rows = [{"query": f"Question: is {i} small?\nAnswer:", "choices": ["yes", "no"], "gold": i % 2} for i in range(n)]
    return f"file:{write_jsonl(tmp_path / f'{name}.jsonl', rows)}"


# --------------------------------------------------------------------------- 1. concurrent writers


def test_a_second_writer_to_the_manifest_is_not_lost(tiny_model_dir, tmp_path, monkeypatch):
    """While one eval scores task A, another process finishes task B in the same dir; A's manifest write
    must keep B (the old code rewrote the manifest it had read at start, dropping B)."""
    out = tmp_path / "out"
    real = evaluation.evaluate_task
    other = _task_file(tmp_path, "other")

    def scoring_while_another_writer_finishes(lm, loaded, **kw):
        if loaded.task.name == "arithmetic":
            monkeypatch.setattr(evaluation, "evaluate_task", real)
            evaluate_into(str(tiny_model_dir), [other], out, limit=4, progress=False, log=lambda m: None)
        return real(lm, loaded, **kw)

    monkeypatch.setattr(evaluation, "evaluate_task", scoring_while_another_writer_finishes)
    evaluate_into(str(tiny_model_dir), ["arithmetic"], out, limit=4, progress=False, log=lambda m: None)
    tasks = read_manifest(out)["tasks"]
    assert set(tasks) == {"arithmetic", other}
    log = []
    evaluate_into(str(tiny_model_dir), ["arithmetic", other], out, limit=4, progress=False, log=log.append)
    assert all("reusing" in m for m in log) and len(log) == 2


def test_two_processes_on_one_dir_keep_both_tasks(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    other = _task_file(tmp_path, "other", n=30)
    cmd = [sys.executable, "-m", "quantconf.cli", "eval", str(tiny_model_dir), "--limit", "30", "--out", str(out),
           "--quiet", "--threads", "1"]
    procs = [subprocess.Popen(cmd + ["--tasks", t], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for t in ("arithmetic", other)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    assert set(read_manifest(out)["tasks"]) == {"arithmetic", other}


def test_a_task_being_computed_elsewhere_is_waited_for_then_reused(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    evaluate_into(str(tiny_model_dir), ["arithmetic"], out, limit=4, progress=False, log=lambda m: None)
    stamp = (out / "arithmetic.parquet").stat().st_mtime_ns
    holder_ready, release = threading.Event(), threading.Event()

    def hold():
        with locked(out / ".arithmetic.parquet.lock"):
            holder_ready.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    holder_ready.wait(10)
    threading.Timer(1.0, release.set).start()
    log = []
    evaluate_into(str(tiny_model_dir), ["arithmetic"], out, limit=4, progress=False, log=log.append)
    t.join()
    assert any("waiting for" in m and f"pid {os.getpid()}" in m for m in log)
    assert (out / "arithmetic.parquet").stat().st_mtime_ns == stamp and "reusing" in log[-1]


# --------------------------------------------------------------------------- 2. GPTQ depends on threads


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


# --------------------------------------------------------------------------- 3. stale temp dirs


def test_stale_temp_entries_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale_dir = tmp_path / f".ckpt.tmp-{dead.pid}-abc"
    stale_dir.mkdir()
    (stale_dir / "model.safetensors").write_bytes(b"x" * 100)
    stale_file = tmp_path / f".summary.json.{dead.pid}.xyz.tmp"
    stale_file.write_text("{")
    live_dir = tmp_path / f".other.tmp-{os.getpid()}-def"
    live_dir.mkdir()
    keep = tmp_path / ".not-ours"
    keep.mkdir()
    removed = clean_stale_temp(tmp_path)
    assert sorted(p.name for p in removed) == sorted([stale_dir.name, stale_file.name])
    assert live_dir.exists() and keep.exists() and not stale_dir.exists() and not stale_file.exists()


def test_temp_names_carry_the_owner_pid(tmp_path):
    with atomic_directory(tmp_path / "ckpt") as tmp:
        assert tmp.name.startswith(f".ckpt.tmp-{os.getpid()}-")


# --------------------------------------------------------------------------- 4. dry run of a half-finished eval


def test_dry_run_does_not_call_a_half_finished_eval_done(tiny_model_dir, tmp_path, capsys):
    from quantconf.study import load_study, plan

    study = load_study(data={"models": [str(tiny_model_dir)], "tasks": ["arithmetic", _task_file(tmp_path)], "limit": 4,
                             "variants": [{"method": "rtn", "bits": 4, "group_size": 32}]})
    full = plan(study, tmp_path / "s")[0]
    evaluate_into(str(tiny_model_dir), ["arithmetic"], full.path, limit=4, progress=False,
                               log=lambda m: None)
    assert not full.done()
    evaluate_into(str(tiny_model_dir), study.tasks, full.path, limit=4, progress=False,
                               log=lambda m: None)
    assert full.done()


# --------------------------------------------------------------------------- 5. local model dirs


def test_null_quantization_config_is_not_a_quantized_checkpoint(tiny_model_dir, tmp_path, capsys):
    from quantconf.models import is_quantized_checkpoint, load_model

    d = tmp_path / "m"
    d.mkdir()
    for f in tiny_model_dir.iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "quantization_config": None, "auto_map": {"AutoModelForCausalLM": "x.Y"}}))
    assert not is_quantized_checkpoint(d)
    load_model(str(d))
    assert "auto_map" in capsys.readouterr().err  # says it runs the built-in class, not the repo's code


# --------------------------------------------------------------------------- 6-8. one line, nothing left behind


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


def test_empty_choice_acc_norm_is_defined_and_normalize_refuses_it():
    from quantconf.analysis.metrics import accuracy, task_metrics

    df = pd.DataFrame({"doc_id": [0, 1], "task": "t", "loglik": [[-4.0, -0.5], [-6.0, -3.0]],
                       "n_chars": [[8, 0], [2, 6]], "n_tokens": [[2, 1], [1, 2]], "n_bytes": [[8, 0], [2, 6]],
                       "gold": [0, 1], "choices": [["abcdefgh", ""], ["ab", "abcdef"]]})
    # doc 0: the empty choice has the higher loglik but never wins acc_norm (lm-eval: -0.5 / 0 = -inf)
    # doc 1: -6/2 = -3 vs -3/6 = -0.5 -> choice 1 (gold)
    with np.errstate(all="raise"):
        assert accuracy(df) == {"acc": 0.5, "acc_norm": 1.0}
    with pytest.raises(QuantconfError, match="doc 0 choice 1 is empty"):
        task_metrics(df, n_boot=0, normalize="chars")
    assert task_metrics(df, n_boot=0, normalize="tokens")["acc"] == 0.5


def test_failed_eval_leaves_no_empty_out_dir(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "new-out"
    assert main(["eval", str(tiny_model_dir), "--tasks", "nope", "--out", str(out)]) == 2
    assert not out.exists()
    assert main(["import-lm-eval", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert not out.exists()


def test_checkpoint_files_get_the_umask_mode(tiny_model_dir, tmp_path):
    from quantconf.quantizers import QuantConfig, run_quantize

    old = os.umask(0o022)
    try:
        run_quantize(str(tiny_model_dir), QuantConfig(method="rtn", bits=4, group_size=32), tmp_path / "r")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "r").iterdir()}
    assert modes["model.safetensors"] == 0o644 and set(modes.values()) == {0o644}


# --------------------------------------------------------------------------- kill and resume


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


# --------------------------------------------------------------------------- property-based fuzzing

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-10**30, max_value=10**30) | st.floats(allow_nan=True)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)
ROW = st.fixed_dictionaries({}, optional={"query": JSON | st.text(), "choices": JSON | st.lists(st.text(), max_size=5),
                                          "gold": JSON | st.integers(-3, 6)})
LINE = (ROW.map(json.dumps) | JSON.map(json.dumps) | st.text(max_size=40)
        | st.just("[" * 5000 + "]" * 5000) | st.just('{"gold": ' + "9" * 5000 + "}")
        | st.binary(max_size=12).map(lambda b: b.decode("latin-1")))
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(lines=st.lists(LINE, max_size=6), raw_bytes=st.binary(max_size=8))
def test_fuzz_file_task_reader_gives_questions_or_one_error(tmp_path, lines, raw_bytes):
    from quantconf.tasks import load_task

    f = tmp_path / "fuzz.jsonl"
    f.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass") + b"\n" + raw_bytes)
    try:
        loaded = load_task(f"file:{f}")
    except QuantconfError as e:
        assert "\n" not in str(e).strip()
        return
    for q in loaded.questions:
        assert isinstance(q.context, str) and q.choices and 0 <= q.gold < len(q.choices)


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
