"""A real PostgreSQL server for tests (add ``pytest_plugins = ["postgres_fixture"]``).

``postgres_server`` (session) starts one server with ``scripts/start-postgres-test-server.sh``
in a fresh temporary directory on a free 127.0.0.1 port, installing the Debian package first
if it is missing; it stops the server at the end of the session. ``postgres_url`` (per test)
is a fresh, empty database on it, so tests never see each other's rows. When the server
cannot start its tests are skipped with the reason, or fail with it under ``CI=true``
(``unavailable.py``).
"""

from __future__ import annotations

import glob
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from unavailable import require_module, run_start_script, unavailable

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "start-postgres-test-server.sh"


@dataclass(frozen=True)
class PostgresServer:
    directory: Path
    url: str  # the `postgres` database: use `fresh_database()` for a test's own

    def fresh_database(self) -> str:
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url.replace("+psycopg", ""), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    def log_tail(self) -> str:
        log = self.directory / "server.log"
        return "\n".join(log.read_text().splitlines()[-20:]) if log.exists() else ""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server():
    require_module("psycopg", install="pip install -e '.[postgres]'")
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        install = subprocess.run(
            ["bash", str(REPO / "scripts" / "install-system-deps.sh"), "postgresql"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if install.returncode != 0:
            unavailable(f"cannot install the postgresql package: {install.stderr.strip()[-300:]}")
    # Not pytest's tmp_path: its parents are private to root, and the server runs as `postgres`.
    directory = Path(tempfile.mkdtemp(prefix="smartbkg-pg-"))
    try:
        started = run_start_script(
            ["bash", str(SCRIPT), str(directory), str(_free_port())],
            "the PostgreSQL test server",
            timeout=120,
        )
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    server = PostgresServer(directory=directory, url=started.stdout.strip().splitlines()[-1])
    try:
        yield server
    finally:
        subprocess.run(
            ["bash", str(SCRIPT), "--stop", str(directory)], capture_output=True, timeout=60
        )
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    return postgres_server.fresh_database()
