"""generation.py: batched KV-cache greedy decoding equals a naive token-by-token argmax loop; kept
tokens' log-probabilities equal one full forward pass; stop strings cut as lm-eval cuts; P(True)
equals a softmax computed by hand."""

import math

import pytest
import torch

from quantconf.errors import QuantconfError
from quantconf.inference.generation import Generation, cut_at_stop, greedy_generate, p_true

PROMPTS = ["Question: what is 2 + 2?\nAnswer:", "The", "A much longer prompt about apples, pears and plums, then:",
           "Q: name a colour\nA:", "x"]


def naive_greedy(lm, prompt: str, max_gen_toks: int) -> tuple[list[int], list[float]]:
    """Token by token, the whole sequence re-run each step (no cache, no padding, batch of one)."""
    ids = lm.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    out, lps = [], []
    with torch.no_grad():
        for _ in range(max_gen_toks):
            logits = lm.model(input_ids=torch.tensor([ids + out])).logits[0, -1]
            logp = torch.log_softmax(logits.float(), -1)
            t = int(logp.argmax())
            if t == lm.tokenizer.eos_token_id:
                break
            out.append(t)
            lps.append(float(logp[t]))
    return out, lps


def test_batched_kv_cache_decoding_equals_a_naive_loop(tiny_lm):
    gens = greedy_generate(tiny_lm, PROMPTS, until=[], max_gen_toks=12, batch_size=3)
    for prompt, g in zip(PROMPTS, gens):
        ids, lps = naive_greedy(tiny_lm, prompt, 12)
        assert g.token_ids == ids, prompt
        assert g.token_logprobs == pytest.approx(lps, abs=1e-4)
        assert g.text == tiny_lm.tokenizer.decode(ids)
    # the batch size changes nothing
    assert [g.token_ids for g in greedy_generate(tiny_lm, PROMPTS, until=[], max_gen_toks=12, batch_size=1)] == \
        [g.token_ids for g in gens]


