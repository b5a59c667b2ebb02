"""The job database (SQLAlchemy 2): campaigns, jobs, attempts and reports.

SQLite file by default (``--db URL`` or ``SMARTBKG_DB``), PostgreSQL by URL
(``postgresql+psycopg://user@host/db``). A job's events are counted once, from its one
successful attempt; a report delivered twice is stored once.

>>> store = Store("sqlite://")
>>> store.campaign_ids()
[]
"""

from __future__ import annotations

import json
import operator
import os
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel
from sqlalchemy import (
    JSON,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    inspect,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from smartbkg_prod.errors import StoreError
from smartbkg_prod.exitcodes import ExitCode
from smartbkg_prod.plan import Job, RetryChanges
from smartbkg_prod.redact import redact, redact_url
from smartbkg_prod.report import JobReport
from smartbkg_prod.spec import Campaign

DEFAULT_DB = "sqlite:///smartbkg-prod.db"

# Job states. A job is "done" once one attempt succeeded; "failed" once its attempts are
# exhausted; "running" while an attempt is in flight; "pending" before the first attempt.
PENDING, RUNNING, DONE, FAILED, CANCELLED = "pending", "running", "done", "failed", "cancelled"
JOB_STATES = (PENDING, RUNNING, DONE, FAILED, CANCELLED)


def default_db_url() -> str:
    return os.environ.get("SMARTBKG_DB") or DEFAULT_DB


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
    """The one submitter driving a campaign (see :meth:`Store.acquire_driver_lease`)."""

    __tablename__ = "driver_leases"

    campaign_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    holder: Mapped[str] = mapped_column(String(256))
    host: Mapped[str] = mapped_column(String(256))
    pid: Mapped[int] = mapped_column(Integer)
    heartbeat: Mapped[float] = mapped_column(Float)


# A driver renews its lease every LEASE_RENEW_S; one silent for LEASE_STALE_S is dead.
LEASE_RENEW_S, LEASE_STALE_S = 10.0, 120.0


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


class CampaignStatus(BaseModel):
    """Figures for ``smartbkg-prod status``. Keys are stable (documented in README)."""

    campaign_id: str
    name: str
    backend: str
    jobs_total: int
    jobs_by_state: dict[str, int]
    events_requested: int
    events_generated: int
    events_kept: int
    events_simulated: int
    events_skimmed: int
    sum_weights_skimmed: float
    retention: float | None
    retention_error: float | None
    throughput_events_per_s: float | None
    wall_seconds: float
    cpu_seconds: float
    failed_attempts: int
    complete: bool
    # filter.tune: auto: the recorded choice (smartbkg_prod.filter.tune.FilterTuning)
    # once made; `status --json` adds its in-situ speedup.
    filter_tuning: dict | None = None
    # Jobs whose last submission the engine refused (no attempt used) and its last message.
    jobs_submit_refused: int = 0
    submit_error: str | None = None


def _driver_message(error: DBAPIError) -> str:
    """The database driver's message on one line (psycopg's spans several), redacted."""
    return redact(" ".join(str(error.orig).split()))


class Store:
    """Access to the job database; every method opens and closes its own transaction."""

    def __init__(self, url: str | None = None, create: bool = True):
        """Open the database at ``url`` (default: ``SMARTBKG_DB`` or ./smartbkg-prod.db).

        ``create=False`` opens only a database that already holds our tables (what a
        read-only command such as ``status`` wants): a missing SQLite file, or a database
        without the tables, is a StoreError naming the URL; nothing is created.
        """
        self.url = url or default_db_url()
        try:
            self.engine = create_engine(self.url, future=True)
        except (SQLAlchemyError, ImportError, ValueError) as error:
            raise StoreError(
                f"database URL {redact_url(self.url)!r} is not usable: {redact(str(error))}"
            ) from None
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        if not create:
            self._check_exists()
            return
        # Two processes opening a new database at once (submit, monitor serve) both try
        # to create the tables; the loser sees "already exists" and looks again once the
        # other one is through.
        for tries_left in reversed(range(50)):
            try:
                Base.metadata.create_all(self.engine)
                break
            except DBAPIError as error:
                if tries_left and "exists" in str(error.orig):
                    time.sleep(0.1)
                    continue
                raise StoreError(
                    f"cannot open database {redact_url(self.url)!r}: {_driver_message(error)}"
                ) from None

    def _check_exists(self) -> None:
        where = redact_url(self.url)
        hint = "submit a campaign to create it, or name another with --db URL or SMARTBKG_DB"
        database = self.engine.url.database
        if self.engine.dialect.name == "sqlite" and (
            not database or database == ":memory:" or not Path(database).is_file()
        ):
            # Connecting would create the file: look before.
            raise StoreError(f"no database at {where} ({hint})")
        try:
            with self.engine.connect() as connection:
                found = inspect(connection).has_table(CampaignRow.__tablename__)
        except DBAPIError as error:
            raise StoreError(f"cannot open database {where!r}: {_driver_message(error)}") from None
        if not found:
            raise StoreError(f"no smartbkg-prod tables in the database at {where} ({hint})")

    @contextmanager
    def session(self) -> Iterator[Session]:
        try:
            with self._sessions() as session, session.begin():
                yield session
        except OperationalError as error:
            # Locked past the busy timeout, server gone, disk full: one clear error.
            raise StoreError(
                f"database {redact_url(self.url)} failed: {_driver_message(error)} "
                "(another writer holding it too long, or the server or disk unavailable); "
                "re-run the command when it is back: campaigns resume from the store"
            ) from None

    # -- what recovery changed for a campaign's next attempts ----------------------
    def job_overrides(self, campaign_id: str) -> dict[int, RetryChanges]:
        """Per-job resources and excluded sites set by recovery, for the next attempts.

        >>> Store("sqlite://").job_overrides("any")
        {}
        """
        with self.session() as session:
            rows = session.scalars(
                select(JobOverrideRow).where(JobOverrideRow.campaign_id == campaign_id)
            )
            return {row.job_index: row.changes() for row in rows}

    def split_jobs(self, campaign_id: str) -> dict[int, Job]:
        """Sub-jobs made by recovery splits, by their new job index (with ``stream_start``).

        A driver runs these besides the planned jobs; their parents are ``cancelled``.
        """
        with self.session() as session:
            rows = session.execute(
                select(JobRow, JobSplitRow.stream_start)
                .join(
                    JobSplitRow,
                    (JobSplitRow.campaign_id == JobRow.campaign_id)
                    & (JobSplitRow.job_index == JobRow.job_index),
                )
                .where(JobRow.campaign_id == campaign_id)
            ).all()
        return {
            row.job_index: Job(
                campaign_id=campaign_id,
                index=row.job_index,
                first_event=row.first_event,
                n_events=row.n_events,
                seed=row.seed,
                stream_start=stream_start,
            )
            for row, stream_start in rows
        }

    # -- campaigns and jobs -------------------------------------------------------
    def register_campaign(
        self,
        campaign: Campaign,
        jobs: Iterable[Job],
        output_dir: Path,
        spec_path: str = "",
        provenance: dict | None = None,
    ) -> bool:
        """Record a campaign and its planned jobs. Returns False if it already existed
        (then only the backend it runs on now is updated)."""
        now = time.time()
        try:
            with self.session() as session:
                existing = session.get(CampaignRow, campaign.campaign_id)
                if existing is not None:
                    existing.backend = campaign.backend.name
                    return False
                session.add(
                    CampaignRow(
                        id=campaign.campaign_id,
                        name=campaign.name,
                        spec=campaign.normalized(),
                        spec_path=spec_path,
                        output_dir=str(output_dir),
                        n_jobs=campaign.n_jobs,
                        events_requested=campaign.events,
                        backend=campaign.backend.name,
                        provenance=provenance or {},
                        created_at=now,
                    )
                )
                session.flush()
                rows = [
                    {
                        "campaign_id": job.campaign_id,
                        "job_index": job.index,
                        "first_event": job.first_event,
                        "n_events": job.n_events,
                        "seed": job.seed,
                        "state": PENDING,
                        "attempts": 0,
                        "updated_at": now,
                    }
                    for job in jobs
                ]
                if rows:
                    session.execute(JobRow.__table__.insert(), rows)
        except IntegrityError:
            # Registered by a concurrent submitter first: same spec, same planned jobs.
            return False
        return True

    def campaign(self, campaign_id: str) -> CampaignRow | None:
        with self.session() as session:
            return session.get(CampaignRow, campaign_id)

    def campaign_ids(self) -> list[str]:
        with self.session() as session:
            return list(session.scalars(select(CampaignRow.id).order_by(CampaignRow.created_at)))

    def find_campaigns(self, key: str) -> list[str]:
        """Campaign ids matching an id or a name."""
        with self.session() as session:
            ids = session.scalars(
                select(CampaignRow.id)
                .where((CampaignRow.id == key) | (CampaignRow.name == key))
                .order_by(CampaignRow.created_at)
            )
            return list(ids)

    def update_provenance(self, campaign_id: str, values: dict) -> None:
        with self.session() as session:
            row = session.get(CampaignRow, campaign_id)
            row.provenance = {**(row.provenance or {}), **values}

    def job_states(self, campaign_id: str) -> dict[int, str]:
        with self.session() as session:
            rows = session.execute(
                select(JobRow.job_index, JobRow.state).where(JobRow.campaign_id == campaign_id)
            )
            return {index: value for index, value in rows}

    def job_attempts(self, campaign_id: str) -> dict[int, int]:
        with self.session() as session:
            rows = session.execute(
                select(JobRow.job_index, JobRow.attempts).where(JobRow.campaign_id == campaign_id)
            )
            return {index: value for index, value in rows}

    # -- the one driver of a campaign ----------------------------------------------
    def acquire_driver_lease(self, campaign_id: str, holder: str) -> None:
        """Become the one submitter driving ``campaign_id``. Raises StoreError while another
        live submitter holds it; a holder silent for LEASE_STALE_S, or whose process on
        this host is gone (a killed submitter), is taken over."""
        try:
            self._take_driver_lease(campaign_id, holder)
        except IntegrityError:
            raise StoreError(
                f"campaign {campaign_id} is being driven by another submitter "
                "(started at the same moment)"
            ) from None

    def _take_driver_lease(self, campaign_id: str, holder: str) -> None:
        now, host = time.time(), socket.gethostname()
        with self.session() as session:
            row = session.get(DriverLeaseRow, campaign_id)
            if row is None:
                session.add(
                    DriverLeaseRow(
                        campaign_id=campaign_id,
                        holder=holder,
                        host=host,
                        pid=os.getpid(),
                        heartbeat=now,
                    )
                )
                return
            if row.holder != holder and not _lease_stale(row, now, host):
                raise StoreError(
                    f"campaign {campaign_id} is being driven by another submitter (pid {row.pid} "
                    f"on {row.host}, alive {now - row.heartbeat:.0f} s ago): stop it, or wait "
                    f"{LEASE_STALE_S:.0f} s after it died"
                )
            taken = session.execute(
                update(DriverLeaseRow)
                .where(
                    DriverLeaseRow.campaign_id == campaign_id,
                    DriverLeaseRow.holder == row.holder,
                    DriverLeaseRow.heartbeat == row.heartbeat,
                )
                .values(holder=holder, host=host, pid=os.getpid(), heartbeat=now)
                .execution_options(synchronize_session=False)
            )
            if taken.rowcount != 1:
                raise StoreError(f"campaign {campaign_id} was just taken by another submitter")

    def renew_driver_lease(self, campaign_id: str, holder: str) -> None:
        with self.session() as session:
            renewed = session.execute(
                update(DriverLeaseRow)
                .where(DriverLeaseRow.campaign_id == campaign_id, DriverLeaseRow.holder == holder)
                .values(heartbeat=time.time())
                .execution_options(synchronize_session=False)
            )
            if renewed.rowcount != 1:
                raise StoreError(
                    f"campaign {campaign_id} was taken over by another submitter: stopping"
                )

    def release_driver_lease(self, campaign_id: str, holder: str) -> None:
        with self.session() as session:
            session.execute(
                DriverLeaseRow.__table__.delete().where(
                    DriverLeaseRow.campaign_id == campaign_id, DriverLeaseRow.holder == holder
                )
            )

    def running_attempts(self, campaign_id: str) -> dict[int, list[int]]:
        """Attempts still marked running, by job index."""
        with self.session() as session:
            rows = session.execute(
                select(JobRow.job_index, AttemptRow.attempt)
                .join(JobRow, AttemptRow.job_id == JobRow.id)
                .where(JobRow.campaign_id == campaign_id, AttemptRow.state == RUNNING)
            )
            running: dict[int, list[int]] = {}
            for job_index, attempt in rows:
                running.setdefault(job_index, []).append(attempt)
            return running

    # -- attempts and reports -----------------------------------------------------
    def start_attempt(
        self,
        job: Job,
        backend: str,
        site: str = "local",
        backend_job_id: str | None = None,
        memory_mb: int | None = None,
        walltime_s: int | None = None,
    ) -> int:
        """Open the next attempt of a job; returns its number (1, 2, ...)."""
        now = time.time()
        with self.session() as session:
            row = self._job_row(session, job.campaign_id, job.index)
            row.attempts += 1
            row.state = RUNNING
            row.updated_at = now
            session.add(
                AttemptRow(
                    job_id=row.id,
                    attempt=row.attempts,
                    backend=backend,
                    backend_job_id=backend_job_id,
                    site=site,
                    state=RUNNING,
                    submitted_at=now,
                    memory_mb=memory_mb,
                    walltime_s=walltime_s,
                )
            )
            return row.attempts

    def set_backend_job_id(
        self, campaign_id: str, job_index: int, attempt: int, backend_job_id: str
    ) -> None:
        with self.session() as session:
            attempt_row = self._attempt_row(session, campaign_id, job_index, attempt)
            attempt_row.backend_job_id = backend_job_id

    def withdraw_attempt(
        self,
        campaign_id: str,
        job_index: int,
        attempt: int,
        backend: str,
        message: str,
        state: str = PENDING,
    ) -> None:
        """Undo :meth:`start_attempt` for a submission the engine refused or could not take:
        the attempt never existed (no attempt used, nothing for recovery to see), the job
        returns to ``state`` (what it was before), and the engine's message is kept on it."""
        now = time.time()
        with self.session() as session:
            job_row = self._job_row(session, campaign_id, job_index)
            attempt_row = self._attempt_row(session, campaign_id, job_index, attempt)
            if attempt_row.state != RUNNING or attempt != job_row.attempts:
                raise StoreError(
                    f"attempt {attempt} of job {job_index} of {campaign_id!r} is not the open "
                    "last attempt: it cannot be withdrawn"
                )
            session.delete(attempt_row)
            job_row.attempts -= 1
            job_row.state = state
            job_row.updated_at = now
            refusal = session.scalar(
                select(SubmitRefusalRow).where(
                    SubmitRefusalRow.campaign_id == campaign_id,
                    SubmitRefusalRow.job_index == job_index,
                )
            )
            if refusal is None:
                refusal = SubmitRefusalRow(campaign_id=campaign_id, job_index=job_index, refusals=0)
                session.add(refusal)
            refusal.backend = backend
            refusal.message = redact(message)
            refusal.refusals += 1
            refusal.refused_at = now

    def clear_submit_refusals(self, campaign_id: str, job_indices: Iterable[int]) -> None:
        """Forget the refusals of jobs whose submission was accepted."""
        indices = list(job_indices)
        with self.session() as session:
            for start in range(0, len(indices), 500):
                session.execute(
                    SubmitRefusalRow.__table__.delete().where(
                        SubmitRefusalRow.campaign_id == campaign_id,
                        SubmitRefusalRow.job_index.in_(indices[start : start + 500]),
                    )
                )

    def submit_refusals(self, campaign_id: str) -> dict[int, str]:
        """``job index -> the engine's last message`` for jobs whose submission was refused."""
        with self.session() as session:
            rows = session.execute(
                select(SubmitRefusalRow.job_index, SubmitRefusalRow.message).where(
                    SubmitRefusalRow.campaign_id == campaign_id
                )
            )
            return {index: message for index, message in rows}

    def finish_attempt(
        self,
        campaign_id: str,
        job_index: int,
        attempt: int,
        exit_code: int,
        error_class: str,
        final: bool,
        native_code: str | None = None,
        site: str | None = None,
    ) -> None:
        """Close an attempt that produced no report (lost, killed, crashed)."""
        with self.session() as session:
            attempt_row = self._attempt_row(session, campaign_id, job_index, attempt)
            if attempt_row.state != RUNNING:
                return
            attempt_row.state = DONE if exit_code == 0 else FAILED
            attempt_row.exit_code = exit_code
            attempt_row.error_class = error_class
            attempt_row.native_code = native_code
            if site:
                attempt_row.site = site
            attempt_row.finished_at = time.time()
            job_row = self._job_row(session, campaign_id, job_index)
            if job_row.state not in (DONE, CANCELLED):
                job_row.state = DONE if exit_code == 0 else (FAILED if final else PENDING)
                job_row.updated_at = time.time()

    def record_report(
        self, report: JobReport, final: bool = False, native_code: str | None = None
    ) -> bool:
        """Store a report and move its job's state. Idempotent: returns False for a duplicate.

        ``final`` marks a failed attempt as the job's last (retries exhausted);
        ``native_code`` is the engine's code for the attempt (e.g. ``pilot:1305/40``),
        kept beside the worker's exit code.
        """
        body = report.model_dump(mode="json")
        try:
            with self.session() as session:
                duplicate = session.scalar(
                    select(ReportRow.id).where(
                        ReportRow.campaign_id == report.campaign_id,
                        ReportRow.job_index == report.job_index,
                        ReportRow.attempt == report.attempt,
                    )
                )
                if duplicate is not None:
                    return False
                session.add(_report_row(report, body))
                job_row = self._job_row(session, report.campaign_id, report.job_index)
                attempt_row = session.scalar(
                    select(AttemptRow).where(
                        AttemptRow.job_id == job_row.id, AttemptRow.attempt == report.attempt
                    )
                )
                if attempt_row is None:  # report of an attempt this store did not launch
                    attempt_row = AttemptRow(
                        job_id=job_row.id,
                        attempt=report.attempt,
                        backend=report.backend,
                        site=report.site,
                        submitted_at=report.started_at,
                    )
                    session.add(attempt_row)
                    job_row.attempts = max(job_row.attempts, report.attempt)
                attempt_row.state = DONE if report.succeeded else FAILED
                attempt_row.exit_code = report.exit_code
                attempt_row.error_class = report.error_class
                attempt_row.native_code = native_code
                attempt_row.finished_at = report.finished_at
                attempt_row.site = report.site
                if report.backend_job_id:
                    attempt_row.backend_job_id = report.backend_job_id
                # A cancelled job (killed, or replaced by its split parts) stays cancelled
                # even if a late report of it arrives.
                if job_row.state not in (DONE, CANCELLED):
                    if report.succeeded:
                        job_row.state = DONE
                    else:
                        job_row.state = FAILED if final else PENDING
                job_row.updated_at = time.time()
        except IntegrityError:
            # A concurrent writer stored the same report first.
            return False
        return True

    def done_outputs(self, campaign_id: str) -> dict[int, list[list[dict]]]:
        """For each done job, the output files (``OutputFile`` dicts) of each of its
        successful reports (a late duplicate attempt may have written the file last)."""
        with self.session() as session:
            rows = session.execute(
                select(ReportRow.job_index, ReportRow.body)
                .join(
                    JobRow,
                    (JobRow.campaign_id == ReportRow.campaign_id)
                    & (JobRow.job_index == ReportRow.job_index),
                )
                .where(
                    ReportRow.campaign_id == campaign_id,
                    ReportRow.exit_code == 0,
                    JobRow.state == DONE,
                )
                .order_by(ReportRow.id)
            )
            outputs: dict[int, list[list[dict]]] = {}
            for index, body in rows:
                outputs.setdefault(index, []).append(list(body.get("outputs") or []))
            return outputs

    def reopen_job(self, campaign_id: str, job_index: int) -> None:
        """A done job whose output was lost or damaged after the fact: its successful
        attempts stop counting (their reports are kept, marked ``output_validation``) and
        the job is pending again, to be produced anew with the same seed."""
        with self.session() as session:
            job_row = self._job_row(session, campaign_id, job_index)
            for report_row in session.scalars(
                select(ReportRow).where(
                    ReportRow.campaign_id == campaign_id,
                    ReportRow.job_index == job_index,
                    ReportRow.exit_code == 0,
                )
            ):
                report_row.exit_code = int(ExitCode.OUTPUT_VALIDATION)
                report_row.error_class = "output_validation"
                attempt_row = session.scalar(
                    select(AttemptRow).where(
                        AttemptRow.job_id == job_row.id, AttemptRow.attempt == report_row.attempt
                    )
                )
                if attempt_row is not None:
                    attempt_row.state = FAILED
                    attempt_row.exit_code = int(ExitCode.OUTPUT_VALIDATION)
                    attempt_row.error_class = "output_validation"
            job_row.state = PENDING
            job_row.updated_at = time.time()

    def reports(self, campaign_id: str, successful_only: bool = False) -> list[JobReport]:
        with self.session() as session:
            query = select(ReportRow.body).where(ReportRow.campaign_id == campaign_id)
            if successful_only:
                query = query.where(ReportRow.exit_code == 0)
            return [
                JobReport.model_validate(body)
                for body in session.scalars(query.order_by(ReportRow.id))
            ]

    # -- figures --------------------------------------------------------------------
    def status(self, campaign_id: str) -> CampaignStatus:
        with self.session() as session:
            campaign = session.get(CampaignRow, campaign_id)
            if campaign is None:
                raise StoreError(f"no campaign {campaign_id!r} in {redact_url(self.url)}")
            by_state = dict.fromkeys(JOB_STATES, 0)
            for state, count in session.execute(
                select(JobRow.state, func.count())
                .where(JobRow.campaign_id == campaign_id)
                .group_by(JobRow.state)
            ):
                by_state[state] = count
            # One successful attempt per job counts; a job done twice (a late duplicate
            # attempt) must not double its events, so take the first success per job.
            # Cancelled jobs never count: a split parent's events are its parts'.
            live_jobs = select(JobRow.job_index).where(
                JobRow.campaign_id == campaign_id, JobRow.state != CANCELLED
            )
            first_success = (
                select(func.min(ReportRow.id))
                .where(
                    ReportRow.campaign_id == campaign_id,
                    ReportRow.exit_code == 0,
                    ReportRow.job_index.in_(live_jobs),
                )
                .group_by(ReportRow.job_index)
            )
            totals = session.execute(
                select(
                    func.coalesce(func.sum(ReportRow.events_generated), 0),
                    func.coalesce(func.sum(ReportRow.events_kept), 0),
                    func.coalesce(func.sum(ReportRow.events_simulated), 0),
                    func.coalesce(func.sum(ReportRow.events_skimmed), 0),
                    func.coalesce(func.sum(ReportRow.sum_weights_skimmed), 0.0),
                ).where(ReportRow.id.in_(first_success))
            ).one()
            span = session.execute(
                select(
                    func.min(ReportRow.started_at),
                    func.max(ReportRow.finished_at),
                    func.coalesce(func.sum(ReportRow.cpu_seconds), 0.0),
                ).where(ReportRow.campaign_id == campaign_id)
            ).one()
            failed_attempts = session.scalar(
                select(func.count())
                .select_from(AttemptRow)
                .join(JobRow, AttemptRow.job_id == JobRow.id)
                .where(JobRow.campaign_id == campaign_id, AttemptRow.state == FAILED)
            )
            refusals = session.execute(
                select(SubmitRefusalRow.message)
                .where(SubmitRefusalRow.campaign_id == campaign_id)
                .order_by(SubmitRefusalRow.refused_at)
            ).all()
        generated, kept, simulated, skimmed, weights = totals
        start, end, cpu = span
        wall = (end - start) if start is not None and end is not None else 0.0
        # Among the filter-kept events: control-only events are simulated too (see
        # smartbkg_prod.filter.control) but are not part of the skimmed sample.
        retention = skimmed / kept if kept else None
        retention_error = (retention * (1 - retention) / kept) ** 0.5 if kept else None
        return CampaignStatus(
            campaign_id=campaign.id,
            name=campaign.name,
            backend=campaign.backend,
            jobs_total=campaign.n_jobs,
            jobs_by_state=by_state,
            events_requested=campaign.events_requested,
            events_generated=int(generated),
            events_kept=int(kept),
            events_simulated=int(simulated),
            events_skimmed=int(skimmed),
            sum_weights_skimmed=float(weights),
            retention=retention,
            retention_error=retention_error,
            throughput_events_per_s=(generated / wall) if wall > 0 else None,
            wall_seconds=wall,
            cpu_seconds=float(cpu),
            failed_attempts=int(failed_attempts or 0),
            complete=by_state[DONE] == campaign.n_jobs,
            filter_tuning=(campaign.provenance or {}).get("filter_tuning"),
            jobs_submit_refused=len(refusals),
            submit_error=refusals[-1][0] if refusals else None,
        )

    # -- helpers ----------------------------------------------------------------------
    @staticmethod
    def _job_row(session: Session, campaign_id: str, job_index: int) -> JobRow:
        row = session.scalar(
            select(JobRow).where(JobRow.campaign_id == campaign_id, JobRow.job_index == job_index)
        )
        if row is None:
            raise StoreError(f"campaign {campaign_id!r} has no job {job_index}")
        return row

    def _attempt_row(
        self, session: Session, campaign_id: str, job_index: int, attempt: int
    ) -> AttemptRow:
        job_row = self._job_row(session, campaign_id, job_index)
        row = session.scalar(
            select(AttemptRow).where(AttemptRow.job_id == job_row.id, AttemptRow.attempt == attempt)
        )
        if row is None:
            raise StoreError(f"job {job_index} of {campaign_id!r} has no attempt {attempt}")
        return row


# The reports table's columns besides its id and JSON body, each read off the JobReport
# field of the same name (the bulk ingestion in monitor.collect writes the same columns).
REPORT_FIELDS = (
    "campaign_id",
    "job_index",
    "attempt",
    "site",
    "host",
    "exit_code",
    "error_class",
    "events_generated",
    "events_kept",
    "events_simulated",
    "events_skimmed",
    "sum_weights_skimmed",
    "wall_seconds",
    "cpu_seconds",
    "peak_rss_mb",
    "started_at",
    "finished_at",
)
report_field_values = operator.attrgetter(*REPORT_FIELDS)


def _report_row(report: JobReport, body: dict) -> ReportRow:
    return ReportRow(
        **dict(zip(REPORT_FIELDS, report_field_values(report), strict=True)), body=body
    )


def _lease_stale(row: DriverLeaseRow, now: float, host: str) -> bool:
    """On this host the holder's process decides (a slow submitter keeps its lease);
    elsewhere only its heartbeat can."""
    if row.host != host:
        return now - row.heartbeat > LEASE_STALE_S
    if row.pid == os.getpid():  # left by an earlier run in this process that could not release
        return True
    try:
        os.kill(row.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


# How long a writer waits for another writer's lock before the command fails.
SQLITE_BUSY_TIMEOUT_MS = 30_000


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets readers (status, monitor) work while the submitter writes; the busy
    # timeout turns a concurrent writer's lock into a short wait instead of an error.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def status_json(status: CampaignStatus) -> str:
    return json.dumps(status.model_dump(mode="json"), indent=2)
