"""The one submitter driving a campaign: a lease with a heartbeat.

A driver takes the lease when it starts (:meth:`DriverLeases.acquire`), renews it every
``LEASE_RENEW_S`` while it runs and releases it at the end. A holder silent for
``LEASE_STALE_S``, or whose process on this host is gone (a killed submitter), is taken
over; a live one makes a second submitter stop with one clear line.

>>> from smartbkg_prod.store import Store
>>> leases = Store("sqlite://").leases
>>> leases.acquire("demo-1234", holder="driver-a")
>>> leases.release("demo-1234", holder="driver-a")
"""

from __future__ import annotations

import os
import socket
import time

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from smartbkg_prod.errors import StoreError
from smartbkg_prod.store.database import Database
from smartbkg_prod.store.tables import DriverLeaseRow

# A driver renews its lease every LEASE_RENEW_S; one silent for LEASE_STALE_S is dead.
LEASE_RENEW_S, LEASE_STALE_S = 10.0, 120.0


class DriverLeases:
    """Who drives each campaign (the ``driver_leases`` table)."""

    def __init__(self, database: Database):
        self._database = database

    def acquire(self, campaign_id: str, holder: str) -> None:
        """Become the one submitter driving ``campaign_id``. Raises StoreError while another
        live submitter holds it; a holder silent for LEASE_STALE_S, or whose process on
        this host is gone (a killed submitter), is taken over."""
        try:
            self._take(campaign_id, holder)
        except IntegrityError:
            raise StoreError(
                f"campaign {campaign_id} is being driven by another submitter "
                "(started at the same moment)"
            ) from None

    def _take(self, campaign_id: str, holder: str) -> None:
        now, host = time.time(), socket.gethostname()
        with self._database.session() as session:
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

    def renew(self, campaign_id: str, holder: str) -> None:
        """Refresh the heartbeat; a StoreError if another submitter has taken the lease."""
        with self._database.session() as session:
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

    def release(self, campaign_id: str, holder: str) -> None:
        with self._database.session() as session:
            session.execute(
                DriverLeaseRow.__table__.delete().where(
                    DriverLeaseRow.campaign_id == campaign_id, DriverLeaseRow.holder == holder
                )
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
