"""What runs for one attempt of one job: generate -> filter -> simulate -> skim -> write.

The worker reads a :class:`~smartbkg_prod.plan.JobInput` JSON file, writes its ROOT output
under a temporary name, validates it by reading it back, moves it into place, and writes
a :class:`~smartbkg_prod.report.JobReport`. Its exit code comes from
:class:`~smartbkg_prod.exitcodes.ExitCode`, and the same code is in the report.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import resource
import shutil
import signal
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import ValidationError

from smartbkg_prod import __version__
from smartbkg_prod.errors import WorkerError
from smartbkg_prod.exitcodes import ExitCode
from smartbkg_prod.faults import check_environment, maybe_inject
from smartbkg_prod.files import sha256_file
from smartbkg_prod.filter.errors import FilterDeviceError, FilterError, ModelLoadError
from smartbkg_prod.physics.errors import GeneratorError, PhysicsError
from smartbkg_prod.plan import (
    ENV_BACKEND_JOB_ID,
    ENV_IMAGE,
    ENV_IMAGE_DIGEST,
    ENV_SITE,
    JobInput,
    read_job_list_entry,
)
from smartbkg_prod.redact import RedactingFilter, redact
from smartbkg_prod.report import JobReport, OutputFile, Provenance
from smartbkg_prod.spec import IN_SIMULATION_STAGE, Campaign
from smartbkg_prod.stages import Simulated, SkimStage, StageError, StageJob

if TYPE_CHECKING:  # imported when used: `smartbkg-prod validate` should not pay for Pythia
    from smartbkg_prod.filter.skim_features import IdealSkim
    from smartbkg_prod.physics.detector import RecoBatch
    from smartbkg_prod.physics.events import ParticleBatch
    from smartbkg_prod.physics.skim import SkimResult

log = logging.getLogger("smartbkg_prod.worker")


# The physics and filter libraries raise their own exceptions; what each means for a job.
LIBRARY_EXIT_CODES: dict[type[Exception], ExitCode] = {
    GeneratorError: ExitCode.GENERATOR,
    ModelLoadError: ExitCode.MODEL_LOAD,
    FilterDeviceError: ExitCode.GPU,
}


def library_exit_code(error: PhysicsError | FilterError) -> ExitCode:
    """The exit code of a physics or filter library error (its most specific class wins).

    >>> library_exit_code(GeneratorError("Pythia failed"))
    <ExitCode.GENERATOR: 20>
    """
    for kind in type(error).__mro__:
        if kind in LIBRARY_EXIT_CODES:
            return LIBRARY_EXIT_CODES[kind]
    # A stage failure the libraries do not classify: the simulation chain or the filter.
    return ExitCode.SIMULATION if isinstance(error, PhysicsError) else ExitCode.MODEL_LOAD


# A PanDA pilot sets PANDAID for its payload (pilot3 control/job.py) and, when the payload
# ends, reads jobReport.json from the job's work directory (config Payload.jobreport) and
# sends it with the job's final update; the server keeps it as the job's metadata.
ENV_PANDA_ID, PILOT_JOB_REPORT = "PANDAID", "jobReport.json"


class _WalltimeExceeded(Exception):
    pass


class _Terminated(Exception):
    pass


@dataclass
class _Stages:
    """Wall time per stage; the memory check runs after each stage."""

    memory_limit_mb: int
    seconds: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def stage(self, name: str, job_index: int, attempt: int):
        start = time.perf_counter()
        maybe_inject(name, job_index, attempt)
        try:
            yield
        except MemoryError:
            raise WorkerError(ExitCode.OUT_OF_MEMORY, f"out of memory during {name}") from None
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        rss = peak_rss_mb()
        if rss > self.memory_limit_mb:
            raise WorkerError(
                ExitCode.OUT_OF_MEMORY,
                f"peak memory {rss:.0f} MB after {name} exceeds the requested {self.memory_limit_mb} MB "
                "(raise resources.memory_mb or lower events_per_job)",
            )


def peak_rss_mb() -> float:
    """Peak resident memory of this process image, in MB.

    Linux keeps ``ru_maxrss`` across fork and exec: a worker started by a driver of 2 GB
    reports 2 GB before it has allocated anything, and failed every job with OUT_OF_MEMORY
    in a long test session. ``VmHWM`` belongs to the address space, which exec replaces, so
    it counts this worker only. ``ru_maxrss`` remains where /proc is missing.
    """
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def children_usage() -> tuple[float, float]:
    """CPU seconds and peak memory (MB) of the finished commands of external stages."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0


