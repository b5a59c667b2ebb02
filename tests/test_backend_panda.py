"""PanDA backend without a server: task parameters checked against prun's own dump, the
dry run, native codes, credentials, and the one reply a real server cannot be made to give
(HTTP 500). Everything that talks to a server runs against a real panda-server + JEDI in
``test_backend_panda_server.py`` and ``test_panda_campaign.py``.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import pytest
from click.testing import CliRunner
from unavailable import require_module

require_module("pandaclient")

from smartbkg_prod.backends.base import JobHandle  # noqa: E402
from smartbkg_prod.backends.panda import (  # noqa: E402
    PandaBackend,
    job_entry,
    native_code,
    native_reason,
)
from smartbkg_prod.cli import main  # noqa: E402
from smartbkg_prod.errors import SubmitError  # noqa: E402
from smartbkg_prod.plan import JobInput, plan_jobs, read_job_list_entry  # noqa: E402
from smartbkg_prod.spec import Campaign, dump_campaign  # noqa: E402

IMAGE = "docker://registry.example/smartbkg-worker:3"


def fake_token(username: str = "tuser") -> str:
    """A JWT-shaped OIDC token: panda-client only decodes it, the test server accepts it."""

    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    claims = {"sub": "u1", "name": "Test User", "preferred_username": username, "exp": 9999999999}
    return f"{part({'alg': 'none'})}.{part(claims)}.signature"


@pytest.fixture
def panda_campaign(tmp_path: Path) -> Campaign:
    return Campaign(
        name="pandatest",
        process="continuum_cc",
        events=3000,
        events_per_job=1000,
        seed=5,
        resources={"cores": 8, "memory_mb": 16000, "walltime_s": 5400},
        container={"image": IMAGE, "runtime": "docker"},
        backend={"name": "panda", "sites": {"allowed": ["SITE_A"], "excluded": ["SITE_B"]}},
        retry={"max_attempts": 3},
        outputs={"directory": str(tmp_path / "out")},
    )


def job_inputs(campaign: Campaign) -> list[JobInput]:
    return [
        JobInput(job=job, campaign=campaign, output_dir=campaign.outputs.directory, backend="panda")
        for job in plan_jobs(campaign)
    ]


def prun_task_params(campaign: Campaign, backend: PandaBackend, tmp_path: Path) -> dict:
    """What prun itself builds for the same job (dry mode: nothing is uploaded or sent)."""
    out_ds = backend.out_ds(campaign, "v1")
    resources = campaign.resources
    dump = tmp_path / "prun-task.json"
    args = [
        "--exec",
        "python3 -m smartbkg_prod.cli worker --job pandatest.jsonl --index %RNDM:0",
        "--outDS",
        out_ds,
        "--containerImage",
        IMAGE,
        "--nJobs",
        str(campaign.n_jobs),
        "--outputs",
        "root:*.root,report:*.report.json",
        "--site",
        "SITE_A",
        "--excludedSite",
        "SITE_B",
        "--memory",
        str(resources.memory_mb // resources.cores),
        "--nCore",
        str(resources.cores),
        "--maxWalltime",
        "2",
        # The driver owns retries: JEDI runs each entry once (README, "Who retries").
        "--maxAttempt",
        "1",
        "--vo",
        "belle",
        "--dumpTaskParams",
        str(dump),
    ]
    code = (
        "import sys; from pandaclient.PrunScript import main; "
        f"main(get_taskparams=True, dry_mode=True, ext_args={args!r})"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "PANDA_BEHIND_REAL_LB": "1",
        "PANDA_AUTH": "oidc",
        "PANDA_AUTH_VO": "belle",
        "PANDA_AUTH_ID_TOKEN": fake_token(),
        "PANDA_URL_SSL": "https://127.0.0.1:1/server/panda",
        "PANDA_URL": "http://127.0.0.1:1/server/panda",
        "PANDACACHE_URL": "https://127.0.0.1:1/server/panda",
    }
    workdir = tmp_path / "prun"
    workdir.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=workdir, env=env, capture_output=True, text=True
    )
    assert dump.is_file(), result.stdout + result.stderr
    return json.loads(dump.read_text())


def test_task_parameters_match_what_prun_builds(panda_campaign, tmp_path, monkeypatch):
    monkeypatch.setenv("PANDA_URL_SSL", "https://127.0.0.1:1/server/panda")
    backend = PandaBackend(user="tuser", vo="belle")
    ours = backend.task_params(
        panda_campaign,
        panda_campaign.n_jobs,
        "pandatest.jsonl",
        "sources.x.tar.gz",
        backend.out_ds(panda_campaign, "v1"),
    )
    prun = prun_task_params(panda_campaign, backend, tmp_path)
    for key in (
        "taskName",
        "uniqueTaskName",
        "vo",
        "architecture",
        "processingType",
        "prodSourceLabel",
        "site",
        "excludedSite",
        "includedSite",
        "nEvents",
        "nEventsPerJob",
        "noInput",
        "maxWalltime",
        "ramCount",
        "ramCountUnit",
        "coreCount",
        "maxAttempt",
        "respectSplitRule",
        "nMaxFilesPerJob",
        "container_name",
        "multiStepExec",
        "log",
        "sourceURL",
    ):
        assert ours[key] == prun[key], key
    # Job parameters are identical except the sandbox name, which dry-mode prun leaves unset.
    prun_params = [p for p in prun["jobParameters"] if p["value"] != "-a None"]
    our_params = [p for p in ours["jobParameters"] if p["value"] != "-a sources.x.tar.gz"]
    assert our_params == prun_params


def test_rendered_task_runs_each_job_list_entry_in_the_container(panda_campaign, tmp_path):
    paths = PandaBackend(user="tuser").render(
        panda_campaign, job_inputs(panda_campaign), tmp_path / "dry"
    )
    task = json.loads(paths[0].read_text())
    assert task["container_name"] == IMAGE and task["nEvents"] == 3 and task["noInput"]
    assert task["ramCount"] == 2000 and task["coreCount"] == 8 and task["maxWalltime"] == 2
    executable = unquote("".join(str(p["value"]) for p in task["jobParameters"][-4:-2]))
    assert (
        executable
        == "python3 -m smartbkg_prod.cli worker --job pandatest.jsonl --index ${SEQNUMBER}"
    )
    with tarfile.open(paths[2]) as sandbox:
        assert sandbox.getnames() == ["pandatest.jsonl"]
    entries = [read_job_list_entry(paths[1], i) for i in (1, 2, 3)]  # ${SEQNUMBER} from 1
    assert [e.job for e in entries] == plan_jobs(panda_campaign)
    assert {e.output_dir for e in entries} == {"."}  # the pilot's work directory


def test_cli_dry_run_renders_the_panda_task(panda_campaign, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(dump_campaign(panda_campaign))
    result = CliRunner().invoke(
        main, ["submit", str(spec), "--backend", "panda", "--dry-run", str(tmp_path / "dry")]
    )
    assert result.exit_code == 0, result.output
    assert str(tmp_path / "dry" / "pandatest.taskparams.json") in result.output.splitlines()


@pytest.mark.parametrize(
    ("job", "native"),
    [
        ({"pilotErrorCode": 1212, "transExitCode": 0}, "pilot:1212"),
        ({"pilotErrorCode": 1305, "transExitCode": 40, "exeErrorCode": 40}, "pilot:1305/40"),
        ({"pilotErrorCode": 0, "jobDispatcherErrorCode": 100}, "jobDispatcher:100"),
        ({"taskBufferErrorCode": 100}, "taskBuffer:100"),
        ({"pilotErrorCode": 0, "transExitCode": 50}, "exit:50"),
        ({"pilotErrorCode": "NULL", "transExitCode": None}, None),
    ],
)
def test_error_fields_become_native_codes_with_their_source(job, native):
    assert native_code(job) == native


def test_native_codes_are_readable_by_the_recovery_taxonomy():
    from smartbkg_prod.recovery import taxonomy

    assert taxonomy.describe(taxonomy.parse_native_code("pilot:1212")).category == "memory"
    assert taxonomy.parse_native_code("jobDispatcher:100").source == "jobDispatcher"
    # The pilot's "payload failed" read with the payload's exit status, as slurm:FAILED/N.
    payload = taxonomy.describe(taxonomy.parse_native_code("pilot:1305/40"))
    assert (payload.name, payload.category) == ("PAYLOADEXECUTIONFAILURE (SIMULATION)", "software")


def test_every_non_zero_error_field_reaches_the_reason_by_its_panda_name():
    job = {
        "pilotErrorCode": 1305,
        "pilotErrorDiag": "Failed to execute payload",
        "exeErrorCode": 0,
        "exeErrorDiag": "NULL",
        "supErrorCode": 0,
        "ddmErrorCode": 200,
        "ddmErrorDiag": "Adder failed",
        "brokerageErrorCode": 0,
        "jobDispatcherErrorCode": 0,
        "taskBufferErrorCode": 0,
        "taskBufferErrorDiag": "NULL",
        "transExitCode": 40,
    }
    assert native_reason(job) == (
        "pilotErrorCode=1305 Failed to execute payload; ddmErrorCode=200 Adder failed; "
        "transExitCode=40"
    )


# -- what the real server cannot be made to do --------------------------------------------
# The exchange with a real server (submit, status, kill, retry) is tested against panda-server
# + JEDI in test_backend_panda_server.py. A server that fails internally cannot be produced
# on demand, so this one fake answers every request with HTTP 500.


class BrokenPanda(BaseHTTPRequestHandler):
    """FAKE: a PanDA server failing every request with 500 (the real one cannot be made to)."""

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def _fail(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        self.rfile.read(length)
        body = b"Internal Server Error"
        self.send_response(500)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = _fail  # noqa: N815 - http.server's naming


@pytest.fixture
def panda_env(monkeypatch):
    for name, value in {
        "PANDA_BEHIND_REAL_LB": "1",
        "PANDA_AUTH": "oidc",
        "PANDA_AUTH_VO": "belle",
        "PANDA_AUTH_ID_TOKEN": fake_token(),
    }.items():
        monkeypatch.setenv(name, value)


def test_a_server_failing_with_500_is_a_submit_error_naming_it(
    panda_env, panda_campaign, monkeypatch
):
    server = ThreadingHTTPServer(("127.0.0.1", 0), BrokenPanda)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/server/panda"
    monkeypatch.setenv("PANDA_URL_SSL", url)
    monkeypatch.setenv("PANDACACHE_URL", url)
    try:
        with pytest.raises(SubmitError, match=f"cannot upload the sandbox to {url}"):
            PandaBackend().submit(panda_campaign, job_inputs(panda_campaign))
    finally:
        server.shutdown()
        server.server_close()


def test_unreachable_server_is_a_submit_error_naming_it(panda_env, panda_campaign, monkeypatch):
    monkeypatch.setenv("PANDA_URL_SSL", "http://127.0.0.1:9/server/panda")
    with pytest.raises(SubmitError, match=r"cannot upload the sandbox to http://127.0.0.1:9"):
        PandaBackend().submit(panda_campaign, job_inputs(panda_campaign))


def test_missing_credentials_or_server_say_what_to_set(panda_campaign, monkeypatch, tmp_path):
    for name in ("PANDA_AUTH", "PANDA_AUTH_ID_TOKEN", "OIDC_AUTH_ID_TOKEN", "OIDC_AUTH_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("PANDA_URL_SSL", raising=False)
    with pytest.raises(SubmitError, match="no PanDA server configured: set PANDA_URL_SSL"):
        PandaBackend().submit(panda_campaign, job_inputs(panda_campaign))
    monkeypatch.setenv("PANDA_URL_SSL", "http://127.0.0.1:9/server/panda")
    monkeypatch.setenv("X509_USER_PROXY", str(tmp_path / "no-proxy"))
    handle = JobHandle(
        campaign_id="c", job_index=0, attempt=1, backend="panda", backend_job_id="1/0"
    )
    with pytest.raises(SubmitError, match="no credentials: set PANDA_AUTH=oidc"):
        PandaBackend().cancel([handle])
    monkeypatch.setenv("PANDA_AUTH", "oidc")
    monkeypatch.setenv("PANDA_AUTH_VO", "belle")
    with pytest.raises(SubmitError, match="no ID token"):
        PandaBackend().submit(panda_campaign, job_inputs(panda_campaign))


def test_job_entry_is_read_back_from_the_job_parameters():
    # ${SEQNUMBER} counts from 1 (JEDI); the job list's entry 0 is index 1.
    parameters = '-a sources.x.tar.gz -p "python3%20-m%20smartbkg_prod.cli%20worker%20--job%20l.jsonl%20--index%2018"'
    assert job_entry({"jobParameters": parameters}) == 17
    assert job_entry({"jobParameters": "no index here"}) is None
