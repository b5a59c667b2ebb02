"""One real small local campaign (Pythia, simulation, skim, ROOT output) seen by the monitor."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from smartbkg_prod.monitor.collect import collect_directory
from smartbkg_prod.monitor.figures import campaign_figures
from smartbkg_prod.monitor.metrics import exposition
from smartbkg_prod.store import Store
from smartbkg_prod.submit import submit_campaign

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_campaign(tmp_path_factory):
    """Three jobs; job 1 fails stage-out once (with a report), job 2 is killed once (none)."""
    tmp_path = tmp_path_factory.mktemp("campaign")
    from smartbkg_prod.spec import Campaign

    campaign = Campaign(
        name="small",
        process="bbbar_generic",
        events=750,
        events_per_job=300,
        seed=7,
        outputs={"directory": str(tmp_path / "out")},
        backend={"max_parallel": 2},
    )
    store = Store(f"sqlite:///{tmp_path / 'jobs.db'}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(
            "SMARTBKG_INJECT_FAULT",
            "raise=STAGE_OUT@write:job=1:attempt=1;kill@simulate:job=2:attempt=1",
        )
        status = submit_campaign(campaign, store=store, poll_interval=0.05)
    assert status.complete, status
    return campaign, store, tmp_path


def test_figures_of_a_real_campaign_match_its_reports(finished_campaign):
    campaign, store, _tmp_path = finished_campaign
    figures = campaign_figures(store, campaign.campaign_id)
    successful = store.reports.of_campaign(campaign.campaign_id, successful_only=True)
    assert figures.status.events_generated == sum(r.events_generated for r in successful) == 750
    assert figures.status.events_skimmed == sum(r.events_skimmed for r in successful)
    assert figures.filter_pass_rate == 1.0  # filter off keeps everything
    assert figures.skim_retention == pytest.approx(figures.status.events_skimmed / 750)
    assert figures.speedups[0].value == 1.0
    all_reports = store.reports.of_campaign(campaign.campaign_id)
    assert figures.cpu_efficiency == pytest.approx(
        sum(r.cpu_seconds for r in all_reports) / sum(r.wall_seconds for r in all_reports)
    )
    assert 0 < figures.cpu_efficiency <= 1.5
    assert figures.eta_seconds == 0.0 and figures.throughput_events_per_s > 0
    assert sum(point.events for point in figures.series) == 750


def test_failures_of_a_real_campaign_are_in_the_matrix_with_their_log(finished_campaign):
    campaign, store, _tmp_path = finished_campaign
    figures = campaign_figures(store, campaign.campaign_id)
    matrix = {cell.code: cell.count for cell in figures.failure_matrix}
    assert matrix.pop("60 stage_out") == 1
    assert sum(matrix.values()) == 1  # the killed attempt, closed without a report
    stage_out = next(reason for reason in figures.top_failures if reason.code == "60 stage_out")
    assert stage_out.message and stage_out.log_excerpt
    assert figures.attempts_failed == 2 and figures.attempts_succeeded == 3


def test_collecting_the_campaign_directory_into_a_new_database(finished_campaign, tmp_path):
    campaign, store, campaign_tmp = finished_campaign
    fresh = Store(f"sqlite:///{tmp_path / 'collected.db'}")
    result = collect_directory(fresh, campaign_tmp / "out")
    assert result.registered_campaigns == [campaign.campaign_id]
    assert (result.stored, result.unreadable, result.rejected) == (4, [], [])
    assert fresh.campaigns.status(campaign.campaign_id).events_generated == 750
    assert collect_directory(fresh, campaign_tmp / "out").duplicates == 4
    families = {f.name: f for f in text_string_to_metric_families(exposition(fresh).decode())}
    failures = {
        s.labels["error_class"]: s.value for s in families["smartbkg_campaign_failures"].samples
    }
    assert failures == {"stage_out": 1.0}
