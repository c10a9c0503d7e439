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

Two scorers give the same numbers (to float rounding):
  * `score_requests` ("naive"): one sequence per (context, choice) pair, sorted by length (longest
    first, like lm-eval), right-padded; identical pairs are scored once.
  * `score_questions` ("packed", the default): one sequence per question — the context once, then
    every choice's continuation, each continuation attending only to the context and to itself
    (a 4D attention mask, positions restarting after the context). The context is computed once
    instead of k times, which is where multiple-choice scoring spends most of its time.
Both compute the LM head only at the positions that are scored (not over the whole sequence).
"""

from __future__ import annotations

from dataclasses import dataclass


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


def _scored_logits(model, input_ids, attention_mask, positions, position_ids=None):
    """Logits (float32) at `positions` (list of (row, col)) — the LM head only where needed."""
    import torch

    hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask,
                                 position_ids=position_ids).last_hidden_state
    rows = torch.tensor([r for r, _ in positions], device=hidden.device)
    cols = torch.tensor([c for _, c in positions], device=hidden.device)
    logits = model.get_output_embeddings()(hidden[rows, cols]).float()
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits


def _score_spans(logits, spans):
    """spans: list of (offset into logits rows, continuation tokens) -> ScoredChoice each."""
    import torch

    out = []
    logp = logits.log_softmax(-1)
    greedy = logits.argmax(-1)
    for offset, cont in spans:
        target = torch.tensor(cont, device=logits.device)
        rows = slice(offset, offset + len(cont))
        ll = logp[rows].gather(-1, target[:, None]).sum().item()
        out.append(ScoredChoice(ll, len(cont), bool((greedy[rows] == target).all().item())))
    return out


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
            positions, spans = [], []
            for row, i in enumerate(batch):
                cont, n_in = items[i][1], len(inputs[i])
                spans.append((len(positions), cont))
                positions += [(row, col) for col in range(n_in - len(cont), n_in)]
            logits = _scored_logits(model, ids.to(device), mask.to(device), positions)
            for i, scored in zip(batch, _score_spans(logits, spans)):
                results[i] = scored
            if bar is not None:
                bar.update(len(batch))
    if bar is not None:
        bar.close()
    return [results[unique[(tuple(ctx), tuple(cont))]] for ctx, cont in requests]


def score_questions(
    model,
    questions: list[tuple[list[int], list[list[int]]]],
    batch_size: int = 16,
    progress: bool = False,
    desc: str = "scoring",
) -> list[list[ScoredChoice]]:
    """Packed scorer: (context_tokens, [continuation_tokens per choice]) per question ->
    ScoredChoice per choice. Questions too long for the window fall back to `score_requests`
    (whose left truncation then differs per choice, as in lm-eval)."""
    import torch

    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    window = max_length(model)
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    results: list[list[ScoredChoice] | None] = [None] * len(questions)
    packed = []
    for qi, (ctx, conts) in enumerate(questions):
        if any(not c for c in conts):
            raise ValueError("a continuation encodes to no tokens; choices must be non-empty text")
        if len(ctx) + max(len(c) for c in conts) - 1 > window:
            results[qi] = score_requests(model, [(ctx, c) for c in conts], batch_size=len(conts))
        else:
            packed.append(qi)
    length = {qi: len(questions[qi][0]) + sum(len(c) - 1 for c in questions[qi][1]) for qi in packed}
    order = sorted(packed, key=lambda qi: (-length[qi], qi))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(order), desc=desc, unit="question", leave=False)
    neg = torch.finfo(dtype).min
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            width = length[batch[0]]
            ids = torch.zeros((len(batch), width), dtype=torch.long)
            pos = torch.zeros((len(batch), width), dtype=torch.long)
            # owner[b, t]: -1 context, i for choice i's tokens, -2 padding
            owner = torch.full((len(batch), width), -2, dtype=torch.long)
            positions, spans = [], []
            for row, qi in enumerate(batch):
                ctx, conts = questions[qi]
                n = len(ctx)
                ids[row, :n] = torch.tensor(ctx)
                pos[row, :n] = torch.arange(n)
                owner[row, :n] = -1
                t = n
                for i, cont in enumerate(conts):
                    m = len(cont) - 1
                    ids[row, t:t + m] = torch.tensor(cont[:-1], dtype=torch.long)
                    pos[row, t:t + m] = torch.arange(n, n + m)
                    owner[row, t:t + m] = i
                    spans.append((len(positions), cont))
                    positions += [(row, n - 1)] + [(row, c) for c in range(t, t + m)]
                    t += m
            q_own, k_own = owner[:, :, None], owner[:, None, :]
            causal = torch.ones(width, width, dtype=torch.bool).tril()
            allowed = causal & ((k_own == -1) | (k_own == q_own))
            allowed |= torch.eye(width, dtype=torch.bool)  # padding rows attend to themselves (no NaN)
            mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, neg)[:, None]
            logits = _scored_logits(model, ids.to(device), mask.to(device), positions, pos.to(device))
            scored = _score_spans(logits, spans)
            k = 0
            for qi in batch:
                n_choices = len(questions[qi][1])
                results[qi] = scored[k:k + n_choices]
                k += n_choices
            if bar is not None:
                bar.update(len(batch))
    if bar is not None:
        bar.close()
    return results
