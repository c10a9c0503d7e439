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
  * `score_questions` ("packed", the default): one segment per question — its prefix tree of
    tokens (`QuestionTree`): the context once, then the continuations sharing any common start,
    each token attending only to its ancestors (a 4D attention mask, positions = depths). The
    context is computed once instead of k times, which is where multiple-choice scoring spends
    most of its time; short questions share a row, so little is spent on padding.
Both compute the LM head and log-softmax only at the positions that are scored, once per position
however many choices read it (`token_logprobs`).
torch is imported inside the functions that run the model: it takes seconds to import, and
`import quantconf` (metrics, compare, reports) does not need it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm


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


def wants_bos(model) -> bool:
    """Gemma-family models need an explicit BOS (lm-eval sets add_bos_token for them)."""
    return getattr(model.config, "model_type", "").startswith("gemma")


def max_length(model) -> int:
    for attr in ("max_position_embeddings", "n_positions", "max_seq_len"):
        value = getattr(model.config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048


# The LM head runs on ROW_BLOCK positions at a time, into two buffers allocated once per call
# (logits and log-softmax, 512 x 49152 float32 = 100 MB each for SmolLM2): allocating blocks of
# that size afresh costs page faults that showed up as ~30% of piqa's scoring time, and the head
# GEMM runs ~10% faster on 512 rows than on 256 here. The log-softmax is torch's own kernel over
# whole rows, as lm-eval computes it, because its float32 rounding (a ~1e-5 relative error in the
# sum of exponentials) adds up to ~1e-3 over a 100-token continuation, and quantconf's numbers
# must agree with lm-eval's to 1e-4.
ROW_BLOCK = 512


def _hidden_states(model, input_ids, attention_mask, position_ids=None):
    return model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask,
                               position_ids=position_ids).last_hidden_state


def token_logprobs(model, hidden, targets, rows=None):
    """log p(target) and whether target is the argmax, for each target token id (`targets`, [m])
    read from row `rows[k]` of `hidden` ([n, d]; by default row k): log_softmax + gather + argmax
    over full-vocabulary logits (float32), computed once per row however many targets it has."""
    import torch

    head = model.get_output_embeddings()
    cap = getattr(model.config, "final_logit_softcapping", None)
    plain = type(head) is torch.nn.Linear and head.weight.dtype == torch.float32
    if rows is None:
        rows = torch.arange(len(targets), device=hidden.device)
    if plain:
        logits_buf = torch.empty((min(ROW_BLOCK, len(hidden)), head.out_features), device=hidden.device)
        logsm_buf = torch.empty_like(logits_buf)
    logp = torch.empty(len(targets), device=hidden.device)
    greedy = torch.empty(len(targets), dtype=torch.bool, device=hidden.device)
    for r in range(0, len(hidden), ROW_BLOCK):
        h = hidden[r:r + ROW_BLOCK]
        if plain:
            logits = logits_buf[:len(h)]
            if head.bias is None:
                torch.mm(h, head.weight.t(), out=logits)
            else:
                torch.addmm(head.bias, h, head.weight.t(), out=logits)
        else:  # bf16 or a custom (e.g. quantized) head
            logits = head(h).float()
        if cap:
            logits = logits.div_(cap).tanh_().mul_(cap)
        logsm = logsm_buf[:len(h)] if plain else torch.empty_like(logits)
        torch._log_softmax(logits, -1, False, out=logsm)
        here = ((rows >= r) & (rows < r + len(h))).nonzero()[:, 0]
        local, t = rows[here] - r, targets[here]
        lp = logsm[local, t]
        # lm-eval's greedy check is argmax(log_softmax) == target; a max-reduction is ~10x
        # cheaper than argmax here, and argmax's first-index rule is checked only where it can
        # matter: the target reaches the row maximum and an earlier token ties with it
        best = logsm.amax(-1)[local]
        hit = lp == best
        for k in hit.nonzero()[:, 0].tolist():
            if t[k] > 0 and bool((logsm[local[k], :t[k]] == best[k]).any()):
                hit[k] = False
        logp[here], greedy[here] = lp, hit
    return logp, greedy


def _score_choices(model, hidden, head_positions, pairs, choices):
    """head_positions: (row, col) of each position whose next-token distribution is needed;
    pairs: (index into head_positions, target token) scored; choices: indices into pairs per
    choice, in token order -> ScoredChoice per choice. The LM head runs only at head_positions."""
    import torch

    rows = torch.tensor([r for r, _ in head_positions], device=hidden.device)
    cols = torch.tensor([c for _, c in head_positions], device=hidden.device)
    pair_rows = torch.tensor([p for p, _ in pairs], device=hidden.device)
    targets = torch.tensor([t for _, t in pairs], device=hidden.device)
    logp, greedy = token_logprobs(model, hidden[rows, cols], targets, pair_rows)
    out = []
    for idx in choices:
        idx = torch.tensor(idx, device=hidden.device)
        out.append(ScoredChoice(logp[idx].sum().item(), len(idx), bool(greedy[idx].all().item())))
    return out


