"""corpus/perplexity.py: the sliding-window recipe against a direct computation; the CLI honours its flags."""

import json

import pytest
import torch

from quantconf.cli import main
from quantconf.corpus.perplexity import perplexity, text_perplexity


def test_perplexity_matches_direct_computation(tiny_lm):
    ids = list(range(3, 3 + 100))
    x = torch.tensor([ids])
    with torch.no_grad():
        logp = torch.log_softmax(tiny_lm.model(x).logits[0, :-1], -1).gather(-1, x[0, 1:, None])
    direct = float(torch.exp(-logp.mean()))
    assert perplexity(tiny_lm.model, ids, window=128, stride=128) == pytest.approx(direct, rel=1e-4)
    assert perplexity(tiny_lm.model, ids, window=40, stride=20) > 1


def test_text_perplexity_and_cli(tiny_model_dir, tiny_lm, tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 40)
    rec = text_perplexity(tiny_lm, f"file:{text}", window=64, stride=32, max_tokens=300)
    ids = tiny_lm.tokenizer(text.read_text(), add_special_tokens=False)["input_ids"][:300]
    assert rec["tokens"] == len(ids) and rec["perplexity"] == pytest.approx(perplexity(tiny_lm.model, ids, 64, 32))
    assert main(["ppl", str(tiny_model_dir), "--text", f"file:{text}", "--window", "64", "--stride", "32",
                 "--max-tokens", "300", "--threads", "1"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["perplexity"] == pytest.approx(rec["perplexity"], rel=1e-6) and printed["model"] == str(tiny_model_dir)
    # --device and --allow-pickle are honoured, not ignored
    assert main(["ppl", str(tiny_model_dir), "--text", f"file:{text}", "--device", "cuda"]) == (
        0 if torch.cuda.is_available() else 2)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    for f in tiny_model_dir.iterdir():
        if f.suffix != ".safetensors":
            (pickled / f.name).write_bytes(f.read_bytes())
    torch.save(tiny_lm.model.state_dict(), pickled / "pytorch_model.bin")
    capsys.readouterr()
    assert main(["ppl", str(pickled), "--text", f"file:{text}", "--max-tokens", "100"]) == 2
    assert "--allow-pickle" in capsys.readouterr().err
    assert main(["ppl", str(pickled), "--text", f"file:{text}", "--max-tokens", "100", "--allow-pickle"]) == 0
