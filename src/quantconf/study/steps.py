"""The kinds of step a study is made of, one class each: where its output lives, when it is done,
how it runs, what it records for provenance, and which steps it needs.

    QuantizeStep     a quantized checkpoint                 steps/quant-<key>/
    EvalStep         predictions of the full or a quantized model   steps/eval-<key>/
    PplStep          held-out perplexity                    steps/ppl-<key>.json
    OutliersStep     activation outliers of the calibration sets    steps/outliers-<key>/
    AnalysisStep     metrics, comparison with the full model and temperature scaling of one
                     evaluation                              steps/analysis-<key>.json
    NoiseFloorStep   the noise floor of one replicated configuration  steps/noise-floor-<key>.json

A key hashes everything that determines the output (see `plan.py`), so a finished step is reused
and an interrupted study resumes where it stopped. The two analysis kinds read predictions only: a
study resumed after every step finished, and `quantconf report`, compute nothing. A new kind is one
class here and one line in `plan.py`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from quantconf.analysis.metrics import has_several_true
from quantconf.analysis.tasks import compare_task, is_generation, task_metrics, task_noise_floor
from quantconf.analysis.recalibration import gap_interval, recalibrate_task
from quantconf.evaluation import EvalOptions, evaluate_to_dir
from quantconf.errors import QuantconfError
from quantconf.io import atomic_write_json, locked, read_optional_json
from quantconf.model_files import QUANTIZE_RECORD, read_quantize_record
from quantconf.models import LoadOptions
from quantconf.outliers import OutlierOptions, run_outliers
from quantconf.perplexity import text_perplexity
from quantconf.predictions import intact, read_manifest, read_prediction_dir, task_file_name
from quantconf.quantizers import QuantConfig, load_methods, run_quantize
from quantconf.study.config import RECALIBRATION_FOLDS
from quantconf.tasks import TaskOptions

# part of the analysis steps' keys: bump when the analysis of the same predictions can change
ANALYSIS_VERSION = "2"  # 2: generation tasks


@dataclass
class Step:
    kind: ClassVar[str]
    model: str  # base model spec
    variant: QuantConfig | None
    path: Path

    def label(self) -> str:
        return self.variant.label() if self.variant else "full"

    def needs(self) -> list["Step"]:
        """The steps whose outputs this one reads (its jobs wait for theirs)."""
        return []

    def done(self) -> bool:
        raise NotImplementedError

    def run(self, study, log, tasks: tuple[str, ...] | None = None, shard=None, model=None) -> None:
        """Compute the output (the caller holds the step's lock). `tasks`, `shard`, `model`: eval steps only."""
        raise NotImplementedError

    def provenance(self) -> dict:
        """What the report's provenance says about this step (from the record the step wrote)."""
        return {}

    def describe(self) -> str:
        return f"{self.kind:<8} {self.model} {self.label()} -> {self.path}"

    def run_once(self, study, log) -> bool:
        """Run under the step's lock unless it is done (checked again once the lock is held: another
        run may have finished it meanwhile); whether it ran."""
        with locked(self.path.parent / f".{self.path.name}.lock", log, what=f"{self.kind} step {self.path.name}"):
            if self.done():
                return False
            self.run(study, log)
            return True


@dataclass
class QuantizeStep(Step):
    kind: ClassVar[str] = "quantize"

    def done(self) -> bool:
        return (self.path / QUANTIZE_RECORD).is_file()

    def run(self, study, log, tasks=None, shard=None, model=None) -> None:
        run_quantize(self.model, self.variant, self.path, overwrite=True, threads=study.threads,
                     data_dir=study.data_dir, quiet=True, log=log)

    def provenance(self) -> dict:
        rec = read_quantize_record(self.path)
        return {k: rec.get(k) for k in ("calibration", "seconds", "library", "method_version", "packages",
                                        "model_fingerprint")}


def study_task_options(study) -> TaskOptions:
    return TaskOptions(data_dir=study.data_dir, limit=study.limit, seed=study.seed, num_fewshot=study.num_fewshot,
                       fewshot_seed=study.fewshot_seed, include_path=study.include_path)


@dataclass
class _RunsAModel(Step):
    """A step that runs the full model, or (`source`) the checkpoint a quantize step wrote."""

    source: QuantizeStep | None = None

    def target(self) -> str:
        return str(self.source.path) if self.source else self.model

    def needs(self) -> list[Step]:
        return [self.source] if self.source else []


@dataclass
class EvalStep(_RunsAModel):
    kind: ClassVar[str] = "eval"
    tasks: tuple[str, ...] = ()  # the task names whose predictions the step must hold

    def done(self) -> bool:
        finished = read_manifest(self.path).get("tasks", {}) if self.path.is_dir() else {}
        return bool(self.tasks) and all(
            t in finished and intact(self.path, {"file": task_file_name(t), **finished[t]}) for t in self.tasks)

    def run(self, study, log, tasks=None, shard=None, model=None) -> None:
        # evaluate_to_dir itself reuses every finished task whose inputs are unchanged, and locks each
        # task, so jobs of one step (and two studies on one dir) share the work
        evaluate_to_dir(model or self.target(), list(tasks or study.tasks), self.path,
                        load=LoadOptions(dtype=study.dtype, threads=study.threads), data=study_task_options(study),
                        run=EvalOptions(batch_size=study.batch_size, progress=False, shard=shard,
                                        max_gen_toks=study.max_gen_toks), log=log)

    def provenance(self) -> dict:
        man = read_manifest(self.path)
        return {**{k: man.get(k) for k in ("model", "dtype", "device", "packages")},
                "tasks": {t: {k: v.get(k) for k in ("source", "source_sha256", "n", "version")}
                          for t, v in man.get("tasks", {}).items()}}

    def file_hashes(self) -> dict[str, str]:
        """sha256 of each finished predictions file (from the manifest): what an analysis of it read."""
        return {t: e.get("sha256") for t, e in read_manifest(self.path).get("tasks", {}).items()}


@dataclass
class PplStep(_RunsAModel):
    kind: ClassVar[str] = "ppl"

    def done(self) -> bool:
        return self.path.is_file()

    def run(self, study, log, tasks=None, shard=None, model=None) -> None:
        record = text_perplexity(self.target(), study.ppl_text, window=512, stride=256, max_tokens=study.ppl_tokens,
                                 load=LoadOptions(dtype=study.dtype, threads=study.threads),
                                 data=study_task_options(study))
        atomic_write_json(self.path, {k: v for k, v in record.items() if k != "model"})

    def provenance(self) -> dict:
        rec = json.loads(self.path.read_text()) if self.path.is_file() else {}
        return {k: rec.get(k) for k in ("text", "source", "tokens", "window", "stride", "perplexity")}


def outlier_calib_sets(study) -> list[str]:
    """Names of the calibration sets whose activation outliers a study measures: those its
    variants calibrate on (methods that use no data, RTN, bnb, gguf, hqq, fp8, have none)."""
    methods = load_methods()
    return sorted({v.calib for v in study.variants if methods[v.method].needs_calibration})


@dataclass
class OutliersStep(Step):
    kind: ClassVar[str] = "outliers"

    def done(self) -> bool:
        return (self.path / "outliers.json").is_file()

    def run(self, study, log, tasks=None, shard=None, model=None) -> None:
        run_outliers(self.model, outlier_calib_sets(study), self.path, OutlierOptions(n_samples=study.outlier_samples),
                     load=LoadOptions(threads=study.threads), data_dir=study.data_dir, log=log, overwrite=True)

    def provenance(self) -> dict:
        path = self.path / "outliers.json"
        rec = json.loads(path.read_text()) if path.is_file() else {}
        return {k: rec.get(k) for k in ("model", "calibration", "threshold", "packages")}


@dataclass
class _ReadsPredictions(Step):
    """An analysis step: done when its output exists and was computed from the predictions files that
    are there now (their sha256, recorded in the output, equal the manifests')."""

    def inputs(self) -> list[EvalStep]:
        raise NotImplementedError

    def needs(self) -> list[Step]:
        return list(self.inputs())

    def input_hashes(self) -> dict:
        return {e.path.name: e.file_hashes() for e in self.inputs()}

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
    evaluation: EvalStep | None = None
    full: EvalStep | None = None  # None for the full model's own analysis

    def inputs(self) -> list[EvalStep]:
        return [self.evaluation] + ([self.full] if self.full else [])

    def run(self, study, log, tasks=None, shard=None, model=None) -> None:
        preds = read_prediction_dir(self.evaluation.path)
        full = read_prediction_dir(self.full.path) if self.full else {}
        out = {"inputs": self.input_hashes(), "metrics": {}, "comparisons": {}, "recalibration": {}}
        for task, df in preds.items():
            out["metrics"][task] = task_metrics(df, n_bins=study.bins, n_boot=study.bootstrap)
        for task in sorted(set(full) & set(preds)):
            out["comparisons"][task] = compare_task(full[task], preds[task], n_bins=study.bins,
                                                    n_boot=study.bootstrap, task=task)
        for task, df in preds.items():
            if is_generation(df) or has_several_true(df["gold"]):  # temperature scaling needs choice scores
                continue
            r = recalibrate_task(df, n_folds=RECALIBRATION_FOLDS, n_boot=min(study.bootstrap, 200), n_bins=study.bins)
            if task in full:  # the quantized-minus-full gap before/after scaling, with paired intervals
                r["gap"] = gap_interval(full[task], df, n_boot=max(min(study.bootstrap, 200), 1), n_bins=study.bins)
            out["recalibration"][task] = r
        atomic_write_json(self.path, out)
        log(f"analysis of {self.label()}: {len(preds)} task(s)")


@dataclass
class NoiseFloorStep(_ReadsPredictions):
    """Per single-answer task: the noise floor of one configuration quantized several times
    (`analysis.noise_floor`), before the study-wide Holm adjustment (done when the report is read)."""

    kind: ClassVar[str] = "noise_floor"
    family: str = ""
    members: tuple[EvalStep, ...] = ()
    full: EvalStep | None = None

    def label(self) -> str:
        return self.family

    def inputs(self) -> list[EvalStep]:
        return [self.full, *self.members]

    def run(self, study, log, tasks=None, shard=None, model=None) -> None:
        full = read_prediction_dir(self.full.path)
        members = [read_prediction_dir(m.path) for m in self.members]
        floors = []
        for task in sorted(set(full).intersection(*members)):
            if not is_generation(full[task]) and has_several_true(full[task]["gold"]):
                continue
            floors.append(task_noise_floor(full[task], [m[task] for m in members], n_bins=study.bins, task=task,
                                      n_boot=max(study.bootstrap, 200)))
        atomic_write_json(self.path, {"inputs": self.input_hashes(), "floors": floors})
        log(f"noise floor of {self.family}: {len(floors)} task(s)")


RESOURCE_KINDS = {"quantize": "quantize", "eval": "eval", "ppl": "ppl", "outliers": "outliers",
                  "analysis": "analysis", "noise_floor": "analysis"}  # step kind -> its Ray resources entry
STEP_KINDS: dict[str, type[Step]] = {c.kind: c for c in (QuantizeStep, EvalStep, PplStep, OutliersStep, AnalysisStep,
                                                          NoiseFloorStep)}
