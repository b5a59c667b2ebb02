"""The filter's control sample: per-job summaries, the χ² test, and real filtered campaigns
whose monitor finds a cut biased and importance sampling unbiased."""

from __future__ import annotations

import numpy as np
import pytest
from monitor_reports import T0, make_report, register
from scipy import stats
from starlette.testclient import TestClient

from smartbkg_prod.filter.control import (
    add_monitors,
    compare_histogram,
    control_draw,
    filter_check,
    job_monitor,
    monitor_edges,
)
from smartbkg_prod.filter.metrics import unweighted_weighted_chi2
from smartbkg_prod.filter.speedup import reference_costs
from smartbkg_prod.filter.summary import BiasHistogram
from smartbkg_prod.monitor.collect import ingest_reports
from smartbkg_prod.monitor.figures import campaign_figures
from smartbkg_prod.monitor.metrics import registry_for
from smartbkg_prod.monitor.web import create_app
from smartbkg_prod.physics.rootio import read_output
from smartbkg_prod.plan import campaign_output_dir
from smartbkg_prod.spec import Campaign, SkimConfig
from smartbkg_prod.submit import submit_campaign


def sampled_histograms(rng, n_events: int, shift: float = 0.0, fraction: float = 0.3):
    """An unweighted control histogram and an importance-sampled weighted one of the same
    (or, with ``shift``, a shifted) Gaussian variable."""
    edges = np.linspace(-3, 3, 16)
    control_values = rng.normal(0.0, 1.0, rng.binomial(n_events, fraction))
    values = rng.normal(shift, 1.0, n_events)
    p = np.clip(0.2 + 0.6 * (values > 0), 0.05, 1.0)
    kept = rng.random(n_events) < p
    w = 1.0 / p[kept]
    counts = np.histogram(np.clip(control_values, -2.999, 2.999), edges)[0]
    inside = np.clip(values[kept], -2.999, 2.999)
    return (
        counts,
        np.histogram(inside, edges, weights=w)[0],
        np.histogram(inside, edges, weights=w * w)[0],
    )


def test_unweighted_weighted_chi2_p_values_are_uniform_without_bias():
    rng = np.random.default_rng(11)
    p_values = []
    for _ in range(300):
        chi2, ndf = unweighted_weighted_chi2(*sampled_histograms(rng, 3000))
        p_values.append(stats.chi2.sf(chi2, ndf))
    p_values = np.array(p_values)
    assert 0.02 < np.mean(p_values < 0.05) < 0.09
    assert stats.kstest(p_values, "uniform").pvalue > 0.001


def test_control_p_values_calibrated_from_histograms_hold_with_heavy_weights():
    """2 % of the filtered events at p = 0.005 (weight 200): the asymptotic χ² law gives
    false alarms; the p-value calibrated on toys made from the histograms is uniform."""
    rng = np.random.default_rng(5)
    edges = np.linspace(-3, 3, 16)
    calibrated, asymptotic = [], []
    for _ in range(200):
        control_values = np.clip(rng.normal(0.0, 1.0, rng.binomial(3000, 0.3)), -2.999, 2.999)
        values = np.clip(rng.normal(0.0, 1.0, 3000), -2.999, 2.999)
        p = np.where(rng.random(3000) < 0.02, 0.005, 0.2 + 0.6 * (values > 0))
        kept = rng.random(3000) < p
        w = 1.0 / p[kept]
        histogram = BiasHistogram(
            edges=edges.tolist(),
            control=np.histogram(control_values, edges)[0].tolist(),
            weighted=np.histogram(values[kept], edges, weights=w)[0].tolist(),
            weighted_squares=np.histogram(values[kept], edges, weights=w * w)[0].tolist(),
        )
        test = compare_histogram("x", histogram, 0.3, toys=500, rng=rng)
        calibrated.append(test.p_value)
        asymptotic.append(test.p_value_asymptotic)
    calibrated = np.array(calibrated)
    assert np.mean(calibrated < 0.05) < 0.1
    assert 0.35 < np.mean(calibrated < 0.5) < 0.65
    assert np.mean(np.array(asymptotic) < 0.05) > np.mean(calibrated < 0.05)


def test_unweighted_weighted_chi2_finds_a_shifted_distribution():
    chi2, ndf = unweighted_weighted_chi2(
        *sampled_histograms(np.random.default_rng(5), 3000, shift=0.3)
    )
    assert stats.chi2.sf(chi2, ndf) < 1e-6


def test_empty_bins_on_either_side_give_a_finite_chi2():
    chi2, ndf = unweighted_weighted_chi2(
        np.array([0, 5, 9, 3]), np.array([4.0, 0.0, 12.0, 2.0]), np.array([16.0, 0.0, 30.0, 2.0])
    )
    assert np.isfinite(chi2) and ndf == 3


