"""The driver's retry policy: what happens after a failed attempt (``retry.policy``).

``auto`` (the default) asks recovery for each failed attempt and carries out the safe
actions itself, as PanDA's retry module (``increase_memory``, ``increase_cputime``,
``reduce_input_per_job``, ``no_retry``) and CRAB's automatic resubmission do:

- more memory, in the recommendation's steps (x1.5, or the projected need), capped at
  ``retry.max_memory_mb`` (default 3x the campaign's request);
- more walltime (x2, or the projected need), capped at ``retry.max_walltime_s``
  (default 4x);
- a split, whose parts regenerate exactly the parent's events (same random stream);
- excluding the failed site for that job, never when it would leave no site;
- a plain retry (same seed, same resources) for a transient failure.

A kill is never applied: a deterministic failure (or any kill proposal) is not retried,
the job waits for an operator with the proposal open. So does a job whose resource need
is beyond the cap, and one out of attempts. ``review`` leaves every failed job to an
operator; ``blind`` retries with the same seed and resources, as before.

:func:`next_step` is the pure decision (recommendation in, step out); the store side
(:func:`after_failures`) records each automatic decision with the policy as its author
and the reason, and applies it like an operator's.

>>> from smartbkg_prod.recovery.failures import FailureRecord
>>> from smartbkg_prod.recovery.recommend import recommend
>>> from smartbkg_prod.spec import RetryPolicy, Resources
>>> record = FailureRecord(campaign_id="c", job_index=2, site="local", exit_code=50,
...                        memory_used_mb=2050, memory_requested_mb=2000)
>>> step = next_step(recommend([record])[0], RetryPolicy(), Resources(), attempts=1, sites=["local"])
>>> step.verdict, step.action.value, step.changes.memory_mb
('retry', 'resubmit_more_memory', 3000)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel

from smartbkg_prod.plan import RetryChanges
from smartbkg_prod.recovery.actions import (
    MAX_MEMORY_FACTOR,
    MAX_WALLTIME_FACTOR,
    Action,
    Recommendation,
)
from smartbkg_prod.recovery.apply import apply_decision
from smartbkg_prod.recovery.recommend import recommend
from smartbkg_prod.recovery.records import (
    campaign_records,
    record_decision,
    save_recommendations,
    set_job_state,
)
from smartbkg_prod.recovery.review import current_policy
from smartbkg_prod.spec import Campaign, Resources, RetryPolicy
from smartbkg_prod.store import FAILED, Store

AUTHOR = "policy:auto"  # the operator name automatic decisions are recorded under


class NextStep(BaseModel):
    """What the driver does with one failed job: ``retry`` it with ``action`` applied, or
    leave it to an operator (``review``) with ``action`` proposed."""

    job_index: int
    attempt: int
    verdict: Literal["retry", "review"]
    action: Action
    changes: RetryChanges
    reason: str


# What a raise changes: the RetryChanges field, its unit, the failure record's request.
RAISES = {
    Action.RESUBMIT_MORE_MEMORY: ("memory_mb", "MB", "memory_requested_mb"),
    Action.RESUBMIT_MORE_WALLTIME: ("walltime_s", "s", "walltime_requested_s"),
}
DEFAULT_CAP_FACTOR = {"memory_mb": MAX_MEMORY_FACTOR, "walltime_s": MAX_WALLTIME_FACTOR}


def cap_of(field: str, retry: RetryPolicy, resources: Resources) -> int:
    """``retry.max_memory_mb`` / ``max_walltime_s``, or its default (3x / 4x the request)."""
    return getattr(retry, f"max_{field}") or int(
        getattr(resources, field) * DEFAULT_CAP_FACTOR[field]
    )


def next_step(
    recommendation: Recommendation,
    retry: RetryPolicy,
    resources: Resources,
    attempts: int,
    sites: Sequence[str],
) -> NextStep:
    """The ``auto`` policy's step for one failed job.

    ``attempts``: attempts the job has used; ``resources``: the campaign's requests;
    ``sites``: every site the campaign has run at (a site exclusion that would leave
    none is a plain retry instead).
    """
    action, changes = recommendation.action, recommendation.changes
    said = recommendation.reason.split(". Evidence:")[0]

    def step(verdict: str, action: Action, changes: RetryChanges, why: str) -> NextStep:
        return NextStep(
            job_index=recommendation.job_index,
            attempt=recommendation.attempt,
            verdict=verdict,
            action=action,
            changes=changes,
            reason=why,
        )

    if action is Action.KILL:
        return step("review", action, changes, f"not retried, kill proposed for review: {said}")
    if attempts >= retry.max_attempts:
        return step(
            "review", action, changes,
            f"{attempts} of {retry.max_attempts} attempts used; proposed for review: {said}",
        )  # fmt: skip
    if action in RAISES:
        field, unit, requested = RAISES[action]
        cap = cap_of(field, retry, resources)
        had = getattr(recommendation.record, requested) or getattr(resources, field)
        wanted = getattr(changes, field) or cap
        raised = min(wanted, cap)
        kind = field.split("_")[0]
        if raised <= had:
            return step(
                "review", action, changes,
                f"needs more {kind} than the {had:.0f} {unit} it had, and retry.max_{field} is "
                f"{cap} {unit}: left for review ({said})",
            )  # fmt: skip
        capped = f" (capped by retry.max_{field})" if raised < wanted else ""
        return step(
            "retry", action, RetryChanges(**{field: raised}),
            f"{kind} {had:.0f} -> {raised} {unit}{capped}: {said}",
        )  # fmt: skip
    if action is Action.EXCLUDE_SITE:
        remaining = set(sites) - set(changes.exclude_sites)
        if not remaining:
            return step(
                "retry", Action.RESUBMIT, RetryChanges(),
                f"excluding {', '.join(changes.exclude_sites)} would leave no site: plain "
                f"retry instead ({said})",
            )  # fmt: skip
        return step("retry", action, changes, f"{said}")
    if action is Action.SPLIT_JOB:
        return step("retry", action, changes, f"split into {changes.split_into} jobs: {said}")
    return step("retry", Action.RESUBMIT, RetryChanges(), said)


def blind_step(job_index: int, attempt: int, attempts: int, retry: RetryPolicy) -> NextStep:
    """The ``blind`` policy: same seed, same resources, until the attempts run out."""
    verdict = "retry" if attempts < retry.max_attempts else "review"
    return NextStep(
        job_index=job_index,
        attempt=attempt,
        verdict=verdict,
        action=Action.RESUBMIT,
        changes=RetryChanges(),
        reason=f"blind retry {attempts} of {retry.max_attempts}",
    )


# -- the driver's side: decide, record, apply ------------------------------------------------
class AppliedStep(BaseModel):
    """A step as carried out: the jobs the driver runs next for it (the job itself, or a
    split's parts) and the recommendation it was recorded under (None for ``blind``)."""

    step: NextStep
    run_next: list[int]
    recommendation_id: int | None = None


def after_failures(store: Store, campaign: Campaign, attempts: dict[int, int]) -> list[AppliedStep]:
    """Decide and carry out the next step of each failed job (``attempts``: job index ->
    attempts it used), under the campaign's ``retry.policy``.

    ``auto`` and ``review`` store a recommendation per failed job; ``auto`` records its
    own decision on it (author :data:`AUTHOR`, the reason as comment) and applies it as an
    operator's would be applied (:func:`~smartbkg_prod.recovery.apply.apply_decision`):
    overrides for the next attempt, a split, the job back to pending. A job left for
    review is marked failed, its recommendation open.
    """
    retry = campaign.retry
    campaign_id = campaign.campaign_id
    if retry.policy == "blind":
        return _blind(store, campaign_id, attempts, retry)
    records = campaign_records(store, campaign_id)
    policy = current_policy(store)
    recommendations = {
        r.job_index: r
        for r in recommend(
            records,
            policy.model,
            policy.name,
            memory_mb=campaign.resources.memory_mb,
            walltime_s=campaign.resources.walltime_s,
            fallback=policy.fallback,
        )
        if r.job_index in attempts
    }
    sites = sorted({r.site for r in records})
    ids = dict(
        zip(
            recommendations,
            save_recommendations(store, list(recommendations.values())),
            strict=True,
        )
    )
    # A failure recovery has no record of (nothing stored for it) is retried as is.
    unseen = {i: used for i, used in attempts.items() if i not in recommendations}
    applied = _blind(store, campaign_id, unseen, retry)
    for index, recommendation in sorted(recommendations.items()):
        if retry.policy == "review":
            step = NextStep(
                job_index=index, attempt=recommendation.attempt, verdict="review",
                action=recommendation.action, changes=recommendation.changes,
                reason="retry.policy is review: an operator decides",
            )  # fmt: skip
        else:
            step = next_step(recommendation, retry, campaign.resources, attempts[index], sites)
        if step.verdict == "review":
            set_job_state(store, campaign_id, [index], FAILED)
            applied.append(AppliedStep(step=step, run_next=[], recommendation_id=ids[index]))
            continue
        decided = record_decision(
            store, ids[index], AUTHOR, step.action, step.changes, comment=step.reason
        )
        before = set(store.campaigns.split_jobs(campaign_id))
        outcome = apply_decision(store, decided)
        run_next = [index]
        if step.action is Action.SPLIT_JOB:
            run_next = sorted(set(store.campaigns.split_jobs(campaign_id)) - before)
        if not outcome.applied:
            run_next = []
        applied.append(AppliedStep(step=step, run_next=run_next, recommendation_id=ids[index]))
    return applied


def _blind(
    store: Store, campaign_id: str, attempts: dict[int, int], retry: RetryPolicy
) -> list[AppliedStep]:
    steps = []
    for index, used in sorted(attempts.items()):
        step = blind_step(index, used, used, retry)
        if step.verdict == "review":
            set_job_state(store, campaign_id, [index], FAILED)
        steps.append(AppliedStep(step=step, run_next=[index] if step.verdict == "retry" else []))
    return steps
