"""What recovery reads and writes in the store, on recovery's tables (declared in
:mod:`smartbkg_prod.store`) and the jobs it retries, splits or cancels.

The store speaks plain data here: recommendations and decisions as dicts of their
columns, finished attempts as :class:`FinishedAttempt`, jobs as :class:`~smartbkg_prod.plan.Job`,
retry changes as :class:`~smartbkg_prod.plan.RetryChanges`.
:mod:`smartbkg_prod.recovery.records` turns them into recovery's value types (actions,
recommendations, failure records) and raises recovery's errors.

>>> from smartbkg_prod.store import Store
>>> recommendation_rows(Store("sqlite://"))
[]
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, select

from smartbkg_prod.plan import Job, RetryChanges
from smartbkg_prod.store import Store
from smartbkg_prod.store.tables import (
    ACCEPTED,
    APPLIED,
    OPEN,
    OVERRIDDEN,
    SKIPPED,
    SUPERSEDED,
    AttemptRow,
    BackendStateRow,
    CampaignRow,
    DecisionRow,
    JobOverrideRow,
    JobRow,
    JobSplitRow,
    ModelRow,
    RecommendationRow,
    ReportRow,
)


def _columns(row) -> dict:
    """A row's column values as a plain dict (what leaves the store)."""
    return {column.key: getattr(row, column.key) for column in row.__table__.columns}


def _decision_of(session, recommendation_id: int) -> DecisionRow | None:
    return session.scalar(
        select(DecisionRow).where(DecisionRow.recommendation_id == recommendation_id)
    )


# -- recommendations and decisions ---------------------------------------------------------
def save_recommendation_rows(store: Store, rows: list[dict]) -> list[int]:
    """Store new recommendations (dicts of their columns, without status and time); one
    already stored for the same (campaign, job, attempt) is kept as is.

    Returns the ids of the recommendations, stored now or before, in input order.
    """
    now = time.time()
    ids = []
    with store.session() as session:
        for fields in rows:
            existing = session.scalar(
                select(RecommendationRow.id).where(
                    RecommendationRow.campaign_id == fields["campaign_id"],
                    RecommendationRow.job_index == fields["job_index"],
                    RecommendationRow.attempt == fields["attempt"],
                )
            )
            if existing is not None:
                ids.append(existing)
                continue
            row = RecommendationRow(**fields, status=OPEN, created_at=now)
            session.add(row)
            session.flush()
            ids.append(row.id)
    return ids


def recommendation_rows(
    store: Store, status: str | None = None, campaign_id: str | None = None
) -> list[tuple[dict, dict | None]]:
    """Stored recommendations with their decision (None before one), oldest first,
    optionally by status and campaign."""
    with store.session() as session:
        query = select(RecommendationRow, DecisionRow).outerjoin(
            DecisionRow, DecisionRow.recommendation_id == RecommendationRow.id
        )
        if status is not None:
            query = query.where(RecommendationRow.status == status)
        if campaign_id is not None:
            query = query.where(RecommendationRow.campaign_id == campaign_id)
        rows = session.execute(query.order_by(RecommendationRow.id)).all()
        return [
            (_columns(recommendation), None if decision is None else _columns(decision))
            for recommendation, decision in rows
        ]


def recommendation_row(store: Store, recommendation_id: int) -> tuple[dict, dict | None] | None:
    """One recommendation with its decision, or None when there is no such id."""
    with store.session() as session:
        row = session.get(RecommendationRow, recommendation_id)
        if row is None:
            return None
        decision = _decision_of(session, recommendation_id)
        return _columns(row), None if decision is None else _columns(decision)


