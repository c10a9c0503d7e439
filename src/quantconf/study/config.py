"""A study's configuration: the YAML schema (`Study`, a pydantic model), variant expansion, loading.

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
    max_gen_toks: null                # generation tasks (truthfulqa_gen, arithmetic_gen): tokens per answer at most
    samples: null                     # generation tasks: K sampled answers per prompt (semantic entropy, EigV, ...)
    temperature: 1.0                  #   how they are drawn (with samples)
    top_p: 1.0
    sample_seed: 0
    equivalence: auto                 #   which samples are the same answer: answer, rouge[:T], nli:MODEL, auto
    data_dir: ../shared/data          # null: $QUANTCONF_DATA_DIR, else the hub
    batch_size: 16
    threads: null
    seed: 1234                        # data seed (generated tasks)
    ppl_text: null                    # e.g. pydoc or file:PATH: held-out perplexity of every model/variant
    ppl_tokens: 4096                  #   tokens of that text (windows of 512, stride 256)
    divergence: false                 # true: token-level divergence of each variant from its full model on ppl_text
    divergence_questions: false       # true: per question of each single-answer choice or generation task: answer tokens' KL, flips
    outliers: false                   # true: activation-outlier stats of each calibration set (full model)
    outlier_samples: 8
    executor: local                   # or ray: every step a Ray task (--executor/--ray-address override)
    ray_address: null                 # null: Ray starts on this machine; auto or HOST:PORT: a cluster
    resources: {quantize: {num_gpus: 1}, eval: {num_cpus: 2, memory: 4e9}}   # Ray resources per step kind
    shards: 1                         # split each task's evaluation into N parallel jobs (same numbers)
    max_retries: 2                    # Ray: re-runs of a job whose worker died

Layout of STUDY_DIR: `steps/quant-<key>/` (checkpoints), `steps/eval-<key>/` (predictions),
`steps/analysis-<key>.json` (metrics, comparisons, temperature scaling per evaluation),
`steps/noise-floor-<key>.json` (per replicated configuration), `steps/ppl-<key>.json` and
`steps/divergence-<key>.json` (with ppl_text / divergence), and the report files. A step's key hashes everything that determines its output (model weights hash,
quantization config, calibration set, tasks' data, code version), so re-running a killed study
recomputes only missing steps, and editing the config reuses what still applies.
"""

from __future__ import annotations

import dataclasses
import itertools
import sys
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from quantconf.errors import QuantconfError
from quantconf.quantizers import QuantConfig, load_methods, validate_config
from quantconf.tasks import resolve_tasks


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



RECALIBRATION_FOLDS = 5  # the analysis step's temperature-scaling folds (steps.AnalysisStep)

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
    max_gen_toks: int | None = Field(None, gt=0)  # generation tasks: tokens per answer at most (None: the task's)
    samples: int | None = Field(None, ge=2)  # generation tasks: K sampled answers per prompt (None: greedy only)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    sample_seed: int = 0
    equivalence: str = "auto"  # answer, rouge[:T], nli:MODEL, auto (inference/equivalence.py)
    data_dir: str | None = None  # None: $QUANTCONF_DATA_DIR, else the hub
    batch_size: int = Field(16, gt=0)
    threads: int | None = Field(None, gt=0)
    seed: int = 1234  # data seed (generated tasks)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    bootstrap: int = Field(1000, ge=0)
    bins: int = Field(15, gt=0)
    ppl_text: str | None = None  # e.g. pydoc or file:PATH: held-out perplexity of every model/variant
    ppl_tokens: int = Field(4096, gt=0)
    divergence: bool = False  # token-level divergence (KL, same top token, ...) of each variant on ppl_text
    divergence_questions: bool = False  # per question of each single-answer choice or generation task: KL, flips
    outliers: bool = False  # activation-outlier stats of each calibration set (full model)
    outlier_samples: int = Field(8, gt=0)
    # how the steps run (none of these change a result, so none is part of a step's key)
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None  # None: start Ray on this machine; "auto" or HOST:PORT: join a cluster
    resources: dict[Literal["quantize", "eval", "ppl", "divergence", "divergence_questions", "outliers", "analysis"], dict[Literal["num_cpus", "num_gpus", "memory"], float]] = {}
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

    @model_validator(mode="after")
    def _enough_questions_for_temperature_scaling(self) -> "Study":
        # checked before any work: the analysis step cross-fits temperature scaling on RECALIBRATION_FOLDS
        # folds, which a smaller limit cannot fill (it failed after every evaluation had run)
        if self.limit is not None and self.limit < RECALIBRATION_FOLDS:
            raise QuantconfError(f"study config field `limit`: {self.limit} questions per task cannot fill the "
                                 f"{RECALIBRATION_FOLDS} folds of cross-fitted temperature scaling; use limit: "
                                 f"{RECALIBRATION_FOLDS} or more (or null for every question)")
        return self

    @model_validator(mode="after")
    def _divergence_needs_a_text(self) -> "Study":
        if self.divergence and not self.ppl_text:
            raise QuantconfError("study config field `divergence`: the divergence is measured on the text set of "
                                 "`ppl_text`; set ppl_text (e.g. pydoc, wikitext2:PATH or file:PATH)")
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
