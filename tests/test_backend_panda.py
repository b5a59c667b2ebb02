"""PanDA backend: task parameters checked against prun's own, and the HTTP exchange that
panda-client performs checked against a local server on 127.0.0.1.

No PanDA server can run here (it needs Apache mod_wsgi, a database and more), so the local
server speaks just the REST endpoints panda-client calls (``/api/v1/...``) and records
what it receives. Nothing leaves the loopback interface.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import tarfile
import threading
from email import policy
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import pytest
from click.testing import CliRunner

pytest.importorskip("pandaclient")

from smartbkg_prod.backends import panda as panda_backend  # noqa: E402
from smartbkg_prod.backends.base import JobHandle  # noqa: E402
from smartbkg_prod.backends.panda import PandaBackend, job_entry, native_code  # noqa: E402
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
        "--maxAttempt",
        "3",
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
    entries = [read_job_list_entry(paths[1], i) for i in range(3)]
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
        ({"pilotErrorCode": 0, "jobDispatcherErrorCode": 100}, "jobDispatcher:100"),
        ({"taskBufferErrorCode": 100}, "taskBuffer:100"),
        ({"pilotErrorCode": 0, "transExitCode": 50}, "exit:50"),
        ({"pilotErrorCode": "NULL", "transExitCode": None}, None),
    ],
)
def test_error_fields_become_native_codes_with_their_source(job, native):
    assert native_code(job) == native


def test_native_codes_are_readable_by_the_recovery_taxonomy():
    taxonomy = pytest.importorskip("smartbkg_prod.recovery.taxonomy")
    assert taxonomy.describe(taxonomy.parse_native_code("pilot:1212")).category == "memory"
    assert taxonomy.parse_native_code("jobDispatcher:100").source == "jobDispatcher"


# -- the HTTP exchange ------------------------------------------------------------------------


class FakePanda(BaseHTTPRequestHandler):
    """The REST endpoints panda-client 2.x calls, answering like a PanDA server."""

    requests: list[dict]
    jobs: list[dict]

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def _reply(self, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _record(self, body) -> str:
        path = urlparse(self.path).path.removeprefix("/api/v1/")
        self.requests.append({"endpoint": path, "headers": dict(self.headers), "body": body})
        return path

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        query = {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()}
        self._answer(self._record(query), query)

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length", 0))
        raw = self.rfile.read(length)
        if self.headers.get("Content-Type", "").startswith("multipart/form-data"):
            header = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
            message = BytesParser(policy=policy.HTTP).parsebytes(header + raw)
            files = {
                part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
                for part in message.iter_parts()
            }
            endpoint = self._record(files)
        else:
            endpoint = self._record(json.loads(raw or b"{}"))
        self._answer(endpoint, self.requests[-1]["body"])

    def _answer(self, endpoint: str, body: dict) -> None:
        if endpoint == "task/get_status":
            self._reply({"success": True, "message": "", "data": "running"})
        elif endpoint == "file_server/upload_cache_file":
            self._reply({"success": True, "message": "", "data": None})
        elif endpoint == "task/submit":
            self._reply({"success": True, "message": "succeeded. jediTaskID=4242", "data": None})
        elif endpoint == "task/get_details":
            ids = [job["PandaID"] for job in self.jobs]
            self._reply({"success": True, "data": {"PandaID": ids, "status": "running"}})
        elif endpoint == "job/get_description_incl_archive":
            wanted = set(body["job_ids"])
            self._reply({"success": True, "data": [j for j in self.jobs if j["PandaID"] in wanted]})
        elif endpoint == "task/kill":
            self._reply({"success": True, "message": "", "data": [0, "command registered"]})
        elif endpoint == "task/retry":
            self._reply({"success": True, "message": "command registered", "data": 0})
        else:
            self._reply({"success": False, "message": f"unknown endpoint {endpoint}"})


def panda_job(panda_id: int, entry: int, status: str, **fields) -> dict:
    parameters = (
        '-j "" --sourceURL https://127.0.0.1 -r . -a sources.x.tar.gz -p "python3%20-m%20'
        f'smartbkg_prod.cli%20worker%20--job%20pandatest.jsonl%20--index%20{entry}"'
    )
    return {
        "PandaID": panda_id,
        "jobStatus": status,
        "jobParameters": parameters,
        "computingSite": "SITE_A",
        **fields,
    }


@pytest.fixture
def panda_server(monkeypatch):
    handler = type("Handler", (FakePanda,), {"requests": [], "jobs": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/server/panda"
    for name, value in {
        "PANDA_URL_SSL": url,
        "PANDA_URL": url,
        "PANDACACHE_URL": url,
        "PANDA_BEHIND_REAL_LB": "1",
        "PANDA_AUTH": "oidc",
        "PANDA_AUTH_VO": "belle",
        "PANDA_AUTH_ID_TOKEN": fake_token(),
    }.items():
        monkeypatch.setenv(name, value)
    yield handler
    server.shutdown()
    server.server_close()


def test_submit_uploads_the_sandbox_then_sends_the_task_with_the_token(
    panda_server, panda_campaign
):
    backend = PandaBackend.from_campaign(panda_campaign)
    handles = backend.submit(panda_campaign, job_inputs(panda_campaign))
    assert [h.backend_job_id for h in handles] == ["4242/0", "4242/1", "4242/2"]
    upload, submit = panda_server.requests
    assert upload["endpoint"] == "file_server/upload_cache_file"
    with tarfile.open(fileobj=io.BytesIO(upload["body"]["file"])) as sandbox:
        (name,) = sandbox.getnames()
    assert submit["endpoint"] == "task/submit"
    assert submit["headers"]["Authorization"] == f"Bearer {fake_token()}"
    assert submit["headers"]["Origin"] == "belle"
    task = submit["body"]["task_parameters"]
    assert task["taskName"].startswith(f"user.tuser.smartbkg.{panda_campaign.campaign_id}.")
    assert task["vo"] == "belle" and task["nEvents"] == 3 and task["maxAttempt"] == 3
    assert any(p["value"].startswith("-a sources.") for p in task["jobParameters"])
    assert any(name in str(p["value"]) for p in task["jobParameters"])


def test_poll_maps_jobs_to_entries_with_pilot_codes_and_panda_retries(panda_server, panda_campaign):
    backend = PandaBackend.from_campaign(panda_campaign)
    handles = backend.submit(panda_campaign, job_inputs(panda_campaign))
    panda_server.jobs = [
        panda_job(101, 0, "finished", transExitCode=0),
        panda_job(102, 1, "failed", pilotErrorCode=1212, pilotErrorDiag="payload out of memory"),
        panda_job(105, 1, "running"),  # PanDA's own retry of entry 1 supersedes job 102
        panda_job(103, 2, "failed", pilotErrorCode=1305, transExitCode=50),
    ]
    states = backend.poll(handles)
    assert [(s.state, s.native_code, s.site) for s in states] == [
        ("done", None, "SITE_A"),
        ("running", None, "SITE_A"),
        ("failed", "pilot:1305", "SITE_A"),
    ]
    assert states[2].exit_code == 50
    endpoints = [r["endpoint"] for r in panda_server.requests[2:]]
    assert endpoints == ["task/get_status", "task/get_details", "job/get_description_incl_archive"]
    assert panda_server.requests[2]["body"] == {"task_id": "4242"}
    assert panda_server.requests[3]["body"]["task_id"] == "4242"
    assert sorted(panda_server.requests[4]["body"]["job_ids"]) == [101, 102, 103, 105]


def test_poll_reads_job_records_in_bounded_chunks(panda_server, panda_campaign, monkeypatch):
    monkeypatch.setattr(panda_backend, "JOB_STATUS_CHUNK", 3)
    backend = PandaBackend.from_campaign(panda_campaign)
    handles = backend.submit(panda_campaign, job_inputs(panda_campaign))
    panda_server.jobs = [panda_job(100 + entry, entry % 3, "running") for entry in range(4)]
    backend.poll(handles)
    endpoints = [r["endpoint"] for r in panda_server.requests[2:]]
    assert (
        endpoints
        == ["task/get_status", "task/get_details"] + ["job/get_description_incl_archive"] * 2
    )
    assert [len(r["body"]["job_ids"]) for r in panda_server.requests[4:]] == [3, 1]


def test_kill_goes_to_the_task(panda_server, panda_campaign):
    backend = PandaBackend.from_campaign(panda_campaign)
    handles = backend.submit(panda_campaign, job_inputs(panda_campaign))
    backend.cancel(handles)
    assert panda_server.requests[-1]["endpoint"] == "task/kill"
    assert panda_server.requests[-1]["body"] == {"task_id": 4242}


def test_unreachable_server_is_a_submit_error_naming_it(panda_server, panda_campaign, monkeypatch):
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
    assert job_entry(panda_job(1, 17, "running")) == 17
    assert job_entry({"jobParameters": "no index here"}) is None
