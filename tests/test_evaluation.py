import json
import os
import subprocess
import sys
import threading

import pytest

import quantconf.evaluation as evaluation
from conftest import evaluate_into, write_jsonl, yes_no_task
from quantconf.cli import main
from quantconf.io import locked
from quantconf.predictions import read_manifest, read_prediction_dir


def _task_file(tmp_path, n=10):
    rows = [{"query": f"Question: item {i}?\nAnswer:", "choices": ["yes", "no thanks", "maybe so"], "gold": i % 3}
            for i in range(n)]
    return write_jsonl(tmp_path / "mini.jsonl", rows)


def test_eval_writes_parquet_manifest_and_reuses(tiny_model_dir, tmp_path, capsys):
    f = _task_file(tmp_path)
    out = tmp_path / "out"
    args = ["eval", str(tiny_model_dir), "--tasks", f"file:{f},arithmetic", "--limit", "9", "--out", str(out), "--quiet"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "file_mini" not in printed and "arithmetic" in printed
    preds = read_prediction_dir(out)
    df = preds[f"file:{f}"]
    assert len(df) == 9 and set(df.columns) >= {"doc_id", "task", "gold", "choices", "loglik", "n_tokens",
                                                "n_chars", "n_bytes", "is_greedy"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["sha256"] and manifest["packages"]["torch"].startswith("2.13")
    assert manifest["tasks"]["arithmetic"]["source"] == "generated:seed=1234"
    mtime = (out / "arithmetic.parquet").stat().st_mtime_ns
    assert main(args) == 0
    assert "reusing" in capsys.readouterr().err
    assert (out / "arithmetic.parquet").stat().st_mtime_ns == mtime
    assert main(args + ["--overwrite"]) == 0
    assert (out / "arithmetic.parquet").stat().st_mtime_ns != mtime
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]


@pytest.mark.parametrize("extra, message", [
    (["--tasks", "nope"], "unknown task"),
    (["--tasks", "piqa", "--data-dir", "/nonexistent/dir"], "does not exist"),
])
def test_cli_errors_are_one_line(tiny_model_dir, tmp_path, capsys, extra, message):
    rc = main(["eval", str(tiny_model_dir), "--out", str(tmp_path / "o"), "--quiet", *extra])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1


def test_limit_must_be_positive(tiny_model_dir, tmp_path, capsys):
    for bad in ("0", "-1"):
        with pytest.raises(SystemExit) as e:
            main(["eval", str(tiny_model_dir), "--tasks", "arithmetic", "--out", str(tmp_path), "--limit", bad])
        assert e.value.code == 2
    assert "positive integer" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere; permission test needs a normal user")
def test_unwritable_out_dir(tiny_model_dir, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    assert main(["eval", str(tiny_model_dir), "--tasks", "arithmetic", "--out", str(ro / "x"), "--quiet"]) == 2
    assert "cannot write to output dir" in capsys.readouterr().err


def test_out_path_is_a_file(tiny_model_dir, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["eval", str(tiny_model_dir), "--tasks", "arithmetic", "--out", str(f / "sub"), "--quiet"]) == 2
    assert "cannot write to output dir" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncate", "alter", "delete"])
def test_a_damaged_prediction_file_is_recomputed_not_reported_back(tiny_model_dir, tmp_path, capsys, damage):
    """Every predictions file's sha256 is in the manifest: on reuse a truncated, altered or missing file is
    said in one line and recomputed (never "re-run the command you just ran")."""
    out = tmp_path / "out"
    args = ["eval", str(tiny_model_dir), "--tasks", "arithmetic", "--limit", "6", "--out", str(out), "--quiet"]
    assert main(args) == 0
    entry = json.loads((out / "manifest.json").read_text())["tasks"]["arithmetic"]
    path = out / "arithmetic.parquet"
    good = path.read_bytes()
    import hashlib

    assert entry["sha256"] == hashlib.sha256(good).hexdigest()
    if damage == "truncate":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "alter":
        path.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    else:
        path.unlink()
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert ("recomputing" in err) == (damage != "delete") and "re-run quantconf eval" not in err
    assert path.read_bytes() == good  # the same predictions again, bit for bit
    assert len(read_prediction_dir(out)["arithmetic"]) == 6


def test_eval_console_has_no_third_party_noise(tiny_model_dir, tmp_path):
    """What libraries print while a model loads (torchao's 'Failed to load ...so', torch's _pytree
    deprecation warnings, transformers' 'Loading weights' bar) stays off the console (file descriptors
    1 and 2 of a real process, not pytest's capture)."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "quantconf.cli", "eval", str(tiny_model_dir), "--tasks", "arithmetic", "--limit", "4",
           "--out", str(tmp_path / "o"), "--quiet"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    for noise in ("Failed to load", "_pytree", "Loading weights", "is an Enum subclass"):
        assert noise not in res.stderr and noise not in res.stdout, noise
    log = (tmp_path / "o" / "quantconf.log").read_text()  # kept, not lost
    assert "Loading weights" in log
    # --verbose: the libraries print to the console as they would
    verbose = subprocess.run(cmd[:-1] + ["--overwrite", "--verbose"], capture_output=True, text=True, timeout=300)
    assert verbose.returncode == 0 and "Loading weights" in verbose.stderr + verbose.stdout


def test_a_second_writer_to_the_manifest_is_not_lost(tiny_model_dir, tmp_path, monkeypatch):
    """While one eval scores task A, another process finishes task B in the same dir; A's manifest write
    must keep B (the old code rewrote the manifest it had read at start, dropping B)."""
    out = tmp_path / "out"
    real = evaluation.evaluate_task
    other = yes_no_task(tmp_path, "other")

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


def test_writers_starting_together_in_one_dir_do_not_fail_each_others_write_check(tmp_path):
    """The writability probe had one name per dir: a second writer unlinked the first one's probe, which then
    failed with "cannot write to output dir" (seen in CI as the two-process test below exiting 2)."""
    from concurrent.futures import ThreadPoolExecutor

    from quantconf.io import ensure_writable_dir

    def start_many(_):
        for _ in range(300):
            ensure_writable_dir(tmp_path)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(start_many, range(8)))  # raised QuantconfError within the first few hundred starts
    assert list(tmp_path.iterdir()) == []  # no probe left behind


def test_two_processes_on_one_dir_keep_both_tasks(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    other = yes_no_task(tmp_path, "other", n=30)
    cmd = [sys.executable, "-m", "quantconf.cli", "eval", str(tiny_model_dir), "--limit", "30", "--out", str(out),
           "--quiet", "--threads", "1"]
    procs = [subprocess.Popen(cmd + ["--tasks", t], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for t in ("arithmetic", other)]
    finished = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err.decode()[-2000:] for _, err in finished]
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


def test_failed_eval_leaves_no_empty_out_dir(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "new-out"
    assert main(["eval", str(tiny_model_dir), "--tasks", "nope", "--out", str(out)]) == 2
    assert not out.exists()
    assert main(["import-lm-eval", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert not out.exists()
