"""Studies: models x quantization variants x tasks, content-addressed and resumable.

Config (YAML):
    name: demo
    models: [default]                 # several sizes of one family give a scale trend
    variants:                         # each field may be a list: the cross product is run
      - {method: gptq, bits: 4, group_size: 128, calib: [pydoc, random], n_samples: 16, seed: 0}
      - {method: rtn, bits: 4, group_size: 64}
      - {method: gptq, bits: 4, group_size: 128, calib: pydoc, n_samples: 16, replicates: 5}  # noise floor
    tasks: [piqa, arc_easy]           # built-ins, lm-eval tasks/groups (winogrande, mmlu), file:PATH
    num_fewshot: null                 # few-shot examples (lm-eval's sampler); null: each task's default
    fewshot_seed: 1234
    include_path: null                # a folder of your own lm-eval task YAML files
    limit: 100                        # questions per task (null: all)
    data_dir: ../shared/data          # null: $QUANTCONF_DATA_DIR, else the hub
    batch_size: 16
    threads: null
    seed: 1234                        # data seed (generated tasks)
    ppl_text: null                    # e.g. pydoc or file:PATH: held-out perplexity of every model/variant
    ppl_tokens: 4096                  #   tokens of that text (windows of 512, stride 256)
    outliers: false                   # true: activation-outlier stats of each calibration set (full model)
    outlier_samples: 8
    executor: local                   # or ray: every step a Ray task (--executor/--ray-address override)
    ray_address: null                 # null: Ray starts on this machine; auto or HOST:PORT: a cluster
    resources: {quantize: {num_gpus: 1}, eval: {num_cpus: 2, memory: 4e9}}   # Ray resources per step kind
    shards: 1                         # split each task's evaluation into N parallel jobs (same numbers)
    max_retries: 2                    # Ray: re-runs of a job whose worker died

Layout of STUDY_DIR: `steps/quant-<key>/` (checkpoints), `steps/eval-<key>/` (predictions), and
the report files. A step's key hashes everything that determines its output (model weights hash,
quantization config, calibration set, tasks' data, code version), so re-running a killed study
recomputes only missing steps, and editing the config reuses what still applies.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from quantconf._version import __version__
from quantconf.errors import QuantconfError
from quantconf.evaluation import evaluate_to_dir
from quantconf.executors import Job, execute
from quantconf.io import (atomic_write_bytes, atomic_write_json, clean_stale_temp, ensure_writable_dir, locked,
                          stable_hash, working_directory)
from quantconf.models import QUANTIZE_RECORD, load_model, model_fingerprint, set_threads
from quantconf.outliers import run_outliers
from quantconf.perplexity import text_perplexity
from quantconf.predictions import intact, read_manifest, task_file_name
from quantconf.quantizers import QuantConfig, load_methods, run_quantize, validate_config
from quantconf.report import write_report
from quantconf.tasks import load_task, resolve_data_dir, resolve_tasks


def expand_variant(spec: dict) -> list[QuantConfig]:
    """One variant entry of the config; any field may be a list: the cross product of them.
    `replicates: N` quantizes each configuration N times with seeds seed, seed+1, ...: another draw of
    the calibration sample each time (the noise floor of `noise_floor.py`). A method that uses no data
    and does not depend on the thread count (RTN) gives the same checkpoint every time: it runs once."""
    if not isinstance(spec, dict):
        raise QuantconfError(f"study config: each variant must be a mapping of QuantConfig fields, got {spec!r}")
    spec = dict(spec)
    replicates = spec.pop("replicates", 1)
    if isinstance(replicates, bool) or not isinstance(replicates, int) or replicates < 1:
        raise QuantconfError(f"study config: variant replicates must be a positive integer, got {replicates!r}")
    allowed = list(QuantConfig.__dataclass_fields__)
    unknown = set(spec) - set(allowed)
    if unknown:
        raise QuantconfError(f"unknown variant field(s) {sorted(unknown)}; allowed: {sorted(allowed)} and replicates")
    method_values = spec.pop("method", "gptq")
    keys = list(spec)
    values = [v if isinstance(v, list) else [v] for v in spec.values()]
    method_list = method_values if isinstance(method_values, list) else [method_values]
    # a field value is one scalar or a list of scalars; a nested mapping or list is a typo in the YAML
    for name, options in [("method", method_list), *zip(keys, values)]:
        bad = [v for v in options if not (isinstance(v, str) if name == "method"
                                         else v is None or isinstance(v, (str, int, float)))]
        if bad:
            raise QuantconfError(f"study config: variant field {name!r} must be a "
                                 f"{'method name' if name == 'method' else 'scalar'} or a list of them, got {bad[0]!r}")
    out, seen = [], set()
    methods = load_methods()
    for method in method_list:
        for combo in itertools.product(*values):
            given = dict(zip(keys, combo))
            quantizer = methods.get(method)
            if quantizer is not None and isinstance(method_values, list):
                # a sweep over methods crosses every field with every method: a field a method does
                # not take (calib for RTN) is dropped for that method, which then runs once
                given = {k: v for k, v in given.items() if k in quantizer.options}
            cfg = QuantConfig.for_method(method, **given)
            validate_config(cfg)
            if cfg in seen:
                continue
            seen.add(cfg)
            n = replicates
            if replicates > 1 and not quantizer.needs_calibration and quantizer.threads_invariant:
                print(f"quantconf: {cfg.label()} is deterministic (no calibration data, the same at any thread "
                      f"count): 1 replicate instead of {replicates}", file=sys.stderr)
                n = 1
            out += [cfg] + [dataclasses.replace(cfg, seed=cfg.seed + r) for r in range(1, n)]
    return out


class Study(BaseModel):
    """A study config: every field, its type and its default, once. Unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "study"
    models: list[str] = Field(min_length=1)  # several sizes of one family give a scale trend
    variants: list[QuantConfig] = Field(min_length=1)  # each variant field may be a list: cross product
    tasks: list[str] = Field(min_length=1)
    num_fewshot: int | None = Field(None, ge=0)  # few-shot examples (lm-eval's sampler); None: the task's default
    fewshot_seed: int = 1234
    include_path: str | None = None  # a folder of your own lm-eval task YAML files
    limit: int | None = Field(100, gt=0)  # questions per task (None: all)
    data_dir: str | None = None  # None: $QUANTCONF_DATA_DIR, else the hub
    batch_size: int = Field(16, gt=0)
    threads: int | None = Field(None, gt=0)
    seed: int = 1234  # data seed (generated tasks)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    bootstrap: int = Field(1000, ge=0)
    bins: int = Field(15, gt=0)
    ppl_text: str | None = None  # e.g. pydoc or file:PATH: held-out perplexity of every model/variant
    ppl_tokens: int = Field(4096, gt=0)
    outliers: bool = False  # activation-outlier stats of each calibration set (full model)
    outlier_samples: int = Field(8, gt=0)
    # how the steps run (none of these change a result, so none is part of a step's key)
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None  # None: start Ray on this machine; "auto" or HOST:PORT: join a cluster
    resources: dict[Literal["quantize", "eval", "ppl", "outliers"], dict[Literal["num_cpus", "num_gpus", "memory"], float]] = {}
    shards: int = Field(1, ge=1)  # split each task's evaluation into this many parallel jobs
    max_retries: int = Field(2, ge=0)  # Ray: re-runs of a job whose worker died

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, data: Any) -> Any:
        """YAML's `true` is not a number: pydantic would read `limit: true` as 1."""
        if isinstance(data, dict):
            for name, value in data.items():
                field = cls.model_fields.get(name)
                if field is not None and isinstance(value, bool) and field.annotation is not bool:
                    raise QuantconfError(f"study config field `{name}`: expected {field.annotation}, got {value!r}")
        return data

    @field_validator("variants", mode="before")
    @classmethod
    def _expand_variants(cls, value: Any) -> list[QuantConfig]:
        if not isinstance(value, list):
            return value  # pydantic reports the type error
        expanded = [v for spec in value for v in (expand_variant(spec) if not isinstance(spec, QuantConfig) else [spec])]
        return list(dict.fromkeys(expanded))  # the same configuration twice is one step

    @model_validator(mode="after")
    def _known_tasks(self) -> "Study":
        resolve_tasks(self.tasks, self.num_fewshot, self.fewshot_seed, self.include_path)
        return self

    def leaf_tasks(self) -> tuple[str, ...]:
        """Task names after lm-eval groups and tags are expanded: one parquet each."""
        leaves, _ = resolve_tasks(self.tasks, self.num_fewshot, self.fewshot_seed, self.include_path)
        return tuple(t.name for t in leaves)

    def as_dict(self) -> dict:
        return self.model_dump()


