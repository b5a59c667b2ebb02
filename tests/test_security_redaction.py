"""Credentials (PanDA/OIDC tokens, X.509 proxies, registry and database passwords) never
appear in specs, logs, reports, CLI output or errors."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest

from smartbkg_prod.errors import SpecError, StoreError
from smartbkg_prod.redact import MASK, RedactingFilter, redact, redact_env, redact_url
from smartbkg_prod.spec import parse_campaign
from smartbkg_prod.store import Store
from smartbkg_prod.worker import _LogTail

DB_PASSWORD = "hunter2-db-Pa55"
DB_URL = f"postgresql+psycopg://prod:{DB_PASSWORD}@127.0.0.1:1/jobs"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSIsInZvIjoiYmVsbGUifQ.c2lnbmF0dXJlLXBhcnQ"
PROXY = "/tmp/x509up_u1234"
REGISTRY_PASSWORD = "regi$try-pw-77"
SECRETS = (DB_PASSWORD, JWT, PROXY, REGISTRY_PASSWORD)


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"cannot open database {DB_URL}", DB_PASSWORD),
        (f"PANDA_AUTH_ID_TOKEN={JWT}", JWT),
        (f"Authorization: Bearer {JWT}", JWT),
        (f"using proxy {PROXY} for the task", PROXY),
        (f'{{"X509_USER_PROXY": "{PROXY}"}}', PROXY),
        (
            f"docker login -u bot -p x https://bot:{REGISTRY_PASSWORD}@registry.example/v2",
            REGISTRY_PASSWORD,
        ),
        (f"REGISTRY_PASSWORD={REGISTRY_PASSWORD} docker push", REGISTRY_PASSWORD),
        (f"token {JWT[:40]}.{JWT[41:]}", JWT[:40]),
    ],
)
def test_redact_removes_each_kind_of_credential(text, secret):
    cleaned = redact(text)
    assert secret not in cleaned and MASK in cleaned


def test_redact_keeps_ordinary_text():
    text = "job 3 attempt 2 exited 60 (stage_out) at T2_DE_DESY: cannot write /data/out.root"
    assert redact(text) == text
    assert (
        redact_url("sqlite:////var/lib/smartbkg/jobs.db") == "sqlite:////var/lib/smartbkg/jobs.db"
    )


def test_values_of_secret_environment_variables_are_redacted_wherever_they_appear(monkeypatch):
    monkeypatch.setenv("OIDC_AUTH_ID_TOKEN", "opaque-token-value-123")
    assert "opaque-token-value-123" not in redact("sent opaque-token-value-123 to the server")
    env = redact_env({"PANDA_AUTH_ID_TOKEN": JWT, "SMARTBKG_DB": DB_URL, "HOME": "/root"})
    assert env == {
        "PANDA_AUTH_ID_TOKEN": MASK,
        "SMARTBKG_DB": redact_url(DB_URL),
        "HOME": "/root",
    }


def test_logging_filter_redacts_records(caplog):
    logger = logging.getLogger("smartbkg_prod.test_redaction")
    logger.addFilter(RedactingFilter())
    with caplog.at_level(logging.INFO, logger=logger.name):
        logger.info("connecting to %s with %s", DB_URL, JWT)
    assert not any(secret in caplog.text for secret in SECRETS)


def test_worker_log_tail_for_the_report_is_redacted():
    tail = _LogTail()
    tail.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("smartbkg_prod.worker_redaction_test")
    logger.addHandler(tail)
    logger.propagate = False
    logger.warning("stage-out to %s failed with proxy %s", DB_URL, PROXY)
    assert tail.lines and not any(s in line for line in tail.lines for s in SECRETS)


@pytest.mark.parametrize("option", ["token", "password", "x509userproxy", "registry_password"])
def test_specs_refuse_credentials_in_backend_options(option):
    spec = {"name": "s", "process": "bbbar_mixed", "events": 10, "events_per_job": 10}
    with pytest.raises(SpecError, match="look like credentials") as error:
        parse_campaign({**spec, "backend": {"options": {option: JWT}}}, "spec.yaml")
    assert JWT not in str(error.value)


def test_store_errors_do_not_show_the_database_password():
    with pytest.raises(StoreError) as error:
        Store(DB_URL)
    assert DB_PASSWORD not in str(error.value) and "prod:***@" in str(error.value)


def cli(*args: str, db: str = DB_URL) -> subprocess.CompletedProcess:
    env = {**os.environ, "SMARTBKG_DB": db, "PANDA_AUTH_ID_TOKEN": JWT}
    return subprocess.run(
        [sys.executable, "-m", "smartbkg_prod.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def flat(result: subprocess.CompletedProcess) -> str:
    # click wraps help text: join the lines so a wrapped URL is still one string.
    return "".join(line.strip() for line in (result.stdout + result.stderr).splitlines())


@pytest.mark.parametrize(
    "args",
    [
        ("status", "--help"),
        ("submit", "--help"),
        ("status",),
        ("status", "x", "--json"),
        ("monitor", "collect", "--help"),
        ("monitor", "serve", "--help"),
    ],
)
def test_cli_help_and_errors_do_not_show_the_database_password(args):
    output = flat(cli(*args))
    assert DB_PASSWORD not in output and JWT not in output
    assert "Traceback" not in output


def test_recover_help_does_not_show_the_database_password():
    assert DB_PASSWORD not in flat(cli("recover", "list", "--help"))
