"""quantconf vs lm-evaluation-harness itself, on the same model and the same local items.

lm-eval runs its own task definitions (included from its package) with only the dataset pointed at
../shared/data, so both prompts and scoring are checked against the reference implementation.
Its samples are written by lm-eval's own EvaluationTracker (what `--log_samples` runs) and
imported back with `quantconf import-lm-eval`.
"""

from pathlib import Path

import numpy as np
import pytest

from quantconf.analysis.metrics import accuracy
from quantconf.evaluation import evaluate_task
from quantconf.importers.lm_eval_files import OFFLINE_TASKS, import_lm_eval, write_offline_task_yamls
from quantconf.predictions import read_prediction_dir
from quantconf.tasks import load_task

pytestmark = pytest.mark.integration

LIMIT = 50
# the default model checks the numbers at 1e-4 on a real model; the tiny model's 50 items check the format (every
# prompt, gold label and choice), so 16 items each are enough here (50 took 205 of CI's seconds)
DEFAULT_MODEL_LIMIT = 16


def run_both(lm, data_dir: Path, tmp_path: Path, limit: int = LIMIT):
    pytest.importorskip("lm_eval")
    from conftest import folder_task_manager
    from test_lm_eval_tasks import run_lm_eval  # simple_evaluate + lm-eval's own EvaluationTracker files

    write_offline_task_yamls(tmp_path, data_dir)
    res, logs = run_lm_eval(lm, [f"qc_{t}" for t in OFFLINE_TASKS], folder_task_manager(tmp_path),
                            tmp_path / "logs", limit=limit)
    ours = {name: evaluate_task(lm, load_task(name, data_dir=data_dir, limit=limit), batch_size=8) for name in OFFLINE_TASKS}
    return res, logs, ours


def check_agreement(res, logs, ours, tmp_path, rtol=0.0, limit: int = LIMIT):
    imported = tmp_path / "imported"
    import_lm_eval([logs], imported)
    theirs = read_prediction_dir(imported)
    for name in OFFLINE_TASKS:
        samples = sorted(res["samples"][f"qc_{name}"], key=lambda s: s["doc_id"])
        df = ours[name]
        assert len(samples) == len(df) == limit
        for s, (_, row) in zip(samples, df.iterrows()):
            assert s["doc_id"] == row["doc_id"]
            assert s["arguments"][0][0] == row["context"]  # the same prompt text
            their_ll = [float(r[0]) for r in s["filtered_resps"]]
            np.testing.assert_allclose(row["loglik"], their_ll, atol=1e-4, rtol=rtol)
            assert [bool(r[1]) for r in s["filtered_resps"]] == list(row["is_greedy"])
            assert s["acc"] == float(np.argmax(row["loglik"]) == row["gold"])
        ours_acc = accuracy(df)
        assert ours_acc["acc"] == res["results"][f"qc_{name}"]["acc,none"]
        if "acc_norm,none" in res["results"][f"qc_{name}"]:
            assert ours_acc["acc_norm"] == res["results"][f"qc_{name}"]["acc_norm,none"]
        # the importer reproduces lm-eval's numbers and gold labels
        imp = theirs[f"qc_{name}"]
        assert list(imp["gold"]) == list(df["gold"])
        assert accuracy(imp) == pytest.approx(ours_acc, abs=1e-12)


def test_agreement_tiny_model(shared_data, tmp_path):
    from conftest import build_tiny_model
    from quantconf.models.loading import load_model

    # a window long enough for boolq passages in the tiny tokenizer's many short tokens
    lm = load_model(str(build_tiny_model(tmp_path / "tiny", max_positions=4096)))
    # a random model gives log-likelihoods near -2000, where one float32 ulp is 1.2e-4: allow 1e-6 relative
    check_agreement(*run_both(lm, shared_data, tmp_path), tmp_path, rtol=1e-6)


def test_agreement_default_model(shared_data, tmp_path):
    from quantconf.models.loading import load_model
    from quantconf.models.runtime import set_threads

    set_threads(2)
    check_agreement(*run_both(load_model("default"), shared_data, tmp_path, DEFAULT_MODEL_LIMIT), tmp_path,
                    limit=DEFAULT_MODEL_LIMIT)  # strict 1e-4
