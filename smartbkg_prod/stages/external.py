"""Stages that run a command: a collaboration's simulation chain in its own container.

The worker writes what the stage needs to the stage's scratch directory (generator-level
events as HepMC3 for a simulation, the ``reco`` tree as ROOT for a skim), fills the spec's
command template (``{input}``, ``{output}``, ``{seed}``, ``{config}``, ...; see
:data:`smartbkg_prod.spec.COMMAND_PLACEHOLDERS`), runs it without a shell in its own
process group, and reads the output file back (layout: :mod:`smartbkg_prod.physics.recoio`).

Limits and outcomes, in the worker's exit-code taxonomy:

* timeout (``timeout_s``, never past the job's walltime): the process group gets SIGTERM,
  then SIGKILL after :data:`KILL_GRACE_S`: ``WALLTIME``;
* peak memory (of the command and the children it waited for) above the job's
  ``resources.memory_mb``, or SIGKILL near it (the kernel's OOM killer): ``OUT_OF_MEMORY``;
* non-zero exit, other signals, a program that cannot be started: ``SIMULATION``;
* no output, a damaged file, missing trees or branches, another number or order of events:
  ``OUTPUT_VALIDATION``, naming the stage. Nothing is ever accepted half-read.

The last lines of the command's stderr (redacted) go into the error and the log tail of
the job report.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from smartbkg_prod.exitcodes import ExitCode
from smartbkg_prod.redact import redact
from smartbkg_prod.spec import Campaign, StageConfig
from smartbkg_prod.stages import Simulated, SimulationStage, SkimStage, StageError, StageJob

log = logging.getLogger("smartbkg_prod.stages")

KILL_GRACE_S = 5.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h
POLL_S = 0.02
STDERR_TAIL_LINES = 20
# A SIGKILL with the peak memory this close to the limit is the kernel's OOM killer.
OOM_KILL_FRACTION = 0.9


@dataclass(frozen=True)
class CommandRun:
    """A finished command: wall seconds, CPU seconds (user + system) and peak memory."""

    seconds: float
    cpu_seconds: float
    peak_rss_mb: float


def stderr_tail(path: Path, lines: int = STDERR_TAIL_LINES) -> list[str]:
    """The last ``lines`` non-empty lines of a stderr file, redacted."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return [redact(line.rstrip()) for line in text.splitlines() if line.strip()][-lines:]


def _die_with_the_worker() -> Callable[[], None] | None:
    """A pre-exec hook that makes the kernel SIGKILL the command when the worker dies
    (``prctl(PR_SET_PDEATHSIG)``, Linux): the command runs in its own session, which a
    backend that kills the worker's process group would not reach. Resolved here, in the
    parent, so the forked child calls into libc without loading anything."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

    def hook() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return hook


_PREEXEC = _die_with_the_worker()


def _terminate(pid: int) -> tuple[int, object]:
    """SIGTERM the process group, SIGKILL after the grace time; reap the leader."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    end = time.monotonic() + KILL_GRACE_S
    while time.monotonic() < end:
        reaped, status, usage = os.wait4(pid, os.WNOHANG)
        if reaped:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)  # children left behind
            return status, usage
        time.sleep(POLL_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    _, status, usage = os.wait4(pid, 0)
    return status, usage


def run_command(
    stage: str,
    argv: list[str],
    *,
    workdir: Path,
    timeout_s: float | None,
    memory_limit_mb: int | None = None,
) -> CommandRun:
    """Run ``argv`` for ``stage``; raise :class:`StageError` unless it exits 0 in time."""
    workdir.mkdir(parents=True, exist_ok=True)
    stderr_path = workdir / f"{stage}.stderr"
    start = time.monotonic()
    with open(workdir / f"{stage}.stdout", "wb") as out, open(stderr_path, "wb") as err:
        try:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                preexec_fn=_PREEXEC,  # noqa: PLW1509 - libc's prctl only, resolved beforehand
            )
        except OSError as error:
            raise StageError(
                ExitCode.SIMULATION,
                stage,
                f"cannot start {argv[0]!r}: {error.strerror or error} (check the command)",
            ) from None
    reaped = False
    try:
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                reaped = True
                break
            if timeout_s is not None and time.monotonic() - start > timeout_s:
                status, usage = _terminate(process.pid)
                reaped = True
                raise StageError(
                    ExitCode.WALLTIME,
                    stage,
                    f"command ran past its timeout of {timeout_s:.0f} s and was killed "
                    f"(raise stages.{stage}.timeout_s or resources.walltime_s)"
                    + _tail_note(stderr_path),
                )
            time.sleep(POLL_S)
    finally:
        if not reaped:  # the worker's own walltime or a SIGTERM interrupted the wait
            _terminate(process.pid)
        process.returncode = 0  # reaped here; keep Popen from waiting for it again
    code = os.waitstatus_to_exitcode(status)
    peak_mb = usage.ru_maxrss / 1024.0
    run = CommandRun(time.monotonic() - start, usage.ru_utime + usage.ru_stime, peak_mb)
    over_memory = memory_limit_mb is not None and peak_mb > memory_limit_mb
    if (
        code == -signal.SIGKILL
        and memory_limit_mb
        and peak_mb >= OOM_KILL_FRACTION * memory_limit_mb
    ):
        over_memory = True
    if over_memory:
        raise StageError(
            ExitCode.OUT_OF_MEMORY,
            stage,
            f"command used {peak_mb:.0f} MB, the job requested {memory_limit_mb} MB "
            "(raise resources.memory_mb or lower events_per_job)" + _tail_note(stderr_path),
        )
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else -code
        raise StageError(
            ExitCode.SIMULATION, stage, f"command killed by signal {name}" + _tail_note(stderr_path)
        )
    if code > 0:
        raise StageError(
            ExitCode.SIMULATION, stage, f"command exited with code {code}" + _tail_note(stderr_path)
        )
    return run


