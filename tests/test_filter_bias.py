"""The bias criterion (issue 22): the verdict names its checks, the χ² p-value is
calibrated on no-bias toys, and the Σw pull is only a check of the weight arithmetic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from smartbkg_prod.filter.data import LabelledEvents
from smartbkg_prod.filter.evaluate import (
    PULL_SEEDS,
    VARIABLE_KINDS,
    bias_verdict,
    sampling_seed_scan,
)
from smartbkg_prod.filter.metrics import BinnedSample, bias_tests, chi2_p_value, toy_chi2
from smartbkg_prod.filter.runtime import open_scorer, score_events

BENCH_EVENTS = Path(__file__).parent.parent / "benchmarks" / "data" / "filter_events.npz"
KINDS = {"x": "continuous"}


@pytest.fixture(scope="module")
def shipped_filter_on_real_events():
    """Real generic B B̄ events, the shipped model's scores and keep probabilities."""
    events = LabelledEvents.load(BENCH_EVENTS)
    scorer = open_scorer("default", "cpu")
    scores = score_events(scorer, events.particles)
    calibration = scorer.card.calibration
    return events, scores, calibration, calibration.keep_probability(scores, calibration.p_min)


def gaussian_tests(rng, toys: int, n: int = 4000, shift: float = 0.0):
    """A filtered sample (2 % of events at p = 0.005: weights of 200) against a reference."""
    values = rng.normal(shift, 1.0, n)
    p = np.where(rng.random(n) < 0.02, 0.005, rng.uniform(0.2, 1.0, n))
    weights = np.where(rng.random(n) < p, 1.0 / p, 0.0)
    return bias_tests(
        {"x": values}, weights, p, {"x": rng.normal(0.0, 1.0, n)}, KINDS, toys=toys, rng=rng
    )


def test_verdict_is_unbiased_only_when_every_check_ran_and_passed():
    rng = np.random.default_rng(1)
    calibrated = gaussian_tests(rng, toys=1000)
    verdict = bias_verdict(calibrated, 1000, 1000, min_events=1000)
    assert verdict.unbiased is True
    assert {check.name: check.status for check in verdict.checks} == {
        "calibrated_chi2": "passed",
        "sample_size": "passed",
    }
    # A check that did not run leaves the verdict open, never true.
    for not_run in (
        bias_verdict([], 1000, None, min_events=1000),
        bias_verdict(gaussian_tests(rng, toys=0), 1000, 1000, min_events=1000),
        # 200 toys cannot give p < 0.001: a check that cannot fail did not run.
        bias_verdict(gaussian_tests(rng, toys=200), 1000, 1000, min_events=1000),
        bias_verdict(calibrated, 1000, 999, min_events=1000),
    ):
        assert not_run.unbiased is None
        assert "not run" in {check.status for check in not_run.checks}
    biased = bias_verdict(gaussian_tests(rng, toys=1000, shift=0.5), 1000, 1000, min_events=1000)
    assert biased.check("calibrated_chi2").status == "failed" and biased.unbiased is False


def test_calibrated_p_value_finds_a_shifted_distribution():
    (shifted,) = gaussian_tests(np.random.default_rng(2), toys=500, shift=0.3)
    assert shifted.p_value == pytest.approx(1 / 501)


def test_calibrated_p_values_are_uniform_without_bias_on_real_events(
    shipped_filter_on_real_events,
):
    """Each 'observed' data set is drawn from the real skimmed events with their real keep
    probabilities (no bias by construction) and calibrated on toys from its own events, as
    ``evaluate`` does; the calibrated p-values must be uniform."""
    events, _, _, keep_probability = shipped_filter_on_real_events
    skimmed = events.passed
    names = [name for name in VARIABLE_KINDS if name in events.variables]
    variables = {name: events.variables[name][skimmed] for name in names}
    p = keep_probability[skimmed]
    rng = np.random.default_rng(3)
    n = len(p)
    calibrated, asymptotic = [], []
    for _ in range(150):
        filtered, reference = rng.integers(n, size=n), rng.integers(n, size=n)
        weights = np.where(rng.random(n) < p[filtered], 1.0 / p[filtered], 0.0)
        tests = bias_tests(
            {name: values[filtered] for name, values in variables.items()},
            weights,
            p[filtered],
            {name: values[reference] for name, values in variables.items()},
            {name: VARIABLE_KINDS[name] for name in names},
            reference_keep_probability=p[reference],
            toys=100,
            rng=rng,
        )
        calibrated.append(tests[names.index("mbc")].p_value)
        asymptotic.append(tests[names.index("mbc")].p_value_asymptotic)
    calibrated = np.array(calibrated)
    assert stats.kstest(calibrated, "uniform").pvalue > 0.001
    assert np.mean(calibrated < 0.1) < 0.2


def test_no_bias_toys_resample_the_keep_decisions():
    """With every p = 1 a toy's weighted sample is its drawn events: the χ² of two samples
    of one distribution, whose asymptotic p-values are then uniform."""
    rng = np.random.default_rng(4)
    pool = BinnedSample(
        bins=rng.integers(0, 10, size=(1, 5000)),
        n_bins=np.array([10]),
        keep_probability=np.ones(5000),
    )
    p_values = chi2_p_value(*toy_chi2(pool, 2000, 2000, 400, rng))[:, 0]
    assert stats.kstest(p_values, "uniform").pvalue > 0.001
    # A few heavy weights (2 % of events at p = 0.005) break the asymptotic law: its
    # p-values then fall below 0.001 far more often than 0.1 % of the time (2.5 % here).
    heavy = BinnedSample(pool.bins, pool.n_bins, np.where(rng.random(5000) < 0.02, 0.005, 1.0))
    heavy_p = chi2_p_value(*toy_chi2(heavy, 2000, 2000, 1000, rng))[:, 0]
    assert np.mean(heavy_p < 0.001) > 0.01


def test_sum_of_weights_pull_is_reported_as_weight_arithmetic_not_bias(
    shipped_filter_on_real_events,
):
    events, scores, calibration, _ = shipped_filter_on_real_events
    scan = sampling_seed_scan(events, scores, calibration, calibration.p_min, seeds=20)
    assert abs(scan.sum_weights_pull_mean) < 1.0
    assert scan.weight_arithmetic_ok is None  # fewer than PULL_SEEDS seeds
    assert PULL_SEEDS > 20
    verdict_fields = bias_verdict([], 1, 1).model_dump_json()
    assert "pull" not in verdict_fields