def _versions() -> dict[str, str]:
    versions = {"smartbkg-prod": __version__, "python": sys.version.split()[0]}
    for package in ("pythia8mc", "numpy", "awkward", "uproot", "onnxruntime"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return versions


def spec_sha256(job_input: JobInput) -> str:
    blob = json.dumps(job_input.campaign.normalized(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


class _LogTail(logging.Handler):
    """Keeps the last log lines for the report."""

    def __init__(self, size: int = 20):
        super().__init__()
        self.lines: deque[str] = deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        # Reports are stored and shown on the monitor page: no credentials in them.
        self.lines.append(redact(self.format(record)))


def read_job_input(path: Path, index: int | None = None) -> JobInput:
    """The attempt to run: a job file, or entry ``index`` of a job list (JSON lines)."""
    try:
        if index is not None:
            return read_job_list_entry(path, index)
        return JobInput.model_validate_json(Path(path).read_bytes())
    except IndexError as error:
        raise WorkerError(ExitCode.INPUT, f"{path}: {error}") from None
    except FileNotFoundError:
        raise WorkerError(ExitCode.INPUT, f"{path}: job file not found") from None
    except OSError as error:
        raise WorkerError(
            ExitCode.INPUT, f"{path}: job file unreadable: {error.strerror}"
        ) from None
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise WorkerError(ExitCode.CONFIG, f"{path}: {where}: {first['msg']}") from None


def stage_workdir(job_input: JobInput) -> Path:
    """Scratch directory of one attempt's external stages, beside its output."""
    final = job_input.output_file
    return final.with_name(f".{final.name}.attempt{job_input.attempt}.stages")


def process_job(job_input: JobInput, stages: _Stages, counts: dict) -> list[OutputFile]:
    """The chain of one job. Fills ``counts`` as stages complete."""
    workdir = stage_workdir(job_input)
    try:
        return _process_job(job_input, stages, counts, workdir)
    finally:
        # Stage files are scratch: what matters is in the output and the report.
        shutil.rmtree(workdir, ignore_errors=True)


def _ideal_skim(campaign: Campaign, skim_stage: SkimStage, stage_job: StageJob) -> IdealSkim:
    """The campaign's skim stage run on the ideal-detector view of the generated events:
    where a hybrid filter model's features come from (README: the skim stage's contract
    for the filter). Its time counts in the filter stage."""
    from smartbkg_prod.filter.skim_features import IdealSkim

    def skim(particles: ParticleBatch, view: RecoBatch) -> SkimResult:
        if skim_stage.name == IN_SIMULATION_STAGE:
            raise ModelLoadError(
                f"filter model {campaign.filter.model} needs the campaign's skim run on the "
                "ideal-detector view, and skim: in_simulation has no skim stage to run; use a "
                "graph-only model (smartbkg_prod/models/soft200k.pt) or a skim stage"
            )
        result = skim_stage.skim(particles, Simulated(reco=view), stage_job)
        _check_events("skim", np.arange(result.n_events), np.arange(particles.n_events))
        return result

    return IdealSkim(campaign.simulation, skim)


def _process_job(
    job_input: JobInput, stages: _Stages, counts: dict, workdir: Path
) -> list[OutputFile]:
    # Imported here: `smartbkg-prod validate` and friends should not pay for Pythia.
    from smartbkg_prod.stages.chain import build_chain

    job, campaign, attempt = job_input.job, job_input.campaign, job_input.attempt
    chain = build_chain(campaign)
    stage_job = _stage_job(job_input, workdir)
    if campaign.filter.mode != "off" and campaign.filter.device == "cuda":
        # A GPU job on a runtime without a usable GPU (the CPU image, or a GPU image started
        # without --gpus) stops before generating; the check counts in the filter stage.
        started = time.perf_counter()
        from smartbkg_prod.filter.runtime import require_cuda

        require_cuda()
        stages.seconds["filter"] = time.perf_counter() - started
    with stages.stage("generate", job.index, attempt):
        particles = chain.generation.generate(stage_job)
        _check_events(
            "generation", particles.event_number, job.first_event + np.arange(job.n_events)
        )
        counts["events_generated"] = particles.n_events
    log.info(
        "generated %d events of %s (%s)",
        particles.n_events,
        campaign.process,
        chain.generation.name,
    )

    with stages.stage("filter", job.index, attempt):
        filtered = _apply_filter(
            job_input, particles, counts, _ideal_skim(campaign, chain.skim, stage_job)
        )
    particles = filtered.particles
    log.info(
        "filter mode %s kept %d events (%d simulated)",
        campaign.filter.mode,
        counts["events_kept"],
        particles.n_events,
    )

    with stages.stage("simulate", job.index, attempt):
        simulated = chain.simulation.simulate(particles, stage_job)
        if simulated.reco is not None:
            _check_events("simulation", simulated.reco.event_number, particles.event_number)
        counts["events_simulated"] = particles.n_events

    with stages.stage("skim", job.index, attempt):
        skim_result = chain.skim.skim(particles, simulated, stage_job)
        _check_events("skim", np.arange(skim_result.n_events), np.arange(particles.n_events))
        _count_skimmed(job_input, filtered, simulated, skim_result, counts)
    log.info("skim kept %d of %d events", counts["events_skimmed"], particles.n_events)

    with stages.stage("write", job.index, attempt):
        return [_write_output(job_input, filtered, skim_result)]


def _stage_job(job_input: JobInput, workdir: Path) -> StageJob:
    """What the generation, simulation and skim stages are told about the job."""
    job, campaign = job_input.job, job_input.campaign
    return StageJob(
        campaign=campaign.name,
        job_index=job.index,
        attempt=job_input.attempt,
        first_event=job.first_event,
        n_events=job.n_events,
        seed=job.seed,
        workdir=workdir,
        deadline=time.monotonic() + campaign.resources.walltime_s,
        memory_limit_mb=campaign.resources.memory_mb,
        events_to_skip=job.events_to_skip,
    )


@dataclass
class _Filtered:
    """The events the filter sends on to simulation, with their per-event filter columns
    (all None when the filter is off)."""

    particles: ParticleBatch  # the kept and control events, in order
    weights: np.ndarray
    scores: np.ndarray | None = None
    kept: np.ndarray | None = None  # kept by the filter (False: a control-only event)
    control: np.ndarray | None = None  # drawn into the control sample
    keep_probability: np.ndarray | None = None
    q_all: np.ndarray | None = None  # pass probability of every generated event (tune: auto)
    q_simulated: np.ndarray | None = None  # ... of the simulated ones


def _apply_filter(
    job_input: JobInput, particles: ParticleBatch, counts: dict, ideal_skim: IdealSkim
) -> _Filtered:
    job, campaign = job_input.job, job_input.campaign
    if campaign.filter.mode == "off":
        counts["events_kept"] = particles.n_events
        counts["sum_weights_kept"] = float(particles.n_events)
        return _Filtered(particles, weights=np.ones(particles.n_events))
    from smartbkg_prod.filter.apply import run_filter
    from smartbkg_prod.filter.control import control_draw

    tuning = job_input.filter_tuning
    decision = run_filter(
        particles,
        campaign.filter,
        job.seed,
        scale=tuning.scale if tuning else None,
        p_min=tuning.p_min if tuning else None,
        threads=campaign.resources.cores,
        ideal_skim=ideal_skim,
    )
    counts["filter_tuning"] = {"scale": tuning.scale, "p_min": tuning.p_min} if tuning else None
    q_all = decision.pass_probability
    counts["model_sha256"] = decision.model_sha256
    counts["gpu"] = decision.device if decision.device.startswith("cuda") else None
    counts["events_kept"] = decision.n_kept
    control = control_draw(particles.n_events, campaign.filter.control_fraction, job.seed)
    # Control events are simulated whatever the filter decided (weight 0 when it dropped
    # them): the unfiltered reference the monitor checks the filter with.
    simulated = decision.keep | control
    weights = np.asarray(decision.weights)[simulated]
    counts["sum_weights_kept"] = float(weights.sum())
    return _Filtered(
        particles.select(simulated),
        weights=weights,
        scores=np.asarray(decision.scores, dtype=np.float32)[simulated],
        kept=decision.keep[simulated],
        control=control[simulated],
        keep_probability=decision.keep_probability[simulated],
        q_all=q_all,
        q_simulated=q_all[simulated] if q_all is not None else None,
    )


def _count_skimmed(
    job_input: JobInput,
    filtered: _Filtered,
    simulated: Simulated,
    skim_result: SkimResult,
    counts: dict,
) -> None:
    """The skimmed events and their weights; with a control sample, the job's filter
    monitor (what the monitor checks the filter with)."""
    campaign = job_input.campaign
    kept, control, weights = filtered.kept, filtered.control, filtered.weights
    passed = skim_result.passed if kept is None else skim_result.passed & kept
    counts["events_skimmed"] = int(np.count_nonzero(passed))
    counts["sum_weights_skimmed"] = float(weights[passed].sum())
    counts["sum_weights_squared_skimmed"] = float(np.square(weights[passed]).sum())
    if control is None or campaign.filter.control_fraction <= 0:
        return
    from smartbkg_prod.filter.control import job_monitor, monitor_edges
    from smartbkg_prod.filter.data import event_variables
    from smartbkg_prod.filter.tune import TuneHistograms

    tune_histograms = None
    if filtered.q_simulated is not None:
        tune_histograms = TuneHistograms.of_events(
            filtered.q_all, filtered.q_simulated[control & skim_result.passed]
        )
    counts["filter_monitor"] = job_monitor(
        event_variables(filtered.particles, simulated.reco, skim_result),
        monitor_edges(campaign.skim),
        passed=skim_result.passed,
        kept=kept,
        control=control,
        weights=weights,
        keep_probability=filtered.keep_probability,
        control_fraction=campaign.filter.control_fraction,
        sample_mode=campaign.filter.mode == "sample",
        tune_histograms=tune_histograms,
    )


def _write_output(job_input: JobInput, filtered: _Filtered, skim_result: SkimResult) -> OutputFile:
    """Write the ROOT output under a temporary name, read it back, fsync, checksum, and
    move it into place."""
    from smartbkg_prod.physics.rootio import read_output, write_output

    campaign, attempt, particles = job_input.campaign, job_input.attempt, filtered.particles
    final = job_input.output_file
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.attempt{attempt}.tmp")
    # A killed earlier attempt may have left its temporary file behind.
    for stale in final.parent.glob(f".{final.name}.attempt*.tmp"):
        stale.unlink(missing_ok=True)
    try:
        write_output(
            tmp,
            particles=particles,
            weights=filtered.weights,
            scores=filtered.scores,
            skim=skim_result,
            keep_mc_particles=campaign.outputs.keep_mc_particles,
            control=filtered.control,
        )
        maybe_inject("write", job_input.job.index, attempt)
        _fsync(tmp)
        contents = read_output(tmp)
        if not np.array_equal(np.asarray(contents.event_number), particles.event_number):
            raise WorkerError(
                ExitCode.OUTPUT_VALIDATION,
                f"{tmp}: read-back event numbers differ from what was written",
            )
        checksum = sha256_file(tmp)
        os.replace(tmp, final)
    except OSError as error:
        raise WorkerError(
            ExitCode.STAGE_OUT, f"cannot write {final}: {error.strerror or error}"
        ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return OutputFile(
        path=str(final), size_bytes=final.stat().st_size, sha256=checksum, events=particles.n_events
    )


def _check_events(stage: str, event_number: np.ndarray, expected: np.ndarray) -> None:
    """A stage must return every event it was given, in order: never silently fewer."""
    if len(event_number) != len(expected) or not np.array_equal(event_number, expected):
        raise StageError(
            ExitCode.OUTPUT_VALIDATION,
            stage,
            f"returned {len(event_number)} events, expected {len(expected)} "
            f"(events {int(expected[0]) if len(expected) else '-'}.."
            f"{int(expected[-1]) if len(expected) else '-'}, every one, in order)",
        )


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def run_worker(job_file: Path, index: int | None = None) -> int:
    """Run one attempt; always returns an exit code, and writes a report when it can.

    ``index`` selects one entry of a job list instead of a single job file.
    """
    tail = _capture_log()
    clocks = _Clocks()
    try:
        check_environment()
        job_input = read_job_input(job_file, index)
    except WorkerError as error:
        # Without a valid job file there is no report location: say it and exit.
        print(f"smartbkg-prod worker: {error}", file=sys.stderr)
        return int(error.exit_code)
    stages = _Stages(memory_limit_mb=job_input.campaign.resources.memory_mb)
    counts: dict = {}
    outcome = _run_attempt(job_input, stages, counts)
    if outcome.message:
        log.error("%s", outcome.message)
    report = _report(job_input, outcome, clocks, stages, counts, tail)
    return _write_report(job_input, report)


def _capture_log() -> _LogTail:
    """Send the package's log to stderr (backends keep it in the attempt's log file) and
    keep its last lines for the report; both redacted."""
    tail = _LogTail()
    tail.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    stderr_handler = logging.StreamHandler(sys.stderr)
    stderr_handler.setFormatter(tail.formatter)
    stderr_handler.addFilter(RedactingFilter())
    package_log = logging.getLogger("smartbkg_prod")
    package_log.addHandler(tail)
    package_log.addHandler(stderr_handler)
    package_log.setLevel(logging.INFO)
    return tail


@dataclass
class _Clocks:
    """The attempt's start, for its report's wall and CPU seconds."""

    started_at: float = field(default_factory=time.time)
    cpu_start: float = field(default_factory=time.process_time)
    children_cpu_start: float = field(default_factory=lambda: children_usage()[0])


@dataclass
class _Outcome:
    """How the attempt ended: its outputs (none unless it succeeded), code and message."""

    exit_code: ExitCode
    message: str = ""
    outputs: list[OutputFile] = field(default_factory=list)


def _run_attempt(job_input: JobInput, stages: _Stages, counts: dict) -> _Outcome:
    """Run the job under its walltime alarm and a SIGTERM handler; every way it can end
    becomes an exit code and a message."""
    walltime_s = job_input.campaign.resources.walltime_s
    previous_alarm = signal.signal(signal.SIGALRM, _raise_walltime)
    previous_term = signal.signal(signal.SIGTERM, _raise_terminated)
    signal.alarm(walltime_s)
    try:
        return _Outcome(ExitCode.SUCCESS, outputs=process_job(job_input, stages, counts))
    except WorkerError as error:
        return _Outcome(error.exit_code, str(error))
    except (PhysicsError, FilterError) as error:
        return _Outcome(library_exit_code(error), str(error))
    except _WalltimeExceeded:
        return _Outcome(
            ExitCode.WALLTIME,
            f"walltime {walltime_s} s reached (raise resources.walltime_s or split the job)",
        )
    except _Terminated:
        return _Outcome(ExitCode.WALLTIME, "terminated by SIGTERM (batch system limit or operator)")
    except MemoryError:
        return _Outcome(ExitCode.OUT_OF_MEMORY, "out of memory")
    except Exception as error:  # noqa: BLE001 - the report must say what happened
        log.exception("unexpected error")
        return _Outcome(ExitCode.UNEXPECTED, f"{type(error).__name__}: {error}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous_alarm)
        signal.signal(signal.SIGTERM, previous_term)


def _report(
    job_input: JobInput,
    outcome: _Outcome,
    clocks: _Clocks,
    stages: _Stages,
    counts: dict,
    tail: _LogTail,
) -> JobReport:
    """The attempt's report. A failed attempt keeps no outputs: its events are produced by
    a later attempt."""
    campaign, job = job_input.campaign, job_input.job
    children_cpu, children_peak_mb = children_usage()
    finished_at = time.time()
    cpu_seconds = time.process_time() - clocks.cpu_start + children_cpu - clocks.children_cpu_start
    return JobReport.for_job(
        job,
        campaign.name,
        job_input.attempt,
        backend=job_input.backend,
        backend_job_id=os.environ.get(ENV_BACKEND_JOB_ID),
        site=os.environ.get(ENV_SITE, job_input.site),
        host=socket.gethostname(),
        started_at=clocks.started_at,
        finished_at=finished_at,
        wall_seconds=finished_at - clocks.started_at,
        cpu_seconds=cpu_seconds,
        stage_seconds=stages.seconds,
        events_generated=counts.get("events_generated", 0),
        events_kept=counts.get("events_kept", 0),
        events_simulated=counts.get("events_simulated", 0),
        events_skimmed=counts.get("events_skimmed", 0),
        sum_weights_kept=counts.get("sum_weights_kept", 0.0),
        sum_weights_skimmed=counts.get("sum_weights_skimmed", 0.0),
        sum_weights_squared_skimmed=counts.get("sum_weights_squared_skimmed"),
        filter_mode=campaign.filter.mode,
        filter_monitor=counts.get("filter_monitor"),
        filter_tuning=counts.get("filter_tuning"),
        peak_rss_mb=max(peak_rss_mb(), children_peak_mb),
        memory_requested_mb=campaign.resources.memory_mb,
        walltime_requested_s=campaign.resources.walltime_s,
        gpu=counts.get("gpu"),
        exit_code=int(outcome.exit_code),
        error_class=outcome.exit_code.name.lower(),
        error_message=redact(outcome.message),
        log_tail=list(tail.lines),
        outputs=outcome.outputs if outcome.exit_code == ExitCode.SUCCESS else [],
        provenance=Provenance(
            campaign_id=job.campaign_id,
            spec_sha256=spec_sha256(job_input),
            model_sha256=counts.get("model_sha256"),
            image=os.environ.get(ENV_IMAGE),
            image_digest=os.environ.get(ENV_IMAGE_DIGEST),
            versions=_versions(),
        ),
    )


def _write_report(job_input: JobInput, report: JobReport) -> int:
    """Write the report (and, under a PanDA pilot, the pilot's copy); returns the worker's
    exit code: the attempt's, or STAGE_OUT when the report cannot be written."""
    try:
        maybe_inject("report", job_input.job.index, job_input.attempt)
        report_path = job_input.report_file
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report.write(report_path)
        if os.environ.get(ENV_PANDA_ID):
            report.write(Path(PILOT_JOB_REPORT))
    except OSError as error:
        print(
            f"smartbkg-prod worker: cannot write report {job_input.report_file}: {error}",
            file=sys.stderr,
        )
        return int(ExitCode.STAGE_OUT)
    except WorkerError as error:
        return int(error.exit_code)
    return report.exit_code


def _raise_walltime(_signum, _frame) -> None:
    raise _WalltimeExceeded()


def _raise_terminated(_signum, _frame) -> None:
    raise _Terminated()
