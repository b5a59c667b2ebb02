"""The best speedup any generator-level filter can reach, measured by re-simulation.

A filter sees only the generated event x; the skim decision is random given x because the
detector simulation is (tracking efficiency, K/π mis-identification, photon efficiency,
resolution smearing). Call ``q(x) = P(skim passes | x)`` and ``r = E[q]`` (the retention).

**Bound.** With ``c = (t_g + t_NN) / t_s`` and any keep probability ``p(x)`` in (0, 1],
the speedup formulas of :mod:`smartbkg_prod.filter.speedup` give

    S / S_max = (c + r) / (⟨1/p⟩_pass (c + E[p])),   ⟨1/p⟩_pass = E[q/p] / r.

Cauchy–Schwarz, ``E[q/p] E[p] ≥ (E[√q])²``, and ``q/p ≥ q`` (so ``c E[q/p] ≥ c r``) give

    S / S_max ≤ (c + r) / (E[√q]² / r + c)  ≈  ρ = (r / E[√q])²   (c ≪ r),

reached by ``p ∝ √q`` (the ``sqrt(q)`` rule of :mod:`smartbkg_prod.filter.sampling`). The
bound depends on the detector and skim only, not on any model.

**Estimates.** ``q`` is estimated per event by the pass fraction ``q̂`` over K independent
detector seeds. ``E[q̂] = q`` but ``E[√q̂] ≤ √q`` (Jensen), so ``ρ̂ = (mean q̂ / mean √q̂)²``
is biased *up*: it bounds (in expectation) what any generator-level filter reaches, and
falls towards the true ρ as K grows. The *held-out* estimate is achievable and biased
down: the label is the skim decision with one seed, ``q̂`` comes from K other seeds, and
``p = clip(k √q̂_cal, p_min, 1)`` with (k, p_min) optimised by
:func:`~smartbkg_prod.filter.sampling.fit_calibration` (``q̂_cal`` is q̂ calibrated
against the label, as in :func:`~smartbkg_prod.filter.evaluate.oracle_figures`). The true
limit lies between the two.

>>> passes = np.array([[1, 0, 1, 0], [1, 0, 0, 0]], dtype=bool)  # [K seeds, n events]
>>> bound = upper_bound(pass_fraction(passes), StageCosts(0.0, 0.0, 97.0), bootstrap=0)
>>> round(bound.ratio, 3)
0.772
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from smartbkg_prod.filter.speedup import (
    StageCosts,
    max_speedup,
    sampling_speedup,
    sampling_speedup_from_means,
)
from smartbkg_prod.physics.config import SimulationConfig, SkimConfig

if TYPE_CHECKING:
    from smartbkg_prod.physics.events import ParticleBatch

FIRST_DETECTOR_SEED = 1000
BOOTSTRAP_REPLICAS = 200


@dataclass(frozen=True)
class OracleBound:
    """Upper bound on S/S_max from per-event pass probabilities (exact q or estimates q̂).

    ``ratio`` is ρ = (r / E[√q])², ``fraction_of_max`` the exact form
    (c + r) / (E[√q]²/r + c) at ``costs_ms``; errors are bootstrap standard deviations
    over events (the finite-K bias of q̂ is not in them: it is upward, see the module).
    """

    n_events: int
    retention: float
    mean_root_pass_probability: float
    ratio: float
    ratio_error: float
    fraction_of_max: float
    fraction_of_max_error: float
    costs_ms: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class HeldOutFraction:
    """Achievable S/S_max with ``q̂`` from ``resimulations`` seeds, scored against the skim
    decision of other seeds (``labels`` of them, one at a time; figures are their mean).

    ``fraction_of_max_error`` is the bootstrap error over events with each label's fitted
    (k, p_min) held fixed; ``fraction_of_max_spread`` the standard deviation over labels.
    """

    resimulations: int
    labels: int
    n_events: int
    sample_speedup: float
    max_speedup: float
    fraction_of_max: float
    fraction_of_max_error: float
    fraction_of_max_spread: float
    scales: list[float]
    p_mins: list[float]
    costs_ms: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class OracleScanPoint:
    """Both estimates at one number of detector seeds K."""

    resimulations: int
    upper_bound: OracleBound
    held_out: HeldOutFraction

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resimulate_passes(
    particles: ParticleBatch,
    resimulations: int,
    simulation: SimulationConfig | None = None,
    skim_config: SkimConfig | None = None,
    first_seed: int = FIRST_DETECTOR_SEED,
) -> np.ndarray:
    """Skim decisions of the same generated events under ``resimulations`` detector seeds
    ``first_seed, first_seed + 1, ...``: bool [resimulations, n_events]."""
    from smartbkg_prod.physics.detector import simulate
    from smartbkg_prod.physics.skim import skim

    simulation = SimulationConfig() if simulation is None else simulation
    skim_config = SkimConfig() if skim_config is None else skim_config
    passes = np.empty((resimulations, particles.n_events), dtype=bool)
    for k in range(resimulations):
        passes[k] = skim(simulate(particles, simulation, first_seed + k), skim_config).passed
    return passes


def pass_fraction(passes: np.ndarray) -> np.ndarray:
    """Per-event pass fraction q̂ over the seeds (rows) of a pass matrix."""
    return np.asarray(passes, dtype=np.float64).mean(axis=0)


def _bound_figures(
    mean_q: np.ndarray, mean_root_q: np.ndarray, costs: StageCosts
) -> tuple[np.ndarray, np.ndarray]:
    """(ρ, exact fraction bound) from E[q] and E[√q]; works on arrays of replicas."""
    c = (costs.generation_ms + costs.filter_ms) / costs.simulation_ms
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (mean_q / mean_root_q) ** 2
        fraction = (c + mean_q) / (mean_root_q**2 / mean_q + c)
    return ratio, fraction


def _bootstrap_indices(n_events: int, replicas: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n_events, size=(replicas, n_events))


def upper_bound(
    pass_probability: np.ndarray,
    costs: StageCosts,
    *,
    bootstrap: int = BOOTSTRAP_REPLICAS,
    seed: int = 0,
) -> OracleBound:
    """ρ and (c + r)/(E[√q]²/r + c) from per-event pass probabilities: exact ``q`` gives
    the bound itself, the pass fractions q̂ of :func:`pass_fraction` an upward-biased
    estimate of it. ``bootstrap`` replicas over events give the errors (0: none)."""
    q = np.asarray(pass_probability, dtype=np.float64)
    root_q = np.sqrt(q)
    ratio, fraction = _bound_figures(q.mean(), root_q.mean(), costs)
    ratio_error = fraction_error = float("nan")
    if bootstrap > 0:
        indices = _bootstrap_indices(len(q), bootstrap, seed)
        ratios, fractions = _bound_figures(
            q[indices].mean(axis=1), root_q[indices].mean(axis=1), costs
        )
        ratio_error, fraction_error = float(np.std(ratios)), float(np.std(fractions))
    return OracleBound(
        n_events=len(q),
        retention=float(q.mean()),
        mean_root_pass_probability=float(root_q.mean()),
        ratio=float(ratio),
        ratio_error=ratio_error,
        fraction_of_max=float(fraction),
        fraction_of_max_error=fraction_error,
        costs_ms=costs.to_dict(),
    )


def _fraction_of_max(p: np.ndarray, passed: np.ndarray, costs: StageCosts) -> np.ndarray:
    """S/S_max over the last axis (events) of keep probabilities and labels."""
    n_passed = passed.sum(axis=-1)
    mean_inverse_p = np.sum(passed / p, axis=-1) / n_passed
    sample = sampling_speedup_from_means(mean_inverse_p, p.mean(axis=-1), costs)
    return sample / max_speedup(n_passed / passed.shape[-1], costs)


def held_out_fraction(
    passes: np.ndarray,
    resimulations: int,
    costs: StageCosts,
    *,
    labels: int = 8,
    bootstrap: int = BOOTSTRAP_REPLICAS,
    seed: int = 0,
) -> HeldOutFraction:
    """Achievable S/S_max: label seed ``j`` (j < ``labels``), q̂ from the ``resimulations``
    rows after it (cyclically) of ``passes`` [seeds, n_events], which needs at least
    ``resimulations + 1`` rows."""
    from smartbkg_prod.filter.sampling import fit_calibration

    passes = np.asarray(passes, dtype=bool)
    n_seeds, n_events = passes.shape
    if resimulations + 1 > n_seeds:
        raise ValueError(
            f"held-out estimate with {resimulations} resimulations needs "
            f"{resimulations + 1} seeds; the pass matrix has {n_seeds}"
        )
    labels = min(labels, n_seeds)
    indices = _bootstrap_indices(n_events, bootstrap, seed) if bootstrap > 0 else None
    samples, maxima, fractions, replica_fractions, scales, p_mins = [], [], [], [], [], []
    for label in range(labels):
        rows = (label + 1 + np.arange(resimulations)) % n_seeds
        q_hat = pass_fraction(passes[rows])
        passed = passes[label]
        calibration = fit_calibration(q_hat, passed, costs)
        p = calibration.keep_probability(q_hat)
        samples.append(sampling_speedup(p, passed, costs))
        maxima.append(max_speedup(float(passed.mean()), costs))
        fractions.append(samples[-1] / maxima[-1])
        scales.append(calibration.scale)
        p_mins.append(calibration.p_min)
        if indices is not None:
            replica_fractions.append(_fraction_of_max(p[indices], passed[indices], costs))
    error = float(np.std(np.mean(replica_fractions, axis=0))) if replica_fractions else float("nan")
    return HeldOutFraction(
        resimulations=resimulations,
        labels=labels,
        n_events=n_events,
        sample_speedup=float(np.mean(samples)),
        max_speedup=float(np.mean(maxima)),
        fraction_of_max=float(np.mean(fractions)),
        fraction_of_max_error=error,
        fraction_of_max_spread=float(np.std(fractions)),
        scales=scales,
        p_mins=p_mins,
        costs_ms=costs.to_dict(),
    )


def resimulation_scan(
    passes: np.ndarray,
    resimulation_counts: tuple[int, ...],
    costs: StageCosts,
    *,
    labels: int = 8,
    bootstrap: int = BOOTSTRAP_REPLICAS,
) -> list[OracleScanPoint]:
    """Both estimates for each K in ``resimulation_counts``: the bound from the first K
    rows of ``passes``, the held-out fraction from :func:`held_out_fraction`."""
    return [
        OracleScanPoint(
            resimulations=k,
            upper_bound=upper_bound(pass_fraction(passes[:k]), costs, bootstrap=bootstrap),
            held_out=held_out_fraction(passes, k, costs, labels=labels, bootstrap=bootstrap),
        )
        for k in resimulation_counts
    ]
