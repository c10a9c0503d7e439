"""The registry of metrics and confidence measures: each declared once, here; every list of metric names
elsewhere (the CLI's tables, a study's summary columns, the compared deltas, the noise floor's effects,
the recalibration table, the docs' metric table, `quantconf measures`) is derived from it.

A `Metric` is a number computed over a task's questions (accuracy, a calibration error, ...): its name (the
key in every result), what it is, which task kinds it is computed for, which way is better, its range, its
reference, and where it is used (`uses`). How it is computed lives where all metrics are computed together
from one set of bootstrap weights (`metrics.metrics_weighted` for multiple choice,
`generation.binary_metrics_weighted` for a generation's confidence measures); `computed_by` names it.

A `ConfidenceMeasure` is a number per generated answer that should be high when the answer is right; its
`compute` reads it from a predictions frame. A new measure is one `register_measure(...)` call (its metrics,
comparison, noise floor, CLI table and report rows follow from the registry).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from quantconf.analysis import sampling_estimators

# where a metric appears: the values of Metric.uses
USES = {
    "summary": "a study's metric tables and summary.csv / summary.json",
    "cli": "the table `quantconf metrics` prints",
    "delta": "full vs quantized (`compare`): delta_<name> with a paired bootstrap interval",
    "effect": "the noise floor's two-way effects (questions x replicates)",
    "recalibration": "before / after temperature scaling",
    "measure": "computed for each confidence measure of a generation",
    "ranking": "the same, for a measure that is not a probability (a ranking score)",
    "measure_delta": "full vs quantized, per confidence measure of a generation",
    "helm": "HELM's calibration battery (`--compat helm`; analysis/helm.py), with bootstrap intervals",
}


@dataclass(frozen=True)
class Metric:
    name: str
    what: str
    better: str  # "higher", "lower", or "" (descriptive: neither way is better)
    range: str
    reference: str
    uses: dict = field(default_factory=dict)  # task kind -> frozenset of USES keys: the kinds it is computed for
    computed_by: str = "metrics.metrics_weighted"
    family: str = ""  # "" computed with every task's metrics; "helm": only with --compat helm (its own function)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(self.uses)


@dataclass(frozen=True)
class ConfidenceMeasure:
    name: str
    what: str
    probability: bool  # a probability (calibration metrics apply) or only a ranking score
    compute: Callable[[pd.DataFrame], np.ndarray]
    reference: str
    headline_rank: int | None = None  # the headline measure of a task: the lowest rank it has values for
    needs: tuple[str, ...] = ()  # columns a frame must have for the measure to exist (sampling: "samples")


METRICS: dict[str, Metric] = {}
MEASURES: dict[str, ConfidenceMeasure] = {}


def register_metric(name: str, what: str, better: str, range: str, reference: str, uses=(), generation_uses=(),
                    kinds=("multiple_choice",), computed_by: str = "metrics.metrics_weighted",
                    family: str = "") -> Metric:
    """`uses` apply to every kind in `kinds`; `generation_uses`, to generations (which then are one of its kinds)."""
    if name in METRICS:
        raise ValueError(f"metric {name!r} registered twice")
    unknown = (set(uses) | set(generation_uses)) - set(USES)
    if unknown or better not in ("higher", "lower", ""):
        raise ValueError(f"metric {name!r}: unknown uses {sorted(unknown)} or better={better!r}")
    by_kind = {kind: frozenset(uses) for kind in kinds}
    by_kind.update({"generation": frozenset(generation_uses)} if generation_uses else {})
    METRICS[name] = Metric(name, what, better, range, reference, by_kind, computed_by, family)
    return METRICS[name]


def register_measure(name: str, what: str, probability: bool, compute: Callable[[pd.DataFrame], np.ndarray],
                     reference: str, headline_rank: int | None = None, needs: tuple[str, ...] = ()) -> ConfidenceMeasure:
    if name in MEASURES:
        raise ValueError(f"confidence measure {name!r} registered twice")
    MEASURES[name] = ConfidenceMeasure(name, what, probability, compute, reference, headline_rank, tuple(needs))
    return MEASURES[name]


def metric_names(use: str, kind: str = "multiple_choice") -> list[str]:
    """The registered metrics with this use for this task kind, in registry order."""
    if use not in USES:
        raise ValueError(f"unknown use {use!r}; known: {', '.join(USES)}")
    return [m.name for m in METRICS.values() if use in m.uses.get(kind, ())]


def computed_for(kind: str, family: str = "") -> list[str]:
    """Every registered metric of a family computed for a task kind, in registry order."""
    return [m.name for m in METRICS.values() if kind in m.uses and m.family == family]


def _column(name: str) -> Callable[[pd.DataFrame], np.ndarray]:
    return lambda df: pd.to_numeric(df[name], errors="coerce").to_numpy(float)


# ---------------------------------------------------------------------------------------------
# Metrics, in the order of a study's summary table. MC: multiple choice (top-choice confidence);
# G: generations (per confidence measure against the task's 0/1 correctness).

NIXON = "Nixon et al. 2019, Measuring Calibration in Deep Learning"
GUO = "Guo et al. 2017, On Calibration of Modern Neural Networks"
GEIFMAN = "Geifman et al. 2019, Bias-Reduced Uncertainty Estimation for Deep Neural Classifiers"
MURPHY = "Murphy 1973, A New Vector Partition of the Probability Score"
ALL = ("summary", "cli", "delta", "effect", "recalibration")

register_metric("acc", "accuracy: the top choice is gold (G: the task's 0/1 correctness)", "higher", "[0, 1]",
                "lm-evaluation-harness acc", uses=ALL, generation_uses=("measure", "ranking", "effect"))
register_metric("acc_norm", "accuracy with log-likelihoods divided by the choice's length in characters", "higher",
                "[0, 1]", "lm-evaluation-harness acc_norm", uses=("summary", "cli"))
register_metric("nll", "negative log-likelihood of the gold answer (exact log-softmax; G: binary log loss)", "lower",
                "[0, inf)", "", uses=ALL, generation_uses=("cli", "measure", "effect"))
register_metric("brier", "Brier score: squared error of the probability vector against the gold one-hot", "lower",
                "[0, 2]", "Brier 1950", uses=ALL, generation_uses=("cli", "measure", "measure_delta", "effect"))
register_metric("ece", "expected calibration error, equal-width bins of the top-choice confidence", "lower", "[0, 1]",
                GUO, uses=ALL, generation_uses=("cli", "measure", "measure_delta", "effect"))
register_metric("ace", "adaptive calibration error: equal-mass ranges, class-wise", "lower", "[0, 1]", NIXON,
                uses=("summary", "cli", "delta", "effect", "recalibration"))
register_metric("mce", "maximum calibration error: the largest |accuracy - confidence| over non-empty bins", "lower",
                "[0, 1]", GUO, uses=("summary", "cli"), generation_uses=("measure",))
register_metric("conf", "mean top-choice confidence (G: mean of the measure)", "", "[0, 1]", "",
                uses=("summary", "cli", "delta"), generation_uses=("cli", "measure", "measure_delta"))
register_metric("conf_true", "mean probability of the gold answer", "higher", "[0, 1]", "",
                uses=("summary", "cli", "delta", "effect"))
register_metric("entropy", "mean entropy of the choice distribution (nats)", "", "[0, ln k]", "",
                uses=("summary", "cli"))
register_metric("smece", "smooth ECE (kernel-smoothed reliability; bandwidth chosen on the full sample)", "lower",
                "[0, 1]", "Błasiok & Nakkiran 2023, Smooth ECE", uses=ALL,
                generation_uses=("cli", "measure", "measure_delta", "effect"))
register_metric("ece_sweep", "ECE with the largest bin count keeping accuracy monotone in confidence", "lower",
                "[0, 1]", "Roelofs et al. 2022, Mitigating bias in calibration error estimation",
                uses=("summary", "cli", "delta"))
register_metric("tace", "thresholded ACE: class probabilities above 1e-2 only", "lower", "[0, 1]", NIXON,
                uses=("summary", "cli", "delta"))
register_metric("auroc", "AUROC of confidence as a detector of its own correctness (Mann-Whitney)", "higher",
                "[0, 1]", "Hendrycks & Gimpel 2017", uses=("summary", "cli", "delta", "effect"),
                generation_uses=("cli", "measure", "ranking", "measure_delta", "effect"))
register_metric("aurc", "area under the risk-coverage curve", "lower", "[0, 1]", GEIFMAN,
                uses=("summary", "cli", "delta", "effect"), generation_uses=("measure", "ranking"))
register_metric("eaurc", "excess AURC over a perfect ranking of the same accuracy", "lower", "[0, 1]", GEIFMAN,
                uses=("summary", "cli", "delta"), generation_uses=("cli", "measure", "ranking"))
register_metric("prr", "prediction rejection ratio: (AURC of a random order - AURC) / (random - perfect order); 1 "
                "perfect, 0 no better than chance", "higher", "(-inf, 1]",
                "Malinin et al. 2017; LM-Polygraph's PRR (PredictionRejectionArea, normalised)", kinds=("generation",),
                generation_uses=("cli", "measure", "ranking", "measure_delta"),
                computed_by="generation.binary_metrics_weighted")
register_metric("brier_reliability", "Murphy's reliability term of the Brier score (binned)", "lower", "[0, 1]",
                MURPHY, uses=("summary", "cli", "delta"))
register_metric("brier_resolution", "Murphy's resolution term of the Brier score (binned)", "higher", "[0, 1]",
                MURPHY, uses=("summary", "cli", "delta"))
register_metric("brier_uncertainty", "Murphy's uncertainty term of the Brier score", "", "[0, 1]", MURPHY,
                uses=("summary", "cli"))
register_metric("entropy_bits", "mean entropy of the choice distribution (bits)", "", "[0, log2 k]", "")
register_metric("conf_correct", "mean confidence on correctly answered questions", "", "[0, 1]", "")
register_metric("conf_wrong", "mean confidence on wrongly answered questions", "", "[0, 1]", "")
register_metric("sce", "static calibration error: class-wise equal-width ECE", "lower", "[0, 1]", NIXON,
                uses=("cli",))
register_metric("rmsce", "root-mean-square calibration error, equal-width bins", "lower", "[0, 1]",
                "Hendrycks et al. 2019", uses=("cli",))
register_metric("l2_debiased", "debiased squared L2 calibration error, equal-width bins", "lower", "[0, 1]",
                "Kumar et al. 2019, Verified Uncertainty Calibration", uses=("effect",), generation_uses=("effect",))
register_metric("brier_within_bin", "the within-bin remainder that makes Murphy's identity exact", "", "[0, 1]",
                MURPHY)
register_metric("ece_mass", "ECE with equal-mass bins (the full sample's bins, kept in every bootstrap replicate)",
                "lower", "[0, 1]", NIXON, kinds=("generation",), generation_uses=("measure",),
                computed_by="generation.binary_metrics_weighted")

HELM = "HELM (Liang et al. 2022), compute_calibration_metrics, via uncertainty-calibration (Kumar et al. 2019)"
for _name, _what, _better in (
        ("ece_10_bin", "ECE, 10 equal-mass bins (HELM's headline calibration number)", "lower"),
        ("ece_1_bin", "ECE with one bin: |mean confidence - accuracy|", "lower"),
        ("selective_acc@10", "accuracy on the 10% most confident answers", "higher"),
        ("selective_cov_acc_area", "area under the coverage-accuracy curve", "higher"),
        ("platt_ece_10_bin", "ece_10_bin after Platt scaling fitted on the same questions", "lower"),
        ("platt_ece_1_bin", "ece_1_bin after Platt scaling fitted on the same questions", "lower"),
        ("platt_coef", "Platt scaling's slope on logit(confidence)", ""),
        ("platt_intercept", "Platt scaling's intercept", "")):
    register_metric(_name, _what, _better, "(-inf, inf)" if _name.startswith("platt_") and "ece" not in _name else
                    "[0, 1]", HELM, uses=("helm",), generation_uses=("helm",), computed_by="helm.helm_metrics",
                    family="helm")

# ---------------------------------------------------------------------------------------------
# Confidence measures of a generated answer (columns of a generation predictions frame)

register_measure("p_true", "P(True) of the model for its own answer", True, _column("p_true"),
                 "Kadavath et al. 2022, Language Models (Mostly) Know What They Know", headline_rank=0, needs=("p_true",))
register_measure("sequence_prob", "exp(sum of the answer tokens' log-probabilities)", True,
                 lambda df: np.exp(_column("sequence_logprob")(df)), "Malinin & Gales 2021",
                 needs=("sequence_logprob",))
register_measure("mean_token_prob", "exp(mean token log-probability): the geometric-mean token probability", True,
                 lambda df: np.exp(_column("mean_logprob")(df)), "Malinin & Gales 2021", headline_rank=1,
                 needs=("mean_logprob",))
register_measure("min_token_prob", "the smallest token probability of the answer", True, _column("min_token_prob"),
                 "Varshney et al. 2023", needs=("min_token_prob",))
register_measure("neg_mean_entropy", "minus the mean next-token entropy (not a probability: ranking metrics only)",
                 False, lambda df: -_column("mean_entropy")(df), "Malinin & Gales 2021", needs=("mean_entropy",))

# Sampling-based: from the K sampled answers a run kept per prompt (`--samples K`; analysis/sampling_estimators.py
# defines each, equal to LM-Polygraph's estimator of the same name). They exist for frames with samples only.
POLYGRAPH = "LM-Polygraph (Fadeeva et al. 2023)"
SAMPLED = ("samples",)
register_measure("greedy_agreement", "share of the K samples equivalent to the greedy answer", True,
                 sampling_estimators.stored("greedy_agreement"), "Manakul et al. 2023 (SelfCheckGPT's consistency)",
                 needs=SAMPLED)
for _name, _what, _ref in (
        ("semantic_entropy", "semantic entropy, cluster probabilities from the samples' likelihoods",
         "Kuhn et al. 2023, Semantic Uncertainty; " + POLYGRAPH + " SemanticEntropy"),
        ("discrete_semantic_entropy", "semantic entropy, cluster probabilities from the samples' frequencies",
         "Farquhar et al. 2024; " + POLYGRAPH + " SemanticEntropyEmpirical"),
        ("num_semantic_sets", "number of clusters of equivalent samples", "Lin et al. 2023; " + POLYGRAPH + " NumSemSets"),
        ("eigv", "sum of the similarity graph Laplacian's eigenvalues below 1 (as 1 - lambda)",
         "Lin et al. 2023; " + POLYGRAPH + " EigValLaplacian"),
        ("degree", "mean dissimilarity of the samples (degree matrix)", "Lin et al. 2023; " + POLYGRAPH + " DegMat"),
        ("eccentricity", "spread of the samples in the Laplacian's spectral embedding",
         "Lin et al. 2023; " + POLYGRAPH + " Eccentricity"),
        ("mc_sequence_entropy", "Monte-Carlo sequence entropy: mean -log p(sample)",
         "Kuhn et al. 2023; " + POLYGRAPH + " MonteCarloSequenceEntropy"),
        ("mc_normalized_entropy", "the same, each sample's log-probability divided by its length",
         POLYGRAPH + " MonteCarloNormalizedSequenceEntropy")):
    register_measure(f"neg_{_name}", f"minus the {_what} (ranking only)", False, sampling_estimators.negated(_name),
                     _ref, needs=SAMPLED)
register_measure("lexical_similarity", "mean ROUGE-L between pairs of samples (ranking only)", False,
                 sampling_estimators.stored("lexical_similarity"), POLYGRAPH + " LexicalSimilarity (rougeL)",
                 needs=SAMPLED)


def markdown_table() -> str:
    """The metric and measure tables of docs/metrics.md (`quantconf measures --markdown` prints them)."""
    lines = ["| metric | what | better | range | kinds | used in | reference |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for m in METRICS.values():
        uses = [f"{kind}: {u}" if len(m.uses) > 1 else u for kind, us in m.uses.items() for u in sorted(us)]
        lines.append(f"| `{m.name}` | {m.what} | {m.better or '—'} | {m.range} | {', '.join(m.kinds)} | "
                     f"{', '.join(uses) or 'metrics output'} | {m.reference or '—'} |")
    lines += ["", "| confidence measure | what | probability | reference |", "| --- | --- | --- | --- |"]
    for c in MEASURES.values():
        lines.append(f"| `{c.name}` | {c.what} | {'yes' if c.probability else 'no (ranking only)'} | {c.reference} |")
    return "\n".join(lines) + "\n"
