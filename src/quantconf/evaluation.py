"""Evaluate a model on multiple-choice tasks: questions -> per-choice log-likelihoods -> predictions.

`evaluate_task` scores one loaded task with a loaded model and returns its predictions frame (pure:
no files). `evaluate_to_dir` is what `quantconf eval` and studies run: it loads the model only when
some task needs scoring, writes `OUT/<task>.parquet` + `OUT/manifest.json`, and reuses a task whose
parquet exists and whose reuse key (model weights hash, dtype, device, task version, data hash,
limit, seed, scorer version) matches the manifest.

One row per question: doc_id, task, context, choices, gold, loglik, n_tokens, n_chars, n_bytes,
is_greedy. `n_chars`/`n_bytes` are lengths of the choice text without the delimiter, which is what
lm-eval's acc_norm divides by.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from quantconf.errors import QuantconfError
from quantconf.io import atomic_write_json, ensure_writable_dir, package_versions, stable_hash
from quantconf.calibration import accuracy
from quantconf.models import LoadedModel, load_model, model_fingerprint, resolve_device, set_threads
from quantconf.predictions import MANIFEST, read_manifest, read_prediction_file, task_file_name, write_predictions
from quantconf.scoring import encode_pair, score_questions, score_requests, wants_bos
from quantconf.tasks import LoadedTask, load_task

SCORERS = ("packed", "naive")
# part of the reuse key: bump when the scorer's numbers can change (3: rows packed, LM head in
# blocks; 4: prefix trees)
SCORER_VERSION = "4"


def task_requests(tokenizer, loaded: LoadedTask, add_bos: bool) -> list[tuple[list[int], list[int]]]:
    delim = loaded.task.target_delimiter
    return [encode_pair(tokenizer, q.context, delim + c, add_bos) for q in loaded.questions for c in q.choices]


def evaluate_task(lm: LoadedModel, loaded: LoadedTask, batch_size: int = 16, progress: bool = False,
                  scorer: str = "packed") -> pd.DataFrame:
    """Score every choice of every question. `scorer`: "packed" (context once per question) or
    "naive" (one sequence per choice); both agree to float rounding."""
    if scorer not in SCORERS:
        raise QuantconfError(f"scorer must be one of {SCORERS}, got {scorer!r}", param="scorer")
    add_bos = wants_bos(lm.model)
    requests = task_requests(lm.tokenizer, loaded, add_bos)
    if scorer == "naive":
        scored = score_requests(lm.model, requests, batch_size=batch_size, progress=progress, desc=loaded.task.name)
    else:
        groups, k = [], 0
        for q in loaded.questions:
            reqs = requests[k:k + len(q.choices)]
            k += len(q.choices)
            if any(ctx != reqs[0][0] for ctx, _ in reqs):  # cannot happen with encode_pair; be safe
                raise ValueError(f"{loaded.task.name} doc {q.doc_id}: choices disagree on the context tokens")
            groups.append((reqs[0][0], [cont for _, cont in reqs]))
        scored = [s for per_q in score_questions(lm.model, groups, batch_size=batch_size, progress=progress,
                                                 desc=loaded.task.name) for s in per_q]
    rows, k = [], 0
    for q in loaded.questions:
        s = scored[k:k + len(q.choices)]
        k += len(q.choices)
        rows.append({
            "doc_id": q.doc_id,
            "task": loaded.task.name,
            "context": q.context,
            "choices": list(q.choices),
            "gold": q.gold,
            "loglik": [x.loglik for x in s],
            "n_tokens": [x.n_tokens for x in s],
            "n_chars": [len(c) for c in q.choices],
            "n_bytes": [len(c.encode("utf-8")) for c in q.choices],
            "is_greedy": [x.is_greedy for x in s],
        })
    return pd.DataFrame(rows)


def evaluate_to_dir(
    model: str | LoadedModel,
    tasks: list[str],
    out: Path,
    data_dir: str | None = None,
    limit: int | None = None,
    batch_size: int = 16,
    dtype: str = "float32",
    device: str = "cpu",
    threads: int | None = None,
    seed: int = 1234,
    overwrite: bool = False,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    progress: bool = True,
    scorer: str = "packed",
    log=print,
) -> dict:
    """Evaluate `model` on `tasks`, write predictions + manifest to `out`, and return
    {task: {"acc", "acc_norm", "n", "reused"}}.

    `model` is a spec (loaded only if some task needs scoring) or a model `load_model` returned;
    then its own dtype and device apply, and its weights hash at load time identifies it (changes
    made to it in memory afterwards are not seen by the reuse check)."""
    if not tasks:
        raise QuantconfError("tasks is empty; name at least one task (see quantconf tasks)", param="tasks")
    if batch_size < 1:
        raise QuantconfError(f"batch_size must be >= 1, got {batch_size}", param="batch_size")
    if scorer not in SCORERS:
        raise QuantconfError(f"scorer must be one of {SCORERS}, got {scorer!r}", param="scorer")
    out = ensure_writable_dir(out)
    lm = None
    if isinstance(model, LoadedModel):
        lm, model, dtype, device = model, model.info["spec"], model.info["dtype"], model.info["device"]
        fingerprint, n_threads, load_seconds = lm.info["fingerprint"], set_threads(threads), 0.0
    else:
        device = resolve_device(device)
        fingerprint = model_fingerprint(model, allow_pickle)
    loaded_tasks = [load_task(t, data_dir=data_dir, limit=limit, seed=seed) for t in tasks]
    manifest = read_manifest(out) if not overwrite else {}
    if manifest.get("model_fingerprint") not in (None, fingerprint):
        raise QuantconfError(f"{out} holds predictions of another model; use a new out dir or overwrite it")
    done = manifest.get("tasks", {})

    summary = {}
    for loaded in loaded_tasks:
        name = loaded.task.name
        key = stable_hash([fingerprint, dtype, device, name, loaded.task.version, loaded.source_sha256,
                           limit, seed, SCORER_VERSION])
        path = out / task_file_name(name)
        if not overwrite and done.get(name, {}).get("key") == key and path.is_file():
            summary[name] = {**accuracy(read_prediction_file(path)), "n": len(loaded.questions), "reused": True}
            log(f"{name}: reusing {path}")
            continue
        if lm is None:
            n_threads = set_threads(threads)
            t0 = time.perf_counter()
            lm = load_model(model, dtype=dtype, device=device, allow_pickle=allow_pickle,
                            trust_remote_code=trust_remote_code)
            load_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        df = evaluate_task(lm, loaded, batch_size=batch_size, progress=progress, scorer=scorer)
        seconds = time.perf_counter() - t0
        write_predictions(df, path)
        acc = accuracy(df)
        done[name] = {
            "key": key, "file": path.name, "version": loaded.task.version, "source": loaded.source,
            "source_sha256": loaded.source_sha256, "n": len(df), "limit": limit, "seconds": round(seconds, 3),
            "choices_per_second": round(sum(map(len, df["choices"])) / max(seconds, 1e-9), 2), **acc,
        }
        manifest.update({
            "model_spec": model, "model_fingerprint": fingerprint, "model": lm.info, "dtype": dtype,
            "device": device, "threads": n_threads, "batch_size": batch_size, "seed": seed, "scorer": scorer,
            "scorer_version": SCORER_VERSION, "packages": package_versions(),
            "model_load_seconds": round(load_seconds, 3),
            "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"), "tasks": done,
        })
        atomic_write_json(out / MANIFEST, manifest)
        summary[name] = {**acc, "n": len(df), "reused": False}
        log(f"{name}: n={len(df)} acc={acc['acc']:.4f} acc_norm={acc['acc_norm']:.4f} ({seconds:.1f}s)")
    return summary
