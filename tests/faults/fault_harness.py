"""Shared pieces of the fault-injection suite: the campaign every fault runs, an exact
event-coverage check read back from the ROOT files, a content comparison with a fault-free
reference run, and a backend wrapper that misbehaves on purpose.

Every fault test runs the same campaign spec (same name, seed and events; only the output
directory differs), so its outputs must equal the session's reference outputs array for
array: identical seeds give identical content, whatever was retried.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from smartbkg_prod.backends.base import Backend, JobHandle, JobState
from smartbkg_prod.backends.slurm import parse_record
from smartbkg_prod.physics.rootio import read_output
from smartbkg_prod.spec import Campaign, dump_campaign
from smartbkg_prod.store import Store

EVENTS, EVENTS_PER_JOB = 150, 50


def fault_campaign(directory: Path, max_attempts: int = 3, **update) -> Campaign:
    """Three jobs of 50 generic B Bbar events (two in flight at once) writing under ``directory``."""
    spec = {
        "name": "faults",
        "process": "bbbar_generic",
        "events": EVENTS,
        "events_per_job": EVENTS_PER_JOB,
        "seed": 2024,
        "resources": {"memory_mb": 4000, "walltime_s": 600},
        "retry": {"max_attempts": max_attempts},
        "backend": {"max_parallel": 2},
        "outputs": {"directory": str(directory)},
        **update,
    }
    return Campaign.model_validate(spec)


def output_files(output_dir: Path) -> list[Path]:
    # Visible *.root files only: temporary files of the worker start with a dot.
    return sorted(Path(output_dir).glob("*.root"))


@dataclass
class Coverage:
    files: int
    events_read: int
    lost: int  # planned events in no file
    duplicated: int  # events present more than once, plus events outside the plan
    counted: int  # events the store counts (status.events_generated)

    @property
    def exact(self) -> bool:
        return self.lost == 0 and self.duplicated == 0


def coverage(campaign: Campaign, output_dir: Path, store: Store | None = None) -> Coverage:
    """Read every output file back and compare its event numbers with the planned ranges;
    with ``store``, the store's count of events must match the plan too."""
    files = output_files(output_dir)
    numbers = (
        np.concatenate([np.asarray(read_output(path).event_number) for path in files])
        if files
        else np.zeros(0, dtype=np.int64)
    )
    planned = np.arange(campaign.events)
    present, counts = np.unique(numbers, return_counts=True)
    lost = int(np.setdiff1d(planned, present).size)
    duplicated = int((counts - 1).sum()) + int(np.setdiff1d(present, planned).size)
    counted = (
        store.campaigns.status(campaign.campaign_id).events_generated if store else campaign.events
    )
    lost = max(lost, campaign.events - counted)
    duplicated = max(duplicated, counted - campaign.events)
    return Coverage(len(files), int(numbers.size), lost, duplicated, counted)


def assert_same_content(output_dir: Path, reference_dir: Path) -> None:
    """Every output file equals the reference run's file of the same job, array by array."""
    ours = {path.name: path for path in output_files(output_dir)}
    theirs = {path.name: path for path in output_files(reference_dir)}
    assert sorted(ours) == sorted(theirs)
    for name, path in ours.items():
        a, b = read_output(path), read_output(theirs[name])
        for column in ("event_number", "weight", "passed_skim", "best_mode", "mbc", "n_particles"):
            # NaN (no B candidate) equals NaN here.
            np.testing.assert_array_equal(
                getattr(a, column), getattr(b, column), err_msg=f"{name}: {column}"
            )
        for column in ("pdg", "px", "py", "pz", "energy", "x", "status"):
            np.testing.assert_array_equal(
                getattr(a.particles, column),
                getattr(b.particles, column),
                err_msg=f"{name}: {column}",
            )


class MisbehavingBackend(Backend):
    """Wraps a real backend. ``on_poll(real_poll, call)`` gets the real poll as a function
    (call it, or raise before reaching the engine) and the 1-based poll number; it returns
    the states the driver sees (changed, dropped, repeated). ``on_submit(handles)`` runs
    after each submission."""

    def __init__(
        self,
        inner: Backend,
        on_poll: Callable[[Callable[[], list[JobState]], int], list[JobState]] | None = None,
        on_submit: Callable[[list[JobHandle]], None] | None = None,
    ):
        self.inner = inner
        self.name = inner.name
        self.on_poll = on_poll
        self.on_submit = on_submit
        self.poll_calls = 0

    def submit(self, campaign, jobs):
        handles = self.inner.submit(campaign, jobs)
        if self.on_submit:
            self.on_submit(handles)
        return handles

    def poll(self, handles: Sequence[JobHandle]) -> list[JobState]:
        self.poll_calls += 1
        if self.on_poll is None:
            return self.inner.poll(handles)
        return self.on_poll(lambda: self.inner.poll(handles), self.poll_calls)

    def cancel(self, handles):
        return self.inner.cancel(handles)

    def adopt(self, attempts):
        return self.inner.adopt(attempts)

    def locate(self, job_input):
        return self.inner.locate(job_input)


