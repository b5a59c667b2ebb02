"""The job database: exact event accounting, idempotent reports, resume state."""

from __future__ import annotations

import time

import pytest

from smartbkg_prod.errors import StoreError
from smartbkg_prod.plan import plan_jobs
from smartbkg_prod.report import JobReport
from smartbkg_prod.store import DONE, FAILED, PENDING, RUNNING, Store


def report_for(job, attempt: int, exit_code: int = 0, skimmed: int = 10) -> JobReport:
    now = time.time()
    ok = exit_code == 0
    return JobReport.for_job(
        job,
        "small",
        attempt,
        started_at=now - 2,
        finished_at=now,
        wall_seconds=2,
        cpu_seconds=1.5,
        events_generated=job.n_events if ok else 0,
        events_kept=job.n_events if ok else 0,
        events_simulated=job.n_events if ok else 0,
        events_skimmed=skimmed if ok else 0,
        sum_weights_skimmed=float(skimmed) if ok else 0.0,
        exit_code=exit_code,
        error_class="success" if ok else "stage_out",
    )


@pytest.fixture
def registered(store, small_campaign, tmp_path):
    jobs = plan_jobs(small_campaign)
    assert store.campaigns.register(small_campaign, jobs, tmp_path / "out")
    return jobs


def test_registering_twice_keeps_one_campaign(store, small_campaign, registered, tmp_path):
    assert not store.campaigns.register(small_campaign, registered, tmp_path / "out")
    assert store.campaigns.ids() == [small_campaign.campaign_id]
    assert store.campaigns.job_states(small_campaign.campaign_id) == {
        0: PENDING,
        1: PENDING,
        2: PENDING,
    }


def test_duplicate_report_counts_once(store, small_campaign, registered):
    job = registered[0]
    store.attempts.start(job, "local")
    assert store.reports.record(report_for(job, 1))
    assert not store.reports.record(report_for(job, 1))
    status = store.campaigns.status(small_campaign.campaign_id)
    assert status.events_generated == job.n_events
    assert status.jobs_by_state[DONE] == 1


def test_failed_then_successful_attempt_counts_events_once(store, small_campaign, registered):
    job = registered[1]
    store.attempts.start(job, "local")
    store.reports.record(report_for(job, 1, exit_code=60))
    assert store.campaigns.job_states(small_campaign.campaign_id)[1] == PENDING
    store.attempts.start(job, "local")
    store.reports.record(report_for(job, 2))
    status = store.campaigns.status(small_campaign.campaign_id)
    assert status.events_generated == job.n_events
    assert status.failed_attempts == 1
    assert store.campaigns.job_attempts(small_campaign.campaign_id)[1] == 2


def test_two_successful_attempts_of_one_job_count_once(store, small_campaign, registered):
    job = registered[2]
    for attempt in (1, 2):
        store.attempts.start(job, "local")
        store.reports.record(report_for(job, attempt, skimmed=7))
    status = store.campaigns.status(small_campaign.campaign_id)
    assert status.events_generated == job.n_events
    assert status.events_skimmed == 7


def test_final_failure_marks_the_job_failed(store, small_campaign, registered):
    job = registered[0]
    store.attempts.start(job, "local")
    store.reports.record(report_for(job, 1, exit_code=60), final=True)
    assert store.campaigns.job_states(small_campaign.campaign_id)[0] == FAILED


def test_lost_attempt_is_closed_and_job_can_run_again(store, small_campaign, registered):
    job = registered[0]
    store.attempts.start(job, "local")
    assert store.attempts.running(small_campaign.campaign_id) == {0: [1]}
    assert store.campaigns.job_states(small_campaign.campaign_id)[0] == RUNNING
    store.attempts.finish(
        small_campaign.campaign_id, 0, 1, 137, "signal_9", final=False, native_code="signal:9"
    )
    assert store.attempts.running(small_campaign.campaign_id) == {}
    assert store.campaigns.job_states(small_campaign.campaign_id)[0] == PENDING


def test_status_of_complete_campaign(store, small_campaign, registered):
    for job in registered:
        store.attempts.start(job, "local")
        store.reports.record(report_for(job, 1, skimmed=15))
    status = store.campaigns.status(small_campaign.campaign_id)
    assert status.complete
    assert status.events_generated == status.events_requested == 750
    assert status.retention == pytest.approx(45 / 750)
    assert status.retention_error == pytest.approx((45 / 750 * (1 - 45 / 750) / 750) ** 0.5)
    assert status.throughput_events_per_s > 0


def test_unknown_campaign_and_bad_url_are_clear_errors(store, tmp_path):
    with pytest.raises(StoreError, match="no campaign"):
        store.campaigns.status("nope")
    with pytest.raises(StoreError, match="not usable"):
        Store("notadb://x")
    with pytest.raises(StoreError, match="cannot open"):
        Store(f"sqlite:///{tmp_path}/missing/dir/x.db")


def test_late_report_of_a_cancelled_job_neither_revives_nor_counts(
    store, small_campaign, registered
):
    from smartbkg_prod.store import CANCELLED
    from smartbkg_prod.store.tables import JobRow

    job = registered[0]
    store.attempts.start(job, "local")
    with store.session() as session:
        row = session.query(JobRow).filter_by(campaign_id=job.campaign_id, job_index=0).one()
        row.state = CANCELLED
    store.reports.record(report_for(job, 1))
    assert store.campaigns.job_states(small_campaign.campaign_id)[0] == CANCELLED
    assert store.campaigns.status(small_campaign.campaign_id).events_generated == 0
