"""HTCondor: one cluster per submitted batch, built with the official ``htcondor2`` bindings.

The submit description runs ``smartbkg-prod worker --job LIST --index $(entry)`` in the
container universe (``container_image``) when the spec names an image, in the vanilla
universe otherwise. One row of itemdata per job (``entry job_index first_event n_events
attempt``) makes one proc of the cluster; the job list (JSON lines) travels with
``transfer_input_files``. Resources map to ``request_cpus``/``request_memory``/
``request_disk``/``request_gpus``; the retry policy to ``max_retries``, ``on_exit_hold``
(permanent worker errors wait for a human) and ``periodic_release`` (transient holds are
released until attempts run out); site policy to ``requirements`` on the slot's
``GLIDEIN_Site``; ``max_parallel`` to ``max_materialize``. A campaign whose NN filter has
no trained model yet renders as a DAG (``htcondor2.dags``): train -> produce.

Tracking follows the cluster's job event log (``log``, in the campaign's output directory)
with ``htcondor2.JobEventLog``, the way DAGMan and htmap do, read incrementally as it grows:
no schedd load while the log answers. The schedd (queue, then history; ``JobStatus``,
``HoldReasonCode``, ``ExitCode``, ``ExitBySignal``, ``EnteredCurrentStatus``, ...) is asked
only for jobs the log cannot answer for: a log lost or unreadable, or a job it has not
shown yet. Suspended jobs count as running. Native codes: ``HoldReasonCode=N/S`` for holds,
``signal:N`` for a payload killed by a signal, ``exit:N`` for a non-zero exit.

Holds: a transient hold (``TRANSIENT_HOLD_CODES``) on a job with starts left is released by
the job's own ``periodic_release`` after ``RELEASE_AFTER_S``; its :class:`JobState` carries
that deadline (``release_by``) and the driver waits for it. Any other hold is removed by the
driver at once. Cancel (``JobAction.Remove``) goes through ``Schedd.act``.

>>> hold_native_code(34, 102)
'HoldReasonCode=34/102'
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import classad2
import htcondor2
from htcondor2 import dags

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
from smartbkg_prod.spec import Campaign, FilterConfig, dump_campaign

_log = logging.getLogger("smartbkg_prod.backends.htcondor")

ITEM_COLUMNS = ("entry", "job_index", "first_event", "n_events", "attempt")
PROJECTION = [
    "ClusterId",
    "ProcId",
    "JobStatus",
    "HoldReasonCode",
    "HoldReasonSubCode",
    "HoldReason",
    "ExitCode",
    "ExitBySignal",
    "ExitSignal",
    "RemoteHost",
    "LastRemoteHost",
    "MachineAttrGLIDEIN_Site0",
    "EnteredCurrentStatus",
    "NumJobStarts",
]
# Worker exit codes that no retry fixes (smartbkg_prod.exitcodes: CONFIG, GENERATOR):
# hold them for review instead of burning attempts.
PERMANENT_EXIT_CODES = (10, 20)
# Holds worth releasing automatically (htcondor/htcondor src/condor_utils/condor_holdcodes.h):
# 6 FailedToCreateProcess, 7/8 UnableToOpenOutput/Input, 12/13 Transfer{Output,Input}Error,
# 21 StartdHeldJob, 35 InvalidDockerImage (registry hiccups), 45 SingularityTestFailed.
TRANSIENT_HOLD_CODES = (6, 7, 8, 12, 13, 21, 35, 45)
RELEASE_AFTER_S = 600
# The schedd evaluates periodic_release every PERIODIC_EXPR_INTERVAL (default 60 s): a
# released job may be released this much after RELEASE_AFTER_S.
PERIODIC_EXPR_INTERVAL_S = 60
# The training stage of a multi-stage campaign (train -> produce): `smartbkg-prod train`
# on a filter-off copy of the campaign, capped at this many events.
TRAIN_ARGUMENTS = "-m smartbkg_prod.cli train {spec} --out {model} --in-process --workers {cores}"
TRAIN_EVENTS = 200_000
CANCEL_REASON = "cancelled by smartbkg-prod"

# JobStatus (HTCondor manual, "JobStatus" job ClassAd attribute): 1 Idle, 2 Running,
# 3 Removed, 4 Completed, 5 Held, 6 Transferring Output, 7 Suspended. A suspended job resumes
# where it stopped: it counts as running.
_STATUS = {
    1: "pending",
    2: "running",
    3: "cancelled",
    4: "done",
    5: "held",
    6: "running",
    7: "running",
}


def hold_native_code(code: int, subcode: int | None) -> str:
    return f"HoldReasonCode={code}/{subcode or 0}"


def release_deadline(
    code: int | None, held_since: float | None, starts: int | None, max_starts: int | None
) -> float | None:
    """When the job's own ``periodic_release`` will have released a hold, or None if it
    never will (a hold code no release fixes, or no starts left)."""
    if code not in TRANSIENT_HOLD_CODES or held_since is None:
        return None
    if max_starts is not None and starts is not None and starts >= max_starts:
        return None
    return held_since + RELEASE_AFTER_S + PERIODIC_EXPR_INTERVAL_S


def _attr(ad: Mapping, name: str):
    """An attribute's Python value; None when missing or ``undefined``/``error`` (which
    classad2 returns as ``classad2.Value`` members, an int subclass: never read as 2 or 1)."""
    value = ad.get(name)
    return None if value is None or isinstance(value, classad2.Value) else value


def job_state(ad: Mapping, handle: JobHandle, max_starts: int | None = None) -> JobState:
    """One queue or history ad (a ``classad2.ClassAd``) as a :class:`JobState`."""
    status = int(_attr(ad, "JobStatus") or 1)
    state = _STATUS.get(status, "pending")
    site = (
        _attr(ad, "MachineAttrGLIDEIN_Site0")
        or _attr(ad, "RemoteHost")
        or _attr(ad, "LastRemoteHost")
    )
    exit_code, native, reason, release_by = None, None, "", None
    if state == "held":
        code = int(_attr(ad, "HoldReasonCode") or 0)
        native = hold_native_code(code, _attr(ad, "HoldReasonSubCode"))
        reason = str(_attr(ad, "HoldReason") or "")
        release_by = release_deadline(
            code, _attr(ad, "EnteredCurrentStatus"), _attr(ad, "NumJobStarts"), max_starts
        )
    elif state == "done":
        if _attr(ad, "ExitBySignal"):
            signal = int(_attr(ad, "ExitSignal") or 0)
            exit_code, native, state = 128 + signal, f"signal:{signal}", "failed"
        else:
            exit_code = int(_attr(ad, "ExitCode") or 0)
            if exit_code != 0:
                native, state = f"exit:{exit_code}", "failed"
    return JobState(
        handle=handle,
        state=state,
        exit_code=exit_code,
        native_code=native,
        native_reason=reason,
        site=str(site) if site else handle.site,
        release_by=release_by,
    )


@dataclass
class LoggedJob:
    """One job as its event log tells it (the latest event of each kind wins)."""

    state: str = "pending"
    exit_code: int | None = None
    native_code: str | None = None
    reason: str = ""
    host: str | None = None
    site: str | None = None
    starts: int = 0
    hold_code: int | None = None
    held_since: float | None = None

    def to_state(self, handle: JobHandle, max_starts: int | None = None) -> JobState:
        release_by = None
        if self.state == "held":
            release_by = release_deadline(self.hold_code, self.held_since, self.starts, max_starts)
        return JobState(
            handle=handle,
            state=self.state,
            exit_code=self.exit_code,
            native_code=self.native_code,
            native_reason=self.reason,
            site=self.site or self.host or handle.site,
            release_by=release_by,
        )


_EVENT = htcondor2.JobEventType


def apply_event(job: LoggedJob, event: htcondor2.JobEvent) -> None:
    """Move ``job`` to what ``event`` says (HTCondor manual, "Job Event Log Codes").

    A job that terminated stays terminated: an abort logged after its termination (DAGMan
    removing a finished node, e.g. ``job_dagman_gt1957.testlog``) does not undo its exit."""
    kind = event.type
    if job.state in ("done", "failed") and kind != _EVENT.JOB_AD_INFORMATION:
        return
    if kind == _EVENT.SUBMIT:
        job.state = "pending"
    elif kind == _EVENT.EXECUTE:
        job.state, job.starts = "running", job.starts + 1
        job.host = event.get("ExecuteHost") or job.host
    elif kind in (_EVENT.JOB_EVICTED, _EVENT.SHADOW_EXCEPTION, _EVENT.JOB_RECONNECT_FAILED):
        # Back in the queue, idle: the schedd runs it again.
        job.state = "pending"
    elif kind in (_EVENT.JOB_SUSPENDED, _EVENT.JOB_UNSUSPENDED, _EVENT.JOB_RECONNECTED):
        job.state = "running"
    elif kind == _EVENT.JOB_DISCONNECTED:
        pass  # the shadow lost the execute node and is reconnecting: still running
    elif kind == _EVENT.JOB_HELD:
        code = event.get("HoldReasonCode")
        job.state, job.hold_code, job.held_since = "held", code, float(event.timestamp)
        job.native_code = hold_native_code(int(code or 0), event.get("HoldReasonSubCode"))
        job.reason = str(event.get("HoldReason", ""))
    elif kind == _EVENT.JOB_RELEASED:
        job.state, job.native_code, job.reason = "pending", None, ""
        job.hold_code = job.held_since = None
    elif kind == _EVENT.JOB_TERMINATED:
        if event.get("TerminatedNormally"):
            job.exit_code = int(event.get("ReturnValue", 0))
            job.state = "done" if job.exit_code == 0 else "failed"
            job.native_code = None if job.exit_code == 0 else f"exit:{job.exit_code}"
        else:
            signal = int(event.get("TerminatedBySignal", 0))
            job.state, job.exit_code, job.native_code = "failed", 128 + signal, f"signal:{signal}"
    elif kind == _EVENT.JOB_ABORTED:
        job.state, job.reason = "cancelled", str(event.get("Reason", ""))
    elif kind == _EVENT.JOB_AD_INFORMATION:
        site = event.get("MachineAttrGLIDEIN_Site0")
        if isinstance(site, str) and site:
            job.site = site


class EventLog:
    """A job event log followed with ``htcondor2.JobEventLog`` as it grows.

    :meth:`update` reads the events written since the last call (a partly written event
    waits for the next call); :attr:`jobs` maps ``"cluster.proc"`` to what the log says.
    A log that does not exist (yet) reads as empty; one that cannot be read raises
    ``HTCondorException``/``OSError``.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.jobs: dict[str, LoggedJob] = {}
        self._log: htcondor2.JobEventLog | None = None

    def update(self) -> dict[str, LoggedJob]:
        if self._log is None:
            if not self.path.exists():
                return self.jobs
            self._log = htcondor2.JobEventLog(str(self.path))
        elif not self.path.exists():
            # Deleted under us: the open file would never grow again.
            raise FileNotFoundError(f"event log {self.path} was removed")
        for event in self._log.events(stop_after=0):
            if event.cluster < 0:
                continue  # pseudo events (log rotation headers) name no job
            job = self.jobs.setdefault(f"{event.cluster}.{event.proc}", LoggedJob())
            apply_event(job, event)
        return self.jobs