def load_study(path: Path | None = None, data: dict | None = None) -> Study:
    """A validated Study from a YAML file or a dict; errors are one line naming the field."""
    if data is None:
        try:
            data = yaml.safe_load(Path(path).read_text())
        except FileNotFoundError:
            raise QuantconfError(f"study config {path} not found") from None
        except UnicodeDecodeError as e:
            raise QuantconfError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); a study config is a "
                                 "YAML file (see examples/)") from None
        except OSError as e:
            raise QuantconfError(f"study config {path}: cannot read it ({e.strerror})") from None
        except yaml.YAMLError as e:
            raise QuantconfError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise QuantconfError("study config must be a mapping with models, variants and tasks")
    try:
        return Study.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "config"
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        got = f", got {err['input']!r}" if err["type"] != "missing" and not isinstance(err["input"], dict) else ""
        raise QuantconfError(f"study config field `{where}`: {err['msg']}{got}{more}") from None


@dataclass
class Step:
    kind: str  # "quantize" | "eval" | "ppl" | "outliers"
    model: str  # base model spec
    variant: QuantConfig | None
    path: Path
    tasks: tuple[str, ...] = ()  # eval steps: the task names whose predictions the step must hold

    def done(self) -> bool:
        if self.kind == "quantize":
            return (self.path / QUANTIZE_RECORD).is_file()
        if self.kind == "ppl":
            return self.path.is_file()
        if self.kind == "outliers":
            return (self.path / "outliers.json").is_file()
        finished = read_manifest(self.path).get("tasks", {}) if self.path.is_dir() else {}
        return bool(self.tasks) and all(
            t in finished and intact(self.path, {"file": task_file_name(t), **finished[t]}) for t in self.tasks)

    def describe(self) -> str:
        what = self.variant.label() if self.variant else "full"
        return f"{self.kind:<8} {self.model} {what} -> {self.path}"


