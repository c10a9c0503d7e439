"""Greedy generation with the confidence of what the model wrote (issue 25's core; not yet wired into
tasks, the CLI or studies).

`greedy_generate` decodes a batch of prompts greedily (lm-eval's default for generate_until tasks):
prompts left-padded, one forward pass over the prompts, then one token per step with the KV cache
(the prompt is never recomputed), stopping a row at EOS, at `max_gen_toks`, or once its text holds a
stop string; the text is then cut at the first stop string as lm-eval cuts it
(`text.split(term)[0]` for each term in `until`). For every kept token it records its id, its
log-probability under the model and the entropy of the distribution it was drawn from, so that

    sequence_logprob   sum of the kept tokens' log-probabilities
    mean_logprob       the same divided by the number of kept tokens (length-normalised)
    min_token_prob     the smallest kept token probability
    mean_entropy       mean entropy (nats) of the next-token distributions of the kept tokens

`p_true` is Kadavath et al. (2022)'s self-evaluation: the model's probability that its own answer is
true under the fixed prompt `P_TRUE_PROMPT`, the softmax over the two option letters " A" (True) and
" B" (False) at the position after the prompt: one extra forward pass per sample.

A kept token is one whose text ends at or before the cut; a token that straddles the cut (its text
runs into the stop string) is not kept, so the measures describe exactly the tokens of the answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from quantconf.errors import QuantconfError

P_TRUE_PROMPT = ("Question: {question}\nProposed Answer: {answer}\nIs the proposed answer:\n (A) True\n (B) False\n"
                 "The proposed answer is:")


@dataclass
class Generation:
    text: str  # cut at the first stop string
    token_ids: list[int] = field(default_factory=list)  # the kept tokens
    token_logprobs: list[float] = field(default_factory=list)
    token_entropies: list[float] = field(default_factory=list)

    def confidence(self) -> dict:
        """The confidence measures of the module docstring (NaN for an empty answer)."""
        import math

        lp = self.token_logprobs
        if not lp:
            nan = float("nan")
            return {"sequence_logprob": nan, "mean_logprob": nan, "min_token_prob": nan, "mean_entropy": nan}
        return {"sequence_logprob": float(sum(lp)), "mean_logprob": float(sum(lp) / len(lp)),
                "min_token_prob": float(math.exp(min(lp))),
                "mean_entropy": float(sum(self.token_entropies) / len(self.token_entropies))}


def cut_at_stop(text: str, until: list[str]) -> str:
    """lm-eval's cut of a generate_until continuation: at the first occurrence of each stop string."""
    for term in until:
        if term:
            text = text.split(term)[0]
    return text


def greedy_generate(lm, prompts: list[str], until: list[str], max_gen_toks: int = 256, batch_size: int = 8,
                    add_bos: bool = False) -> list[Generation]:
    """Greedy continuations of `prompts` (see the module docstring), in the order given."""
    if max_gen_toks < 1:
        raise QuantconfError(f"max_gen_toks must be >= 1, got {max_gen_toks}", param="max_gen_toks")
    if batch_size < 1:
        raise QuantconfError(f"batch_size must be >= 1, got {batch_size}", param="batch_size")
    tok = lm.tokenizer
    encoded = [([tok.bos_token_id] if add_bos and tok.bos_token_id is not None else [])
               + tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    # longest first: rows of a batch have similar lengths, so little padding
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    out: list[Generation | None] = [None] * len(prompts)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        for i, g in zip(idx, _generate_batch(lm, [encoded[i] for i in idx], until, max_gen_toks)):
            out[i] = g
    return out


def _generate_batch(lm, prompts: list[list[int]], until: list[str], max_gen_toks: int) -> list[Generation]:
    import torch

    model, tok = lm.model, lm.tokenizer
    device = next(model.parameters()).device
    n, width = len(prompts), max(len(p) for p in prompts)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.full((n, width), pad, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for r, p in enumerate(prompts):  # left padding: every row's next token is at the last position
        ids[r, width - len(p):] = torch.tensor(p)
        mask[r, width - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    eos = tok.eos_token_id
    tokens = [[] for _ in range(n)]
    logprobs = [[] for _ in range(n)]
    entropies = [[] for _ in range(n)]
    finished = [False] * n
    past = None
    step_ids = ids
    with torch.no_grad():
        for _ in range(max_gen_toks):
            position_ids = (mask.cumsum(-1) - 1).clamp(min=0)[:, -step_ids.shape[1]:]
            result = model(input_ids=step_ids, attention_mask=mask, position_ids=position_ids,
                           past_key_values=past, use_cache=True)
            past = result.past_key_values
            logp = torch.log_softmax(result.logits[:, -1, :].float(), dim=-1)
            choice = logp.argmax(-1)
            entropy = -(logp.exp() * logp).nan_to_num().sum(-1)
            for r in range(n):
                if finished[r]:
                    continue
                t = int(choice[r])
                if eos is not None and t == eos:
                    finished[r] = True
                    continue
                tokens[r].append(t)
                logprobs[r].append(float(logp[r, t]))
                entropies[r].append(float(entropy[r]))
                if any(term and term in tok.decode(tokens[r]) for term in until):
                    finished[r] = True
            if all(finished):
                break
            step_ids = choice[:, None]
            mask = torch.cat([mask, torch.ones((n, 1), dtype=mask.dtype, device=device)], dim=1)
    return [_kept(tok, t, lp, e, until) for t, lp, e in zip(tokens, logprobs, entropies)]


def _kept(tok, token_ids: list[int], logprobs: list[float], entropies: list[float], until: list[str]) -> Generation:
    """The generation cut at the first stop string, with the tokens that lie wholly before the cut."""
    full = tok.decode(token_ids)
    text = cut_at_stop(full, until)
    keep = len(token_ids)
    while keep and len(tok.decode(token_ids[:keep])) > len(text):
        keep -= 1
    return Generation(text, token_ids[:keep], logprobs[:keep], entropies[:keep])


def p_true(lm, question: str, answer: str, add_bos: bool = False) -> float:
    """P(True) (module docstring): exp(ll_A) / (exp(ll_A) + exp(ll_B)), ll_X the log-likelihood of the
    continuation " X" after `P_TRUE_PROMPT`; for tokenizers where " A" and " B" are single tokens (as
    SmolLM2's) the softmax over those two logits. One forward pass (the two continuations as a batch)."""
    import torch

    tok = lm.tokenizer
    prompt = P_TRUE_PROMPT.format(question=question.strip(), answer=answer.strip())
    ctx = ([tok.bos_token_id] if add_bos and tok.bos_token_id is not None else []) + \
        tok(prompt, add_special_tokens=False)["input_ids"]
    options = [tok(x, add_special_tokens=False)["input_ids"] for x in (" A", " B")]
    width = len(ctx) + max(len(o) for o in options)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    rows = [ctx + o + [pad] * (width - len(ctx) - len(o)) for o in options]  # right padding: not attended to
    device = next(lm.model.parameters()).device
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(input_ids=torch.tensor(rows, device=device)).logits.float(), -1)
    ll = [sum(float(logp[r, len(ctx) - 1 + j, t]) for j, t in enumerate(o)) for r, o in enumerate(options)]
    return float(torch.softmax(torch.tensor(ll), dim=0)[0])
