"""quantizers/: RTN and GPTQ on a tiny model, calibration sets, reloading, and checkpoints' file modes."""

import json
import os
import stat
from pathlib import Path

import pytest
import torch

from quantconf import QuantconfError
from quantconf.quantizers import QuantConfig, run_quantize
from quantconf.quantizers.calib_data import build_calibration
from quantconf.quantizers.rtn import rtn_quantize_weight


def test_rtn_weight_levels_and_error():
    torch.manual_seed(0)
    w = torch.randn(8, 64)
    for bits in (2, 3, 4, 8):
        for sym in (True, False):
            q = rtn_quantize_weight(w, bits, 32, sym)
            for g in range(2):  # each group holds at most 2^bits distinct values
                assert len(torch.unique(q[0, g * 32:(g + 1) * 32])) <= 2**bits
    e = [((w - rtn_quantize_weight(w, b, 32, False)).norm() / w.norm()).item() for b in (2, 3, 4, 8)]
    assert e == sorted(e, reverse=True) and e[-1] < 0.01
    # asymmetric 2-bit of a hand example: group [0, 1, 2, 3] -> scale 1, exact
    assert rtn_quantize_weight(torch.tensor([[0.0, 1.0, 2.0, 3.0]]), 2, -1, False).tolist() == [[0, 1, 2, 3]]


@pytest.mark.parametrize("kwargs, message", [
    ({"bits": 5}, "bits must be one of"),
    ({"group_size": 48}, "group_size must be one of"),
    ({"method": "awq9"}, "method 'awq9' is unknown"),
    ({"damp": 2.0}, "damp must be in"),
    ({"method": "rtn", "desc_act": True}, "desc_act does not apply to method rtn"),
    ({"bits": "4"}, "bits must be of type int"),
])
def test_invalid_configs_fail_before_work(kwargs, message, tmp_path):
    with pytest.raises(QuantconfError, match=message) as e:
        run_quantize("no-such-model", QuantConfig(**kwargs), tmp_path / "q")
    assert e.value.param == message.split()[0]
    assert not (tmp_path / "q").exists()


@pytest.mark.parametrize("flags, message", [
    (["--bits", "5"], "quantconf: error: --bits must be one of"),
    (["--group-size", "48"], "quantconf: error: --group-size must be one of"),
    (["--method", "rtn", "--desc-act"], "quantconf: error: --desc-act does not apply to method rtn"),
])
def test_cli_names_the_flag(flags, message, tmp_path, capsys):
    from quantconf.cli import main

    assert main(["quantize", "no-such-model", "--out", str(tmp_path / "q"), *flags]) == 2
    assert capsys.readouterr().err.startswith(message)


def test_calibration_sets(tiny_lm, tmp_path):
    tok = tiny_lm.tokenizer
    a = build_calibration("pydoc", tok, 4, 64, seed=1)
    assert a.samples == build_calibration("pydoc", tok, 4, 64, seed=1).samples
    assert a.samples != build_calibration("pydoc", tok, 4, 64, seed=2).samples
    assert all(len(s) == 64 for s in a.samples) and len(a.record()["sha256"]) == 64
    r = build_calibration("random", tok, 3, 16, seed=0)
    assert max(max(s) for s in r.samples) < len(tok)
    p = build_calibration("punct", tok, 2, 16, seed=0)
    assert set(tok.decode(p.samples[0])) <= set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ ")
    assert build_calibration("task:arithmetic", tok, 2, 32, seed=0).n_text_tokens > 32
    f = tmp_path / "c.txt"
    f.write_text("short")
    with pytest.raises(QuantconfError, match="only .* tokens"):
        build_calibration(f"file:{f}", tok, 2, 64, seed=0)
    with pytest.raises(QuantconfError, match="not found"):
        build_calibration(f"file:{tmp_path}/none.txt", tok, 2, 64, seed=0)
    with pytest.raises(QuantconfError, match="unknown calibration set"):
        build_calibration("nonsense", tok, 2, 64, seed=0)


def test_rtn_checkpoint_roundtrip_and_out_dir_guard(tiny_model_dir, tmp_path):
    from quantconf.models.loading import load_model

    out = tmp_path / "rtn"
    rec = run_quantize(str(tiny_model_dir), QuantConfig(method="rtn", bits=4, group_size=32), out, log=lambda m: None)
    assert json.loads((out / "quantize.json").read_text())["config"]["bits"] == 4
    assert rec["layer_error"]["layers"]
    lm = load_model(str(out))
    w = lm.model.model.layers[0].mlp.up_proj.weight
    assert len(torch.unique(w[0, :32])) <= 16
    with pytest.raises(QuantconfError, match="already exists"):
        run_quantize(str(tiny_model_dir), QuantConfig(method="rtn"), out)
    with pytest.raises(QuantconfError, match="bits must be one of"):
        run_quantize(str(tiny_model_dir), QuantConfig(method="rtn", bits=5), tmp_path / "x")
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x.tmp-*"))


