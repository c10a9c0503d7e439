import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from quantconf import QuantconfError
from quantconf.models.files import check_safetensors
from quantconf.models.loading import load_model
import json


def test_loads_local_safetensors_dir(tiny_lm, tiny_model_dir):
    assert tiny_lm.info["kind"] == "local" and len(tiny_lm.info["sha256"]) == 64
    assert tiny_lm.info["n_params"] > 0


def test_truncated_safetensors_is_refused(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_model_dir, bad)
    f = bad / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 100])
    with pytest.raises(QuantconfError, match="corrupt or truncated"):
        load_model(str(bad))
    f.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{bad}")
    with pytest.raises(QuantconfError, match="corrupt or truncated"):
        check_safetensors(f)


def test_pickle_weights_refused_unless_allowed(tmp_path):
    d = tmp_path / "pickled"
    d.mkdir()
    (d / "config.json").write_text("{}")
    (d / "pytorch_model.bin").write_bytes(b"not really")
    with pytest.raises(QuantconfError, match="--allow-pickle"):
        load_model(str(d))


def test_corrupt_gguf_and_missing_paths(tmp_path):
    g = tmp_path / "m.gguf"
    g.write_bytes(b"GGUF\x03\x00\x00\x00garbage")
    with pytest.raises(QuantconfError, match="not a readable GGUF"):
        load_model(str(g))
    with pytest.raises(QuantconfError, match="not found"):
        load_model(str(tmp_path / "none.gguf"))
    with pytest.raises(QuantconfError, match="neither a .gguf file nor a model directory"):
        load_model(str(tmp_path / "nothing-here"))


def test_unknown_hub_id_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(QuantconfError, match="cannot load model 'no-such-org/no-such-model'"):
        load_model("no-such-org/no-such-model")


def test_bad_dtype_and_device():
    with pytest.raises(QuantconfError, match="^dtype must be one of"):
        load_model("default", dtype="int3")


FAULTS_SCRIPT = """
import resource, sys, torch
import torch.nn.functional as F
from quantconf.models.runtime import keep_freed_memory
applied = keep_freed_memory()
torch.manual_seed(0)
x, w_up, w_down = torch.randn(4096, 256), torch.randn(2304, 256), torch.randn(256, 2304)
faults = []
for _ in range(16):  # an MLP block's allocations: 38 MB activations (glibc mmaps >32 MB), freed after each pass
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    up = F.linear(x, w_up)
    out = F.linear(F.silu(up) * up, w_down)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    del up, out
print(applied, sum(faults[-4:]))  # the heap settles after a few passes (more or fewer with what ran before)
"""


def test_keep_freed_memory_reuses_freed_blocks():
    """With the setting, an MLP pass's freed activations are reused by later passes (no page faults
    once the heap has grown to its working size, which takes 2-5 passes depending on what the
    process allocated before); without it, glibc hands them back to the OS and every pass faults
    ~28k pages in again."""
    import os
    import platform
    import subprocess
    import sys

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("the allocator setting applies to glibc only")

    def run(flag):
        env = {**os.environ, "QUANTCONF_KEEP_FREED_MEMORY": flag}
        out = subprocess.run([sys.executable, "-c", FAULTS_SCRIPT], env=env, capture_output=True, text=True,
                             check=True).stdout.split()
        return out[0] == "True", int(out[1])

    applied, faults = run("0")
    assert not applied and faults > 4 * 5000
    applied, faults = run("1")
    assert applied and faults < 500, f"{faults} page faults in the last four passes"


def test_gguf_weight_count_and_metadata_from_the_header_equal_ggufs_reader(tmp_path):
    """The preflight's count of a GGUF file's weights (header walked by length, 40 ms) and the metadata
    `gguf_metadata` reads (the tokenizer's vocabulary among them) equal gguf's GGUFReader (every field
    parsed: 4 s on the default model, 18 s on gemma3) on a file llama.cpp's tools wrote; a truncated or
    foreign file gives None (the loader's own check names it)."""
    from gguf import GGUFReader

    from quantconf.models.builtin import default_gguf_path
    from quantconf.models.files import gguf_metadata, weight_elements

    path = default_gguf_path()
    reader = GGUFReader(path)
    assert weight_elements(path) == sum(int(t.n_elements) for t in reader.tensors) > 1e8
    theirs = {key: f.contents() for key, f in reader.fields.items() if not key.startswith("GGUF.")}
    ours = gguf_metadata(path)
    assert list(ours) == list(theirs) and len(ours["tokenizer.ggml.tokens"]) == 49152
    for key in theirs:  # strings, string and number arrays, ints, floats, bools: value and Python type
        assert ours[key] == theirs[key] and type(ours[key]) is type(theirs[key]), key
    assert gguf_metadata(path, keys=["general.architecture"]) == {"general.architecture": "llama"}
    (tmp_path / "cut.gguf").write_bytes(default_gguf_path().read_bytes()[:30_000])
    (tmp_path / "not.gguf").write_bytes(b"GGML" + bytes(100))
    assert weight_elements(tmp_path / "cut.gguf") is None and weight_elements(tmp_path / "not.gguf") is None


