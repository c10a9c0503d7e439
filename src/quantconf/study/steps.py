"""The kinds of step a study is made of, one class each: where its output lives, when it is done,
how it runs, what it records for provenance, and which steps it needs.

    QuantizeStep     a quantized checkpoint                 steps/quant-<key>/
    EvalStep         predictions of the full or a quantized model   steps/eval-<key>/
    PplStep          held-out perplexity                    steps/ppl-<key>.json
    OutliersStep     activation outliers of the calibration sets    steps/outliers-<key>/
    AnalysisStep     metrics, comparison with the full model and temperature scaling of one
                     evaluation                              steps/analysis-<key>.json
    NoiseFloorStep   the noise floor of one replicated configuration  steps/noise-floor-<key>.json

**A step keys exactly what it reads.** Each kind has a frozen inputs object (`QuantizeInputs`, ...):
everything its output depends on. The step's key is the hash of every field of it (`StepInputs.key`),
and `run` reads nothing else: no `Study` reaches a step. What only changes how fast a step runs (torch
threads, batch size) is its `Execution`, which is not keyed (a method whose result depends on the thread
count, GPTQ, carries it in its inputs as well). A finished step is reused and an interrupted study resumes
where it stopped. The two analysis kinds read predictions only: a study resumed after every step
finished, and `quantconf report`, compute nothing. A new kind is one inputs class and one step class here,
and one line in `plan.py`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from quantconf._version import __version__
from quantconf.kinds import (compare_task, kind_of, kind_of_task, task_metrics, task_noise_floor,
                             task_recalibration_maps)
from quantconf.analysis.metrics import reliability_bins
from quantconf.analysis.noise_floor import adjust_floors
from quantconf.analysis.recalibration import gap_interval, gap_verdict, recalibrate_task
from quantconf.evaluation import EvalOptions, evaluate_to_dir
from quantconf.inference.sampling import SamplingConfig
from quantconf.errors import QuantconfError
from quantconf.io import atomic_write_json, locked, read_optional_json, stable_hash
from quantconf.models.files import QUANTIZE_RECORD, read_quantize_record
from quantconf.models.loading import LoadOptions
from quantconf.activation_outliers import OutlierOptions, run_outliers
from quantconf.corpus.divergence import question_divergence, question_summary, text_divergence
from quantconf.corpus.perplexity import text_perplexity
from quantconf.predictions import intact, read_manifest, read_prediction_dir, task_file_name
from quantconf.quantizers import QuantConfig, run_quantize
from quantconf.tasks import TaskOptions

# part of the analysis steps' keys: bump when the analysis of the same predictions can change
ANALYSIS_VERSION = "5"  # 2: generation tasks; 3: what the report shows is stored (it only reads); 4: maps;
# 5: PRR and risk-coverage curves of every generation confidence measure (the sampling estimators among them)


# ---------------------------------------------------------------------------------------------
# What a step reads (keyed) and how it runs (not keyed)


@dataclass(frozen=True)
class StepInputs:
    """Everything a step's output depends on; its key hashes every field (and the class: two kinds with equal
    fields are two steps). A QuantConfig field counts by `key_fields()` (a method field left at its default is
    not part of it, so adding a method option does not re-run every study)."""

    # fields added after studies were run: left out of the key while None, so existing steps keep their keys
    KEYED_WHEN_SET: ClassVar[tuple[str, ...]] = ()

    def key(self) -> str:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if not (f.name in self.KEYED_WHEN_SET and getattr(self, f.name) is None)}
        plain = {k: v.key_fields() if isinstance(v, QuantConfig) else v for k, v in fields.items()}
        return stable_hash([type(self).__name__, plain])[:16]


@dataclass(frozen=True)
class Execution:
    """How a step runs, not what it computes: not part of any key."""

    threads: int | None = None  # torch threads (None: all cores)
    batch_size: int = 16  # questions per forward pass (eval)


@dataclass(frozen=True)
class QuantizeInputs(StepInputs):
    model: str  # the base model spec
    model_fingerprint: str  # its weights' hash
    variant: QuantConfig
    data_dir: str | None  # where task:/offline calibration sets are read
    threads: int | None  # only for methods whose result depends on the summation order (GPTQ); else None
    method_code: tuple  # the method's code identity (its version, its library's version, ...)
    calib_sha256: str | None  # a file: calibration text's content (None: its text is fixed by the version)
    version: str = __version__


@dataclass(frozen=True)
class EvalInputs(StepInputs):
    model: str  # the base model's spec (a quantized variant runs the checkpoint its quantize step writes)
    identity: str  # the full model's weights hash, or the quantize step's key (not its path: a study dir moves)
    tasks: tuple[str, ...]  # as configured (names, groups, file: tasks)
    limit: int | None
    data_dir: str | None
    seed: int
    dtype: str
    num_fewshot: int | None = None
    fewshot_seed: int = 1234
    include_path: str | None = None
    max_gen_toks: int | None = None
    version: str = __version__
    sampling: dict | None = None  # generation tasks: SamplingConfig fields (K samples per prompt), or None
    KEYED_WHEN_SET: ClassVar[tuple[str, ...]] = ("sampling",)

    def task_options(self) -> TaskOptions:
        return TaskOptions(data_dir=self.data_dir, limit=self.limit, seed=self.seed, num_fewshot=self.num_fewshot,
                           fewshot_seed=self.fewshot_seed, include_path=self.include_path)


@dataclass(frozen=True)
class PplInputs(StepInputs):
    model: str  # as EvalInputs
    identity: str
    text: str  # a text set name (pydoc, file:PATH, c4:PATH, task:<name>, ...)
    text_sha256: str | None  # a local text file's content
    tokens: int
    dtype: str
    seed: int  # draws a punct / task: text
    data_dir: str | None
    window: int = 512
    stride: int = 256
    version: str = __version__


@dataclass(frozen=True)
class DivergenceInputs(StepInputs):
    model: str  # the full model's spec: the reference distribution
    full_identity: str  # its weights hash
    identity: str  # the quantize step's key (the variant's checkpoint)
    text: str
    text_sha256: str | None
    tokens: int
    dtype: str
    seed: int  # draws a punct / task: text, and the bootstrap over windows
    data_dir: str | None
    bootstrap: int
    window: int = 512
    stride: int = 256
    version: str = __version__


@dataclass(frozen=True)
class QuestionDivergenceInputs(StepInputs):
    model: str  # the full model's spec
    full_identity: str  # its weights hash
    identity: str  # the quantize step's key (the variant's checkpoint)
    tasks: tuple[str, ...]  # as configured; several-true-answer tasks are left out
    limit: int | None
    data_dir: str | None
    seed: int  # generated tasks' seed and the bootstrap's
    dtype: str
    bootstrap: int
    num_fewshot: int | None = None
    fewshot_seed: int = 1234
    include_path: str | None = None
    version: str = __version__

    def task_options(self) -> TaskOptions:
        return TaskOptions(data_dir=self.data_dir, limit=self.limit, seed=self.seed, num_fewshot=self.num_fewshot,
                           fewshot_seed=self.fewshot_seed, include_path=self.include_path)


@dataclass(frozen=True)
class OutliersInputs(StepInputs):
    model: str
    model_fingerprint: str
    calib_sets: tuple[str, ...]
    n_samples: int
    data_dir: str | None
    version: str = __version__


@dataclass(frozen=True)
class AnalysisInputs(StepInputs):
    evaluation: str  # the eval step it analyses (its directory name: its key)
    full: str | None  # the full model's eval step (None for the full model's own analysis)
    bins: int
    bootstrap: int
    recalibration_folds: int
    version: str = ANALYSIS_VERSION


@dataclass(frozen=True)
class NoiseFloorInputs(StepInputs):
    full: str  # eval step directory names
    members: tuple[str, ...]
    bins: int
    bootstrap: int  # resamples: max(the study's, 200)
    version: str = ANALYSIS_VERSION


# ---------------------------------------------------------------------------------------------
# The steps


@dataclass
class Step:
    kind: ClassVar[str]
    model: str  # base model spec (display and grouping; what runs is in `inputs`)
    variant: QuantConfig | None
    path: Path
    inputs: StepInputs
    execution: Execution = Execution()

    def label(self) -> str:
        return self.variant.label() if self.variant else "full"

    def needs(self) -> list["Step"]:
        """The steps whose outputs this one reads (its jobs wait for theirs)."""
        return []

    def done(self) -> bool:
        raise NotImplementedError

    def run(self, log, tasks: tuple[str, ...] | None = None, shard=None, lm=None) -> None:
        """Compute the output from `inputs` (and `execution`) only; the caller holds the step's lock.
        `tasks`, `shard`, `lm` (an already loaded model): eval steps only."""
        raise NotImplementedError

    def provenance(self) -> dict:
        """What the report's provenance says about this step (from the record the step wrote)."""
        return {}

    def describe(self) -> str:
        return f"{self.kind:<8} {self.model} {self.label()} -> {self.path}"

    def run_once(self, log) -> bool:
        """Run under the step's lock unless it is done (checked again once the lock is held: another
        run may have finished it meanwhile); whether it ran."""
        with locked(self.path.parent / f".{self.path.name}.lock", log, what=f"{self.kind} step {self.path.name}"):
            if self.done():
                return False
            self.run(log)
            return True