@pytest.mark.parametrize("sym", [True, False])
def test_rtn_group_that_does_not_divide_the_width_leaves_a_shorter_last_group(sym):
    """576 columns at group 128: four groups of 128, then one of 64 quantized on its own (as GPTQModel)."""
    from quantconf.quantizers.rtn import rtn_quantize_weight

    w = torch.randn(8, 576, generator=torch.Generator().manual_seed(0))
    q = rtn_quantize_weight(w, 4, 128, sym)
    for lo, hi in [(0, 128), (128, 256), (384, 512), (512, 576)]:  # each group = that slice quantized per row
        torch.testing.assert_close(q[:, lo:hi], rtn_quantize_weight(w[:, lo:hi], 4, -1, sym), rtol=0, atol=0)
    assert all(len(torch.unique(q[r, 512:])) <= 16 for r in range(8))
    torch.testing.assert_close(rtn_quantize_weight(w[:, :512], 4, 128, sym), q[:, :512], rtol=0, atol=0)
    assert rtn_quantize_weight(w[:, :40], 4, 128, sym).shape == (8, 40)  # a group wider than the layer: one group


def test_interrupted_quantization_leaves_nothing(tiny_model_dir, tmp_path, monkeypatch):
    import quantconf.quantizers.rtn as rtn

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(rtn, "rtn_quantize_weight", boom)
    with pytest.raises(KeyboardInterrupt):
        run_quantize(str(tiny_model_dir), QuantConfig(method="rtn", group_size=32), tmp_path / "q", log=lambda m: None)
    assert list(tmp_path.iterdir()) == []


def test_gptq_on_tiny_model_reloads(tiny_model_dir, tmp_path, monkeypatch):
    from quantconf.evaluation import evaluate_task
    from quantconf.models.loading import load_model
    from quantconf.tasks import load_task

    monkeypatch.chdir(tmp_path)
    out = Path("runs") / "gptq"  # relative paths, as studies and the demo pass them
    src = os.path.relpath(tiny_model_dir, tmp_path)
    cfg = QuantConfig(method="gptq", bits=4, group_size=32, calib="pydoc", n_samples=4, seq_len=64)
    rec = run_quantize(src, cfg, out, log=lambda m: None)
    assert rec["calibration"]["n_samples"] == 4 and "gptqmodel" in rec["library"]
    assert list(out.glob("*.safetensors")) and not (out / "runs").exists()
    q = load_model(str(out))
    full = load_model(str(tiny_model_dir))
    wq = q.model.model.layers[0].self_attn.q_proj.weight
    wf = full.model.model.layers[0].self_attn.q_proj.weight
    rel = ((wq - wf).norm() / wf.norm()).item()
    assert 0 < rel < 0.3  # quantized, yet close
    loaded = load_task("arithmetic", limit=5)
    assert len(evaluate_task(q, loaded)) == 5


def test_gptq_refuses_unknown_architecture():
    from types import SimpleNamespace

    from quantconf.quantizers.gptq import _check_model

    with pytest.raises(QuantconfError, match="does not support architecture 'weird'"):
        _check_model(SimpleNamespace(model_type="weird"), QuantConfig())


def test_gptqmodel_gemma3_rope_entries_are_dropped_before_saving(tmp_path):
    """GPTQModel 7.6 adds top-level rope entries to Gemma 3's per-layer-type rope_parameters, which
    transformers then refuses to save; the per-layer-type parameters must survive untouched."""
    from transformers import Gemma3TextConfig

    from quantconf.quantizers.gptq import _restore_rope_parameters

    config = Gemma3TextConfig(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=2,
                              num_key_value_heads=1, head_dim=32, vocab_size=100)
    original = {k: dict(v) for k, v in config.rope_parameters.items()}
    config.rope_parameters.update({"rope_type": "default", "rope_theta": {"global": 1e6, "local": 1e4}})
    with pytest.raises(AttributeError):
        config.save_pretrained(tmp_path / "broken")
    _restore_rope_parameters(config)
    assert config.rope_parameters == original
    config.save_pretrained(tmp_path / "fixed")
    flat = Gemma3TextConfig(num_hidden_layers=2, layer_types=None)
    before = dict(flat.rope_parameters)
    _restore_rope_parameters(flat)  # nothing to do for a config without per-layer-type entries
    assert flat.rope_parameters == before


def test_methods_lists_every_registered_method(capsys):
    from quantconf.cli import main

    assert main(["methods", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == {"gptq", "rtn", "awq", "w8a8", "fp8", "bnb", "gguf", "hqq"}
    needs = {name for name, r in by_name.items() if r["needs_calibration"]}
    assert needs == {"gptq", "awq", "w8a8"}
    assert by_name["gptq"]["library"] == "gptqmodel" and by_name["gptq"]["library_version"] == "7.6.0"
    assert by_name["awq"]["library"] == "llmcompressor" and by_name["bnb"]["library_version"] == "0.50.2"
    assert by_name["rtn"]["bits"] == [2, 3, 4, 8] and 128 in by_name["rtn"]["group_sizes"]
    assert by_name["w8a8"]["activation_options"] == ["activations", "smoothquant_alpha"]
    assert by_name["gguf"]["group_sizes"] == [] and "Q8_0" in by_name["gguf"]["schemes"]
    assert all("cpu" in r["devices"] for r in rows)  # every method here runs on CPU (fp8 simulated)
    assert main(["methods"]) == 0
    table = capsys.readouterr().out
    assert "rtn" in table and "none" in table and "gptqmodel 7.6.0" in table and "--smoothquant-alpha" in table


def test_checkpoint_files_get_the_umask_mode(tiny_model_dir, tmp_path):
    from quantconf.quantizers import QuantConfig, run_quantize

    old = os.umask(0o022)
    try:
        run_quantize(str(tiny_model_dir), QuantConfig(method="rtn", bits=4, group_size=32), tmp_path / "r")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "r").iterdir()}
    assert modes["model.safetensors"] == 0o644 and set(modes.values()) == {0o644}
