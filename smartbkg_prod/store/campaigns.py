"""Campaigns and their jobs: what was planned, each job's state, and the status figures.

A campaign is registered once with its planned jobs (:meth:`Campaigns.register`); a job
is pending, running, done, failed or cancelled (:data:`JOB_STATES
<smartbkg_prod.store.tables.JOB_STATES>`). :meth:`Campaigns.status` counts each job's
events once, from its first successful attempt.

>>> from smartbkg_prod.store import Store
>>> Store("sqlite://").campaigns.ids()
[]
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from smartbkg_prod.errors import StoreError
from smartbkg_prod.plan import Job, RetryChanges
from smartbkg_prod.redact import redact_url
from smartbkg_prod.spec import Campaign
from smartbkg_prod.store.database import Database
from smartbkg_prod.store.tables import (
    CANCELLED,
    DONE,
    FAILED,
    JOB_STATES,
    PENDING,
    AttemptRow,
    CampaignRow,
    EngineAttemptRow,
    JobOverrideRow,
    JobRow,
    JobSplitRow,
    ReportRow,
    SubmitRefusalRow,
)


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
    # Attempts held on the engine, and queued past backend.pending_timeout_s, with the
    # driver's latest note on one of them (smartbkg_prod.lifecycle).
    attempts_held: int = 0
    attempts_stuck: int = 0
    engine_note: str | None = None


class Campaigns:
    """The ``campaigns`` and ``jobs`` tables, with the sub-jobs and per-job resources that
    recovery added for the next attempts."""

    def __init__(self, database: Database):
        self._database = database

    def register(
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
            with self._database.session() as session:
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
                rows = [_job_values(job, now) for job in jobs]
                if rows:
                    session.execute(JobRow.__table__.insert(), rows)
        except IntegrityError:
            # Registered by a concurrent submitter first: same spec, same planned jobs.
            return False
        return True

    def get(self, campaign_id: str) -> CampaignRow | None:
        with self._database.session() as session:
            return session.get(CampaignRow, campaign_id)

    def ids(self) -> list[str]:
        """Every campaign's id, oldest first."""
        with self._database.session() as session:
            return list(session.scalars(select(CampaignRow.id).order_by(CampaignRow.created_at)))

    def find(self, key: str) -> list[str]:
        """Campaign ids matching an id or a name."""
        with self._database.session() as session:
            ids = session.scalars(
                select(CampaignRow.id)
                .where((CampaignRow.id == key) | (CampaignRow.name == key))
                .order_by(CampaignRow.created_at)
            )
            return list(ids)

    def update_provenance(self, campaign_id: str, values: dict) -> None:
        with self._database.session() as session:
            row = session.get(CampaignRow, campaign_id)
            row.provenance = {**(row.provenance or {}), **values}

    def job_states(self, campaign_id: str) -> dict[int, str]:
        with self._database.session() as session:
            rows = session.execute(
                select(JobRow.job_index, JobRow.state).where(JobRow.campaign_id == campaign_id)
            )
            return {index: value for index, value in rows}

    def job_attempts(self, campaign_id: str) -> dict[int, int]:
        """``job index -> attempts used``."""
        with self._database.session() as session:
            rows = session.execute(
                select(JobRow.job_index, JobRow.attempts).where(JobRow.campaign_id == campaign_id)
            )
            return {index: value for index, value in rows}

    def job_overrides(self, campaign_id: str) -> dict[int, RetryChanges]:
        """Per-job resources and excluded sites set by recovery, for the next attempts.

        >>> from smartbkg_prod.store import Store
        >>> Store("sqlite://").campaigns.job_overrides("any")
        {}
        """
        with self._database.session() as session:
            rows = session.scalars(
                select(JobOverrideRow).where(JobOverrideRow.campaign_id == campaign_id)
            )
            return {row.job_index: row.changes() for row in rows}

    def split_jobs(self, campaign_id: str) -> dict[int, Job]:
        """Sub-jobs made by recovery splits, by their new job index (with ``stream_start``).

        A driver runs these besides the planned jobs; their parents are ``cancelled``.
        """
        with self._database.session() as session:
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

    def status(self, campaign_id: str) -> CampaignStatus:
        """The figures of ``smartbkg-prod status``; a StoreError for an unknown campaign."""
        with self._database.session() as session:
            campaign = session.get(CampaignRow, campaign_id)
            if campaign is None:
                raise StoreError(f"no campaign {campaign_id!r} in {redact_url(self._database.url)}")
            by_state = _jobs_by_state(session, campaign_id)
            generated, kept, simulated, skimmed, weights = _counted_events(session, campaign_id)
            start, end, cpu = _reports_span(session, campaign_id)
            failed_attempts = _failed_attempts(session, campaign_id)
            held, stuck, engine_note = _engine_waits(session, campaign_id)
            refusals = session.scalars(
                select(SubmitRefusalRow.message)
                .where(SubmitRefusalRow.campaign_id == campaign_id)
                .order_by(SubmitRefusalRow.refused_at)
            ).all()
        wall = (end - start) if start is not None and end is not None else 0.0
        # Among the filter-kept events: control-only events are simulated too (see
        # smartbkg_prod.filter.control) but are not part of the skimmed sample.
        retention = skimmed / kept if kept else None
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
            retention_error=(retention * (1 - retention) / kept) ** 0.5 if kept else None,
            throughput_events_per_s=(generated / wall) if wall > 0 else None,
            wall_seconds=wall,
            cpu_seconds=float(cpu),
            failed_attempts=failed_attempts,
            complete=by_state[DONE] == campaign.n_jobs,
            filter_tuning=(campaign.provenance or {}).get("filter_tuning"),
            jobs_submit_refused=len(refusals),
            submit_error=refusals[-1] if refusals else None,
            attempts_held=held,
            attempts_stuck=stuck,
            engine_note=engine_note,
        )


