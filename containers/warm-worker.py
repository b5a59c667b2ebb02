"""Run one real worker job in the image being built and list the module files it imported.

The CPU Dockerfile byte-compiles only these (the root file system is read-only at run
time, so anything else would be compiled in memory at each start, and compiling all of
site-packages adds ~250 MB of byte code the worker never reads). The job exercises the
whole chain: Pythia generation, the shipped filter model in cut mode with a control
sample, simulation, skim, ROOT write and read-back, the report.

    python warm-worker.py MODULE_LIST_FILE
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import smartbkg_prod.cli  # noqa: F401 - the entry point every container start imports
from smartbkg_prod.plan import JobInput, plan_jobs
from smartbkg_prod.spec import Campaign
from smartbkg_prod.worker import run_worker

with tempfile.TemporaryDirectory(prefix="warm-worker-") as scratch:
    campaign = Campaign(
        name="warm-worker",
        process="bbbar_mixed",
        events=200,
        events_per_job=200,
        filter={"mode": "cut", "model": "default", "device": "cpu", "control_fraction": 0.1},
        outputs={"directory": scratch},
    )
    job_input = JobInput(job=plan_jobs(campaign)[0], campaign=campaign, output_dir=scratch)
    job_file = Path(scratch) / "job.json"
    job_file.write_text(job_input.model_dump_json())
    exit_code = run_worker(job_file)
    if exit_code:
        sys.exit(f"warm-worker: the worker job failed with exit code {exit_code}")

files = {getattr(module, "__file__", None) for module in list(sys.modules.values())}
Path(sys.argv[1]).write_text(
    "\n".join(sorted(name for name in files if name and name.endswith(".py"))) + "\n"
)