def _progress_bar(enabled: bool, total: int, desc: str, unit: str):
    return tqdm(total=total, desc=desc, unit=unit, leave=False, disable=not enabled)


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

    with _progress_bar(progress, len(items), desc, "choice") as bar, torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            width = len(inputs[batch[0]])
            ids = torch.zeros((len(batch), width), dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                seq = inputs[i]
                ids[row, :len(seq)] = torch.tensor(seq)
                mask[row, :len(seq)] = 1
            positions, pairs, choices = [], [], []
            for row, i in enumerate(batch):
                cont, n_in = items[i][1], len(inputs[i])
                choices.append(range(len(pairs), len(pairs) + len(cont)))
                pairs += [(len(positions) + j, t) for j, t in enumerate(cont)]
                positions += [(row, col) for col in range(n_in - len(cont), n_in)]
            hidden = _hidden_states(model, ids.to(device), mask.to(device))
            for i, scored in zip(batch, _score_choices(model, hidden, positions, pairs, choices)):
                results[i] = scored
            bar.update(len(batch))
    return [results[unique[(tuple(ctx), tuple(cont))]] for ctx, cont in requests]


ROW_TOKENS = 256  # packed rows hold several short questions up to this many tokens


@dataclass
class QuestionTree:
    """A question's model inputs as a prefix tree: every distinct prefix of (context + choice)
    minus its last token is one node, so the context and any common start of the continuations
    are computed once. Node i holds token `tokens[i]` at position `depths[i]` and attends to its
    ancestors (`parents` chain) and itself. `predictors[c][j]` is the node whose output predicts
    token j of choice c's continuation."""

    tokens: list[int]
    parents: list[int]
    depths: list[int]
    predictors: list[list[int]]

    @classmethod
    def build(cls, ctx: list[int] | list[list[int]], conts: list[list[int]]) -> "QuestionTree":
        """`ctx`: the context's tokens, shared by every choice, or one token list per choice
        (multiple-input tasks such as Winogrande, whose choices sit in the context)."""
        ctxs = ctx if ctx and isinstance(ctx[0], list) else [ctx] * len(conts)
        if len(ctxs) != len(conts):
            raise ValueError(f"{len(ctxs)} contexts for {len(conts)} continuations")
        if any(not c for c in ctxs):
            raise ValueError("an empty context must be replaced by BOS/EOS (encode_pair does)")
        tree = cls([], [], [], [])
        node_of: dict[tuple[int, int], int] = {}  # (parent node, token) -> node
        for context, cont in zip(ctxs, conts):
            seq, node, path = context + cont, -1, []
            for depth, token in enumerate(seq[:-1]):
                key = (node, token)
                if key not in node_of:
                    node_of[key] = len(tree.tokens)
                    tree.tokens.append(token)
                    tree.parents.append(node)
                    tree.depths.append(depth)
                node = node_of[key]
                path.append(node)
            tree.predictors.append(path[len(context) - 1:])
        return tree

    def ancestors(self):
        """[n, n] bool: node i may attend to node j (j is i or an ancestor of i)."""
        allowed = np.zeros((len(self.tokens), len(self.tokens)), dtype=bool)
        for i, parent in enumerate(self.parents):  # parents come before their children
            if parent >= 0:
                allowed[i] = allowed[parent]
            allowed[i, i] = True
        return allowed


def pack_rows(lengths: dict[int, int], row_tokens: int) -> list[list[int]]:
    """First-fit decreasing: question ids -> rows whose total length stays <= row_tokens (a longer
    question gets a row of its own). Short questions share a row instead of each being padded to
    the longest question of its batch; rows come out longest first."""
    rows: list[list[int]] = []
    free: list[int] = []
    open_rows: list[int] = []  # rows that can still take the shortest question
    shortest = min(lengths.values(), default=0)
    for qi in sorted(lengths, key=lambda q: (-lengths[q], q)):
        for k, r in enumerate(open_rows):
            if lengths[qi] <= free[r]:
                rows[r].append(qi)
                free[r] -= lengths[qi]
                if free[r] < shortest:
                    del open_rows[k]
                break
        else:
            rows.append([qi])
            free.append(row_tokens - lengths[qi])
            if free[-1] >= shortest:
                open_rows.append(len(rows) - 1)
    fill = [sum(lengths[q] for q in row) for row in rows]
    return [rows[r] for r in sorted(range(len(rows)), key=lambda r: (-fill[r], r))]


def score_questions(
    model,
    questions: list[tuple[list[int] | list[list[int]], list[list[int]]]],
    batch_size: int = 16,
    progress: bool = False,
    desc: str = "scoring",
    row_tokens: int | None = None,
    shard: tuple[int, int] | None = None,
) -> list[list[ScoredChoice] | None]:
    """Packed scorer: (context_tokens, [continuation_tokens per choice]) per question ->
    ScoredChoice per choice. A question whose choices have contexts of their own passes a list of
    context token lists (one per choice) instead.

    Each question becomes one segment: its prefix tree (`QuestionTree`: the context once, then
    the choices' continuations, sharing any common start), every token attending only to its
    ancestors in the tree, at its depth as position. The LM head runs once per tree node that
    predicts a continuation token, however many choices need it. Segments are packed into rows
    of up to `row_tokens` tokens (`pack_rows`), and a forward pass takes rows up to
    `batch_size * row_tokens` tokens in all (at least one row), so memory stays bounded by the
    batch size whatever the task's lengths. Questions too long for the window fall back to
    `score_requests` (whose left truncation then differs per choice, as in lm-eval).

    `shard=(i, n)`: plan the batches of all questions, then run only batches i, i+n, i+2n, ...
    (and every n-th of the too-long questions); the others come back as None. Each batch holds
    exactly the inputs it holds in an unsharded run, so the shards' numbers are the unsharded
    numbers bit for bit (batch composition changes float rounding of the matrix products)."""
    import torch

    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    window = max_length(model)
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    results: list[list[ScoredChoice] | None] = [None] * len(questions)
    trees: dict[int, QuestionTree] = {}
    shard_i, shard_n = shard or (0, 1)
    n_long = 0
    for qi, (ctx, conts) in enumerate(questions):
        if any(not c for c in conts):
            raise ValueError("a continuation encodes to no tokens; choices must be non-empty text")
        ctxs = ctx if ctx and isinstance(ctx[0], list) else [ctx] * len(conts)
        if max(len(x) + len(c) for x, c in zip(ctxs, conts)) - 1 > window:
            if n_long % shard_n == shard_i:
                results[qi] = score_requests(model, list(zip(ctxs, conts)), batch_size=len(conts))
            n_long += 1
        else:
            trees[qi] = QuestionTree.build(ctx, conts)
    length = {qi: len(tree.tokens) for qi, tree in trees.items()}
    row_tokens = min(row_tokens or ROW_TOKENS, window)
    rows = pack_rows(length, row_tokens)
    fill = [sum(length[qi] for qi in row) for row in rows]
    batches, start = [], 0
    while start < len(rows):  # rows are longest first, so the first row of a batch sets its width
        n = max(1, min(len(rows) - start, batch_size * row_tokens // fill[start]))
        batches.append(range(start, start + n))
        start += n
    batches = batches[shard_i::shard_n]
    neg = torch.finfo(dtype).min
    with _progress_bar(progress, sum(len(rows[r]) for b in batches for r in b), desc, "question") as bar, \
            torch.inference_mode():
        for batch in batches:
            width = fill[batch[0]]
            ids = torch.zeros((len(batch), width), dtype=torch.long)
            pos = torch.zeros((len(batch), width), dtype=torch.long)
            allowed = torch.eye(width, dtype=torch.bool).repeat(len(batch), 1, 1)  # padding sees itself (no NaN)
            # in first-seen order: (row, col) of each LM-head position -> its index, and
            # (head index, target) of each scored pair -> its index
            head_of: dict[tuple[int, int], int] = {}
            pair_of: dict[tuple[int, int], int] = {}
            choices, order = [], []
            for b, r in enumerate(batch):
                t = 0
                for qi in rows[r]:
                    tree, n = trees[qi], length[qi]
                    ids[b, t:t + n] = torch.tensor(tree.tokens)
                    pos[b, t:t + n] = torch.tensor(tree.depths)
                    allowed[b, t:t + n, t:t + n] = torch.from_numpy(tree.ancestors())
                    for cont, nodes in zip(questions[qi][1], tree.predictors):
                        heads = [head_of.setdefault((b, t + node), len(head_of)) for node in nodes]
                        choices.append([pair_of.setdefault(pair, len(pair_of)) for pair in zip(heads, cont)])
                    order.append(qi)
                    t += n
            mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, neg)[:, None]
            hidden = _hidden_states(model, ids.to(device), mask.to(device), pos.to(device))
            scored = _score_choices(model, hidden, list(head_of), list(pair_of), choices)
            k = 0
            for qi in order:
                n_choices = len(questions[qi][1])
                results[qi] = scored[k:k + n_choices]
                k += n_choices
            bar.update(len(order))
    return results
