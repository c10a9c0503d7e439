"""Greedy generation with the confidence of what the model wrote: the evaluation of generation tasks.

`greedy_generate` decodes a batch of prompts greedily (lm-eval's default for generate_until tasks):
prompts left-padded, one forward pass over the prompts, then one token per step with the KV cache
(the prompt is never recomputed; a row that has finished leaves the batch and its cache), stopping a row at EOS, at `max_gen_toks`, or once its text holds a
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

`generate_rows` runs a loaded generation task: generations, the task's own grading (lm-eval's
filters and process_results, or a built-in's), the confidence measures and P(True), one row per
prompt (the columns are listed in `kinds/generation.py`).

A kept token is one whose text ends at or before the cut; a token that straddles the cut (its text
runs into the stop string) is not kept, so the measures describe exactly the tokens of the answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from quantconf.errors import QuantconfError
from quantconf.inference import equivalence
from quantconf.inference.sampling import GumbelSampler, sample_stream_seed
from quantconf.inference.scoring import max_length, wants_bos

# part of an evaluation's reuse key: bump when a generation's text, tokens or measures can change
GENERATOR_VERSION = "2"  # 2: P(True) per generation batch (shards equal the unsharded run)
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


def encode_prompts(lm, prompts: list[str], max_gen_toks: int, add_bos: bool = False) -> list[list[int]]:
    """Token ids of `prompts` as decoding reads them: a prompt longer than the model's window less
    `max_gen_toks` loses its start, as lm-eval's HF backend truncates."""
    if max_gen_toks < 1:
        raise QuantconfError(f"max_gen_toks must be >= 1, got {max_gen_toks}", param="max_gen_toks")
    tok = lm.tokenizer
    window = max_length(lm.model)
    if max_gen_toks >= window:  # no room left for the prompt: every prompt would be cut to nothing
        raise QuantconfError(f"max_gen_toks {max_gen_toks} leaves no room for the prompt in the model's window of "
                             f"{window} tokens; use --max-gen-toks below {window} (e.g. {max(window // 4, 1)})",
                             param="max_gen_toks")
    room = window - max_gen_toks
    return [(([tok.bos_token_id] if add_bos and tok.bos_token_id is not None else [])
             + tok(p, add_special_tokens=False)["input_ids"])[-room:] for p in prompts]


