"""Every quantization method on the tiny model: it writes a checkpoint that reloads, changes the
weights, records the same per-layer error (which falls as bits rise); W8A8 really quantizes
activations (and static scales suffer from an outlier channel far more than dynamic ones);
options a method does not take are refused before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest

from quantconf.errors import QuantconfError
from quantconf.quantizers import run_quantize
from quantconf.quantizers.base import QuantConfig

PROMPT = [[5, 17, 42, 99, 130, 7, 64, 200, 31, 12, 250, 3]]


def _logits(model_dir, ids=PROMPT):
    import torch

    from quantconf.models.loading import load_model

    lm = load_model(str(model_dir))
    with torch.no_grad():
        return lm.model(torch.tensor(ids)).logits.float().numpy(), lm


def _quantize(src, tmp_path, method, **options):
    cfg = QuantConfig.for_method(method, **options)
    out = tmp_path / cfg.label()
    record = run_quantize(str(src), cfg, out, log=lambda m: None, threads=1)
    return out, record


def _mean_error(record) -> float:
    return float(np.mean(list(record["layer_error"]["layers"].values())))


CALIB = {"calib": "random", "n_samples": 4, "seq_len": 32}


@pytest.mark.parametrize("method, low, high", [
    ("rtn", {"bits": 2, "group_size": 32}, {"bits": 8, "group_size": 32}),
    ("hqq", {"bits": 2, "group_size": 32}, {"bits": 8, "group_size": 32}),
    ("gguf", {"scheme": "Q4_0"}, {"scheme": "Q8_0"}),
    ("bnb", {"scheme": "fp4"}, {"scheme": "int8"}),
    ("awq", {"bits": 4, "group_size": 32, **CALIB}, {"bits": 8, "group_size": 32, **CALIB}),
])
def test_method_reloads_changes_weights_and_error_falls_with_bits(tiny_model_dir, tmp_path, method, low, high):
    full, _ = _logits(tiny_model_dir)
    errors = []
    for options in (low, high):
        out, record = _quantize(tiny_model_dir, tmp_path, method, **options)
        assert record["method"] == method and record["layer_error"]["layers"]
        assert record["layer_error"]["metric"].startswith("relative squared weight error")
        assert record["bits_per_weight"] >= record["config"]["bits"] and record["deployed_bytes"] > 0
        quant, lm = _logits(out)
        assert np.isfinite(quant).all()
        assert np.abs(quant - full).max() > 1e-4, "quantization left the model unchanged"
        assert lm.info["quantization"]["method"] == method
        errors.append(_mean_error(record))
    assert errors[0] > 3 * errors[1] > 0, errors


def test_gguf_matches_the_gguf_package_rounding(tiny_model_dir, tmp_path):
    """The stored weights are exactly gguf-py's Q4_1 round trip of the source (llama.cpp's rounding)."""
    from gguf import GGMLQuantizationType, quants
    from safetensors.numpy import load_file

    out, record = _quantize(tiny_model_dir, tmp_path, "gguf", scheme="Q4_1")
    src = load_file(str(tiny_model_dir / "model.safetensors"))
    got = load_file(str(out / "model.safetensors"))
    name = "model.layers.1.mlp.down_proj.weight"
    t = GGMLQuantizationType.Q4_1
    np.testing.assert_array_equal(got[name], quants.dequantize(quants.quantize(src[name], t), t))
    np.testing.assert_array_equal(got["model.embed_tokens.weight"], src["model.embed_tokens.weight"])
    assert record["bits_per_weight"] == 5.0 and "gguf_file" not in record  # the source is no GGUF file


def test_bnb_int8_and_double_quant_reload(tiny_model_dir, tmp_path):
    out, record = _quantize(tiny_model_dir, tmp_path, "bnb", scheme="nf4", double_quant=True)
    assert record["bnb_config"]["bnb_4bit_use_double_quant"] is True
    assert record["bits_per_weight"] < 4.2  # int8 block scales: 4 + 8/64 + 32/(64*256)
    a, _ = _logits(out)
    b, _ = _logits(out)  # a second load: the checkpoint was saved before any forward, so it is intact
    np.testing.assert_array_equal(a, b)
    out8, record8 = _quantize(tiny_model_dir, tmp_path, "bnb", bits=8, outlier_threshold=4.0)
    assert record8["bnb_config"]["llm_int8_threshold"] == 4.0 and record8["label"] == "bnb-int8-t4"
    assert _mean_error(record8) < 1e-3


def _plain_model_with_weights_of(quant_dir, like_dir):
    """A float model (no activation quantization) carrying the reloaded checkpoint's weights."""
    import torch
    from transformers import AutoModelForCausalLM

    from quantconf.models.loading import load_model

    quant = load_model(str(quant_dir)).model
    plain = AutoModelForCausalLM.from_pretrained(str(like_dir), dtype=torch.float32)
    state = {k: v for k, v in quant.state_dict().items() if k in plain.state_dict()}
    plain.load_state_dict(state, strict=True)
    return plain.eval()


@pytest.mark.parametrize("method, options", [("w8a8", {"activations": "static", **CALIB}),
                                             ("w8a8", {"activations": "dynamic", **CALIB}), ("fp8", {})])
