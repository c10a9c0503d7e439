"""K sampled answers per prompt beside the greedy one: what sampling-based uncertainty estimators read.

A prompt is read once (one prefill; a batch's common few-shot prefix once for the batch, as greedy
decoding does), its KV cache is then repeated K times and the K continuations are decoded together, one
token per step, each stopping at EOS, at its budget or at a stop string, and cut as lm-eval cuts.

Each sample draws its tokens from its own random stream, seeded by (sample seed, task, doc_id, sample
number): a sample's text depends on nothing else (not the batch it ran in, a shard, the other prompts), so
an interrupted or sharded run and `K` separate `generate` calls (benchmarks/sampling.py) write the same
answers. A token is drawn by the Gumbel-max trick: argmax over the vocabulary of

    log p_T,top-p(token) + G,   G = -log(-log U),  U ~ Uniform(0, 1) from the sample's stream

which is a draw from the tempered, top-p-filtered distribution (temperature divides the log-probabilities;
top-p keeps the most probable tokens whose mass first reaches `top_p`, at least one, as transformers'
TopPLogitsWarper). The same rule as a transformers LogitsProcessor (`GumbelSampler.processor`) turns
`model.generate(do_sample=False)` into the same sampler, which is how the benchmark and the tests check that
the batched sampler writes what K separate generate calls write.

Each kept token's log-probability and the entropy recorded are the *model's* (temperature 1, no top-p):
the estimators (semantic entropy, Monte-Carlo sequence entropy) read p(answer | prompt) of the model.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from quantconf.errors import QuantconfError

SAMPLER_VERSION = "1"  # part of an evaluation's reuse key: bump when a sample's text or tokens can change


@dataclass(frozen=True)
class SamplingConfig:
    """How the K answers per prompt are drawn (recorded in the run's manifest)."""

    k: int = 10
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    equivalence: str = "auto"  # which answers are "the same" (inference/equivalence.py)

    def __post_init__(self):
        if not isinstance(self.k, int) or self.k < 2:
            raise QuantconfError(f"samples must be an integer >= 2 (the estimators compare answers), got {self.k!r}",
                                 param="samples")
        if not self.temperature > 0:
            raise QuantconfError(f"temperature must be > 0, got {self.temperature!r}", param="temperature")
        if not 0 < self.top_p <= 1:
            raise QuantconfError(f"top_p must be in (0, 1], got {self.top_p!r}", param="top_p")

    @classmethod
    def from_dict(cls, fields: dict) -> "SamplingConfig":
        """The config `as_dict` wrote (its sampler_version is a record, not a setting)."""
        return cls(**{k: v for k, v in fields.items() if k != "sampler_version"})

    def as_dict(self) -> dict:
        return {"k": self.k, "temperature": self.temperature, "top_p": self.top_p, "seed": self.seed,
                "equivalence": self.equivalence, "sampler_version": SAMPLER_VERSION}


def sample_stream_seed(seed: int, task: str, doc_id, sample: int) -> int:
    """The seed of one sample's random stream: a hash (stable across processes and machines) of what
    identifies it."""
    digest = hashlib.sha256(f"{seed}\0{task}\0{doc_id!r}\0{sample}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def warp(logp, temperature: float, top_p: float):
    """Log-probabilities (rows, vocab) tempered and top-p filtered (-inf outside the nucleus), as
    transformers' TemperatureLogitsWarper then TopPLogitsWarper (min_tokens_to_keep=1)."""
    import torch

    scores = logp / temperature
    if top_p < 1:
        sorted_scores, order = torch.sort(scores, descending=False, dim=-1)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative <= (1 - top_p)
        remove[..., -1:] = False
        scores = scores.masked_fill(remove.scatter(1, order, remove), float("-inf"))
    return scores


class GumbelSampler:
    """The `choose` of `_generate_batch` for sampling: row r draws from the stream seeded `row_seeds[r]`."""

    def __init__(self, config: SamplingConfig, row_seeds: list[int]):
        import torch

        self.config = config
        self.streams = [torch.Generator().manual_seed(s) for s in row_seeds]

    def gumbel(self, row: int, vocab: int):
        import torch

        u = torch.rand(vocab, generator=self.streams[row], dtype=torch.float64)
        return -torch.log(-torch.log(u.clamp(min=1e-300)))

    def perturbed(self, logp, rows: list[int]):
        """Tempered, top-p-filtered log-probabilities (rows, vocab) plus each row's next Gumbel draw: their argmax
        is the sample (one definition for the batched decoder and the `generate` processor)."""
        import torch

        scores = warp(logp, self.config.temperature, self.config.top_p).double()
        return scores + torch.stack([self.gumbel(r, logp.shape[-1]) for r in rows]).to(scores.device)

    def __call__(self, logp, rows: list[int]):
        return self.perturbed(logp, rows).argmax(-1)

    def processor(self, row: int = 0):
        """A transformers LogitsProcessor drawing like row `row` of this sampler, for
        `model.generate(do_sample=False, logits_processor=[...])` of one prompt."""
        import torch
        from transformers import LogitsProcessor

        sampler = self

        class _Gumbel(LogitsProcessor):
            def __call__(self, input_ids, scores):
                return sampler.perturbed(torch.log_softmax(scores.float(), dim=-1), [row])

        return _Gumbel()
