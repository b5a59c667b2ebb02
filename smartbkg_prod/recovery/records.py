"""Every store access recovery makes, on recovery's tables (declared in
:mod:`smartbkg_prod.store.tables`; the queries are in :mod:`smartbkg_prod.store.recovery`):

- ``recommendations``: one per failed attempt reviewed, with the feature row the policy saw;
- ``decisions``: who accepted or overrode a recommendation, when, with which action — the
  classifier's training labels; ``applied_at`` once the action was carried out;
- ``job_overrides``: per (campaign, job) resources and excluded sites for the next
  attempts, read by the driver through ``store.campaigns.job_overrides``;
- ``job_splits``: sub-jobs made by a split, with the parent's random stream start;
- ``recovery_models``: trained classifiers (newest is used), with their label counts.

The store hands back plain data; this module turns it into recovery's value types
(actions, recommendations, failure records) and raises :class:`RecoveryError`.

>>> from smartbkg_prod.store import Store
>>> store = Store("sqlite://")
>>> list_recommendations(store)
[]
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from smartbkg_prod.errors import SmartBkgError
from smartbkg_prod.plan import Job, RetryChanges
from smartbkg_prod.recovery.actions import Action, Recommendation
from smartbkg_prod.recovery.failures import FailureRecord
from smartbkg_prod.recovery.taxonomy import FailureCode, parse_native_code
from smartbkg_prod.store import ACCEPTED, OPEN, OVERRIDDEN, Store
from smartbkg_prod.store import recovery as stored
from smartbkg_prod.store.recovery import (
    add_split,
    latest_model_blob,
    live_jobs,
    mark_applied,
    recommendation_campaigns,
    save_model,
    set_job_state,
    supersede_stale,
    upsert_override,
)

__all__ = [
    "Decision",
    "RecoveryError",
    "StoredRecommendation",
    "campaign_records",
    "get_recommendation",
    "job_of",
    "list_recommendations",
    "pending_decisions",
    "policy_activity",
    "record_decision",
    "save_recommendations",
    "training_labels",
    # plain-data store calls recovery uses as they are (callers import them from here)
    "add_split",
    "latest_model_blob",
    "live_jobs",
    "mark_applied",
    "recommendation_campaigns",
    "save_model",
    "set_job_state",
    "supersede_stale",
    "upsert_override",
]


class RecoveryError(SmartBkgError):
    """A review or apply request cannot be carried out (unknown id, already decided...)."""


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: int
    operator: str
    decided_at: float
    kind: str
    action: Action
    changes: RetryChanges
    comment: str = ""
    applied_at: float | None = None
    outcome: str = ""


class StoredRecommendation(Recommendation):
    """A recommendation as stored: its id, review status and decision."""

    id: int
    status: str
    created_at: float
    decision: Decision | None = None


def _stored(row: dict, decision: dict | None) -> StoredRecommendation:
    fields = {name: row[name] for name in StoredRecommendation.model_fields if name != "decision"}
    if decision is not None:
        decision = Decision.model_validate({name: decision[name] for name in Decision.model_fields})
    return StoredRecommendation.model_validate({**fields, "decision": decision})


def _no_recommendation(store: Store, recommendation_id: int) -> RecoveryError:
    return RecoveryError(
        f"no recommendation {recommendation_id} in {store.url} (see `recover list`)"
    )


# -- recommendations and decisions ---------------------------------------------------------
def save_recommendations(store: Store, recommendations: list[Recommendation]) -> list[int]:
    """Store new recommendations; one already stored for the same attempt is kept as is.

    Returns the ids of the recommendations, stored now or before, in input order.
    """
    fields = set(Recommendation.model_fields) - {"changes"}
    return stored.save_recommendation_rows(
        store,
        [
            {
                **recommendation.model_dump(mode="json", include=fields),
                "changes": recommendation.changes.model_dump(mode="json"),
            }
            for recommendation in recommendations
        ],
    )


def list_recommendations(
    store: Store, status: str | None = None, campaign_id: str | None = None
) -> list[StoredRecommendation]:
    """Stored recommendations, oldest first, optionally by status and campaign."""
    return [
        _stored(recommendation, decision)
        for recommendation, decision in stored.recommendation_rows(store, status, campaign_id)
    ]


def get_recommendation(store: Store, recommendation_id: int) -> StoredRecommendation:
    found = stored.recommendation_row(store, recommendation_id)
    if found is None:
        raise _no_recommendation(store, recommendation_id)
    return _stored(*found)


def record_decision(
    store: Store,
    recommendation_id: int,
    operator: str,
    action: Action | str | None = None,
    changes: RetryChanges | None = None,
    comment: str = "",
) -> StoredRecommendation:
    """Accept a recommendation (``action`` None or equal to it) or override it.

    ``changes`` are the retry changes of an overriding action (computed by the caller);
    an accept keeps the recommended ones. A recommendation is decided once.
    """
    if not operator.strip():
        raise RecoveryError("an operator name is needed for a decision (--operator NAME)")

    def decide(row: dict | None, earlier: dict | None) -> dict:
        if row is None:
            raise _no_recommendation(store, recommendation_id)
        if row["status"] != OPEN:
            who = f" by {earlier['operator']}" if earlier is not None else ""
            raise RecoveryError(
                f"recommendation {recommendation_id} is already {row['status']}{who}; "
                "a decision is recorded once"
            )
        chosen = Action(action) if action is not None else Action(row["action"])
        kind = "accept" if chosen.value == row["action"] else "override"
        kept = RetryChanges.model_validate(row["changes"]) if kind == "accept" else changes
        return {
            "operator": operator,
            "kind": kind,
            "action": chosen.value,
            "changes": (kept or RetryChanges()).model_dump(mode="json"),
            "comment": comment,
        }

    stored.insert_decision(store, recommendation_id, decide)
    return get_recommendation(store, recommendation_id)


class PolicyActivity(BaseModel):
    """What the driver's retry policy did for a campaign: its automatic decisions (author
    ``policy:...``, the reason as comment) and the proposals it left for an operator."""

    automatic: list[StoredRecommendation]
    waiting: list[StoredRecommendation]


def policy_activity(store: Store, campaign_id: str | None = None) -> PolicyActivity:
    """A campaign's (every campaign's) automatic decisions and open proposals, oldest first."""
    recommendations = list_recommendations(store, campaign_id=campaign_id)
    return PolicyActivity(
        automatic=[
            r
            for r in recommendations
            if r.decision is not None
            and r.decision.operator.startswith(stored.POLICY_AUTHOR_PREFIX)
        ],
        waiting=[r for r in recommendations if r.status == OPEN],
    )


def pending_decisions(store: Store, campaign_id: str | None = None) -> list[StoredRecommendation]:
    """Decided recommendations whose action has not been applied yet (of one campaign)."""
    return [
        r
        for r in list_recommendations(store, campaign_id=campaign_id)
        if r.status in (ACCEPTED, OVERRIDDEN) and r.decision is not None
    ]


def training_labels(store: Store) -> tuple[list[dict[str, float]], list[Action]]:
    """Every recorded decision as (feature row the policy saw, action the operator chose)."""
    rows = stored.decided_features(store)
    return [features for features, _ in rows], [Action(action) for _, action in rows]


# -- the store's attempts as failure records -----------------------------------------------------
def campaign_records(store: Store, campaign_id: str) -> list[FailureRecord]:
    """Every finished attempt of a campaign as a FailureRecord (report data where there is one)."""
    found = stored.finished_attempts(store, campaign_id)
    if found is None:
        raise RecoveryError(f"no campaign {campaign_id!r} in {store.url}")
    resources, attempts = found
    records = []
    for attempt in attempts:
        body = attempt.body
        native = _native(attempt.native_code)
        logs = [body.get("error_message", ""), *body.get("log_tail", []), attempt.engine_reason]
        records.append(
            FailureRecord(
                campaign_id=campaign_id,
                job_index=attempt.job_index,
                attempt=attempt.attempt,
                site=attempt.site,
                exit_code=attempt.exit_code or 0,
                error_class=attempt.error_class or "",
                native_source=native.source if native else None,
                native_code=native.code if native else None,
                native_subcode=native.subcode if native else None,
                memory_used_mb=body.get("peak_rss_mb") or None,
                memory_requested_mb=attempt.memory_mb or resources.get("memory_mb"),
                walltime_used_s=body.get("wall_seconds"),
                walltime_requested_s=attempt.walltime_s or resources.get("walltime_s"),
                n_events=attempt.n_events,
                events_processed=body.get("events_generated"),
                log_lines=[line for line in logs if line],
                finished_at=attempt.finished_at,
            )
        )
    return records


def _native(text: str | None) -> FailureCode | None:
    if not text:
        return None
    try:
        return parse_native_code(text)
    except ValueError:
        return None  # an engine string we cannot read: the exit status still classifies


# -- jobs (what `recover apply` changes) --------------------------------------------------------
def job_of(store: Store, campaign_id: str, job_index: int) -> tuple[Job, str]:
    """A job as stored (with its split stream start if it is a sub-job) and its state."""
    found = stored.stored_job(store, campaign_id, job_index)
    if found is None:
        raise RecoveryError(f"campaign {campaign_id!r} has no job {job_index}")
    return found
