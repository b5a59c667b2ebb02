"""The job database (SQLAlchemy 2), split by what each part owns.

A :class:`Store` is an open database (:mod:`.database`: SQLite file by default, PostgreSQL
by URL) with one attribute per part:

- ``store.campaigns`` (:mod:`.campaigns`): campaigns, their jobs and the status figures;
- ``store.attempts`` (:mod:`.attempts`): attempts of jobs and refused submissions;
- ``store.engine`` (:mod:`.engine`): what the engine calls each attempt, and its phase;
- ``store.leases`` (:mod:`.leases`): the one submitter driving each campaign;
- ``store.reports`` (:mod:`.reports`): job reports, stored once, and what they decide.

Bulk ingestion (:mod:`.ingest`), what the monitor's figures read (:mod:`.figures`) and
what recovery reads and writes (:mod:`.recovery`) are functions of a Store. The tables are
in :mod:`.tables`. All SQL of the project lives in this package. A job's events are
counted once, from its one successful attempt; a report delivered twice is stored once.

>>> store = Store("sqlite://")
>>> store.campaigns.ids()
[]
"""

from __future__ import annotations

from smartbkg_prod.store.attempts import Attempts
from smartbkg_prod.store.campaigns import Campaigns, CampaignStatus
from smartbkg_prod.store.database import DEFAULT_DB, Database, default_db_url
from smartbkg_prod.store.engine import EngineRecords
from smartbkg_prod.store.leases import LEASE_RENEW_S, LEASE_STALE_S, DriverLeases
from smartbkg_prod.store.reports import Reports
from smartbkg_prod.store.tables import (
    ACCEPTED,
    APPLIED,
    CANCELLED,
    DONE,
    FAILED,
    JOB_STATES,
    OPEN,
    OVERRIDDEN,
    PENDING,
    RUNNING,
    SKIPPED,
    STATUSES,
    SUPERSEDED,
)

__all__ = [
    "ACCEPTED",
    "APPLIED",
    "CANCELLED",
    "DEFAULT_DB",
    "DONE",
    "FAILED",
    "JOB_STATES",
    "LEASE_RENEW_S",
    "LEASE_STALE_S",
    "OPEN",
    "OVERRIDDEN",
    "PENDING",
    "RUNNING",
    "SKIPPED",
    "STATUSES",
    "SUPERSEDED",
    "CampaignStatus",
    "Store",
    "default_db_url",
]


class Store(Database):
    """The job database; every method of its parts opens and closes its own transaction."""

    def __init__(self, url: str | None = None, create: bool = True):
        super().__init__(url, create)
        self.campaigns = Campaigns(self)
        self.attempts = Attempts(self)
        self.engine = EngineRecords(self)
        self.leases = DriverLeases(self)
        self.reports = Reports(self)
