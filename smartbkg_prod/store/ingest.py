"""Bulk ingestion: job reports and backend states into the store, idempotently.

:func:`ingest_reports` has the same effect as calling
:meth:`Reports.record <smartbkg_prod.store.reports.Reports.record>` for each report in
order, but in one transaction with set-based reads and ``executemany`` writes, so tens of
thousands of reports go in per second. A report already stored (same campaign, job,
attempt) is counted as a duplicate and changes nothing. The monitor's collection
(:mod:`smartbkg_prod.monitor.collect`) reads the files and calls these.

>>> ingest_reports(Store("sqlite://"), []).stored
0
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel, Field
from sqlalchemy import Connection, and_, bindparam, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from smartbkg_prod.errors import StoreError
from smartbkg_prod.report import JobReport
from smartbkg_prod.store import Store
from smartbkg_prod.store.reports import REPORT_FIELDS, report_field_values
from smartbkg_prod.store.tables import (
    CANCELLED,
    DONE,
    FAILED,
    PENDING,
    AttemptRow,
    BackendStateRow,
    CampaignRow,
    JobRow,
    ReportRow,
)

log = logging.getLogger("smartbkg_prod.store.ingest")

DEFAULT_MAX_ATTEMPTS = 3
_RACE_RETRIES = 3


class IngestCounts(BaseModel):
    """What one ingestion stored. ``rejected`` has one readable line per report not stored."""

    received: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: list[str] = Field(default_factory=list)


class BackendStateRecord(BaseModel):
    """The state a backend reported for one attempt (kept apart from ``attempts.state``,
    which the campaign driver owns)."""

    campaign_id: str
    job_index: int
    attempt: int
    backend: str
    backend_job_id: str
    state: str
    exit_code: int | None = None
    native_code: str | None = None
    native_reason: str = ""
    site: str | None = None


def ingest_reports(
    store: Store, reports: Iterable[JobReport], final: bool | None = None
) -> IngestCounts:
    """Store ``reports`` and move their jobs' states, in one transaction.

    ``final`` marks failed attempts as their job's last; ``None`` (default) decides per
    report: an attempt is final when it used the campaign's ``retry.max_attempts``.
    A concurrent writer storing the same report first is absorbed by retrying.
    """
    reports = list(reports)
    for _ in range(_RACE_RETRIES):
        try:
            return _ingest_once(store, reports, final)
        except IntegrityError:
            log.info("a concurrent writer stored some of these reports; re-reading")
    result = IngestCounts(received=len(reports))
    for report in reports:
        stored = store.reports.record(report, final=bool(final))
        result.stored += stored
        result.duplicates += not stored
    return result


@dataclass
class _Batch:
    """The rows a batch of reports touches, read once: only the rows of the jobs the batch
    names, so that a batch's cost does not grow with the size of its campaign (100k jobs)."""

    max_attempts: dict[str, int]  # campaign id -> retry.max_attempts
    seen: set[tuple[str, int, int]]  # (campaign id, job index, attempt) of stored reports
    jobs: dict[tuple[str, int], list]  # (campaign id, job index) -> [job id, state, attempts]
    attempts: dict[tuple[int, int], tuple]  # (job id, attempt) -> (attempt id, backend job id)


@dataclass
class _Writes:
    """What a batch adds and changes, written with ``executemany`` at the end."""

    report_rows: list[tuple] = field(default_factory=list)
    new_attempts: list[tuple] = field(default_factory=list)
    attempt_updates: list[tuple] = field(default_factory=list)
    touched_jobs: set[tuple[str, int]] = field(default_factory=set)


def _ingest_once(store: Store, reports: Sequence[JobReport], final: bool | None) -> IngestCounts:
    result = IngestCounts(received=len(reports))
    if not reports:
        return result
    now = time.time()
    with store.session() as session:
        batch = _read_batch(session, reports)
        writes = _Writes()
        for report in reports:
            key = (report.campaign_id, report.job_index, report.attempt)
            if key in batch.seen:
                result.duplicates += 1
            elif (problem := _unknown_job(batch, report)) is not None:
                result.rejected.append(problem)
            else:
                batch.seen.add(key)
                _add_report(batch, writes, report, final)
        _write(session.connection(), batch, writes, now)
        result.stored = len(writes.report_rows)
    return result


