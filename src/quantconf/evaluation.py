"""Evaluate a model on tasks: each task's kind runs the model on its items (`kinds/`: per-choice
log-likelihoods for multiple choice, greedy generations graded with their confidence for generation).

`evaluate_task` scores one loaded task with a loaded model and returns its predictions frame (pure:
no files). `evaluate_to_dir` is what `quantconf eval` and studies run: it loads the model only when
some task needs scoring, writes `OUT/<task>.parquet` + `OUT/manifest.json`, and reuses a task whose
parquet exists and whose reuse key (model weights hash, dtype, device, task version, data hash,
limit, seed, scorer version) matches the manifest.

What a row holds is the kind's (`kinds/choice.py`, `kinds/generation.py`); the manifest records each
task's kind.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from quantconf.errors import QuantconfError
from quantconf.io import (atomic_write_json, clean_stale_temp, ensure_writable_dir, locked, package_versions,
                          read_optional_json, remove_if_holds_nothing, stable_hash)
from quantconf.models.builtin import model_fingerprint
from quantconf.models.loading import LoadedModel, LoadOptions
from quantconf.models.runtime import resolve_device, set_threads
from quantconf.kinds import accuracy, kind_of, kind_of_task
from quantconf.kinds.choice import SCORER_VERSION, SCORERS
from quantconf.inference.sampling import SamplingConfig
from quantconf.predictions import intact, read_manifest, read_prediction_file, record_tasks, task_file_name, write_predictions
from quantconf.tasks import LoadedTask, TaskOptions


def evaluate_task(lm: LoadedModel, loaded: LoadedTask, batch_size: int = 16, progress: bool = False,
                  scorer: str = "packed", shard: tuple[int, int] | None = None,
                  max_gen_toks: int | None = None, sampling=None) -> pd.DataFrame:
    """Run the model on a loaded task as its kind does (`kinds/`): multiple choice scores every choice of
    every question, `scorer` "packed" (context once per question) or "naive" (one sequence per choice), both
    equal to float rounding; generation answers every prompt, `max_gen_toks` overriding the task's token
    budget and `sampling` (a SamplingConfig) adding K sampled answers per prompt. `shard=(i, n)`: only
    every n-th forward pass (batch, for generations) of the plan from the i-th;
    the merged shards equal the unsharded run bit for bit (naive scorer: every n-th question, equal to float
    rounding)."""
    if scorer not in SCORERS:
        raise QuantconfError(f"scorer must be one of {SCORERS}, got {scorer!r}", param="scorer")
    return kind_of_task(loaded.task).evaluate(lm, loaded, batch_size=batch_size, progress=progress, scorer=scorer,
                                              shard=shard, max_gen_toks=max_gen_toks, sampling=sampling)


@dataclass(frozen=True)
class EvalOptions:
    """How an evaluation runs (none of it changes a number except `scorer`, to float rounding)."""

    batch_size: int = 16
    scorer: str = "packed"  # "packed" (context once per question) or "naive" (one sequence per choice)
    progress: bool = True  # progress bars
    overwrite: bool = False  # recompute tasks whose predictions are already there
    shard: tuple[int, int] | None = None  # (i, n): only every n-th forward pass, from pass i
    max_gen_toks: int | None = None  # generation tasks: tokens at most per answer (None: each task's own)
    sampling: SamplingConfig | None = None  # generation tasks: K sampled answers per prompt beside the greedy one

    def check(self) -> None:
        """The options checked before any work, naming the parameter at fault."""
        if self.batch_size < 1:
            raise QuantconfError(f"batch_size must be >= 1, got {self.batch_size}", param="batch_size")
        if self.scorer not in SCORERS:
            raise QuantconfError(f"scorer must be one of {SCORERS}, got {self.scorer!r}", param="scorer")
        if self.max_gen_toks is not None and (isinstance(self.max_gen_toks, bool)
                                              or not isinstance(self.max_gen_toks, int) or self.max_gen_toks < 1):
            raise QuantconfError(f"max_gen_toks must be a whole number >= 1, got {self.max_gen_toks!r}",
                                 param="max_gen_toks")
        if self.shard is not None:
            i, n = self.shard
            if not (isinstance(n, int) and isinstance(i, int) and n >= 1 and 0 <= i < n):
                raise QuantconfError(f"shard must be (i, n) with 0 <= i < n, got {self.shard!r}", param="shard")


def check_same_model(manifest: dict, fingerprint: str, out: Path) -> None:
    if manifest.get("model_fingerprint") not in (None, fingerprint):
        raise QuantconfError(f"{out} holds predictions of another model; use a new out dir or overwrite it")


def evaluate_to_dir(model: str | LoadedModel, tasks: list[str], out: Path, load: LoadOptions = LoadOptions(),
                    data: TaskOptions = TaskOptions(), run: EvalOptions = EvalOptions(), log=print) -> dict:
    """Evaluate `model` on `tasks`, write predictions + manifest to `out`, and return
    {task: {"acc", "acc_norm", "n", "reused"}}.

    `model` is a spec (loaded with `load` only if some task needs scoring) or a model `load_model`
    returned; then its own dtype and device apply, and its weights hash at load time identifies it
    (changes made to it in memory afterwards are not seen by the reuse check).

    lm-eval groups in `tasks` expand to one parquet per subtask; the manifest's "groups" records
    them with lm-eval's aggregation rule. `data` says where questions come from and which (few-shot
    contexts come from lm-eval's sampler).

    `run.shard=(i, n)` (0-based) scores only every n-th forward pass of the unsharded plan, starting at
    pass i (`evaluate_task`), into `OUT/.shards/<task>/`; the shard that finds all n done merges them
    into `OUT/<task>.parquet` (sorted by doc_id: the unsharded run's rows, bit for bit) under the
    unsharded run's reuse key."""
    if not tasks:
        raise QuantconfError("tasks is empty; name at least one task (see quantconf tasks)", param="tasks")
    run.check()
    created = not Path(out).exists()
    out = ensure_writable_dir(out)
    try:
        leaves, groups = data.resolve(tasks)
        return EvaluationRun(model, out, load, data, run, log).evaluate(leaves, groups)
    except BaseException:
        if created:  # a failed first run leaves no empty output dir behind
            remove_if_holds_nothing(out)
        raise


class EvaluationRun:
    """The body of `evaluate_to_dir`: one model, one output dir. The model loads on first need. Each
    task is computed under its own lock (a second writer of the same task waits, then reuses it); the
    manifest is re-read and merged under a lock of its own, so two writers of different tasks keep
    each other's entries."""

    def __init__(self, model, out: Path, load: LoadOptions, data: TaskOptions, run: EvalOptions, log):
        self.out, self.data, self.run, self.log = out, data, run, log
        self.lm, self.n_threads, self.load_seconds = None, None, 0.0
        self.fresh = run.overwrite  # the manifest is rewritten from scratch by the first task recorded
        if isinstance(model, LoadedModel):
            self.lm, self.spec = model, model.info["spec"]
            self.load = replace(load, dtype=model.info["dtype"], device=model.info["device"])
            self.fingerprint, self.n_threads = model.info["fingerprint"], set_threads(load.threads)
        else:
            self.spec, self.load = model, replace(load, device=resolve_device(load.device))
            self.fingerprint = model_fingerprint(model, load.allow_pickle)

    def model(self) -> LoadedModel:
        if self.lm is None:
            self.n_threads = set_threads(self.load.threads)
            t0 = time.perf_counter()
            self.lm = self.load.load(self.spec)
            self.load_seconds = time.perf_counter() - t0
        return self.lm

    def record(self, name: str, entry: dict, model_info: dict, n_threads_used, groups: dict) -> None:
        """Add a finished task to the manifest (`predictions.record_tasks`: re-read and merged under its lock)."""
        fresh, self.fresh = self.fresh, False

        def header(manifest: dict) -> dict:
            return {
                "model_spec": self.spec, "model_fingerprint": self.fingerprint, "model": model_info,
                "dtype": self.load.dtype, "device": self.load.device, "threads": n_threads_used,
                "batch_size": self.run.batch_size, "seed": self.data.seed, "scorer": self.run.scorer,
                "scorer_version": SCORER_VERSION, "packages": package_versions(),
                "model_load_seconds": round(self.load_seconds, 3),
                "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                **({"groups": {**manifest.get("groups", {}), **groups}} if groups or "groups" in manifest else {}),
            }

        record_tasks(self.out, {name: entry}, header, fresh=fresh,
                     check=lambda manifest: check_same_model(manifest, self.fingerprint, self.out), log=self.log)

    def evaluate(self, tasks, groups) -> dict:
        out, run, log = self.out, self.run, self.log
        clean_stale_temp(out, recursive=False)
        loaded_tasks = [self.data.load(t) for t in tasks]
        manifest = read_manifest(out)  # also with --overwrite: a manifest that is not quantconf's is never replaced
        if not run.overwrite:
            check_same_model(manifest, self.fingerprint, out)
        summary = {}
        for loaded in loaded_tasks:
            name = loaded.task.name
            fewshot = [loaded.task.num_fewshot, loaded.task.fewshot_seed] if loaded.task.lm_eval else []
            kind = kind_of_task(loaded.task)
            how = kind.run_identity(self.run)  # what of the run options changes this kind's numbers
            key = stable_hash([self.fingerprint, self.load.dtype, self.load.device, name, loaded.task.version,
                               loaded.source_sha256, self.data.limit, self.data.seed, *how, *fewshot])
            path = out / task_file_name(name)
            entry_extra = {"kind": kind.name, "version": loaded.task.version, "source": loaded.source,
                           "source_sha256": loaded.source_sha256, "limit": self.data.limit,
                           **kind.manifest_fields(loaded.task, self.run),
                           **({"lm_eval_task": loaded.task.lm_eval, "num_fewshot": loaded.task.num_fewshot,
                               "fewshot_seed": loaded.task.fewshot_seed} if loaded.task.lm_eval else {})}
            with locked(out / f".{path.name}.lock", log, what=f"{name} in {out}"):
                done = read_manifest(out).get("tasks", {})  # as of now: another writer may have finished it
                finished = not run.overwrite and done.get(name, {}).get("key") == key and path.is_file()
                if finished and not intact(out, done[name]):
                    log(f"{name}: {path} is not the file that was written (truncated or altered: its sha256 "
                        "differs from the manifest's); recomputing it")
                elif finished:
                    summary[name] = {**accuracy(read_prediction_file(path)), "n": len(loaded.questions),
                                     "reused": True}
                    log(f"{name}: reusing {path}")
                    continue
                if run.shard is None:
                    summary[name] = self.score_task(loaded, key, path, entry_extra, groups)
                    continue
            # one shard: every n-th forward pass of the task as loaded in full (so few-shot contexts, drawn
            # in document order, and batches are the unsharded run's); the last shard to finish merges them
            summary[name] = self.score_shard(loaded, key, path, entry_extra, groups)
        return summary

    def score_task(self, loaded, key, path, entry_extra, groups) -> dict:
        name = loaded.task.name
        t0 = time.perf_counter()
        df = evaluate_task(self.model(), loaded, batch_size=self.run.batch_size, progress=self.run.progress,
                           scorer=self.run.scorer, max_gen_toks=self.run.max_gen_toks,
                           sampling=self.run.sampling)
        seconds = time.perf_counter() - t0
        write_predictions(df, path)  # before the checks below: a broken model's scores stay inspectable
        acc = accuracy(df)
        self.record(name, {"key": key, "file": path.name, "n": len(df),
                           "seconds": round(seconds, 3), **throughput(df, seconds),
                           **acc, **entry_extra}, self.lm.info, self.n_threads, groups)
        self.log(f"{name}: n={len(df)} {accuracy_line(df, acc)} ({seconds:.1f}s)")
        return {**acc, "n": len(df), "reused": False}

    def score_shard(self, loaded, key, path, entry_extra, groups) -> dict:
        out, log, overwrite = self.out, self.log, self.run.overwrite
        i, n = self.run.shard
        name = loaded.task.name
        shard_path, shard_meta = _shard_files(out, name, i, n)
        meta = read_optional_json(shard_meta, "delete it")
        if overwrite or meta.get("key") != key or not shard_path.is_file():
            t0 = time.perf_counter()
            df = evaluate_task(self.model(), loaded, batch_size=self.run.batch_size, progress=self.run.progress,
                               scorer=self.run.scorer, shard=self.run.shard, max_gen_toks=self.run.max_gen_toks,
                               sampling=self.run.sampling)
            seconds = time.perf_counter() - t0
            shard_path.parent.mkdir(parents=True, exist_ok=True)
            write_predictions(df, shard_path)
            atomic_write_json(shard_meta, {"key": key, "seconds": round(seconds, 3), "n": len(df),
                                           "model": self.lm.info, "threads": self.n_threads})
            log(f"{name}: shard {i + 1}/{n} n={len(df)} ({seconds:.1f}s)")
        else:
            log(f"{name}: shard {i + 1}/{n} reusing {shard_path}")
        with locked(out / f".{path.name}.lock", log, what=f"{name} in {out}"):
            done = read_manifest(out).get("tasks", {})
            if not overwrite and done.get(name, {}).get("key") == key and intact(out, done[name]):  # merged by another
                return {**accuracy(read_prediction_file(path)), "n": len(loaded.questions), "reused": True,
                        "merged": True}
            metas = [read_optional_json(_shard_files(out, name, j, n)[1], "delete it") for j in range(n)]
            if not all(m.get("key") == key and _shard_files(out, name, j, n)[0].is_file() for j, m in enumerate(metas)):
                return {"n": meta_n(shard_meta), "reused": False, "merged": False}
            frames = [read_prediction_file(_shard_files(out, name, j, n)[0]) for j in range(n)]
            df = pd.concat(frames).sort_values("doc_id", kind="stable").reset_index(drop=True)
            write_predictions(df, path)
            acc = accuracy(df)
            seconds = sum(m["seconds"] for m in metas)
            self.record(name, {"key": key, "file": path.name, "n": len(df),
                               "seconds": round(seconds, 3), "shards": n, **throughput(df, seconds),
                               **acc, **entry_extra}, metas[i]["model"], metas[i]["threads"], groups)
            shutil.rmtree(shard_path.parent, ignore_errors=True)  # the merged file holds them all now
            remove_if_holds_nothing(shard_path.parent.parent)
            log(f"{name}: merged {n} shards, n={len(df)} {accuracy_line(df, acc)}")
            return {**acc, "n": len(df), "reused": False, "merged": True}


def throughput(df: pd.DataFrame, seconds: float) -> dict:
    return kind_of(df).throughput(df, seconds)


def accuracy_line(df: pd.DataFrame, acc: dict) -> str:
    return kind_of(df).accuracy_line(df, acc)


def meta_n(meta_path: Path) -> int:
    return int(read_optional_json(meta_path, "delete it").get("n", 0))


def _shard_files(out: Path, name: str, i: int, n: int) -> tuple[Path, Path]:
    folder = out / ".shards" / task_file_name(name).removesuffix(".parquet")
    return folder / f"{i}-of-{n}.parquet", folder / f"{i}-of-{n}.json"
