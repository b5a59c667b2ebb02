"""Small frictions of the command line: `status` never creates a database, a misspelt
spec key gets a "did you mean", a command whose extra is not installed says which one."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy
from click.testing import CliRunner

from smartbkg_prod.cli import main
from smartbkg_prod.errors import SpecError
from smartbkg_prod.spec import parse_campaign

pytest_plugins = ["postgres_fixture"]  # the real-server fixture `postgres_url`

REPO = Path(__file__).resolve().parents[1]
GOOD = {"name": "demo", "process": "bbbar_mixed", "events": 1000, "events_per_job": 250}


def test_status_without_a_database_names_the_url_and_creates_no_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SMARTBKG_DB", raising=False)
    result = CliRunner().invoke(main, ["status"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: no database at sqlite:///smartbkg-prod.db"
    )
    assert list(tmp_path.iterdir()) == []


def test_status_watch_without_a_database_creates_no_file(tmp_path):
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    result = CliRunner().invoke(main, ["status", "--db", url, "--watch", "1"])
    assert result.exit_code == 1 and f"no database at {url}" in result.stderr
    assert not (tmp_path / "jobs.db").exists()


def test_status_on_a_sqlite_file_without_our_tables_adds_none(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as connection:
        connection.execute("create table notes (text)")
    result = CliRunner().invoke(main, ["status", "--db", f"sqlite:///{path}"])
    assert result.exit_code == 1 and "no smartbkg-prod tables" in result.stderr
    with sqlite3.connect(path) as connection:
        tables = connection.execute("select name from sqlite_master where type='table'")
        assert [name for (name,) in tables] == ["notes"]


@pytest.mark.postgres
def test_status_on_an_empty_postgres_database_creates_no_table(postgres_url):
    result = CliRunner().invoke(main, ["status", "--db", postgres_url])
    assert result.exit_code == 1 and "no smartbkg-prod tables" in result.stderr
    assert sqlalchemy.inspect(sqlalchemy.create_engine(postgres_url)).get_table_names() == []


def test_status_hides_the_password_of_the_url_it_looked_for():
    url = "postgresql+psycopg://prod:s3cret-pw@127.0.0.1:1/jobs"
    result = CliRunner().invoke(main, ["status", "--db", url])
    assert result.exit_code == 1 and "s3cret-pw" not in result.stderr
    assert "127.0.0.1:1/jobs" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"evnets": 5}, "evnets: unknown key 'evnets' (did you mean 'events'?)"),
        (
            {"filter": {"mode": "cut", "model": "m.pt", "thresold": 0.3}},
            "filter.thresold: unknown key 'thresold' (did you mean 'threshold'?)",
        ),
        (
            {"backend": {"sites": {"overrides": {"CERN": {"memroy_mb": 3000}}}}},
            "backend.sites.overrides.CERN.memroy_mb: unknown key 'memroy_mb' "
            "(did you mean 'memory_mb'?)",
        ),
        (
            {"outputs": {"dir": "out"}},
            "outputs.dir: unknown key 'dir' (allowed: directory, format, keep_mc_particles)",
        ),
    ],
)
def test_a_misspelt_key_gets_the_nearest_allowed_key(section, expected):
    with pytest.raises(SpecError) as raised:
        parse_campaign({**GOOD, **section}, "spec.yaml")
    assert str(raised.value) == f"spec.yaml: {expected}"


def run_without(module: str, *arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    """The CLI in a subprocess where ``module`` cannot be imported. A fake: it stands for
    an install without the extra (the real one is the worker image, checked in
    tests/test_containers_docker.py)."""
    script = (
        f"import sys; sys.modules[{module!r}] = None; from smartbkg_prod.cli import main; main()"
    )
    return subprocess.run(
        [sys.executable, "-c", script, *arguments],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )


def test_a_missing_extra_is_named_in_one_line(tmp_path):
    status = run_without("sqlalchemy", "status", cwd=tmp_path)
    assert status.returncode == 1
    assert status.stderr.strip() == (
        "error: smartbkg-prod status needs 'sqlalchemy': pip install 'smartbkg-prod[submit]'"
    )
    recover = run_without("sklearn", "recover", "list", cwd=tmp_path)
    assert recover.returncode == 1 and "pip install 'smartbkg-prod[recovery]'" in recover.stderr
    assert "Traceback" not in recover.stderr
    listing = run_without("sqlalchemy", "--help", cwd=tmp_path)
    assert listing.returncode == 0 and "monitor" in listing.stdout
