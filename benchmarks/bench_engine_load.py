"""Engine load benchmark (issue 19): what a campaign asks of a real Slurm controller.

A campaign of short real worker jobs (generic B Bbar, a few events each, filter off) runs
on the real single-node Slurm test cluster (``scripts/start-slurm-test-cluster.sh``, root
needed) through counting wrappers put first on ``PATH`` around ``squeue``, ``scontrol``,
``sacct``, ``sbatch`` and ``scancel`` (``tests/engine_calls.py``: each logs a line, then
execs the real command). The driver (``submit_campaign``) runs in this process with the
default Slurm policy unless ``--poll-interval`` is given. Figures:

- scheduler queries (squeue, scontrol, sacct) per minute of the campaign's wall time, and
  submissions (sbatch, scancel);
- for every job, the delay from its end (Slurm's jobcomp ``EndTime``, whole seconds, and
  the worker's own ``finished_at``) to the driver ingesting its report;
- exact accounting: the store counts every planned event, and the output files hold each
  planned event number exactly once.

Each run is stored under its ``--label`` in the results file with the command that made it:

    python benchmarks/bench_engine_load.py --jobs 40 --label default_policy_40_jobs
    python benchmarks/bench_engine_load.py --jobs 40 --poll-interval 0.2 --label every_0.2s_40_jobs
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from engine_calls import QUERY_COMMANDS, counting_wrappers, read_calls  # noqa: E402
from results_file import machine, write_results  # noqa: E402
from slurm_fixture import ClusterUnavailable, start_cluster, stop_cluster  # noqa: E402

from smartbkg_prod.backends.slurm import SlurmBackend  # noqa: E402
from smartbkg_prod.physics.rootio import read_output  # noqa: E402
from smartbkg_prod.plan import campaign_output_dir  # noqa: E402
from smartbkg_prod.spec import Campaign  # noqa: E402
from smartbkg_prod.store import Store  # noqa: E402
from smartbkg_prod.submit import CampaignRunner, submit_campaign  # noqa: E402

DEFAULT_OUT = REPO / "benchmarks" / "results" / "engine_load.json"
_END_TIME = re.compile(r"EndTime=(\S+).*ArrayJobId=(\d+) ArrayTaskId=(\d+)")


def short_campaign(jobs: int, events_per_job: int, directory: Path) -> Campaign:
    return Campaign(
        name="engineload",
        process="bbbar_generic",
        events=jobs * events_per_job,
        events_per_job=events_per_job,
        seed=19,
        filter={"mode": "off"},
        resources={"memory_mb": 400, "walltime_s": 900},
        backend={"name": "slurm"},
        outputs={"directory": str(directory / "out")},
    )


def slurm_end_times(jobcomp: Path) -> dict[str, float]:
    """``ARRAY_TASK -> EndTime`` (epoch s) from the jobcomp file (local time, 1 s steps)."""
    ends = {}
    for line in jobcomp.read_text().splitlines():
        match = _END_TIME.search(line)
        if match:
            end = datetime.fromisoformat(match.group(1)).timestamp()
            ends[f"{match.group(2)}_{match.group(3)}"] = end
    return ends


def event_coverage(campaign: Campaign, output_dir: Path) -> dict[str, int]:
    numbers = np.concatenate(
        [np.asarray(read_output(path).event_number) for path in sorted(output_dir.glob("*.root"))]
    )
    present, counts = np.unique(numbers, return_counts=True)
    planned = np.arange(campaign.events)
    return {
        "events_read_back": int(numbers.size),
        "events_lost": int(np.setdiff1d(planned, present).size),
        "events_duplicated": int((counts - 1).sum() + np.setdiff1d(present, planned).size),
    }


def run(args: argparse.Namespace, directory: Path) -> dict:
    try:
        cluster = start_cluster(directory / "cluster")
    except ClusterUnavailable as reason:
        sys.exit(str(reason))
    try:
        return measure(args, directory, cluster.conf)
    finally:
        stop_cluster(cluster.directory)


def measure(args: argparse.Namespace, directory: Path, conf: Path) -> dict:
    log = directory / "calls.log"
    wrappers = counting_wrappers(directory / "bin", log)
    os.environ["PATH"] = f"{wrappers}{os.pathsep}{os.environ['PATH']}"
    os.environ["SLURM_CONF"] = str(conf)
    campaign = short_campaign(args.jobs, args.events_per_job, directory)
    store = Store(f"sqlite:///{directory / 'jobs.db'}")

    # When the driver ingests each attempt: its _finish, timed from outside.
    ingested: dict[tuple[int, int], float] = {}
    finish = CampaignRunner._finish

    def timed_finish(runner, index, state):
        attempt = runner.inflight[index][0].attempt
        result = finish(runner, index, state)
        ingested[(index, attempt)] = time.time()
        return result

    CampaignRunner._finish = timed_finish
    options = {} if args.poll_interval is None else {"poll_interval": args.poll_interval}
    started = time.time()
    status = submit_campaign(campaign, store=store, **options)
    wall_s = time.time() - started
    CampaignRunner._finish = finish

    calls = read_calls(log)
    queries = [call for call in calls if call.command in QUERY_COMMANDS]
    by_command = {
        name: sum(call.command == name for call in calls)
        for name in sorted({c.command for c in calls})
    }
    slurm_ends = slurm_end_times(conf.parent / "log" / "jobcomp.txt")
    reports = store.reports.of_campaign(campaign.campaign_id)
    from_slurm, from_worker = [], []
    for report in reports:
        seen = ingested.get((report.job_index, report.attempt))
        if seen is None:
            continue
        from_worker.append(seen - report.finished_at)
        if report.backend_job_id in slurm_ends:
            from_slurm.append(seen - slurm_ends[report.backend_job_id])
    interval = args.poll_interval or default_interval()
    coverage = event_coverage(campaign, campaign_output_dir(campaign))
    return {
        "jobs": args.jobs,
        "events_per_job": args.events_per_job,
        "poll_interval_s": interval,
        "policy": policy_name(args.poll_interval),
        "wall_s": round(wall_s, 1),
        "scheduler_queries": len(queries),
        "scheduler_queries_per_minute": round(len(queries) / (wall_s / 60), 2),
        "calls_by_command": by_command,
        "ingestion_delay_after_slurm_end_s": _summary(from_slurm),
        "ingestion_delay_after_worker_end_s": _summary(from_worker),
        "all_ingested_within_two_intervals": bool(from_worker) and max(from_worker) <= 2 * interval,
        "accounting": {
            "complete": status.complete,
            "events_requested": campaign.events,
            "events_counted": status.events_generated,
            "failed_attempts": status.failed_attempts,
            **coverage,
        },
        # One line per call: seconds since the driver started, command, arguments.
        "call_log": [
            f"{call.time - started:8.3f} {call.command} {call.arguments}" for call in calls
        ],
    }


def default_interval() -> float:
    """The driver's default Slurm cadence (0.2 s for every engine before issue 19)."""
    return getattr(SlurmBackend, "poll_interval_s", 0.2)