def outlier_calib_sets(study: Study) -> list[str]:
    """Names of the calibration sets whose activation outliers a study measures: those its
    variants calibrate on (methods that use no data, RTN, bnb, gguf, hqq, fp8, have none)."""
    methods = load_methods()
    return sorted({v.calib for v in study.variants if methods[v.method].needs_calibration})


def plan(study: Study, study_dir: Path) -> list[Step]:
    """Every step of a study, in run order, each at its content-addressed path."""
    steps = []
    task_names = study.leaf_tasks()
    methods = load_methods()
    for model in study.models:
        fp = model_fingerprint(model)
        eval_common = [study.tasks, study.limit, study.data_dir, study.seed, study.dtype, __version__,
                       *([study.num_fewshot, study.fewshot_seed, study.include_path]
                         if (study.num_fewshot, study.fewshot_seed, study.include_path) != (None, 1234, None) else [])]
        steps.append(Step("eval", model, None, study_dir / "steps" / f"eval-{stable_hash([fp, eval_common])[:16]}",
                          task_names))
        for v in study.variants:
            # a method whose result depends on the summation order (GPTQ's Hessian updates) is keyed by
            # the thread count it runs with; RTN and other exact methods are not
            threads = [] if methods[v.method].threads_invariant else [study.threads or os.cpu_count() or 1]
            qkey = stable_hash([fp, v.key_fields(), study.data_dir, __version__, *threads])[:16]
            qpath = study_dir / "steps" / f"quant-{qkey}"
            steps.append(Step("quantize", model, v, qpath))
            steps.append(Step("eval", model, v, study_dir / "steps" / f"eval-{stable_hash([qkey, eval_common])[:16]}",
                              task_names))
            if study.ppl_text:
                pkey = stable_hash([qkey, study.ppl_text, study.ppl_tokens, __version__])[:16]
                steps.append(Step("ppl", model, v, study_dir / "steps" / f"ppl-{pkey}.json"))
        if study.ppl_text:
            pkey = stable_hash([fp, study.ppl_text, study.ppl_tokens, __version__])[:16]
            steps.append(Step("ppl", model, None, study_dir / "steps" / f"ppl-{pkey}.json"))
        if study.outliers:
            okey = stable_hash([fp, outlier_calib_sets(study), study.outlier_samples, study.data_dir, __version__])[:16]
            steps.append(Step("outliers", model, None, study_dir / "steps" / f"outliers-{okey}"))
    return steps


