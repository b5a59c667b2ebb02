"""Collection: reports and backend states go into the store once, in bulk, like Reports.record."""

from __future__ import annotations

import json

from click.testing import CliRunner
from monitor_reports import T0, campaign_reports, filtered_campaign, make_report, register
from unavailable import require_module

from smartbkg_prod.backends.base import JobHandle, JobState, write_job_file
from smartbkg_prod.cli.monitor import monitor
from smartbkg_prod.monitor.collect import (
    collect_directory,
    ingest_backend_states,
    ingest_reports,
    poll_backend,
)
from smartbkg_prod.monitor.figures import campaign_figures
from smartbkg_prod.plan import JobInput
from smartbkg_prod.store import FAILED, PENDING, Store


def _snapshot(store: Store, campaign_id: str) -> dict:
    status = store.campaigns.status(campaign_id).model_dump()
    return {
        "status": {key: value for key, value in status.items() if key != "throughput_events_per_s"},
        "states": store.campaigns.job_states(campaign_id),
        "attempts": store.campaigns.job_attempts(campaign_id),
        "reports": [report.model_dump() for report in store.reports.of_campaign(campaign_id)],
    }


def test_bulk_ingest_has_the_effect_of_record_report_one_by_one(tmp_path):
    campaign = filtered_campaign(tmp_path)
    one_by_one, bulk = Store(f"sqlite:///{tmp_path}/a.db"), Store(f"sqlite:///{tmp_path}/b.db")
    jobs = register(one_by_one, campaign, tmp_path)
    register(bulk, campaign, tmp_path)
    reports = campaign_reports(jobs)
    for report in reports:
        one_by_one.reports.record(report)
    result = ingest_reports(bulk, reports, final=False)
    assert (result.received, result.stored, result.duplicates, result.rejected) == (11, 11, 0, [])
    assert _snapshot(bulk, campaign.campaign_id) == _snapshot(one_by_one, campaign.campaign_id)


def test_a_report_delivered_twice_counts_once(store, tmp_path):
    campaign = filtered_campaign(tmp_path)
    jobs = register(store, campaign, tmp_path)
    reports = campaign_reports(jobs)
    first = ingest_reports(store, reports + reports[:3])  # duplicates inside one delivery too
    again = ingest_reports(store, reports)
    assert (first.stored, first.duplicates) == (11, 3)
    assert (again.stored, again.duplicates) == (0, 11)
    assert not store.reports.record(reports[5])
    status = store.campaigns.status(campaign.campaign_id)
    assert (status.events_generated, status.events_skimmed, status.failed_attempts) == (
        8000,
        240,
        3,
    )
    assert len(store.reports.of_campaign(campaign.campaign_id)) == 11


def test_a_late_success_of_a_done_job_adds_no_events(store, tmp_path):
    campaign = filtered_campaign(tmp_path)
    jobs = register(store, campaign, tmp_path)
    ingest_reports(store, campaign_reports(jobs))
    ingest_reports(store, [make_report(jobs[1], 2, "T2_A", T0 + 2000)])
    figures = campaign_figures(store, campaign.campaign_id, now=T0 + 2000)
    assert figures.status.events_generated == 8000
    assert figures.attempts_succeeded == 9


def test_failed_last_attempt_marks_the_job_failed(store, tmp_path):
    campaign = filtered_campaign(tmp_path)  # retry.max_attempts = 3
    jobs = register(store, campaign, tmp_path)
    ingest_reports(
        store, [make_report(jobs[8], attempt, "T2_C", T0 + attempt, 60) for attempt in (1, 2)]
    )
    assert store.campaigns.job_states(campaign.campaign_id)[8] == PENDING
    ingest_reports(store, [make_report(jobs[8], 3, "T2_C", T0 + 3, 60)])
    assert store.campaigns.job_states(campaign.campaign_id)[8] == FAILED
    assert store.campaigns.job_attempts(campaign.campaign_id)[8] == 3


def test_reports_of_unknown_campaigns_or_jobs_are_rejected_with_a_reason(store, tmp_path):
    campaign = filtered_campaign(tmp_path)
    jobs = register(store, campaign, tmp_path)
    stray = make_report(jobs[0], 1, "T2_B", T0).model_copy(update={"campaign_id": "other-123"})
    beyond = make_report(jobs[0], 1, "T2_B", T0).model_copy(update={"job_index": 99})
    result = ingest_reports(store, [stray, beyond, make_report(jobs[0], 1, "T2_B", T0)])
    assert result.stored == 1
    assert "campaign other-123 is not registered" in result.rejected[0]
    assert "has no job 99" in result.rejected[1]