def policy_name(poll_interval: float | None) -> str:
    if poll_interval is not None:
        return f"--poll-interval {poll_interval}"
    if hasattr(SlurmBackend, "poll_interval_s"):
        return "default Slurm policy"
    return "the driver before issue 19: scontrol per array every 0.2 s, cpu-count jobs in flight"


def _summary(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    array = np.asarray(values)
    return {
        "n": int(array.size),
        "median": round(float(np.median(array)), 2),
        "p95": round(float(np.percentile(array, 95)), 2),
        "max": round(float(array.max()), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--events-per-job", type=int, default=5)
    parser.add_argument("--poll-interval", type=float, default=None, help="default: the engine's")
    parser.add_argument("--label", default="default_policy_40_jobs")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="smartbkg-engine-load-") as tmp:
        Path(tmp).chmod(0o755)  # munged (its own user) reads the cluster directory below
        figures = run(args, Path(tmp))
    command = shlex.join(["python", "benchmarks/bench_engine_load.py", *sys.argv[1:]])
    if os.environ.get("PYTHONPATH", str(REPO)) != str(REPO):
        command = f"PYTHONPATH={shlex.quote(os.environ['PYTHONPATH'])} {command}"
    # The driver measured is whichever smartbkg_prod was imported (PYTHONPATH).
    package_repo = Path(sys.modules["smartbkg_prod"].__file__).resolve().parents[1]
    code = subprocess.run(
        ["git", "-C", str(package_repo), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
    ).stdout.strip() or str(package_repo)
    document = {}
    if args.out and args.out.exists():
        import json

        document = json.loads(args.out.read_text())
    document.setdefault(
        "measured_on",
        "real single-node Slurm cluster (slurm-wlm, scripts/start-slurm-test-cluster.sh), "
        "real worker jobs; calls counted by wrapper scripts on PATH (tests/engine_calls.py)",
    )
    document.setdefault("runs", {})[args.label] = {
        "command": command,
        "code": code,
        "machine": machine(),
        **figures,
    }
    write_results(document, args.out)


if __name__ == "__main__":
    main()
