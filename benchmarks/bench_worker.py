"""Per-stage cost of the worker's physics chain and the skim retention per process.

Stages: generation + conversion to ParticleBatch, fast detector simulation, hadronic
B-tag skim, ROOT write. Each process runs ``--events`` events in chunks (as a job would),
single-threaded; the retention carries its binomial error sqrt(r(1-r)/N).

    nice python benchmarks/bench_worker.py --events 20000 --out benchmarks/results/worker.json

``--worker-trees A B`` instead runs whole worker jobs (``smartbkg-prod worker``, built-in
stages) with the code of each source tree in turn, interleaved, so two commits are
compared in one session under the same machine load:

    python benchmarks/bench_worker.py --worker-trees /tmp/previous . --worker-events 5000 \
        --repeats 6 --out benchmarks/results/worker_stages_before_after.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
from results_file import machine, write_results

from smartbkg_prod.physics.config import PROCESSES, SimulationConfig, SkimConfig
from smartbkg_prod.physics.detector import simulate
from smartbkg_prod.physics.generate import EventGenerator
from smartbkg_prod.physics.rootio import write_output
from smartbkg_prod.physics.skim import MODE_NAMES, skim

STAGES = ("generation", "detector", "skim", "root_write")


class Stopwatch:
    """Accumulates wall-clock and process CPU time per stage. CPU time is the per-core cost
    even when other jobs share the machine; wall time includes their contention."""

    def __init__(self, wall: dict[str, float], cpu: dict[str, float]):
        self.wall, self.cpu = wall, cpu
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def lap(self, stage: str) -> None:
        now_wall, now_cpu = time.perf_counter(), time.process_time()
        self.wall[stage] += now_wall - self._wall
        self.cpu[stage] += now_cpu - self._cpu
        self._wall, self._cpu = now_wall, now_cpu


def run_process(process: str, n_events: int, chunk: int, seed: int, workdir: Path) -> dict:
    sim_config, skim_config = SimulationConfig(), SkimConfig()
    wall = dict.fromkeys(STAGES, 0.0)
    cpu = dict.fromkeys(STAGES, 0.0)
    start = time.perf_counter()
    generator = EventGenerator(process, seed)
    init_seconds = time.perf_counter() - start
    passed = 0
    particles_per_event: list[np.ndarray] = []
    modes = np.zeros(len(MODE_NAMES), dtype=np.int64)
    for first in range(0, n_events, chunk):
        n = min(chunk, n_events - first)
        clock = Stopwatch(wall, cpu)
        particles = generator.generate(n, first_event=first)
        clock.lap("generation")
        reco = simulate(particles, sim_config, seed + first)
        clock.lap("detector")
        result = skim(reco, skim_config)
        clock.lap("skim")
        write_output(
            workdir / f"{process}_{first}.root",
            particles=particles,
            weights=np.ones(n),
            scores=None,
            skim=result,
        )
        clock.lap("root_write")
        passed += int(result.passed.sum())
        particles_per_event.append(particles.counts())
        modes += np.bincount(result.best_mode[result.passed], minlength=len(MODE_NAMES))
    counts = np.concatenate(particles_per_event)
    retention = passed / n_events
    return {
        "events": n_events,
        "generator_init_s": round(init_seconds, 3),
        "stages": {
            stage: {
                "events_per_s_cpu": round(n_events / cpu[stage], 1),
                "us_per_event_cpu": round(1e6 * cpu[stage] / n_events, 2),
                "events_per_s_wall": round(n_events / wall[stage], 1),
                "us_per_event_wall": round(1e6 * wall[stage] / n_events, 2),
            }
            for stage in STAGES
        },
        "total_us_per_event_cpu": round(1e6 * sum(cpu.values()) / n_events, 2),
        "total_us_per_event_wall": round(1e6 * sum(wall.values()) / n_events, 2),
        "particles_per_event": {"mean": round(float(counts.mean()), 2), "max": int(counts.max())},
        "retention": round(retention, 5),
        "retention_error": round(float(np.sqrt(retention * (1 - retention) / n_events)), 5),
        "passed": passed,
        "best_mode_counts": {MODE_NAMES[m]: int(c) for m, c in enumerate(modes) if c},
    }


def worker_job(tree: Path, process: str, n_events: int, seed: int, workdir: Path) -> dict:
    """One job of the built-in chain through ``smartbkg-prod worker`` with ``tree``'s code;
    returns its report's wall and stage seconds (Python start-up excluded)."""
    from smartbkg_prod.plan import plan_jobs
    from smartbkg_prod.spec import Campaign

    campaign = Campaign(
        name="bench-worker", process=process, events=n_events, events_per_job=n_events, seed=seed
    )
    output_dir = workdir / tree.name
    # The campaign as plain data: the same job file for an older tree's models.
    job_file = workdir / "job.json"
    job_file.write_text(
        json.dumps(
            {
                "job": plan_jobs(campaign)[0].model_dump(),
                "campaign": campaign.normalized(),
                "output_dir": str(output_dir),
            }
        )
    )
    environment = {**os.environ, "PYTHONPATH": str(tree.resolve())}
    subprocess.run(
        [sys.executable, "-m", "smartbkg_prod.cli", "worker", "--job", str(job_file)],
        env=environment,
        check=True,
        capture_output=True,
    )
    [report_path] = output_dir.glob("*.report.json")
    report = json.loads(report_path.read_text())
    for path in output_dir.iterdir():
        path.unlink()
    return {
        "wall_seconds": report["wall_seconds"],
        "cpu_seconds": report["cpu_seconds"],
        "stage_seconds": report["stage_seconds"],
    }