@dataclass
class QuantizeStep(Step):
    kind: ClassVar[str] = "quantize"
    inputs: QuantizeInputs = None

    def done(self) -> bool:
        return (self.path / QUANTIZE_RECORD).is_file()

    def run(self, log, tasks=None, shard=None, lm=None) -> None:
        i = self.inputs
        run_quantize(i.model, i.variant, self.path, overwrite=True, threads=self.execution.threads,
                     data_dir=i.data_dir, quiet=True, log=log)

    def provenance(self) -> dict:
        rec = read_quantize_record(self.path)
        return {k: rec.get(k) for k in ("calibration", "seconds", "library", "method_version", "packages",
                                        "model_fingerprint")}


@dataclass
class _RunsAModel(Step):
    """A step that runs the full model, or (`source`) the checkpoint a quantize step wrote."""

    source: QuantizeStep | None = None

    def target(self) -> str:
        """The checkpoint its quantize step writes (named by `inputs.identity`, that step's key), or the model."""
        return str(self.source.path) if self.source else self.inputs.model

    def needs(self) -> list[Step]:
        return [self.source] if self.source else []


@dataclass
class EvalStep(_RunsAModel):
    kind: ClassVar[str] = "eval"
    inputs: EvalInputs = None
    tasks: tuple[str, ...] = ()  # the leaf task names whose predictions the step must hold (from inputs.tasks)

    def done(self) -> bool:
        finished = read_manifest(self.path).get("tasks", {}) if self.path.is_dir() else {}
        return bool(self.tasks) and all(
            t in finished and intact(self.path, {"file": task_file_name(t), **finished[t]}) for t in self.tasks)

    def run(self, log, tasks=None, shard=None, lm=None) -> None:
        # evaluate_to_dir itself reuses every finished task whose inputs are unchanged, and locks each
        # task, so jobs of one step (and two studies on one dir) share the work
        i = self.inputs
        evaluate_to_dir(lm or self.target(), list(tasks or i.tasks), self.path,
                        load=LoadOptions(dtype=i.dtype, threads=self.execution.threads), data=i.task_options(),
                        run=EvalOptions(batch_size=self.execution.batch_size, progress=False, shard=shard,
                                        max_gen_toks=i.max_gen_toks,
                                        sampling=SamplingConfig.from_dict(i.sampling) if i.sampling else None), log=log)

    def provenance(self) -> dict:
        man = read_manifest(self.path)
        return {**{k: man.get(k) for k in ("model", "dtype", "device", "packages")},
                "tasks": {t: {k: v.get(k) for k in ("source", "source_sha256", "n", "version")}
                          for t, v in man.get("tasks", {}).items()}}

    def file_hashes(self) -> dict[str, str]:
        """sha256 of each finished predictions file (from the manifest): what an analysis of it read."""
        return {t: e.get("sha256") for t, e in read_manifest(self.path).get("tasks", {}).items()}


