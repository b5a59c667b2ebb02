"""PanDA: one JEDI task per submitted batch, with task parameters as ``prun`` builds them.

The task is what ``prun --exec "python3 -m smartbkg_prod.cli worker --job LIST --index %RNDM:0"
--containerImage IMAGE --nJobs N --outputs root:*.root,report:*.report.json --useSandbox``
would send (see ``pandaclient/PrunScript.py``; ``tests/test_backend_panda.py`` compares
with prun's own dump): no input (``noInput``, ``nEvents = nJobs``, one "event" per job), a
``${SEQNUMBER}`` pseudo input selecting the job-list entry, the job list shipped in the
sandbox (``-a sources.*.tar.gz``, uploaded with ``Client.putFile``), the worker's ROOT file
and report as output datasets, ``ramCount`` (MB per core), ``coreCount``, ``maxWalltime``
(hours), ``maxAttempt`` and site/includedSite/excludedSite from the spec.

Everything goes through ``pandaclient.Client``: ``insertTaskParams``, ``getTaskStatus``,
``getJediTaskDetails`` (the task's PanDA IDs), ``getFullJobStatus`` (per-job state and
error codes), ``killTask``. Retries: the driver owns them. A task is submitted with
``maxAttempt = 1``, so JEDI runs each entry once, and one attempt of ours is one PanDA job;
a failed job ends the attempt only once JEDI can no longer retry it (its ``attemptNr`` has
reached its ``maxAttempt``, or the task is final), and the driver's next attempt is a new
task. A resumed driver follows a task it did not submit from the store (``jediTaskID/entry``
and the PandaIDs seen; :meth:`PandaBackend.adopt`). Native codes: ``pilot:N/E`` (pilotErrorCode, with
the payload's exit status E when non-zero), ``jobDispatcher:N``, ``taskBuffer:N``, ``exit:N``
(payload exit code), read in that order; every non-zero ``*ErrorCode`` field of the job
record, with its diagnostic, is the reason.

Reports and outputs come back the way a grid site sends them, not through a shared disk:
pilot 3 sends the worker's ``jobReport.json`` with the job's final update and the server
keeps it as the job's metadata, which ``poll`` reads (``getFullJobStatus``) and writes as
the attempt's report file where the driver reads reports. Outputs are staged out by the
pilot to the queue's storage endpoint (an RSE) as prun's tarballs; with
``backend.options.storage`` or ``$PANDA_STORAGE_PATH`` naming a POSIX view of that
endpoint (a mounted storage element, the local test stack's directory) ``poll`` unpacks
the files the report lists into the campaign's output directory. Without one the outputs
stay on the grid (``rucio download`` of the output datasets fetches them).

Auth comes from the usual environment: ``PANDA_AUTH=oidc`` + ``PANDA_AUTH_VO`` + a token
(``PANDA_AUTH_ID_TOKEN``, ``OIDC_AUTH_TOKEN_FILE`` or ``OIDC_AUTH_ID_TOKEN``), or an X.509
proxy (``X509_USER_PROXY``); the server from ``PANDA_URL_SSL`` or ``backend.options.server``.

>>> jedi_task_id("succeeded. jediTaskID=4242")
4242
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import platform
import re
import tarfile
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote, unquote, urlparse

from smartbkg_prod.backends.base import (
    Backend,
    JobHandle,
    JobState,
    attempt_handle,
    site_resources,
    worker_command,
)
from smartbkg_prod.errors import SubmitError
from smartbkg_prod.plan import JobInput, write_job_list
from smartbkg_prod.report import JobReport
from smartbkg_prod.spec import Campaign

log = logging.getLogger("smartbkg_prod.backends.panda")

# What prun calls the worker's outputs: dataset suffix -> file pattern (wildcards are
# archived into a tarball by the pilot).
OUTPUTS = {"root": "*.root", "report": "*.report.json"}
# As prun's %RNDM:0: JEDI numbers the pseudo input from 1 + offset (ContentsFeeder; a
# negative offset is read as 0), so the job list says its first entry is index 1.
SEQUENCE_OFFSET = 0
FIRST_INDEX = 1 + SEQUENCE_OFFSET

# PanDA jobStatus (panda-server taskbuffer/JobSpec.py) -> our state.
_JOB_STATUS = {
    "pending": "pending",
    "defined": "pending",
    "waiting": "pending",
    "assigned": "pending",
    "throttled": "pending",
    "activated": "pending",
    "sent": "pending",
    "starting": "pending",
    "running": "running",
    "holding": "running",
    "merging": "running",
    "transferring": "running",
    "finished": "done",
    "failed": "failed",
    "cancelled": "cancelled",
    "closed": "cancelled",
}
# Job records per getFullJobStatus request: a task of thousands of jobs is read in
# bounded requests, not one that grows with the task.
JOB_STATUS_CHUNK = 500
# The transformation that runs prun-style job parameters. JEDI's generic refiner defaults
# to https://pandaserver-doma.cern.ch/trf/user/runGen-00-00-02, a base URL that pilot 3's
# generic user refuses ("invalid base URL"; user/generic/setup.py accepts
# http://pandaserver-doma.cern.ch:25080/trf/user): the same script at the accepted URL.
TRANSFORMATION = "http://pandaserver-doma.cern.ch:25080/trf/user/runGen-00-00-02"
_FAILED_TASK = {"broken", "aborted", "failed", "exhausted", "finished", "done", "tobroken"}
# The error fields of a PanDA job record (panda-server taskbuffer/JobSpec.py): who set the
# code (the pilot, the payload, the supervisor, DDM, the brokerage, the job dispatcher, the
# task buffer) and its diagnostic. All of them go into the attempt's reason.
ERROR_FIELDS = (
    ("pilotErrorCode", "pilotErrorDiag"),
    ("exeErrorCode", "exeErrorDiag"),
    ("supErrorCode", "supErrorDiag"),
    ("ddmErrorCode", "ddmErrorDiag"),
    ("brokerageErrorCode", "brokerageErrorDiag"),
    ("jobDispatcherErrorCode", "jobDispatcherErrorDiag"),
    ("taskBufferErrorCode", "taskBufferErrorDiag"),
)
# The fields the recovery taxonomy has tables for, most specific first: the native code.
NATIVE_SOURCES = (
    ("pilotErrorCode", "pilot"),
    ("jobDispatcherErrorCode", "jobDispatcher"),
    ("taskBufferErrorCode", "taskBuffer"),
)
# The tasks' maxAttempt: JEDI runs each entry once, the driver owns retries.
TASK_MAX_ATTEMPT = 1
_INDEX_PATTERN = re.compile(r"--index (\d+)")


def jedi_task_id(message: str) -> int:
    match = re.search(r"jediTaskID=(\d+)", message)
    if match is None:
        raise SubmitError(
            f"panda: the server accepted the task but sent no jediTaskID: {message!r}"
        )
    return int(match.group(1))


def _release() -> str:
    try:
        from pandaclient.PandaToolsPkgInfo import release_version
    except ImportError:
        return "unknown"
    return release_version


def native_code(job: dict) -> str | None:
    """The most specific error code of a PanDA job record, with the field it came from.

    The payload's exit status (``transExitCode``) rides along as the subcode of a pilot
    code (``pilot:1305/40``: the pilot ran the payload, which exited 40), as Slurm's
    ``slurm:FAILED/40`` does; the taxonomy refines the pilot's payload-failure codes by it.

    >>> native_code({"pilotErrorCode": 1305, "transExitCode": 40, "exeErrorCode": 40})
    'pilot:1305/40'
    >>> native_code({"pilotErrorCode": 0, "taskBufferErrorCode": 100})
    'taskBuffer:100'
    """
    exit_code = _int(job.get("transExitCode")) or _int(job.get("exeErrorCode"))
    for field, source in NATIVE_SOURCES:
        code = _int(job.get(field))
        if code:
            subcode = f"/{exit_code}" if source == "pilot" and exit_code else ""
            return f"{source}:{code}{subcode}"
    return f"exit:{exit_code}" if exit_code else None


def native_reason(job: dict) -> str:
    """Every non-zero error field of a PanDA job record as PanDA names it, with its
    diagnostic: what ``native_code`` picked one code from.

    >>> native_reason({"pilotErrorCode": 1305, "pilotErrorDiag": "payload failed",
    ...                "exeErrorCode": 40, "exeErrorDiag": "NULL", "transExitCode": 40})
    'pilotErrorCode=1305 payload failed; exeErrorCode=40; transExitCode=40'
    """
    parts = []
    for code_field, diag_field in ERROR_FIELDS:
        code = _int(job.get(code_field))
        diag = str(job.get(diag_field) or "")
        if diag == "NULL":  # the server's empty value
            diag = ""
        if code or diag:
            parts.append(" ".join(filter(None, (f"{code_field}={code}", diag))))
    if _int(job.get("transExitCode")):
        parts.append(f"transExitCode={_int(job.get('transExitCode'))}")
    return "; ".join(parts)


def _int(value) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def job_entry(job: dict) -> int | None:
    """The job-list entry a PanDA job runs, read back from its parameters."""
    match = _INDEX_PATTERN.search(unquote(str(job.get("jobParameters") or "")))
    return None if match is None else int(match.group(1)) - FIRST_INDEX


def jedi_may_retry(job: dict, max_attempt: int = TASK_MAX_ATTEMPT) -> bool:
    """Whether JEDI can still make another job for this failed job's entry: it retries an
    input while ``attemptNr + 1 < maxAttempt`` of the task (panda-server
    ``job_complex_module``; a job record's own ``maxAttempt`` is its ``attemptNr``, the
    server's and pilot's retries being off).

    >>> jedi_may_retry({"attemptNr": 0}), jedi_may_retry({"attemptNr": 0}, max_attempt=3)
    (False, True)
    """
    return _int(job.get("attemptNr")) + 1 < max_attempt


def job_state(job: dict, handle: JobHandle, task_final: bool = False) -> JobState:
    """A PanDA job record as the state of the attempt it runs. A failed job that JEDI may
    still retry (in a task not final yet) is not the attempt's end: it stays pending."""
    state = _JOB_STATUS.get(str(job.get("jobStatus")), "pending")
    if state == "failed" and not task_final and jedi_may_retry(job):
        return JobState(
            handle=handle,
            state="pending",
            native_reason=f"PanDA job {job.get('PandaID')} failed; JEDI retries it",
            engine_id=str(job.get("PandaID")),
        )
    exit_code, native = None, None
    if state in {"done", "failed", "cancelled"}:
        exit_code = _int(job.get("transExitCode"))
        native = None if state == "done" else native_code(job)
    reason = native_reason(job)
    return JobState(
        handle=handle,
        state=state,
        exit_code=exit_code,
        native_code=native,
        native_reason=reason,
        site=job.get("computingSite") or handle.site,
        engine_id=str(job["PandaID"]) if job.get("PandaID") else None,
    )