def start_submitter(campaign: Campaign, store: Store, directory: Path) -> subprocess.Popen:
    """``smartbkg-prod submit`` of ``campaign`` as its own process (to be killed)."""
    spec = directory / f"{campaign.name}.yaml"
    spec.write_text(dump_campaign(campaign))
    return subprocess.Popen(
        [sys.executable, "-m", "smartbkg_prod.cli", "submit", str(spec), "--db", store.url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not reaped) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


_JOB_FILE = re.compile(r"\.job(\d+)\.attempt\d+\.json$")


def local_runs(output_dir: Path) -> dict[int, int]:
    """Worker runs per job as the local engine recorded them: the local backend writes one
    job file (``jobs/<job>.attemptN.json``) for each process it starts."""
    runs: dict[int, int] = {}
    for path in (Path(output_dir) / "jobs").glob("*.json"):
        match = _JOB_FILE.search(path.name)
        if match:
            runs[int(match.group(1))] = runs.get(int(match.group(1)), 0) + 1
    return runs


def slurm_runs(jobcomp: Path, job_name: str, store: Store, campaign_id: str) -> dict[int, int]:
    """Runs per job as Slurm recorded them (jobcomp/filetxt: one line per array task that
    finished; --no-requeue, so a task runs once). Tasks are matched to jobs through the
    ids the driver stored; a task of the campaign's name that matches none is an error."""
    jobs = {a.backend_job_id: a.job_index for a in store.engine.attempts(campaign_id)}
    runs: dict[int, int] = {}
    for line in Path(jobcomp).read_text().splitlines():
        record = parse_record(line)
        if record.get("Name") != job_name or not record.get("ArrayTaskId"):
            continue
        task = f"{record['ArrayJobId']}_{record['ArrayTaskId']}"
        assert task in jobs, f"Slurm ran {task} ({job_name}), which no attempt of ours names"
        runs[jobs[task]] = runs.get(jobs[task], 0) + 1
    return runs


@dataclass
class FaultRow:
    fault: str
    backend: str
    injections: int
    recovered: bool
    events_lost: int
    events_duplicated: int
    note: str = ""
    # The most runs of one job, counted from the engine's own records, and what the retry
    # policy allows (issue 24: no job runs more attempts than its policy allows).
    max_runs_per_job: int | None = None
    runs_allowed: int | None = None


class FaultTable:
    """Rows recorded by the fault tests; written as JSON and markdown when asked."""

    def __init__(self) -> None:
        self.rows: list[FaultRow] = []

    def record(
        self,
        fault: str,
        injections: int,
        recovered: bool,
        cover: Coverage,
        backend: str = "local",
        note: str = "",
        runs: dict[int, int] | None = None,
        runs_allowed: int | None = None,
    ) -> None:
        """Record one fault; ``runs`` (job index -> runs from the engine's records) must
        stay within ``runs_allowed``."""
        max_runs = max(runs.values()) if runs else None
        self.rows.append(
            FaultRow(
                fault,
                backend,
                injections,
                recovered,
                cover.lost,
                cover.duplicated,
                note,
                max_runs,
                runs_allowed,
            )
        )
        if max_runs is not None and runs_allowed is not None:
            assert max_runs <= runs_allowed, f"{fault}: runs per job {runs} > {runs_allowed}"

    def write(self, directory: Path, seconds: float) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        document = {
            "suite": "tests/faults",
            "command": "bash scripts/run-fault-suite.sh",
            "campaign": {"events": EVENTS, "events_per_job": EVENTS_PER_JOB, "jobs": 3},
            "seconds": round(seconds, 1),
            "rows": [asdict(row) for row in self.rows],
            "totals": {
                "faults": len(self.rows),
                "injections": sum(row.injections for row in self.rows),
                "recovered": sum(row.recovered for row in self.rows),
                "events_lost": sum(row.events_lost for row in self.rows),
                "events_duplicated": sum(row.events_duplicated for row in self.rows),
                "max_runs_over_allowed": sum(
                    1
                    for row in self.rows
                    if row.max_runs_per_job is not None
                    and row.runs_allowed is not None
                    and row.max_runs_per_job > row.runs_allowed
                ),
            },
        }
        (directory / "faults.json").write_text(json.dumps(document, indent=1) + "\n")
        lines = [
            "| fault | backend | injections | recovered | events lost | events duplicated "
            "| most runs of a job (engine's records) / allowed |",
            "|---|---|---:|---|---:|---:|---:|",
        ]
        for row in self.rows:
            runs = (
                "–"
                if row.max_runs_per_job is None
                else f"{row.max_runs_per_job} / {row.runs_allowed}"
            )
            lines.append(
                f"| {row.fault} | {row.backend} | {row.injections} | "
                f"{'yes' if row.recovered else 'NO'} | {row.events_lost} | {row.events_duplicated} "
                f"| {runs} |"
            )
        (directory / "faults.md").write_text("\n".join(lines) + "\n")
