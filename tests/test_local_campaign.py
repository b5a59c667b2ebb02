"""Real campaigns on the local backend: Pythia events in, ROOT files and exact counts out."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from smartbkg_prod.physics.rootio import read_output
from smartbkg_prod.plan import campaign_output_dir, plan_jobs
from smartbkg_prod.store import DONE, FAILED
from smartbkg_prod.submit import submit_campaign

pytestmark = pytest.mark.slow


def run(campaign, store, **kwargs):
    return submit_campaign(campaign, store=store, poll_interval=0.05, **kwargs)


def output_files(campaign):
    return sorted(campaign_output_dir(campaign).glob("*.root"))


def all_event_numbers(campaign) -> np.ndarray:
    return np.concatenate(
        [np.asarray(read_output(path).event_number) for path in output_files(campaign)]
    )


def test_small_campaign_produces_every_event_once(small_campaign, store):
    status = run(small_campaign, store)
    assert status.complete
    assert status.events_generated == status.events_simulated == 750
    assert 0 < status.events_skimmed < 750
    files = output_files(small_campaign)
    assert len(files) == 3
    events = all_event_numbers(small_campaign)
    assert np.array_equal(np.sort(events), np.arange(750))
    contents = [read_output(path) for path in files]
    assert sum(int(np.count_nonzero(c.passed_skim)) for c in contents) == status.events_skimmed
    assert all(np.all(np.asarray(c.weight) == 1.0) for c in contents)
    assert all(
        c.particles is not None and c.particles.n_events == len(c.event_number) for c in contents
    )


def test_reports_carry_counts_timings_and_provenance(small_campaign, store):
    run(small_campaign, store)
    reports = store.reports.of_campaign(small_campaign.campaign_id)
    assert len(reports) == 3
    for report in reports:
        assert report.exit_code == 0 and report.error_class == "success"
        assert set(report.stage_seconds) == {"generate", "filter", "simulate", "skim", "write"}
        assert report.peak_rss_mb > 0
        assert report.provenance.versions["pythia8mc"] == "8.317.2"
        assert report.outputs[0].events == report.n_events


def test_killed_worker_is_retried_with_same_seed_and_nothing_double_counted(
    small_campaign, store, monkeypatch
):
    monkeypatch.setenv(
        "SMARTBKG_INJECT_FAULT", "kill@generate:job=1:attempt=1;kill@write:job=2:attempt=1"
    )
    status = run(small_campaign, store)
    assert status.complete
    assert status.failed_attempts == 2
    assert store.campaigns.job_attempts(small_campaign.campaign_id) == {0: 1, 1: 2, 2: 2}
    assert np.array_equal(np.sort(all_event_numbers(small_campaign)), np.arange(750))
    assert status.events_generated == 750
    # The write-stage kill leaves no temporary or partial file behind after the retry.
    assert not list(campaign_output_dir(small_campaign).glob(".*.tmp"))


def test_retried_job_reproduces_identical_events(small_campaign, store, tmp_path, monkeypatch):
    run(small_campaign, store)
    reference = read_output(output_files(small_campaign)[1])
    again = small_campaign.model_copy(
        update={
            "outputs": small_campaign.outputs.model_copy(
                update={"directory": str(tmp_path / "again")}
            )
        }
    )
    monkeypatch.setenv("SMARTBKG_INJECT_FAULT", "kill@simulate:job=1:attempt=1")
    from smartbkg_prod.store import Store

    run(again, Store(f"sqlite:///{tmp_path / 'again.db'}"))
    repeated = read_output(output_files(again)[1])
    assert np.array_equal(reference.event_number, repeated.event_number)
    assert np.array_equal(reference.particles.px, repeated.particles.px)
    assert np.array_equal(reference.passed_skim, repeated.passed_skim)


def test_lost_report_is_retried(small_campaign, store, monkeypatch):
    monkeypatch.setenv("SMARTBKG_INJECT_FAULT", "exit=0@report:job=0:attempt=1")
    status = run(small_campaign, store)
    assert status.complete and status.events_generated == 750
    assert store.campaigns.job_attempts(small_campaign.campaign_id)[0] == 2


def test_a_retry_policy_plugged_in_as_next_step_decides_each_failed_attempt(
    small_campaign, store, monkeypatch
):
    """The seam of issue 24 a retry policy plugs into: the driver asks ``next_step`` once
    per failed attempt, stores the attempt as final when it says stop, and submits the next
    attempt with the changes it returns."""
    from sqlalchemy import select

    from smartbkg_prod.lifecycle import FailedAttempt, NextStep
    from smartbkg_prod.plan import RetryChanges
    from smartbkg_prod.store.tables import AttemptRow, JobRow

    seen: list[FailedAttempt] = []

    def more_memory_or_stop(failed: FailedAttempt, policy) -> NextStep:
        seen.append(failed)
        if failed.error_class == "out_of_memory":
            return NextStep(True, RetryChanges(memory_mb=2 * failed.memory_mb), "more memory")
        return NextStep(False, reason="not worth another try")

    monkeypatch.setenv(
        "SMARTBKG_INJECT_FAULT",
        "raise=OUT_OF_MEMORY@generate:job=1:attempt=1;raise=SIMULATION@simulate:job=2:attempt=1",
    )
    status = run(small_campaign, store, next_step=more_memory_or_stop)
    assert sorted((f.job_index, f.attempt, f.error_class) for f in seen) == [
        (1, 1, "out_of_memory"),
        (2, 1, "simulation"),
    ]
    assert store.campaigns.job_states(small_campaign.campaign_id) == {0: DONE, 1: DONE, 2: FAILED}
    assert not status.complete and status.failed_attempts == 2
    with store.session() as session:
        memory = session.execute(
            select(JobRow.job_index, AttemptRow.attempt, AttemptRow.memory_mb)
            .join(JobRow, AttemptRow.job_id == JobRow.id)
            .where(JobRow.job_index == 1)
        ).all()
    default = small_campaign.resources.memory_mb
    assert sorted(map(tuple, memory)) == [(1, 1, default), (1, 2, 2 * default)]


def test_resume_runs_only_what_is_missing(small_campaign, store, monkeypatch):
    one_try = small_campaign.model_copy(
        update={"retry": small_campaign.retry.model_copy(update={"max_attempts": 1})}
    )
    monkeypatch.setenv("SMARTBKG_INJECT_FAULT", "raise=STAGE_OUT@write:job=2")
    first = run(one_try, store)
    assert not first.complete
    assert store.campaigns.job_states(one_try.campaign_id) == {0: DONE, 1: DONE, 2: FAILED}
    failed = [r for r in store.reports.of_campaign(one_try.campaign_id) if r.exit_code]
    assert [(r.job_index, r.exit_code, r.error_class) for r in failed] == [(2, 60, "stage_out")]
    monkeypatch.delenv("SMARTBKG_INJECT_FAULT")
    second = run(one_try, store)
    assert second.complete and second.events_generated == 750
    assert store.campaigns.job_attempts(one_try.campaign_id) == {0: 1, 1: 1, 2: 2}


def test_cli_submit_and_status_json(tmp_path):
    spec = tmp_path / "mini.yaml"
    spec.write_text(
        "name: mini\nprocess: bbbar_charged\nevents: 400\nevents_per_job: 200\nseed: 3\n"
        f"outputs:\n  directory: {tmp_path / 'out'}\n"
    )
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    cli = [sys.executable, "-m", "smartbkg_prod.cli"]
    submitted = subprocess.run(
        [*cli, "submit", str(spec), "--db", db], capture_output=True, text=True, timeout=300
    )
    assert submitted.returncode == 0, submitted.stderr
    assert "generated 400" in submitted.stdout
    status = subprocess.run(
        [*cli, "status", "mini", "--db", db, "--json"], capture_output=True, text=True, timeout=60
    )
    [document] = json.loads(status.stdout)
    assert document["complete"] and document["events_generated"] == 400
    assert document["jobs_by_state"]["done"] == 2
    # A second submit reuses everything: no new attempt.
    again = subprocess.run(
        [*cli, "submit", str(spec), "--db", db], capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0
    from smartbkg_prod.spec import load_campaign
    from smartbkg_prod.store import Store

    campaign = load_campaign(spec)
    assert Store(db).campaigns.job_attempts(campaign.campaign_id) == {0: 1, 1: 1}
    assert len(plan_jobs(campaign)) == 2
