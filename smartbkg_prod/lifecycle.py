"""The life of one attempt, as an explicit state machine of small pure transitions.

::

    pending ─► submitted ─► queued ⇄ running ⇄ held ─► finished | lost | cancelled

- **pending**: opened in the store, not yet handed to the engine (a refused submission
  withdraws it: no attempt was used);
- **submitted**: the engine took it and its identity is stored (array task, cluster.proc
  and event log, jediTaskID/entry, pid); nothing observed yet;
- **queued / running / held**: what the engine says while it has it;
- **finished**: it ended on the engine (success or failure: its report says which);
- **lost**: the engine no longer knows it; **cancelled**: removed from the engine.

The driver (:mod:`smartbkg_prod.submit`) only asks the engine for events and applies these
functions; they read no clock, no engine and no store, and are tested without any
(``tests/test_lifecycle.py``).

:func:`next_step` is the one place where a failed attempt's next step is decided (retry
as is, retry with other resources, or stop). It is a seam: ``submit_campaign(..., next_step=…)``
takes any function of the same signature (a ``retry.policy`` that raises memory, excludes a
site or refuses to retry a deterministic failure), and the driver applies its answer.

>>> a = AttemptView(job_index=0, attempt=1, phase=Phase.SUBMITTED, since=0.0)
>>> step = observe(a, Observation(state="pending", at=5.0))
>>> step.attempt.phase, step.action
(<Phase.QUEUED: 'queued'>, <Action.FOLLOW: 'follow'>)
>>> observe(step.attempt, Observation(state="pending", at=700.0), pending_timeout_s=600).action
<Action.REPORT_STUCK: 'report_stuck'>
>>> next_step(FailedAttempt(job_index=0, attempt=3, attempts_used=3), RetryPolicy(max_attempts=3)).retry
False
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum

from smartbkg_prod.plan import RetryChanges
from smartbkg_prod.spec import RetryPolicy


class Phase(StrEnum):
    PENDING = "pending"
    SUBMITTED = "submitted"
    QUEUED = "queued"
    RUNNING = "running"
    HELD = "held"
    FINISHED = "finished"
    LOST = "lost"
    CANCELLED = "cancelled"


# Phases in which the engine may still run the attempt: a resumed driver asks about these.
OPEN_PHASES = frozenset({Phase.PENDING, Phase.SUBMITTED, Phase.QUEUED, Phase.RUNNING, Phase.HELD})
ENDED_PHASES = frozenset({Phase.FINISHED, Phase.LOST, Phase.CANCELLED})

# The engine's word (``JobState.state``) -> the phase it puts an attempt in.
ENGINE_PHASES = {
    "pending": Phase.QUEUED,
    "running": Phase.RUNNING,
    "held": Phase.HELD,
    "done": Phase.FINISHED,
    "failed": Phase.FINISHED,
    "cancelled": Phase.CANCELLED,
    "lost": Phase.LOST,
}


class Action(StrEnum):
    """What the driver does after a transition."""

    FOLLOW = "follow"  # keep asking the engine
    WAIT_HELD = "wait_held"  # held, released by the engine or a person: wait, say so once
    REPORT_STUCK = "report_stuck"  # queued past backend.pending_timeout_s: say so, keep it
    REMOVE = "remove"  # held and nothing releases it: cancel it, check it is gone, ingest
    INGEST = "ingest"  # ended: read its report (or close it without one)
    IGNORE = "ignore"  # news of an attempt already ended (an engine announcing twice)


@dataclass(frozen=True)
class AttemptView:
    """What the driver knows of one attempt. ``since``: when it entered ``phase`` (epoch s);
    ``flagged``: its current hold or stuck wait was already reported."""

    job_index: int
    attempt: int
    phase: Phase
    since: float
    flagged: bool = False


@dataclass(frozen=True)
class Observation:
    """One thing the engine said about an attempt at time ``at`` (epoch s).

    ``release_by``: for a held attempt, when the engine's own policy will have released it
    (HTCondor ``periodic_release``); ``math.inf`` for a hold a person placed and releases
    (Slurm ``JobHeldUser``); None when nothing releases it."""

    state: str
    at: float
    release_by: float | None = None


@dataclass(frozen=True)
class Step:
    attempt: AttemptView
    action: Action
    note: str = ""


def moved(attempt: AttemptView, phase: Phase, at: float) -> AttemptView:
    """``attempt`` in ``phase``; its clock and flag restart only when the phase changes."""
    if attempt.phase == phase:
        return attempt
    return replace(attempt, phase=phase, since=at, flagged=False)


def submitted(attempt: AttemptView, at: float) -> AttemptView:
    """The engine took the attempt (pending -> submitted)."""
    if attempt.phase != Phase.PENDING:
        raise ValueError(f"attempt {attempt.attempt} of job {attempt.job_index} is {attempt.phase}")
    return moved(attempt, Phase.SUBMITTED, at)


def observe(
    attempt: AttemptView, seen: Observation, pending_timeout_s: float | None = None
) -> Step:
    """The transition for what the engine said (``seen``) about ``attempt``."""
    if attempt.phase in ENDED_PHASES:
        return Step(attempt, Action.IGNORE)
    phase = ENGINE_PHASES.get(seen.state)
    if phase is None:
        raise ValueError(f"unknown engine state {seen.state!r}")
    if phase in ENDED_PHASES:
        return Step(moved(attempt, phase, seen.at), Action.INGEST)
    if phase == Phase.HELD:
        return held(moved(attempt, phase, seen.at), seen)
    now = moved(attempt, phase, seen.at)
    if phase == Phase.QUEUED and stuck(now, seen.at, pending_timeout_s):
        waited = seen.at - now.since
        note = f"queued for {waited:.0f} s, past backend.pending_timeout_s = {pending_timeout_s:g}"
        return Step(replace(now, flagged=True), Action.REPORT_STUCK, note)
    return Step(now, Action.FOLLOW)


def stuck(attempt: AttemptView, now: float, pending_timeout_s: float | None) -> bool:
    """Queued past the timeout and not reported yet."""
    return (
        pending_timeout_s is not None
        and attempt.phase == Phase.QUEUED
        and not attempt.flagged
        and now - attempt.since > pending_timeout_s
    )


def held(attempt: AttemptView, seen: Observation) -> Step:
    """A held attempt: left to whoever releases it while they still may, else removed.

    The engine's own release (``release_by`` in the future) and a person's hold
    (``release_by`` = inf) are waited for, reported once; a hold nothing releases, or one
    whose release window has passed, is removed at once and counted as a failed attempt."""
    if seen.release_by is None or seen.at > seen.release_by:
        return Step(attempt, Action.REMOVE, "held, and nothing will release it")
    if attempt.flagged:
        return Step(attempt, Action.FOLLOW)
    if math.isinf(seen.release_by):
        note = "held by a person: waiting for them to release it (or cancel it)"
    else:
        note = f"held; the engine releases it within {seen.release_by - seen.at:.0f} s: waiting"
    return Step(replace(attempt, flagged=True), Action.WAIT_HELD, note)


def removed(attempt: AttemptView, at: float) -> AttemptView:
    """The driver removed the attempt from the engine and checked it is gone."""
    return moved(attempt, Phase.CANCELLED, at)


def lost(attempt: AttemptView, at: float) -> AttemptView:
    """The engine says it does not know the attempt, and it left no report."""
    return moved(attempt, Phase.LOST, at)


# -- what follows a failed attempt: the retry seam --------------------------------------


@dataclass(frozen=True)
class FailedAttempt:
    """A failed attempt as the retry decision sees it. ``attempts_used``: attempts of the
    job this ``submit`` has made or adopted, this one included."""

    job_index: int
    attempt: int
    attempts_used: int
    exit_code: int | None = None
    error_class: str = ""
    native_code: str | None = None
    site: str | None = None
    memory_mb: int | None = None
    walltime_s: int | None = None


@dataclass(frozen=True)
class NextStep:
    """Retry (with ``changes`` to resources or sites for the next attempt, or as is), or
    stop: the job is failed and waits for ``recover``."""

    retry: bool
    changes: RetryChanges | None = None
    reason: str = ""


# The signature a retry policy implements to replace :func:`next_step`.
RetryDecider = Callable[[FailedAttempt, RetryPolicy], NextStep]


def next_step(failed: FailedAttempt, policy: RetryPolicy) -> NextStep:
    """The default decision: the same job again, same seed and resources, while the
    policy's attempts last.

    >>> next_step(FailedAttempt(job_index=4, attempt=1, attempts_used=1), RetryPolicy())
    NextStep(retry=True, changes=None, reason='attempt 1 of 3: same seed and resources')
    """
    if failed.attempts_used >= policy.max_attempts:
        return NextStep(
            False, reason=f"{failed.attempts_used} of {policy.max_attempts} attempts used"
        )
    return NextStep(
        True,
        reason=f"attempt {failed.attempts_used} of {policy.max_attempts}: same seed and resources",
    )