def test_control_draw_is_deterministic_and_independent_of_the_filter_stream():
    first = control_draw(10_000, 0.1, seed=42)
    assert np.array_equal(first, control_draw(10_000, 0.1, seed=42))
    assert 850 < first.sum() < 1150
    filter_stream = np.random.default_rng(42).random(10_000) < 0.1
    assert abs(np.corrcoef(first, filter_stream)[0, 1]) < 0.05
    assert not control_draw(100, 0.0, seed=1).any()


def job_arrays(rng, n_events: int):
    variables = {name: rng.normal(5.0, 3.0, n_events) for name in monitor_edges(SkimConfig())}
    variables["mbc"][rng.random(n_events) < 0.5] = np.nan
    p = rng.uniform(0.05, 1.0, n_events)
    kept = rng.random(n_events) < p
    control = rng.random(n_events) < 0.2
    return dict(
        variables=variables,
        passed=rng.random(n_events) < 0.3,
        kept=kept,
        control=control,
        weights=np.where(kept, 1.0 / p, 0.0),
        keep_probability=p,
    )


def monitor_of(arrays) -> object:
    arrays = dict(arrays)
    return job_monitor(
        arrays.pop("variables"),
        monitor_edges(SkimConfig()),
        control_fraction=0.2,
        sample_mode=True,
        **arrays,
    )


def test_job_monitors_add_up_to_the_monitor_of_all_events():
    rng = np.random.default_rng(3)
    parts = [job_arrays(rng, 500), job_arrays(rng, 700)]
    whole = {
        key: (
            {name: np.concatenate([p[key][name] for p in parts]) for name in parts[0][key]}
            if key == "variables"
            else np.concatenate([p[key] for p in parts])
        )
        for key in parts[0]
    }
    summed = add_monitors([monitor_of(part) for part in parts])
    direct = monitor_of(whole)
    assert summed.control_events == direct.control_events
    assert summed.control_sum_inverse_p_skimmed == pytest.approx(
        direct.control_sum_inverse_p_skimmed
    )
    for name, histogram in direct.histograms.items():
        assert summed.histograms[name].control == histogram.control
        assert np.allclose(summed.histograms[name].weighted, histogram.weighted)
        assert np.allclose(summed.histograms[name].weighted_squares, histogram.weighted_squares)
    # NaN (no candidate) is not counted; out-of-range values land in the edge bins.
    assert sum(direct.histograms["mbc"].control) < sum(direct.histograms["n_tracks"].control)
    assert sum(direct.histograms["n_tracks"].control) == direct.control_skimmed


def test_monitors_with_different_binning_are_refused():
    rng = np.random.default_rng(4)
    first = monitor_of(job_arrays(rng, 200))
    other = first.model_copy(update={"control_fraction": 0.1})
    with pytest.raises(ValueError, match="control fraction or binning"):
        add_monitors([first, other])


def test_no_bias_alarm_below_the_minimum_of_skimmed_control_events():
    rng = np.random.default_rng(12)
    arrays = job_arrays(rng, 300)
    arrays["kept"][:] = False  # a filter that drops everything: as biased as can be
    arrays["weights"][:] = 0.0
    check = filter_check(monitor_of(arrays), "sample", reference_costs(0.05))
    assert check.control_skimmed < 100 and not check.biased
    assert "no alarm below 100" in check.note


def test_filter_check_measures_keep_rates_and_speedup_on_control_events():
    rng = np.random.default_rng(9)
    arrays = job_arrays(rng, 5000)
    check = filter_check(monitor_of(arrays), "sample", reference_costs(0.05))
    control, passed = arrays["control"], arrays["passed"]
    p = arrays["keep_probability"]
    assert check.mean_keep_probability == pytest.approx(p[control].mean())
    assert check.mean_inverse_p_passing == pytest.approx(np.mean(1 / p[control & passed]))
    assert check.keep_rate_passing == pytest.approx(arrays["kept"][control & passed].mean())


def filtered_campaign(tmp_path, mode: str, **filter_options) -> Campaign:
    return Campaign(
        name=f"control-{mode}",
        process="bbbar_generic",
        events=12_000,
        events_per_job=3000,
        seed=515,
        filter={"mode": mode, "model": "default", "control_fraction": 0.3, **filter_options},
        outputs={"directory": str(tmp_path / "out")},
        backend={"max_parallel": 2},
    )


