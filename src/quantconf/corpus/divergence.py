"""Token-level divergence of a quantized model from the full one on ordinary text: what llama.cpp's
`llama-perplexity --kl-divergence` reports (KL divergence over the whole vocabulary per token, the share
of tokens whose top token is unchanged, the change of the correct token's probability, the perplexity
ratio), with block-bootstrap intervals over windows.

Both models score the same windows of the text, moved by the same stride and with the same context rule
as `quantconf ppl` (`perplexity.window_spans`): each window scores only the tokens the previous one did
not, the rest of it is context. Only one window's logits of each model are in memory at a time, and the
per-token values are computed in float64 in row chunks (a window of 512 tokens over a 49,152-token
vocabulary is 100 MB of float32 logits per model).

`token_divergence` gives the per-token values, `divergence_statistics` the statistics with intervals,
`text_divergence` both for two model specs and a text set (what `quantconf divergence` prints).
`question_divergence` gives the same per-token KL on the answer tokens of a multiple-choice task's
questions, beside the choice-level JS distance and whether the answer flipped (`quantconf divergence
--task`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from quantconf.analysis.generation import normalise_answer
from quantconf.analysis.paired import js_distance
from quantconf.errors import QuantconfError
from quantconf.io import atomic_write_bytes, stable_hash
from quantconf.kinds import kind_of_task
from quantconf.kinds.choice import task_requests
from quantconf.models.loading import LoadedModel, LoadOptions
from quantconf.corpus.perplexity import text_ids, window_spans
from quantconf.models.runtime import available_cores, set_threads
from quantconf.inference.generation import encode_prompts, generate_rows
from quantconf.inference.scoring import max_length, wants_bos
from quantconf.tasks import LoadedTask, TaskOptions, load_task

ROWS_PER_CHUNK = 64  # float64 work arrays of 64 x vocabulary (25 MB for a 49k vocabulary)


@dataclass(frozen=True)
class TokenDivergence:
    """Per scored token (text order): KL(full || quant) and KL(quant || full) in nats over the full
    vocabulary, whether both models' most probable token is the same, each model's probability of the
    text's actual next token, each model's entropy (nats), and the window that scored the token (tokens of
    one window share their context: the bootstrap resamples windows, not tokens)."""

    kld: np.ndarray
    kld_reverse: np.ndarray
    same_top: np.ndarray
    p_full: np.ndarray
    p_quant: np.ndarray
    entropy_full: np.ndarray
    entropy_quant: np.ndarray
    window: np.ndarray
    top_p_full: np.ndarray  # the full model's probability of its own most probable token: its confidence

    def __len__(self) -> int:
        return len(self.kld)

    def subset(self, rows) -> "TokenDivergence":
        return TokenDivergence(**{f: getattr(self, f)[rows] for f in self.__dataclass_fields__})


def _log_softmax64(logits) -> tuple[np.ndarray, np.ndarray]:
    """(log-softmax, softmax) of each row in float64, from one exp pass."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    total = e.sum(axis=-1, keepdims=True)
    return z - np.log(total), e / total


def _compare_chunk(full_logits, quant_logits, targets) -> dict[str, np.ndarray]:
    (lp, p), (lq, q) = _log_softmax64(full_logits), _log_softmax64(quant_logits)
    d = lp - lq
    picked = np.arange(len(lp)), targets
    return {"kld": np.einsum("ij,ij->i", p, d),  # row sums without a product array
            "kld_reverse": -np.einsum("ij,ij->i", q, d),
            "same_top": lp.argmax(axis=1) == lq.argmax(axis=1),
            "p_full": p[picked], "p_quant": q[picked],
            "entropy_full": -np.einsum("ij,ij->i", p, lp), "entropy_quant": -np.einsum("ij,ij->i", q, lq),
            "top_p_full": p.max(axis=1)}


