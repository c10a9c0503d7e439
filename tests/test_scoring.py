import numpy as np
import pytest
import torch

from quantconf.evaluation import evaluate_task
from quantconf.kinds.choice import task_requests
from quantconf.inference.scoring import encode_pair, score_requests
from quantconf.tasks import load_task
from conftest import write_jsonl


def reference_loglik(model, ctx, cont):
    """Unbatched, unpadded: one forward over ctx+cont, sum log-probs of cont tokens."""
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].double(), -1)
    positions = range(len(ctx) - 1, len(ctx) + len(cont) - 1)
    ll = sum(logp[p, t].item() for p, t in zip(positions, cont))
    greedy = all(logp[p].argmax().item() == t for p, t in zip(positions, cont))
    return ll, greedy


def test_encode_pair_moves_trailing_space_into_continuation(tiny_lm):
    tok = tiny_lm.tokenizer
    ctx, cont = encode_pair(tok, "Answer: ", "yes")
    ctx2, cont2 = encode_pair(tok, "Answer:", " yes")
    assert (ctx, cont) == (ctx2, cont2)
    whole = tok("Answer: yes", add_special_tokens=False)["input_ids"]
    assert ctx + cont == whole[: len(ctx)] + whole[len(ctx):]
    # empty context -> BOS/EOS prefix; add_bos prepends BOS
    assert encode_pair(tok, "", "yes")[0] == [tok.bos_token_id]
    assert encode_pair(tok, "Hi", " yes", add_bos=True)[0][0] == tok.bos_token_id


def _questions_file(tmp_path):
    rows = [{"query": f"Question: which {i}?\nAnswer:", "choices": ["the quick fox", "a lazy dog" * (i % 3 + 1), "no"],
             "gold": i % 3} for i in range(12)]
    return f"file:{write_jsonl(tmp_path / 'q.jsonl', rows)}"


def test_loglik_matches_unbatched_reference_and_batch_size_invariant(tiny_lm, tmp_path):
    loaded = load_task(_questions_file(tmp_path))
    reqs = task_requests(tiny_lm.tokenizer, loaded, add_bos=False)
    b1 = score_requests(tiny_lm.model, reqs, batch_size=1)
    b16 = score_requests(tiny_lm.model, reqs, batch_size=16)
    for (ctx, cont), s1, s16 in zip(reqs, b1, b16):
        ref_ll, ref_greedy = reference_loglik(tiny_lm.model, ctx, cont)
        assert s1.loglik == pytest.approx(ref_ll, abs=1e-4)
        assert abs(s1.loglik - s16.loglik) < 1e-5
        assert s1.is_greedy == s16.is_greedy == ref_greedy
        assert s1.n_tokens == len(cont)


def test_is_greedy_true_for_greedy_continuation(tiny_lm):
    ctx = tiny_lm.tokenizer("The quick brown", add_special_tokens=False)["input_ids"]
    ids = list(ctx)
    with torch.no_grad():
        for _ in range(3):
            ids.append(int(tiny_lm.model(torch.tensor([ids])).logits[0, -1].argmax()))
    greedy_cont = ids[len(ctx):]
    other = [(greedy_cont[0] + 1) % tiny_lm.model.config.vocab_size] + greedy_cont[1:]
    s = score_requests(tiny_lm.model, [(ctx, greedy_cont), (ctx, other)], batch_size=2)
    assert s[0].is_greedy and not s[1].is_greedy
    assert s[0].loglik > s[1].loglik


def test_left_truncation_to_window(tiny_lm):
    window = tiny_lm.model.config.max_position_embeddings
    ctx = list(range(5, 5 + window + 40))
    cont = [7, 8]
    (s,) = score_requests(tiny_lm.model, [(ctx, cont)])
    ll, _ = reference_loglik(tiny_lm.model, (ctx + cont)[-(window + 1):][:-2], cont)
    assert s.loglik == pytest.approx(ll, abs=1e-4)


