"""Closing the loop on a real local campaign: fault, recommendation, review, apply, rerun."""

from __future__ import annotations

import numpy as np
import pytest

from smartbkg_prod.physics.rootio import read_output
from smartbkg_prod.plan import campaign_output_dir
from smartbkg_prod.recovery.actions import Action
from smartbkg_prod.recovery.apply import apply_decisions
from smartbkg_prod.recovery.records import list_recommendations
from smartbkg_prod.recovery.review import accept, override, refresh_recommendations
from smartbkg_prod.spec import Campaign
from smartbkg_prod.store import CANCELLED, FAILED
from smartbkg_prod.submit import submit_campaign

pytestmark = pytest.mark.slow


@pytest.fixture
def campaign(tmp_path) -> Campaign:
    return Campaign(
        name="recover-local", process="bbbar_mixed", events=600, events_per_job=200, seed=3,
        retry={"max_attempts": 1}, backend={"max_parallel": 2},
        outputs={"directory": str(tmp_path / "out")},
    )  # fmt: skip


def run(campaign, store):
    return submit_campaign(campaign, store=store, poll_interval=0.05)


def event_numbers(campaign) -> np.ndarray:
    files = sorted(campaign_output_dir(campaign).glob("*.root"))
    return np.sort(np.concatenate([np.asarray(read_output(path).event_number) for path in files]))


def failed_once(campaign, store, monkeypatch, fault: str):
    """Run with ``fault`` injected; return the one recommendation for the failed job."""
    monkeypatch.setenv("SMARTBKG_INJECT_FAULT", fault)
    status = run(campaign, store)
    monkeypatch.delenv("SMARTBKG_INJECT_FAULT")
    assert not status.complete and store.campaigns.job_states(campaign.campaign_id)[1] == FAILED
    # The driver proposed at once (its attempts were used up); a refresh adds nothing.
    assert refresh_recommendations(store) == []
    (recommendation,) = list_recommendations(store, status="open")
    assert recommendation.job_index == 1
    return recommendation


def rerun_and_check_every_event_once(campaign, store):
    status = run(campaign, store)
    assert status.complete and status.events_generated == 600
    assert np.array_equal(event_numbers(campaign), np.arange(600))


def test_accepted_resubmit_completes_the_campaign_with_every_event_once(
    campaign, store, monkeypatch
):
    recommendation = failed_once(
        campaign, store, monkeypatch, "raise=STAGE_OUT@write:job=1:attempt=1"
    )
    assert recommendation.failure_code == "worker:60" and recommendation.action is Action.RESUBMIT
    accept(store, recommendation.id, operator="shifter")
    (applied,) = apply_decisions(store)
    assert applied.applied
    rerun_and_check_every_event_once(campaign, store)
    assert list_recommendations(store, status="applied")[0].decision.operator == "shifter"


def test_overridden_split_regenerates_exactly_the_parent_events(campaign, store, monkeypatch):
    recommendation = failed_once(campaign, store, monkeypatch, "kill@generate:job=1:attempt=1")
    assert recommendation.failure_code == "signal:9"
    override(store, recommendation.id, "split_job", operator="shifter")
    apply_decisions(store)
    assert sorted(store.campaigns.split_jobs(campaign.campaign_id)) == [3, 4]
    assert store.campaigns.job_states(campaign.campaign_id)[1] == CANCELLED
    rerun_and_check_every_event_once(campaign, store)


def test_accepted_memory_raise_reaches_the_next_attempt(campaign, store, monkeypatch):
    recommendation = failed_once(
        campaign, store, monkeypatch, "raise=OUT_OF_MEMORY@simulate:job=1:attempt=1"
    )
    assert recommendation.action is Action.RESUBMIT_MORE_MEMORY
    assert recommendation.changes.memory_mb == 3000  # x1.5 of the spec's 2000 MB
    accept(store, recommendation.id, operator="shifter")
    apply_decisions(store)
    rerun_and_check_every_event_once(campaign, store)
    retried = [
        r
        for r in store.reports.of_campaign(campaign.campaign_id)
        if r.job_index == 1 and r.succeeded
    ]
    assert retried[0].memory_requested_mb == 3000