def compare_logits(full_logits, quant_logits, targets, workers: int | None = None) -> dict[str, np.ndarray]:
    """Per-row divergence values of two (n, vocab) logit arrays whose row i predicts token targets[i]: chunks
    of ROWS_PER_CHUNK rows in `workers` threads (None: every core the process may use; numpy's exp and sums
    release the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    targets = np.asarray(targets)
    starts = range(0, len(targets), ROWS_PER_CHUNK)
    keys = ("kld", "kld_reverse", "same_top", "p_full", "p_quant", "entropy_full", "entropy_quant", "top_p_full")
    if not len(starts):
        return {k: np.zeros(0) for k in keys}
    with ThreadPoolExecutor(max_workers=max(1, min(workers or available_cores(), len(starts)))) as pool:
        parts = list(pool.map(lambda i: _compare_chunk(full_logits[i:i + ROWS_PER_CHUNK],
                                                        quant_logits[i:i + ROWS_PER_CHUNK],
                                                        targets[i:i + ROWS_PER_CHUNK]), starts))
    return {k: np.concatenate([part[k] for part in parts]) for k in keys}


def _lm_head(model):
    """The full model's LM head when its logits are exactly head(last hidden state) (None: a model that
    soft-caps or scales its logits after the head; its full pass is then not cached)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    config = getattr(model, "config", None)
    if head is None or getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        return None
    return head


def _full_rows(model, head, x, rows: slice):
    """The LM head's input (the last hidden state) at the scored rows of one window: one forward pass (the head
    run on those rows only where the model takes `logits_to_keep` as row indices)."""
    import torch

    captured = {}
    handle = head.register_forward_pre_hook(lambda module, args: captured.setdefault("h", args[0]))
    try:
        if "logits_to_keep" in _forward_params(model):
            model(input_ids=x, logits_to_keep=torch.arange(rows.start, rows.stop, device=x.device))
            return captured["h"][0]
        model(input_ids=x)
        return captured["h"][0, rows]
    finally:
        handle.remove()


def _forward_params(model) -> set:
    import inspect

    return set(inspect.signature(model.forward).parameters)


def full_pass_file(cache_dir, model_info: dict, ids: list[int], window: int, stride: int):
    """Where the full model's pass over these token ids is cached: content-addressed by everything it depends on
    (the model's weights hash, dtype and device, the torch and transformers that ran it, the ids, the windows)."""
    import torch

    identity = [model_info[k] for k in ("fingerprint", "dtype", "device", "transformers")] + [torch.__version__]
    key = stable_hash([FULL_PASS_VERSION, identity, stable_hash(list(map(int, ids))), window, stride])
    return Path(cache_dir) / f"full-pass-{key[:20]}.safetensors"


FULL_PASS_VERSION = "1"  # part of the cache key: bump when what is cached changes


def token_divergence(full_model, quant_model, ids: list[int], window: int = 512, stride: int = 256,
                     full_cache=None) -> TokenDivergence:
    """Score token ids with both models window by window (`window_spans`) and compare their next-token
    distributions on every scored token.

    With `full_cache` (a file path, from `full_pass_file`), the full model's logits are its LM head applied to
    its last hidden state at the scored rows, and those hidden states are read from the file when it exists and
    written to it when not (safetensors, atomically; ~2 KB per token for a 576-wide model instead of 200 KB of
    logits): N quantized variants of one model then cost one full-model pass, and the run that wrote the cache
    and every run that reads it give the same numbers bit for bit (both apply the head to the same stored
    rows). They equal an uncached run (the model's own logits) to float rounding. A model that changes its
    logits after the head (soft-capping) is not cached."""
    import torch  # lazy: seconds to import

    head = _lm_head(full_model) if full_cache is not None else None  # without a cache: the model's own logits
    cached = _read_full_pass(full_cache) if head is not None else None
    stored = {}
    parts: dict[str, list] = {}
    with torch.inference_mode():
        for w, (begin, end, first_scored) in enumerate(window_spans(len(ids), window, stride)):
            rows = slice(first_scored - begin - 1, end - begin - 1)
            if head is None:
                x = torch.tensor([ids[begin:end]], device=next(full_model.parameters()).device)
                full_logits = full_model(input_ids=x).logits[0, rows].float().cpu().numpy()
            else:
                if cached is not None:
                    hidden = cached[f"window{w}"].to(next(head.parameters()).device)
                else:
                    x = torch.tensor([ids[begin:end]], device=next(full_model.parameters()).device)
                    hidden = _full_rows(full_model, head, x, rows)
                    stored[f"window{w}"] = hidden.detach().cpu().contiguous()
                full_logits = head(hidden).float().cpu().numpy()
            x = torch.tensor([ids[begin:end]], device=next(quant_model.parameters()).device)
            quant_logits = quant_model(input_ids=x).logits[0, rows].float().cpu().numpy()
            values = compare_logits(full_logits, quant_logits, ids[first_scored:end], workers=torch.get_num_threads())
            values["window"] = np.full(end - first_scored, w)
            for k, v in values.items():
                parts.setdefault(k, []).append(v)
    if stored and full_cache is not None:
        _write_full_pass(full_cache, stored)
    return TokenDivergence(**{k: np.concatenate(v) for k, v in parts.items()})


