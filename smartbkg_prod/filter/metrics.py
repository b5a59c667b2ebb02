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


def unweighted_weighted_chi2(
    counts: np.ndarray, weights: np.ndarray, squares: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Shape χ² of an unweighted histogram against a weighted one (Gagunashvili, NIM A 614
    (2010) 287, the "UW" test of ROOT's ``TH1::Chi2Test``): the common bin probabilities
    are fitted, so normalisations are free; ndf = used bins − 1. A bin the weighted sample
    left empty gets the variance of one average weight, Σw²/Σw.

    Batched: the last axis is the bins, any leading axes are separate tests (toys); χ² and
    ndf have the leading shape (0 and 0 where a side is empty or fewer than 2 bins are used).

    >>> chi2, ndf = unweighted_weighted_chi2(np.array([10, 20]), np.array([10.0, 20.0]), np.array([10.0, 20.0]))
    >>> float(chi2), int(ndf)
    (0.0, 1)
    """
    n = np.asarray(counts, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    s2 = np.asarray(squares, dtype=np.float64)
    used = (n > 0) | (w > 0)
    total_n = n.sum(axis=-1, keepdims=True)
    total_w = w.sum(axis=-1, keepdims=True)
    ndf = used.sum(axis=-1) - 1
    valid = (total_n[..., 0] > 0) & (total_w[..., 0] > 0) & (ndf >= 1)
    safe_w = np.where(total_w > 0, total_w, 1.0)
    s2 = np.where(s2 > 0, s2, s2.sum(axis=-1, keepdims=True) / safe_w)
    s2 = np.where(s2 > 0, s2, 1.0)  # only unused bins (w = 0, n = 0) are left at 0
    a = safe_w * w - total_n * s2
    probability = (a + np.sqrt(a * a + 4.0 * safe_w**2 * s2 * n)) / (2.0 * safe_w**2)
    expected_n = total_n * probability
    # A bin the unweighted sample left empty can get p = 0: its first term tends to 0.
    first = np.divide(
        (n - expected_n) ** 2, expected_n, out=np.zeros(n.shape), where=expected_n > 0
    )
    second = (w - safe_w * probability) ** 2 / s2
    chi2 = np.where(used, first + second, 0.0).sum(axis=-1)
    return np.where(valid, chi2, 0.0), np.where(valid, ndf, 0)


def chi2_p_value(chi2: np.ndarray, ndf: np.ndarray) -> np.ndarray:
    """The asymptotic χ² p-value (1 where ndf = 0: nothing was tested)."""
    from scipy import stats

    ndf = np.asarray(ndf)
    return np.where(ndf > 0, stats.chi2.sf(chi2, np.maximum(ndf, 1)), 1.0)


def kl_and_noise(
    counts: np.ndarray, weights: np.ndarray, squares: np.ndarray
) -> tuple[float | None, float | None]:
    """KL divergence ``Σ P log(P/Q)`` of the normalised histograms (P unweighted, Q weighted)
    and the value two unbiased samples of these sizes give from sampling noise alone,
    ``Σ_b (Var p̂_b + Var q̂_b) / (2 p_b)``; ``None`` where a P bin has no weighted event
    (KL infinite) or a side is empty."""
    counts = np.asarray(counts, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    squares = np.asarray(squares, dtype=np.float64)
    total_c, total_w = counts.sum(), weights.sum()
    populated = counts > 0
    if total_c <= 0 or total_w <= 0 or not (weights[populated] > 0).all():
        return None, None
    p_hist = counts[populated] / total_c
    q_hist = weights[populated] / total_w
    kl = float(np.sum(p_hist * np.log(p_hist / q_hist)))
    noise = float(np.sum(1.0 / (2.0 * total_c) + squares[populated] / (2.0 * total_w**2 * p_hist)))
    return kl, noise


def bin_indices(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The bin of each value as :func:`histogram` fills it (outside values in the first or
    last bin); −1 for NaN (the variable is undefined for that event)."""
    values = np.asarray(values, dtype=np.float64)
    inside = np.clip(values, edges[0], np.nextafter(edges[-1], -np.inf))
    bins = np.searchsorted(edges, inside, side="right") - 1
    return np.where(np.isfinite(values), np.clip(bins, 0, len(edges) - 2), -1)


@dataclass(frozen=True)
class BinnedSample:
    """Skimmed events of one sample binned in every tested variable: ``bins[v, i]`` is
    event i's bin of variable v (−1: undefined), ``n_bins[v]`` the variable's bin count,
    ``keep_probability[i]`` the filter's p for event i."""

    bins: np.ndarray
    n_bins: np.ndarray
    keep_probability: np.ndarray

    def __len__(self) -> int:
        return len(self.keep_probability)


def binned_sums(
    bins: np.ndarray, n_bins: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """Per-variable histograms of binned events, batched over toys: ``bins`` (toys,
    variables, events), ``weights`` (toys, events) or ``None`` (counts) → (toys, variables,
    max bins); bins past a variable's ``n_bins`` stay 0."""
    toys, variables, _ = bins.shape
    stride = int(n_bins.max()) + 1  # the last slot collects undefined values (bin −1)
    slot = np.where(bins < 0, stride - 1, bins)
    code = (np.arange(toys * variables).reshape(toys, variables, 1) * stride + slot).ravel()
    w = None if weights is None else np.broadcast_to(weights[:, None, :], bins.shape).ravel()
    sums = np.bincount(code, weights=w, minlength=toys * variables * stride)
    return sums.reshape(toys, variables, stride)[..., :-1]


def toy_chi2(
    pool: BinnedSample,
    n_filtered: int,
    n_reference: int,
    toys: int,
    rng: np.random.Generator,
    max_batch_entries: int = 4_000_000,
) -> tuple[np.ndarray, np.ndarray]:
    """χ² and ndf (toys, variables) of :func:`unweighted_weighted_chi2` when there is no
    bias: each toy draws ``n_filtered`` events from ``pool`` (with replacement), keeps each
    with its probability p and weights it 1/p, and compares them with ``n_reference``
    other events drawn from the same pool. Real events and the filter's real keep
    probabilities, so the heavy weights (up to 1/p_min) are as in the data."""
    chi2 = np.empty((toys, len(pool.n_bins)))
    ndf = np.empty((toys, len(pool.n_bins)), dtype=np.int64)
    per_toy = len(pool.n_bins) * (n_filtered + n_reference)
    batch = max(1, min(toys, max_batch_entries // max(per_toy, 1)))
    for first in range(0, toys, batch):
        size = min(batch, toys - first)
        drawn = rng.integers(len(pool), size=(size, n_filtered))
        p = pool.keep_probability[drawn]
        weights = np.where(rng.random(p.shape) < p, 1.0 / p, 0.0)
        filtered_bins = np.moveaxis(pool.bins[:, drawn], 0, 1)
        reference_bins = np.moveaxis(
            pool.bins[:, rng.integers(len(pool), size=(size, n_reference))], 0, 1
        )
        chi2[first : first + size], ndf[first : first + size] = unweighted_weighted_chi2(
            binned_sums(reference_bins, pool.n_bins),
            binned_sums(filtered_bins, pool.n_bins, weights),
            binned_sums(filtered_bins, pool.n_bins, weights * weights),
        )
    return chi2, ndf


def histogram_toys(
    counts: np.ndarray,
    weights: np.ndarray,
    squares: np.ndarray,
    toys: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """No-bias toys of an unweighted (``counts``) against a weighted (Σw, Σw²) histogram
    when only the histograms are known (the monitor's control sample): both sides drawn
    from one distribution, the average of the two normalised histograms. The weighted side
    of a bin is its effective weight ``w̄ = Σw²/Σw`` times a Poisson count of mean Σw/w̄,
    so mean and variance are the data's and a bin whose Σw comes from a few heavy weights
    stays lumpy. Returns counts, Σw and Σw² of shape (toys, bins)."""
    counts = np.asarray(counts, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    squares = np.asarray(squares, dtype=np.float64)
    total_c, total_w = counts.sum(), weights.sum()
    if total_c <= 0 or total_w <= 0:
        empty = np.zeros((toys, len(counts)))
        return empty, empty, empty
    shape = 0.5 * (counts / total_c + weights / total_w)
    effective = np.where(weights > 0, squares / np.where(weights > 0, weights, 1.0), 0.0)
    effective = np.where(effective > 0, effective, squares.sum() / total_w)
    drawn = rng.poisson(total_w * shape / effective, size=(toys, len(counts)))
    return (
        rng.multinomial(int(total_c), shape, size=toys).astype(np.float64),
        drawn * effective,
        drawn * effective**2,
    )


def calibrated_p_values(observed_p: np.ndarray, toy_p: np.ndarray) -> np.ndarray:
    """Toy-calibrated p-value per variable: the fraction of no-bias toys whose asymptotic
    p-value is at most the observed one, ``(1 + #{p_toy ≤ p_obs}) / (1 + toys)`` (never 0,
    so it is a valid p-value for any number of toys; its smallest value is 1/(1 + toys)).

    >>> calibrated_p_values(np.array([0.5, 1e-9]), np.array([[0.1, 0.2], [0.7, 0.3], [0.9, 0.8]])).tolist()
    [0.5, 0.25]
    """
    toy_p = np.asarray(toy_p, dtype=np.float64)
    return (1.0 + np.sum(toy_p <= np.asarray(observed_p)[None, :], axis=0)) / (1.0 + len(toy_p))


@dataclass(frozen=True)
class BiasTest:
    """One variable of the weighted filtered skim against an independent unfiltered
    sample: :func:`unweighted_weighted_chi2`, its asymptotic p-value and, with ``toys``,
    the toy-calibrated one (:func:`calibrated_p_values`), which ``p_value`` is then."""

    variable: str
    kl_divergence: float | None
    kl_sampling_noise: float | None  # KL the two samples' sampling noise alone gives
    chi2: float
    ndf: int
    p_value: float
    p_value_asymptotic: float
    toys: int
    edges: list[float]
    reference: list[float]  # counts of the unfiltered sample
    weighted: list[float]  # Σw of the filtered sample


def bin_against_reference(
    values: np.ndarray, reference_values: np.ndarray, kind: str, n_bins: int = 20
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges from the reference sample, and the bin indices of ``values`` and of the
    reference (decay modes rare in the reference are pooled in both)."""
    if kind == "categorical":
        reference_values = pool_rare_categories(reference_values)
        common = np.unique(reference_values[np.isfinite(reference_values)])
        values = np.where(np.isnan(values) | np.isin(values, common), values, RARE_CATEGORY)
    edges = histogram_edges(reference_values, n_bins, kind)
    return edges, bin_indices(values, edges), bin_indices(reference_values, edges)


RARE_CATEGORY = -2.0  # where pool_rare_categories puts rare decay modes


def bias_tests(
    filtered: dict[str, np.ndarray],
    weights: np.ndarray,
    keep_probability: np.ndarray,
    reference: dict[str, np.ndarray],
    kinds: dict[str, str],
    *,
    reference_keep_probability: np.ndarray | None = None,
    toys: int = 0,
    rng: np.random.Generator | None = None,
    n_bins: int = 20,
) -> list[BiasTest]:
    """Per-variable bias tests of a filtered sample against an independent unfiltered one.

    ``filtered``: the variables of the filtered sample's skimmed events, kept or not, with
    their ``weights`` (1/p if kept, else 0) and the filter's ``keep_probability``;
    ``reference``: the variables of the unfiltered sample's skimmed events. Binning comes
    from the reference (about equally populated bins, :func:`histogram_edges`).

    With ``toys`` > 0 each p-value is calibrated on no-bias toys (:func:`toy_chi2`) drawn
    from the skimmed events of both samples (the reference's with their
    ``reference_keep_probability``, when given): the asymptotic χ² law does not hold where
    a few events carry weights up to 1/p_min.
    """
    names = [name for name in kinds if name in filtered and name in reference]
    keep_probability = np.asarray(keep_probability, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    edges, filtered_bins, reference_bins = [], [], []
    for name in names:
        bin_edges, f_bins, r_bins = bin_against_reference(
            np.asarray(filtered[name], dtype=np.float64),
            np.asarray(reference[name], dtype=np.float64),
            kinds[name],
            n_bins,
        )
        edges.append(bin_edges)
        filtered_bins.append(f_bins)
        reference_bins.append(r_bins)
    sizes = np.array([len(e) - 1 for e in edges], dtype=np.int64)
    f_bins = np.array(filtered_bins, dtype=np.int64).reshape(len(names), -1)
    r_bins = np.array(reference_bins, dtype=np.int64).reshape(len(names), -1)
    counts = binned_sums(r_bins[None], sizes)[0]
    sums = binned_sums(f_bins[None], sizes, weights[None])[0]
    squares = binned_sums(f_bins[None], sizes, weights[None] ** 2)[0]
    chi2, ndf = unweighted_weighted_chi2(counts, sums, squares)
    p_asymptotic = chi2_p_value(chi2, ndf)
    p_values = p_asymptotic
    if toys > 0 and names:
        with_reference = reference_keep_probability is not None
        pool = BinnedSample(
            bins=np.concatenate([f_bins, r_bins], axis=1) if with_reference else f_bins,
            n_bins=sizes,
            keep_probability=np.concatenate([keep_probability, reference_keep_probability])
            if with_reference
            else keep_probability,
        )
        rng = rng if rng is not None else np.random.default_rng(0)
        toy_p = chi2_p_value(*toy_chi2(pool, f_bins.shape[1], r_bins.shape[1], toys, rng))
        p_values = calibrated_p_values(p_asymptotic, toy_p)
    tests = []
    for v, name in enumerate(names):
        used = slice(0, sizes[v])
        kl, noise = kl_and_noise(counts[v, used], sums[v, used], squares[v, used])
        tests.append(
            BiasTest(
                variable=name,
                kl_divergence=kl,
                kl_sampling_noise=noise,
                chi2=float(chi2[v]),
                ndf=int(ndf[v]),
                p_value=float(p_values[v]),
                p_value_asymptotic=float(p_asymptotic[v]),
                toys=toys,
                edges=edges[v].tolist(),
                reference=counts[v, used].tolist(),
                weighted=sums[v, used].tolist(),
            )
        )
    return tests