@pytest.mark.slow
def test_sampled_campaign_counts_control_events_once_and_shows_no_bias(tmp_path, store):
    campaign = filtered_campaign(tmp_path, "sample", p_min=0.05)
    status = submit_campaign(campaign, store=store, poll_interval=0.05)
    assert status.complete
    contents = [read_output(path) for path in campaign_output_dir(campaign).glob("*.root")]
    weight = np.concatenate([c.weight for c in contents])
    control = np.concatenate([c.control for c in contents])
    passed = np.concatenate([c.passed_skim for c in contents])
    events = np.concatenate([c.event_number for c in contents])
    # Every simulated event once: kept (weight > 0) or control, never neither.
    assert len(np.unique(events)) == len(events) == status.events_simulated
    assert np.all((weight > 0) | control)
    assert int(np.count_nonzero(weight > 0)) == status.events_kept
    assert int(np.count_nonzero(passed & (weight > 0))) == status.events_skimmed
    assert weight[passed].sum() == pytest.approx(status.sum_weights_skimmed)

    figures = campaign_figures(store, campaign.campaign_id)
    check = figures.filter_check
    assert check.control_events == int(control.sum())
    assert check.control_skimmed == int(np.count_nonzero(control & passed))
    assert not check.biased, check.model_dump(exclude={"variables"})
    assert abs(check.normalization_pull) < 3
    assert 1.0 < check.speedup < check.max_speedup
    # The campaign's own Σw²/Σw now gives <1/p>_pass: no upper-bound caveat.
    assert figures.speedups[0].note == ""
    # At the stage costs this campaign measured (the fast simulation, ~0.3 ms per event
    # with the skim, against 97 ms of full simulation) the filter does not pay.
    measured = figures.speedups[1]
    assert check.measured_costs_ms["simulation_ms"] == pytest.approx(measured.t_s_ms)
    assert check.measured_costs_ms["generation_ms"] == pytest.approx(measured.t_g_ms)
    assert check.measured_speedup < 1.0 < check.speedup

    page = TestClient(create_app(store)).get(f"/campaign/{campaign.campaign_id}").text
    assert "Filter consistent with no bias" in page and "bias-mbc" in page
    assert "at this campaign's measured stage costs" in page
    metrics = registry_for(store)
    assert (
        metrics.get_sample_value(
            "smartbkg_campaign_filter_bias_alarm", {"campaign": campaign.campaign_id}
        )
        == 0.0
    )
    assert metrics.get_sample_value(
        "smartbkg_campaign_filter_bias_p_value",
        {"campaign": campaign.campaign_id, "variable": "mbc"},
    ) == pytest.approx(next(v.p_value for v in check.variables if v.variable == "mbc"))


@pytest.mark.slow
def test_a_hard_cut_shows_as_bias_in_the_control_sample(tmp_path, store):
    # The shipped model keeps ~28 % of passing events above 0.98 (82 % above 0.9).
    campaign = filtered_campaign(tmp_path, "cut", threshold=0.98)
    submit_campaign(campaign, store=store, poll_interval=0.05)
    check = campaign_figures(store, campaign.campaign_id).filter_check
    assert check.biased
    assert check.keep_rate_passing < 0.6
    # The cut loses passing events: fewer skimmed events than the control sample predicts.
    assert check.normalization_pull < -3
    page = TestClient(create_app(store)).get(f"/campaign/{campaign.campaign_id}").text
    assert "Filter bias: ALARM" in page


def test_live_refreshes_add_new_jobs_once_and_agree_with_a_full_recount(tmp_path, store):
    campaign = Campaign(
        name="monitored",
        process="bbbar_generic",
        events=4000,
        events_per_job=1000,
        seed=11,
        filter={"mode": "sample", "model": str(tmp_path / "m.pt"), "control_fraction": 0.2},
        outputs={"directory": str(tmp_path / "out")},
    )
    jobs = register(store, campaign, tmp_path)
    rng = np.random.default_rng(21)
    monitors = [monitor_of(job_arrays(rng, 1000)) for _ in range(5)]

    def deliver(job_index: int, attempt: int, monitor) -> None:
        report = make_report(jobs[job_index], attempt, "T2_A", T0 + 10 * attempt + job_index)
        ingest_reports(store, [report.model_copy(update={"filter_monitor": monitor})])

    def live() -> object:
        return campaign_figures(store, campaign.campaign_id, now=T0 + 100).filter_check

    deliver(0, 1, monitors[0])
    deliver(1, 1, monitors[1])
    assert live().control_events == monitors[0].control_events + monitors[1].control_events
    deliver(1, 2, monitors[2])  # a second success of job 1: its first one counts
    deliver(2, 1, monitors[3])
    refreshed = live()
    expected = add_monitors([monitors[0], monitors[1], monitors[3]])
    assert refreshed.control_events == expected.control_events
    full = campaign_figures(store, campaign.campaign_id, now=T0 + 100, cached=False).filter_check
    assert refreshed.model_dump() == full.model_dump()
