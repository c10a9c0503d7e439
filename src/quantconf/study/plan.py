"""A study's plan: every step (`steps.py`) at its content-addressed path, in run order, and the check
that every task's data loads before anything runs.

Each step's inputs object holds everything its output depends on, and its path is the hash of it
(`StepInputs.key`): the model's weights hash; for quantize, the variant's fields, the data dir, the
method's code identity (its version, its library's version), a `file:` calibration text's content and,
for methods whose result depends on the summation order, the thread count; for eval, the quantize key
and the tasks, limit, data dir, seed, dtype and few-shot options; for ppl, the text (a file's content),
token budget, dtype, seed and data dir; for the analyses, the evaluations they read and the bootstrap
and bin counts. Editing a config reuses what still applies; a fix in one method re-runs that method's
steps and what depends on them.
"""

from __future__ import annotations

from pathlib import Path

from quantconf.models.builtin import model_fingerprint
from quantconf.models.runtime import available_cores
from quantconf.errors import QuantconfError
from quantconf.quantizers import load_methods
from quantconf.quantizers.base import code_identity
from quantconf.quantizers.calib_data import text_identity
from quantconf.study.config import RECALIBRATION_FOLDS, Study
from quantconf.study.steps import (AnalysisInputs, AnalysisStep, EvalInputs, EvalStep, Execution, NoiseFloorInputs,
                                   NoiseFloorStep, OutliersInputs, OutliersStep, PplInputs, PplStep, QuantizeInputs,
                                   DivergenceInputs, DivergenceStep, QuestionDivergenceInputs,
                                   QuestionDivergenceStep,
                                   QuantizeStep, Step)
from quantconf.inference.sampling import SamplingConfig
from quantconf.tasks import TaskOptions


def outlier_calib_sets(study: Study) -> list[str]:
    """Names of the calibration sets whose activation outliers a study measures: those its
    variants calibrate on (methods that use no data, RTN, bnb, gguf, hqq, fp8, have none)."""
    methods = load_methods()
    return sorted({v.calib for v in study.variants if methods[v.method].needs_calibration})


def study_task_options(study: Study) -> TaskOptions:
    return TaskOptions(data_dir=study.data_dir, limit=study.limit, seed=study.seed, num_fewshot=study.num_fewshot,
                       fewshot_seed=study.fewshot_seed, include_path=study.include_path)


