"""Carry out reviewed decisions in the store, keeping event accounting exact.

- resubmit: the job goes back to ``pending``;
- more memory / more walltime / exclude site: the change is merged into the job's
  overrides (``store.campaigns.job_overrides``, read by the driver for the next attempts) and the job goes back to ``pending``;
- split: the job's range is cut into contiguous parts that share its random stream
  (:func:`~smartbkg_prod.backends.base.split_job`), inserted as new jobs of the campaign;
  the parent becomes ``cancelled`` so its events are never counted twice;
- kill: every job of the campaign not yet done becomes ``cancelled``. It is applied only
  from an operator's decision (``auto_accept`` never accepts a kill).

Nothing is applied without a recorded decision. A driver (``smartbkg-prod submit`` on the
same spec) then runs the pending jobs.
"""

from __future__ import annotations

from pydantic import BaseModel

from smartbkg_prod.backends.base import split_job
from smartbkg_prod.recovery.actions import Action
from smartbkg_prod.recovery.records import (
    RecoveryError,
    StoredRecommendation,
    add_split,
    job_of,
    live_jobs,
    mark_applied,
    pending_decisions,
    set_job_state,
    upsert_override,
)
from smartbkg_prod.store import CANCELLED, DONE, FAILED, PENDING, RUNNING, Store


class AppliedAction(BaseModel):
    recommendation_id: int
    campaign_id: str
    job_index: int
    action: Action
    applied: bool
    outcome: str


def apply_decisions(store: Store, campaign_id: str | None = None) -> list[AppliedAction]:
    """Apply every decided, not yet applied recommendation (of one campaign), oldest first."""
    return [apply_decision(store, r) for r in pending_decisions(store, campaign_id)]


def apply_decision(store: Store, recommendation: StoredRecommendation) -> AppliedAction:
    """Apply one decided recommendation and record the outcome."""
    applied, outcome = _apply(store, recommendation)
    mark_applied(store, recommendation.id, outcome, applied)
    return AppliedAction(
        recommendation_id=recommendation.id,
        campaign_id=recommendation.campaign_id,
        job_index=recommendation.job_index,
        action=recommendation.decision.action,
        applied=applied,
        outcome=outcome,
    )


def _apply(store: Store, recommendation: StoredRecommendation) -> tuple[bool, str]:
    decision = recommendation.decision
    campaign_id, index = recommendation.campaign_id, recommendation.job_index
    try:
        job, state = job_of(store, campaign_id, index)
    except RecoveryError:
        return False, f"job {index} of {campaign_id} is not in this database (offline review)"
    if decision.action is Action.KILL:
        by_state = live_jobs(store, campaign_id)
        doomed = sorted(i for s in (PENDING, FAILED, RUNNING) for i in by_state.get(s, []))
        set_job_state(store, campaign_id, doomed, CANCELLED)
        return True, f"cancelled {len(doomed)} job(s) of {campaign_id} not yet done"
    if state in (DONE, CANCELLED):
        return False, f"job {index} is already {state}"
    if decision.action is Action.SPLIT_JOB:
        parts = split_job(job, decision.changes.split_into or 2)
        inherited = store.campaigns.job_overrides(campaign_id).get(index)
        indices = add_split(store, job, parts, decision.id)
        if inherited is not None:
            for child in indices:
                upsert_override(store, campaign_id, child, inherited, decision.id)
        ranges = ", ".join(f"{p.first_event}-{p.last_event - 1}" for p in parts)
        return (
            True,
            f"job {index} split into jobs {indices} (events {ranges}); job {index} cancelled",
        )
    if decision.action is not Action.RESUBMIT:
        changes = upsert_override(store, campaign_id, index, decision.changes, decision.id)
        set_job_state(store, campaign_id, [index], PENDING)
        return True, f"job {index} pending with {changes.model_dump(exclude_defaults=True)}"
    set_job_state(store, campaign_id, [index], PENDING)
    return True, f"job {index} pending for a plain resubmit"
