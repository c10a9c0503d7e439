"""Held-out perplexity of a model on a text set (Hugging Face's sliding-window recipe).

`perplexity` is the pure computation on token ids; `text_perplexity` loads a model spec and a text
set (any calibration-data name: pydoc, file:PATH, c4:PATH, ...) and returns the record that
`quantconf ppl` prints and study `ppl` steps store.
"""

from __future__ import annotations

import numpy as np

from quantconf.models import LoadedModel, LoadOptions
from quantconf.runtime import set_threads
from quantconf.quantizers.calib_data import calib_text
from quantconf.tasks import TaskOptions


def perplexity(model, ids: list[int], window: int = 512, stride: int = 256) -> float:
    """Sliding-window perplexity: windows of `window` tokens moved by `stride`; each window scores
    only the tokens not scored by the previous one, with the rest as context. stride = window gives
    disjoint chunks."""
    import torch  # lazy: seconds to import; `import quantconf` does not need it

    nll, count, prev_end = 0.0, 0, 0
    with torch.inference_mode():
        for begin in range(0, len(ids), stride):
            end = min(begin + window, len(ids))
            target_len = end - prev_end
            x = torch.tensor([ids[begin:end]], device=next(model.parameters()).device)
            logits = model(input_ids=x).logits[0, :-1].float()
            logp = torch.log_softmax(logits, -1).gather(-1, x[0, 1:, None])[:, 0]
            scored = logp[-target_len:] if target_len < len(logp) else logp
            nll -= scored.sum().item()
            count += len(scored)
            prev_end = end
            if end == len(ids):
                break
    return float(np.exp(nll / count))


def text_perplexity(model: str | LoadedModel, text: str = "pydoc", *, window: int = 512, stride: int = 256,
                    max_tokens: int = 16 * 512, load: LoadOptions = LoadOptions(),
                    data: TaskOptions = TaskOptions(seed=0)) -> dict:
    """Perplexity of `model` (spec, loaded with `load`, or a loaded model) on the first `max_tokens`
    tokens of text set `text` (drawn with `data.seed`; local files under `data.data_dir`)."""
    set_threads(load.threads)
    lm = model if isinstance(model, LoadedModel) else load.load(model)
    body, source = calib_text(text, data.seed, data.data_dir)
    ids = lm.tokenizer(body, add_special_tokens=False)["input_ids"][:max_tokens]
    return {"model": lm.info["spec"], "text": text, "source": source, "tokens": len(ids), "window": window,
            "stride": stride, "perplexity": perplexity(lm.model, ids, window=window, stride=stride)}
