"""The review loop on a real SQLite store: recommend, decide, learn, apply."""

from __future__ import annotations

import time

import pytest

from benchmarks.recovery_simulator import SimulatorConfig, simulate
from smartbkg_prod.plan import plan_jobs
from smartbkg_prod.recovery.actions import Action
from smartbkg_prod.recovery.apply import apply_decisions
from smartbkg_prod.recovery.failures import FailureRecord
from smartbkg_prod.recovery.recommend import recommend
from smartbkg_prod.recovery.records import (
    RecoveryError,
    list_recommendations,
    save_recommendations,
    training_labels,
)
from smartbkg_prod.recovery.review import (
    accept,
    auto_accept,
    current_policy,
    evaluate_policies,
    override,
    refresh_recommendations,
    train,
)
from smartbkg_prod.report import JobReport
from smartbkg_prod.spec import Campaign
from smartbkg_prod.store import CANCELLED, DONE, FAILED, PENDING


@pytest.fixture
def campaign(tmp_path) -> Campaign:
    return Campaign(
        name="recov", process="bbbar_mixed", events=1000, events_per_job=250,
        outputs={"directory": str(tmp_path / "out")},
    )  # fmt: skip


def fail(
    store, campaign, index, exit_code, site="T2_X", peak_rss_mb=0.0, native_code=None, progress=0.5
):
    """One failed, final attempt of job ``index`` as the driver would record it."""
    job = plan_jobs(campaign)[index]
    attempt = store.attempts.start(job, "local", site=site, memory_mb=2000, walltime_s=3600)
    if native_code is not None:  # an engine-level failure: no report
        store.attempts.finish(
            campaign.campaign_id,
            index,
            attempt,
            exit_code,
            "engine",
            final=True,
            native_code=native_code,
        )
        return
    now = time.time()
    report = JobReport.for_job(
        job, campaign.name, attempt,
        site=site, started_at=now - 10, finished_at=now, wall_seconds=10, cpu_seconds=9,
        events_generated=int(job.n_events * progress), peak_rss_mb=peak_rss_mb, memory_requested_mb=2000,
        walltime_requested_s=3600, exit_code=exit_code, error_class="injected",
        log_tail=["stage-out failed: No space left on device"] if exit_code == 60 else [],
    )  # fmt: skip
    store.reports.record(report, final=True)


@pytest.fixture
def failed_campaign(store, campaign):
    store.campaigns.register(campaign, plan_jobs(campaign), output_dir=campaign.outputs.directory)
    fail(store, campaign, 0, 60)  # stage-out: resubmit
    fail(store, campaign, 1, 50, peak_rss_mb=2050, progress=0.8)  # OOM late: more memory
    fail(store, campaign, 2, 1, native_code="HoldReasonCode=46")  # walltime hold, no report
    return campaign


def by_job(recommendations):
    return {r.job_index: r for r in recommendations}


def test_failed_jobs_get_one_recommendation_each_and_only_once(store, failed_campaign):
    new = by_job(refresh_recommendations(store))
    assert {i: r.action for i, r in new.items()} == {
        0: Action.RESUBMIT,
        1: Action.RESUBMIT_MORE_MEMORY,
        2: Action.RESUBMIT_MORE_WALLTIME,
    }
    assert new[1].changes.memory_mb == 3000  # projected 1.28x: the plain x1.5 raise
    assert new[2].failure_code == "htcondor:46" and new[2].changes.walltime_s == 7200
    assert refresh_recommendations(store) == []
    assert len(list_recommendations(store)) == 3


def test_accept_and_override_are_stored_with_who_and_when_and_become_labels(store, failed_campaign):
    recs = by_job(refresh_recommendations(store))
    before = time.time()
    accepted = accept(store, recs[0].id, operator="alice")
    overridden = override(store, recs[1].id, "split_job", operator="bob", comment="too big")
    assert accepted.status == "accepted" and accepted.decision.operator == "alice"
    assert accepted.decision.kind == "accept" and accepted.decision.decided_at >= before
    assert overridden.status == "overridden" and overridden.decision.kind == "override"
    assert (
        overridden.decision.action is Action.SPLIT_JOB
        and overridden.decision.changes.split_into >= 2
    )
    rows, labels = training_labels(store)
    assert labels == [Action.RESUBMIT, Action.SPLIT_JOB]
    assert rows[1] == recs[1].features


def test_a_recommendation_is_decided_once(store, failed_campaign):
    recommendation = refresh_recommendations(store)[0]
    accept(store, recommendation.id, operator="alice")
    with pytest.raises(RecoveryError, match="already accepted by alice"):
        override(store, recommendation.id, "kill", operator="bob")


def test_unknown_action_and_unknown_id_are_clear_errors(store, failed_campaign):
    recommendation = refresh_recommendations(store)[0]
    with pytest.raises(RecoveryError, match="unknown action 'reboot'"):
        override(store, recommendation.id, "reboot", operator="bob")
    with pytest.raises(RecoveryError, match="no recommendation 999"):
        accept(store, 999, operator="bob")


def test_apply_resets_jobs_with_their_overrides(store, failed_campaign):
    recs = by_job(refresh_recommendations(store))
    for recommendation in recs.values():
        accept(store, recommendation.id, operator="alice")
    results = apply_decisions(store)
    assert all(result.applied for result in results)
    campaign_id = failed_campaign.campaign_id
    assert store.campaigns.job_states(campaign_id) == {
        0: PENDING,
        1: PENDING,
        2: PENDING,
        3: PENDING,
    }
    overrides = store.campaigns.job_overrides(campaign_id)
    assert overrides[1].memory_mb == 3000 and overrides[2].walltime_s == 7200
    assert 0 not in overrides
    assert apply_decisions(store) == []  # applied once
    assert {r.status for r in list_recommendations(store, status="applied")} == {"applied"}


