"""Cold filter cost in real jobs: the ``filter`` stage of each report's ``stage_seconds``
(runtime import, model check, session, input building and scoring) per event, in fresh
worker processes, next to the ``generate`` stage of the same job.

``jobs``: one-job campaigns of 1k, 10k and 100k events (the shipped model in sample mode
with a control sample, as ``job_specs/demo_sample.yaml``; ``resources.cores: 1``), each run
by every ``--run LABEL=PYTHON[:CHECKOUT]`` in turn (a checkout goes first on PYTHONPATH;
none: the package installed for PYTHON), so two versions are measured side by side:

    nice python benchmarks/bench_filter_cold.py jobs --run onnxruntime=python3:. \\
        --run torch=python3:/path/to/checkout-before --out benchmarks/results/filter_cold.json

``demo``: ``smartbkg-prod submit job_specs/demo_sample.yaml`` with PYTHON (a fresh core +
[submit] install, say) in a scratch folder, and the median filter/generate stage ratio of
its reports:

    nice python benchmarks/bench_filter_cold.py demo --run core-venv=/tmp/venv-core/bin/python \\
        --out benchmarks/results/filter_cold.json

A result file keeps one entry per command and label (a later run replaces its entry).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from results_file import machine

from smartbkg_prod.plan import JobInput, campaign_output_dir, plan_jobs
from smartbkg_prod.report import JobReport, read_report
from smartbkg_prod.spec import Campaign, load_campaign

REPO = Path(__file__).resolve().parents[1]
DEMO_SPEC = REPO / "job_specs" / "demo_sample.yaml"
SIZES = (1_000, 10_000, 100_000)


def parse_run(text: str) -> tuple[str, str, str | None]:
    label, _, target = text.partition("=")
    python, _, checkout = target.partition(":")
    if not label or not python:
        raise SystemExit(f"--run {text!r}: expected LABEL=PYTHON[:CHECKOUT]")
    return label, python, str(Path(checkout).resolve()) if checkout else None


def environment(checkout: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if checkout:
        env["PYTHONPATH"] = checkout
    return {**env, "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}


def stage_figures(report: JobReport) -> dict[str, float]:
    seconds = report.stage_seconds
    return {
        "events": report.n_events,
        "filter_seconds": round(seconds["filter"], 4),
        "generate_seconds": round(seconds["generate"], 4),
        "t_nn_ms_per_event": round(1e3 * seconds["filter"] / report.n_events, 4),
        "filter_over_generate": round(seconds["filter"] / seconds["generate"], 3),
    }


def job_file(directory: Path, events: int) -> Path:
    demo = load_campaign(DEMO_SPEC)
    campaign = Campaign(
        name=f"cold-{events}",
        process=demo.process,
        events=events,
        events_per_job=events,
        seed=demo.seed,
        filter=demo.filter.model_dump(),
        resources={"cores": 1},
        outputs={"directory": str(directory)},
    )
    job = JobInput(job=plan_jobs(campaign)[0], campaign=campaign, output_dir=str(directory))
    path = directory / f"{campaign.name}.job.json"
    path.write_text(job.model_dump_json())
    return path


def measure_jobs(runs: list[tuple[str, str, str | None]], repeats: int) -> dict:
    results: dict = {label: {} for label, _, _ in runs}
    with tempfile.TemporaryDirectory(prefix="sbk-cold-") as scratch:
        for events in SIZES:
            path = job_file(Path(scratch), events)
            job = JobInput.model_validate_json(path.read_text())
            for _ in range(repeats if events < SIZES[-1] else 1):
                for label, python, checkout in runs:  # interleaved: the same machine load
                    done = subprocess.run(
                        [python, "-m", "smartbkg_prod.cli", "worker", "--job", str(path)],
                        capture_output=True,
                        text=True,
                        env=environment(checkout),
                        cwd=scratch,
                    )
                    if done.returncode:
                        raise SystemExit(f"{label}: worker failed\n{done.stderr[-3000:]}")
                    figures = stage_figures(read_report(job.report_file))
                    results[label].setdefault(str(events), []).append(figures)
                    job.report_file.unlink()
                    job.output_file.unlink(missing_ok=True)
    summary = {}
    for label, by_size in results.items():
        summary[label] = {
            size: {
                "runs": entries,
                "t_nn_ms_per_event_median": statistics.median(
                    e["t_nn_ms_per_event"] for e in entries
                ),
                "filter_over_generate_median": statistics.median(
                    e["filter_over_generate"] for e in entries
                ),
            }
            for size, entries in by_size.items()
        }
    return summary


def torch_installed(python: str, checkout: str | None) -> bool:
    probe = "import importlib.util; print(importlib.util.find_spec('torch') is not None)"
    done = subprocess.run(
        [python, "-c", probe], capture_output=True, text=True, env=environment(checkout)
    )
    return done.stdout.strip() == "True"


def measure_demo(runs: list[tuple[str, str, str | None]]) -> dict:
    summary = {}
    for label, python, checkout in runs:
        with tempfile.TemporaryDirectory(prefix="sbk-demo-") as scratch:
            spec = Path(scratch) / DEMO_SPEC.name
            shutil.copy(DEMO_SPEC, spec)
            done = subprocess.run(
                [python, "-m", "smartbkg_prod.cli", "submit", str(spec)],
                capture_output=True,
                text=True,
                env={**environment(checkout), "SMARTBKG_DB": f"sqlite:///{scratch}/jobs.db"},
                cwd=scratch,
            )
            if done.returncode:
                raise SystemExit(f"{label}: submit failed\n{done.stderr[-3000:]}")
            output = campaign_output_dir(load_campaign(spec), base=scratch)
            reports = [read_report(path) for path in sorted(output.glob("*.report.json"))]
            figures = [stage_figures(report) for report in reports if report.exit_code == 0]
            summary[label] = {
                "spec": "job_specs/demo_sample.yaml",
                "jobs": len(reports),
                "jobs_succeeded": len(figures),
                "torch_installed": torch_installed(python, checkout),
                "versions": reports[0].provenance.versions,
                "per_job": figures,
                "filter_over_generate_median": statistics.median(
                    f["filter_over_generate"] for f in figures
                ),
                "t_nn_ms_per_event_median": statistics.median(
                    f["t_nn_ms_per_event"] for f in figures
                ),
                "target_filter_over_generate": 1.0,
            }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["jobs", "demo"])
    parser.add_argument("--run", action="append", required=True, help="LABEL=PYTHON[:CHECKOUT]")
    parser.add_argument("--repeats", type=int, default=3, help="jobs: runs of the 1k and 10k jobs")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    runs = [parse_run(text) for text in args.run]
    figures = measure_jobs(runs, args.repeats) if args.what == "jobs" else measure_demo(runs)
    entry = {
        "command": " ".join(["python", *sys.argv]),
        "measured_on": "real worker processes on the host (not in a container), each job a "
        "fresh process: cold",
        "runs": {
            label: {"python": python, "checkout": checkout} for label, python, checkout in runs
        },
        "machine": machine(),
        "figures": figures,
    }
    document = {"what": __doc__.split("\n\n")[0], "jobs": None, "demo": None}
    if args.out and args.out.exists():
        document = json.loads(args.out.read_text())
    document[args.what] = entry
    print(json.dumps(entry, indent=1))
    if args.out:
        args.out.write_text(json.dumps(document, indent=1) + "\n")


if __name__ == "__main__":
    main()
