"""Dry-run rendering of a 100,000-job campaign for each grid engine.

For each of slurm, htcondor and panda, runs the command a user runs,

    smartbkg-prod submit SPEC --backend NAME --dry-run DIR

in a fresh process (interpreter start, imports, spec validation, planning 100k jobs and
writing the native files), and times it; then times plan + render in-process
(:func:`smartbkg_prod.submit.render_campaign`) to separate start-up from the work.

    nice python benchmarks/bench_render.py --out benchmarks/results/render.json

Target (issue 5): < 10 s for each engine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from results_file import machine, write_results

from smartbkg_prod.spec import load_campaign
from smartbkg_prod.submit import render_campaign

TARGET_S = 10.0
ENGINES = ("slurm", "htcondor", "panda")
N_JOBS = 100_000
EVENTS_PER_JOB = 100


def spec_document(output_dir: Path) -> dict:
    return {
        "name": "render-bench",
        "process": "bbbar_generic",
        "events": N_JOBS * EVENTS_PER_JOB,
        "events_per_job": EVENTS_PER_JOB,
        "resources": {"cores": 1, "memory_mb": 2000, "walltime_s": 3600},
        "container": {"image": "registry.example/smartbkg-worker:1", "runtime": "docker"},
        "backend": {"max_parallel": 500, "sites": {"excluded": ["SITE_X"]}},
        "outputs": {"directory": str(output_dir)},
    }


def directory_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def bench_engine(engine: str, spec: Path, workdir: Path) -> dict:
    cli_dir = workdir / f"cli-{engine}"
    started = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "smartbkg_prod.cli",
            "submit",
            str(spec),
            "--backend",
            engine,
            "--dry-run",
            str(cli_dir),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    cli_seconds = time.perf_counter() - started
    campaign = load_campaign(spec)
    library_dir = workdir / f"lib-{engine}"
    started = time.perf_counter()
    files = render_campaign(campaign, library_dir, backend=engine)
    library_seconds = time.perf_counter() - started
    return {
        "engine": engine,
        "jobs": campaign.n_jobs,
        "cli_seconds": round(cli_seconds, 3),
        "plan_and_render_seconds": round(library_seconds, 3),
        "files_written": sorted(path.name for path in files),
        "files_listed_by_cli": len(result.stdout.splitlines()),
        "bytes_written": directory_size(library_dir),
        "target_seconds": TARGET_S,
        "meets_target": cli_seconds < TARGET_S,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="write results JSON here")
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-render-") as tmp:
        workdir = Path(tmp)
        spec = workdir / "campaign.yaml"
        spec.write_text(yaml.safe_dump(spec_document(workdir / "out")))
        results = [bench_engine(engine, spec, workdir) for engine in args.engines]
    document = {
        "benchmark": "plan + --dry-run render of a 100,000-job campaign",
        "command": "smartbkg-prod submit SPEC --backend NAME --dry-run DIR",
        "machine": machine(),
        "results": results,
    }
    write_results(document, args.out)


if __name__ == "__main__":
    main()