def compare_worker_trees(
    trees: list[Path], process: str, n_events: int, repeats: int, seed: int
) -> dict:
    """Interleaved worker jobs per tree: A B A B ... (same events, same seed)."""
    runs: dict[str, list[dict]] = {str(tree): [] for tree in trees}
    with tempfile.TemporaryDirectory() as workdir:
        for repeat in range(repeats):
            for tree in trees if repeat % 2 == 0 else trees[::-1]:
                runs[str(tree)].append(worker_job(tree, process, n_events, seed, Path(workdir)))
                print(f"{tree}: {n_events / runs[str(tree)][-1]['wall_seconds']:.0f} events/s")
    summary = {}
    for tree, results in runs.items():
        rates = [n_events / result["wall_seconds"] for result in results]
        summary[tree] = {
            "events_per_s_median": round(statistics.median(rates), 1),
            "events_per_s_min": round(min(rates), 1),
            "events_per_s_max": round(max(rates), 1),
            "events_per_s_stdev": round(statistics.stdev(rates), 1) if len(rates) > 1 else None,
            # CPU time is the per-core cost, far less sensitive to other jobs on the machine.
            "events_per_cpu_s_median": round(
                statistics.median(n_events / r["cpu_seconds"] for r in results), 1
            ),
            "events_per_cpu_s_min": round(min(n_events / r["cpu_seconds"] for r in results), 1),
            "events_per_cpu_s_max": round(max(n_events / r["cpu_seconds"] for r in results), 1),
            "stage_seconds_median": {
                stage: round(statistics.median(r["stage_seconds"][stage] for r in results), 4)
                for stage in results[0]["stage_seconds"]
            },
            "runs": len(results),
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per process")
    parser.add_argument(
        "--chunk", type=int, default=5_000, help="events per generate/skim call (a job's batch)"
    )
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--processes", nargs="+", default=list(PROCESSES), choices=PROCESSES)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/worker.json"))
    parser.add_argument(
        "--worker-trees",
        nargs="+",
        type=Path,
        default=None,
        help="source trees (repository roots) whose whole worker is timed, interleaved",
    )
    parser.add_argument("--worker-events", type=int, default=5_000, help="events per worker job")
    parser.add_argument("--repeats", type=int, default=6, help="worker jobs per tree")
    args = parser.parse_args()

    if args.worker_trees:
        process = args.processes[0] if len(args.processes) == 1 else "bbbar_generic"
        report = {
            "benchmark": "bench_worker --worker-trees",
            "command": "python benchmarks/bench_worker.py --worker-trees "
            + " ".join(str(tree) for tree in args.worker_trees)
            + f" --worker-events {args.worker_events} --repeats {args.repeats}",
            "what": f"whole `smartbkg-prod worker` jobs of {args.worker_events} {process} events, "
            "built-in stages, filter off; events / report wall_seconds and cpu_seconds (start-up "
            "excluded)",
            "trees": compare_worker_trees(
                args.worker_trees, process, args.worker_events, args.repeats, args.seed
            ),
            "machine": machine(),
        }
        write_results(report, args.out)
        return

    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        for process in args.processes:
            results[process] = run_process(
                process, args.events, args.chunk, args.seed, Path(workdir)
            )
            stages = results[process]["stages"]
            print(
                f"{process:15s} "
                + " ".join(f"{stage}={stages[stage]['us_per_event_cpu']:.1f}us" for stage in STAGES)
                + f" retention={results[process]['retention']:.4f}+-{results[process]['retention_error']:.4f}"
            )
    report = {
        "benchmark": "bench_worker",
        "command": f"python benchmarks/bench_worker.py --events {args.events} --chunk {args.chunk}",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "note": "single-threaded; *_cpu = process CPU time (per-core cost), *_wall includes "
            "contention from other jobs on this shared machine",
        },
        "versions": {pkg: version(pkg) for pkg in ("pythia8mc", "numpy", "awkward", "uproot")},
        "configs": {
            "simulation": SimulationConfig().model_dump(),
            "skim": SkimConfig().model_dump(),
        },
        "processes": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
