"""The filter speedup formulas of ARCHITECTURE.md, in one place.

Costs are per generated event in milliseconds: t_g (generation), t_NN (filter), t_s
(simulation + reconstruction). ``retention`` r is the skim pass rate of unfiltered events.
Imports nothing heavy: the evaluation (:mod:`metrics`) and the monitor both use it.

>>> costs = StageCosts(generation_ms=0.08, filter_ms=0.63, simulation_ms=97.0)
>>> round(max_speedup(0.05, costs), 2)
17.46
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class StageCosts:
    """Per-event costs t_g, t_NN, t_s in ms."""

    generation_ms: float
    filter_ms: float
    simulation_ms: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


# Belle II reference costs (basf2 paper): full simulation + reconstruction dominates.
REFERENCE_GENERATION_MS = 0.08
REFERENCE_FILTER_MS = 0.63
REFERENCE_SIMULATION_MS = 97.0


def reference_costs(filter_ms: float = REFERENCE_FILTER_MS) -> StageCosts:
    """Belle II reference t_g and t_s, with t_NN measured (or basf2's 0.63 ms)."""
    return StageCosts(REFERENCE_GENERATION_MS, filter_ms, REFERENCE_SIMULATION_MS)


def max_speedup(retention: float, costs: StageCosts) -> float:
    """Ideal filter: ``S_max = (t_g + t_s) / (t_g + t_NN + r t_s)``."""
    t_g, t_nn, t_s = costs.generation_ms, costs.filter_ms, costs.simulation_ms
    return (t_g + t_s) / (t_g + t_nn + retention * t_s)


def cut_speedup_from_keep(keep_pass: float, keep_all: float, costs: StageCosts) -> float:
    """Hard cut: ``S = ε1 (t_g + t_s) / (t_g + t_NN + t_s ⟨keep⟩)``, where ε1 is the keep
    rate of passing events and ⟨keep⟩ that of all events."""
    t_g, t_nn, t_s = costs.generation_ms, costs.filter_ms, costs.simulation_ms
    return keep_pass * (t_g + t_s) / (t_g + t_nn + t_s * keep_all)


def cut_speedup(retention: float, keep_pass: float, keep_fail: float, costs: StageCosts) -> float:
    """Hard cut: ``S = ε1 (t_g + t_s) / (t_g + t_NN + t_s (r ε1 + (1 − r) ε0))``."""
    keep_all = retention * keep_pass + (1 - retention) * keep_fail
    return cut_speedup_from_keep(keep_pass, keep_all, costs)


def sampling_speedup_from_means(
    mean_inverse_p_pass: float, mean_p_all: float, costs: StageCosts
) -> float:
    """Effective sampling speedup ``(t_g + t_s) / (⟨1/p⟩_pass (t_g + t_NN + t_s ⟨p⟩_all))``.

    ``⟨1/p⟩_pass`` is the loss of statistical power from the weights (the weighted sample
    of N passing events is worth N / ⟨1/p⟩ unweighted ones).
    """
    t_g, t_nn, t_s = costs.generation_ms, costs.filter_ms, costs.simulation_ms
    return (t_g + t_s) / (mean_inverse_p_pass * (t_g + t_nn + t_s * mean_p_all))


def sampling_speedup(keep_probability: np.ndarray, passed: np.ndarray, costs: StageCosts) -> float:
    """Effective sampling speedup from each event's keep probability and skim decision.

    ``passed`` may also be a float array of pass probabilities (a re-simulated pass
    fraction q̂): ``⟨1/p⟩_pass`` is then ``Σ q̂/p / Σ q̂``, its expectation.
    """
    p = np.asarray(keep_probability, dtype=np.float64)
    passed = np.asarray(passed)
    weight = passed.astype(np.float64) if passed.dtype.kind == "f" else passed.astype(bool)
    total = float(np.sum(weight))
    if total <= 0:
        return float("nan")
    return sampling_speedup_from_means(float(np.sum(weight / p)) / total, float(p.mean()), costs)


def campaign_sampling_speedup(
    n_generated: int, n_kept: int, skimmed_weights: np.ndarray, costs: StageCosts
) -> float:
    """Effective sampling speedup from a filtered campaign's outputs alone.

    Only kept events exist there, each with weight w = 1/p. Over all passing events,
    ``⟨1/p⟩_pass = Σ w² / Σ w`` (each kept one stands for w of them), and
    ``⟨p⟩_all = n_kept / n_generated``.
    """
    weights = np.asarray(skimmed_weights, dtype=np.float64)
    if n_generated == 0 or weights.sum() <= 0:
        return float("nan")
    mean_inverse_p = float(np.sum(weights**2) / np.sum(weights))
    return sampling_speedup_from_means(mean_inverse_p, n_kept / n_generated, costs)


def best_threshold(scores: np.ndarray, passed: np.ndarray, costs: StageCosts) -> float:
    """Cut threshold with the best hard-cut speedup (never keeping < 50% of passing events)."""
    retention = float(passed.mean())
    best = (-np.inf, 0.5)
    for threshold in np.unique(np.quantile(scores, np.linspace(0.0, 0.999, 400))):
        keep = scores > threshold
        keep_pass = float(keep[passed].mean())
        if keep_pass < 0.5:
            continue
        speedup = cut_speedup(retention, keep_pass, float(keep[~passed].mean()), costs)
        if speedup > best[0]:
            best = (speedup, float(threshold))
    return best[1]