def insert_decision(
    store: Store,
    recommendation_id: int,
    decide: Callable[[dict | None, dict | None], dict],
) -> None:
    """Record the decision on one recommendation in one transaction.

    ``decide(recommendation, earlier_decision)`` sees the recommendation's columns (None
    when there is no such id) and its earlier decision (None before one), and returns the
    new decision's columns (``operator``, ``kind`` "accept" or "override", ``action``,
    ``changes``, ``comment``) or raises; the recommendation becomes accepted or overridden.
    """
    with store.session() as session:
        row = session.get(RecommendationRow, recommendation_id)
        earlier = None if row is None else _decision_of(session, recommendation_id)
        fields = decide(
            None if row is None else _columns(row),
            None if earlier is None else _columns(earlier),
        )
        session.add(
            DecisionRow(recommendation_id=recommendation_id, decided_at=time.time(), **fields)
        )
        row.status = ACCEPTED if fields["kind"] == "accept" else OVERRIDDEN


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


def mark_applied(store: Store, recommendation_id: int, outcome: str, applied: bool) -> None:
    with store.session() as session:
        row = session.get(RecommendationRow, recommendation_id)
        decision = _decision_of(session, recommendation_id)
        row.status = APPLIED if applied else SKIPPED
        decision.applied_at = time.time()
        decision.outcome = outcome


# Decisions recorded under this prefix were taken by the driver's retry policy, not by an
# operator: they are no training labels (the model would learn the rules back).
POLICY_AUTHOR_PREFIX = "policy:"


def decided_features(store: Store) -> list[tuple[dict[str, float], str]]:
    """Every operator's recorded decision as (feature row the policy saw, action chosen)."""
    with store.session() as session:
        return [
            (features, action)
            for features, action in session.execute(
                select(RecommendationRow.features, DecisionRow.action)
                .join(DecisionRow, DecisionRow.recommendation_id == RecommendationRow.id)
                .where(~DecisionRow.operator.startswith(POLICY_AUTHOR_PREFIX))
                .order_by(DecisionRow.id)
            )
        ]


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


# -- a campaign's finished attempts ------------------------------------------------------------
@dataclass(frozen=True)
class FinishedAttempt:
    """One done or failed attempt, with its job's size and its report body ({} without one)."""

    job_index: int
    n_events: int
    attempt: int
    site: str | None
    exit_code: int | None
    error_class: str | None
    native_code: str | None
    memory_mb: int | None
    walltime_s: int | None
    finished_at: float | None
    body: dict
    engine_reason: str = ""  # "panda: pilotErrorCode=1305 ...", "htcondor: <hold reason>"


def finished_attempts(store: Store, campaign_id: str) -> tuple[dict, list[FinishedAttempt]] | None:
    """A campaign's requested resources and its finished attempts in (job, attempt) order,
    or None when the store has no such campaign."""
    with store.session() as session:
        campaign = session.get(CampaignRow, campaign_id)
        if campaign is None:
            return None
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
        # The engine's reason for a failed attempt (a pilot's diagnostics, a hold reason),
        # kept with its backend state by the driver.
        engine_reasons = {
            (job_index, attempt): f"{backend}: {reason}"
            for job_index, attempt, backend, reason in session.execute(
                select(
                    BackendStateRow.job_index,
                    BackendStateRow.attempt,
                    BackendStateRow.backend,
                    BackendStateRow.native_reason,
                ).where(
                    BackendStateRow.campaign_id == campaign_id,
                    BackendStateRow.state != "done",
                    BackendStateRow.native_reason != "",
                )
            )
        }
    return resources, [
        FinishedAttempt(
            job_index=job_index,
            n_events=n_events,
            attempt=attempt.attempt,
            site=attempt.site,
            exit_code=attempt.exit_code,
            error_class=attempt.error_class,
            native_code=attempt.native_code,
            memory_mb=attempt.memory_mb,
            walltime_s=attempt.walltime_s,
            finished_at=attempt.finished_at,
            body=reports.get((job_index, attempt.attempt), {}),
            engine_reason=engine_reasons.get((job_index, attempt.attempt), ""),
        )
        for job_index, n_events, attempt in attempts
    ]


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


def stored_job(store: Store, campaign_id: str, job_index: int) -> tuple[Job, str] | None:
    """A job as stored (with its split stream start if it is a sub-job) and its state, or
    None when the campaign has no such job."""
    with store.session() as session:
        row = session.scalar(
            select(JobRow).where(JobRow.campaign_id == campaign_id, JobRow.job_index == job_index)
        )
        if row is None:
            return None
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
