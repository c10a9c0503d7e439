"""Run a set of dependent jobs: one after another in this process (`local`), or as Ray tasks (`ray`).

A study (`run.py`) turns its plan into `Job`s — quantize, eval per (model/variant, task[, shard]),
ppl, outliers — each a picklable callable plus the indices of the jobs it needs. Both executors:
  * print one line when a job starts and one when it finishes, with its elapsed time and how many
    jobs are left;
  * isolate failures: a job that raises is recorded with its error, the jobs that need it are
    skipped, every other job still runs; the caller gets the list of failures (a re-run resumes
    only what is missing, since every step is content-addressed and written atomically).
With Ray, each job is a Ray task with the resources its kind declares (CPUs, GPUs, memory), its
dependencies are passed as object refs (Ray starts it when they are resolved; no polling), and a
worker that dies mid-job is retried by Ray (`max_retries`; atomic writes leave no partial file).
Before submitting, `check_shared_storage` has a task on every node write a probe file into the
study dir, and the driver checks it sees it: a study dir must be on storage every worker shares.

ray is imported only by the ray executor (it takes seconds and is an optional dependency).
"""

from __future__ import annotations

import os
import socket
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from quantconf.errors import QuantconfError

EXECUTORS = ("local", "ray")
RESOURCE_KEYS = ("num_cpus", "num_gpus", "memory")


@dataclass
class Job:
    name: str  # for progress lines: "eval default gptq-w4-g128-pydoc piqa"
    kind: str  # quantize | eval | ppl | outliers: picks the Ray resources
    run: Callable[[], None]  # picklable (a module-level function or a functools.partial of one)
    deps: tuple[int, ...] = ()  # indices of the jobs this one needs


@dataclass
class Failure:
    job: str
    error: str
    skipped: bool = False  # not run because a job it needs failed


@dataclass
class Outcome:
    failures: list[Failure] = field(default_factory=list)


def execute(jobs: list[Job], executor: str = "local", *, log=print, ray_address: str | None = None,
            resources: dict | None = None, max_retries: int = 2, shared_dir: Path | None = None,
            ray_num_cpus: int | None = None) -> Outcome:
    """Run `jobs` (a DAG: deps point to earlier jobs) and return what failed."""
    if executor not in EXECUTORS:
        raise QuantconfError(f"executor must be one of {EXECUTORS}, got {executor!r}", param="executor")
    for i, job in enumerate(jobs):
        if any(not 0 <= d < i for d in job.deps):
            raise ValueError(f"job {job.name}: dependencies must be earlier jobs, got {job.deps}")
    if executor == "local":
        return _execute_local(jobs, log)
    return _execute_ray(jobs, log, ray_address, resources or {}, max_retries, shared_dir, ray_num_cpus)


def _run_one(job: Job) -> dict:
    """Run a job; an exception becomes a failed outcome (so it is not retried: it would fail again)."""
    t0 = time.perf_counter()
    try:
        job.run()
    except Exception as e:  # every kind of error a step can raise is recorded, never lost
        msg = str(e).splitlines()[0][:300] if str(e) else ""
        where = ""
        if not isinstance(e, QuantconfError):  # an unexpected error: say where it was raised
            frame = traceback.extract_tb(e.__traceback__)[-1]
            where = f" (at {Path(frame.filename).name}:{frame.lineno} in {frame.name})"
        return {"status": "failed", "error": f"{type(e).__name__}: {msg}{where}",
                "seconds": time.perf_counter() - t0}
    return {"status": "ok", "seconds": time.perf_counter() - t0}


def _skipped(needed: str) -> dict:
    return {"status": "skipped", "error": f"needs {needed}, which did not finish", "seconds": 0.0}


def _finish_line(i: int, n: int, job: Job, result: dict, left: int) -> str:
    what = {"ok": "done", "failed": "FAILED", "skipped": "skipped"}[result["status"]]
    extra = f": {result['error']}" if result["status"] != "ok" else ""
    return f"[{i + 1}/{n}] {what} {job.name} in {result['seconds']:.1f}s ({left} left){extra}"