def batch_plan(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Batches of indices, longest first: rows of a batch have similar lengths, so little padding."""
    if batch_size < 1:
        raise QuantconfError(f"batch_size must be >= 1, got {batch_size}", param="batch_size")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def greedy_generate(lm, prompts: list[str], until: list[str], max_gen_toks: int = 256, batch_size: int = 8,
                    add_bos: bool = False, progress: bool = False, desc: str = "generating") -> list[Generation]:
    """Greedy continuations of `prompts` (see the module docstring), in the order given (`encode_prompts`
    says how a long prompt is cut)."""
    from tqdm import tqdm

    batch_plan([], batch_size)  # checks batch_size before any tokenising
    encoded = encode_prompts(lm, prompts, max_gen_toks, add_bos)
    out: list[Generation | None] = [None] * len(prompts)
    with tqdm(total=len(prompts), desc=desc, unit="prompt", leave=False, disable=not progress) as bar:
        for idx in batch_plan([len(e) for e in encoded], batch_size):
            for i, g in zip(idx, _generate_batch(lm, [encoded[i] for i in idx], until, max_gen_toks)):
                out[i] = g
            bar.update(len(idx))
    return out


def stop_token_ids(lm) -> set[int]:
    """Token ids that end a generation: the tokenizer's EOS and the model's generation-config EOS (one
    id or several), as Hugging Face's `generate` stops, which lm-eval's HF backend calls (SmolLM2
    Instruct: the tokenizer says <|im_start|>, the generation config <|im_end|>)."""
    ids = {lm.tokenizer.eos_token_id}
    config_eos = getattr(getattr(lm.model, "generation_config", None), "eos_token_id", None)
    ids.update(config_eos if isinstance(config_eos, (list, tuple)) else [config_eos])
    return {int(i) for i in ids if i is not None}


def decode(tok, token_ids: list[int]) -> str:
    # special tokens are not text (lm-eval's tok_decode skips them too)
    return tok.decode(token_ids, skip_special_tokens=True)


def last_logits(model, **inputs):
    """Logits at the last position only (the LM head over every prompt position costs more than the
    decoder layers of a small model); models whose forward lacks `logits_to_keep` compute them all."""
    import inspect

    if "logits_to_keep" in inspect.signature(model.forward).parameters:
        result = model(**inputs, logits_to_keep=1)
    else:
        result = model(**inputs)
    return result, result.logits[:, -1, :]


def left_padded(rows: list[list[int]], tok, device):
    """(input_ids, attention_mask) of token rows padded on the left, so every row's next token is at the
    last position (batched decoding and P(True) read the logits there)."""
    import torch

    width = max(len(r) for r in rows)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = torch.tensor(r)
        mask[i, width - len(r):] = 1
    return ids.to(device), mask.to(device)


def _greedy(logp, rows: list[int]):
    return logp.argmax(-1)


def _generate_batch(lm, prompts: list[list[int]], until: list[str], max_gen_toks: int, copies: int = 1,
                    choose=_greedy) -> list[Generation]:
    """Continuations of a batch of prompts. `copies` > 1 (sampling: K answers per prompt) repeats each prompt's
    KV cache after its one prefill, so row r continues prompt r // copies; `choose(logp, rows)` picks each
    active row's next token from its next-token log-probabilities (float32; `rows`: the row numbers, for
    per-row random streams)."""
    import torch

    model, tok = lm.model, lm.tokenizer
    device = next(model.parameters()).device
    n = len(prompts) * copies
    stops = stop_token_ids(lm)
    tokens = [[] for _ in range(n)]
    logprobs = [[] for _ in range(n)]
    entropies = [[] for _ in range(n)]
    active = list(range(n))  # the rows still generating; finished rows leave the batch and its KV cache
    with torch.no_grad():
        past, step_ids, mask = _prefill_shared_prefix(model, tok, prompts, device)
        for step in range(max_gen_toks):
            position_ids = (mask.cumsum(-1) - 1).clamp(min=0)[:, -step_ids.shape[1]:]
            result, logits = last_logits(model, input_ids=step_ids, attention_mask=mask, position_ids=position_ids,
                                         past_key_values=past, use_cache=True)
            past = result.past_key_values
            if step == 0 and copies > 1:  # the prompts were read once; each now continues `copies` times
                past = _repeat_rows(past, copies)
                logits, mask = logits.repeat_interleave(copies, 0), mask.repeat_interleave(copies, 0)
            logp = torch.log_softmax(logits.float(), dim=-1)
            choice = choose(logp, active)
            entropy = -(logp.exp() * logp).nan_to_num().sum(-1)
            keep = []
            for i, r in enumerate(active):
                t = int(choice[i])
                if t in stops:
                    continue
                tokens[r].append(t)
                logprobs[r].append(float(logp[i, t]))
                entropies[r].append(float(entropy[i]))
                if not any(term and term in decode(tok, tokens[r]) for term in until):
                    keep.append(i)
            if not keep:
                break
            if len(keep) < len(active):  # a row that finished costs nothing more (its cache rows are dropped)
                index = torch.tensor(keep, device=device)
                if hasattr(past, "batch_select_indices"):
                    past.batch_select_indices(index)
                else:  # legacy tuple caches
                    past = tuple(tuple(x[index] for x in layer) for layer in past)
                mask, choice = mask[index], choice[index]
                active = [active[i] for i in keep]
            step_ids = choice[:, None]
            mask = torch.cat([mask, torch.ones((len(active), 1), dtype=mask.dtype, device=device)], dim=1)
    return [_kept(tok, t, lp, e, until) for t, lp, e in zip(tokens, logprobs, entropies)]


def _repeat_rows(past, copies: int):
    """The KV cache with each row repeated `copies` times in place (row r -> rows r*copies .. r*copies+copies-1)."""
    if hasattr(past, "batch_repeat_interleave"):
        past.batch_repeat_interleave(copies)
        return past
    return tuple(tuple(x.repeat_interleave(copies, 0) for x in layer) for layer in past)  # legacy tuple caches


SHARED_PREFIX_MIN = 16  # tokens: a shorter common prefix is not worth a forward pass of its own


def shared_prefix_length(rows: list[list[int]]) -> int:
    """Tokens every row starts with, leaving each row at least one token of its own (its last position's
    logits give its first generated token)."""
    if len(rows) < 2:
        return 0
    first, n = rows[0], min(len(r) for r in rows) - 1
    for i in range(max(n, 0)):
        if any(r[i] != first[i] for r in rows[1:]):
            return i
    return max(n, 0)


def _prefill_shared_prefix(model, tok, prompts: list[list[int]], device):
    """The KV cache of the tokens every prompt of the batch starts with (few-shot examples, a task's fixed
    preamble: truthfulqa_gen's 6 QA pairs are ~90% of each prompt), computed once and shared by the rows,
    instead of once per row. Returns (cache or None, the ids still to feed, the attention mask over all).
    Rows are [prefix][padding][own tokens]: the padding is masked and positions count only real tokens,
    so each row sees exactly its prompt, as with plain left padding."""
    import torch

    shared = shared_prefix_length(prompts)
    if shared >= SHARED_PREFIX_MIN:
        prefix = torch.tensor([prompts[0][:shared]], device=device)
        past = last_logits(model, input_ids=prefix, attention_mask=torch.ones_like(prefix),
                           position_ids=torch.arange(shared, device=device)[None], use_cache=True)[0].past_key_values
    if shared < SHARED_PREFIX_MIN or not hasattr(past, "batch_repeat_interleave"):  # (legacy tuple caches)
        ids, mask = left_padded(prompts, tok, device)
        return None, ids, mask
    past.batch_repeat_interleave(len(prompts))
    ids, own = left_padded([p[shared:] for p in prompts], tok, device)
    return past, ids, torch.cat([torch.ones((len(prompts), shared), dtype=own.dtype, device=device), own], dim=1)


def _kept(tok, token_ids: list[int], logprobs: list[float], entropies: list[float], until: list[str]) -> Generation:
    """The generation cut at the first stop string, with the tokens that lie wholly before the cut."""
    full = decode(tok, token_ids)
    text = cut_at_stop(full, until)
    keep = len(token_ids)
    while keep and len(decode(tok, token_ids[:keep])) > len(text):
        keep -= 1
    return Generation(text, token_ids[:keep], logprobs[:keep], entropies[:keep])


def p_true(lm, question: str, answer: str, add_bos: bool = False) -> float:
    """P(True) (module docstring): exp(ll_A) / (exp(ll_A) + exp(ll_B)), ll_X the log-likelihood of the
    continuation " X" after `P_TRUE_PROMPT`; for tokenizers where " A" and " B" are single tokens (as
    SmolLM2's) the softmax over those two logits. One forward pass (the two continuations as a batch)."""
    import torch

    tok = lm.tokenizer
    ctx = _p_true_context(tok, question, answer, add_bos)
    options = [tok(x, add_special_tokens=False)["input_ids"] for x in (" A", " B")]
    width = len(ctx) + max(len(o) for o in options)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    rows = [ctx + o + [pad] * (width - len(ctx) - len(o)) for o in options]  # right padding: not attended to
    device = next(lm.model.parameters()).device
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(input_ids=torch.tensor(rows, device=device)).logits.float(), -1)
    ll = [sum(float(logp[r, len(ctx) - 1 + j, t]) for j, t in enumerate(o)) for r, o in enumerate(options)]
    return float(torch.softmax(torch.tensor(ll), dim=0)[0])


def _p_true_context(tok, question: str, answer: str, add_bos: bool) -> list[int]:
    prompt = P_TRUE_PROMPT.format(question=question.strip(), answer=answer.strip())
    return ([tok.bos_token_id] if add_bos and tok.bos_token_id is not None else []) + \
        tok(prompt, add_special_tokens=False)["input_ids"]


def p_true_batch(lm, questions: list[str], answers: list[str], add_bos: bool = False,
                 batch_size: int = 8) -> list[float]:
    """`p_true` of many (question, answer) pairs: when " A" and " B" are one token each, left-padded
    batches with the logits of the last position only (the same numbers, to float rounding);
    otherwise one `p_true` call per pair."""
    import torch

    tok = lm.tokenizer
    options = [tok(x, add_special_tokens=False)["input_ids"] for x in (" A", " B")]
    if any(len(o) != 1 for o in options):
        return [p_true(lm, q, a, add_bos) for q, a in zip(questions, answers)]
    a_id, b_id = options[0][0], options[1][0]
    contexts = [_p_true_context(tok, q, a, add_bos) for q, a in zip(questions, answers)]
    device = next(lm.model.parameters()).device
    out = [float("nan")] * len(contexts)
    order = sorted(range(len(contexts)), key=lambda i: -len(contexts[i]))
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            ids, mask = left_padded([contexts[i] for i in idx], tok, device)
            position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
            _, logits = last_logits(lm.model, input_ids=ids, attention_mask=mask, position_ids=position_ids)
            two = torch.stack([logits[:, a_id], logits[:, b_id]], dim=1).float()
            for i, value in zip(idx, torch.softmax(two, dim=1)[:, 0].tolist()):
                out[i] = float(value)
    return out


CONFIDENCE_COLUMNS = ("sequence_logprob", "mean_logprob", "min_token_prob", "mean_entropy", "p_true")


SAMPLE_ROWS = 64  # sampled continuations decoded together at most (prompts x K): bounds the repeated KV cache


def generate_rows(lm, loaded, batch_size: int = 8, max_gen_toks: int | None = None, progress: bool = False,
                  shard: tuple[int, int] | None = None, with_p_true: bool = True, sampling=None) -> list[dict]:
    """One row per prompt of a loaded generation task (`kinds/generation.py` lists the columns), the task's
    grading of the answer under "metrics". `max_gen_toks` overrides the task's budget. `sampling` (a
    `sampling.SamplingConfig`) adds K sampled answers per prompt and their grouping (`_sampled_columns`).

    The work is a plan of batches (prompts that share stop strings and budget, longest first); P(True) is
    computed per batch of that plan, so a row's numbers depend only on its batch. `shard=(i, n)` runs every
    n-th batch of the plan from the i-th: the merged shards equal the unsharded run bit for bit (padding,
    and so float rounding, are the same)."""
    import numpy as np
    from tqdm import tqdm

    all_prompts = loaded.questions
    add_bos = wants_bos(lm.model)
    settings: dict[tuple, list[int]] = {}
    for i, p in enumerate(all_prompts):
        settings.setdefault((p.until, max_gen_toks or p.max_gen_toks), []).append(i)
    plan = []  # (until, budget, prompt indices, their token ids)
    for (until, budget), idx in settings.items():
        encoded = encode_prompts(lm, [all_prompts[i].context for i in idx], budget, add_bos)
        for batch in batch_plan([len(e) for e in encoded], batch_size):
            plan.append((until, budget, [idx[j] for j in batch], [encoded[j] for j in batch]))
    if shard is not None:
        plan = plan[shard[0]::shard[1]]
    done: dict[int, tuple] = {}  # prompt index -> (Generation, P(True))
    with tqdm(total=sum(len(b[2]) for b in plan), desc=loaded.task.name, unit="prompt", leave=False,
              disable=not progress) as bar:
        for until, budget, idx, encoded in plan:
            gens = _generate_batch(lm, encoded, list(until), budget)
            truths = (p_true_batch(lm, [all_prompts[i].question for i in idx], [g.text for g in gens], add_bos,
                                   batch_size=len(idx)) if with_p_true else [float("nan")] * len(idx))
            samples = _samples(lm, loaded, [all_prompts[i] for i in idx], encoded, list(until), budget, sampling)
            done.update({i: (g, t, s) for i, g, t, s in zip(idx, gens, truths, samples)})
            bar.update(len(idx))
    order = sorted(done)
    prompts = [all_prompts[i] for i in order]
    generations = [done[i][0] for i in order]
    truths = [done[i][1] for i in order]
    graded = loaded.grade(prompts, [g.text for g in generations]) if prompts else []
    sampled = _sampled_columns(loaded, prompts, generations, [done[i][2] for i in order], sampling)
    primary = loaded.task.primary_metric
    rows = []
    for p, g, metrics, truth, extra in zip(prompts, generations, graded, truths, sampled):
        if primary not in metrics:
            raise QuantconfError(f"{loaded.task.name}: its grading gives {sorted(metrics)}, not its primary "
                                 f"metric {primary!r}")
        rows.append({
            "doc_id": p.doc_id, "task": loaded.task.name, "context": p.context, "question": p.question,
            "reference": p.reference, "generation": g.text, "token_ids": list(g.token_ids),
            "token_logprobs": list(g.token_logprobs), "token_entropies": list(g.token_entropies),
            "primary_metric": primary, "correct": float(metrics[primary]),
            "metrics": {k: float(v) if isinstance(v, (int, float, np.number)) and not isinstance(v, bool) else v
                        for k, v in metrics.items()},
            **g.confidence(), "p_true": truth, **extra,
        })
    return rows


def _samples(lm, loaded, prompts, encoded, until, budget, sampling) -> list:
    """K sampled answers of each prompt of a batch (None each without `sampling`), decoded SAMPLE_ROWS rows at
    a time; each sample's stream is seeded by what identifies it (`sampling.sample_stream_seed`)."""
    if sampling is None:
        return [None] * len(prompts)
    per_call = max(1, SAMPLE_ROWS // sampling.k)
    out = []
    for start in range(0, len(prompts), per_call):
        group = prompts[start:start + per_call]
        seeds = [[sample_stream_seed(sampling.seed, loaded.task.name, p.doc_id, k) for k in range(sampling.k)]
                 for p in group]
        out += sample_generate(lm, encoded[start:start + per_call], seeds, until, budget, sampling)
    return out


def sample_generate(lm, encoded: list[list[int]], stream_seeds: list[list[int]], until: list[str], max_gen_toks: int,
                    config) -> list[list[Generation]]:
    """K samples of each encoded prompt (inference/sampling.py), the prompts read once and each KV cache shared by
    its K continuations; `stream_seeds[i][k]` seeds sample k of prompt i."""
    sampler = GumbelSampler(config, [s for seeds in stream_seeds for s in seeds])
    flat = _generate_batch(lm, encoded, until, max_gen_toks, copies=config.k, choose=sampler)
    return [flat[i * config.k:(i + 1) * config.k] for i in range(len(encoded))]


def _sampled_columns(loaded, prompts, generations, samples, sampling) -> list[dict]:
    """Per prompt: the samples (texts, token ids, the model's token log-probabilities) and their grouping
    under the run's equivalence rule (inference/equivalence.py): clusters, the K x K similarity, the share of
    samples equivalent to the greedy answer, the lexical similarity; `{}` per prompt without `sampling`."""
    if sampling is None:
        return [{} for _ in prompts]
    rule, arg = equivalence.parse(sampling.equivalence, loaded.answer_key is not None)
    judge = equivalence.NLIJudge(arg) if rule == "nli" else None
    named = f"{rule}:{arg}" if arg else rule
    rows = []
    for p, g, ss in zip(prompts, generations, samples):
        texts = [s.text for s in ss]
        keys = loaded.answer_key([p] * (len(texts) + 1), texts + [g.text]) if rule == "answer" else [None]
        grouped = equivalence.group(rule, arg, g.text, texts, keys[:-1], keys[-1], judge)
        rows.append({"samples": texts, "sample_token_ids": [list(s.token_ids) for s in ss],
                     "sample_token_logprobs": [list(s.token_logprobs) for s in ss],
                     "sample_clusters": grouped.clusters, "sample_similarity": grouped.similarity,
                     "greedy_agreement": grouped.greedy_agreement, "lexical_similarity": grouped.lexical_similarity,
                     "equivalence": named})
    return rows
