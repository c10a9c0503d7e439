"""Executors: local and Ray give the same study numbers; failures are isolated; killed workers retried;
sharded evaluation equals unsharded bit for bit."""

import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

from quantconf import QuantconfError
from quantconf.study.executors import Job, execute
from quantconf.predictions import read_prediction_dir

# Every test here may start a Ray cluster, and the two-node fixture ends with `ray stop --force`, which stops
# every Ray process on the machine: under pytest-xdist these tests run one after another on one worker.
pytestmark = pytest.mark.xdist_group("ray")


def test_xdist_loadgroup_keeps_a_group_on_one_worker(request):
    """The grouping above works only if xdist's `@group` suffix reaches the test id (pytest 9.2 drops it: the
    group is then split over the workers without a word)."""
    if not getattr(request.config.option, "loadgroup", False):  # xdist sets it on its workers
        pytest.skip("not run under pytest-xdist --dist loadgroup (make test runs it so)")
    assert request.node.nodeid.endswith("@ray"), request.node.nodeid


def _write(path: str, text: str = "ok") -> None:
    Path(path).write_text(text)


def _fail(message: str) -> None:
    raise ValueError(message)


def _die_once(marker: str) -> None:
    """SIGKILL this worker the first time (as a node dying mid-step would); finish the second time."""
    if not Path(marker).exists():
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    Path(marker + ".done").write_text(str(os.getpid()))


def _jobs(tmp_path: Path) -> list[Job]:
    return [
        Job("a", "quantize", functools.partial(_write, str(tmp_path / "a"))),
        Job("broken", "quantize", functools.partial(_fail, "deterministic failure")),
        Job("needs broken", "eval", functools.partial(_write, str(tmp_path / "c")), deps=(1,)),
        Job("needs a", "eval", functools.partial(_write, str(tmp_path / "d")), deps=(0,)),
    ]


def test_local_executor_isolates_a_failing_job(tmp_path):
    log = []
    outcome = execute(_jobs(tmp_path), "local", log=log.append)
    assert [(f.job, f.skipped) for f in outcome.failures] == [("broken", False), ("needs broken", True)]
    assert "ValueError: deterministic failure (at test_executors.py:" in outcome.failures[0].error
    assert (tmp_path / "a").is_file() and (tmp_path / "d").is_file() and not (tmp_path / "c").exists()
    assert log[0] == "[1/4] start a" and log[1].startswith("[1/4] done a in ") and log[1].endswith("(3 left)")
    assert any(m.startswith("[2/4] FAILED broken") for m in log)
    with pytest.raises(ValueError, match="dependencies must be earlier jobs"):
        execute([Job("x", "eval", print, deps=(0,))], "local")
    with pytest.raises(QuantconfError, match="executor must be one of"):
        execute([], "dask")


