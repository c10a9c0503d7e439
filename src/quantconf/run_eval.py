"""`quantconf eval`: evaluate a model on tasks and write predictions + manifest.

A task whose parquet exists and whose reuse key (model weights hash, dtype, device, task
version, data hash, limit, scorer version) matches the manifest is not recomputed.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

from quantconf import QuantconfError
from quantconf.predictions import (
    MANIFEST, accuracy, atomic_write_json, package_versions, read_manifest, read_predictions,
    stable_hash, task_file_name, write_predictions,
)
from quantconf.tasks import load_task

# part of the reuse key: bump when the scorer's numbers can change (3: rows packed, LM head in
# blocks; 4: prefix trees)
SCORER_VERSION = "4"


def ensure_writable_dir(out: Path) -> Path:
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".quantconf-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise QuantconfError(f"cannot write to output dir {out} ({e.strerror}); choose another --out") from None
    return out


def run_eval(
    model: str,
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
    """Evaluate and return {task: {"acc", "acc_norm", "n", "reused"}}."""
    from quantconf.models import load_model, model_fingerprint, resolve_device, set_threads

    if not tasks:
        raise QuantconfError("no tasks given; pass --tasks a,b (see quantconf tasks)")
    if batch_size < 1:
        raise QuantconfError(f"--batch-size must be >= 1, got {batch_size}")
    out = ensure_writable_dir(out)
    device = resolve_device(device)
    loaded_tasks = [load_task(t, data_dir=data_dir, limit=limit, seed=seed) for t in tasks]
    fingerprint = model_fingerprint(model, allow_pickle)
    manifest = read_manifest(out) if not overwrite else {}
    if manifest.get("model_fingerprint") not in (None, fingerprint):
        raise QuantconfError(f"{out} holds predictions of another model; use a new --out or --overwrite")
    done = manifest.get("tasks", {})

    lm = None
    summary = {}
    for loaded in loaded_tasks:
        name = loaded.task.name
        key = stable_hash([fingerprint, dtype, device, name, loaded.task.version, loaded.source_sha256,
                           limit, seed, SCORER_VERSION])
        path = out / task_file_name(name)
        if not overwrite and done.get(name, {}).get("key") == key and path.is_file():
            summary[name] = {**accuracy(read_predictions(path)), "n": len(loaded.questions), "reused": True}
            log(f"{name}: reusing {path}")
            continue
        if lm is None:
            n_threads = set_threads(threads)
            t0 = time.perf_counter()
            lm = load_model(model, dtype=dtype, device=device, allow_pickle=allow_pickle,
                            trust_remote_code=trust_remote_code)
            load_seconds = time.perf_counter() - t0
        from quantconf.evaluate import evaluate_task

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