def _read_full_pass(path):
    """The cached hidden states ({window<i>: tensor}), or None when there is no (readable) cache file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not Path(path).is_file():
        return None
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError):  # a torn or foreign file: recompute (and rewrite) it
        return None


def _write_full_pass(path, tensors: dict) -> None:
    from safetensors.torch import save

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(path), save(tensors, metadata={"what": "quantconf full-model pass (LM head inputs)"}))


# ---------------------------------------------------------------------------------------------
# Statistics under stable names, each {estimate, ci}; intervals from a bootstrap over windows

KLD_QUANTILES = {"kld_median": 0.5, "kld_p90": 0.9, "kld_p99": 0.99, "kld_p999": 0.999}


def _statistics(td: TokenDivergence, rows: np.ndarray) -> dict[str, float]:
    kld = td.kld[rows]
    delta_p = td.p_quant[rows] - td.p_full[rows]
    nll_full, nll_quant = -np.log(td.p_full[rows]), -np.log(td.p_quant[rows])
    ln_ratio = float(nll_quant.mean() - nll_full.mean())  # ln PPL(quant) - ln PPL(full)
    return {"kld_mean": float(kld.mean()),
            **{name: float(np.quantile(kld, q)) for name, q in KLD_QUANTILES.items()},
            "kld_max": float(kld.max()), "kld_reverse_mean": float(td.kld_reverse[rows].mean()),
            "same_top": 100.0 * float(td.same_top[rows].mean()),
            "delta_p_mean": float(delta_p.mean()), "delta_p_rms": float(np.sqrt((delta_p ** 2).mean())),
            "ppl_ratio": float(np.exp(ln_ratio)), "ln_ppl_ratio": ln_ratio}


# The statistics that are a mean over tokens, or a monotone function of one: (per-token values, the function).
# Their intervals are studentized (bootstrap-t) over windows; the quantiles' and the maximum's are percentile.
def _mean_statistics(td: TokenDivergence) -> dict:
    delta_p = td.p_quant - td.p_full
    ln_ratio = np.log(td.p_full) - np.log(td.p_quant)  # per token: nll(quant) - nll(full)
    return {"kld_mean": (td.kld, None), "kld_reverse_mean": (td.kld_reverse, None),
            "same_top": (100.0 * td.same_top, None), "delta_p_mean": (delta_p, None),
            "delta_p_rms": (delta_p ** 2, lambda v: np.sqrt(np.maximum(v, 0.0))),
            "ln_ppl_ratio": (ln_ratio, None), "ppl_ratio": (ln_ratio, np.exp)}


def window_mean_interval(sums: np.ndarray, counts: np.ndarray, draws: np.ndarray, alpha: float = 0.05) -> list:
    """Studentized (bootstrap-t) interval of a mean over tokens grouped in windows: window w holds counts[w]
    tokens whose values add up to sums[w]; draws is (n_boot, n_windows) window indices, one resample per
    row. The mean is a ratio of sums, its standard error the cluster-robust one,
    sqrt(W / (W - 1) * sum_w (sums_w - mean * counts_w)^2) / sum_w counts_w; the interval is
    [mean - t_(1 - alpha/2) se, mean - t_(alpha/2) se] with t the resamples' (mean* - mean) / se*. With few
    windows and skewed values it covers better than the percentile interval (tests/test_divergence.py)."""
    w = len(sums)
    mean = sums.sum() / counts.sum()

    def se(s, c, m):
        return np.sqrt(((s - m[..., None] * c) ** 2).sum(-1) * w / (w - 1)) / c.sum(-1)

    se0 = float(se(sums, counts, np.asarray(mean)))
    s, c = sums[draws], counts[draws]
    means = s.sum(1) / c.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (means - mean) / se(s, c, means)
    t = t[np.isfinite(t)]  # a resample of identical windows has no spread
    if se0 == 0 or len(t) == 0:
        return [float(mean), float(mean)]
    hi_t, lo_t = np.quantile(t, [1 - alpha / 2, alpha / 2])
    return [float(mean - hi_t * se0), float(mean - lo_t * se0)]


def divergence_statistics(td: TokenDivergence, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """{name: {"estimate", "ci"}} for kld_mean, kld_median, kld_p90, kld_p99, kld_p999, kld_max,
    kld_reverse_mean, same_top (percent), delta_p_mean, delta_p_rms (probabilities, not percent),
    ppl_ratio and ln_ppl_ratio, plus "tokens" and "windows". Intervals come from a bootstrap over windows
    (tokens of one window share a context and are not independent; resampling whole windows keeps that):
    studentized for the means (kld_mean, kld_reverse_mean, same_top, delta_p_mean, ln_ppl_ratio) and their
    monotone functions (delta_p_rms, ppl_ratio: the function of the mean's interval), percentile for the
    quantiles and the maximum. With one window, or n_boot = 0, every ci is None. kld_max's interval is that
    of the largest value among resampled windows: it cannot exceed the observed maximum, read it as a
    description, not a bound."""
    if len(td) == 0:
        raise ValueError("no scored tokens")
    windows, index = np.unique(td.window, return_inverse=True)
    point = _statistics(td, np.arange(len(td)))
    out = {k: {"estimate": v, "ci": None} for k, v in point.items()}
    if n_boot > 0 and len(windows) > 1:
        draws = np.random.default_rng(seed).integers(0, len(windows), (n_boot, len(windows)))
        counts = np.bincount(index, minlength=len(windows)).astype(float)
        for name, (values, function) in _mean_statistics(td).items():
            ci = window_mean_interval(np.bincount(index, weights=values, minlength=len(windows)), counts, draws, alpha)
            out[name]["ci"] = [float(function(v)) for v in ci] if function else ci
        rows_of = [np.flatnonzero(index == i) for i in range(len(windows))]
        kld = [td.kld[r] for r in rows_of]
        values = np.array([[*np.quantile(sample, list(KLD_QUANTILES.values())), sample.max()]
                           for sample in (np.concatenate([kld[i] for i in row]) for row in draws)])
        for j, name in enumerate((*KLD_QUANTILES, "kld_max")):
            out[name]["ci"] = [float(np.quantile(values[:, j], alpha / 2)), float(np.quantile(values[:, j], 1 - alpha / 2))]
    return {**out, "tokens": int(len(td)), "windows": int(len(windows))}


CONFIDENCE_EDGES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


def divergence_by_confidence(td: TokenDivergence, edges=CONFIDENCE_EDGES, n_boot: int = 1000, seed: int = 0) -> list:
    """The statistics of `divergence_statistics` within bins of the full model's confidence on each token (its
    top token's probability; bins [lo, hi), the last closed): where does quantization move the distribution
    most, on tokens the full model was sure of or unsure of? One entry per non-empty bin: {lo, hi, tokens,
    windows, and each statistic's {estimate, ci}}; intervals from the same bootstrap over windows."""
    edges = np.asarray(edges, float)
    if edges.ndim != 1 or len(edges) < 2 or (np.diff(edges) <= 0).any():
        raise QuantconfError(f"confidence edges must increase, got {list(edges)}", param="edges")
    out = []
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:])):
        last = i == len(edges) - 2
        rows = np.flatnonzero((td.top_p_full >= lo) & ((td.top_p_full <= hi) if last else (td.top_p_full < hi)))
        if len(rows):
            out.append({"lo": float(lo), "hi": float(hi), **divergence_statistics(td.subset(rows), n_boot, seed)})
    return out