@dataclass
class _WritesOneFile(_RunsAModel):
    """A step that runs a model and writes one JSON file: done when the file exists."""

    def done(self) -> bool:
        return self.path.is_file()

    def result(self) -> dict:
        return read_optional_json(self.path, "re-run the study (`quantconf study CONFIG --out DIR`) to recompute it")


@dataclass
class PplStep(_WritesOneFile):
    kind: ClassVar[str] = "ppl"
    inputs: PplInputs = None

    def run(self, log, tasks=None, shard=None, lm=None) -> None:
        i = self.inputs
        record = text_perplexity(self.target(), i.text, window=i.window, stride=i.stride, max_tokens=i.tokens,
                                 load=LoadOptions(dtype=i.dtype, threads=self.execution.threads),
                                 data=TaskOptions(data_dir=i.data_dir, seed=i.seed))
        atomic_write_json(self.path, {k: v for k, v in record.items() if k != "model"})

    def provenance(self) -> dict:
        rec = json.loads(self.path.read_text()) if self.path.is_file() else {}
        return {k: rec.get(k) for k in ("text", "source", "tokens", "window", "stride", "perplexity")}


@dataclass
class DivergenceStep(_WritesOneFile):
    """Token-level divergence of one quantized variant from its full model (`divergence.text_divergence`)
    on the study's ppl_text: the same windows as its ppl step."""

    kind: ClassVar[str] = "divergence"
    inputs: DivergenceInputs = None

    def run(self, log, tasks=None, shard=None, lm=None) -> None:
        i = self.inputs
        record = text_divergence(i.model, self.target(), i.text, window=i.window, stride=i.stride,
                                 max_tokens=i.tokens, n_boot=i.bootstrap,
                                 load=LoadOptions(dtype=i.dtype, threads=self.execution.threads),
                                 data=TaskOptions(data_dir=i.data_dir, seed=i.seed),
                                 cache_dir=self.path.parent / "cache")  # the full model's pass, once per model
        atomic_write_json(self.path, {k: v for k, v in record.items() if k not in ("full", "quant")})
        log(f"divergence of {self.label()}: KL mean {record['kld_mean']['estimate']:.4f} nats, "
            f"same top token {record['same_top']['estimate']:.1f}%")

    def provenance(self) -> dict:
        rec = json.loads(self.path.read_text()) if self.path.is_file() else {}
        return {k: rec.get(k) for k in ("text", "source", "tokens", "window", "stride", "windows")}


