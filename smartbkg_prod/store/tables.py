"""The tables of the job database (SQLAlchemy 2 declarative models) and the states they hold.

Every table of the project is here, whichever part of the store reads or writes it:
campaigns and jobs (:mod:`.campaigns`), attempts and submission refusals (:mod:`.attempts`),
the engine's identity of each attempt (:mod:`.engine`),
driver leases (:mod:`.leases`), reports (:mod:`.reports`), the monitor's backend states
(:mod:`.ingest`) and recovery's tables (:mod:`.recovery`).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    select,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from smartbkg_prod.errors import StoreError
from smartbkg_prod.plan import RetryChanges

# Job states. A job is "done" once one attempt succeeded; "failed" once its attempts are
# exhausted; "running" while an attempt is in flight; "pending" before the first attempt.
PENDING, RUNNING, DONE, FAILED, CANCELLED = "pending", "running", "done", "failed", "cancelled"
JOB_STATES = (PENDING, RUNNING, DONE, FAILED, CANCELLED)


class Base(DeclarativeBase):
    """Declarative base shared by every table of the project (monitor and recovery too)."""

    type_annotation_map = {dict: JSON, list: JSON}


class CampaignRow(Base):
    __tablename__ = "campaigns"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), index=True)
    spec: Mapped[dict] = mapped_column(JSON)
    spec_path: Mapped[str] = mapped_column(Text, default="")
    output_dir: Mapped[str] = mapped_column(Text)
    n_jobs: Mapped[int] = mapped_column(Integer)
    events_requested: Mapped[int] = mapped_column(Integer)
    backend: Mapped[str] = mapped_column(String(32))
    provenance: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[float] = mapped_column(Float)


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (UniqueConstraint("campaign_id", "job_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    campaign_id: Mapped[str] = mapped_column(ForeignKey("campaigns.id"), index=True)
    job_index: Mapped[int] = mapped_column(Integer)
    first_event: Mapped[int] = mapped_column(Integer)
    n_events: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default=PENDING, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[float] = mapped_column(Float)

    @classmethod
    def find(cls, session: Session, campaign_id: str, job_index: int) -> JobRow:
        """The job ``job_index`` of ``campaign_id``; a StoreError if there is none."""
        row = session.scalar(
            select(cls).where(cls.campaign_id == campaign_id, cls.job_index == job_index)
        )
        if row is None:
            raise StoreError(f"campaign {campaign_id!r} has no job {job_index}")
        return row


class AttemptRow(Base):
    __tablename__ = "attempts"
    __table_args__ = (UniqueConstraint("job_id", "attempt"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    backend: Mapped[str] = mapped_column(String(32))
    backend_job_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    site: Mapped[str] = mapped_column(String(128), default="local")
    state: Mapped[str] = mapped_column(String(16), default=RUNNING)
    submitted_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error_class: Mapped[str | None] = mapped_column(String(64), nullable=True)
    native_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    memory_mb: Mapped[int | None] = mapped_column(Integer, nullable=True)
    walltime_s: Mapped[int | None] = mapped_column(Integer, nullable=True)

    @classmethod
    def find(cls, session: Session, campaign_id: str, job_index: int, attempt: int) -> AttemptRow:
        """Attempt ``attempt`` of a job; a StoreError if the job or the attempt is missing."""
        job_row = JobRow.find(session, campaign_id, job_index)
        row = session.scalar(select(cls).where(cls.job_id == job_row.id, cls.attempt == attempt))
        if row is None:
            raise StoreError(f"job {job_index} of {campaign_id!r} has no attempt {attempt}")
        return row


class EngineAttemptRow(Base):
    """What the engine calls an attempt (stored at submission, so a restarted driver finds
    it again), the engine's own job ids seen for it, and its lifecycle phase
    (:mod:`smartbkg_prod.lifecycle`) with the time it entered it and a note when held or
    stuck. See :mod:`.engine`."""

    __tablename__ = "engine_attempts"
    __table_args__ = (UniqueConstraint("campaign_id", "job_index", "attempt"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    campaign_id: Mapped[str] = mapped_column(String(128), index=True)
    job_index: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
    backend: Mapped[str] = mapped_column(String(32))
    backend_job_id: Mapped[str] = mapped_column(String(128))
    site: Mapped[str | None] = mapped_column(String(128), nullable=True)
    log: Mapped[str | None] = mapped_column(Text, nullable=True)
    engine_ids: Mapped[list] = mapped_column(JSON, default=list)
    phase: Mapped[str] = mapped_column(String(16), index=True)
    phase_since: Mapped[float] = mapped_column(Float)
    note: Mapped[str] = mapped_column(Text, default="")


class SubmitRefusalRow(Base):
    """A job whose last submission its engine refused or could not take (no pool, auth,
    network, a bad partition): no attempt was used. Kept, with the engine's message
    (redacted), until a submission of the job is accepted."""

    __tablename__ = "submit_refusals"
    __table_args__ = (UniqueConstraint("campaign_id", "job_index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    campaign_id: Mapped[str] = mapped_column(String(128), index=True)
    job_index: Mapped[int] = mapped_column(Integer)
    backend: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)
    refusals: Mapped[int] = mapped_column(Integer, default=1)
    refused_at: Mapped[float] = mapped_column(Float)


class DriverLeaseRow(Base):
    """The one submitter driving a campaign (see :class:`smartbkg_prod.store.leases.DriverLeases`)."""

    __tablename__ = "driver_leases"

    campaign_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    holder: Mapped[str] = mapped_column(String(256))
    host: Mapped[str] = mapped_column(String(256))
    pid: Mapped[int] = mapped_column(Integer)
    heartbeat: Mapped[float] = mapped_column(Float)


class ReportRow(Base):
    __tablename__ = "reports"
    __table_args__ = (UniqueConstraint("campaign_id", "job_index", "attempt"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    campaign_id: Mapped[str] = mapped_column(String(128), index=True)
    job_index: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
    site: Mapped[str] = mapped_column(String(128), default="local")
    host: Mapped[str] = mapped_column(String(256), default="")
    exit_code: Mapped[int] = mapped_column(Integer)
    error_class: Mapped[str] = mapped_column(String(64))
    events_generated: Mapped[int] = mapped_column(Integer, default=0)
    events_kept: Mapped[int] = mapped_column(Integer, default=0)
    events_simulated: Mapped[int] = mapped_column(Integer, default=0)
    events_skimmed: Mapped[int] = mapped_column(Integer, default=0)
    sum_weights_skimmed: Mapped[float] = mapped_column(Float, default=0.0)
    wall_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    cpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    peak_rss_mb: Mapped[float] = mapped_column(Float, default=0.0)
    started_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float] = mapped_column(Float, index=True)
    body: Mapped[dict] = mapped_column(JSON)


# -- monitor's table ------------------------------------------------------------------------
# The last state a backend reported for each attempt (``held`` with its hold reason,
# ``running`` at a site, ...). Kept apart from ``attempts.state`` on purpose: the campaign
# driver owns that column and uses it to find attempts left running; a poll by the monitor
# must never change what the driver resumes.
class BackendStateRow(Base):
    __tablename__ = "monitor_backend_states"
    __table_args__ = (UniqueConstraint("campaign_id", "job_index", "attempt"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    campaign_id: Mapped[str] = mapped_column(String(128), index=True)
    job_index: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
    backend: Mapped[str] = mapped_column(String(32))
    backend_job_id: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16), index=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    native_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    native_reason: Mapped[str] = mapped_column(Text, default="")
    site: Mapped[str | None] = mapped_column(String(128), nullable=True)
    observed_at: Mapped[float] = mapped_column(Float)


# -- recovery's tables ------------------------------------------------------------------------
# - ``recommendations``: one per failed attempt reviewed, with the feature row the policy saw;
# - ``decisions``: who accepted or overrode a recommendation, when, with which action (the
#   classifier's training labels); ``applied_at`` once the action was carried out;
# - ``job_overrides``: per (campaign, job) resources and excluded sites for the next attempts;
# - ``job_splits``: sub-jobs made by a split, with the parent's random stream start;
# - ``recovery_models``: trained classifiers (newest is used), with their label counts.
# Recommendation states: open (waiting for review), accepted / overridden (decided, not yet
# applied), applied, skipped (the job no longer needed it when applying), superseded (never
# decided, and the job has moved on: it succeeded, was cancelled or failed again).
OPEN, ACCEPTED, OVERRIDDEN, APPLIED = "open", "accepted", "overridden", "applied"
SKIPPED, SUPERSEDED = "skipped", "superseded"
STATUSES = (OPEN, ACCEPTED, OVERRIDDEN, APPLIED, SKIPPED, SUPERSEDED)


class RecommendationRow(Base):
    __tablename__ = "recommendations"
    __table_args__ = (UniqueConstraint("campaign_id", "job_index", "attempt"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    campaign_id: Mapped[str] = mapped_column(String(128), index=True)
    job_index: Mapped[int] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer)
    site: Mapped[str] = mapped_column(String(128))
    failure_code: Mapped[str] = mapped_column(String(64))
    failure_name: Mapped[str] = mapped_column(String(128))
    category: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(32))
    confidence: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(Text)
    changes: Mapped[dict] = mapped_column(JSON)
    decided_by: Mapped[str] = mapped_column(String(64))
    features: Mapped[dict] = mapped_column(JSON)
    record: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=OPEN, index=True)
    created_at: Mapped[float] = mapped_column(Float)


class DecisionRow(Base):
    __tablename__ = "decisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    recommendation_id: Mapped[int] = mapped_column(ForeignKey("recommendations.id"), unique=True)
    operator: Mapped[str] = mapped_column(String(128))
    decided_at: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(16))  # accept | override
    action: Mapped[str] = mapped_column(String(32))
    changes: Mapped[dict] = mapped_column(JSON)
    comment: Mapped[str] = mapped_column(Text, default="")
    applied_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    outcome: Mapped[str] = mapped_column(Text, default="")


class JobOverrideRow(Base):
    __tablename__ = "job_overrides"

    campaign_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    job_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    memory_mb: Mapped[int | None] = mapped_column(Integer, nullable=True)
    walltime_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    exclude_sites: Mapped[list] = mapped_column(JSON, default=list)
    decision_id: Mapped[int | None] = mapped_column(ForeignKey("decisions.id"), nullable=True)
    updated_at: Mapped[float] = mapped_column(Float)

    def changes(self) -> RetryChanges:
        return RetryChanges(
            memory_mb=self.memory_mb,
            walltime_s=self.walltime_s,
            exclude_sites=list(self.exclude_sites or []),
        )


class JobSplitRow(Base):
    __tablename__ = "job_splits"

    campaign_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    job_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    parent_index: Mapped[int] = mapped_column(Integer)
    stream_start: Mapped[int] = mapped_column(Integer)
    decision_id: Mapped[int | None] = mapped_column(ForeignKey("decisions.id"), nullable=True)


class ModelRow(Base):
    __tablename__ = "recovery_models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[float] = mapped_column(Float)
    digest: Mapped[str] = mapped_column(String(16))
    n_labels: Mapped[int] = mapped_column(Integer)
    label_counts: Mapped[dict] = mapped_column(JSON)
    blob: Mapped[bytes] = mapped_column(LargeBinary)
