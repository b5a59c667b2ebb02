"""What the monitor's figures read from the store: a campaign's rows, the version that
tells when they changed, the running sum of its control sample, and the report bodies of
its most frequent failures. :mod:`smartbkg_prod.monitor.figures` turns them into figures
and caches them while the version holds.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from smartbkg_prod.filter.control import add_monitors
from smartbkg_prod.filter.summary import FilterMonitor
from smartbkg_prod.store import CampaignStatus, Store
from smartbkg_prod.store.tables import (
    FAILED,
    RUNNING,
    AttemptRow,
    BackendStateRow,
    CampaignRow,
    JobRow,
    ReportRow,
)

COST_SAMPLE_REPORTS = 1000  # successful attempts whose stage times give t_g, t_NN, t_s


@dataclass(frozen=True)
class CampaignRows:
    """A campaign's rows as the figures read them (events and times from each job's first
    successful attempt; failures from attempts, reported or lost)."""

    status: CampaignStatus
    spec: dict
    provenance: dict
    created_at: float
    finished: list
    costs: tuple
    site_rows: list
    attempt_rows: list
    held: int
    failed_reports: list  # the latest ``recent`` failed reports (with their bodies)
    lost_attempts: list  # the latest ``recent`` failed attempts without a report
    sum_weights_squared: tuple  # (Σ over jobs of Σw² of skimmed events, jobs reporting it)
    filter_monitor: FilterMonitor | None


def data_version(store: Store, campaign_id: str) -> tuple:
    """Changes whenever anything the figures read changes: rows added (reports, attempts,
    backend states), job states moved (``jobs.updated_at``), expectations edited."""
    counts = [
        select(func.count(ReportRow.id), func.max(ReportRow.id)).where(
            ReportRow.campaign_id == campaign_id
        ),
        select(func.count(AttemptRow.id), func.max(AttemptRow.finished_at))
        .join(JobRow, AttemptRow.job_id == JobRow.id)
        .where(JobRow.campaign_id == campaign_id),
        select(func.max(JobRow.updated_at)).where(JobRow.campaign_id == campaign_id),
        select(func.count(BackendStateRow.id), func.max(BackendStateRow.observed_at)).where(
            BackendStateRow.campaign_id == campaign_id
        ),
        select(CampaignRow.provenance).where(CampaignRow.id == campaign_id),
    ]
    with store.session() as session:
        return tuple(tuple(session.execute(query).one()) for query in counts)


class ControlSums:
    """Running sum of each campaign's per-job filter monitors (its control sample).

    A refresh reads only the reports stored since the last one: a job's first successful
    report keeps its id, and new reports get larger ids. The number of first successes at
    or below the last id read is checked each time, and the sum rebuilt if it changed.
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[int, int, FilterMonitor | None]] = {}
        self._lock = threading.Lock()

    def total(self, session, campaign_id: str, first_success) -> FilterMonitor | None:
        with self._lock:
            last_id, counted, total = self._entries.get(campaign_id, (0, 0, None))
        below = session.scalar(
            select(func.count(ReportRow.id)).where(
                ReportRow.id.in_(first_success), ReportRow.id <= last_id
            )
        )
        if below != counted:
            last_id, counted, total = 0, 0, None
        rows = session.execute(
            select(ReportRow.id, ReportRow.body["filter_monitor"]).where(
                ReportRow.id.in_(first_success), ReportRow.id > last_id
            )
        ).all()
        blocks = [block for _id, block in rows if block]
        if blocks:
            total = add_monitors(([total] if total is not None else []) + blocks)
        entry = (max([last_id, *(row_id for row_id, _block in rows)]), counted + len(rows), total)
        with self._lock:
            self._entries[campaign_id] = entry
        return total


def load_campaign_rows(
    store: Store, campaign_id: str, recent: int, control_sums: ControlSums | None = None
) -> CampaignRows:
    """Every row the figures of one campaign need, read in one transaction."""
    status = store.campaigns.status(campaign_id)
    with store.session() as session:
        campaign = session.get(CampaignRow, campaign_id)
        spec, provenance, created_at = campaign.spec, campaign.provenance, campaign.created_at
        first_success = (
            select(func.min(ReportRow.id))
            .where(ReportRow.campaign_id == campaign_id, ReportRow.exit_code == 0)
            .group_by(ReportRow.job_index)
        ).scalar_subquery()
        # Events and completion times: each job's first successful attempt only.
        finished = session.execute(
            select(ReportRow.finished_at, ReportRow.events_generated, ReportRow.site)
            .where(ReportRow.id.in_(first_success))
            .order_by(ReportRow.finished_at)
        ).all()
        sum_weights_squared = session.execute(
            select(
                func.coalesce(
                    func.sum(ReportRow.body["sum_weights_squared_skimmed"].as_float()), 0.0
                ),
                func.count(ReportRow.body["sum_weights_squared_skimmed"].as_float()),
            ).where(ReportRow.id.in_(first_success))
        ).one()
        monitor = None
        if ((spec or {}).get("filter") or {}).get("control_fraction"):
            # Only campaigns with a control sample pay for reading these JSON blocks.
            monitor = (control_sums or ControlSums()).total(session, campaign_id, first_success)
        return CampaignRows(
            status=status,
            spec=spec if isinstance(spec, dict) else {},
            provenance=provenance if isinstance(provenance, dict) else {},
            created_at=created_at,
            finished=finished,
            costs=_stage_costs(session, campaign_id),
            site_rows=_site_rows(session, campaign_id),
            attempt_rows=_attempt_rows(session, campaign_id),
            held=_held_attempts(session, campaign_id),
            failed_reports=_failed_reports(session, campaign_id, recent),
            lost_attempts=_lost_attempts(session, campaign_id, recent),
            sum_weights_squared=tuple(sum_weights_squared),
            filter_monitor=monitor,
        )