@pytest.fixture
def ray_mod():
    ray = pytest.importorskip("ray")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test file
    return ray


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray cluster (two CPUs) for the tests after the first Ray test: `execute` finds Ray
    initialized and leaves it running, so they share the cluster and its warm workers (~10 s a start).
    The first Ray test in this file starts and stops its own, as `execute` does for a user."""
    ray = pytest.importorskip("ray")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", configure_logging=True)
    yield ray
    ray.shutdown()


@pytest.mark.integration  # a real Ray cluster (worker processes): not a unit test
def test_ray_refuses_a_study_dir_workers_cannot_write(tmp_path, ray_mod):
    assert not ray_mod.is_initialized()  # runs first: `execute` starts a cluster, then stops it
    with pytest.raises(QuantconfError, match="Ray workers cannot write the study dir .*storage every node"):
        execute(_jobs(tmp_path)[:1], "ray", shared_dir=tmp_path / "not-there", ray_num_cpus=2)
    assert not ray_mod.is_initialized()


@pytest.mark.integration  # a real Ray cluster (worker processes): not a unit test
def test_ray_retries_a_killed_worker_and_isolates_failures(tmp_path, ray_cluster):
    marker = str(tmp_path / "victim")
    jobs = _jobs(tmp_path) + [Job("victim", "eval", functools.partial(_die_once, marker))]
    log = []
    outcome = execute(jobs, "ray", log=log.append, max_retries=2, shared_dir=tmp_path, ray_num_cpus=2)
    assert [(f.job, f.skipped) for f in outcome.failures] == [("broken", False), ("needs broken", True)]
    killed, finished = Path(marker).read_text(), Path(marker + ".done").read_text()
    assert killed != finished  # a new worker process ran the retry
    assert (tmp_path / "d").is_file() and not (tmp_path / "c").exists()
    assert sum("left)" in m for m in log) == len(jobs) and not list(tmp_path.glob(".probe-*"))
    # without retries the killed job is a failure, the others are unaffected
    Path(marker).unlink()
    Path(marker + ".done").unlink()
    outcome = execute([jobs[0], jobs[-1]], "ray", log=log.append, max_retries=0, ray_num_cpus=2)
    assert [f.job for f in outcome.failures] == ["victim"] and "died" in outcome.failures[0].error.lower()


def _summary_numbers(out: Path) -> pd.DataFrame:
    df = pd.read_csv(out / "summary.csv")
    keep = [c for c in df.columns if c not in ("seconds",) and not c.endswith("_seconds")]
    return df[keep].sort_values(list(df.columns[:3])).reset_index(drop=True)


@pytest.mark.integration  # a real Ray cluster (worker processes): not a unit test
def test_study_through_ray_equals_local_and_shards_equal_unsharded(tiny_model_dir, tmp_path, ray_cluster):
    from quantconf.study import load_study, run_study

    config = {"models": [str(tiny_model_dir)], "tasks": ["arithmetic", "arithmetic_gen"], "limit": 60, "bootstrap": 20,
              "batch_size": 1, "threads": 1, "max_gen_toks": 3,
              "variants": [{"method": "rtn", "bits": 4, "group_size": 32}, {"method": "rtn", "bits": 3,
                                                                             "group_size": 32}]}
    local = tmp_path / "local"
    run_study(load_study(data=config), local, log=lambda m: None)
    log = []
    sharded = {**config, "shards": 3, "resources": {"eval": {"num_cpus": 1}, "quantize": {"num_cpus": 1}}}
    report = run_study(load_study(data=sharded), tmp_path / "ray", executor="ray", log=log.append)
    assert report.is_file()
    pd.testing.assert_frame_equal(_summary_numbers(local), _summary_numbers(tmp_path / "ray"))
    # 3 evals (full + 2 quantized) x 2 tasks x 3 shards, 2 quantize steps, 3 analyses: 18 + 2 + 3 jobs
    assert sum(" in " in m and "left)" in m for m in log) == 23 and any("shard 3/3" in m for m in log)
    assert sum("done analysis " in m and "left)" in m for m in log) == 3  # analyses run as Ray tasks
    for step in (local / "steps").glob("eval-*"):
        for task in ("arithmetic", "arithmetic_gen"):  # a choice task and a generation task
            ours = read_prediction_dir(step)[task]
            theirs = read_prediction_dir(tmp_path / "ray" / "steps" / step.name)[task]
            pd.testing.assert_frame_equal(ours, theirs)  # bit for bit, though scored in 3 shards
            manifest = json.loads((tmp_path / "ray" / "steps" / step.name / "manifest.json").read_text())
            assert manifest["tasks"][task]["shards"] == 3
        assert not (tmp_path / "ray" / "steps" / step.name / ".shards").exists()


def test_failing_step_is_reported_and_rerun_resumes(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import quantconf.study.steps as study_mod
    from quantconf.cli import main

    config = tmp_path / "s.yaml"
    config.write_text(json.dumps({"models": [str(tiny_model_dir)], "tasks": ["arithmetic"], "limit": 12,
                                  "bootstrap": 10, "variants": [{"method": "rtn", "bits": 4, "group_size": 32},
                                                                {"method": "rtn", "bits": 8, "group_size": 32}]}))
    real = study_mod.run_quantize

    def broken_for_8_bits(model, variant, *a, **k):
        if variant.bits == 8:
            raise RuntimeError("out of memory (simulated)")
        return real(model, variant, *a, **k)

    monkeypatch.setattr(study_mod, "run_quantize", broken_for_8_bits)
    assert main(["study", str(config), "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert "FAILED: quantize" in captured.out and "RuntimeError: out of memory (simulated)" in captured.out
    assert "skipped: eval" in captured.out and "1 step(s) failed and 2 were skipped" in captured.err
    assert not (tmp_path / "out" / "report.html").exists()
    monkeypatch.setattr(study_mod, "run_quantize", real)
    assert main(["study", str(config), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    reused = [line.split()[0] for line in out.splitlines() if "done, reusing" in line]
    # the 4-bit quantization and the analyses of the finished evaluations are not redone
    assert sorted(reused) == ["analysis", "analysis", "quantize"] and "report:" in out


def test_cli_shards_merge_into_the_unsharded_file(tiny_model_dir, tmp_path, capsys):
    from quantconf.cli import main

    common = ["eval", str(tiny_model_dir), "--tasks", "arithmetic,piqa", "--limit", "30", "--batch-size", "1",
              "--quiet"]
    data = ["--data-dir", str(Path(__file__).resolve().parents[2] / "shared" / "data")]
    if not Path(data[1]).is_dir():
        common[3], data = "arithmetic", []
    assert main(common + data + ["--out", str(tmp_path / "full")]) == 0
    assert main(common + data + ["--out", str(tmp_path / "sh"), "--shard", "2/3"]) == 0
    assert "shard 2/3 written" in capsys.readouterr().out
    assert main(common + data + ["--out", str(tmp_path / "sh"), "--shard", "1/3"]) == 0
    assert not (tmp_path / "sh" / "arithmetic.parquet").exists()
    assert main(common + data + ["--out", str(tmp_path / "sh"), "--shard", "3/3"]) == 0
    full, sharded = read_prediction_dir(tmp_path / "full"), read_prediction_dir(tmp_path / "sh")
    assert full.keys() == sharded.keys()
    for task in full:
        pd.testing.assert_frame_equal(full[task], sharded[task])
    keys = [json.loads((tmp_path / d / "manifest.json").read_text())["tasks"]["arithmetic"]["key"] for d in ("full", "sh")]
    assert keys[0] == keys[1]  # an unsharded run reuses the merged file
    with pytest.raises(SystemExit):
        main(common + data + ["--out", str(tmp_path / "sh"), "--shard", "4/3"])
    assert "1 <= I <= N" in capsys.readouterr().err


def _ray(*args: str, env: dict, **kw):
    return subprocess.run([str(Path(sys.executable).with_name("ray")), *args], env=env, capture_output=True,
                          text=True, timeout=180, **kw)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def two_node_cluster(monkeypatch):
    """A Ray cluster of two nodes on this machine, started as a user starts one (`ray start --head`, then
    `ray start --address` on the second node), each with its own temp dir and one CPU. Ray 2.60 clusters
    authenticate with a token: every node and the driver (a `quantconf study` process) get the same one,
    from the environment, which Ray reads when it is imported. Yields (address, the worker
    node's process (its own session: killing the group kills the node), the worker node's temp dir)."""
    ray = pytest.importorskip("ray")
    ray.shutdown()  # the module's local cluster (`ray stop --force` below would end it anyway)
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex + uuid.uuid4().hex}
    for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
        monkeypatch.setenv(k, env[k])
    # short temp dirs: Ray's unix sockets live there and their paths are limited to 107 bytes
    head_tmp, worker_tmp = tempfile.mkdtemp(prefix="qc-ray-head-"), tempfile.mkdtemp(prefix="qc-ray-worker-")
    address = f"127.0.0.1:{_free_port()}"
    started = _ray("start", "--head", f"--port={address.split(':')[1]}", "--num-cpus=1", f"--temp-dir={head_tmp}",
                   "--include-dashboard=false", "--disable-usage-stats", env=env)
    assert started.returncode == 0, started.stderr[-3000:]
    worker = subprocess.Popen([str(Path(sys.executable).with_name("ray")), "start", f"--address={address}",
                               "--num-cpus=1", f"--temp-dir={worker_tmp}", "--block"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(60):
            status = _ray("status", f"--address={address}", env=env).stdout
            if status.count(" node_") >= 2:
                break
            time.sleep(1)
        else:
            pytest.fail(f"the second node did not join: {status[-2000:]}")
        yield address, worker, Path(worker_tmp)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        _ray("stop", "--force", env=env)
        for d in (head_tmp, worker_tmp):
            shutil.rmtree(d, ignore_errors=True)


@pytest.mark.integration  # a real Ray cluster (worker processes): not a unit test
def test_a_study_across_two_nodes_survives_losing_one(tiny_model_dir, tmp_path, two_node_cluster):
    """Multi-node Ray, as a user runs it: `quantconf study --executor ray --ray-address` against a head and
    a worker node; the worker node is killed when the first job finishes (a job it runs is lost
    mid-step); the study completes on the head node alone, with the numbers of a local run."""
    from quantconf.study import load_study, run_study

    address, worker, worker_tmp = two_node_cluster
    config = {"models": [str(tiny_model_dir)], "tasks": ["arithmetic"], "limit": 40, "bootstrap": 20,
              "batch_size": 1, "threads": 1, "max_retries": 3,
              "variants": [{"method": "rtn", "bits": 4, "group_size": 32}, {"method": "rtn", "bits": 3,
                                                                             "group_size": 32}]}
    run_study(load_study(data=config), tmp_path / "local", log=lambda m: None)
    (tmp_path / "study.yaml").write_text(json.dumps(config))
    driver = subprocess.Popen([str(Path(sys.executable).with_name("quantconf")), "study", str(tmp_path / "study.yaml"),
                               "--out", str(tmp_path / "ray"), "--executor", "ray", "--ray-address", address],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    lines, killed_at = [], None
    for line in driver.stdout:
        lines.append(line)
        if killed_at is None and " done " in line and "left)" in line:  # the first finished job
            os.killpg(worker.pid, signal.SIGKILL)
            killed_at = len(lines)
    assert driver.wait(timeout=600) == 0, "".join(lines)[-4000:]
    assert killed_at is not None
    # the node is gone: no process of it (raylet, its workers) is left
    left = subprocess.run(["pgrep", "-f", str(worker_tmp)], capture_output=True, text=True).stdout.split()
    assert left == [], left
    # the worker node did take jobs before it died (its workers' output is in its own temp dir)
    worker_output = "".join(p.read_text(errors="replace") for p in worker_tmp.glob("session_*/logs/worker-*.out"))
    assert " start " in worker_output
    finished = [m for m in lines if "left)" in m and m.startswith("[")]
    n_jobs = 1 + 2 * 2 + 3  # full eval, 2 x (quantize + eval), 3 analyses
    assert len(finished) == n_jobs and not any("FAILED" in m for m in finished), "".join(lines)[-4000:]
    assert any("left)" in m for m in lines[killed_at:])  # jobs finished after the node was lost
    pd.testing.assert_frame_equal(_summary_numbers(tmp_path / "local"), _summary_numbers(tmp_path / "ray"))