def _two_models(full: str | LoadedModel, quant: str | LoadedModel, load: LoadOptions) -> list[LoadedModel]:
    """Both models (specs loaded with `load`, or loaded models), refused unless they share a vocabulary."""
    set_threads(load.threads)
    models = [m if isinstance(m, LoadedModel) else load.load(m) for m in (full, quant)]
    if models[0].tokenizer.get_vocab() != models[1].tokenizer.get_vocab():
        raise QuantconfError(f"{models[1].info['spec']} and {models[0].info['spec']} have different vocabularies: "
                             "token-level divergence compares the same token ids", param="quant")
    return models


def text_divergence(full: str | LoadedModel, quant: str | LoadedModel, text: str = "pydoc", *, window: int = 512,
                    stride: int = 256, max_tokens: int = 16 * 512, n_boot: int = 1000,
                    load: LoadOptions = LoadOptions(), data: TaskOptions = TaskOptions(seed=0),
                    cache_dir=None) -> dict:
    """Divergence of model `quant` from model `full` (specs, loaded with `load`, or loaded models) on the
    first `max_tokens` tokens of text set `text` (drawn with `data.seed`; local files under `data.data_dir`),
    tokenized by the full model's tokenizer: {full, quant, text, source, tokens, window, stride, and the
    statistics of `divergence_statistics`}. The two models must share a vocabulary. `cache_dir`: where the
    full model's pass is cached (`token_divergence`), so several variants of one model read it once."""
    if n_boot < 0:
        raise QuantconfError(f"n_boot must be >= 0, got {n_boot}", param="n_boot")
    models = _two_models(full, quant, load)
    ids, source = text_ids(models[0].tokenizer, text, max_tokens, data)
    if len(ids) < 2:
        raise QuantconfError(f"text {text} has {len(ids)} token(s); at least 2 are needed", param="text")
    cache = full_pass_file(cache_dir, models[0].info, ids, window, stride) if cache_dir is not None else None
    td = token_divergence(models[0].model, models[1].model, ids, window=window, stride=stride, full_cache=cache)
    return {"full": models[0].info["spec"], "quant": models[1].info["spec"], "text": text, "source": source,
            "window": window, "stride": stride, **divergence_statistics(td, n_boot=n_boot, seed=data.seed),
            "by_full_confidence": divergence_by_confidence(td, n_boot=n_boot, seed=data.seed)}


