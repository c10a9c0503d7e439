"""A study's plan: every step (`steps.py`) at its content-addressed path, in run order, and the check
that every task's data loads before anything runs.

A key hashes everything that determines a step's output: the model's weights hash; for quantize, the
variant's fields, the data dir, the method's code identity (its version, its library's version) and,
for methods whose result depends on the summation order, the thread count; for eval, the quantize key
and the tasks, limit, data dir, seed, dtype and few-shot options; for ppl, the model's key and every
input of `PplStep.run` (text, tokens, dtype, seed, data dir); a local text file (`file:PATH` calibration or
perplexity text) by its content's sha256, not its path; for analysis, the evaluations it
reads and the bootstrap and bin counts. Editing a config reuses what still applies; a fix in one
method re-runs that method's steps and what depends on them.
"""

from __future__ import annotations

import os
from pathlib import Path

from quantconf._version import __version__
from quantconf.analysis.noise_floor import replicate_family
from quantconf.errors import QuantconfError
from quantconf.io import stable_hash
from quantconf.builtin_models import model_fingerprint
from quantconf.quantizers import load_methods
from quantconf.quantizers.base import code_identity
from quantconf.quantizers.calib_data import text_identity
from quantconf.study.config import Study
from quantconf.study.steps import (ANALYSIS_VERSION, AnalysisStep, EvalStep, NoiseFloorStep, OutliersStep, PplStep,
                                   QuantizeStep, Step, outlier_calib_sets, study_task_options)


def plan(study: Study, study_dir: Path) -> list[Step]:
    """Every step of a study, in run order, each at its content-addressed path."""
    steps: list[Step] = []
    task_names = study.leaf_tasks()
    methods = load_methods()
    at = Path(study_dir) / "steps"
    analysis_options = [study.bins, study.bootstrap, ANALYSIS_VERSION]
    for model in study.models:
        fp = model_fingerprint(model)
        eval_common = [study.tasks, study.limit, study.data_dir, study.seed, study.dtype, __version__,
                       *([study.num_fewshot, study.fewshot_seed, study.include_path]
                         if (study.num_fewshot, study.fewshot_seed, study.include_path) != (None, 1234, None) else []),
                       *([study.max_gen_toks] if study.max_gen_toks is not None else [])]
        # what PplStep.run reads besides the model: the text (its file's content), token budget, dtype, and the
        # seed and data dir that draw a punct/task: text
        ppl_inputs = [study.ppl_text, study.ppl_tokens, __version__, study.dtype, study.seed, study.data_dir,
                      text_identity(study.ppl_text or "")]
        full = EvalStep(model, None, at / f"eval-{stable_hash([fp, eval_common])[:16]}", tasks=task_names)
        steps.append(full)
        evals = []
        for v in study.variants:
            # a method whose result depends on the summation order (GPTQ's Hessian updates) is keyed by
            # the thread count it runs with; RTN and other exact methods are not
            threads = [] if methods[v.method].threads_invariant else [study.threads or os.cpu_count() or 1]
            # the method's code identity (its version, its library's version): a fix in one method
            # re-runs that method's steps and what depends on them, nothing else
            calib_file = [text_identity(v.calib)] if text_identity(v.calib) else []  # content, not path
            qkey = stable_hash([fp, v.key_fields(), study.data_dir, __version__, *threads,
                                code_identity(methods[v.method]), *calib_file])[:16]
            quant = QuantizeStep(model, v, at / f"quant-{qkey}")
            ev = EvalStep(model, v, at / f"eval-{stable_hash([qkey, eval_common])[:16]}", tasks=task_names,
                          source=quant)
            steps += [quant, ev]
            evals.append(ev)
            if study.ppl_text:
                pkey = stable_hash([qkey, *ppl_inputs])[:16]
                steps.append(PplStep(model, v, at / f"ppl-{pkey}.json", source=quant))
        if study.ppl_text:
            pkey = stable_hash([fp, *ppl_inputs])[:16]
            steps.append(PplStep(model, None, at / f"ppl-{pkey}.json"))
        if study.outliers:
            okey = stable_hash([fp, outlier_calib_sets(study), study.outlier_samples, study.data_dir, __version__])[:16]
            steps.append(OutliersStep(model, None, at / f"outliers-{okey}"))
        for ev in [full, *evals]:
            inputs = [ev.path.name] + ([full.path.name] if ev.variant else [])
            steps.append(AnalysisStep(model, ev.variant, at / f"analysis-{stable_hash([inputs, analysis_options])[:16]}.json",
                                      evaluation=ev, full=full if ev.variant else None))
        families: dict[str, list[EvalStep]] = {}
        for ev in evals:
            families.setdefault(replicate_family(ev.variant), []).append(ev)
        for family, members in families.items():
            if len(members) > 1:
                inputs = [full.path.name, *(m.path.name for m in members)]
                key = stable_hash([inputs, analysis_options, max(study.bootstrap, 200)])[:16]
                steps.append(NoiseFloorStep(model, None, at / f"noise-floor-{key}.json", family=family,
                                            members=tuple(members), full=full))
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