def _read_batch(session: Session, reports: Sequence[JobReport]) -> _Batch:
    indexes_by_campaign: dict[str, set[int]] = {}
    for report in reports:
        indexes_by_campaign.setdefault(report.campaign_id, set()).add(report.job_index)

    def batch_jobs(table):
        return or_(
            *(
                and_(table.campaign_id == campaign_id, table.job_index.in_(sorted(indexes)))
                for campaign_id, indexes in indexes_by_campaign.items()
            )
        )

    campaigns = select(CampaignRow.id, CampaignRow.spec).where(
        CampaignRow.id.in_(sorted(indexes_by_campaign))
    )
    stored = select(ReportRow.campaign_id, ReportRow.job_index, ReportRow.attempt).where(
        batch_jobs(ReportRow)
    )
    jobs = select(
        JobRow.id, JobRow.campaign_id, JobRow.job_index, JobRow.state, JobRow.attempts
    ).where(batch_jobs(JobRow))
    attempts = (
        select(AttemptRow.id, AttemptRow.job_id, AttemptRow.attempt, AttemptRow.backend_job_id)
        .join(JobRow, AttemptRow.job_id == JobRow.id)
        .where(batch_jobs(JobRow))
    )
    return _Batch(
        max_attempts={cid: _max_attempts(spec) for cid, spec in session.execute(campaigns)},
        seen={tuple(row) for row in session.execute(stored)},
        jobs={
            (campaign_id, index): [job_id, state, used]
            for job_id, campaign_id, index, state, used in session.execute(jobs)
        },
        attempts={
            (job_id, attempt): (attempt_id, backend_job_id)
            for attempt_id, job_id, attempt, backend_job_id in session.execute(attempts)
        },
    )


def _unknown_job(batch: _Batch, report: JobReport) -> str | None:
    """Why a report cannot be stored (its campaign or job is not in the store), or None."""
    if report.campaign_id not in batch.max_attempts:
        return (
            f"{_name(report)}: campaign {report.campaign_id} is not registered "
            "(submit it, or collect a directory holding its jobs/ files)"
        )
    if (report.campaign_id, report.job_index) not in batch.jobs:
        return f"{_name(report)}: the campaign has no job {report.job_index}"
    return None


def _add_report(batch: _Batch, writes: _Writes, report: JobReport, final: bool | None) -> None:
    """The report's row, its attempt's (new or updated) and its job's new state, as
    :meth:`Reports.record <smartbkg_prod.store.reports.Reports.record>` would write them."""
    writes.report_rows.append(_report_row(report))
    job = batch.jobs[(report.campaign_id, report.job_index)]
    job_id = job[0]
    attempt_state = DONE if report.succeeded else FAILED
    existing = batch.attempts.get((job_id, report.attempt))
    if existing is None:
        writes.new_attempts.append(
            (
                job_id,
                report.attempt,
                report.backend,
                report.backend_job_id,
                report.started_at,
                attempt_state,
                report.exit_code,
                report.error_class,
                report.finished_at,
                report.site,
            )
        )
        batch.attempts[(job_id, report.attempt)] = (None, report.backend_job_id)
        job[2] = max(job[2], report.attempt)
    else:
        attempt_id, backend_job_id = existing
        writes.attempt_updates.append(
            (
                attempt_state,
                report.exit_code,
                report.error_class,
                report.finished_at,
                report.site,
                report.backend_job_id or backend_job_id,
                attempt_id,
            )
        )
    # As Reports.record: a cancelled job stays cancelled on a late report.
    if job[1] not in (DONE, CANCELLED):
        if report.succeeded:
            job[1] = DONE
        else:
            max_attempts = batch.max_attempts[report.campaign_id]
            is_final = report.attempt >= max_attempts if final is None else final
            job[1] = FAILED if is_final else PENDING
    writes.touched_jobs.add((report.campaign_id, report.job_index))


def _write(connection: Connection, batch: _Batch, writes: _Writes, now: float) -> None:
    if writes.report_rows:
        _insert_many(connection, ReportRow.__tablename__, REPORT_COLUMNS, writes.report_rows)
    if writes.new_attempts:
        _insert_many(connection, AttemptRow.__tablename__, ATTEMPT_COLUMNS, writes.new_attempts)
    if writes.attempt_updates:
        _update_many(
            connection, AttemptRow.__tablename__, ATTEMPT_UPDATE_COLUMNS, writes.attempt_updates
        )
    if writes.touched_jobs:
        jobs = batch.jobs
        _update_many(
            connection,
            JobRow.__tablename__,
            ("state", "attempts", "updated_at"),
            [(jobs[key][1], jobs[key][2], now, jobs[key][0]) for key in writes.touched_jobs],
        )


