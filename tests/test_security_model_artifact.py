"""Model files are checked before use: the sha256 recorded in the sidecar metadata must
match, and even a matching file is loaded without running pickled code. A worker given a
bad model fails with MODEL_LOAD (30), writes its report and no output."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from smartbkg_prod.exitcodes import ExitCode
from smartbkg_prod.files import sha256_file
from smartbkg_prod.filter.artifact import SHIPPED_MODEL, load_model, sidecar_path
from smartbkg_prod.filter.errors import ModelLoadError
from smartbkg_prod.plan import JobInput, plan_jobs
from smartbkg_prod.report import read_report
from smartbkg_prod.spec import Campaign
from smartbkg_prod.worker import library_exit_code


@pytest.fixture
def model_copy(tmp_path) -> Path:
    path = tmp_path / "model.pt"
    shutil.copy(SHIPPED_MODEL, path)
    shutil.copy(sidecar_path(SHIPPED_MODEL), sidecar_path(path))
    return path


class _Payload:
    """Unpickling this runs ``touch MARKER``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_payload_with_a_matching_recorded_hash_is_refused_and_never_runs(
    model_copy, tmp_path
):
    marker = tmp_path / "payload-ran"
    model_copy.write_bytes(pickle.dumps({"format": "x", "evil": _Payload(marker)}, protocol=2))
    sidecar = json.loads(sidecar_path(model_copy).read_text())
    sidecar["sha256"] = sha256_file(model_copy)  # an attacker controlling both files
    sidecar_path(model_copy).write_text(json.dumps(sidecar))
    with pytest.raises(ModelLoadError) as error:
        load_model(model_copy)
    assert library_exit_code(error.value) == ExitCode.MODEL_LOAD
    assert not marker.exists()


def test_one_flipped_byte_is_caught_by_the_recorded_hash(model_copy):
    data = bytearray(model_copy.read_bytes())
    data[len(data) // 2] ^= 0x01
    model_copy.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="does not match") as error:
        load_model(model_copy)
    assert library_exit_code(error.value) == ExitCode.MODEL_LOAD


def test_a_sidecar_without_a_hash_is_refused(model_copy):
    sidecar = json.loads(sidecar_path(model_copy).read_text())
    del sidecar["sha256"]
    sidecar_path(model_copy).write_text(json.dumps(sidecar))
    with pytest.raises(ModelLoadError, match="does not match"):
        load_model(model_copy)


@pytest.mark.slow
def test_worker_with_a_tampered_model_exits_model_load_with_a_report_and_no_output(
    model_copy, tmp_path
):
    with open(model_copy, "r+b") as handle:
        handle.seek(100)
        handle.write(b"\0\0\0\0")
    campaign = Campaign(
        name="tampered",
        process="bbbar_mixed",
        events=20,
        events_per_job=20,
        filter={"mode": "cut", "model": str(model_copy)},
    )
    output_dir = tmp_path / "out"
    job_input = JobInput(job=plan_jobs(campaign)[0], campaign=campaign, output_dir=str(output_dir))
    job_file = tmp_path / "job.json"
    job_file.write_text(job_input.model_dump_json())
    # A real worker process: run in this test process, its memory check would read the peak
    # of the whole test session (2 GB late in a full run) against the job's 2000 MB.
    result = subprocess.run(
        [sys.executable, "-m", "smartbkg_prod.cli", "worker", "--job", str(job_file)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == int(ExitCode.MODEL_LOAD), result.stderr
    report = read_report(job_input.report_file)
    assert report.error_class == "model_load" and "sha256" in report.error_message
    assert report.outputs == [] and not job_input.output_file.exists()
    assert not list(output_dir.glob(".*.tmp"))
