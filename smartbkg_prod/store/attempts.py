"""Attempts of jobs and the submissions an engine refused.

An attempt opens when the driver submits a job (:meth:`Attempts.start`), carries the
engine's id for it, and closes with a report (:mod:`smartbkg_prod.store.reports`) or
without one (:meth:`Attempts.finish`: lost, killed, crashed). A submission the engine
refused is no attempt: :meth:`Attempts.withdraw` undoes it and keeps the engine's message.

>>> from smartbkg_prod.store import Store
>>> Store("sqlite://").attempts.running("demo-1234")
{}
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from sqlalchemy import select

from smartbkg_prod.errors import StoreError
from smartbkg_prod.plan import Job
from smartbkg_prod.redact import redact
from smartbkg_prod.store.database import Database
from smartbkg_prod.store.tables import (
    CANCELLED,
    DONE,
    FAILED,
    PENDING,
    RUNNING,
    AttemptRow,
    JobRow,
    SubmitRefusalRow,
)


class Attempts:
    """The ``attempts`` of jobs and the ``submit_refusals`` of their submissions."""

    def __init__(self, database: Database):
        self._database = database

    def start(
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
        with self._database.session() as session:
            row = JobRow.find(session, job.campaign_id, job.index)
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
        with self._database.session() as session:
            attempt_row = AttemptRow.find(session, campaign_id, job_index, attempt)
            attempt_row.backend_job_id = backend_job_id

    def running(self, campaign_id: str) -> dict[int, list[int]]:
        """Attempts still marked running, by job index."""
        with self._database.session() as session:
            rows = session.execute(
                select(JobRow.job_index, AttemptRow.attempt)
                .join(JobRow, AttemptRow.job_id == JobRow.id)
                .where(JobRow.campaign_id == campaign_id, AttemptRow.state == RUNNING)
            )
            running: dict[int, list[int]] = {}
            for job_index, attempt in rows:
                running.setdefault(job_index, []).append(attempt)
            return running

    def finish(
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
        with self._database.session() as session:
            attempt_row = AttemptRow.find(session, campaign_id, job_index, attempt)
            if attempt_row.state != RUNNING:
                return
            attempt_row.state = DONE if exit_code == 0 else FAILED
            attempt_row.exit_code = exit_code
            attempt_row.error_class = error_class
            attempt_row.native_code = native_code
            if site:
                attempt_row.site = site
            attempt_row.finished_at = time.time()
            job_row = JobRow.find(session, campaign_id, job_index)
            if job_row.state not in (DONE, CANCELLED):
                job_row.state = DONE if exit_code == 0 else (FAILED if final else PENDING)
                job_row.updated_at = time.time()

    def withdraw(
        self,
        campaign_id: str,
        job_index: int,
        attempt: int,
        backend: str,
        message: str,
        state: str = PENDING,
    ) -> None:
        """Undo :meth:`start` for a submission the engine refused or could not take:
        the attempt never existed (no attempt used, nothing for recovery to see), the job
        returns to ``state`` (what it was before), and the engine's message is kept on it."""
        now = time.time()
        with self._database.session() as session:
            job_row = JobRow.find(session, campaign_id, job_index)
            attempt_row = AttemptRow.find(session, campaign_id, job_index, attempt)
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

    def refusals(self, campaign_id: str) -> dict[int, str]:
        """``job index -> the engine's last message`` for jobs whose submission was refused."""
        with self._database.session() as session:
            rows = session.execute(
                select(SubmitRefusalRow.job_index, SubmitRefusalRow.message).where(
                    SubmitRefusalRow.campaign_id == campaign_id
                )
            )
            return {index: message for index, message in rows}

    def clear_refusals(self, campaign_id: str, job_indices: Iterable[int]) -> None:
        """Forget the refusals of jobs whose submission was accepted."""
        indices = list(job_indices)
        with self._database.session() as session:
            for start in range(0, len(indices), 500):
                session.execute(
                    SubmitRefusalRow.__table__.delete().where(
                        SubmitRefusalRow.campaign_id == campaign_id,
                        SubmitRefusalRow.job_index.in_(indices[start : start + 500]),
                    )
                )