def _max_attempts(spec: dict | None) -> int:
    # Defensive: a spec stored by an older version may lack the retry section.
    try:
        return int((spec or {}).get("retry", {}).get("max_attempts", DEFAULT_MAX_ATTEMPTS))
    except (AttributeError, TypeError, ValueError):
        return DEFAULT_MAX_ATTEMPTS


def _name(report: JobReport) -> str:
    return f"{report.campaign_id} job {report.job_index} attempt {report.attempt}"


REPORT_COLUMNS = (*REPORT_FIELDS, "body")
ATTEMPT_COLUMNS = (
    "job_id",
    "attempt",
    "backend",
    "backend_job_id",
    "submitted_at",
    "state",
    "exit_code",
    "error_class",
    "finished_at",
    "site",
)
ATTEMPT_UPDATE_COLUMNS = (
    "state",
    "exit_code",
    "error_class",
    "finished_at",
    "site",
    "backend_job_id",
)
_PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}


def _report_row(report: JobReport) -> tuple:
    """A reports-table row in REPORT_COLUMNS order. The body is serialized by pydantic's
    compiled serializer: the same JSON document as json.dumps(model_dump()), at half the cost."""
    return (*report_field_values(report), report.model_dump_json())


# Writes go straight to the DB-API cursor's executemany: at 10k rows, SQLAlchemy's per-row
# parameter processing costs more than SQLite's own insert.
def _mark(connection: Connection, column: str) -> str:
    try:
        mark = _PLACEHOLDERS[connection.dialect.paramstyle]
    except KeyError:
        raise StoreError(
            f"bulk ingestion does not support the {connection.dialect.driver} driver "
            f"(paramstyle {connection.dialect.paramstyle}); use SQLite or PostgreSQL with psycopg"
        ) from None
    # PostgreSQL does not put text into a json column without a cast.
    if column == "body" and connection.dialect.name == "postgresql":
        return f"CAST({mark} AS JSON)"
    return mark


def _insert_many(
    connection: Connection, table: str, columns: Sequence[str], rows: list[tuple]
) -> None:
    marks = ", ".join(_mark(connection, column) for column in columns)
    connection.exec_driver_sql(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)


def _update_many(
    connection: Connection, table: str, columns: Sequence[str], rows: list[tuple]
) -> None:
    """UPDATE by primary key; each row holds the new values in ``columns`` order, then the id."""
    assignments = ", ".join(f"{column} = {_mark(connection, column)}" for column in columns)
    connection.exec_driver_sql(
        f"UPDATE {table} SET {assignments} WHERE id = {_mark(connection, 'id')}", rows
    )


def record_backend_states(store: Store, states: Iterable[BackendStateRecord]) -> int:
    """Upsert the latest state per attempt (the last of ``states`` for each); returns rows
    written."""
    now = time.time()
    latest = {(s.campaign_id, s.job_index, s.attempt): s for s in states}
    if not latest:
        return 0
    campaign_ids = sorted({key[0] for key in latest})
    with store.session() as session:
        existing = {
            (campaign_id, index, attempt): row_id
            for row_id, campaign_id, index, attempt in session.execute(
                select(
                    BackendStateRow.id,
                    BackendStateRow.campaign_id,
                    BackendStateRow.job_index,
                    BackendStateRow.attempt,
                ).where(BackendStateRow.campaign_id.in_(campaign_ids))
            )
        }
        inserts, updates = [], []
        for key, state in latest.items():
            values = {
                **state.model_dump(exclude={"campaign_id", "job_index", "attempt"}),
                "observed_at": now,
            }
            if key in existing:
                updates.append({**values, "b_id": existing[key]})
            else:
                inserts.append(
                    {**values, "campaign_id": key[0], "job_index": key[1], "attempt": key[2]}
                )
        if inserts:
            session.execute(insert(BackendStateRow), inserts)
        if updates:
            table = BackendStateRow.__table__
            session.connection().execute(
                update(table).where(table.c.id == bindparam("b_id")), updates
            )
    return len(latest)
