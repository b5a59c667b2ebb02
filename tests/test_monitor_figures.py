"""Monitor figures from a campaign's real JobReport objects: counts, rates, failures, drift."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner
from monitor_reports import T0, filtered_campaign, make_report, populate, register
from unavailable import require_module

from smartbkg_prod.cli.monitor import monitor, watch
from smartbkg_prod.monitor.collect import ingest_reports
from smartbkg_prod.monitor.drift import (
    FilterExpectation,
    binomial_p_value,
    campaign_expectation,
    check_drift,
    set_filter_expectation,
)
from smartbkg_prod.monitor.figures import campaign_figures, effective_speedup

NOW = T0 + 900


@pytest.fixture
def monitored(store, tmp_path):
    return populate(store, tmp_path, pass_rate=0.3, retention_kept=0.1, retention_unfiltered=0.05)[
        0
    ]


def test_event_counts_come_once_from_each_done_job(store, monitored):
    figures = campaign_figures(store, monitored, now=NOW, window_s=600)
    status = figures.status
    assert status.jobs_by_state == {
        "pending": 2,
        "running": 0,
        "done": 8,
        "failed": 0,
        "cancelled": 0,
    }
    assert (
        status.events_generated,
        status.events_kept,
        status.events_simulated,
        status.events_skimmed,
    ) == (
        8000,
        2400,
        2400,
        240,
    )
    assert figures.events_remaining == 2000
    assert figures.filter_pass_rate == pytest.approx(0.3)
    assert figures.skim_retention == pytest.approx(0.1)
    assert figures.skim_retention_error == pytest.approx(math.sqrt(0.1 * 0.9 / 2400))


def test_throughput_in_the_moving_window_and_eta(store, monitored):
    figures = campaign_figures(store, monitored, now=NOW, window_s=600)
    # Jobs 2..7 finish inside [T0+300, T0+900]: 6000 events in 600 s.
    assert figures.throughput_events_per_s == pytest.approx(10.0)
    assert figures.throughput_jobs_per_h == pytest.approx(36.0)
    assert figures.eta_seconds == pytest.approx(200.0)
    assert sum(point.events for point in figures.series) == 8000
    assert sum(point.jobs for point in figures.series) == 8
    assert not figures.stalled


def test_a_silent_incomplete_campaign_is_stalled_with_no_eta(store, monitored):
    figures = campaign_figures(store, monitored, now=T0 + 10_000, window_s=600, stall_after_s=1800)
    assert figures.throughput_events_per_s == 0
    assert figures.eta_seconds is None
    assert figures.stalled


def test_cpu_efficiency_counts_every_attempt_with_a_report(store, monitored):
    figures = campaign_figures(store, monitored, now=NOW)
    assert figures.cpu_efficiency == pytest.approx((8 * 8.0 + 3 * 2.0) / (11 * 10.0))
    sites = {site.site: site for site in figures.sites}
    assert (sites["T2_A"].attempts, sites["T2_A"].failed) == (3, 3)
    assert (sites["T2_B"].succeeded, sites["T2_B"].events_generated) == (4, 4000)
    assert (sites["T2_C"].succeeded, sites["T2_C"].failed, sites["T2_C"].failure_rate) == (
        4,
        1,
        pytest.approx(0.2),
    )


def test_failure_matrix_includes_lost_attempts(store, monitored):
    figures = campaign_figures(store, monitored, now=NOW)
    matrix = {(cell.code, cell.site): cell.count for cell in figures.failure_matrix}
    assert matrix == {
        ("50 out_of_memory", "T2_A"): 2,
        ("60 stage_out", "T2_C"): 1,
        ("137 signal_9", "T2_A"): 1,
    }
    assert figures.attempts_failed == 4


def test_top_failure_reasons_carry_the_latest_log_excerpt(store, monitored):
    top = campaign_figures(store, monitored, now=NOW).top_failures
    assert [reason.code for reason in top] == ["50 out_of_memory", "137 signal_9", "60 stage_out"]
    assert top[0].count == 2 and top[0].description == "out of memory"
    assert top[0].message == "peak memory 2700 MB"
    assert top[0].log_excerpt == ["ERROR peak memory 2700 MB"]
    assert "No space left on device" in top[2].log_excerpt[-1]
    assert top[1].message.startswith("no report")


def test_recent_failures_are_newest_first_with_multiline_logs_split(store, monitored):
    recent = campaign_figures(store, monitored, now=NOW).recent_failures
    assert [(entry.job_index, entry.attempt) for entry in recent] == [
        (9, 1),
        (8, 1),
        (2, 1),
        (0, 1),
    ]
    assert recent[3].log_excerpt[-2:] == [
        "ERROR peak memory 2600 MB after simulate",
        "exceeds the requested 2000 MB",
    ]


def test_effective_speedup_follows_the_hard_cut_formula(store, monitored):
    reference = campaign_figures(store, monitored, now=NOW).speedups[0]
    assert reference.costs == "reference"
    assert reference.t_nn_ms == pytest.approx(0.5)  # 8 jobs x 0.5 s / 8000 events
    t_g, t_nn, t_s, r = 0.08, 0.5, 97.0, 0.05
    keep_pass = 0.3 * 0.1 / r  # epsilon_1 = p_keep * r_kept / r
    expected = (
        keep_pass
        * (t_g + t_s)
        / (t_g + t_nn + t_s * (r * keep_pass + (1 - r) * (0.3 - r * keep_pass) / (1 - r)))
    )
    assert reference.value == pytest.approx(expected)
    assert reference.ideal == pytest.approx((t_g + t_s) / (t_g + t_nn + r * t_s))


def test_sampling_speedup_uses_the_mean_weight_of_skimmed_events(store, monitored):
    status = campaign_figures(store, monitored, now=NOW).status.model_copy(
        update={"sum_weights_skimmed": 480.0}
    )
    speedup = effective_speedup("reference", "sample", 0.08, 0.5, 97.0, 0.3, 0.1, status, None)
    assert speedup.value == pytest.approx((0.08 + 97.0) / (2.0 * (0.08 + 0.5 + 97.0 * 0.3)))
    assert "upper bound" in speedup.note


def test_no_drift_alarm_when_rates_match_the_model(store, monitored):
    drift = campaign_figures(store, monitored, now=NOW).drift
    assert [check.quantity for check in drift.checks] == ["filter_pass_rate", "skim_retention_kept"]
    assert not drift.alarm
    assert drift.expectation.source == "operator"


def test_drift_alarm_when_the_pass_rate_moves(store, monitored):
    set_filter_expectation(store, monitored, pass_rate=0.25, retention_kept=0.1)
    drift = campaign_figures(store, monitored, now=NOW).drift
    alarms = {check.quantity: check.alarm for check in drift.checks}
    assert alarms == {"filter_pass_rate": True, "skim_retention_kept": False}
    assert drift.checks[0].z == pytest.approx((2400 - 2000) / math.sqrt(8000 * 0.25 * 0.75))


def test_drift_needs_enough_events_before_alarming():
    few = check_drift(FilterExpectation(pass_rate=0.5), 20, 20, 0, 0, min_trials=100)
    assert few.checks[0].p_value < 1e-5 and not few.alarm


def test_expectation_is_found_in_model_metadata_of_any_shape(tmp_path):
    provenance = {
        "filter_model": {"validation": {"keep_rate": 0.2, "retention_kept": 0.15}, "auc": 0.9}
    }
    found = campaign_expectation(provenance, {})
    assert (found.pass_rate, found.retention_kept, found.source) == (
        0.2,
        0.15,
        "provenance.filter_model",
    )
    sidecar = tmp_path / "model.json"
    sidecar.write_text(json.dumps({"expected_pass_rate": 0.4, "skim_retention": 0.04}))
    spec = {"filter": {"mode": "cut", "model": str(tmp_path / "model.pt")}}
    from_sidecar = campaign_expectation({}, spec)
    assert (from_sidecar.pass_rate, from_sidecar.retention_unfiltered) == (0.4, 0.04)


@pytest.mark.parametrize(
    "provenance",
    [
        None,
        "text",
        {"filter_model": [1, 2]},
        {"filter_model": {"pass_rate": "high"}},
        {"model": {"keep_rate": 7}},
    ],
)
def test_garbage_metadata_gives_no_expectation(provenance):
    assert (
        campaign_expectation(provenance, {"filter": {"mode": "cut", "model": "/nonexistent.pt"}})
        is None
    )


def test_binomial_p_value_agrees_with_scipy():
    stats = require_module("scipy.stats")
    for k, n, p in [
        (3, 10, 0.5),
        (0, 30, 0.1),
        (40, 200, 0.1),
        (2400, 8000, 0.3),
        (2600, 8000, 0.3),
        (5, 50_000, 0.0002),
    ]:
        assert binomial_p_value(k, n, p) == pytest.approx(
            stats.binomtest(k, n, p).pvalue, rel=0.05, abs=1e-12
        )
    large = binomial_p_value(30_500, 100_000, 0.3)
    assert large == pytest.approx(stats.binomtest(30_500, 100_000, 0.3).pvalue, rel=0.05)


def test_watch_redraws_the_live_view(store, monitored):
    lines: list[str] = []
    watch(store.url, "monitored", interval=0.01, iterations=2, echo=lines.append, clear=False)
    assert len(lines) == 2
    assert "monitored (" in lines[0] and "8,000/10,000 generated" in lines[0]
    assert "top fail 50 out_of_memory x2 at T2_A" in lines[0]
    result = CliRunner().invoke(monitor, ["watch", "--db", store.url, "--iterations", "1"])
    assert result.exit_code == 0, result.output
    assert "pass rate 30.00 %" in result.output


def test_cached_figures_follow_every_change_of_the_campaign(store, monitored, tmp_path):

    from smartbkg_prod.plan import plan_jobs

    jobs = plan_jobs(filtered_campaign(tmp_path))
    first = campaign_figures(store, monitored, now=NOW)
    assert campaign_figures(store, monitored, now=NOW) == first
    assert campaign_figures(store, monitored, now=NOW, cached=False) == first
    ingest_reports(store, [make_report(jobs[8], 2, "T2_B", T0 + 850)])
    assert campaign_figures(store, monitored, now=NOW).status.events_generated == 9000
    set_filter_expectation(store, monitored, pass_rate=0.2)
    assert campaign_figures(store, monitored, now=NOW).drift.alarm
    store.attempts.start(jobs[9], "local", site="T2_B")
    assert campaign_figures(store, monitored, now=NOW).attempts_running == 1
    store.attempts.finish(monitored, 9, 2, 51, "walltime", final=True)
    figures = campaign_figures(store, monitored, now=NOW)
    assert (figures.attempts_running, figures.status.jobs_by_state["failed"]) == (0, 1)
    assert figures == campaign_figures(store, monitored, now=NOW, cached=False)


def test_cpu_efficiency_is_per_core_requested(store, tmp_path):
    campaign = filtered_campaign(tmp_path)
    four_cores = campaign.model_copy(
        update={"resources": campaign.resources.model_copy(update={"cores": 4})}
    )
    jobs = register(store, four_cores, tmp_path)
    ingest_reports(store, [make_report(jobs[0], 1, "T2_B", T0)])  # 8 cpu s in 10 wall s
    figures = campaign_figures(store, four_cores.campaign_id)
    assert figures.cpu_efficiency == pytest.approx(8.0 / (10.0 * 4))
    assert figures.sites[0].cpu_efficiency == pytest.approx(0.2)