def _tail_note(stderr_path: Path) -> str:
    """The end of a failed command's stderr: its last lines go to the log (and so to the
    report's log tail), the last three into the error message."""
    tail = stderr_tail(stderr_path)
    for line in tail:
        log.warning("%s: %s", stderr_path.name, line)
    return f"; stderr ends: {' | '.join(tail[-3:])}" if tail else "; stderr was empty"


class _CommandStage:
    """What external simulation and skim stages share: the template, the limits, the
    config file and the read-back."""

    name = "external"

    def __init__(self, config: StageConfig, campaign: Campaign):
        self.command = list(config.command or [])
        self.timeout_s = config.timeout_s
        self.campaign = campaign

    def _run(self, stage: str, job: StageJob, input_path: Path, n_events: int) -> Path:
        workdir = job.workdir
        output_path = workdir / f"{stage}.output.root"
        output_path.unlink(missing_ok=True)
        config_path = workdir / "config.json"
        config_path.write_text(
            json.dumps(
                {
                    "campaign": self.campaign.name,
                    "process": self.campaign.process,
                    "simulation": self.campaign.simulation.model_dump(mode="json"),
                    "skim": self.campaign.skim.model_dump(mode="json"),
                },
                indent=1,
            )
        )
        values = {
            "input": str(input_path),
            "output": str(output_path),
            "config": str(config_path),
            "seed": job.seed,
            "first_event": job.first_event,
            "n_events": n_events,
            "job_index": job.job_index,
            "attempt": job.attempt,
            "workdir": str(workdir),
        }
        argv = [part.format_map(values) for part in self.command]
        timeout = self.timeout_s
        if job.deadline is not None:
            left = max(job.deadline - time.monotonic(), 1.0)
            timeout = left if timeout is None else min(timeout, left)
        run_command(
            stage, argv, workdir=workdir, timeout_s=timeout, memory_limit_mb=job.memory_limit_mb
        )
        return output_path


def _validation_error(stage: str, error: Exception) -> StageError:
    return StageError(ExitCode.OUTPUT_VALIDATION, stage, str(error))


class ExternalSimulation(_CommandStage, SimulationStage):
    """A simulation (+ reconstruction, + skim) chain run as a command on a HepMC3 file."""

    def __init__(
        self, config: StageConfig, campaign: Campaign, *, need_reco: bool, need_skim: bool
    ):
        super().__init__(config, campaign)
        self.need_reco, self.need_skim = need_reco, need_skim

    def simulate(self, particles, job: StageJob) -> Simulated:
        from smartbkg_prod.physics.hepmc import HepMCError, write_hepmc3
        from smartbkg_prod.physics.recoio import StageFileError, empty_reco, read_stage_output
        from smartbkg_prod.physics.skim import empty_skim_result

        if particles.n_events == 0:  # nothing to simulate: do not start a chain for it
            return Simulated(empty_reco(), empty_skim_result(particles.event_number))
        job.workdir.mkdir(parents=True, exist_ok=True)
        input_path = job.workdir / "simulation.input.hepmc3"
        try:
            write_hepmc3(input_path, particles)
        except HepMCError as error:
            raise StageError(
                ExitCode.SIMULATION, "simulation", f"cannot write its input: {error}"
            ) from None
        output_path = self._run("simulation", job, input_path, particles.n_events)
        try:
            reco, skim = read_stage_output(
                output_path,
                particles.event_number,
                need_reco=self.need_reco,
                need_skim=self.need_skim,
            )
        except StageFileError as error:
            raise _validation_error("simulation", error) from None
        return Simulated(reco, skim)


class ExternalSkim(_CommandStage, SkimStage):
    """A skim run as a command on the ``reco`` tree of a ROOT file."""

    def skim(self, particles, simulated: Simulated, job: StageJob):
        from smartbkg_prod.physics.recoio import (
            StageFileError,
            read_stage_output,
            write_stage_output,
        )
        from smartbkg_prod.physics.skim import empty_skim_result

        if particles.n_events == 0:
            return empty_skim_result(particles.event_number)
        reco = simulated.require_reco("the external skim")
        job.workdir.mkdir(parents=True, exist_ok=True)
        input_path = job.workdir / "skim.input.root"
        write_stage_output(input_path, particles.event_number, reco=reco)
        output_path = self._run("skim", job, input_path, particles.n_events)
        try:
            _, result = read_stage_output(
                output_path, particles.event_number, need_reco=False, need_skim=True
            )
        except StageFileError as error:
            raise _validation_error("skim", error) from None
        return result
