"""Filter figures of merit: AUC, speedups (ARCHITECTURE.md formulas) and bias tests.

Costs are per generated event, in milliseconds. ``retention`` r is the skim pass rate of
unfiltered events.

>>> costs = StageCosts(generation_ms=0.08, filter_ms=0.63, simulation_ms=97.0)
>>> round(max_speedup(0.05, costs), 2)
16.85
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats
from sklearn.metrics import roc_auc_score, roc_curve


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


def auc(passed: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (nan when only one class is present)."""
    passed = np.asarray(passed, dtype=bool)
    if passed.all() or not passed.any():
        return float("nan")
    return float(roc_auc_score(passed, scores))


def roc_points(
    passed: np.ndarray, scores: np.ndarray, max_points: int = 200
) -> dict[str, list[float]]:
    """ROC curve thinned to at most ``max_points`` points (for JSON and plots)."""
    fpr, tpr, thresholds = roc_curve(np.asarray(passed, dtype=bool), scores)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(max_points, len(fpr))).astype(int))
    return {
        "fpr": fpr[keep].tolist(),
        "tpr": tpr[keep].tolist(),
        "threshold": np.minimum(thresholds[keep], 1.0).tolist(),
    }


def max_speedup(retention: float, costs: StageCosts) -> float:
    """Ideal filter: ``S_max = (t_g + t_s) / (t_g + t_NN + r t_s)``."""
    t_g, t_nn, t_s = costs.generation_ms, costs.filter_ms, costs.simulation_ms
    return (t_g + t_s) / (t_g + t_nn + retention * t_s)


def cut_speedup(retention: float, keep_pass: float, keep_fail: float, costs: StageCosts) -> float:
    """Hard cut: ``S = ε1 (t_g + t_s) / (t_g + t_NN + t_s (r ε1 + (1 − r) ε0))``."""
    t_g, t_nn, t_s = costs.generation_ms, costs.filter_ms, costs.simulation_ms
    denominator = t_g + t_nn + t_s * (retention * keep_pass + (1 - retention) * keep_fail)
    return keep_pass * (t_g + t_s) / denominator


def sampling_speedup(keep_probability: np.ndarray, passed: np.ndarray, costs: StageCosts) -> float:
    """Effective speedup ``(t_g + t_s) / (⟨1/p⟩_pass (t_g + t_NN + t_s ⟨p⟩_all))``.

    ``⟨1/p⟩_pass`` is the loss of statistical power from the weights (the weighted sample
    of N passing events is worth N / ⟨1/p⟩ unweighted ones).
    """
    p = np.asarray(keep_probability, dtype=np.float64)
    passed = np.asarray(passed, dtype=bool)
    if not passed.any():
        return float("nan")
    t_g, t_nn, t_s = costs.generation_ms, costs.filter_ms, costs.simulation_ms
    return (t_g + t_s) / (np.mean(1.0 / p[passed]) * (t_g + t_nn + t_s * p.mean()))


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
    t_g, t_nn, t_s = costs.generation_ms, costs.filter_ms, costs.simulation_ms
    mean_inverse_p = float(np.sum(weights**2) / np.sum(weights))
    return (t_g + t_s) / (mean_inverse_p * (t_g + t_nn + t_s * n_kept / n_generated))