def test_preflight_refuses_a_model_that_will_not_fit_and_names_what_would(tiny_model_dir, monkeypatch, capsys):
    import quantconf.models.loading as models
    import quantconf.models.runtime as runtime
    from quantconf.cli import main
    from quantconf.models.files import weight_elements
    from quantconf.errors import QuantconfError

    lm = models.load_model(str(tiny_model_dir))
    n = weight_elements(tiny_model_dir)
    assert n == lm.info["n_params"]  # counted from the safetensors headers, without loading
    need32 = n * 4 * runtime.LOAD_OVERHEAD
    monkeypatch.setattr(runtime, "available_memory", lambda device: int(need32 * 0.75) if device == "cpu" else None)
    with pytest.raises(QuantconfError, match=r"needs about .* MB at float32 on cpu.*try --dtype bfloat16"):
        models.load_model(str(tiny_model_dir))
    models.load_model(str(tiny_model_dir), dtype="bfloat16")  # fits: loads
    monkeypatch.setattr(runtime, "available_memory", lambda device: 10)
    capsys.readouterr()  # the load bars of the loads above (pytest's stderr, not the console's descriptor)
    assert main(["eval", str(tiny_model_dir), "--tasks", "arithmetic", "--limit", "2", "--out", "unused"]) == 2
    err = capsys.readouterr().err
    assert "use a machine with more memory" in err and err.count("\n") == 1


def test_null_quantization_config_is_not_a_quantized_checkpoint(tiny_model_dir, tmp_path, capsys):
    from quantconf.models.files import is_quantized_checkpoint
    from quantconf.models.loading import load_model

    d = tmp_path / "m"
    d.mkdir()
    for f in tiny_model_dir.iterdir():
        (d / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "quantization_config": None, "auto_map": {"AutoModelForCausalLM": "x.Y"}}))
    assert not is_quantized_checkpoint(d)
    load_model(str(d))
    assert "auto_map" in capsys.readouterr().err  # says it runs the built-in class, not the repo's code


def test_cached_float_copy_is_built_once_under_concurrent_first_use(tmp_path, monkeypatch):
    """pytest-xdist workers (and two studies) reach the default model's float copy at once: without a lock each
    built it and a later os.replace deleted the directory an earlier process was reading. One build; every
    caller gets the complete copy."""
    import threading
    import time

    from quantconf.models import builtin as builtin_models

    monkeypatch.setenv(builtin_models.CACHE_ENV, str(tmp_path / "cache"))
    builds = []

    class Tokenizer:
        def save_pretrained(self, out):
            (Path(out) / "tokenizer.json").write_text("{}")

    def slow_save(gguf_path, out_dir):
        builds.append(threading.get_ident())
        time.sleep(0.3)
        (Path(out_dir) / "model.safetensors").write_bytes(b"weights")

    monkeypatch.setattr(builtin_models, "save_dequantized_gguf", slow_save)
    monkeypatch.setattr(builtin_models, "gguf_tokenizer", lambda path: Tokenizer())
    monkeypatch.setattr(builtin_models, "check_gguf", lambda path: None)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF bytes")
    results, errors = [], []

    def first_use():
        try:
            target = builtin_models.dequantized_gguf_dir(gguf)
            results.append(sorted(p.name for p in target.iterdir()))
        except Exception as e:  # noqa: BLE001 - the test reports any failure of any caller
            errors.append(e)

    threads = [threading.Thread(target=first_use) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors and len(builds) == 1
    assert results == [["model.safetensors", "quantconf-complete", "quantconf-source.json", "tokenizer.json"]] * 4


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux-only")
def test_default_threads_follow_the_cores_the_process_may_use():
    """Under taskset, a container's cpuset or a pinned pytest-xdist worker, torch gets one thread per core the
    process may use, not per core of the machine (twice the threads on 2 cores ran slower than one worker)."""
    code = ("import os, torch; from quantconf.models.runtime import set_threads; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "print(set_threads(None), torch.get_num_threads(), set_threads(3))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1", "1", "3"]
