"""Importance sampling is unbiased; speedup and bias figures behave as the formulas say."""

from __future__ import annotations

import numpy as np
import pytest

from smartbkg_prod.filter.metrics import bias_tests, histogram_edges
from smartbkg_prod.filter.sampling import SamplingCalibration, decide, fit_calibration
from smartbkg_prod.filter.speedup import (
    StageCosts,
    cut_speedup,
    max_speedup,
    reference_costs,
    sampling_speedup,
)


def synthetic_scores(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A 5% retention sample whose scores separate the classes (AUC ~0.9)."""
    rng = np.random.default_rng(seed)
    passed = rng.random(n) < 0.05
    logit = rng.normal(np.where(passed, 1.8, -1.0), 1.0)
    return 1 / (1 + np.exp(-logit)), passed


def test_weighted_totals_are_unbiased_within_statistical_errors():
    scores, passed = synthetic_scores(200_000, seed=1)
    calibration = fit_calibration(scores[:50_000], passed[:50_000], reference_costs(0.05))
    scores, passed = scores[50_000:], passed[50_000:]
    pulls = []
    for seed in range(20):
        decision = decide(
            scores, "sample", np.random.default_rng(seed), calibration=calibration, p_min=0.01
        )
        p = decision.keep_probability[passed]
        sigma = np.sqrt(np.sum((1 - p) / p))
        pulls.append((decision.weight[passed].sum() - passed.sum()) / sigma)
    assert abs(np.mean(pulls)) < 4 / np.sqrt(len(pulls))
    assert 0.4 < np.std(pulls) < 1.8


def test_calibrated_sampling_beats_half_the_ideal_speedup_for_a_good_classifier():
    scores, passed = synthetic_scores(100_000, seed=2)
    costs = reference_costs(0.05)
    calibration = fit_calibration(scores, passed, costs)
    speedup = sampling_speedup(calibration.keep_probability(scores), passed, costs)
    assert 1.0 < speedup < max_speedup(passed.mean(), costs)


def test_keep_probability_follows_square_root_of_calibrated_pass_rate():
    calibration = SamplingCalibration(
        score=(0.0, 1.0), pass_probability=(0.0, 1.0), scale=2.0, p_min=0.01
    )
    p = calibration.keep_probability(np.array([0.0, 0.01, 0.04, 0.5]))
    np.testing.assert_allclose(p, [0.01, 0.2, 0.4, 1.0])


def test_a_perfect_cut_reaches_the_ideal_speedup():
    costs = StageCosts(0.08, 0.1, 97.0)
    assert cut_speedup(0.05, 1.0, 0.0, costs) == pytest.approx(max_speedup(0.05, costs))
    passed = np.arange(1000) < 50
    assert sampling_speedup(passed.astype(float) + 1e-12, passed, costs) == pytest.approx(
        max_speedup(0.05, costs), rel=1e-6
    )


def test_keeping_everything_gives_no_speedup_but_costs_the_filter():
    costs = StageCosts(0.08, 0.1, 97.0)
    assert cut_speedup(0.05, 1.0, 1.0, costs) == pytest.approx(97.08 / 97.18)


def test_a_sample_tested_against_itself_has_no_bias():
    values = {"x": np.random.default_rng(0).normal(size=5000)}
    (result,) = bias_tests(values, np.ones(5000), np.ones(5000), values, {"x": "continuous"})
    assert result.kl_divergence == pytest.approx(0.0, abs=1e-12)
    assert result.p_value == 1.0


def test_thinning_a_region_without_weights_is_detected_as_bias():
    rng = np.random.default_rng(0)
    values = rng.normal(size=20000)
    keep = (values < 1.0) | (rng.random(20000) < 0.3)
    (result,) = bias_tests(
        {"x": values},
        np.where(keep, 1.0, 0.0),
        keep.astype(float),
        {"x": rng.normal(size=20000)},
        {"x": "continuous"},
    )
    assert result.kl_divergence > 0.01
    assert result.p_value < 1e-10


def test_distance_correlation_separates_dependent_from_independent_variables():
    import torch

    from smartbkg_prod.filter.train import distance_correlation_squared

    generator = torch.Generator().manual_seed(0)
    x = torch.rand(500, generator=generator)
    assert distance_correlation_squared(x, x**2).item() > 0.9
    assert distance_correlation_squared(x, torch.rand(500, generator=generator)).item() < 0.05


def test_speedup_loss_is_the_inverse_of_the_sampling_speedup():
    import torch

    from smartbkg_prod.filter.train import inverse_speedup

    scores, passed = synthetic_scores(2000, seed=4)
    costs = reference_costs(0.05)
    loss = inverse_speedup(torch.tensor(scores), torch.tensor(passed), costs, p_min=0.01)
    assert loss.item() == pytest.approx(
        1 / sampling_speedup(np.clip(scores, 0.01, 1), passed, costs), rel=1e-5
    )


def test_campaign_speedup_from_kept_events_matches_the_full_formula():
    from smartbkg_prod.filter.speedup import campaign_sampling_speedup

    scores, passed = synthetic_scores(200_000, seed=5)
    costs = reference_costs(0.05)
    calibration = fit_calibration(scores, passed, costs)
    estimates = []
    for seed in range(10):
        decision = decide(
            scores, "sample", np.random.default_rng(seed), calibration=calibration, p_min=0.02
        )
        kept_passing = decision.weight[decision.keep & passed]
        estimates.append(
            campaign_sampling_speedup(len(scores), int(decision.keep.sum()), kept_passing, costs)
        )
    expected = sampling_speedup(decision.keep_probability, passed, costs)
    assert np.mean(estimates) == pytest.approx(expected, rel=0.05)


def test_discrete_bins_never_isolate_a_rare_minimum():
    # Seven events at the minimum of a 25k-event multiplicity: a bin of their own would
    # make the KL divergence hinge on whether the filter kept one of them.
    values = np.concatenate([[3.0] * 7, np.random.default_rng(1).poisson(10, 25_000) + 4.0])
    edges = histogram_edges(values, 20, "discrete")
    counts = np.histogram(values, edges)[0]
    assert counts.sum() == len(values)
    assert counts.min() >= 0.005 * len(values)
    assert np.all(edges % 1 == 0.5)
