"""Every store access recovery makes, on recovery's tables (declared in
:mod:`smartbkg_prod.store`):

- ``recommendations``: one per failed attempt reviewed, with the feature row the policy saw;
- ``decisions``: who accepted or overrode a recommendation, when, with which action — the
  classifier's training labels; ``applied_at`` once the action was carried out;
- ``job_overrides``: per (campaign, job) resources and excluded sites for the next
  attempts, read by the driver through :meth:`Store.job_overrides`;
- ``job_splits``: sub-jobs made by a split, with the parent's random stream start;
- ``recovery_models``: trained classifiers (newest is used), with their label counts.

>>> from smartbkg_prod.store import Store
>>> store = Store("sqlite://")
>>> list_recommendations(store)
[]
"""

from __future__ import annotations

import time
from collections import defaultdict

from pydantic import BaseModel, ConfigDict
from sqlalchemy import (
    func,
    select,
)

from smartbkg_prod.backends.base import RetryChanges
from smartbkg_prod.errors import SmartBkgError
from smartbkg_prod.plan import Job
from smartbkg_prod.recovery.actions import Action, Recommendation
from smartbkg_prod.recovery.failures import FailureRecord
from smartbkg_prod.recovery.taxonomy import FailureCode, parse_native_code
from smartbkg_prod.store import (
    ACCEPTED,
    APPLIED,
    OPEN,
    OVERRIDDEN,
    SKIPPED,
    SUPERSEDED,
    AttemptRow,
    CampaignRow,
    DecisionRow,
    JobOverrideRow,
    JobRow,
    JobSplitRow,
    ModelRow,
    RecommendationRow,
    ReportRow,
    Store,
)


class RecoveryError(SmartBkgError):
    """A review or apply request cannot be carried out (unknown id, already decided...)."""


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid", from_attributes=True)

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


def _stored(row: RecommendationRow, decision: DecisionRow | None) -> StoredRecommendation:
    fields = {
        name: getattr(row, name) for name in StoredRecommendation.model_fields if name != "decision"
    }
    return StoredRecommendation.model_validate(
        {**fields, "decision": None if decision is None else Decision.model_validate(decision)}
    )


# -- recommendations and decisions ---------------------------------------------------------
def save_recommendations(store: Store, recommendations: list[Recommendation]) -> list[int]:
    """Store new recommendations; one already stored for the same attempt is kept as is.

    Returns the ids of the recommendations, stored now or before, in input order.
    """
    now = time.time()
    ids = []
    with store.session() as session:
        for recommendation in recommendations:
            existing = session.scalar(
                select(RecommendationRow.id).where(
                    RecommendationRow.campaign_id == recommendation.campaign_id,
                    RecommendationRow.job_index == recommendation.job_index,
                    RecommendationRow.attempt == recommendation.attempt,
                )
            )
            if existing is not None:
                ids.append(existing)
                continue
            fields = set(Recommendation.model_fields) - {"changes"}
            row = RecommendationRow(
                **recommendation.model_dump(mode="json", include=fields),
                changes=recommendation.changes.model_dump(mode="json"),
                status=OPEN,
                created_at=now,
            )
            session.add(row)
            session.flush()
            ids.append(row.id)
    return ids


def list_recommendations(
    store: Store, status: str | None = None, campaign_id: str | None = None
) -> list[StoredRecommendation]:
    """Stored recommendations, oldest first, optionally by status and campaign."""
    with store.session() as session:
        query = select(RecommendationRow, DecisionRow).outerjoin(
            DecisionRow, DecisionRow.recommendation_id == RecommendationRow.id
        )
        if status is not None:
            query = query.where(RecommendationRow.status == status)
        if campaign_id is not None:
            query = query.where(RecommendationRow.campaign_id == campaign_id)
        rows = session.execute(query.order_by(RecommendationRow.id)).all()
        return [_stored(recommendation, decision) for recommendation, decision in rows]


def get_recommendation(store: Store, recommendation_id: int) -> StoredRecommendation:
    with store.session() as session:
        row = session.get(RecommendationRow, recommendation_id)
        if row is None:
            raise RecoveryError(
                f"no recommendation {recommendation_id} in {store.url} (see `recover list`)"
            )
        decision = session.scalar(
            select(DecisionRow).where(DecisionRow.recommendation_id == recommendation_id)
        )
        return _stored(row, decision)


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
    with store.session() as session:
        row = session.get(RecommendationRow, recommendation_id)
        if row is None:
            raise RecoveryError(
                f"no recommendation {recommendation_id} in {store.url} (see `recover list`)"
            )
        if row.status != OPEN:
            earlier = session.scalar(
                select(DecisionRow).where(DecisionRow.recommendation_id == recommendation_id)
            )
            who = f" by {earlier.operator}" if earlier is not None else ""
            raise RecoveryError(
                f"recommendation {recommendation_id} is already {row.status}{who}; "
                "a decision is recorded once"
            )
        chosen = Action(action) if action is not None else Action(row.action)
        kind = "accept" if chosen.value == row.action else "override"
        if kind == "accept":
            changes = RetryChanges.model_validate(row.changes)
        session.add(
            DecisionRow(
                recommendation_id=recommendation_id,
                operator=operator,
                decided_at=time.time(),
                kind=kind,
                action=chosen.value,
                changes=(changes or RetryChanges()).model_dump(mode="json"),
                comment=comment,
            )
        )
        row.status = ACCEPTED if kind == "accept" else OVERRIDDEN
    return get_recommendation(store, recommendation_id)