# ---------------------------------------------------------------------------------------------
# Per question: the answer tokens' KL beside the choice-level JS distance


def question_divergence(full: LoadedModel, quant: LoadedModel, loaded: LoadedTask):
    """Per question of a task, the KL of its answer tokens and whether the answer flipped: one row per question
    (doc_id, kld, kld_gold, answer_tokens, choice_full, choice_quant, flipped, correct_to_wrong, js), as the
    task's kind defines them (`_choice_question_divergence`, `_generation_question_divergence`)."""
    why = kind_of_task(loaded.task).why_no_question_divergence(loaded)
    if why:
        raise QuantconfError(f"{loaded.task.name}: {why}; the per-question divergence reads the answer tokens of "
                             "questions with one gold answer (a flip is the chosen answer changing)", param="task")
    return QUESTION_DIVERGENCE[kind_of_task(loaded.task).name](full, quant, loaded)


def _choice_question_divergence(full: LoadedModel, quant: LoadedModel, loaded: LoadedTask):
    """Per question of a multiple-choice task, both models score every choice's answer tokens after the
    question's context (lm-eval's requests, one sequence per choice, left-truncated to the window); per
    answer token the KL(full || quant) over the whole vocabulary. One row per question: doc_id, kld (mean
    over all its choices' answer tokens), kld_gold (over the gold choice's), answer_tokens, each model's
    choice (argmax of the summed log-likelihoods), flipped (the choices differ), correct_to_wrong, and js
    (the JS distance between the two models' distributions over the choices, as `compare` computes it)."""
    import pandas as pd
    import torch  # lazy: seconds to import

    requests = task_requests(full.tokenizer, loaded, wants_bos(full.model))
    window = max_length(full.model)
    pad = 0  # any id: padded positions are masked out and come after the real ones
    rows, k = [], 0
    with torch.inference_mode():
        for q in loaded.questions:
            kld, logliks = [], {"full": [], "quant": []}
            reqs = requests[k:k + len(q.choices)]
            answer_logits = [_answer_logits(m.model, reqs, window, pad) for m in (full, quant)]
            for c, (ctx, cont) in enumerate(reqs):
                values = compare_logits(answer_logits[0][c], answer_logits[1][c], cont, workers=torch.get_num_threads())
                kld.append(values["kld"])
                logliks["full"].append(float(np.log(values["p_full"]).sum()))
                logliks["quant"].append(float(np.log(values["p_quant"]).sum()))
            k += len(q.choices)
            gold = q.gold
            pf, pq = (np.exp(np.array(v) - max(v)) for v in (logliks["full"], logliks["quant"]))
            choice_full, choice_quant = int(np.argmax(logliks["full"])), int(np.argmax(logliks["quant"]))
            rows.append({"doc_id": q.doc_id, "kld": float(np.concatenate(kld).mean()), "kld_gold": float(kld[gold].mean()),
                         "answer_tokens": int(sum(len(v) for v in kld)), "choice_full": choice_full,
                         "choice_quant": choice_quant, "flipped": choice_full != choice_quant,
                         "correct_to_wrong": choice_full == gold != choice_quant,
                         "js": float(js_distance((pf / pf.sum())[None], (pq / pq.sum())[None])[0])})
    return pd.DataFrame(rows)