def _stage_costs(session: Session, campaign_id: str) -> tuple:
    """Summed stage seconds (generate, filter, simulate, skim), the number of reports with
    a filter time, and their events generated and simulated.

    Per-event stage costs come from the latest successful attempts' stage times over their
    own events. A sample, because the times sit in the JSON body and reading all of it
    would make every page of a large live campaign slow; recent jobs are also the ones that
    tell today's cost.
    """
    sample = (
        select(ReportRow.body, ReportRow.events_generated, ReportRow.events_simulated)
        .where(ReportRow.campaign_id == campaign_id, ReportRow.exit_code == 0)
        .order_by(ReportRow.id.desc())
        .limit(COST_SAMPLE_REPORTS)
        .subquery()
    )
    return tuple(
        session.execute(
            select(
                *(
                    func.coalesce(func.sum(sample.c.body[("stage_seconds", name)].as_float()), 0.0)
                    for name in ("generate", "filter", "simulate", "skim")
                ),
                func.count(sample.c.body[("stage_seconds", "filter")].as_float()),
                func.coalesce(func.sum(sample.c.events_generated), 0),
                func.coalesce(func.sum(sample.c.events_simulated), 0),
            )
        ).one()
    )


def _site_rows(session: Session, campaign_id: str) -> list:
    """Per site: reports, CPU and wall seconds, first start and last finish."""
    return session.execute(
        select(
            ReportRow.site,
            func.count(),
            func.coalesce(func.sum(ReportRow.cpu_seconds), 0.0),
            func.coalesce(func.sum(ReportRow.wall_seconds), 0.0),
            func.min(ReportRow.started_at),
            func.max(ReportRow.finished_at),
        )
        .where(ReportRow.campaign_id == campaign_id)
        .group_by(ReportRow.site)
    ).all()


def _attempt_rows(session: Session, campaign_id: str) -> list:
    """Attempts counted by (site, state, exit code, error class), with the latest finish."""
    return session.execute(
        select(
            AttemptRow.site,
            AttemptRow.state,
            AttemptRow.exit_code,
            AttemptRow.error_class,
            func.count(),
            func.max(AttemptRow.finished_at),
        )
        .join(JobRow, AttemptRow.job_id == JobRow.id)
        .where(JobRow.campaign_id == campaign_id)
        .group_by(AttemptRow.site, AttemptRow.state, AttemptRow.exit_code, AttemptRow.error_class)
    ).all()


def _held_attempts(session: Session, campaign_id: str) -> int:
    """Open attempts whose engine last said they are held."""
    held = session.scalar(
        select(func.count())
        .select_from(BackendStateRow)
        .join(
            JobRow,
            and_(
                JobRow.campaign_id == BackendStateRow.campaign_id,
                JobRow.job_index == BackendStateRow.job_index,
            ),
        )
        .join(
            AttemptRow,
            and_(AttemptRow.job_id == JobRow.id, AttemptRow.attempt == BackendStateRow.attempt),
        )
        .where(
            BackendStateRow.campaign_id == campaign_id,
            BackendStateRow.state == "held",
            AttemptRow.state == RUNNING,
        )
    )
    return int(held or 0)


def _failed_reports(session: Session, campaign_id: str, recent: int) -> list:
    """The latest ``recent`` failed reports, with their bodies."""
    return session.execute(
        select(
            ReportRow.job_index,
            ReportRow.attempt,
            ReportRow.site,
            ReportRow.exit_code,
            ReportRow.error_class,
            ReportRow.finished_at,
            ReportRow.body,
        )
        .where(ReportRow.campaign_id == campaign_id, ReportRow.exit_code != 0)
        .order_by(ReportRow.finished_at.desc())
        .limit(recent)
    ).all()


def _lost_attempts(session: Session, campaign_id: str, recent: int) -> list:
    """The latest ``recent`` attempts closed without a report (lost, killed): they have no
    log, but they are failures."""
    reported = select(ReportRow.id).where(
        ReportRow.campaign_id == campaign_id,
        ReportRow.job_index == JobRow.job_index,
        ReportRow.attempt == AttemptRow.attempt,
    )
    return session.execute(
        select(
            JobRow.job_index,
            AttemptRow.attempt,
            AttemptRow.site,
            AttemptRow.exit_code,
            AttemptRow.error_class,
            AttemptRow.finished_at,
            AttemptRow.native_code,
        )
        .join(JobRow, AttemptRow.job_id == JobRow.id)
        .where(JobRow.campaign_id == campaign_id, AttemptRow.state == FAILED, ~reported.exists())
        .order_by(AttemptRow.finished_at.desc())
        .limit(recent)
    ).all()


def latest_failure_bodies(
    store: Store, campaign_id: str, codes: list[tuple[int | None, str]]
) -> list[dict | None]:
    """The body of the latest failed report of each (exit code, error class); an exit code
    of None matches any. None where no report has that code (the attempts were lost)."""
    bodies = []
    with store.session() as session:
        for exit_code, error_class in codes:
            code_filter = [ReportRow.campaign_id == campaign_id, ReportRow.exit_code != 0]
            if exit_code is not None:
                code_filter.append(ReportRow.exit_code == exit_code)
            code_filter.append(ReportRow.error_class == error_class)
            bodies.append(
                session.scalar(
                    select(ReportRow.body)
                    .where(*code_filter)
                    .order_by(ReportRow.finished_at.desc())
                    .limit(1)
                )
            )
    return bodies
