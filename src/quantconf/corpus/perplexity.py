"""Held-out perplexity of a model on a text set (Hugging Face's sliding-window recipe).

`perplexity` is the pure computation on token ids; `text_perplexity` loads a model spec and a text
set (any calibration-data name: pydoc, file:PATH, c4:PATH, ...) and returns the record that
`quantconf ppl` prints and study `ppl` steps store.
"""

from __future__ import annotations

import numpy as np

from quantconf.errors import QuantconfError
from quantconf.models.loading import LoadedModel, LoadOptions
from quantconf.models.runtime import set_threads
from quantconf.quantizers.calib_data import calib_text
from quantconf.tasks import TaskOptions


def window_spans(n_tokens: int, window: int = 512, stride: int = 256) -> list[tuple[int, int, int]]:
    """The sliding-window rule `perplexity` and `divergence` share: (begin, end, first_scored) of each
    window of at most `window` tokens, moved by `stride`. A window scores the tokens from first_scored to
    end that the previous one did not (at least the window's second token: its first has no context), with
    the tokens before them as context; stride = window gives disjoint chunks."""
    if window < 2 or not 1 <= stride <= window:
        raise QuantconfError(f"need window >= 2 and 1 <= stride <= window (got window {window}, stride {stride})",
                             param="stride")
    spans, prev_end = [], 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + window, n_tokens)
        first_scored = max(prev_end, begin + 1)
        if first_scored < end:
            spans.append((begin, end, first_scored))
        prev_end = end
        if end == n_tokens:
            break
    return spans


def perplexity(model, ids: list[int], window: int = 512, stride: int = 256) -> float:
    """Sliding-window perplexity over the windows of `window_spans`."""
    import torch  # lazy: seconds to import; `import quantconf` does not need it

    nll, count = 0.0, 0
    with torch.inference_mode():
        for begin, end, first_scored in window_spans(len(ids), window, stride):
            x = torch.tensor([ids[begin:end]], device=next(model.parameters()).device)
            logits = model(input_ids=x).logits[0, :-1].float()
            logp = torch.log_softmax(logits, -1).gather(-1, x[0, 1:, None])[:, 0]
            scored = logp[first_scored - begin - 1:]
            nll -= scored.sum().item()
            count += len(scored)
    return float(np.exp(nll / count))


def text_ids(tokenizer, text: str, max_tokens: int, data: TaskOptions) -> tuple[list[int], str]:
    """(the first `max_tokens` token ids of text set `text`, its source description): the text `ppl` and
    `divergence` score, drawn with `data.seed`, local files under `data.data_dir`."""
    body, source = calib_text(text, data.seed, data.data_dir)
    return tokenizer(body, add_special_tokens=False)["input_ids"][:max_tokens], source


def text_perplexity(model: str | LoadedModel, text: str = "pydoc", *, window: int = 512, stride: int = 256,
                    max_tokens: int = 16 * 512, load: LoadOptions = LoadOptions(),
                    data: TaskOptions = TaskOptions(seed=0)) -> dict:
    """Perplexity of `model` (spec, loaded with `load`, or a loaded model) on the first `max_tokens`
    tokens of text set `text` (drawn with `data.seed`; local files under `data.data_dir`)."""
    set_threads(load.threads)
    lm = model if isinstance(model, LoadedModel) else load.load(model)
    ids, source = text_ids(lm.tokenizer, text, max_tokens, data)
    return {"model": lm.info["spec"], "text": text, "source": source, "tokens": len(ids), "window": window,
            "stride": stride, "perplexity": perplexity(lm.model, ids, window=window, stride=stride)}
