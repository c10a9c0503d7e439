"""The built-in demo study: the default model, GPTQ 4-bit g128 and RTN 4-bit, on real questions."""

from __future__ import annotations

import os
from pathlib import Path

from quantconf.errors import QuantconfError
from quantconf.study.config import Study, load_study
from quantconf.tasks import load_task, resolve_data_dir

DEMO_TASKS = ["piqa", "arc_easy", "hellaswag", "openbookqa"]
# a source checkout sits beside ../shared/data (the project's layout); an installed package does not
SHARED_DATA_BESIDE_CHECKOUT = Path(__file__).resolve().parents[4] / "shared" / "data"
# real questions shipped in the package (licences: sample_data/README.md) for a machine with no data and no hub
SAMPLE_DATA = Path(__file__).resolve().parents[1] / "sample_data"
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
            # 4 x 512 calibration tokens (studies default to 16 x 512): GPTQ's time is linear in them, and
            # the demo must finish in minutes on 2 CPU cores without AVX-512 (16 x 512 took 383 s of 9:51 there)
            {"method": "gptq", "bits": 4, "group_size": 128, "calib": "pydoc", "n_samples": 4, "seq_len": 512},
            {"method": "rtn", "bits": 4, "group_size": 64},
        ],
        "tasks": tasks, "limit": 100, "data_dir": str(found) if found else None,
        "batch_size": 16, "bootstrap": 1000,
    })
