"""The attempt lifecycle's transitions, tested as the pure functions they are: no engine,
no store, no clock (issue 24)."""

from __future__ import annotations

import math

import pytest

from smartbkg_prod.lifecycle import (
    Action,
    AttemptView,
    FailedAttempt,
    NextStep,
    Observation,
    Phase,
    next_step,
    observe,
    removed,
    submitted,
)
from smartbkg_prod.plan import RetryChanges
from smartbkg_prod.spec import RetryPolicy


def attempt(phase: Phase = Phase.SUBMITTED, since: float = 100.0, **fields) -> AttemptView:
    return AttemptView(job_index=3, attempt=1, phase=phase, since=since, **fields)


def test_an_opened_attempt_becomes_submitted_once_the_engine_takes_it():
    opened = attempt(Phase.PENDING, since=0.0)
    assert submitted(opened, at=5.0) == attempt(Phase.SUBMITTED, since=5.0)
    with pytest.raises(ValueError, match="is submitted"):
        submitted(submitted(opened, at=5.0), at=6.0)


@pytest.mark.parametrize(
    ("engine_state", "phase", "action"),
    [
        ("pending", Phase.QUEUED, Action.FOLLOW),
        ("running", Phase.RUNNING, Action.FOLLOW),
        ("done", Phase.FINISHED, Action.INGEST),
        ("failed", Phase.FINISHED, Action.INGEST),
        ("cancelled", Phase.CANCELLED, Action.INGEST),
        ("lost", Phase.LOST, Action.INGEST),
    ],
)
def test_each_engine_state_moves_a_submitted_attempt(engine_state, phase, action):
    step = observe(attempt(), Observation(state=engine_state, at=110.0))
    assert (step.attempt.phase, step.action) == (phase, action)
    assert step.attempt.since == 110.0


def test_staying_in_a_phase_keeps_the_time_it_was_entered():
    running = observe(attempt(), Observation(state="running", at=110.0)).attempt
    again = observe(running, Observation(state="running", at=500.0))
    assert again.attempt == running and again.action == Action.FOLLOW


def test_an_ended_attempt_ignores_a_second_announcement():
    ended = attempt(Phase.FINISHED)
    assert observe(ended, Observation(state="done", at=200.0)).action == Action.IGNORE
    assert observe(ended, Observation(state="running", at=200.0)).action == Action.IGNORE


def test_an_unknown_engine_state_is_an_error_not_a_guess():
    with pytest.raises(ValueError, match="unknown engine state 'exploded'"):
        observe(attempt(), Observation(state="exploded", at=1.0))


def test_queued_past_the_pending_timeout_is_reported_once_and_still_followed():
    queued = observe(attempt(), Observation(state="pending", at=100.0)).attempt
    early = observe(queued, Observation(state="pending", at=159.0), pending_timeout_s=60)
    assert early.action == Action.FOLLOW
    late = observe(queued, Observation(state="pending", at=161.0), pending_timeout_s=60)
    assert late.action == Action.REPORT_STUCK
    assert "queued for 61 s, past backend.pending_timeout_s = 60" in late.note
    assert late.attempt.phase == Phase.QUEUED and late.attempt.flagged
    later = observe(late.attempt, Observation(state="pending", at=900.0), pending_timeout_s=60)
    assert later.action == Action.FOLLOW


def test_without_a_pending_timeout_a_queued_attempt_is_never_reported_stuck():
    queued = attempt(Phase.QUEUED, since=0.0)
    assert observe(queued, Observation(state="pending", at=1e9)).action == Action.FOLLOW


def test_a_running_attempt_requeued_by_the_engine_gets_a_fresh_pending_clock():
    queued = attempt(Phase.QUEUED, since=0.0, flagged=True)
    running = observe(queued, Observation(state="running", at=50.0)).attempt
    requeued = observe(running, Observation(state="pending", at=60.0), pending_timeout_s=30)
    assert (requeued.attempt.since, requeued.attempt.flagged) == (60.0, False)
    assert requeued.action == Action.FOLLOW


def test_a_hold_nothing_releases_is_removed_at_once():
    step = observe(attempt(Phase.RUNNING), Observation(state="held", at=120.0, release_by=None))
    assert (step.attempt.phase, step.action) == (Phase.HELD, Action.REMOVE)


def test_a_hold_the_engine_releases_is_waited_for_until_its_window_has_passed():
    seen = Observation(state="held", at=120.0, release_by=780.0)
    first = observe(attempt(Phase.RUNNING), seen)
    assert first.action == Action.WAIT_HELD and "within 660 s" in first.note
    quiet = observe(first.attempt, Observation(state="held", at=500.0, release_by=780.0))
    assert quiet.action == Action.FOLLOW
    expired = observe(first.attempt, Observation(state="held", at=781.0, release_by=780.0))
    assert expired.action == Action.REMOVE


def test_a_hold_a_person_placed_is_waited_for_and_reported():
    step = observe(attempt(Phase.QUEUED), Observation(state="held", at=1.0, release_by=math.inf))
    assert step.action == Action.WAIT_HELD and "held by a person" in step.note
    released = observe(step.attempt, Observation(state="running", at=2.0))
    assert (released.attempt.phase, released.attempt.flagged) == (Phase.RUNNING, False)


def test_a_removed_attempt_is_cancelled():
    assert removed(attempt(Phase.HELD), at=9.0).phase == Phase.CANCELLED


def failure(used: int, **fields) -> FailedAttempt:
    return FailedAttempt(job_index=3, attempt=used, attempts_used=used, **fields)


def test_the_default_next_step_retries_as_is_while_attempts_last():
    policy = RetryPolicy(max_attempts=3)
    assert next_step(failure(1), policy) == NextStep(
        True, None, "attempt 1 of 3: same seed and resources"
    )
    assert next_step(failure(2), policy).retry
    assert next_step(failure(3), policy) == NextStep(False, None, "3 of 3 attempts used")


def test_one_attempt_allowed_means_no_retry():
    assert not next_step(failure(1), RetryPolicy(max_attempts=1)).retry


def test_a_retry_policy_can_replace_next_step_with_the_same_signature():
    """The seam a retry.policy plugs into: a function of (FailedAttempt, RetryPolicy)."""

    def more_memory(failed: FailedAttempt, policy: RetryPolicy) -> NextStep:
        if failed.error_class == "out_of_memory" and failed.attempts_used < policy.max_attempts:
            return NextStep(True, RetryChanges(memory_mb=2 * (failed.memory_mb or 1000)))
        return next_step(failed, policy)

    oom = failure(1, error_class="out_of_memory", memory_mb=2000)
    assert more_memory(oom, RetryPolicy()).changes == RetryChanges(memory_mb=4000)
    assert more_memory(failure(3), RetryPolicy()).retry is False