def _execute_local(jobs: list[Job], log) -> Outcome:
    outcome, results = Outcome(), []
    for i, job in enumerate(jobs):
        failed_deps = [jobs[d].name for d in job.deps if results[d]["status"] != "ok"]
        if failed_deps:
            result = _skipped(failed_deps[0])
        else:
            log(f"[{i + 1}/{len(jobs)}] start {job.name}")
            result = _run_one(job)
        results.append(result)
        log(_finish_line(i, len(jobs), job, result, len(jobs) - i - 1))
        _record(outcome, job, result)
    return outcome


def _record(outcome: Outcome, job: Job, result: dict) -> None:
    if result["status"] != "ok":
        outcome.failures.append(Failure(job.name, result["error"], skipped=result["status"] == "skipped"))


def _ray_job(job: Job, index: int, total: int, *dep_results: dict) -> dict:
    """The body of every Ray task: skip if a dependency did not finish, else run and report."""
    failed = [r["job"] for r in dep_results if r["status"] != "ok"]
    if failed:
        return {**_skipped(failed[0]), "job": job.name}
    print(f"[{index + 1}/{total}] start {job.name} (pid {os.getpid()} on {socket.gethostname()})", flush=True)
    return {**_run_one(job), "job": job.name}


def _probe(folder: str, token: str) -> str:
    path = Path(folder) / f".probe-{token}-{socket.gethostname()}-{os.getpid()}"
    path.write_text(token)
    return str(path)


def check_shared_storage(ray, folder: Path) -> None:
    """Every alive node writes a probe file into `folder`; the driver must see each of them."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0)(_probe)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    token = uuid.uuid4().hex[:8]
    refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote(str(folder), token) for n in nodes]
    try:
        written = ray.get(refs, timeout=120)
    except Exception as e:
        raise QuantconfError(f"Ray workers cannot write the study dir {folder} ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:200]}); put it on storage every node mounts at the same "
                             "path (NFS, a shared volume)") from None
    missing = [p for p in written if not Path(p).is_file()]
    for p in written:
        Path(p).unlink(missing_ok=True)
    if missing:
        raise QuantconfError(f"Ray workers wrote {missing[0]} but this driver cannot see it: the study dir "
                             f"{folder} must be on storage every node shares, at the same path")


def _execute_ray(jobs, log, address, resources, max_retries, shared_dir, num_cpus) -> Outcome:
    try:
        import ray
    except ImportError as e:
        raise QuantconfError(f"the ray executor needs Ray ({e}); pip install 'ray==2.60.0'", param="executor") from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, num_cpus=None if address else num_cpus, include_dashboard=False,
                 logging_level="ERROR", configure_logging=True)
    try:
        if shared_dir is not None:
            check_shared_storage(ray, Path(shared_dir))
        remote = ray.remote(_ray_job)
        refs, index_of = [], {}
        for i, job in enumerate(jobs):
            opts = {k: v for k, v in (resources.get(job.kind) or {}).items() if k in RESOURCE_KEYS}
            ref = remote.options(max_retries=max_retries, retry_exceptions=False, name=job.name[:100], **opts) \
                .remote(job, i, len(jobs), *[refs[d] for d in job.deps])
            refs.append(ref)
            index_of[ref] = i
        outcome, pending, t0 = Outcome(), list(refs), time.perf_counter()
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                i = index_of[ref]
                try:
                    result = ray.get(ref)
                except Exception as e:  # the worker died more often than max_retries, or Ray failed
                    result = {"status": "failed", "seconds": time.perf_counter() - t0,
                              "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
                log(_finish_line(i, len(jobs), jobs[i], result, len(pending)))
                _record(outcome, jobs[i], result)
        return outcome
    finally:
        if started_here:
            ray.shutdown()