def plan(study: Study, study_dir: Path) -> list[Step]:
    """Every step of a study, in run order, each at its content-addressed path."""
    steps: list[Step] = []
    task_names = tuple(study.leaf_tasks())
    methods = load_methods()
    at = Path(study_dir) / "steps"
    execution = Execution(threads=study.threads, batch_size=study.batch_size)

    sampling = (SamplingConfig(k=study.samples, temperature=study.temperature, top_p=study.top_p,
                               seed=study.sample_seed, equivalence=study.equivalence).as_dict()
                if study.samples is not None else None)

    def eval_inputs(model: str, identity: str) -> EvalInputs:
        return EvalInputs(model=model, identity=identity, tasks=tuple(study.tasks), limit=study.limit,
                          data_dir=study.data_dir, seed=study.seed, dtype=study.dtype, num_fewshot=study.num_fewshot,
                          fewshot_seed=study.fewshot_seed, include_path=study.include_path,
                          max_gen_toks=study.max_gen_toks, sampling=sampling)

    def ppl_inputs(model: str, identity: str) -> PplInputs:
        return PplInputs(model=model, identity=identity, text=study.ppl_text, text_sha256=text_identity(study.ppl_text),
                         tokens=study.ppl_tokens, dtype=study.dtype, seed=study.seed, data_dir=study.data_dir)

    def analysis(ev: EvalStep, full: EvalStep | None) -> AnalysisStep:
        inputs = AnalysisInputs(evaluation=ev.path.name, full=full.path.name if full else None, bins=study.bins,
                                bootstrap=study.bootstrap, recalibration_folds=RECALIBRATION_FOLDS)
        return AnalysisStep(ev.model, ev.variant, at / f"analysis-{inputs.key()}.json", inputs, execution,
                            evaluation=ev, full=full)

    for model in study.models:
        fp = model_fingerprint(model)
        inputs = eval_inputs(model, fp)
        full = EvalStep(model, None, at / f"eval-{inputs.key()}", inputs, execution, tasks=task_names)
        steps.append(full)
        evals = []
        for v in study.variants:
            method = methods[v.method]
            qin = QuantizeInputs(
                model=model, model_fingerprint=fp, variant=v, data_dir=study.data_dir,
                # a method whose result depends on the summation order (GPTQ's Hessian updates) is keyed by
                # the thread count it runs with; RTN and other exact methods are not
                threads=None if method.threads_invariant else (study.threads or available_cores()),
                # the method's code identity: a fix in one method re-runs that method's steps, nothing else
                method_code=tuple(code_identity(method)), calib_sha256=text_identity(v.calib))
            quant = QuantizeStep(model, v, at / f"quant-{qin.key()}", qin, execution)
            ein = eval_inputs(model, qin.key())
            ev = EvalStep(model, v, at / f"eval-{ein.key()}", ein, execution, source=quant, tasks=task_names)
            steps += [quant, ev]
            evals.append(ev)
            if study.ppl_text:
                pin = ppl_inputs(model, qin.key())
                steps.append(PplStep(model, v, at / f"ppl-{pin.key()}.json", pin, execution, source=quant))
            if study.divergence:
                din = DivergenceInputs(model=model, full_identity=fp, identity=qin.key(), text=study.ppl_text,
                                       text_sha256=text_identity(study.ppl_text), tokens=study.ppl_tokens,
                                       dtype=study.dtype, seed=study.seed, data_dir=study.data_dir,
                                       bootstrap=study.bootstrap)
                steps.append(DivergenceStep(model, v, at / f"divergence-{din.key()}.json", din, execution,
                                            source=quant))
            if study.divergence_questions:
                qdin = QuestionDivergenceInputs(
                    model=model, full_identity=fp, identity=qin.key(), tasks=tuple(study.tasks), limit=study.limit,
                    data_dir=study.data_dir, seed=study.seed, dtype=study.dtype, bootstrap=study.bootstrap,
                    num_fewshot=study.num_fewshot, fewshot_seed=study.fewshot_seed, include_path=study.include_path)
                steps.append(QuestionDivergenceStep(model, v, at / f"divergence-questions-{qdin.key()}.json", qdin,
                                                    execution, source=quant))
        if study.ppl_text:
            pin = ppl_inputs(model, fp)
            steps.append(PplStep(model, None, at / f"ppl-{pin.key()}.json", pin, execution))
        if study.outliers:
            oin = OutliersInputs(model=model, model_fingerprint=fp, calib_sets=tuple(outlier_calib_sets(study)),
                                 n_samples=study.outlier_samples, data_dir=study.data_dir)
            steps.append(OutliersStep(model, None, at / f"outliers-{oin.key()}", oin, execution))
        for ev in [full, *evals]:
            steps.append(analysis(ev, full if ev.variant else None))
        families: dict[str, list[EvalStep]] = {}
        for ev in evals:
            families.setdefault(ev.variant.replicate_family(), []).append(ev)
        for family, members in families.items():
            if len(members) > 1:
                nin = NoiseFloorInputs(full=full.path.name, members=tuple(m.path.name for m in members),
                                       bins=study.bins, bootstrap=max(study.bootstrap, 200))
                steps.append(NoiseFloorStep(model, None, at / f"noise-floor-{nin.key()}.json", nin, execution,
                                            family=family, members=tuple(members), full=full))
    return steps


def check_study_data(study: Study, log=print) -> None:
    """Every task's documents load (local files read and validated, or the hub reached): a study whose
    full-model evaluation would fail for missing data stops here, before any quantization."""
    data = study_task_options(study)
    leaves, _ = data.resolve(study.tasks)
    problems = []
    for task in leaves:
        try:
            data.load(task)
        except QuantconfError as e:
            problems.append(str(e))
    if problems:
        more = f" (and {len(problems) - 1} more task(s))" if len(problems) > 1 else ""
        raise QuantconfError(f"study data: {problems[0]}{more}; nothing was run", param="data_dir")
    log(f"data: {len(leaves)} task(s) load from {study.data_dir or 'the hub / $QUANTCONF_DATA_DIR'}")
