"""retry.policy (issue 23): the driver's own loop applies safe recovery, proposes kills.

The pure decision (recommendation in, next step out) is tested without an engine; the
loop on a real local campaign (real worker processes, real Pythia events, a SQLite store).
"""

from __future__ import annotations

import http.client

import numpy as np
import pytest
from click.testing import CliRunner

from smartbkg_prod.cli import main
from smartbkg_prod.cli.recover import recover
from smartbkg_prod.errors import SpecError
from smartbkg_prod.monitor.web import start_server
from smartbkg_prod.physics.rootio import read_output
from smartbkg_prod.plan import campaign_output_dir
from smartbkg_prod.recovery.actions import Action
from smartbkg_prod.recovery.failures import FailureRecord
from smartbkg_prod.recovery.recommend import recommend
from smartbkg_prod.recovery.records import list_recommendations
from smartbkg_prod.recovery.retry_policy import AUTHOR, next_step
from smartbkg_prod.spec import Campaign, Resources, RetryPolicy, load_campaign
from smartbkg_prod.store import CANCELLED, DONE, FAILED
from smartbkg_prod.submit import submit_campaign


def failure(exit_code=50, site="local", **fields) -> FailureRecord:
    return FailureRecord(campaign_id="c", job_index=2, site=site, exit_code=exit_code, **fields)


def step_for(record, retry=None, attempts=1, sites=("local",), others=()):
    (recommendation,) = [r for r in recommend([*others, record]) if r.job_index == 2]
    return next_step(recommendation, retry or RetryPolicy(), Resources(), attempts, sites)


# -- the pure decision ------------------------------------------------------------------------
def test_out_of_memory_is_retried_with_more_memory():
    step = step_for(failure(memory_used_mb=2050, memory_requested_mb=2000))
    assert (step.verdict, step.action, step.changes.memory_mb) == (
        "retry", Action.RESUBMIT_MORE_MEMORY, 3000
    )  # fmt: skip


def test_memory_raise_stops_at_the_cap_and_waits_for_review_beyond_it():
    capped = step_for(
        failure(memory_used_mb=2050, memory_requested_mb=2000),
        RetryPolicy(max_memory_mb=2500),
    )
    assert capped.verdict == "retry" and capped.changes.memory_mb == 2500
    assert "capped" in capped.reason
    at_cap = step_for(
        failure(memory_used_mb=2550, memory_requested_mb=2500),
        RetryPolicy(max_memory_mb=2500),
    )
    assert at_cap.verdict == "review" and "max_memory_mb" in at_cap.reason


def test_walltime_raise_is_capped():
    step = step_for(
        failure(exit_code=51, walltime_used_s=3600, walltime_requested_s=3600),
        RetryPolicy(max_walltime_s=5400),
    )
    assert step.action is Action.RESUBMIT_MORE_WALLTIME and step.changes.walltime_s == 5400


def test_a_deterministic_failure_is_not_retried_and_goes_to_review_as_a_kill_proposal():
    step = step_for(failure(exit_code=10))
    assert (step.verdict, step.action) == ("review", Action.KILL)
    assert "kill proposed" in step.reason


def test_no_step_beyond_max_attempts():
    step = step_for(failure(exit_code=60), RetryPolicy(max_attempts=2), attempts=2)
    assert step.verdict == "review"


def test_a_site_is_excluded_for_the_job_only_while_another_site_remains():
    others = [
        FailureRecord(campaign_id="c", job_index=2, attempt=1, site="T2_A", exit_code=60),
        *[FailureRecord(campaign_id="c", job_index=i, site=s) for i, s in
          zip(range(3, 30), ["T2_A", "T2_B"] * 14, strict=False)],
    ]  # fmt: skip
    again = failure(exit_code=60, site="T2_A", attempt=2)
    step = step_for(again, attempts=2, sites=("T2_A", "T2_B"), others=others)
    assert (step.action, step.changes.exclude_sites) == (Action.EXCLUDE_SITE, ["T2_A"])
    alone = step_for(again, attempts=2, sites=("T2_A",), others=others)
    assert (alone.verdict, alone.action) == ("retry", Action.RESUBMIT)


def test_caps_below_the_requests_are_refused_with_one_clear_line(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        "name: capped\nprocess: bbbar_mixed\nevents: 10\nevents_per_job: 10\n"
        "resources: {memory_mb: 4000}\nretry: {policy: auto, max_memory_mb: 3000}\n"
    )
    with pytest.raises(SpecError, match=r"max_memory_mb \(3000\) is below resources.memory_mb"):
        load_campaign(spec)


# -- the loop on a real local campaign ----------------------------------------------------------


def campaign_with(tmp_path, **retry) -> Campaign:
    return Campaign(
        name="retry-policy", process="bbbar_mixed", events=600, events_per_job=200, seed=5,
        retry=retry, backend={"max_parallel": 2}, outputs={"directory": str(tmp_path / "out")},
    )  # fmt: skip


def event_numbers(campaign) -> np.ndarray:
    files = sorted(campaign_output_dir(campaign).glob("*.root"))
    return np.sort(np.concatenate([np.asarray(read_output(p).event_number) for p in files]))


