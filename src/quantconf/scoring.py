"""Log-likelihood of each answer choice, computed the way lm-evaluation-harness does.

For a question with context C and choices c_1..c_k, lm-eval scores the continuation
`target_delimiter + c_i` after C:
  * trailing whitespace of the context moves into the continuation (`_encode_pair`);
  * context+continuation is tokenized once, the context alone once, and the continuation tokens
    are the whole encoding minus the context's length (so merges across the boundary go to the
    continuation);
  * no special tokens, unless the tokenizer/model wants a BOS (`add_bos`); an empty context is
    replaced by the BOS/EOS token;
  * loglik = sum of log p(token) over continuation tokens; is_greedy = every continuation token
    is the argmax at its position.
Inputs longer than the model window are truncated from the left, as in lm-eval.

Batched: requests are sorted by length (longest first, like lm-eval), padded on the right, and
identical (context, continuation) token pairs are scored once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ScoredChoice:
    loglik: float
    n_tokens: int
    is_greedy: bool


def encode_pair(tokenizer, context: str, continuation: str, add_bos: bool = False) -> tuple[list[int], list[int]]:
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    cont = whole[len(ctx):]
    prefix = bos_or_eos(tokenizer)
    if add_bos:
        ctx = [prefix] + ctx
    elif not ctx:
        ctx = [prefix]
    return ctx, cont


def bos_or_eos(tokenizer) -> int:
    # lm-eval's prefix_token_id: BOS if the tokenizer has one, else EOS (eot)
    tid = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if tid is None:
        raise ValueError("tokenizer has neither BOS nor EOS token; cannot score an empty context")
    return tid


def wants_bos(model, tokenizer) -> bool:
    """Gemma-family models need an explicit BOS (lm-eval sets add_bos_token for them)."""
    return getattr(model.config, "model_type", "").startswith("gemma")


def max_length(model) -> int:
    for attr in ("max_position_embeddings", "n_positions", "max_seq_len"):
        value = getattr(model.config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048


def score_requests(
    model,
    requests: list[tuple[list[int], list[int]]],
    batch_size: int = 16,
    progress: bool = False,
    desc: str = "scoring",
) -> list[ScoredChoice]:
    """Score (context_tokens, continuation_tokens) pairs; returns one ScoredChoice each, in order."""
    import torch

    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    window = max_length(model)
    device = next(model.parameters()).device
    unique: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
    for ctx, cont in requests:
        if not cont:
            raise ValueError("a continuation encodes to no tokens; choices must be non-empty text")
        unique.setdefault((tuple(ctx), tuple(cont)), len(unique))
    items = list(unique)
    # model input: (ctx + cont) without its last token, truncated from the left to the window
    inputs = [list(ctx + cont)[-(window + 1):][:-1] for ctx, cont in items]
    order = sorted(range(len(items)), key=lambda i: (-len(inputs[i]), i))
    results: list[ScoredChoice | None] = [None] * len(items)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), desc=desc, unit="choice", leave=False)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            width = len(inputs[batch[0]])
            ids = torch.zeros((len(batch), width), dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                seq = inputs[i]
                ids[row, :len(seq)] = torch.tensor(seq)
                mask[row, :len(seq)] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            for row, i in enumerate(batch):
                cont = items[i][1]
                n_in = len(inputs[i])
                span = logits[row, n_in - len(cont):n_in].float().log_softmax(-1)
                target = torch.tensor(cont, device=span.device)
                ll = span.gather(-1, target[:, None]).sum().item()
                greedy = bool((span.argmax(-1) == target).all().item())
                results[i] = ScoredChoice(ll, len(cont), greedy)
            if bar is not None:
                bar.update(len(batch))
    if bar is not None:
        bar.close()
    return [results[unique[(tuple(ctx), tuple(cont))]] for ctx, cont in requests]
