"""Engine identity and lifecycle phase of each attempt: what a restarted driver needs to
find its attempts on the engine again.

At submission the driver stores, per attempt, what the engine calls it (Slurm
``array_task``, HTCondor ``cluster.proc`` with its job event log, PanDA
``jediTaskID/entry``, a local worker's pid) and later the engine's own job ids as they are
seen (the PandaIDs of a task entry). The attempt's phase (:mod:`smartbkg_prod.lifecycle`)
and the time it entered it are kept beside, with a note when it is held or stuck, so a
resumed driver asks the engine about every attempt still open.

>>> from smartbkg_prod.store import Store
>>> Store("sqlite://").engine.open("demo-1234")
[]
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from smartbkg_prod.lifecycle import OPEN_PHASES
from smartbkg_prod.store.database import Database
from smartbkg_prod.store.tables import EngineAttemptRow


class EngineAttempt(BaseModel):
    """One attempt as the engine knows it, and where it is in its lifecycle."""

    campaign_id: str
    job_index: int
    attempt: int
    backend: str
    backend_job_id: str
    site: str | None = None
    log: str | None = None
    engine_ids: list[str] = Field(default_factory=list)
    phase: str = "submitted"
    phase_since: float = 0.0
    note: str = ""


_FIELDS = tuple(EngineAttempt.model_fields)


class EngineRecords:
    """The ``engine_attempts`` table: each attempt's engine identity and phase."""

    def __init__(self, database: Database):
        self._database = database

    def record_submitted(self, attempts: Iterable[EngineAttempt]) -> None:
        """Store the identity of attempts the engine just took (replacing a stale one)."""
        rows = list(attempts)
        if not rows:
            return
        with self._database.session() as session:
            for attempt in rows:
                row = _row(session, attempt.campaign_id, attempt.job_index, attempt.attempt)
                if row is None:
                    session.add(EngineAttemptRow(**attempt.model_dump()))
                else:
                    for name in _FIELDS:
                        setattr(row, name, getattr(attempt, name))

    def set_phase(
        self,
        campaign_id: str,
        job_index: int,
        attempt: int,
        phase: str,
        since: float,
        note: str = "",
        engine_id: str | None = None,
    ) -> None:
        """Move an attempt to ``phase`` (entered at ``since``), with a note when it is held
        or stuck, and the engine's own id for it when one was seen (a PandaID)."""
        with self._database.session() as session:
            row = _row(session, campaign_id, job_index, attempt)
            if row is None:
                return
            row.phase, row.phase_since, row.note = phase, since, note
            if engine_id and engine_id not in (row.engine_ids or []):
                row.engine_ids = [*(row.engine_ids or []), engine_id]

    def open(self, campaign_id: str) -> list[EngineAttempt]:
        """Attempts of a campaign the engine may still run, as their identity was stored."""
        return self._select(campaign_id, EngineAttemptRow.phase.in_(sorted(OPEN_PHASES)))

    def attempts(self, campaign_id: str) -> list[EngineAttempt]:
        """Every attempt of a campaign with its stored identity and phase."""
        return self._select(campaign_id)

    def _select(self, campaign_id: str, *where) -> list[EngineAttempt]:
        with self._database.session() as session:
            rows = session.scalars(
                select(EngineAttemptRow)
                .where(EngineAttemptRow.campaign_id == campaign_id, *where)
                .order_by(EngineAttemptRow.job_index, EngineAttemptRow.attempt)
            )
            return [EngineAttempt(**{name: getattr(row, name) for name in _FIELDS}) for row in rows]


def _row(
    session: Session, campaign_id: str, job_index: int, attempt: int
) -> EngineAttemptRow | None:
    return session.scalar(
        select(EngineAttemptRow).where(
            EngineAttemptRow.campaign_id == campaign_id,
            EngineAttemptRow.job_index == job_index,
            EngineAttemptRow.attempt == attempt,
        )
    )