def test_a_shared_prompt_prefix_computed_once_equals_each_prompt_alone(tiny_lm):
    """Prompts that share a long preamble (few-shot examples) get its KV cache computed once for the batch; each
    row then sees exactly its own prompt: the same tokens and log-probabilities as a naive loop on that prompt
    alone, and as the batch without the shared cache."""
    from quantconf.inference import generation

    preamble = "Question: what is 2 + 2?\nAnswer: 4\n\nQuestion: name a fruit\nAnswer: a pear\n\n"
    prompts = [preamble + q for q in ("Question: what is red?\nAnswer:", "Q: x", "Question: and?\nAnswer: y")]
    ids = [tiny_lm.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    shared = generation.shared_prefix_length(ids)
    assert shared >= generation.SHARED_PREFIX_MIN and all(len(i) > shared for i in ids)
    assert generation.shared_prefix_length([ids[0], ids[0]]) == len(ids[0]) - 1  # each row keeps a token
    assert generation.shared_prefix_length([ids[0]]) == 0
    gens = greedy_generate(tiny_lm, prompts, until=[], max_gen_toks=10, batch_size=3)
    for prompt, g in zip(prompts, gens):
        naive, lps = naive_greedy(tiny_lm, prompt, 10)
        assert g.token_ids == naive and g.token_logprobs == pytest.approx(lps, abs=1e-4), prompt
    original = generation.SHARED_PREFIX_MIN
    try:
        generation.SHARED_PREFIX_MIN = 10 ** 9
        unshared = greedy_generate(tiny_lm, prompts, until=[], max_gen_toks=10, batch_size=3)
    finally:
        generation.SHARED_PREFIX_MIN = original
    assert [g.token_ids for g in unshared] == [g.token_ids for g in gens]


def test_token_logprobs_and_entropies_equal_one_full_forward_pass(tiny_lm):
    for prompt, g in zip(PROMPTS, greedy_generate(tiny_lm, PROMPTS, until=[], max_gen_toks=10, batch_size=5)):
        ids = tiny_lm.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(tiny_lm.model(input_ids=torch.tensor([ids + g.token_ids])).logits[0].float(), -1)
        rows = logp[len(ids) - 1:len(ids) - 1 + len(g.token_ids)]
        assert g.token_logprobs == pytest.approx([float(rows[i, t]) for i, t in enumerate(g.token_ids)], abs=1e-4)
        entropy = [float(-(r.exp() * r).sum()) for r in rows]
        assert g.token_entropies == pytest.approx(entropy, abs=1e-4)
        c = g.confidence()
        assert c["sequence_logprob"] == pytest.approx(sum(g.token_logprobs))
        assert c["mean_logprob"] == pytest.approx(sum(g.token_logprobs) / len(g.token_logprobs))
        assert c["min_token_prob"] == pytest.approx(math.exp(min(g.token_logprobs)))


@pytest.mark.parametrize("text, until, expected", [
    ("Paris.\n\nQ: next", ["\n\n", "Q:"], "Paris."),
    ("Paris Q: x\n\ny", ["\n\n", "Q:"], "Paris "),  # each term in turn, as lm-eval: "\n\n" first, then "Q:"
    ("no stop here", ["\n\n"], "no stop here"),
    ("a.b", ["", "."], "a"),  # empty terms are skipped
    ("\n\nstarts with it", ["\n\n"], ""),
])
def test_stop_strings_cut_as_lm_eval_cuts(text, until, expected):
    def lm_eval_cut(s, until):  # lm-eval 0.4.13 HFLM.generate_until, verbatim logic
        for term in until:
            if len(term) > 0:
                s = s.split(term)[0]
        return s

    assert cut_at_stop(text, until) == lm_eval_cut(text, until) == expected


def test_a_generation_stops_at_its_stop_string_and_keeps_only_the_answer_tokens(tiny_lm):
    free = greedy_generate(tiny_lm, PROMPTS[:1], until=[], max_gen_toks=16)[0]
    assert len(free.text) > 3
    stop = free.text[2:4]  # a stop string the free generation contains
    g = greedy_generate(tiny_lm, PROMPTS[:1], until=[stop], max_gen_toks=16)[0]
    assert g.text == cut_at_stop(free.text, [stop])
    assert g.token_ids == free.token_ids[:len(g.token_ids)]
    assert tiny_lm.tokenizer.decode(g.token_ids) == g.text[:len(tiny_lm.tokenizer.decode(g.token_ids))]
    assert len(tiny_lm.tokenizer.decode(g.token_ids)) <= len(g.text)
    assert Generation("").confidence()["mean_logprob"] != Generation("").confidence()["mean_logprob"]  # NaN


def test_p_true_equals_a_hand_softmax(tiny_lm):
    from quantconf.inference.generation import P_TRUE_PROMPT

    tok = tiny_lm.tokenizer
    ctx = tok(P_TRUE_PROMPT.format(question="What is 2 + 2?", answer="4"), add_special_tokens=False)["input_ids"]

    def loglik(option):  # one sequence per option, no padding: an independent reference
        ids = tok(option, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = tiny_lm.model(input_ids=torch.tensor([ctx + ids])).logits[0]
        total = 0.0
        for j, t in enumerate(ids):
            row = [float(x) for x in logits[len(ctx) - 1 + j]]
            top = max(row)
            total += row[t] - (top + math.log(sum(math.exp(x - top) for x in row)))
        return total

    a, b = loglik(" A"), loglik(" B")
    assert p_true(tiny_lm, " What is 2 + 2? ", "4\n") == pytest.approx(math.exp(a) / (math.exp(a) + math.exp(b)),
                                                                        rel=1e-4)


def test_bad_generation_options_name_the_parameter(tiny_lm):
    with pytest.raises(QuantconfError, match="max_gen_toks must be >= 1"):
        greedy_generate(tiny_lm, ["x"], until=[], max_gen_toks=0)
    # a budget the window cannot hold would cut every prompt to nothing and grade the garbage: refused
    from quantconf.inference.generation import max_length

    window = max_length(tiny_lm.model)
    with pytest.raises(QuantconfError, match=f"leaves no room for the prompt in the model's window of {window}"):
        greedy_generate(tiny_lm, ["x"], until=[], max_gen_toks=window)
    with pytest.raises(QuantconfError, match="batch_size must be >= 1"):
        greedy_generate(tiny_lm, ["x"], until=[], batch_size=0)


def test_batched_p_true_equals_one_call_per_answer(tiny_lm):
    """The tiny tokenizer splits " B" into two tokens: p_true_batch falls back to one call per answer."""
    from quantconf.inference.generation import p_true_batch

    questions = ["What is 2 + 2?", "Name a colour.", "x", "A much longer question about apples and pears?"]
    answers = ["4", "blue, or perhaps a deep shade of green", "", "pears"]
    batched = p_true_batch(tiny_lm, questions, answers, batch_size=3)
    assert batched == pytest.approx([p_true(tiny_lm, q, a) for q, a in zip(questions, answers)], abs=1e-5)


@pytest.mark.integration
def test_batched_p_true_equals_one_call_per_answer_on_the_default_model():
    """SmolLM2's " A" and " B" are one token each: the left-padded batch with last-position logits."""
    from quantconf.inference.generation import p_true_batch
    from quantconf.models.loading import load_model

    lm = load_model("default")
    assert [len(lm.tokenizer(x, add_special_tokens=False)["input_ids"]) for x in (" A", " B")] == [1, 1]
    questions = ["What is 2 + 2?", "Name a colour.", "Why do veins appear blue?"]
    answers = ["4", "blue, or perhaps a deep shade of green", "Because of the way light is reflected."]
    batched = p_true_batch(lm, questions, answers, batch_size=3)
    assert batched == pytest.approx([p_true(lm, q, a) for q, a in zip(questions, answers)], abs=1e-4)