def _generation_question_divergence(full: LoadedModel, quant: LoadedModel, loaded: LoadedTask):
    """Per prompt of a generation task: both models answer greedily (`generate_rows`, P(True) left out), then both
    score the *full* model's answer tokens after the prompt (as the full model read it), and kld is the mean KL(full
    || quant) over those tokens (NaN for an empty answer). flipped: the two answers differ modulo case and
    whitespace; correct_to_wrong: the task's grading says the full answer is right and the quantized one wrong.
    A generation has no choices: kld_gold and js are NaN, choice_full / choice_quant -1."""
    import pandas as pd
    import torch

    answers = [{r["doc_id"]: r for r in generate_rows(m, loaded, with_p_true=False)} for m in (full, quant)]
    add_bos, window = wants_bos(full.model), max_length(full.model)
    rows = []
    with torch.inference_mode():
        for p in loaded.questions:
            f, q = answers[0][p.doc_id], answers[1][p.doc_id]
            answer = list(f["token_ids"])
            kld = float("nan")
            if answer:
                context = encode_prompts(full, [p.context], len(answer), add_bos)[0]
                logits = [_answer_logits(m.model, [(context, answer)], window, 0)[0] for m in (full, quant)]
                kld = float(compare_logits(*logits, answer, workers=torch.get_num_threads())["kld"].mean())
            rows.append({"doc_id": p.doc_id, "kld": kld, "kld_gold": float("nan"), "answer_tokens": len(answer),
                         "choice_full": -1, "choice_quant": -1,
                         "flipped": normalise_answer(f["generation"]) != normalise_answer(q["generation"]),
                         "correct_to_wrong": bool(f["correct"] == 1 and q["correct"] == 0), "js": float("nan")})
    return pd.DataFrame(rows)


QUESTION_DIVERGENCE = {"multiple_choice": _choice_question_divergence,  # by task kind (kinds/): what a flip is
                       "generation": _generation_question_divergence}


def _answer_logits(model, requests, window: int, pad: int) -> list[np.ndarray]:
    """Per (context, continuation) request of one question, the logits that predict the continuation's tokens:
    every choice in one right-padded batch (lm-eval's left truncation to the window first)."""
    import torch

    seqs = [(ctx + cont)[-(window + 1):][:-1] for ctx, cont in requests]
    ids = torch.full((len(seqs), max(map(len, seqs))), pad)
    mask = torch.zeros_like(ids)
    for i, seq in enumerate(seqs):
        ids[i, :len(seq)], mask[i, :len(seq)] = torch.tensor(seq), 1
    logits = model(input_ids=ids, attention_mask=mask).logits
    return [logits[i, len(seq) - len(cont):len(seq)].float().numpy()
            for i, (seq, (_, cont)) in enumerate(zip(seqs, requests))]


