"""The embedded default model (SmolLM2-135M-Instruct, dequantized GGUF) on ../shared/data. Its quantized
versions, GPTQ among them, are evaluated in test_methods_default.py."""

import pytest

from conftest import SHARED_DATA, evaluate_into

pytestmark = pytest.mark.integration


def test_default_model_is_clearly_above_chance(tmp_path):
    if not SHARED_DATA.is_dir():
        pytest.skip(f"integration data {SHARED_DATA} absent (it lives in ../shared/data beside the project)")
    opts = {"data_dir": str(SHARED_DATA), "threads": 2, "progress": False, "log": lambda *a: None}
    piqa = evaluate_into("default", ["piqa"], tmp_path / "piqa", limit=200, **opts)["piqa"]["acc"]
    arc = evaluate_into("default", ["arc_easy"], tmp_path / "arc", limit=100, **opts)["arc_easy"]["acc"]
    # measured independently (see ../shared/README.md): piqa .66, arc_easy .46 on the first 100 items
    assert piqa > 0.58  # chance .5; .645 on these 200
    assert arc > 0.36  # chance .25