def test_activation_quantization_runs_at_inference_on_cpu(tiny_model_dir, tmp_path, method, options):
    import torch

    out, record = _quantize(tiny_model_dir, tmp_path, method, **options)
    assert json.loads((out / "config.json").read_text())["quantization_config"]["config_groups"]["group_0"][
        "input_activations"]
    with_act, _ = _logits(out)
    with torch.no_grad():
        without_act = _plain_model_with_weights_of(out, tiny_model_dir)(torch.tensor(PROMPT)).logits.numpy()
    # same weights; the difference is the activations' quantize-dequantize in every Linear
    assert np.abs(with_act - without_act).max() > 1e-3
    assert record["activations"]["scales"] == options.get("activations", "dynamic")


def _plant_outlier_channel(src, dst, channel=5, tokens=(7, 64), size=60.0):
    """The same model with one residual channel that is 0 for every token but `tokens`, where it is
    huge: as the outlier features of large LMs, it appears in a few tokens only. The norms feed it to
    q/k/v and gate/up unchanged for other tokens, so only the activation ranges differ."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(src), dtype=torch.float32)
    with torch.no_grad():
        emb = model.model.embed_tokens.weight
        emb[:, channel] = 0
        emb[list(tokens), channel] = size
        for layer in model.model.layers:  # keep the channel out of the residual updates
            layer.self_attn.o_proj.weight[channel] = 0
            layer.mlp.down_proj.weight[channel] = 0
    model.save_pretrained(dst, safe_serialization=True)
    AutoTokenizer.from_pretrained(str(src)).save_pretrained(dst)
    return dst


def test_an_outlier_channel_hurts_static_activation_scales_far_more_than_dynamic(tiny_model_dir, tmp_path):
    """Paglieri et al.'s mechanism: a static per-tensor scale is set by the calibration set's largest
    activation, so one outlier channel coarsens every other value's grid; per-token scales only
    coarsen the tokens that carry it."""
    import torch

    planted = _plant_outlier_channel(tiny_model_dir, tmp_path / "planted")
    ids = [[7, 20, 30, 40, 64, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150]]
    errors = {}
    for name, src in (("plain", tiny_model_dir), ("planted", planted)):
        full, _ = _logits(src, ids)
        for act in ("static", "dynamic"):
            calib = {"calib": "file:" + str(tmp_path / "calib.txt"), "n_samples": 4, "seq_len": 16}
            (tmp_path / "calib.txt").write_text(" ".join(["the fox 0123 sunlight ?"] * 200))
            out, _ = _quantize(src, tmp_path / name, "w8a8", activations=act, **calib)
            # the planted tokens are in the evaluation text, and so in its activation ranges
            quant, _ = _logits(out, ids)
            errors[name, act] = float(np.abs(quant - full).mean())
    static_growth = errors["planted", "static"] / errors["plain", "static"]
    dynamic_growth = errors["planted", "dynamic"] / errors["plain", "dynamic"]
    assert static_growth > 5 * dynamic_growth, errors
    del torch


@pytest.mark.parametrize("flags, message", [
    (["--method", "bnb", "--calib", "pydoc"], "--calib does not apply to method bnb (it takes: bits, scheme"),
    (["--method", "gguf", "--scheme", "Q8_0", "--group-size", "64"], "--group-size does not apply to method gguf"),
    (["--method", "rtn", "--activations", "static"], "--activations does not apply to method rtn"),
    (["--method", "fp8", "--bits", "4"], "--bits does not apply to method fp8 (it takes: no options)"),
    (["--method", "bnb", "--scheme", "nf4", "--bits", "8"], "--bits 8 does not match bnb nf4 (4-bit)"),
    (["--method", "gguf", "--scheme", "Q4_K_M"], "--scheme Q4_K_M is a llama.cpp k-quant"),
    (["--method", "w8a8", "--smoothquant-alpha", "1.5"], "--smoothquant-alpha must be in [0, 1)"),
])
def test_options_a_method_does_not_take_fail_in_one_line(flags, message, tmp_path, capsys, monkeypatch):
    import sys

    from quantconf.cli import main

    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # as without the optional llama-cpp-python

    assert main(["quantize", "no-such-model", "--out", str(tmp_path / "q"), *flags]) == 2
    err = capsys.readouterr().err
    assert message in err.splitlines()[0] and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "q").exists()


def test_api_refuses_unknown_options(tmp_path):
    import quantconf as qc

    with pytest.raises(QuantconfError, match="unknown quantize option"):
        qc.quantize("no-such-model", tmp_path / "q", method="rtn", bitz=4)


def test_study_sweeps_methods_and_drops_fields_a_method_does_not_take():
    from quantconf.study import expand_variant

    configs = expand_variant({"method": ["gptq", "rtn", "bnb", "gguf"], "bits": 4, "calib": ["pydoc", "random"]})
    labels = [c.label() for c in configs]
    assert labels == ["gptq-w4g128-pydoc-s0", "gptq-w4g128-random-s0", "rtn-w4g128", "bnb-nf4", "gguf-Q4_0"]
    with pytest.raises(QuantconfError, match="calib does not apply to method bnb"):
        expand_variant({"method": "bnb", "calib": "pydoc"})