def supersede_stale(store: Store, campaign_id: str, failed_attempts: dict[int, int]) -> int:
    """Mark open recommendations superseded when their job is no longer failed at that
    attempt (``failed_attempts``: job index -> latest failed attempt). Returns how many."""
    with store.session() as session:
        stale = [
            row
            for row in session.scalars(
                select(RecommendationRow).where(
                    RecommendationRow.campaign_id == campaign_id, RecommendationRow.status == OPEN
                )
            )
            if failed_attempts.get(row.job_index) != row.attempt
        ]
        for row in stale:
            row.status = SUPERSEDED
        return len(stale)


def pending_decisions(store: Store, campaign_id: str | None = None) -> list[StoredRecommendation]:
    """Decided recommendations whose action has not been applied yet (of one campaign)."""
    return [
        r
        for r in list_recommendations(store, campaign_id=campaign_id)
        if r.status in (ACCEPTED, OVERRIDDEN) and r.decision is not None
    ]


def mark_applied(store: Store, recommendation_id: int, outcome: str, applied: bool) -> None:
    with store.session() as session:
        row = session.get(RecommendationRow, recommendation_id)
        decision = session.scalar(
            select(DecisionRow).where(DecisionRow.recommendation_id == recommendation_id)
        )
        row.status = APPLIED if applied else SKIPPED
        decision.applied_at = time.time()
        decision.outcome = outcome


def training_labels(store: Store) -> tuple[list[dict[str, float]], list[Action]]:
    """Every recorded decision as (feature row the policy saw, action the operator chose)."""
    with store.session() as session:
        rows = session.execute(
            select(RecommendationRow.features, DecisionRow.action)
            .join(DecisionRow, DecisionRow.recommendation_id == RecommendationRow.id)
            .order_by(DecisionRow.id)
        ).all()
    return [features for features, _ in rows], [Action(action) for _, action in rows]


# -- models ------------------------------------------------------------------------------------
def save_model(
    store: Store, blob: bytes, digest: str, n_labels: int, label_counts: dict[str, int]
) -> str:
    """Store a trained classifier (pickled by the classifier itself); returns its name."""
    with store.session() as session:
        session.add(
            ModelRow(
                created_at=time.time(),
                digest=digest,
                n_labels=n_labels,
                label_counts=label_counts,
                blob=blob,
            )
        )
    return f"model:{digest}"


def latest_model_blob(store: Store) -> tuple[bytes, str] | None:
    """The newest stored classifier's bytes and name, or None before the first training."""
    with store.session() as session:
        row = session.scalars(select(ModelRow).order_by(ModelRow.id.desc()).limit(1)).first()
        return None if row is None else (row.blob, f"model:{row.digest}")