@dataclass
class QuestionDivergenceStep(_WritesOneFile):
    """Per question of each single-answer multiple-choice or generation task of the study, the answer tokens' KL of one
    quantized variant from its full model beside the choice-level JS, and how well each tells the flipped
    questions (`divergence.question_divergence`, `question_summary`)."""

    kind: ClassVar[str] = "divergence_questions"
    inputs: QuestionDivergenceInputs = None

    def run(self, log, tasks=None, shard=None, lm=None) -> None:
        i = self.inputs
        options = i.task_options()
        load = LoadOptions(dtype=i.dtype, threads=self.execution.threads)
        full, quant = load.load(i.model), load.load(self.target())
        leaves, _ = options.resolve(i.tasks)
        out = {"tasks": {}, "left_out": {}}
        for leaf in leaves:
            loaded = options.load(leaf)
            why = kind_of_task(loaded.task).why_no_question_divergence(loaded)
            if why:
                out["left_out"][leaf.name] = why
                continue
            out["tasks"][leaf.name] = question_summary(question_divergence(full, quant, loaded), i.bootstrap, i.seed)
        atomic_write_json(self.path, out)
        log(f"per-question divergence of {self.label()}: {len(out['tasks'])} task(s)")


@dataclass
class OutliersStep(Step):
    kind: ClassVar[str] = "outliers"
    inputs: OutliersInputs = None

    def done(self) -> bool:
        return (self.path / "outliers.json").is_file()

    def run(self, log, tasks=None, shard=None, lm=None) -> None:
        i = self.inputs
        run_outliers(i.model, list(i.calib_sets), self.path, OutlierOptions(n_samples=i.n_samples),
                     load=LoadOptions(threads=self.execution.threads), data_dir=i.data_dir, log=log, overwrite=True)

    def provenance(self) -> dict:
        path = self.path / "outliers.json"
        rec = json.loads(path.read_text()) if path.is_file() else {}
        return {k: rec.get(k) for k in ("model", "calibration", "threshold", "packages")}


