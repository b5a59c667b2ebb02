"""The connection to the job database: its URL, engine and transactions.

SQLite file by default (``--db URL`` or ``SMARTBKG_DB``), PostgreSQL by URL
(``postgresql+psycopg://user@host/db``). Every transaction is a :meth:`Database.session`;
a database that fails (locked past the busy timeout, server gone) is one StoreError line.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event, inspect
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from smartbkg_prod.errors import StoreError
from smartbkg_prod.redact import redact, redact_url
from smartbkg_prod.store.tables import Base, CampaignRow

DEFAULT_DB = "sqlite:///smartbkg-prod.db"

# How long a writer waits for another writer's lock before the command fails.
SQLITE_BUSY_TIMEOUT_MS = 30_000


def default_db_url() -> str:
    return os.environ.get("SMARTBKG_DB") or DEFAULT_DB


class Database:
    """An open job database; every :meth:`session` is one transaction. ``sql_engine`` is
    SQLAlchemy's engine (in this project "engine" alone means Slurm, HTCondor or PanDA)."""

    def __init__(self, url: str | None = None, create: bool = True):
        """Open the database at ``url`` (default: ``SMARTBKG_DB`` or ./smartbkg-prod.db).

        ``create=False`` opens only a database that already holds our tables (what a
        read-only command such as ``status`` wants): a missing SQLite file, or a database
        without the tables, is a StoreError naming the URL; nothing is created.
        """
        self.url = url or default_db_url()
        try:
            self.sql_engine = create_engine(self.url, future=True)
        except (SQLAlchemyError, ImportError, ValueError) as error:
            raise StoreError(
                f"database URL {redact_url(self.url)!r} is not usable: {redact(str(error))}"
            ) from None
        if self.sql_engine.dialect.name == "sqlite":
            event.listen(self.sql_engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.sql_engine, expire_on_commit=False)
        if create:
            self._create_tables()
        else:
            self._check_exists()

    def _create_tables(self) -> None:
        # Two processes opening a new database at once (submit, monitor serve) both try
        # to create the tables; the loser sees "already exists" and looks again once the
        # other one is through.
        for tries_left in reversed(range(50)):
            try:
                Base.metadata.create_all(self.sql_engine)
                return
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
        database = self.sql_engine.url.database
        if self.sql_engine.dialect.name == "sqlite" and (
            not database or database == ":memory:" or not Path(database).is_file()
        ):
            # Connecting would create the file: look before.
            raise StoreError(f"no database at {where} ({hint})")
        try:
            with self.sql_engine.connect() as connection:
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


def _driver_message(error: DBAPIError) -> str:
    """The database driver's message on one line (psycopg's spans several), redacted."""
    return redact(" ".join(str(error.orig).split()))


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL lets readers (status, monitor) work while the submitter writes; the busy
    # timeout turns a concurrent writer's lock into a short wait instead of an error.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