# -- the store's attempts as failure records -----------------------------------------------------
def campaign_records(store: Store, campaign_id: str) -> list[FailureRecord]:
    """Every finished attempt of a campaign as a FailureRecord (report data where there is one)."""
    with store.session() as session:
        campaign = session.get(CampaignRow, campaign_id)
        if campaign is None:
            raise RecoveryError(f"no campaign {campaign_id!r} in {store.url}")
        resources = campaign.spec.get("resources", {})
        attempts = session.execute(
            select(JobRow.job_index, JobRow.n_events, AttemptRow)
            .join(AttemptRow, AttemptRow.job_id == JobRow.id)
            .where(JobRow.campaign_id == campaign_id, AttemptRow.state.in_(("done", "failed")))
            .order_by(JobRow.job_index, AttemptRow.attempt)
        ).all()
        reports = {
            (job_index, attempt): body
            for job_index, attempt, body in session.execute(
                select(ReportRow.job_index, ReportRow.attempt, ReportRow.body).where(
                    ReportRow.campaign_id == campaign_id
                )
            )
        }
    records = []
    for job_index, n_events, attempt in attempts:
        body = reports.get((job_index, attempt.attempt), {})
        native = _native(attempt.native_code)
        logs = [body.get("error_message", ""), *body.get("log_tail", [])]
        records.append(
            FailureRecord(
                campaign_id=campaign_id,
                job_index=job_index,
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
                n_events=n_events,
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


def recommendation_campaigns(store: Store) -> list[str]:
    """Campaigns with a failed job or an open recommendation (what a refresh looks at)."""
    with store.session() as session:
        failed = session.scalars(
            select(JobRow.campaign_id).where(JobRow.state == "failed").distinct()
        )
        # Offline recommendations (from a file) name campaigns this store does not hold.
        open_ = session.scalars(
            select(RecommendationRow.campaign_id)
            .join(CampaignRow, CampaignRow.id == RecommendationRow.campaign_id)
            .where(RecommendationRow.status == OPEN)
            .distinct()
        )
        return sorted({*failed, *open_})


# -- overrides and splits (what `recover apply` changes) --------------------------------------------
def upsert_override(
    store: Store, campaign_id: str, job_index: int, changes: RetryChanges, decision_id: int | None
) -> RetryChanges:
    """Merge changes into a job's overrides (memory/walltime only grow, exclusions add up)."""
    with store.session() as session:
        row = session.get(JobOverrideRow, (campaign_id, job_index))
        if row is None:
            row = JobOverrideRow(campaign_id=campaign_id, job_index=job_index, exclude_sites=[])
            session.add(row)
        if changes.memory_mb is not None:
            row.memory_mb = max(row.memory_mb or 0, changes.memory_mb)
        if changes.walltime_s is not None:
            row.walltime_s = max(row.walltime_s or 0, changes.walltime_s)
        row.exclude_sites = sorted({*(row.exclude_sites or []), *changes.exclude_sites})
        row.decision_id = decision_id
        row.updated_at = time.time()
        return row.changes()


def job_of(store: Store, campaign_id: str, job_index: int) -> tuple[Job, str]:
    """A job as stored (with its split stream start if it is a sub-job) and its state."""
    with store.session() as session:
        row = session.scalar(
            select(JobRow).where(JobRow.campaign_id == campaign_id, JobRow.job_index == job_index)
        )
        if row is None:
            raise RecoveryError(f"campaign {campaign_id!r} has no job {job_index}")
        split = session.get(JobSplitRow, (campaign_id, job_index))
        job = Job(
            campaign_id=campaign_id,
            index=job_index,
            first_event=row.first_event,
            n_events=row.n_events,
            seed=row.seed,
            stream_start=split.stream_start if split else None,
        )
        return job, row.state


def set_job_state(store: Store, campaign_id: str, job_indices: list[int], state: str) -> None:
    with store.session() as session:
        for row in session.scalars(
            select(JobRow).where(
                JobRow.campaign_id == campaign_id, JobRow.job_index.in_(job_indices)
            )
        ):
            row.state = state
            row.updated_at = time.time()


def add_split(store: Store, parent: Job, parts: list[Job], decision_id: int | None) -> list[int]:
    """Insert the sub-jobs of a split under new indices and cancel the parent, in one
    transaction. The campaign's job count grows by ``len(parts) - 1`` so "complete" still
    means every live job is done."""
    now = time.time()
    with store.session() as session:
        campaign = session.get(CampaignRow, parent.campaign_id)
        next_index = (
            session.scalar(
                select(func.max(JobRow.job_index)).where(JobRow.campaign_id == parent.campaign_id)
            )
            + 1
        )
        indices = list(range(next_index, next_index + len(parts)))
        for index, part in zip(indices, parts, strict=True):
            session.add(
                JobRow(
                    campaign_id=parent.campaign_id,
                    job_index=index,
                    first_event=part.first_event,
                    n_events=part.n_events,
                    seed=part.seed,
                    state="pending",
                    attempts=0,
                    updated_at=now,
                )
            )
            session.add(
                JobSplitRow(
                    campaign_id=parent.campaign_id,
                    job_index=index,
                    parent_index=parent.index,
                    stream_start=part.stream_start,
                    decision_id=decision_id,
                )
            )
        parent_row = session.scalar(
            select(JobRow).where(
                JobRow.campaign_id == parent.campaign_id, JobRow.job_index == parent.index
            )
        )
        parent_row.state = "cancelled"
        parent_row.updated_at = now
        campaign.n_jobs += len(parts) - 1
        return indices


def live_jobs(store: Store, campaign_id: str) -> dict[str, list[int]]:
    """Job indices by state for one campaign."""
    with store.session() as session:
        by_state: dict[str, list[int]] = defaultdict(list)
        for index, state in session.execute(
            select(JobRow.job_index, JobRow.state).where(JobRow.campaign_id == campaign_id)
        ):
            by_state[state].append(index)
        return dict(by_state)