def _write_campaign_directory(tmp_path, campaign, jobs):
    output_dir = tmp_path / "out" / campaign.campaign_id
    output_dir.mkdir(parents=True, exist_ok=True)
    for report in campaign_reports(jobs):
        report.write(
            output_dir
            / f"{campaign.campaign_id}.job{report.job_index:06d}.attempt{report.attempt}.report.json"
        )
    write_job_file(JobInput(job=jobs[0], campaign=campaign, output_dir=str(output_dir)))
    return output_dir


def test_collecting_a_directory_registers_its_campaign_and_is_idempotent(store, tmp_path):
    campaign = filtered_campaign(tmp_path)
    jobs = register(Store("sqlite://"), campaign, tmp_path)  # planned elsewhere
    directory = _write_campaign_directory(tmp_path, campaign, jobs)
    (directory / "broken.report.json").write_text("{not json")
    first = collect_directory(store, tmp_path / "out")
    assert first.registered_campaigns == [campaign.campaign_id]
    assert (first.received, first.stored) == (11, 11)
    assert len(first.unreadable) == 1 and "broken.report.json" in first.unreadable[0]
    second = collect_directory(store, tmp_path / "out")
    assert (second.stored, second.duplicates, second.registered_campaigns) == (0, 11, [])
    assert store.campaigns.status(campaign.campaign_id).events_generated == 8000


def test_cli_collect_reports_counts_and_warns_about_bad_files(store, tmp_path):
    campaign = filtered_campaign(tmp_path)
    jobs = register(store, campaign, tmp_path)
    directory = _write_campaign_directory(tmp_path, campaign, jobs)
    runner = CliRunner()
    result = runner.invoke(monitor, ["collect", str(directory), "--db", store.url])
    assert result.exit_code == 0, result.output
    assert "11 reports: 11 stored, 0 already known" in result.output
    result = runner.invoke(monitor, ["collect", str(directory), "--db", store.url, "--json"])
    assert json.loads(result.output)["duplicates"] == 11
    (directory / "x.report.json").write_text(json.dumps({"campaign_id": "c"}))
    result = runner.invoke(monitor, ["collect", str(directory), "--db", store.url])
    assert result.exit_code == 1
    assert "x.report.json" in result.output and "problem(s) in the report" in result.output


def test_backend_states_are_upserted_and_held_attempts_counted(store, tmp_path):
    campaign = filtered_campaign(tmp_path)
    jobs = register(store, campaign, tmp_path)
    store.attempts.start(jobs[9], "htcondor", site="T2_A")

    def state(value: str, reason: str = "") -> JobState:
        handle = JobHandle(
            campaign_id=campaign.campaign_id,
            job_index=9,
            attempt=1,
            backend="htcondor",
            backend_job_id="42.0",
        )
        return JobState(
            handle=handle,
            state=value,
            native_code="HoldReasonCode=34" if reason else None,
            native_reason=reason,
            site="T2_A",
        )

    assert ingest_backend_states(store, [state("running")]) == 1
    assert campaign_figures(store, campaign.campaign_id).attempts_held == 0
    ingest_backend_states(store, [state("held", "memory usage exceeded request")])
    figures = campaign_figures(store, campaign.campaign_id)
    assert (figures.attempts_held, figures.attempts_running) == (1, 1)
    assert store.attempts.running(campaign.campaign_id) == {
        9: [1]
    }  # the driver's view is untouched


def test_polling_a_backend_records_what_it_says(store, tmp_path):
    """The HTCondor backend following an event log in HTCondor's own format (a job held
    for memory; tests/htcondor_records), the schedd never asked."""
    require_module("htcondor2")
    from htcondor_wire import log_blocks

    from smartbkg_prod.backends.htcondor import HTCondorBackend

    campaign = filtered_campaign(tmp_path)
    jobs = register(store, campaign, tmp_path)
    store.attempts.start(jobs[3], "htcondor", site="T2_A")
    handle = JobHandle(
        campaign_id=campaign.campaign_id,
        job_index=3,
        attempt=1,
        backend="htcondor",
        backend_job_id="781.1",
    )
    log = tmp_path / "held.htcondor.log"
    log.write_text(
        "".join(
            block
            for block in log_blocks("held_released_reconnected.log")
            if "(781.001.000)" in block and "Job was aborted" not in block
        )
    )
    backend = HTCondorBackend()
    backend.follow(781, log)
    states = poll_backend(store, backend, [handle])
    assert [(state.state, state.native_code) for state in states] == [
        ("held", "HoldReasonCode=34/102")
    ]
    assert campaign_figures(store, campaign.campaign_id).attempts_held == 1