def check_study_data(study: Study, log=print) -> None:
    """Every task's documents load (local files read and validated, or the hub reached): a study whose
    full-model evaluation would fail for missing data stops here, before any quantization."""
    leaves, _ = resolve_tasks(study.tasks, study.num_fewshot, study.fewshot_seed, study.include_path)
    problems = []
    for task in leaves:
        try:
            load_task(task, data_dir=study.data_dir, limit=study.limit, seed=study.seed)
        except QuantconfError as e:
            problems.append(str(e))
    if problems:
        more = f" (and {len(problems) - 1} more task(s))" if len(problems) > 1 else ""
        raise QuantconfError(f"study data: {problems[0]}{more}; nothing was run", param="data_dir")
    log(f"data: {len(leaves)} task(s) load from {study.data_dir or 'the hub / $QUANTCONF_DATA_DIR'}")


def perplexity_step(target: str, study: Study, path: Path) -> None:
    record = text_perplexity(target, study.ppl_text, window=512, stride=256, max_tokens=study.ppl_tokens,
                             seed=study.seed, data_dir=study.data_dir, dtype=study.dtype, threads=study.threads)
    atomic_write_json(path, {k: v for k, v in record.items() if k != "model"})


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
    steps = plan(study, study_dir)
    if not all(s.done() for s in steps if s.kind == "eval"):
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


def worker_log(message: str) -> None:
    """What a Ray job prints (Ray forwards workers' output to the driver). A module function, so
    jobs pickle it by name: the driver's builtins.print may be wrapped and not picklable."""
    print(message, flush=True)


def study_jobs(study: Study, steps: list[Step], per_task: bool, log=print) -> list[Job]:
    """The plan as executor jobs. An eval step becomes one job (all its tasks: the model loads once)
    or, with `per_task`, one job per task; with `shards` > 1, one job per shard. An eval of a
    quantized variant, and its ppl step, need that variant's quantize job."""
    jobs: list[Job] = []
    quant_job: dict[tuple[str, str], int] = {}
    quant_path: dict[tuple[str, str], Path] = {}
    cwd = os.getcwd()
    for s in steps:
        label = s.variant.label() if s.variant else "full"
        deps = (quant_job[(s.model, label)],) if s.variant and s.kind != "quantize" else ()
        target = str(quant_path[(s.model, label)]) if s.variant and s.kind != "quantize" else s.model
        if s.kind == "quantize":
            quant_job[(s.model, label)], quant_path[(s.model, label)] = len(jobs), s.path
        task_sets = [(t,) for t in s.tasks] if s.kind == "eval" and per_task else [s.tasks]
        shards = [(i, study.shards) for i in range(study.shards)] if s.kind == "eval" and study.shards > 1 else [None]
        for tasks in task_sets:
            for shard in shards:
                name = " ".join([s.kind, s.model, label, *(tasks if per_task else ()),
                                 *([f"shard {shard[0] + 1}/{shard[1]}"] if shard else [])])
                jobs.append(Job(name, s.kind, functools.partial(run_job, s, study, target, tasks, shard, cwd, log),
                                deps))
    return jobs


def run_job(s: Step, study: Study, target: str, tasks: tuple[str, ...], shard, cwd: str, log=print) -> None:
    """One job of a study, in the driver's working directory when this machine has it (relative paths
    in the config then mean what they meant there)."""
    sub_log = lambda m: log(f"    {m}")  # noqa: E731
    with working_directory(Path(cwd)) if Path(cwd).is_dir() else contextlib.nullcontext():
        if s.kind == "eval":
            # evaluate_to_dir itself reuses every finished task whose inputs are unchanged, and locks
            # each task, so jobs of one step (and two studies on one dir) share the work
            run_step(s, study, _worker_model(target, study, s, tasks), sub_log, tasks=tasks, shard=shard)
            return
        if s.done():
            log(f"    {s.kind} {s.model}: done, reusing {s.path.name}")
            return
        with locked(s.path.parent / f".{s.path.name}.lock", sub_log, what=f"{s.kind} step {s.path.name}"):
            if s.done():  # another study finished it while we waited
                log(f"    {s.kind} {s.model}: done by another run, reusing {s.path.name}")
                return
            run_step(s, study, target, sub_log)


_WORKER_MODEL: dict = {}  # the last model an eval job loaded in this process, for the next job of that model


