"""Which sampled answers say the same thing: the semantic clusters and the similarity graph that the
sampling-based estimators (analysis/sampling_estimators.py) read.

Three rules, named by `--equivalence`:

  answer       the task's own normalised answer (`LoadedTask.answer_key`): arithmetic_gen's stripped text,
               an lm-eval exact_match task's filtered response (gsm8k's extracted number) normalised as
               its exact_match metric normalises. For such tasks "the same answer" *is* semantic
               equivalence. Similarity: 1 for the same answer, else 0.
  rouge[:T]    ROUGE-L F1 >= T between the two answers (default T = ROUGE_THRESHOLD); similarity: ROUGE-L.
  nli:MODEL    bidirectional entailment (Kuhn et al. 2023): a and b are equivalent when an NLI model's most
               probable label is entailment for (a, b) and for (b, a); similarity: P(entailment) for each
               ordered pair (the graph estimators symmetrise it, as LM-Polygraph does). MODEL is a Hugging
               Face id or a local folder of a sequence-classification model whose labels name entailment.
  auto         `answer` where the task has an answer key, else `rouge`.

Clusters are formed as LM-Polygraph's semantic_classes_entail forms them: each sample, in order, joins the
first cluster whose first member it is equivalent to, else starts a new one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from quantconf.analysis.generation import rouge_l
from quantconf.errors import QuantconfError

ROUGE_THRESHOLD = 0.5  # two answers sharing a longest common subsequence of half their words say the same


@dataclass(frozen=True)
class Grouping:
    """One prompt's samples grouped: what the predictions keep per prompt."""

    clusters: list[int]  # the cluster of each sample
    similarity: list[float]  # K x K, row-major: similarity[i * K + j] of sample i to sample j
    greedy_agreement: float  # the share of samples equivalent to the greedy answer
    lexical_similarity: float  # mean ROUGE-L (rouge_score, stemmed) over pairs of samples, as LM-Polygraph


def parse(spec: str, has_answer_key: bool) -> tuple[str, str]:
    """(rule, argument) of an --equivalence value, `auto` resolved for a task."""
    spec = (spec or "auto").strip()
    rule, _, arg = spec.partition(":")
    if rule == "auto":
        return ("answer", "") if has_answer_key else ("rouge", str(ROUGE_THRESHOLD))
    if rule == "answer":
        if not has_answer_key:
            raise QuantconfError("--equivalence answer: this task has no normalised answer (only tasks graded by "
                                 "exact match do); use rouge[:T] or nli:MODEL", param="equivalence")
        return rule, ""
    if rule == "rouge":
        try:
            threshold = float(arg) if arg else ROUGE_THRESHOLD
        except ValueError:
            threshold = float("nan")
        if not 0 < threshold <= 1:
            raise QuantconfError(f"--equivalence {spec}: the ROUGE-L threshold must be a number in (0, 1]",
                                 param="equivalence")
        return rule, str(threshold)
    if rule == "nli" and arg:
        return rule, arg
    raise QuantconfError(f"unknown --equivalence {spec!r}; use auto, answer, rouge[:T] or nli:MODEL",
                         param="equivalence")


def clusters_of(equivalent: Callable[[int, int], bool], k: int) -> list[int]:
    """LM-Polygraph's greedy clustering (module docstring)."""
    firsts: list[int] = []
    out = []
    for i in range(k):
        for c, first in enumerate(firsts):
            if equivalent(first, i):
                out.append(c)
                break
        else:
            out.append(len(firsts))
            firsts.append(i)
    return out


def lexical_similarity(texts: list[str]) -> float:
    """LM-Polygraph's LexicalSimilarity (rougeL) with the sign of a confidence: the mean ROUGE-L F1 of
    every pair of samples, rouge_score's tokenizer with the Porter stemmer."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    pairs = [scorer.score(texts[i], texts[j])["rougeL"].fmeasure
             for i in range(len(texts)) for j in range(i + 1, len(texts))]
    return float(np.mean(pairs)) if pairs else float("nan")


class NLIJudge:
    """P(entailment) of ordered pairs of answers under a sequence-classification NLI model."""

    def __init__(self, model_id: str, trust_remote_code: bool = False):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_id, trust_remote_code=trust_remote_code)
            self.model = AutoModelForSequenceClassification.from_pretrained(
                model_id, trust_remote_code=trust_remote_code, use_safetensors=True).eval()
        except Exception as e:
            raise QuantconfError(f"--equivalence nli:{model_id}: cannot load the NLI model "
                                 f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})",
                                 param="equivalence") from None
        labels = {str(v).lower(): int(k) for k, v in self.model.config.id2label.items()}
        entail = [i for name, i in labels.items() if "entail" in name and "not" not in name]
        if len(entail) != 1:
            raise QuantconfError(f"--equivalence nli:{model_id}: its labels {sorted(labels)} do not name one "
                                 "entailment label", param="equivalence")
        self.entailment = entail[0]
        self.torch = torch

    def probabilities(self, premises: list[str], hypotheses: list[str], batch_size: int = 32) -> tuple:
        """(P(entailment), whether entailment is the most probable label) of each (premise, hypothesis)."""
        torch = self.torch
        p_entail, is_entail = [], []
        with torch.no_grad():
            for start in range(0, len(premises), batch_size):
                enc = self.tokenizer(premises[start:start + batch_size], hypotheses[start:start + batch_size],
                                     return_tensors="pt", padding=True, truncation=True)
                probs = torch.softmax(self.model(**enc).logits.float(), -1)
                p_entail += probs[:, self.entailment].tolist()
                is_entail += (probs.argmax(-1) == self.entailment).tolist()
        return np.asarray(p_entail), np.asarray(is_entail, bool)


def group(rule: str, arg: str, greedy: str, samples: list[str], keys: list[str] | None = None,
          greedy_key: str | None = None, judge: NLIJudge | None = None) -> Grouping:
    """One prompt's samples grouped by a rule of the module docstring (`keys`: the samples' answer keys)."""
    k = len(samples)
    if rule == "answer":
        sim = np.array([[float(a == b) for b in keys] for a in keys])
        equivalent = lambda i, j: keys[i] == keys[j]  # noqa: E731
        agree = np.mean([key == greedy_key for key in keys])
    elif rule == "rouge":
        threshold = float(arg)
        sim = np.array([[rouge_l(a, b) for b in samples] for a in samples])
        equivalent = lambda i, j: sim[i, j] >= threshold  # noqa: E731
        agree = np.mean([rouge_l(greedy, s) >= threshold for s in samples])
    elif rule == "nli":
        texts = samples + [greedy]
        premises = [a for a in texts for _ in texts]
        hypotheses = [b for _ in texts for b in texts]
        p, is_e = judge.probabilities(premises, hypotheses)
        p, is_e = p.reshape(k + 1, k + 1), is_e.reshape(k + 1, k + 1)
        both = is_e & is_e.T
        sim = p[:k, :k]
        equivalent = lambda i, j: bool(both[i, j])  # noqa: E731
        agree = float(both[k, :k].mean())
    else:
        raise QuantconfError(f"unknown equivalence rule {rule!r}", param="equivalence")
    return Grouping(clusters_of(equivalent, k), [float(x) for x in sim.ravel()], float(agree),
                    lexical_similarity(samples))