OOM_AND_CONFIG = "raise=OUT_OF_MEMORY@simulate:job=2:attempt=1;raise=CONFIG@generate:job=1"


@pytest.mark.slow
def test_auto_policy_raises_memory_and_proposes_a_kill_on_a_local_campaign(
    tmp_path, store, monkeypatch
):
    campaign = campaign_with(tmp_path)
    assert campaign.retry.policy == "auto"  # the default
    monkeypatch.setenv("SMARTBKG_INJECT_FAULT", OOM_AND_CONFIG)
    submit_campaign(campaign, store=store, poll_interval=0.05)
    states = store.campaigns.job_states(campaign.campaign_id)
    assert states == {0: DONE, 1: FAILED, 2: DONE}
    job2 = sorted(
        (r for r in store.reports.of_campaign(campaign.campaign_id) if r.job_index == 2),
        key=lambda r: r.attempt,
    )
    assert [r.attempt for r in job2] == [1, 2]
    assert job2[1].memory_requested_mb > job2[0].memory_requested_mb == 2000
    assert store.campaigns.job_attempts(campaign.campaign_id)[1] == 1  # tried once, not burnt
    recommendations = list_recommendations(store, campaign_id=campaign.campaign_id)
    (kill,) = [r for r in recommendations if r.job_index == 1]
    assert (kill.action, kill.status, kill.decision) == (Action.KILL, "open", None)
    (raised,) = [r for r in recommendations if r.job_index == 2]
    assert raised.status == "applied" and raised.decision.operator == AUTHOR
    assert "memory 2000 -> 3000 MB" in raised.decision.comment
    # Events stay exact: jobs 0 and 2 once each, job 1 (events 200-399) not at all.
    expected = np.concatenate([np.arange(0, 200), np.arange(400, 600)])
    assert np.array_equal(event_numbers(campaign), expected)
    # Every automatic decision is shown with its author and reason: status, recover list, page.
    runner = CliRunner()
    shown = runner.invoke(main, ["status", campaign.campaign_id, "--db", store.url]).output
    assert "resubmit_more_memory by policy:auto: memory 2000 -> 3000 MB" in shown
    assert "job 1 attempt 1 worker:10: kill proposed, waiting for an operator" in shown
    listed = runner.invoke(recover, ["list", "--db", store.url]).output
    assert "kill" in listed and "resubmit_more_memory by policy:auto: memory 2000" in listed
    server, thread = start_server(store)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
        connection.request("GET", f"/campaign/{campaign.campaign_id}")
        page = connection.getresponse().read().decode()
    finally:
        server.shutdown()
        thread.join()
    assert "policy:auto" in page and "memory 2000 -&gt; 3000 MB" in page


@pytest.mark.slow
def test_review_policy_leaves_a_failed_job_to_an_operator(tmp_path, store, monkeypatch):
    campaign = campaign_with(tmp_path, policy="review")
    monkeypatch.setenv("SMARTBKG_INJECT_FAULT", "raise=STAGE_OUT@write:job=0:attempt=1")
    submit_campaign(campaign, store=store, poll_interval=0.05)
    assert store.campaigns.job_states(campaign.campaign_id)[0] == FAILED
    assert store.campaigns.job_attempts(campaign.campaign_id)[0] == 1
    (waiting,) = list_recommendations(store, status="open", campaign_id=campaign.campaign_id)
    assert waiting.job_index == 0 and waiting.action is Action.RESUBMIT


@pytest.mark.slow
def test_blind_policy_retries_with_the_same_memory(tmp_path, store, monkeypatch):
    campaign = campaign_with(tmp_path, policy="blind")
    monkeypatch.setenv("SMARTBKG_INJECT_FAULT", "raise=OUT_OF_MEMORY@simulate:job=2:attempt=1")
    status = submit_campaign(campaign, store=store, poll_interval=0.05)
    assert status.complete
    job2 = [r for r in store.reports.of_campaign(campaign.campaign_id) if r.job_index == 2]
    assert {r.memory_requested_mb for r in job2} == {2000} and len(job2) == 2
    assert list_recommendations(store, campaign_id=campaign.campaign_id) == []


@pytest.mark.slow
def test_an_automatic_split_regenerates_exactly_the_parents_events(tmp_path, store, monkeypatch):
    # A job killed twice at its memory request, the second time after a raise, is split.
    campaign = campaign_with(tmp_path, max_attempts=3)
    monkeypatch.setenv(
        "SMARTBKG_INJECT_FAULT",
        "raise=OUT_OF_MEMORY@simulate:job=1:attempt=1;raise=OUT_OF_MEMORY@simulate:job=1:attempt=2",
    )
    status = submit_campaign(campaign, store=store, poll_interval=0.05)
    assert status.complete and status.events_generated == 600
    states = store.campaigns.job_states(campaign.campaign_id)
    assert states[1] == CANCELLED and sorted(store.campaigns.split_jobs(campaign.campaign_id)) == [
        3,
        4,
    ]
    assert np.array_equal(event_numbers(campaign), np.arange(600))