def test_evaluate_task_rows(tiny_lm, tmp_path):
    loaded = load_task(_questions_file(tmp_path))
    df = evaluate_task(tiny_lm, loaded, batch_size=4)
    assert len(df) == 12 and list(df["doc_id"]) == list(range(12))
    row = df.iloc[1]
    assert row["n_chars"] == [len(c) for c in row["choices"]]
    assert row["n_bytes"] == [len(c.encode()) for c in row["choices"]]
    assert all(np.isfinite(row["loglik"])) and all(x < 0 for x in row["loglik"])


def test_packed_scorer_matches_naive_and_reference(tiny_lm, tmp_path, monkeypatch):
    from quantconf.inference import scoring
    from quantconf.inference.scoring import score_questions

    loaded = load_task(_questions_file(tmp_path))
    naive = evaluate_task(tiny_lm, loaded, batch_size=5, scorer="naive")
    # row_tokens 8: every question alone in its row; 40: two or three per row; 256: all in one row
    for bs, row_tokens in ((1, 256), (3, 40), (16, 8), (2, 256)):
        monkeypatch.setattr(scoring, "ROW_TOKENS", row_tokens)
        packed = evaluate_task(tiny_lm, loaded, batch_size=bs, scorer="packed")
        for a, b in zip(naive["loglik"], packed["loglik"]):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
        assert list(naive["is_greedy"]) == list(packed["is_greedy"])
        assert list(naive["n_tokens"]) == list(packed["n_tokens"])
    # a question longer than the window falls back to per-choice left truncation
    window = tiny_lm.model.config.max_position_embeddings
    ctx = list(range(5, 5 + window))
    (res,) = score_questions(tiny_lm.model, [(ctx, [[7, 8], [9]])])
    ref = score_requests(tiny_lm.model, [(ctx, [7, 8]), (ctx, [9])])
    assert [r.loglik for r in res] == pytest.approx([r.loglik for r in ref], abs=1e-6)


def test_question_tree_shares_common_prefixes():
    from quantconf.inference.scoring import QuestionTree

    tree = QuestionTree.build([1, 2], [[3, 4, 5], [3, 8, 6], [7], [3, 4, 5]])
    # inputs: 1 2 3 4 | 1 2 3 8 | 1 2 | 1 2 3 4 -> nodes 1 2 3 4 8, token 8 branching after 3
    assert tree.tokens == [1, 2, 3, 4, 8]
    assert tree.parents == [-1, 0, 1, 2, 2]
    assert tree.depths == [0, 1, 2, 3, 3]
    assert tree.predictors == [[1, 2, 3], [1, 2, 4], [1], [1, 2, 3]]
    allowed = tree.ancestors()
    assert allowed[4].tolist() == [True, True, True, False, True]  # not its sibling (token 4)
    assert allowed[3].tolist() == [True, True, True, True, False]
    with pytest.raises(ValueError, match="empty context"):
        QuestionTree.build([], [[3]])


def test_packed_scorer_shares_prefixes_and_runs_head_once_per_node(tiny_lm, monkeypatch):
    """Choices with a common start, a duplicate choice and a one-token choice give the unbatched
    reference's numbers, and the LM head runs once per predicting tree node."""
    from quantconf.inference import scoring

    ctx = [5, 6, 7]
    conts = [[10, 11, 12], [10, 11, 13], [10, 14], [10, 11, 12], [15]]
    head_rows = []
    real = scoring.token_logprobs
    monkeypatch.setattr(scoring, "token_logprobs",
                        lambda model, hidden, *a: head_rows.append(len(hidden)) or real(model, hidden, *a))
    (packed,) = scoring.score_questions(tiny_lm.model, [(ctx, conts)])
    assert head_rows == [3]  # node 7 predicts 10 and 15, node 10 predicts 11 and 14, node 11 predicts 12 and 13
    for cont, s in zip(conts, packed):
        ll, greedy = reference_loglik(tiny_lm.model, ctx, cont)
        assert s.loglik == pytest.approx(ll, abs=1e-5)
        assert (s.is_greedy, s.n_tokens) == (greedy, len(cont))
    assert packed[0] == packed[3]