def histogram_edges(values: np.ndarray, n_bins: int = 20, kind: str = "continuous") -> np.ndarray:
    """Bin edges for a monitored variable, about equally populated (sparse tail bins would
    make KL and χ² measure sampling noise, not bias).

    ``continuous``: quantiles; ``discrete`` (counts): quantiles moved to half-integers, so a
    bin holds whole values; ``categorical`` (decay modes): one bin per value (rare values
    are pooled by :func:`pool_rare_categories` first).
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return np.array([0.0, 1.0])
    quantiles = np.quantile(values, np.linspace(0, 1, n_bins + 1))
    if kind == "categorical":
        categories = np.unique(values)
        return np.concatenate([categories - 0.5, [categories[-1] + 0.5]])
    if kind == "discrete":
        return np.unique(np.concatenate([[values.min() - 0.5], np.floor(quantiles) + 0.5]))
    edges = np.unique(quantiles)
    if len(edges) < 2:
        edges = np.array([values[0] - 0.5, values[0] + 0.5])
    edges[-1] = np.nextafter(edges[-1], np.inf)
    return edges


def pool_rare_categories(
    values: np.ndarray, min_fraction: float = 0.01, other: float = -2.0
) -> np.ndarray:
    """Categories holding less than ``min_fraction`` of the events become one ``other`` value."""
    finite = np.isfinite(values)
    categories, counts = np.unique(values[finite], return_counts=True)
    rare = categories[counts < min_fraction * finite.sum()]
    return np.where(np.isin(values, rare), other, values)


@dataclass(frozen=True)
class BiasTest:
    """Filtered+weighted vs unfiltered histogram of one variable."""

    variable: str
    kl_divergence: float
    kl_sampling_noise: float  # KL expected from the weights' sampling noise alone (no bias)
    chi2: float
    ndf: int
    p_value: float
    edges: list[float]
    unfiltered: list[float]
    weighted: list[float]


def bias_test(
    variable: str,
    values: np.ndarray,
    kept: np.ndarray,
    weights: np.ndarray,
    kind: str = "continuous",
    n_bins: int = 20,
    keep_probability: np.ndarray | None = None,
) -> BiasTest:
    """Compare the weighted kept subsample with the full sample of the same events.

    KL divergence ``Σ P log(P/Q)`` of the normalised histograms (P unfiltered, Q weighted).
    The χ² uses the variance of the weighted subsample's bin count *given* the events,
    ``Σ_bin (1 − p)/p`` over all the bin's events when ``keep_probability`` (of every event)
    is known, else its unbiased estimate ``Σ_kept w (w − 1)`` (w = 1/p), which is itself
    heavy-tailed where few large weights fall. The unfiltered histogram is the
    expectation, so each bin is a single pull.
    """
    values = np.asarray(values, dtype=np.float64)
    kept = np.asarray(kept, dtype=bool)
    weights = np.asarray(weights, dtype=np.float64)
    finite = np.isfinite(values)
    if kind == "categorical":
        values = pool_rare_categories(values)
    edges = histogram_edges(values[finite], n_bins, kind)
    unfiltered, _ = np.histogram(values[finite], bins=edges)
    selected = finite & kept
    weighted, _ = np.histogram(values[selected], bins=edges, weights=weights[selected])
    if keep_probability is None:
        variance, _ = np.histogram(
            values[selected], bins=edges, weights=weights[selected] * (weights[selected] - 1.0)
        )
    else:
        p = np.asarray(keep_probability, dtype=np.float64)[finite]
        variance, _ = np.histogram(values[finite], bins=edges, weights=(1.0 - p) / p)
    p_hist = unfiltered / max(unfiltered.sum(), 1)
    q_hist = weighted / max(weighted.sum(), 1e-300)
    populated = p_hist > 0
    with np.errstate(divide="ignore"):
        kl = float(
            np.sum(
                p_hist[populated] * np.log(p_hist[populated] / np.maximum(q_hist[populated], 1e-12))
            )
        )
    # E[KL] ≈ Σ_b Var(W_b) / (2 N n_b): what an unbiased sampling of this size gives.
    kl_noise = float(np.sum(variance[populated] / (2.0 * unfiltered.sum() * unfiltered[populated])))
    tested = variance > 0
    chi2 = float(np.sum((weighted[tested] - unfiltered[tested]) ** 2 / variance[tested]))
    ndf = int(tested.sum())
    p_value = float(stats.chi2.sf(chi2, ndf)) if ndf else 1.0
    return BiasTest(
        variable=variable,
        kl_divergence=kl,
        kl_sampling_noise=kl_noise,
        chi2=chi2,
        ndf=ndf,
        p_value=p_value,
        edges=edges.tolist(),
        unfiltered=unfiltered.astype(float).tolist(),
        weighted=weighted.tolist(),
    )
