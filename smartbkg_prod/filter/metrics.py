"""Filter figures of merit: AUC, ROC and bias tests (the speedup formulas are in
:mod:`smartbkg_prod.filter.speedup`).

The worker fills the control sample's histograms with :func:`histogram`; scikit-learn and
scipy, which only training, evaluation and the monitor use, are imported where needed so
the worker does not load them.
"""

from __future__ import annotations

from dataclasses import dataclass

import boost_histogram as bh
import numpy as np


def auc(passed: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (nan when only one class is present)."""
    from sklearn.metrics import roc_auc_score

    passed = np.asarray(passed, dtype=bool)
    if passed.all() or not passed.any():
        return float("nan")
    return float(roc_auc_score(passed, scores))


def roc_points(
    passed: np.ndarray, scores: np.ndarray, max_points: int = 200
) -> dict[str, list[float]]:
    """ROC curve thinned to at most ``max_points`` points (for JSON and plots)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(np.asarray(passed, dtype=bool), scores)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(max_points, len(fpr))).astype(int))
    return {
        "fpr": fpr[keep].tolist(),
        "tpr": tpr[keep].tolist(),
        "threshold": np.minimum(thresholds[keep], 1.0).tolist(),
    }


def histogram(edges: np.ndarray, values: np.ndarray, weights: np.ndarray | None = None):
    """A boost-histogram over ``edges``: counts, or Σw and Σw² per bin with ``weights``
    (``.view().value``, ``.view().variance``). Values outside the edges count in the first
    or last bin.

    >>> histogram(np.array([0.0, 1.0, 2.0]), np.array([0.5, 1.5, 9.0]), np.array([2.0, 1.0, 3.0])).view().variance
    array([ 4., 10.])
    """
    edges = np.asarray(edges, dtype=np.float64)
    axis = bh.axis.Variable(edges, underflow=False, overflow=False)
    storage = bh.storage.Int64() if weights is None else bh.storage.Weight()
    inside = np.clip(values, edges[0], np.nextafter(edges[-1], -np.inf))
    return bh.Histogram(axis, storage=storage).fill(inside, weight=weights)


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
        # The 0% quantile is the minimum itself: as an inner edge it would give the smallest
        # value a bin of its own, however rare it is.
        edges = np.unique(np.concatenate([[values.min() - 0.5], np.floor(quantiles[1:]) + 0.5]))
        return _merge_sparse_bins(values, edges, MIN_BIN_FRACTION)
    edges = np.unique(quantiles)
    if len(edges) < 2:
        edges = np.array([values[0] - 0.5, values[0] + 0.5])
    edges[-1] = np.nextafter(edges[-1], np.inf)
    return edges


MIN_BIN_FRACTION = 0.005  # discrete bins with fewer events join their smaller neighbour


def _merge_sparse_bins(values: np.ndarray, edges: np.ndarray, min_fraction: float) -> np.ndarray:
    """Remove inner edges until every bin holds ``min_fraction`` of the values (a few
    whole-number bins at most, so a loop is fine)."""
    edges = list(edges)
    while len(edges) > 2:
        counts = np.histogram(values, bins=edges)[0]
        smallest = int(np.argmin(counts))
        if counts[smallest] >= min_fraction * len(values):
            break
        if smallest == 0:
            neighbour_edge = 1
        elif smallest == len(counts) - 1:
            neighbour_edge = smallest
        else:  # join the smaller neighbour
            neighbour_edge = (
                smallest if counts[smallest - 1] <= counts[smallest + 1] else smallest + 1
            )
        del edges[neighbour_edge]
    return np.asarray(edges)


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
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    kept = np.asarray(kept, dtype=bool)
    weights = np.asarray(weights, dtype=np.float64)
    finite = np.isfinite(values)
    if kind == "categorical":
        values = pool_rare_categories(values)
    edges = histogram_edges(values[finite], n_bins, kind)
    unfiltered = histogram(edges, values[finite]).values()
    selected = finite & kept
    sums = histogram(edges, values[selected], weights[selected]).view()
    weighted = sums.value
    if keep_probability is None:
        variance = sums.variance - sums.value  # Σ w (w − 1)
    else:
        p = np.asarray(keep_probability, dtype=np.float64)[finite]
        variance = histogram(edges, values[finite], (1.0 - p) / p).values()
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
