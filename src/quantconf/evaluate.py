"""Evaluate one model on multiple-choice tasks: questions -> per-choice log-likelihoods.

One row per question, as written by `predictions.write_predictions`:
doc_id, task, context, choices, gold, loglik, n_tokens, n_chars, n_bytes, is_greedy.
`n_chars`/`n_bytes` are lengths of the choice text without the delimiter, which is what
lm-eval's acc_norm divides by.
"""

from __future__ import annotations

import pandas as pd

from quantconf.scoring import encode_pair, score_questions, score_requests, wants_bos

SCORERS = ("packed", "naive")
from quantconf.tasks import LoadedTask


def task_requests(tokenizer, loaded: LoadedTask, add_bos: bool) -> list[tuple[list[int], list[int]]]:
    delim = loaded.task.target_delimiter
    return [encode_pair(tokenizer, q.context, delim + c, add_bos) for q in loaded.questions for c in q.choices]


def evaluate_task(lm, loaded: LoadedTask, batch_size: int = 16, progress: bool = False,
                  scorer: str = "packed") -> pd.DataFrame:
    """Score every choice of every question. `scorer`: "packed" (context once per question) or
    "naive" (one sequence per choice); both agree to float rounding."""
    add_bos = wants_bos(lm.model, lm.tokenizer)
    requests = task_requests(lm.tokenizer, loaded, add_bos)
    if scorer == "naive":
        scored = score_requests(lm.model, requests, batch_size=batch_size, progress=progress, desc=loaded.task.name)
    elif scorer == "packed":
        groups, k = [], 0
        for q in loaded.questions:
            reqs = requests[k:k + len(q.choices)]
            k += len(q.choices)
            if any(ctx != reqs[0][0] for ctx, _ in reqs):  # cannot happen with encode_pair; be safe
                raise ValueError(f"{loaded.task.name} doc {q.doc_id}: choices disagree on the context tokens")
            groups.append((reqs[0][0], [cont for _, cont in reqs]))
        scored = [s for per_q in score_questions(lm.model, groups, batch_size=batch_size, progress=progress,
                                                 desc=loaded.task.name) for s in per_q]
    else:
        raise ValueError(f"scorer must be one of {SCORERS}, got {scorer!r}")
    rows, k = [], 0
    for q in loaded.questions:
        s = scored[k:k + len(q.choices)]
        k += len(q.choices)
        rows.append({
            "doc_id": q.doc_id,
            "task": loaded.task.name,
            "context": q.context,
            "choices": list(q.choices),
            "gold": q.gold,
            "loglik": [x.loglik for x in s],
            "n_tokens": [x.n_tokens for x in s],
            "n_chars": [len(c) for c in q.choices],
            "n_bytes": [len(c.encode("utf-8")) for c in q.choices],
            "is_greedy": [x.is_greedy for x in s],
        })
    return pd.DataFrame(rows)
