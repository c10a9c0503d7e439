"""The embedded default model (SmolLM2-135M-Instruct, dequantized GGUF) on ../shared/data."""

import pytest

from conftest import evaluate_into

# one xdist worker runs the module, so its module-scoped fixtures (quantized models) are made once
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("integration_default")]


@pytest.fixture(scope="module")
def full_piqa200(tmp_path_factory):
    from conftest import SHARED_DATA

    if not SHARED_DATA.is_dir():
        pytest.skip(f"integration data {SHARED_DATA} absent (it lives in ../shared/data beside the project)")
    out = tmp_path_factory.mktemp("full-piqa200")
    evaluate_into("default", ["piqa"], out, data_dir=str(SHARED_DATA), limit=200, threads=2, progress=False,
             log=lambda *a: None)
    return out


def test_default_model_is_clearly_above_chance(full_piqa200, tmp_path):
    from conftest import SHARED_DATA
    from quantconf.analysis.metrics import accuracy
    from quantconf.predictions import read_prediction_dir

    arc = evaluate_into("default", ["arc_easy"], tmp_path, data_dir=str(SHARED_DATA), limit=100, threads=2,
                        progress=False, log=lambda *a: None)["arc_easy"]["acc"]
    # measured independently (see ../shared/README.md): piqa .66, arc_easy .46 on the first 100 items
    assert accuracy(read_prediction_dir(full_piqa200)["piqa"])["acc"] > 0.58  # chance .5; .645 on these 200
    assert arc > 0.36  # chance .25


def _quantize_and_eval(tmp_path, config):
    from conftest import SHARED_DATA
    from quantconf.quantizers import run_quantize

    ckpt = tmp_path / config.label()
    run_quantize("default", config, ckpt, threads=2, log=lambda *a: None)
    out = tmp_path / f"eval-{config.label()}"
    return out, evaluate_into(str(ckpt), ["piqa"], out, data_dir=str(SHARED_DATA), limit=200, threads=2,
                         progress=False, log=lambda *a: None)["piqa"]["acc"]


def test_gptq4_g128_keeps_accuracy_and_rtn2_degrades(full_piqa200, tmp_path):
    from quantconf.api import compare_dirs
    from quantconf.analysis.metrics import accuracy
    from quantconf.predictions import read_prediction_dir
    from quantconf.quantizers import QuantConfig

    full_acc = accuracy(read_prediction_dir(full_piqa200)["piqa"])["acc"]
    gptq_out, gptq_acc = _quantize_and_eval(
        tmp_path, QuantConfig(method="gptq", bits=4, group_size=128, calib="pydoc", n_samples=4, seq_len=256))
    rtn_out, rtn_acc = _quantize_and_eval(tmp_path, QuantConfig(method="rtn", bits=2, group_size=64))
    assert abs(gptq_acc - full_acc) <= 0.05
    assert rtn_acc < full_acc - 0.05
    js_gptq = compare_dirs(full_piqa200, gptq_out, n_boot=0)["piqa"]["js_mean"]
    js_rtn = compare_dirs(full_piqa200, rtn_out, n_boot=0)["piqa"]["js_mean"]
    assert 0 < js_gptq < js_rtn