def test_split_covers_exactly_the_parent_events_from_its_stream(store, failed_campaign):
    campaign_id = failed_campaign.campaign_id
    recs = by_job(refresh_recommendations(store))
    override(store, recs[1].id, "split_job", operator="bob")
    (result,) = apply_decisions(store)
    assert result.applied
    parts = store.campaigns.split_jobs(campaign_id)
    assert sorted(parts) == [4, 5]  # 1.28x projected need: 2 parts
    parent = plan_jobs(failed_campaign)[1]
    covered = sorted(e for p in parts.values() for e in range(p.first_event, p.last_event))
    assert covered == list(range(parent.first_event, parent.last_event))
    assert {p.stream_start for p in parts.values()} == {parent.first_event}
    assert {p.seed for p in parts.values()} == {parent.seed}
    states = store.campaigns.job_states(campaign_id)
    assert states[1] == CANCELLED and all(states[i] == PENDING for i in parts)
    status = store.campaigns.status(campaign_id)
    assert status.jobs_total == 5  # 4 planned - 1 split parent + 2 parts


def test_kill_is_never_auto_accepted_and_cancels_only_what_is_not_done(store, failed_campaign):
    campaign_id = failed_campaign.campaign_id
    job = plan_jobs(failed_campaign)[3]
    store.reports.record(  # job 3 succeeded: a kill leaves it alone
        JobReport.for_job(
            job, "recov", 1, started_at=0,
            finished_at=1, wall_seconds=1, cpu_seconds=1, events_generated=job.n_events,
            exit_code=0, error_class="success",
        )
    )  # fmt: skip
    recs = by_job(refresh_recommendations(store))
    kill = recs[0].model_copy(update={"action": Action.KILL, "attempt": 99})
    (kill_id,) = save_recommendations(store, [kill])
    accepted = auto_accept(store, min_confidence=0.0)
    assert kill_id not in {r.id for r in accepted} and len(accepted) == 3
    assert [r.id for r in list_recommendations(store, status="open")] == [kill_id]
    apply_decisions(store)
    assert store.campaigns.job_states(campaign_id)[0] == PENDING
    accept(store, kill_id, operator="carol")
    (result,) = apply_decisions(store)
    assert result.action is Action.KILL and result.applied
    states = store.campaigns.job_states(campaign_id)
    assert states[3] == DONE and {states[i] for i in (0, 1, 2)} == {CANCELLED}


def test_decisions_train_a_model_that_then_recommends(store, failed_campaign):
    with pytest.raises(RecoveryError, match="only 0 recorded decision"):
        train(store)
    history = simulate(SimulatorConfig(n_campaigns=25, seed=10, label_noise=0.1))
    truth = {
        (label.campaign_id, label.job_index): label.operator_action for label in history.labels
    }
    ids = save_recommendations(store, recommend(history.records))
    for recommendation in list_recommendations(store, status="open"):
        if recommendation.id in ids:
            override(
                store,
                recommendation.id,
                truth[(recommendation.campaign_id, recommendation.job_index)],
                "sim",
            )
    result = train(store)
    assert result.n_labels == len(ids)
    evaluation = evaluate_policies(store)
    assert (
        evaluation.model is not None
        and evaluation.model.accuracy > evaluation.majority.accuracy - 0.05
    )
    fail(store, failed_campaign, 3, 60)
    (fresh,) = [r for r in refresh_recommendations(store) if r.job_index == 3]
    policy = current_policy(store)
    assert policy.name == result.model
    if policy.fallback:  # below the rules on the independent corpus: they decide, and say so
        assert fresh.decided_by == "rules" and f"rules decide: {result.model}" in fresh.reason
    else:
        assert fresh.decided_by in (result.model, "rules")


def test_failed_state_is_required_for_a_recommendation(store, failed_campaign):
    refresh_recommendations(store)
    assert FAILED in store.campaigns.job_states(failed_campaign.campaign_id).values()
    assert all(r.job_index != 3 for r in list_recommendations(store))


def test_open_recommendation_is_superseded_once_its_job_moves_on(store, failed_campaign):
    recs = by_job(refresh_recommendations(store))
    job = plan_jobs(failed_campaign)[0]
    store.reports.record(  # the operator reran job 0 by hand and it succeeded
        JobReport.for_job(
            job, "recov", 2, started_at=0,
            finished_at=1, wall_seconds=1, cpu_seconds=1, events_generated=job.n_events,
            exit_code=0, error_class="success",
        )
    )  # fmt: skip
    assert refresh_recommendations(store) == []
    assert [r.id for r in list_recommendations(store, status="superseded")] == [recs[0].id]
    assert {r.job_index for r in list_recommendations(store, status="open")} == {1, 2}


def test_offline_recommendations_survive_a_refresh(store, failed_campaign):
    offline = recommend(
        [FailureRecord(campaign_id="elsewhere", job_index=0, site="T2_X", exit_code=60)]
    )
    save_recommendations(store, offline)
    refresh_recommendations(store)
    assert any(r.campaign_id == "elsewhere" for r in list_recommendations(store, status="open"))