def _quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


class HTCondorBackend(Backend):
    """Clusters on an HTCondor pool (schedd found through the local HTCondor config).

    ``shared_filesystem=True`` (option ``shared_filesystem: "true"``) lets workers write
    straight into the campaign's output directory; otherwise the job list is transferred
    in and everything the worker writes comes back to the output directory on exit.
    """

    name = "htcondor"
    # The schedd is asked once a minute, as a fallback to the job event log.
    # The schedd at most once a minute; the job event logs (file reads) every 2 s.
    poll_interval_s = 60.0
    completion_interval_s = 2.0
    throttles_submissions = True  # max_materialize = backend.max_parallel
    remote = True

    def __init__(
        self,
        schedd_name: str | None = None,
        collector: str | None = None,
        python: str = "python3",
        shared_filesystem: bool = False,
        accounting_group: str | None = None,
        max_starts: int | None = None,
    ):
        self.schedd_name = schedd_name
        self.collector = collector
        self.python = python
        self.shared_filesystem = shared_filesystem
        self.accounting_group = accounting_group
        # periodic_release lets a job start this many times (the campaign's max_attempts).
        self.max_starts = max_starts
        self._logs: dict[Path, EventLog] = {}
        self._cluster_logs: dict[str, EventLog] = {}

    @classmethod
    def from_campaign(cls, campaign: Campaign) -> HTCondorBackend:
        options = campaign.backend.options
        return cls(
            schedd_name=options.get("schedd") or campaign.backend.queue,
            collector=options.get("collector"),
            python=options.get("python", "python3"),
            shared_filesystem=options.get("shared_filesystem", "false").lower()
            in {"1", "true", "yes"},
            accounting_group=options.get("accounting_group"),
            # The driver's submissions release only jobs that never started (description).
            max_starts=1,
        )

    # -- what is submitted -------------------------------------------------------------

    def requirements(self, campaign: Campaign) -> str | None:
        sites = campaign.backend.sites
        clauses = []
        if sites.allowed:
            clauses.append(
                "("
                + " || ".join(f"TARGET.GLIDEIN_Site =?= {_quote(s)}" for s in sites.allowed)
                + ")"
            )
        clauses += [f"TARGET.GLIDEIN_Site =!= {_quote(s)}" for s in sites.excluded]
        return " && ".join(clauses) or None

    def description(
        self, campaign: Campaign, job_list: Path, output_dir: str, engine_retries: bool
    ) -> htcondor2.Submit:
        """The submit description of a campaign's produce stage (no queue statement).

        ``engine_retries``: let HTCondor retry failed attempts itself (a rendered submission
        run by hand); the campaign driver retries by itself and submits without them.
        """
        resources = site_resources(campaign)
        # Grid sites run the image whatever the local runtime setting: the execute node has
        # neither the submitter's environment nor its Python (Apptainer sites pull the
        # same docker:// reference).
        image = campaign.container.image
        in_container = bool(image)
        list_argument = str(job_list) if self.shared_filesystem else job_list.name
        arguments = worker_command(list_argument, self.python, "$(entry)")[1:]
        environment = [
            "SMARTBKG_BACKEND_JOB_ID=$(ClusterId).$(ProcId)",
            "SMARTBKG_SITE=$$(GLIDEIN_Site:unknown)",
        ]
        if in_container:
            environment.append(f"SMARTBKG_IMAGE={image}")
        keys: dict[str, str] = {
            "universe": "container" if in_container else "vanilla",
            "executable": self.python,
            "transfer_executable": "false",
            "arguments": _quote(" ".join(arguments)),
            "environment": _quote(" ".join(environment)),
            "getenv": "SMARTBKG_INJECT_FAULT",
            # Copies the slot's site into the job ad as MachineAttrGLIDEIN_Site0, and into
            # the event log (a job ad information event after each event).
            "job_machine_attrs": "GLIDEIN_Site",
            "job_ad_information_attrs": "MachineAttrGLIDEIN_Site0",
            "request_cpus": str(resources.cores),
            "request_memory": str(resources.memory_mb),  # MiB
            "request_disk": str(resources.disk_mb * 1024),  # KiB
            "initialdir": output_dir,
            "log": self.event_log_path(campaign, output_dir).name,
            "output": "$(job_index).attempt$(attempt).$(ClusterId).$(ProcId).out",
            "error": "$(job_index).attempt$(attempt).$(ClusterId).$(ProcId).err",
            "+SmartbkgCampaign": _quote(campaign.campaign_id),
            "+SmartbkgJobIndex": "$(job_index)",
            "+SmartbkgFirstEvent": "$(first_event)",
            "+SmartbkgNEvents": "$(n_events)",
            "+SmartbkgAttempt": "$(attempt)",
            # Walltime is enforced by the worker; this is the pool's backstop.
            "allowed_execute_duration": str(resources.walltime_s),
            "on_exit_hold": " || ".join(f"ExitCode =?= {code}" for code in PERMANENT_EXIT_CODES),
            "on_exit_hold_reason": _quote("smartbkg-prod worker: permanent error, needs review"),
            # Under the driver (which owns retries) only a job whose payload never started
            # is released: the release finishes delivering the same attempt, it does not
            # run it again. A rendered submission run by hand lets HTCondor retry.
            "periodic_release": (
                f"(NumJobStarts < {campaign.retry.max_attempts if engine_retries else 1}) && "
                f"(time() - EnteredCurrentStatus > {RELEASE_AFTER_S}) && ("
                + " || ".join(f"HoldReasonCode =?= {code}" for code in TRANSIENT_HOLD_CODES)
                + ")"
            ),
        }
        if in_container:
            keys["container_image"] = image if "://" in image else f"docker://{image}"
        if resources.gpus:
            keys["request_gpus"] = str(resources.gpus)
        if self.shared_filesystem:
            keys["should_transfer_files"] = "IF_NEEDED"
        else:
            # Nothing listed as output: HTCondor brings back every file the worker created
            # in its scratch directory (output ROOT file and report), also after a failure.
            keys["should_transfer_files"] = "YES"
            keys["when_to_transfer_output"] = "ON_EXIT"
            keys["transfer_input_files"] = str(job_list)
        if engine_retries and campaign.retry.max_attempts > 1:
            keys["max_retries"] = str(campaign.retry.max_attempts - 1)
            keys["success_exit_code"] = "0"
        requirements = self.requirements(campaign)
        if requirements:
            keys["requirements"] = requirements
        if campaign.backend.max_parallel:
            keys["max_materialize"] = str(campaign.backend.max_parallel)
        if self.accounting_group:
            keys["accounting_group"] = self.accounting_group
        return htcondor2.Submit(keys)

    @staticmethod
    def event_log_path(campaign: Campaign, output_dir: str | Path) -> Path:
        """The job event log of a campaign's clusters (relative to ``initialdir``)."""
        return Path(output_dir) / f"{campaign.name}.htcondor.log"

    @staticmethod
    def item_rows(jobs: Sequence[JobInput]) -> list[dict[str, str]]:
        return [
            {
                "entry": str(entry),
                "job_index": str(job_input.job.index),
                "first_event": str(job_input.job.first_event),
                "n_events": str(job_input.job.n_events),
                "attempt": str(job_input.attempt),
            }
            for entry, job_input in enumerate(jobs)
        ]

    def _write_job_list(self, path: Path, campaign: Campaign, jobs: Sequence[JobInput]) -> Path:
        # With file transfer the worker writes into its scratch directory ("."), and
        # HTCondor brings the files back to initialdir, the campaign's output directory.
        return write_job_list(path, jobs, campaign, None if self.shared_filesystem else ".")

    def render(self, campaign: Campaign, jobs: Sequence[JobInput], directory: Path) -> list[Path]:
        """``NAME.sub`` (queue ... from ``NAME.items``), the job list, and for a campaign
        whose filter model does not exist yet a DAG ``NAME.dag`` (train -> produce)."""
        directory = Path(directory).resolve()
        directory.mkdir(parents=True, exist_ok=True)
        job_list = self._write_job_list(directory / f"{campaign.name}.jobs.jsonl", campaign, jobs)
        items = directory / f"{campaign.name}.items"
        items.write_text(
            "".join(
                f"{entry} {j.job.index} {j.job.first_event} {j.job.n_events} {j.attempt}\n"
                for entry, j in enumerate(jobs)
            )
        )
        produce = self.description(campaign, job_list, jobs[0].output_dir, engine_retries=True)
        produce.setQArgs(f"{','.join(ITEM_COLUMNS)} from {items}")
        model = campaign.filter.model
        if campaign.filter.mode == "off" or not model or Path(model).is_file():
            submit_file = directory / f"{campaign.name}.sub"
            submit_file.write_text(str(produce))
            return [submit_file, items, job_list]
        dag = dags.DAG()
        train = dag.layer(
            name="train", submit_description=self.train_description(campaign, directory)
        )
        train.child_layer(name="produce", submit_description=produce)
        dag_file = dags.write_dag(dag, directory, dag_file_name=f"{campaign.name}.dag")
        return [dag_file, directory / "train.sub", directory / "produce.sub", items, job_list]

    def train_description(self, campaign: Campaign, directory: Path) -> htcondor2.Submit:
        """The training node: ``smartbkg-prod train`` on a filter-off copy of the campaign
        (at most ``TRAIN_EVENTS`` events), writing the model the produce stage loads."""
        events = min(campaign.events, TRAIN_EVENTS)
        training = campaign.model_copy(
            update={
                "name": f"{campaign.name}-train",
                "events": events,
                "events_per_job": min(campaign.events_per_job, events),
                "filter": FilterConfig(),
            }
        )
        spec = directory / f"{training.name}.yaml"
        spec.write_text(dump_campaign(training))
        resources = site_resources(campaign)
        arguments = TRAIN_ARGUMENTS.format(
            spec=spec, model=campaign.filter.model, cores=resources.cores
        )
        keys = {
            "universe": "vanilla",
            "executable": self.python,
            "transfer_executable": "false",
            "arguments": _quote(arguments),
            "request_cpus": str(resources.cores),
            "request_memory": str(resources.memory_mb),
            "request_gpus": str(resources.gpus),
            "should_transfer_files": "IF_NEEDED",
            "initialdir": str(directory),
            "log": f"{campaign.name}.htcondor.log",
            "output": "train.$(ClusterId).out",
            "error": "train.$(ClusterId).err",
        }
        return htcondor2.Submit(keys)

    # -- the interface -------------------------------------------------------------------

    def _schedd(self) -> htcondor2.Schedd:
        try:
            if self.schedd_name or self.collector:
                collector = (
                    htcondor2.Collector(self.collector) if self.collector else htcondor2.Collector()
                )
                ad = collector.locate(htcondor2.DaemonType.Schedd, self.schedd_name)
                return htcondor2.Schedd(ad)
            return htcondor2.Schedd()
        except (htcondor2.HTCondorException, OSError, ValueError) as error:
            collector = self.collector or htcondor2.param.get("COLLECTOR_HOST")
            schedd = (
                f"schedd {self.schedd_name}"
                if self.schedd_name
                else f"the local schedd {htcondor2.param.get('SCHEDD_HOST') or '(SCHEDD_HOST unset)'}"
            )
            raise SubmitError(
                f"htcondor: cannot reach {schedd} through collector "
                f"{collector or '(none configured)'}: {str(error).rstrip('.')}; "
                "set CONDOR_CONFIG or _CONDOR_COLLECTOR_HOST / backend.options.collector, "
                "or review the submission with --dry-run"
            ) from None

    def submit(self, campaign: Campaign, jobs: Sequence[JobInput]) -> list[JobHandle]:
        if not jobs:
            return []
        output_dir = jobs[0].output_dir
        directory = Path(output_dir) / "jobs" / "htcondor"
        directory.mkdir(parents=True, exist_ok=True)
        stem = f"{campaign.name}.{jobs[0].job.index}.a{jobs[0].attempt}.{os.getpid()}"
        job_list = self._write_job_list(directory / f"{stem}.jsonl", campaign, jobs)
        description = self.description(campaign, job_list, output_dir, engine_retries=False)
        schedd = self._schedd()
        try:
            result = schedd.submit(description, itemdata=iter(self.item_rows(jobs)))
        except (htcondor2.HTCondorException, OSError) as error:
            raise SubmitError(f"htcondor: submission to the schedd failed: {error}") from None
        cluster, first_proc = result.cluster(), result.first_proc()
        event_log = self.event_log_path(campaign, output_dir)
        self.follow(cluster, event_log)
        handles = [
            attempt_handle(job_input, self.name, f"{cluster}.{first_proc + offset}")
            for offset, job_input in enumerate(jobs)
        ]
        return [handle.model_copy(update={"log": str(event_log)}) for handle in handles]

    def adopt(self, attempts: Sequence[tuple[JobHandle, JobInput]]) -> None:
        """Follow an earlier driver's clusters through their event logs again (read from
        the start); a cluster whose log is unknown is asked about at the schedd."""
        for handle, _job_input in attempts:
            if handle.log:
                self.follow(handle.backend_job_id.split(".")[0], Path(handle.log))

    def follow(self, cluster: int | str, path: Path) -> None:
        """Track ``cluster`` through the job event log at ``path`` (shared by clusters)."""
        path = Path(path)
        self._cluster_logs[str(cluster)] = self._logs.setdefault(path, EventLog(path))

    def poll(self, handles: Sequence[JobHandle]) -> list[JobState]:
        """States from the clusters' event logs; the schedd only for what they can't tell."""
        if not handles:
            return []
        states = self._logged_states(handles)
        missing = [handle for handle in handles if handle.backend_job_id not in states]
        if missing:
            states.update(self._query_schedd(missing))
        return [states[handle.backend_job_id] for handle in handles]

    def completions(self, handles: Sequence[JobHandle]) -> list[JobState]:
        """Finished and held jobs as their event logs record them: no schedd query."""
        states = self._logged_states(handles).values()
        return [state for state in states if state.state in {"done", "failed", "cancelled", "held"}]

    def _logged_states(self, handles: Sequence[JobHandle]) -> dict[str, JobState]:
        """``backend_job_id -> state`` for the handles their clusters' event logs know."""
        logged = self._read_logs(handles)
        return {
            handle.backend_job_id: logged[handle.backend_job_id].to_state(handle, self.max_starts)
            for handle in handles
            if handle.backend_job_id in logged
        }

    def _read_logs(self, handles: Sequence[JobHandle]) -> dict[str, LoggedJob]:
        """What the event logs of these handles' clusters say, each log read once."""
        clusters = {handle.backend_job_id.split(".")[0] for handle in handles}
        logs = {
            self._cluster_logs[c].path: self._cluster_logs[c]
            for c in clusters & self._cluster_logs.keys()
        }
        jobs: dict[str, LoggedJob] = {}
        for path, log in logs.items():
            try:
                jobs.update(log.update())
            except (htcondor2.HTCondorException, OSError) as error:
                # Lost or unreadable: the schedd answers for its clusters from now on.
                _log.warning("event log %s unreadable (%s); asking the schedd", path, error)
                self._cluster_logs = {c: k for c, k in self._cluster_logs.items() if k is not log}
                self._logs.pop(path, None)
        return jobs

    def _query_schedd(self, handles: Sequence[JobHandle]) -> dict[str, JobState]:
        schedd = self._schedd()
        clusters = sorted({handle.backend_job_id.split(".")[0] for handle in handles})
        constraint = " || ".join(f"ClusterId == {cluster}" for cluster in clusters)
        try:
            ads = {_job_id(ad): ad for ad in schedd.query(constraint, PROJECTION)}
            if any(h.backend_job_id not in ads for h in handles):
                for ad in schedd.history(constraint, PROJECTION):
                    ads.setdefault(_job_id(ad), ad)
        except htcondor2.HTCondorException as error:
            raise SubmitError(f"htcondor: cannot query the schedd: {error}") from None
        states = {}
        for handle in handles:
            ad = ads.get(handle.backend_job_id)
            if ad is None:
                states[handle.backend_job_id] = JobState(
                    handle=handle,
                    state="lost",
                    native_reason="job in neither its event log, the schedd queue nor its history",
                )
            else:
                states[handle.backend_job_id] = job_state(ad, handle, self.max_starts)
        return states

    def cancel(self, handles: Sequence[JobHandle]) -> None:
        if not handles:
            return
        schedd = self._schedd()
        try:
            # The reason goes as (text, code): htcondor2 25.x drops a plain string reason
            # (Schedd.act only unpacks a tuple) and the schedd records no reason at all.
            schedd.act(
                htcondor2.JobAction.Remove,
                [handle.backend_job_id for handle in handles],
                (CANCEL_REASON, None),
            )
        except htcondor2.HTCondorException as error:
            raise SubmitError(f"htcondor: cannot remove jobs: {error}") from None


def _job_id(ad: classad2.ClassAd) -> str:
    return f"{ad['ClusterId']}.{ad['ProcId']}"
