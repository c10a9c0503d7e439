"""How small an effect can a study see, and how many questions (and quantization replicates) does it need?

The paired accuracy difference of two models on m questions has variance (rho_d - delta^2) / m <= rho_d / m, with
rho_d the discordance (the share of questions exactly one model gets right); the replicates of a configuration add
their own variance sigma_r^2 / R. A two-sided level-alpha test then detects delta with power 1 - beta when

    |delta| >= (z_{1-alpha/2} + z_{1-beta}) * sqrt(rho_d / m + sigma_r^2 / R)        (the minimum detectable effect)

(arXiv 2605.28873's delta* <= (z_{alpha/2} + z_beta) sqrt(rho_d / m), with the replicate term added). Solved for m,
the questions a study needs; with sigma_r^2 > 0 there is a floor no number of questions passes: more replicates.
A calibration-error difference has no such closed form: its standard error is taken from a pilot's paired
bootstrap interval and scaled by sqrt(n_pilot / m). tests/test_power.py simulates studies of the planned size and
requires the detection rate to be 80% within Monte-Carlo error.
"""

from __future__ import annotations

import math

import numpy as np

from quantconf.analysis.metrics import paired_difference_interval
from quantconf.errors import QuantconfError


def _z(p: float) -> float:
    from scipy.stats import norm  # lazy: scipy.stats takes ~1 s to import

    return float(norm.ppf(p))


def z_sum(alpha: float = 0.05, power: float = 0.8) -> float:
    if not (0 < alpha < 1 and 0 < power < 1):
        raise QuantconfError(f"alpha and power must lie in (0, 1), got {alpha}, {power}", param="power")
    return _z(1 - alpha / 2) + _z(power)


def minimum_detectable(se: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest absolute effect a two-sided level-alpha test with this standard error detects with this power."""
    return float(z_sum(alpha, power) * se) if np.isfinite(se) else float("nan")


def mde_paired_acc(n: int, discordance: float, replicate_var: float = 0.0, replicates: int = 1, alpha: float = 0.05,
                   power: float = 0.8) -> float:
    """Minimum detectable Δacc of a paired comparison on n questions with this discordance (module docstring)."""
    if n <= 0:
        return float("nan")
    return minimum_detectable(math.sqrt(discordance / n + replicate_var / max(replicates, 1)), alpha, power)


def questions_for(delta: float, discordance: float, replicate_var: float = 0.0, replicates: int = 1,
                  alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Questions needed to detect an accuracy difference of size delta; None when the replicates' variance alone exceeds what delta
    allows (more replicates are needed, not more questions)."""
    k = z_sum(alpha, power) ** 2
    room = delta ** 2 - k * replicate_var / max(replicates, 1)
    if delta <= 0 or room <= 0:
        return None
    return max(int(math.ceil(k * discordance / room)), 1)


def questions_for_se(delta: float, se_pilot: float, n_pilot: int, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Questions needed to detect a difference delta whose standard error on the pilot's n_pilot questions was
    se_pilot (scaling as 1 / sqrt(n))."""
    if delta <= 0 or not np.isfinite(se_pilot) or se_pilot <= 0:
        return None
    return max(int(math.ceil(n_pilot * (z_sum(alpha, power) * se_pilot / delta) ** 2)), 1)


def plan_designs(delta: float, discordance: float, replicate_var: float | None, max_replicates: int = 10,
                 alpha: float = 0.05, power: float = 0.8) -> list[dict]:
    """For R = 1..max_replicates: the questions needed to detect an accuracy difference delta (None: not with R replicates). An
    unmeasured replicate variance (no replicated pilot) is taken as 0, and the plan says so."""
    var = 0.0 if replicate_var is None else replicate_var
    return [{"replicates": r, "questions": questions_for(delta, discordance, var, r, alpha, power)}
            for r in range(1, max_replicates + 1)]


def simulate_paired_power(n: int, p_full_only: float, p_quant_only: float, sims: int = 2000, seed: int = 0,
                          level: float = 0.95) -> float:
    """Share of simulated studies of n questions (each question right in the full model only, the quantized only,
    or neither/both, with these probabilities) whose paired Δacc interval (Bonett-Price, the one `compare` reports)
    excludes 0."""
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, [p_full_only, p_quant_only, 1 - p_full_only - p_quant_only], size=sims)
    hits = 0
    for b, c, _ in counts:
        lo, hi = paired_difference_interval(b, c, n, level)
        hits += lo > 0 or hi < 0
    return hits / sims