def flip_auroc(score: np.ndarray, flipped: np.ndarray, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> dict:
    """P(score of a flipped question > score of an unflipped one), ties 1/2 (Mann-Whitney U / (n1 n0)), with DeLong's
    variance (the structural components of each flipped and each unflipped question) and a Wald interval on the
    logit scale, mapped back (so it stays inside (0, 1)). Its coverage, simulated (tests/test_divergence.py, 4,000
    studies each): 94.8-95.1% with 27 flips in 200 questions at AUROC .5-.7, 93.5% with 20 flips of 400, 90% with
    10 flips of 100 at AUROC .9; the percentile bootstrap used before covered 90.7-93.7% in the first cases. With
    fewer than 20 questions of either kind `warning` says the interval may be too narrow. Estimate NaN and ci None
    when no question (or every one) flipped, or with n_boot 0 (no intervals asked for; `seed` is unused: the
    interval is not resampled)."""
    from scipy.stats import norm, rankdata  # lazy: scipy.stats takes ~1 s to import

    score, flipped = np.asarray(score, float), np.asarray(flipped, bool)
    n1, n0 = int(flipped.sum()), int((~flipped).sum())
    out = {"estimate": float("nan"), "ci": None, "flipped": n1, "n": int(len(score))}
    if n1 == 0 or n0 == 0:
        return out
    ranks = rankdata(score)
    per_flipped = (ranks[flipped] - rankdata(score[flipped])) / n0  # share of unflipped below each (ties 1/2)
    per_unflipped = 1 - (ranks[~flipped] - rankdata(score[~flipped])) / n1  # share of flipped above each
    out["estimate"] = float(per_flipped.mean())
    if n_boot <= 0 or n1 < 2 or n0 < 2:
        return out
    var = per_flipped.var(ddof=1) / n1 + per_unflipped.var(ddof=1) / n0
    edge = 0.5 / (n1 * n0)  # an AUROC of exactly 0 or 1 has no logit: the nearest attainable half-step
    a = min(max(out["estimate"], edge), 1 - edge)
    half = float(norm.ppf(1 - alpha / 2)) * np.sqrt(var) / (a * (1 - a))
    logit = np.log(a / (1 - a))
    out["ci"] = [float(1 / (1 + np.exp(-(logit - half)))), float(1 / (1 + np.exp(-(logit + half))))]
    if min(n1, n0) < 20:
        out["warning"] = (f"{min(n1, n0)} {'flipped' if n1 < n0 else 'unflipped'} questions: the interval may be "
                          "too narrow (simulated coverage 90% with 10)")
    return out


def task_divergence(full: str | LoadedModel, quant: str | LoadedModel, task: str, *, n_boot: int = 1000,
                    load: LoadOptions = LoadOptions(), data: TaskOptions = TaskOptions(seed=0)) -> dict:
    """`question_divergence` of two models (specs, loaded with `load`, or loaded models) on a task (loaded with
    `data`), and whether the answer tokens' KL tells which answers flipped: {full, quant, task, n, flipped,
    correct_to_wrong, kld_mean, js_mean, auroc_kld_flip, auroc_js_flip (each {estimate, ci, flipped, n}),
    spearman_kld_js, questions (one record per question)}."""
    models = _two_models(full, quant, load)
    df = question_divergence(*models, load_task(task, data_dir=data.data_dir, limit=data.limit, seed=data.seed))
    return {"full": models[0].info["spec"], "quant": models[1].info["spec"], "task": task,
            **question_summary(df, n_boot, data.seed)}


def question_summary(df, n_boot: int = 1000, seed: int = 0) -> dict:
    """What `question_divergence`'s rows say together: {n, flipped, correct_to_wrong, kld_mean, js_mean,
    auroc_kld_flip, auroc_js_flip (each {estimate, ci, flipped, n}), spearman_kld_js, questions (the rows)}."""
    from scipy.stats import spearmanr  # lazy: scipy.stats takes ~1 s to import

    flipped = df["flipped"].to_numpy()

    def auroc(column):  # over the questions that have the score (an empty answer has no KL; a generation no JS)
        keep = np.isfinite(df[column].to_numpy(float))
        return flip_auroc(df[column].to_numpy(float)[keep], flipped[keep], n_boot, seed)

    both = np.isfinite(df["kld"].to_numpy(float)) & np.isfinite(df["js"].to_numpy(float))
    return {"n": len(df), "flipped": int(flipped.sum()), "correct_to_wrong": int(df["correct_to_wrong"].sum()),
            "kld_mean": float(df["kld"].mean()), "js_mean": float(df["js"].mean()),
            "auroc_kld_flip": auroc("kld"), "auroc_js_flip": auroc("js"),
            "spearman_kld_js": float(spearmanr(df["kld"][both], df["js"][both]).statistic) if both.sum() > 2
            else float("nan"),
            "questions": df.to_dict(orient="records")}
