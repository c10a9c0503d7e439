"""Run a study: its plan as executor jobs (locally or on Ray), resumable, then its report.

`run_study` runs every step not done yet (a failing step does not stop the others), then writes the
report. Each job runs in the driver's working directory when the machine has it and takes the
step's lock, so two studies sharing a directory share the work.
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

import yaml

from quantconf.errors import QuantconfError
from quantconf.io import (atomic_write_bytes, check_writable_files, clean_stale_temp, ensure_writable_dir, locked,
                          working_directory)
from quantconf.models.builtin import model_fingerprint
from quantconf.models.loading import LoadOptions
from quantconf.models.runtime import available_cores
from quantconf.predictions import read_manifest
from quantconf.study.config import Study, load_study
from quantconf.study.executors import Job, execute
from quantconf.study.plan import check_study_data, plan
from quantconf.study.report import REPORT_FILES, write_report
from quantconf.study.steps import RESOURCE_KINDS, AnalysisStep, EvalStep, NoiseFloorStep, Step


def run_study(study: Study, study_dir: Path, dry_run: bool = False, log=print, executor: str | None = None,
              ray_address: str | None = None) -> Path | None:
    """Run every step not done yet, then write the report; returns its path (None for a dry run).

    `executor` ("local" or "ray"; default: the config's) and `ray_address` override the config.
    A step that fails does not stop the others: the study runs what it can, then raises a
    QuantconfError listing each failed step (a re-run resumes only what is missing)."""
    executor = executor or study.executor
    ray_address = ray_address or study.ray_address
    study_dir = ensure_writable_dir(Path(study_dir)).resolve()  # absolute: jobs may run elsewhere
    for gone in clean_stale_temp(study_dir):  # what killed runs left (their pid is in the name)
        log(f"removed {gone}, left by a killed run")
    check_writable_files(*(study_dir / name for name in (*REPORT_FILES, "study.yaml")))  # before hours of work
    steps = plan(study, study_dir)
    if not all(s.done() for s in steps if isinstance(s, EvalStep)):
        check_study_data(study, log)  # before minutes of quantization are spent on a study that cannot finish
    if dry_run:
        for s in steps:
            log(f"[{'done' if s.done() else 'todo'}] {s.describe()}")
        return None
    atomic_write_bytes(study_dir / "study.yaml", yaml.safe_dump(study.as_dict(), sort_keys=False).encode())
    jobs = study_jobs(study, steps, per_task=executor == "ray", log=log if executor == "local" else worker_log)
    outcome = execute(jobs, executor, log=log, ray_address=ray_address, resources=job_resources(study),
                      max_retries=study.max_retries, shared_dir=study_dir)
    if outcome.failures:
        failed = [f for f in outcome.failures if not f.skipped]
        for f in outcome.failures:
            log(f"{'skipped' if f.skipped else 'FAILED'}: {f.job}: {f.error}")
        raise QuantconfError(f"{len(failed)} step(s) failed and {len(outcome.failures) - len(failed)} were skipped "
                             f"(first: {failed[0].job}: {failed[0].error}); fix the cause and re-run: finished steps "
                             "are reused")
    with locked(study_dir / ".report.lock", log, what="the report"):
        return write_report(study, study_dir, steps, log=log)


def analyse_missing(study: Study, steps: list[Step], log=print) -> None:
    """Compute the analysis steps whose evaluations are finished but which are not (a study run by an
    older version, or whose predictions were recomputed): once, stored like any step."""
    for s in steps:
        if isinstance(s, (AnalysisStep, NoiseFloorStep)) and not s.done() and all(e.done() for e in s.reads()):
            s.run_once(log)


def report_study(study_dir: Path, log=print) -> Path:
    """The report of a study directory (its study.yaml): renders what the steps computed."""
    cfg = Path(study_dir) / "study.yaml"
    if not cfg.is_file():
        raise QuantconfError(f"{cfg} not found; is {study_dir} a study directory?")
    study = load_study(cfg)
    check_writable_files(*(Path(study_dir) / name for name in REPORT_FILES))
    steps = plan(study, Path(study_dir))
    analyse_missing(study, steps, log)
    with locked(Path(study_dir) / ".report.lock", log, what="the report"):
        return write_report(study, Path(study_dir), steps, log=log)


def worker_log(message: str) -> None:
    """What a Ray job prints (Ray forwards workers' output to the driver). A module function, so
    jobs pickle it by name: the driver's builtins.print may be wrapped and not picklable."""
    print(message, flush=True)


def study_jobs(study: Study, steps: list[Step], per_task: bool, log=print) -> list[Job]:
    """The plan as executor jobs. An eval step becomes one job (all its tasks: the model loads once)
    or, with `per_task`, one job per task; with `shards` > 1, one job per shard. A step's jobs wait
    for every job of the steps it needs (`Step.needs`)."""
    jobs: list[Job] = []
    jobs_of: dict[int, list[int]] = {}  # id(step) -> indices of its jobs
    cwd = os.getcwd()
    for s in steps:
        deps = tuple(sorted({j for need in s.needs() for j in jobs_of[id(need)]}))
        is_eval = isinstance(s, EvalStep)
        task_sets = [(t,) for t in s.tasks] if is_eval and per_task else [s.tasks if is_eval else ()]
        shards = [(i, study.shards) for i in range(study.shards)] if is_eval and study.shards > 1 else [None]
        jobs_of[id(s)] = []
        for tasks in task_sets:
            for shard in shards:
                name = " ".join([s.kind, s.model, s.label(), *(tasks if per_task else ()),
                                 *([f"shard {shard[0] + 1}/{shard[1]}"] if shard else [])])
                jobs_of[id(s)].append(len(jobs))
                jobs.append(Job(name, RESOURCE_KINDS[s.kind], functools.partial(run_job, s, tasks, shard, cwd, log),
                                deps))
    return jobs


def run_job(s: Step, tasks: tuple[str, ...], shard, cwd: str, log=print) -> None:
    """One job of a study, in the driver's working directory when this machine has it (relative paths
    in the config then mean what they meant there)."""
    sub_log = lambda m: log(f"    {m}")  # noqa: E731
    with working_directory(Path(cwd)) if Path(cwd).is_dir() else contextlib.nullcontext():
        if isinstance(s, EvalStep):
            # evaluate_to_dir itself reuses every finished task and locks each task
            s.run(sub_log, tasks=tasks or None, shard=shard, lm=_worker_model(s, tasks))
            return
        if s.done():
            log(f"    {s.kind} {s.model}: done, reusing {s.path.name}")
        elif not s.run_once(sub_log):  # another study finished it while we waited for its lock
            log(f"    {s.kind} {s.model}: done by another run, reusing {s.path.name}")


_WORKER_MODEL: dict = {}  # the last model an eval job loaded in this process, for the next job of that model


def _worker_model(s: EvalStep, tasks: tuple[str, ...]):
    """For a job that scores only some of a step's tasks (Ray: one job per task or shard), the model
    the previous job in this worker process loaded, when it is the same: a warm Ray worker then
    scores the next task without loading the model again. Otherwise None (the step loads its model
    only if some task needs scoring)."""
    finished = read_manifest(s.path).get("tasks", {}) if s.path.is_dir() else {}
    if not tasks or set(tasks) == set(s.tasks) or all(t in finished for t in tasks):
        return None
    target = s.target()
    key = (target, model_fingerprint(target), s.inputs.dtype)
    if _WORKER_MODEL.get("key") != key:
        _WORKER_MODEL.clear()  # one model at a time: a worker's memory holds one
        _WORKER_MODEL.update(key=key, lm=LoadOptions(dtype=s.inputs.dtype, threads=s.execution.threads).load(target))
    return _WORKER_MODEL["lm"]


def job_resources(study: Study) -> dict:
    """Ray resources per step kind: the config's, and by default as many CPUs as the job's torch
    threads (study.threads, else this machine's cores), so two jobs never share cores unasked."""
    cpus = float(study.threads or available_cores())
    return {kind: {"num_cpus": cpus, **study.resources.get(kind, {})}
            for kind in sorted(set(RESOURCE_KINDS.values()))}