def test_bfloat16_is_close_but_not_identical(tiny_model_dir, tmp_path):
    from quantconf.models.loading import load_model

    loaded = load_task(_questions_file(tmp_path))
    f32 = evaluate_task(load_model(str(tiny_model_dir)), loaded)
    bf16 = evaluate_task(load_model(str(tiny_model_dir), dtype="bfloat16"), loaded)
    diff = np.abs(np.concatenate(f32["loglik"]) - np.concatenate(bf16["loglik"]))
    assert 0 < diff.max() < 0.5


def test_pack_rows_first_fit_decreasing():
    from quantconf.inference.scoring import pack_rows

    lengths = {0: 5, 1: 9, 2: 3, 3: 12, 4: 4, 5: 1}
    rows = pack_rows(lengths, row_tokens=10)
    assert sorted(q for row in rows for q in row) == list(range(6))
    fill = [sum(lengths[q] for q in row) for row in rows]
    assert rows[0] == [3]  # longer than a row: alone
    assert all(f <= 10 for f in fill[1:]) and fill == sorted(fill, reverse=True)
    # first fit decreasing by hand: 12 | 9+1 | 5+4 | 3
    assert rows == [[3], [1, 5], [0, 4], [2]]


@pytest.mark.parametrize("bias,softcap", [(False, None), (True, 30.0)])
def test_token_logprobs_blocked_equals_full_log_softmax(monkeypatch, bias, softcap):
    """Row blocks into reused buffers give exactly what log_softmax + gather + argmax over the
    whole logits matrix gives."""
    from types import SimpleNamespace

    from quantconf.inference import scoring

    torch.manual_seed(0)
    vocab, dim, n = 103, 16, 23
    head = torch.nn.Linear(dim, vocab, bias=bias)
    model = SimpleNamespace(get_output_embeddings=lambda: head,
                            config=SimpleNamespace(final_logit_softcapping=softcap))
    hidden = torch.randn(n, dim) * 3
    with torch.no_grad():
        head.weight[5] = head.weight[3] = hidden[6] / 2  # tokens 3 and 5 tie at the top of row 6
        if bias:
            head.bias[5] = head.bias[3]
        logits = head(hidden)
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
    targets = torch.randint(0, vocab, (n,))
    targets[:5] = logits[:5].argmax(-1)  # some greedy hits
    targets[6], targets[7] = 5, 3  # a tie: argmax takes the first index, so 5 is not greedy in row 6
    assert logits[6].argmax() == 3 and logits[6, 3] == logits[6, 5]
    want_logp = logits.log_softmax(-1).gather(-1, targets[:, None])[:, 0]
    want_greedy = logits.log_softmax(-1).argmax(-1) == targets
    assert not want_greedy[6]
    for row_block in (5, 256, 1):
        monkeypatch.setattr(scoring, "ROW_BLOCK", row_block)
        with torch.no_grad():
            logp, greedy = scoring.token_logprobs(model, hidden, targets)
        np.testing.assert_allclose(logp.numpy(), want_logp.numpy(), atol=2e-6, rtol=1e-6)
        assert greedy.tolist() == want_greedy.tolist()
    # several targets per row (the packed scorer's branching tree nodes), rows in any order
    rows = torch.tensor([6, 6, 0, 22, 6, 0])
    many = torch.tensor([5, 3, 7, 1, 0, int(targets[0])])
    with torch.no_grad():
        logp, greedy = scoring.token_logprobs(model, hidden, many, rows)
    full = logits.log_softmax(-1)
    np.testing.assert_allclose(logp.numpy(), full[rows, many].numpy(), atol=2e-6, rtol=1e-6)
    assert greedy.tolist() == (full.argmax(-1)[rows] == many).tolist() == [False, True, False, False, False, True]
    # a head that is not a plain Linear (e.g. a quantized module) is called whole
    model.get_output_embeddings = lambda: torch.nn.Sequential(head)
    with torch.no_grad():
        logp, greedy = scoring.token_logprobs(model, hidden, targets)
    np.testing.assert_allclose(logp.numpy(), want_logp.numpy(), atol=2e-6, rtol=1e-6)
    assert greedy.tolist() == want_greedy.tolist()