@dataclass
class _ReadsPredictions(Step):
    """An analysis step: done when its output exists and was computed from the predictions files that
    are there now (their sha256, recorded in the output, equal the manifests')."""

    def reads(self) -> list[EvalStep]:
        """The eval steps whose predictions it reads (named by its inputs)."""
        raise NotImplementedError

    def needs(self) -> list[Step]:
        return list(self.reads())

    def input_hashes(self) -> dict:
        return {e.path.name: e.file_hashes() for e in self.reads()}

    def done(self) -> bool:
        """Done when its file holds the result of exactly these inputs. A corrupt file (a crash outside
        quantconf's atomic writes, an edit) is not done: the step runs again and replaces it."""
        try:
            out = read_optional_json(self.path, "it is recomputed") if self.path.is_file() else {}
        except QuantconfError:
            return False
        return bool(out) and out.get("inputs") == self.input_hashes()

    def result(self) -> dict:
        return read_optional_json(self.path, "re-run the study (`quantconf study CONFIG --out DIR`) to recompute it")

    def provenance(self) -> dict:
        return {"inputs": self.input_hashes()}


@dataclass
class AnalysisStep(_ReadsPredictions):
    """Per task of one evaluation: its metrics with bootstrap CIs, its temperature scaling, and for a
    quantized variant the paired comparison with the full model and the scaling gap's intervals."""

    kind: ClassVar[str] = "analysis"
    inputs: AnalysisInputs = None
    evaluation: EvalStep | None = None
    full: EvalStep | None = None  # None for the full model's own analysis

    def reads(self) -> list[EvalStep]:
        return [self.evaluation] + ([self.full] if self.full else [])

    def run(self, log, tasks=None, shard=None, lm=None) -> None:
        i = self.inputs
        preds = read_prediction_dir(self.evaluation.path)
        full = read_prediction_dir(self.full.path) if self.full else {}
        kinds = {task: kind_of(df) for task, df in preds.items()}
        # everything the report shows is computed here, once: the report only reads (tables, plots, explorer)
        out = {"inputs": self.input_hashes(), "kinds": {t: k.name for t, k in kinds.items()}, "metrics": {},
               "comparisons": {}, "recalibration": {}, "recalibration_verdicts": {}, "recalibration_maps": {},
               "reliability": {}, "samples": {}, "questions": {}, "risk_coverage": {}}
        for task, df in preds.items():
            out["metrics"][task] = task_metrics(df, n_bins=i.bins, n_boot=i.bootstrap)
            curves = kinds[task].risk_coverage(df)
            if curves:
                out["risk_coverage"][task] = curves
            if kinds[task].reliability_shown(df):
                conf, correct = kinds[task].confidence_and_correctness(df)
                out["reliability"][task] = {k: np.asarray(v).tolist() for k, v in
                                            reliability_bins(conf, correct, i.bins).items()}
        for task in sorted(set(full) & set(preds)):
            out["comparisons"][task] = compare_task(full[task], preds[task], n_bins=i.bins, n_boot=i.bootstrap,
                                                    task=task)
            out["samples"][task] = columns_of(kinds[task].per_sample_frame(full[task], preds[task], task))
            out["questions"][task] = columns_of(pd.DataFrame(kinds[task].question_rows(full[task], preds[task], task)))
        for task, df in preds.items():
            maps = task_recalibration_maps(df, full.get(task), n_folds=i.recalibration_folds,
                                           n_boot=max(min(i.bootstrap, 200), 1), n_bins=i.bins, task=task)
            if maps is not None:
                out["recalibration_maps"][task] = maps
            if kinds[task].not_temperature_scalable(df):  # it needs choice scores with one gold answer
                continue
            options = dict(n_folds=i.recalibration_folds, n_boot=min(i.bootstrap, 200), n_bins=i.bins)
            r = recalibrate_task(df, **options)
            if task in full:  # the quantized-minus-full gap before/after scaling, with paired intervals
                r["gap"] = gap_interval(full[task], df, n_boot=max(min(i.bootstrap, 200), 1), n_bins=i.bins)
                # the full model's fit as its own analysis step makes it (same folds and seed: equal numbers); the
                # verdict reads T and the before/after metrics, not T's interval, so no bootstrap of T here
                out["recalibration_verdicts"][task] = gap_verdict(task, recalibrate_task(full[task], **{**options,
                                                                                                  "n_boot": 0}), r,
                                                                  gap=r["gap"])
            out["recalibration"][task] = r
        atomic_write_json(self.path, out)
        log(f"analysis of {self.label()}: {len(preds)} task(s)")