def check_credentials(environ=os.environ) -> None:
    """Raise SubmitError unless the environment holds PanDA credentials."""
    if environ.get("PANDA_AUTH") == "oidc":
        if not (environ.get("PANDA_AUTH_VO") or environ.get("OIDC_AUTH_VO")):
            raise SubmitError("panda: PANDA_AUTH=oidc needs PANDA_AUTH_VO (your VO, e.g. belle)")
        token_file = environ.get("OIDC_AUTH_TOKEN_FILE")
        if not (
            environ.get("PANDA_AUTH_ID_TOKEN")
            or environ.get("OIDC_AUTH_ID_TOKEN")
            or (token_file and Path(token_file).is_file())
        ):
            raise SubmitError(
                "panda: PANDA_AUTH=oidc but no ID token: set PANDA_AUTH_ID_TOKEN or "
                "OIDC_AUTH_TOKEN_FILE (an IAM token for your VO)"
            )
        return
    proxy = environ.get("X509_USER_PROXY") or f"/tmp/x509up_u{os.getuid()}"
    if not Path(proxy).is_file():
        raise SubmitError(
            "panda: no credentials: set PANDA_AUTH=oidc, PANDA_AUTH_VO and PANDA_AUTH_ID_TOKEN, "
            f"or X509_USER_PROXY to a grid proxy (none at {proxy}; voms-proxy-init makes one)"
        )