def _worker_model(target: str, study: Study, s: Step, tasks: tuple[str, ...]):
    """For a job that scores only some of a step's tasks (Ray: one job per task or shard), the model
    the previous job in this worker process loaded, when it is the same: a warm Ray worker then
    scores the next task without loading the model again. Otherwise the spec (loaded only if some
    task needs scoring)."""
    finished = read_manifest(s.path).get("tasks", {}) if s.path.is_dir() else {}
    if set(tasks) == set(s.tasks) or all(t in finished for t in tasks):
        return target
    key = (target, model_fingerprint(target), study.dtype)
    if _WORKER_MODEL.get("key") != key:
        _WORKER_MODEL.clear()  # one model at a time: a worker's memory holds one
        set_threads(study.threads)
        _WORKER_MODEL.update(key=key, lm=load_model(target, dtype=study.dtype))
    return _WORKER_MODEL["lm"]


def job_resources(study: Study) -> dict:
    """Ray resources per step kind: the config's, and by default as many CPUs as the job's torch
    threads (study.threads, else this machine's cores), so two jobs never share cores unasked."""
    cpus = float(study.threads or os.cpu_count() or 1)
    return {kind: {"num_cpus": cpus, **study.resources.get(kind, {})} for kind in ("quantize", "eval", "ppl", "outliers")}


def run_step(s: Step, study: Study, target, sub_log, tasks: tuple[str, ...] | None = None,
             shard: tuple[int, int] | None = None) -> None:
    """Run one step of the plan (its lock is held by the caller). Eval steps: `tasks` (default:
    the study's) and `shard`."""
    if s.kind == "quantize":
        run_quantize(s.model, s.variant, s.path, overwrite=True, threads=study.threads, data_dir=study.data_dir,
                     quiet=True, log=sub_log)
    elif s.kind == "ppl":
        perplexity_step(target, study, s.path)
    elif s.kind == "outliers":
        run_outliers(s.model, outlier_calib_sets(study), s.path, n_samples=study.outlier_samples,
                     threads=study.threads, data_dir=study.data_dir, log=sub_log, overwrite=True)
    else:
        evaluate_to_dir(target, list(tasks or study.tasks), s.path, data_dir=study.data_dir, limit=study.limit,
                        batch_size=study.batch_size, dtype=study.dtype, threads=study.threads, seed=study.seed,
                        progress=False, log=sub_log, num_fewshot=study.num_fewshot, fewshot_seed=study.fewshot_seed,
                        include_path=study.include_path, shard=shard)


DEMO_TASKS = ["piqa", "arc_easy", "hellaswag", "openbookqa"]
# a source checkout sits beside ../shared/data (the project's layout); an installed package does not
SHARED_DATA_BESIDE_CHECKOUT = Path(__file__).resolve().parents[3] / "shared" / "data"
# real questions shipped in the package (licences: sample_data/README.md) for a machine with no data and no hub
SAMPLE_DATA = Path(__file__).resolve().parent / "sample_data"
SAMPLE_TASKS = ["hellaswag", "openbookqa", "truthfulqa_mc1"]


def demo_study(data_dir: str | None = None) -> Study:
    """The built-in study: the default model, GPTQ 4-bit g128 and RTN 4-bit, on real benchmark questions
    from local data (--data-dir, $QUANTCONF_DATA_DIR, or ../shared/data beside the checkout), else the
    hub, else the sample shipped in the package (hellaswag, openbookqa, truthfulqa_mc1)."""
    found = resolve_data_dir(data_dir) if (data_dir or os.environ.get("QUANTCONF_DATA_DIR")) else None
    if found is None:
        found = SHARED_DATA_BESIDE_CHECKOUT if SHARED_DATA_BESIDE_CHECKOUT.is_dir() else None
    tasks, source = DEMO_TASKS, f"local data in {found}" if found else "the Hugging Face hub"
    if found is None:  # no local data: the hub if it answers, else the packaged sample (fails at once offline)
        try:
            load_task(DEMO_TASKS[0], limit=1)
        except QuantconfError:
            found, tasks, source = SAMPLE_DATA, SAMPLE_TASKS, "the sample shipped with quantconf (no data dir, no hub)"
    return load_study(data={
        "name": f"demo: SmolLM2-135M-Instruct, GPTQ vs RTN 4-bit, questions from {source}",
        "models": ["default"],
        "variants": [
            {"method": "gptq", "bits": 4, "group_size": 128, "calib": "pydoc", "n_samples": 16, "seq_len": 512},
            {"method": "rtn", "bits": 4, "group_size": 64},
        ],
        "tasks": tasks, "limit": 100, "data_dir": str(found) if found else None,
        "batch_size": 16, "bootstrap": 1000,
    })
