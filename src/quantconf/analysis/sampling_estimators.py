"""Sampling-based uncertainty of a generated answer, from the K samples a run kept per prompt (`--samples K`):
pure numpy functions, each LM-Polygraph's estimator (IINemo/lm-polygraph 0.7.0, estimators/) written from
its definition; tests/test_sampling_estimators.py feeds LM-Polygraph's own classes the same samples and
requires equal values.

LM-Polygraph's estimators are *uncertainties* (higher: less sure); quantconf's confidence measures are high
when the answer is likely right, so each is registered (metric_registry.py) with the sign that makes it a
confidence: `neg_semantic_entropy` is minus SemanticEntropy, and so on. With lp_j the log-probability of
sample j (the sum of its tokens' log-probabilities under the model), c(j) its cluster
(inference/equivalence.py) and K the number of samples:

  semantic_entropy            -1/K sum_j log P(c(j)),  log P(c) = logsumexp of lp_j over the samples in c
                              (Kuhn et al. 2023; LM-Polygraph's SemanticEntropy, class probability "sum")
  discrete_semantic_entropy   the same with P(c) = |c| / K (Farquhar et al. 2024; SemanticEntropyEmpirical)
  num_semantic_sets           the number of clusters (Lin et al. 2023; NumSemSets: equal to it whenever
                              equivalence is transitive, as for answer keys)
  eigv                        sum_k max(0, 1 - lambda_k) over the eigenvalues of the normalised graph Laplacian
                              L = I - D^-1/2 W D^-1/2, W the symmetrised similarity (Lin et al. 2023; EigValLaplacian)
  degree                      trace(K I - D) / K^2 (DegMat)
  eccentricity                || ( -|| v_j - mean v || )_j ||_2 over the rows v_j of the Laplacian's eigenvectors with
                              eigenvalue < 0.9 (Eccentricity, thres 0.9)
  mc_sequence_entropy         -1/K sum_j lp_j (MonteCarloSequenceEntropy)
  mc_normalized_entropy       -1/K sum_j lp_j / len_j over samples with tokens (MonteCarloNormalizedSequenceEntropy)
  lexical_similarity          mean ROUGE-L F1 over pairs of samples (LexicalSimilarity rougeL, with its sign
                              reversed: a similarity is already a confidence); computed when the run groups samples
  greedy_agreement            the share of samples equivalent to the greedy answer: a probability (calibration
                              metrics apply; Manakul et al. 2023's SelfCheck idea, the "consistency" of the answer)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SAMPLE_COLUMNS = ("samples", "sample_token_logprobs", "sample_clusters", "sample_similarity")


def semantic_entropy(logprobs: np.ndarray, clusters: np.ndarray) -> float:
    class_lp = {c: np.logaddexp.reduce(logprobs[clusters == c]) for c in np.unique(clusters)}
    return float(-np.mean([class_lp[c] for c in clusters]))


def discrete_semantic_entropy(clusters: np.ndarray) -> float:
    counts = {c: np.sum(clusters == c) for c in np.unique(clusters)}
    return float(-np.mean([np.log(counts[c] / len(clusters)) for c in clusters]))


def _laplacian(similarity: np.ndarray):
    w = (similarity + similarity.T) / 2
    d_inv_sqrt = np.diag(1 / np.sqrt(w.sum(axis=1)))
    return np.eye(len(w)) - d_inv_sqrt @ w @ d_inv_sqrt


def eigv(similarity: np.ndarray) -> float:
    from scipy.linalg import eigh

    return float(sum(max(0.0, 1 - lam) for lam in eigh(_laplacian(similarity), eigvals_only=True)))


def degree(similarity: np.ndarray) -> float:
    w = (similarity + similarity.T) / 2
    k = len(w)
    return float(np.trace(k - np.diag(w.sum(axis=1))) / k ** 2)


def eccentricity(similarity: np.ndarray, threshold: float = 0.9) -> float:
    from scipy.linalg import eigh

    values, vectors = eigh(_laplacian(similarity))
    kept = vectors[:, values < threshold].T
    distances = -np.asarray([np.linalg.norm(x - x.mean(0), 2) for x in kept])
    return float(np.linalg.norm(distances, 2))


def _per_prompt(df: pd.DataFrame, estimate) -> np.ndarray:
    """estimate(row) for each prompt of a frame that kept samples; NaN for a frame (or row) without them."""
    if not set(SAMPLE_COLUMNS) <= set(df.columns):
        return np.full(len(df), np.nan)
    out = np.full(len(df), np.nan)
    for i, row in enumerate(df[list(SAMPLE_COLUMNS)].itertuples(index=False)):
        texts = row[0]
        if texts is None or len(texts) < 2:
            continue
        k = len(texts)
        sequence_lp = np.array([float(np.sum(lp)) for lp in row[1]])
        lengths = np.array([len(lp) for lp in row[1]])
        clusters = np.asarray(row[2], int)
        similarity = np.asarray(row[3], float).reshape(k, k)
        out[i] = estimate(sequence_lp, lengths, clusters, similarity)
    return out


def _mc_normalized(lp, lengths):
    kept = lengths > 0
    return float(-np.mean(lp[kept] / lengths[kept])) if kept.any() else np.nan


ESTIMATORS = {  # uncertainty per prompt (higher: less sure), from (sample lp, lengths, clusters, similarity)
    "semantic_entropy": lambda lp, n, c, w: semantic_entropy(lp, c),
    "discrete_semantic_entropy": lambda lp, n, c, w: discrete_semantic_entropy(c),
    "num_semantic_sets": lambda lp, n, c, w: float(len(np.unique(c))),
    "eigv": lambda lp, n, c, w: eigv(w),
    "degree": lambda lp, n, c, w: degree(w),
    "eccentricity": lambda lp, n, c, w: eccentricity(w),
    "mc_sequence_entropy": lambda lp, n, c, w: float(-np.mean(lp)),
    "mc_normalized_entropy": lambda lp, n, c, w: _mc_normalized(lp, n),
}


def negated(name: str):
    """The confidence measure `neg_<name>` of a frame: minus the estimator's uncertainty."""
    return lambda df: -_per_prompt(df, ESTIMATORS[name])


def stored(column: str):
    """A per-prompt number the run stored (NaN where the frame has no such column)."""
    return lambda df: (pd.to_numeric(df[column], errors="coerce").to_numpy(float) if column in df.columns
                       else np.full(len(df), np.nan))