class PandaBackend(Backend):
    """Tasks on a PanDA server through panda-client."""

    name = "panda"
    # A server shared by thousands of users: task status and job records once a minute.
    poll_interval_s = 60.0
    # One task for the whole campaign (JEDI brokers its jobs), unless max_parallel is set.
    remote = True

    def __init__(
        self,
        server: str | None = None,
        vo: str | None = None,
        user: str | None = None,
        site: str | None = None,
        python: str = "python3",
        storage: str | None = None,
    ):
        self.server = server
        self.storage = storage or os.environ.get("PANDA_STORAGE_PATH")
        # (campaign id, job index, attempt) -> the attempt's input, for its report file.
        self._inputs: dict[tuple[str, int, int], JobInput] = {}
        self.vo = vo
        self.user = user
        self.site = site
        self.python = python

    @classmethod
    def from_campaign(cls, campaign: Campaign) -> PandaBackend:
        options = campaign.backend.options
        return cls(
            server=options.get("server"),
            vo=options.get("vo"),
            user=options.get("user"),
            site=campaign.backend.queue,
            python=options.get("python", "python3"),
            storage=options.get("storage"),
        )

    # -- task parameters -----------------------------------------------------------------

    def server_url(self) -> str | None:
        return self.server or os.environ.get("PANDA_URL_SSL")

    def nickname(self) -> str:
        """The user field of dataset names (prun takes it from the token or the proxy)."""
        if self.user or os.environ.get("PANDA_NICKNAME"):
            return self.user or os.environ["PANDA_NICKNAME"]
        token = os.environ.get("PANDA_AUTH_ID_TOKEN") or os.environ.get("OIDC_AUTH_ID_TOKEN")
        if token:
            try:
                from pandaclient.openidc_utils import decode_id_token

                claims = decode_id_token(token)
                return claims.get("preferred_username") or claims["sub"]
            except Exception:  # noqa: BLE001 - an undecodable token falls back to the placeholder
                pass
        return "USER"

    def task_params(
        self, campaign: Campaign, n_jobs: int, job_list_name: str, archive: str, out_ds: str
    ) -> dict:
        """Task parameters as prun builds them for a container job without input."""
        resources = site_resources(campaign)
        sites = campaign.backend.sites
        # As prun --site: one site is "site"; several are "includedSite" with brokerage.
        allowed = list(sites.allowed) or ([self.site] if self.site else [])
        site = allowed[0] if len(allowed) == 1 else None
        included = allowed if len(allowed) > 1 else None
        image = campaign.container.image
        if not image:
            raise SubmitError(
                "panda: jobs run in a container on the grid: set container.image in the spec"
            )
        image = image if "://" in image else f"docker://{image}"
        server = self.server_url()
        lfn_prefix = ".".join(out_ds.split(".")[:2])
        log_ds = re.sub("/$", ".log/", out_ds)
        # prun splits the exec string at %RNDM:0: the command up to "--index " is a constant.
        executable = quote(" ".join(worker_command(job_list_name, self.python, "")))
        params: dict = {
            "taskName": out_ds,
            "uniqueTaskName": True,
            "vo": self.vo or os.environ.get("PANDA_AUTH_VO") or "atlas",
            "architecture": "",
            "transUses": "",
            "transHome": None,
            "transPath": TRANSFORMATION,
            "processingType": f"panda-client-{_release()}-jedi-run",
            "prodSourceLabel": "user",
            "site": site,
            "excludedSite": list(sites.excluded),
            "includedSite": included,
            "nEvents": n_jobs,
            "nEventsPerJob": 1,
            "cliParams": f"smartbkg-prod submit {campaign.name} --backend panda",
            "osInfo": platform.platform(),
            "nMaxFilesPerJob": 200,
            "maxWalltime": math.ceil(resources.walltime_s / 3600),
            "ramCount": math.ceil(resources.memory_mb / resources.cores),
            "ramCountUnit": "MBPerCore",
            "respectSplitRule": True,
            # The driver owns retries: JEDI runs each entry once (README, "Who retries").
            "maxAttempt": TASK_MAX_ATTEMPT,
            "container_name": image,
            "multiStepExec": {
                "preprocess": {"command": "${TRF}", "args": "--preprocess ${TRF_ARGS}"},
                "postprocess": {"command": "${TRF}", "args": "--postprocess ${TRF_ARGS}"},
                "containerOptions": {
                    "containerExec": 'echo "=== cat exec script ==="; '
                    "cat __run_main_exec.sh; "
                    "echo; "
                    'echo "=== exec script ==="; '
                    "/bin/sh __run_main_exec.sh",
                    "containerImage": image,
                },
            },
            "log": {
                "dataset": log_ds,
                "container": log_ds,
                "type": "template",
                "param_type": "log",
                "value": f"{log_ds[:-1]}.$JEDITASKID.${{SN}}.log.tgz",
            },
            "noInput": True,
        }
        if resources.cores > 1:
            params["coreCount"] = resources.cores
        if server:
            parsed = urlparse(server)
            params["sourceURL"] = f"{parsed.scheme}://{parsed.netloc}"
        outputs, output_map = [], {}
        for suffix, pattern in OUTPUTS.items():
            lfn = f"{lfn_prefix}.$JEDITASKID._${{SN/P}}.{pattern.replace('*', 'XYZ')}.tgz"
            dataset = f"{out_ds[:-1]}_{suffix}/"
            outputs.append(
                {
                    "type": "template",
                    "value": lfn,
                    "param_type": "output",
                    "dataset": dataset,
                    "container": dataset,
                    "hidden": True,
                }
            )
            output_map[pattern] = lfn
        params["jobParameters"] = [
            {"type": "constant", "value": '-j "" --sourceURL ${SURL}'},
            {"type": "constant", "value": "-r ."},
            {"type": "constant", "value": "__delimiter__", "hidden": True},
            {"type": "constant", "value": f"-a {archive}"},
            *outputs,
            {"type": "constant", "value": f'-o "{output_map}"'},
            {"type": "constant", "value": '-p "', "padding": False},
            {"type": "constant", "value": executable, "padding": False},
            {
                "type": "template",
                "value": "${SEQNUMBER}",
                "param_type": "pseudo_input",
                "dataset": "seq_number",
                "offset": SEQUENCE_OFFSET,
                "padding": False,
            },
            {"type": "constant", "value": "", "padding": False},
            {"type": "constant", "value": '"'},
        ]
        return params

    def _write_sandbox(
        self, campaign: Campaign, jobs: Sequence[JobInput], directory: Path, stem: str
    ) -> tuple[Path, Path]:
        """The job list (the worker writes into its work directory) and the sandbox with it."""
        directory.mkdir(parents=True, exist_ok=True)
        job_list = write_job_list(
            directory / f"{stem}.jsonl", jobs, campaign, output_dir=".", first_index=FIRST_INDEX
        )
        archive = directory / f"sources.{uuid.uuid4()}.tar.gz"
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
            tar.add(job_list, arcname=job_list.name)
        archive.write_bytes(buffer.getvalue())
        return job_list, archive

    def out_ds(self, campaign: Campaign, tag: str) -> str:
        return f"user.{self.nickname()}.smartbkg.{campaign.campaign_id}.{tag}/"

    def render(self, campaign: Campaign, jobs: Sequence[JobInput], directory: Path) -> list[Path]:
        """The task parameters (JSON, as insertTaskParams would send them), the job list
        and the sandbox that would be uploaded."""
        directory = Path(directory)
        job_list, archive = self._write_sandbox(campaign, jobs, directory, campaign.name)
        params = self.task_params(
            campaign, len(jobs), job_list.name, archive.name, self.out_ds(campaign, "v1")
        )
        task_file = directory / f"{campaign.name}.taskparams.json"
        task_file.write_text(json.dumps(params, indent=1))
        return [task_file, job_list, archive]

    # -- talking to the server -----------------------------------------------------------

    def _client(self):
        """pandaclient.Client pointed at our server, after checking credentials."""
        server = self.server_url()
        if not server:
            raise SubmitError(
                "panda: no PanDA server configured: set PANDA_URL_SSL (e.g. "
                "https://pandaserver.cern.ch/server/panda) or backend.options.server"
            )
        check_credentials()
        # Without PANDACACHE_URL, importing Client resolves the CERN cache host.
        os.environ.setdefault("PANDACACHE_URL", server)
        from pandaclient import Client

        parsed = urlparse(server)
        api = f"{parsed.scheme}://{parsed.netloc}/api/v1"
        # Client reads its server from the environment once, at import: set it per backend.
        Client.baseURLSSL = Client.baseURL = Client.baseURLCSRVSSL = server
        Client.server_base_path_ssl = Client.server_base_path = Client.cache_base_path_ssl = api
        return Client

    def submit(self, campaign: Campaign, jobs: Sequence[JobInput]) -> list[JobHandle]:
        if not jobs:
            return []
        client = self._client()
        tag = uuid.uuid4().hex[:8]
        directory = Path(jobs[0].output_dir) / "jobs" / "panda"
        job_list, archive = self._write_sandbox(campaign, jobs, directory, f"{campaign.name}.{tag}")
        # The server registers the file under the name the client sends, and JEDI looks
        # the sandbox up by its base name: upload it from its own directory, as prun does.
        with contextlib.chdir(archive.parent):
            status, message = client.putFile(archive.name, useCacheSrv=True)
        if status != 0 or message != "True":
            raise SubmitError(
                f"panda: cannot upload the sandbox to {self.server_url()}: {status} {message}"
            )
        params = self.task_params(
            campaign, len(jobs), job_list.name, archive.name, self.out_ds(campaign, tag)
        )
        status, output = client.insertTaskParams(params, properErrorCode=True)
        if status != 0:
            raise SubmitError(
                f"panda: cannot reach {self.server_url()} (status {status}): {output}"
            )
        code, reply = output
        if code not in (0, 3):
            raise SubmitError(f"panda: task rejected (code {code}): {reply}")
        task_id = jedi_task_id(str(reply))
        for job_input in jobs:
            self._remember(job_input)
        return [
            attempt_handle(job_input, self.name, f"{task_id}/{entry}")
            for entry, job_input in enumerate(jobs)
        ]

    def poll(self, handles: Sequence[JobHandle]) -> list[JobState]:
        if not handles:
            return []
        client = self._client()
        by_task: dict[int, dict[int, dict]] = {}
        task_status: dict[int, str] = {}
        for task_id in sorted({int(h.backend_job_id.split("/")[0]) for h in handles}):
            status, task = client.getTaskStatus(task_id)
            if status != 0:
                # The server answers "Task not found" (which the client turns into the same
                # (255, None) as an unreachable server) until JEDI's task refiner has made a
                # JEDI task of the accepted parameters: its jobs are pending then.
                if client.getTaskParamsMap(task_id)[0] != 0:
                    raise SubmitError(f"panda: cannot get the status of task {task_id}: {task}")
                task_status[task_id], by_task[task_id] = "registered", {}
                continue
            task_status[task_id] = str(task)
            status, details = client.getJediTaskDetails({"jediTaskID": task_id}, False, True)
            if status != 0:
                raise SubmitError(f"panda: cannot get the jobs of task {task_id}: {details}")
            panda_ids = details.get("PandaID") or []
            jobs: dict[int, dict] = {}
            for start in range(0, len(panda_ids), JOB_STATUS_CHUNK):
                status, specs = client.getFullJobStatus(panda_ids[start : start + JOB_STATUS_CHUNK])
                if status != 0:
                    raise SubmitError(f"panda: cannot get jobs of task {task_id}: {specs}")
                for spec in specs or []:
                    if spec is None:
                        continue
                    job = {key: getattr(spec, key, None) for key in spec.__slots__}
                    entry = job_entry(job)
                    previous = jobs.get(entry)
                    # PanDA's own retries make new jobs for the same entry: the latest counts.
                    if entry is not None and (
                        previous is None or _int(job["PandaID"]) > _int(previous["PandaID"])
                    ):
                        jobs[entry] = job
            by_task[task_id] = jobs
        states = []
        for handle in handles:
            task_text, entry_text = handle.backend_job_id.split("/")
            task_id, entry = int(task_text), int(entry_text)
            job = by_task[task_id].get(entry)
            if job is not None:
                state = job_state(job, handle, task_final=task_status[task_id] in _FAILED_TASK)
                if state.state in {"done", "failed"}:
                    self._retrieve(job, handle)
                states.append(state)
            elif task_status[task_id] in _FAILED_TASK:
                states.append(
                    JobState(
                        handle=handle,
                        state="lost",
                        native_reason=f"task {task_id} is {task_status[task_id]} without a job for entry {entry}",
                    )
                )
            else:
                states.append(JobState(handle=handle, state="pending"))
        return states

    def adopt(self, attempts: Sequence[tuple[JobHandle, JobInput]]) -> None:
        """Attempts of tasks an earlier driver submitted: their reports are fetched from
        the server into the same files as ours."""
        for _handle, job_input in attempts:
            self._remember(job_input)

    def cancel(self, handles: Sequence[JobHandle]) -> None:
        if not handles:
            return
        client = self._client()
        for task_id in sorted({int(h.backend_job_id.split("/")[0]) for h in handles}):
            status, output = client.killTask(task_id)
            if status != 0:
                raise SubmitError(f"panda: cannot kill task {task_id}: {output}")

    # -- reports and outputs from the grid ------------------------------------------------

    def _remember(self, job_input: JobInput) -> None:
        job = job_input.job
        self._inputs[(job.campaign_id, job.index, job_input.attempt)] = job_input

    def _retrieve(self, job: dict, handle: JobHandle) -> None:
        """Write a finished job's report (its metadata on the server) where the driver
        reads the attempt's report, after unpacking the outputs it lists."""
        job_input = self._inputs.get((handle.campaign_id, handle.job_index, handle.attempt))
        metadata = job.get("metadata")
        if job_input is None or not metadata or metadata == "NULL":
            return
        if job_input.report_file.exists():
            return
        try:
            report = JobReport.model_validate_json(metadata)
        except ValueError as error:
            log.warning(
                "panda job %s: its metadata is not a worker report: %s", job.get("PandaID"), error
            )
            return
        # The job list in the sandbox numbers attempts as at submission.
        report = report.model_copy(update={"attempt": handle.attempt})
        if report.succeeded and report.outputs and self.storage:
            output_dir = Path(job_input.output_dir).resolve()
            self._fetch_outputs(job, report, output_dir)
            # The worker named its files relative to the pilot's work directory; they are
            # now in the output directory (a resumed driver checks them there, too).
            outputs = [
                output.model_copy(update={"path": str(output_dir / Path(output.path).name)})
                for output in report.outputs
            ]
            report = report.model_copy(update={"outputs": outputs})
        report.write(job_input.report_file)

    def _fetch_outputs(self, job: dict, report: JobReport, output_dir: Path) -> None:
        """Unpack the report's files from the job's output tarballs on the storage endpoint
        (each member renamed into place: never a half-written output)."""
        wanted = {Path(output.path).name for output in report.outputs}
        lfns = [f.lfn for f in job.get("Files") or [] if getattr(f, "type", None) == "output"]
        output_dir.mkdir(parents=True, exist_ok=True)
        for lfn in lfns:
            found = next(Path(self.storage).rglob(lfn), None)
            if found is None:
                log.warning(
                    "panda job %s: output %s is not on %s", job.get("PandaID"), lfn, self.storage
                )
                continue
            with tarfile.open(found) as tarball, tempfile.TemporaryDirectory(dir=output_dir) as tmp:
                members = [
                    m for m in tarball.getmembers() if m.isfile() and Path(m.name).name in wanted
                ]
                tarball.extractall(tmp, members=members, filter="data")
                for member in members:
                    os.replace(Path(tmp) / member.name, output_dir / Path(member.name).name)