@dataclass
class NoiseFloorStep(_ReadsPredictions):
    """Per single-answer task: the noise floor of one configuration quantized several times
    (`analysis.noise_floor`), before the study-wide Holm adjustment (done when the report is read)."""

    kind: ClassVar[str] = "noise_floor"
    inputs: NoiseFloorInputs = None
    family: str = ""
    members: tuple[EvalStep, ...] = ()
    full: EvalStep | None = None

    def label(self) -> str:
        return self.family

    def reads(self) -> list[EvalStep]:
        return [self.full, *self.members]

    def run(self, log, tasks=None, shard=None, lm=None) -> None:
        i = self.inputs
        full = read_prediction_dir(self.full.path)
        members = [read_prediction_dir(m.path) for m in self.members]
        floors = []
        for task in sorted(set(full).intersection(*members)):
            if not kind_of(full[task]).single_answer(full[task]):  # a flip needs one gold answer
                continue
            floors.append(task_noise_floor(full[task], [m[task] for m in members], n_bins=i.bins, task=task,
                                           n_boot=i.bootstrap))
        adjust_floors(floors)  # Holm over this configuration's tasks: one family (noise_floor.adjust_floors)
        atomic_write_json(self.path, {"inputs": self.input_hashes(), "floors": floors})
        log(f"noise floor of {self.family}: {len(floors)} task(s)")


def columns_of(frame: pd.DataFrame) -> dict:
    """A frame as {column: list of Python values} (JSON without numpy types; NaN stays NaN)."""
    return {col: frame[col].tolist() for col in frame.columns}


RESOURCE_KINDS = {"quantize": "quantize", "eval": "eval", "ppl": "ppl", "divergence": "divergence",
                  "divergence_questions": "divergence_questions", "outliers": "outliers",
                  "analysis": "analysis", "noise_floor": "analysis"}  # step kind -> its Ray resources entry
STEP_KINDS: dict[str, type[Step]] = {c.kind: c for c in (QuantizeStep, EvalStep, PplStep, DivergenceStep,
                                                          QuestionDivergenceStep, OutliersStep, AnalysisStep,
                                                          NoiseFloorStep)}
