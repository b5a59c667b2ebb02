"""What a worker start costs: modules imported, import time, and wall time of
``smartbkg-prod worker --help`` and of real one-job worker runs (filter off, and the
shipped filter model in cut mode with a control sample).

The checkout measured is ``--checkout`` (put first on PYTHONPATH of every subprocess), so
the same script measures main before a change and a branch after it:

    nice python benchmarks/bench_worker_start.py --checkout /work/main --label before
    nice python benchmarks/bench_worker_start.py --label after \\
        --out benchmarks/results/worker_start.json

A result file keeps one entry per label (a later run replaces its label's entry).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_file import machine

REPO = Path(__file__).resolve().parents[1]
# Packages a worker does not run: loading any of them at a worker start is waste.
NOT_FOR_THE_WORKER = (
    "sqlalchemy",
    "sklearn",
    "scipy",
    "matplotlib",
    "docker",
    "requests",
    "prometheus_client",
    "starlette",
    "uvicorn",
    "jinja2",
    "tqdm",
    "psutil",
    "sympy",
    "torch",
)


def imports(stderr: str) -> tuple[set[str], float]:
    """Top-level package names in a ``-X importtime`` log, and the summed import time (s)
    of the top-level imports (each line's cumulative time where its nesting is zero)."""
    packages, total_us = set(), 0
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _self_us, cumulative_us, name = line.removeprefix("import time:").split("|")
        packages.add(name.strip().split(".")[0])
        if not name.startswith("  "):  # one space before a top-level import, more when nested
            total_us += int(cumulative_us)
    return packages, total_us / 1e6


def run(
    command: list[str], checkout: Path, cwd: Path
) -> tuple[float, float, subprocess.CompletedProcess]:
    """Wall and CPU (user + system) seconds of one subprocess, and its result. CPU time
    is what the start costs; wall time also counts the other processes on a shared host."""
    env = {**os.environ, "PYTHONPATH": str(checkout), "PYTHONDONTWRITEBYTECODE": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done


def job_file(directory: Path, checkout: Path, filtered: bool) -> Path:
    """A real one-job campaign's job file, written by the measured checkout's own code."""
    script = f"""
import sys
from pathlib import Path
from smartbkg_prod.plan import JobInput, plan_jobs
from smartbkg_prod.spec import Campaign
filtered = {filtered!r}
campaign = Campaign(
    name="start-" + ("filtered" if filtered else "plain"),
    process="bbbar_mixed",
    events=500,
    events_per_job=500,
    filter={{"mode": "cut", "model": "default", "device": "cpu", "control_fraction": 0.1}}
    if filtered
    else {{}},
    outputs={{"directory": {str(directory)!r}}},
)
job = JobInput(job=plan_jobs(campaign)[0], campaign=campaign, output_dir={str(directory)!r})
path = Path({str(directory)!r}) / (campaign.name + ".job.json")
path.write_text(job.model_dump_json())
print(path)
"""
    _, _, done = run([sys.executable, "-c", script], checkout, directory)
    if done.returncode:
        raise SystemExit(f"cannot write a job file with {checkout}:\n{done.stderr}")
    return Path(done.stdout.strip())


def measure(checkout: Path, runs: int) -> dict:
    cli = [sys.executable, "-X", "importtime", "-m", "smartbkg_prod.cli"]
    result: dict = {}
    with tempfile.TemporaryDirectory(prefix="sbk-start-") as scratch:
        scratch_dir = Path(scratch)
        walls, cpus, import_seconds, packages = [], [], [], set()
        for _ in range(runs):
            wall, cpu, done = run([*cli, "worker", "--help"], checkout, scratch_dir)
            assert done.returncode == 0, done.stderr[-2000:]
            found, seconds = imports(done.stderr)
            walls.append(wall)
            cpus.append(cpu)
            import_seconds.append(seconds)
            packages |= found
        result["worker_help"] = {
            "cpu_seconds_median": round(statistics.median(cpus), 3),
            "wall_seconds_median": round(statistics.median(walls), 3),
            "wall_seconds_all": [round(w, 3) for w in walls],
            "import_seconds_median": round(statistics.median(import_seconds), 3),
            "modules_not_for_the_worker": sorted(packages & set(NOT_FOR_THE_WORKER)),
        }
        for filtered in (False, True):
            path = job_file(scratch_dir, checkout, filtered)
            walls, cpus, loaded, codes = [], [], set(), set()
            for _ in range(runs):
                wall, cpu, done = run([*cli, "worker", "--job", str(path)], checkout, scratch_dir)
                found, _ = imports(done.stderr)
                walls.append(wall)
                cpus.append(cpu)
                loaded |= found
                codes.add(done.returncode)
            result["worker_job_filter_cut_control" if filtered else "worker_job_filter_off"] = {
                "events": 500,
                "exit_codes": sorted(codes),
                "cpu_seconds_median": round(statistics.median(cpus), 3),
                "wall_seconds_median": round(statistics.median(walls), 3),
                "wall_seconds_all": [round(w, 3) for w in walls],
                "modules_not_for_the_worker": sorted(loaded & set(NOT_FOR_THE_WORKER)),
            }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, default=REPO)
    parser.add_argument("--label", required=True)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    revision = subprocess.run(
        ["git", "-C", str(args.checkout), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    entry = {
        "command": " ".join(["python", *sys.argv]),
        "checkout": str(args.checkout),
        "revision": revision,
        "measured_on": "real worker processes of this checkout (python -X importtime, "
        "PYTHONDONTWRITEBYTECODE=1 as in the image's read-only root), on the host, "
        "not in a container",
        "machine": machine(),
        **measure(args.checkout.resolve(), args.runs),
    }
    document = {"what": __doc__.split("\n\n")[0], "runs": {}}
    if args.out and args.out.exists():
        document = json.loads(args.out.read_text())
    document["runs"][args.label] = entry
    text = json.dumps(document, indent=1)
    print(json.dumps(entry, indent=1))
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
