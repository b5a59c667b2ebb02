"""Job reports: one per attempt, stored once, and what they mean for their job.

A report closes its attempt and moves its job (done, pending for a retry, failed once its
attempts are exhausted); a report delivered twice is stored once. A job's events are
counted from its first successful report (:meth:`Campaigns.status
<smartbkg_prod.store.campaigns.Campaigns.status>`). Bulk ingestion of many reports at once
is :mod:`smartbkg_prod.store.ingest`.

>>> from smartbkg_prod.store import Store
>>> Store("sqlite://").reports.of_campaign("demo-1234")
[]
"""

from __future__ import annotations

import operator
import time

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from smartbkg_prod.exitcodes import ExitCode
from smartbkg_prod.report import JobReport
from smartbkg_prod.store.database import Database
from smartbkg_prod.store.tables import (
    CANCELLED,
    DONE,
    FAILED,
    PENDING,
    AttemptRow,
    JobRow,
    ReportRow,
)

# The reports table's columns besides its id and JSON body, each read off the JobReport
# field of the same name (the bulk ingestion in store.ingest writes the same columns).
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


class Reports:
    """The ``reports`` table, and the attempt and job state each report decides."""

    def __init__(self, database: Database):
        self._database = database

    def record(
        self, report: JobReport, final: bool = False, native_code: str | None = None
    ) -> bool:
        """Store a report and move its job's state. Idempotent: returns False for a duplicate.

        ``final`` marks a failed attempt as the job's last (retries exhausted);
        ``native_code`` is the engine's code for the attempt (e.g. ``pilot:1305/40``),
        kept beside the worker's exit code.
        """
        body = report.model_dump(mode="json")
        try:
            with self._database.session() as session:
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
                _close_attempt(session, report, final, native_code)
        except IntegrityError:
            # A concurrent writer stored the same report first.
            return False
        return True

    def of_campaign(self, campaign_id: str, successful_only: bool = False) -> list[JobReport]:
        """The campaign's reports in the order they were stored."""
        with self._database.session() as session:
            query = select(ReportRow.body).where(ReportRow.campaign_id == campaign_id)
            if successful_only:
                query = query.where(ReportRow.exit_code == 0)
            return [
                JobReport.model_validate(body)
                for body in session.scalars(query.order_by(ReportRow.id))
            ]

    def done_outputs(self, campaign_id: str) -> dict[int, list[list[dict]]]:
        """For each done job, the output files (``OutputFile`` dicts) of each of its
        successful reports (a late duplicate attempt may have written the file last)."""
        with self._database.session() as session:
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

    def invalidate_outputs(self, campaign_id: str, job_index: int) -> None:
        """A done job whose output was lost or damaged after the fact: its successful
        attempts stop counting (their reports are kept, marked ``output_validation``) and
        the job is pending again, to be produced anew with the same seed."""
        code, error_class = int(ExitCode.OUTPUT_VALIDATION), "output_validation"
        with self._database.session() as session:
            job_row = JobRow.find(session, campaign_id, job_index)
            for report_row in session.scalars(
                select(ReportRow).where(
                    ReportRow.campaign_id == campaign_id,
                    ReportRow.job_index == job_index,
                    ReportRow.exit_code == 0,
                )
            ):
                report_row.exit_code, report_row.error_class = code, error_class
                attempt_row = session.scalar(
                    select(AttemptRow).where(
                        AttemptRow.job_id == job_row.id, AttemptRow.attempt == report_row.attempt
                    )
                )
                if attempt_row is not None:
                    attempt_row.state = FAILED
                    attempt_row.exit_code, attempt_row.error_class = code, error_class
            job_row.state = PENDING
            job_row.updated_at = time.time()


def _close_attempt(
    session: Session, report: JobReport, final: bool, native_code: str | None
) -> None:
    """Close the report's attempt (opening it first if this store did not launch it) and
    move its job: done on success, pending for a retry or failed when ``final``."""
    job_row = JobRow.find(session, report.campaign_id, report.job_index)
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
    # A cancelled job (killed, or replaced by its split parts) stays cancelled even if a
    # late report of it arrives.
    if job_row.state not in (DONE, CANCELLED):
        if report.succeeded:
            job_row.state = DONE
        else:
            job_row.state = FAILED if final else PENDING
    job_row.updated_at = time.time()


def _report_row(report: JobReport, body: dict) -> ReportRow:
    return ReportRow(
        **dict(zip(REPORT_FIELDS, report_field_values(report), strict=True)), body=body
    )
