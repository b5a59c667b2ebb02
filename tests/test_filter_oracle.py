"""The generator-level oracle bound: known answers, its Jensen bias, and that the held-out
achievable estimate and the √q keep probability stay below it."""

from __future__ import annotations

import numpy as np
import pytest

from smartbkg_prod.filter.oracle import (
    held_out_fraction,
    pass_fraction,
    resimulate_passes,
    resimulation_scan,
    upper_bound,
)
from smartbkg_prod.filter.speedup import max_speedup, reference_costs, sampling_speedup

COSTS = reference_costs(0.064)


def exact_pass_probability(n: int, seed: int) -> np.ndarray:
    """q = 0 for 85% of events, Beta(0.6, 3) for the rest (retention ~2.5%)."""
    rng = np.random.default_rng(seed)
    return np.where(rng.random(n) < 0.15, rng.beta(0.6, 3.0, n), 0.0)


def bound_ratio(q: np.ndarray) -> float:
    return float((q.mean() / np.sqrt(q).mean()) ** 2)


@pytest.fixture(scope="module")
def real_passes():
    from smartbkg_prod.physics.generate import generate_events

    particles = generate_events("bbbar_generic", 1500, seed=4242)
    return particles, resimulate_passes(particles, 9)


def test_events_that_always_or_never_pass_give_a_bound_of_one():
    passes = np.zeros((6, 1000), dtype=bool)
    passes[:, :37] = True
    bound = upper_bound(pass_fraction(passes), COSTS)
    assert bound.ratio == pytest.approx(1.0)
    assert bound.fraction_of_max == pytest.approx(1.0)
    assert bound.retention == pytest.approx(0.037)


def test_a_fraction_passing_with_probability_q0_gives_a_bound_of_q0():
    fraction, q0 = 0.2, 0.3
    passes = np.zeros((10, 1000), dtype=bool)
    passes[:3, :200] = True  # the first 20% of events pass 3 of 10 seeds
    bound = upper_bound(pass_fraction(passes), COSTS)
    c = (COSTS.generation_ms + COSTS.filter_ms) / COSTS.simulation_ms
    assert bound.ratio == pytest.approx(q0)
    assert bound.fraction_of_max == pytest.approx((c + fraction * q0) / (fraction + c))
    assert bound.ratio_error == pytest.approx(0.0, abs=1e-12)  # q̂/√q̂ is the same everywhere


def test_finite_resimulations_bias_the_bound_up():
    q = exact_pass_probability(50_000, seed=1)
    rng = np.random.default_rng(2)
    ratios = {
        k: np.mean(
            [upper_bound(pass_fraction(rng.random((k, len(q))) < q), COSTS).ratio for _ in range(3)]
        )
        for k in (4, 32)
    }
    true_ratio = bound_ratio(q)
    error = upper_bound(q, COSTS).ratio_error
    assert ratios[4] > ratios[32] > true_ratio + 3 * error


def test_square_root_keep_probability_on_exact_q_reaches_the_bound():
    q = exact_pass_probability(400_000, seed=3)
    passed = np.random.default_rng(4).random(len(q)) < q
    fractions = [
        sampling_speedup(np.clip(k * np.sqrt(q), 1e-4, 1.0), passed, COSTS)
        / max_speedup(float(passed.mean()), COSTS)
        for k in np.geomspace(0.5, 20.0, 60)
    ]
    bound = upper_bound(q, COSTS)
    assert max(fractions) == pytest.approx(bound.fraction_of_max, rel=0.03)
    assert max(fractions) < bound.fraction_of_max + 3 * bound.fraction_of_max_error


def test_linear_keep_probability_stays_well_below_the_bound():
    q = exact_pass_probability(400_000, seed=3)
    passed = np.random.default_rng(4).random(len(q)) < q
    best_linear = max(
        sampling_speedup(np.clip(k * q, 1e-4, 1.0), passed, COSTS)
        / max_speedup(float(passed.mean()), COSTS)
        for k in np.geomspace(0.5, 200.0, 60)
    )
    assert best_linear < 0.95 * upper_bound(q, COSTS).fraction_of_max


def test_resimulated_passes_are_the_skim_decisions_of_successive_detector_seeds(real_passes):
    from smartbkg_prod.physics.detector import simulate
    from smartbkg_prod.physics.skim import skim
    from smartbkg_prod.spec import SimulationConfig, SkimConfig

    particles, passes = real_passes
    assert passes.shape == (9, 1500) and passes.dtype == bool
    direct = skim(simulate(particles, SimulationConfig(), 1003), SkimConfig()).passed
    np.testing.assert_array_equal(passes[3], direct)
    assert 0 < passes.any(axis=0).sum() < 1500  # the detector makes some events flip


def test_bound_is_above_the_held_out_achievable_fraction_on_real_events(real_passes):
    _, passes = real_passes
    (point,) = resimulation_scan(passes, (8,), COSTS, labels=4, bootstrap=50)
    assert 0.0 < point.held_out.fraction_of_max < point.upper_bound.fraction_of_max
    assert point.upper_bound.ratio < point.upper_bound.fraction_of_max


def test_held_out_estimate_needs_one_seed_more_than_it_resimulates(real_passes):
    _, passes = real_passes
    with pytest.raises(ValueError, match="needs 10 seeds"):
        held_out_fraction(passes, 9, COSTS)