def _job_values(job: Job, now: float) -> dict:
    return {
        "campaign_id": job.campaign_id,
        "job_index": job.index,
        "first_event": job.first_event,
        "n_events": job.n_events,
        "seed": job.seed,
        "state": PENDING,
        "attempts": 0,
        "updated_at": now,
    }


def _jobs_by_state(session: Session, campaign_id: str) -> dict[str, int]:
    by_state = dict.fromkeys(JOB_STATES, 0)
    for state, count in session.execute(
        select(JobRow.state, func.count())
        .where(JobRow.campaign_id == campaign_id)
        .group_by(JobRow.state)
    ):
        by_state[state] = count
    return by_state


def _counted_events(session: Session, campaign_id: str) -> tuple:
    """(generated, kept, simulated, skimmed, sum of weights) over the counted reports.

    One successful attempt per job counts; a job done twice (a late duplicate attempt) must
    not double its events, so take the first success per job. Cancelled jobs never count: a
    split parent's events are its parts'.
    """
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
    return session.execute(
        select(
            func.coalesce(func.sum(ReportRow.events_generated), 0),
            func.coalesce(func.sum(ReportRow.events_kept), 0),
            func.coalesce(func.sum(ReportRow.events_simulated), 0),
            func.coalesce(func.sum(ReportRow.events_skimmed), 0),
            func.coalesce(func.sum(ReportRow.sum_weights_skimmed), 0.0),
        ).where(ReportRow.id.in_(first_success))
    ).one()


def _reports_span(session: Session, campaign_id: str) -> tuple:
    """(first start, last finish, total CPU seconds) over all of the campaign's reports."""
    return session.execute(
        select(
            func.min(ReportRow.started_at),
            func.max(ReportRow.finished_at),
            func.coalesce(func.sum(ReportRow.cpu_seconds), 0.0),
        ).where(ReportRow.campaign_id == campaign_id)
    ).one()


def _failed_attempts(session: Session, campaign_id: str) -> int:
    count = session.scalar(
        select(func.count())
        .select_from(AttemptRow)
        .join(JobRow, AttemptRow.job_id == JobRow.id)
        .where(JobRow.campaign_id == campaign_id, AttemptRow.state == FAILED)
    )
    return int(count or 0)


def _engine_waits(session: Session, campaign_id: str) -> tuple[int, int, str | None]:
    """Attempts held, attempts queued past the pending timeout (the driver notes those), and
    the latest note on one of them."""
    rows = session.execute(
        select(EngineAttemptRow.phase, EngineAttemptRow.note)
        .where(
            EngineAttemptRow.campaign_id == campaign_id,
            EngineAttemptRow.phase.in_(("held", "queued")),
        )
        .order_by(EngineAttemptRow.phase_since)
    ).all()
    held = sum(phase == "held" for phase, _ in rows)
    stuck = sum(phase == "queued" and bool(note) for phase, note in rows)
    notes = [note for _, note in rows if note]
    return held, stuck, notes[-1] if notes else None
