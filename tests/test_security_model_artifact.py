"""Model files are checked before use: the sha256s recorded in the sidecar metadata must
match (the .pt for training, the .onnx the worker runs), and even a matching .pt is loaded
without running pickled code. A worker given a bad model fails with MODEL_LOAD (30), writes
its report and no output."""

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
from smartbkg_prod.filter.artifact import SHIPPED_MODEL, load_card, sidecar_path
from smartbkg_prod.filter.checkpoint import load_model
from smartbkg_prod.filter.errors import ModelLoadError
from smartbkg_prod.filter.runtime import open_scorer
from smartbkg_prod.plan import JobInput, plan_jobs
from smartbkg_prod.report import read_report
from smartbkg_prod.spec import Campaign
from smartbkg_prod.worker import library_exit_code


@pytest.fixture
def model_copy(tmp_path) -> Path:
    path = tmp_path / SHIPPED_MODEL.name  # the sidecar names its .onnx file
    for suffix in (".pt", ".onnx", ".json"):
        shutil.copy(SHIPPED_MODEL.with_suffix(suffix), path.with_suffix(suffix))
    return path


def edit_sidecar(path: Path, edit) -> None:
    sidecar = json.loads(sidecar_path(path).read_text())
    edit(sidecar)
    sidecar_path(path).write_text(json.dumps(sidecar))


def assert_refused(path: Path, *words: str, opening=open_scorer) -> None:
    with pytest.raises(ModelLoadError) as error:
        opening(path)
    assert library_exit_code(error.value) == ExitCode.MODEL_LOAD
    for word in words:
        assert word in str(error.value)


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


def test_the_shipped_model_opens_by_its_pt_or_onnx_name_with_the_recorded_onnx_hash(model_copy):
    recorded = json.loads(sidecar_path(model_copy).read_text())["onnx"]
    for name in (model_copy, model_copy.with_suffix(".onnx")):
        scorer = open_scorer(name, "cpu")
        assert scorer.sha256 == recorded["sha256"] == sha256_file(model_copy.with_suffix(".onnx"))
        assert scorer.card.input_names == tuple(recorded["inputs"])


def test_one_flipped_byte_of_the_onnx_file_is_caught_by_its_recorded_hash(model_copy):
    onnx_file = model_copy.with_suffix(".onnx")
    data = bytearray(onnx_file.read_bytes())
    data[len(data) // 2] ^= 0x01
    onnx_file.write_bytes(bytes(data))
    assert_refused(model_copy, "default.onnx", "does not match", opening=load_card)


def test_a_missing_onnx_file_is_refused(model_copy):
    model_copy.with_suffix(".onnx").unlink()
    assert_refused(model_copy, "default.onnx", "is missing", opening=load_card)


@pytest.mark.parametrize("content", ["torch weights", "garbage"])
def test_an_onnx_file_of_the_wrong_format_with_a_matching_hash_is_refused(model_copy, content):
    onnx_file = model_copy.with_suffix(".onnx")
    onnx_file.write_bytes(model_copy.read_bytes() if content == "torch weights" else b"\0" * 999)
    edit_sidecar(model_copy, lambda sidecar: sidecar["onnx"].update(sha256=sha256_file(onnx_file)))
    assert_refused(model_copy, "is not a model ONNX Runtime", "can load")


def test_a_sidecar_without_an_onnx_export_names_the_export_command(model_copy):
    edit_sidecar(model_copy, lambda sidecar: sidecar.pop("onnx"))
    assert_refused(model_copy, "records no ONNX export", "smartbkg-prod export-onnx")


def test_the_recorded_onnx_file_is_a_name_in_the_model_folder_never_a_path(model_copy, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(model_copy.with_suffix(".onnx"), elsewhere / "other.onnx")
    edit_sidecar(
        model_copy, lambda sidecar: sidecar["onnx"].update(file=str(elsewhere / "other.onnx"))
    )
    assert_refused(model_copy, "other.onnx", "is missing", opening=load_card)


def test_recorded_inputs_that_differ_from_the_onnx_files_are_refused(model_copy):
    edit_sidecar(model_copy, lambda sidecar: sidecar["onnx"]["inputs"].append("beam_spot"))
    assert_refused(model_copy, "beam_spot", "differ")


def test_an_input_recorded_twice_is_refused(model_copy):
    # The shipped hybrid already has event_features: a second one is no longer the same inputs.
    edit_sidecar(model_copy, lambda sidecar: sidecar["onnx"]["inputs"].append("event_features"))
    assert_refused(model_copy, "event_features", "differ")


def test_a_model_kind_this_worker_cannot_build_inputs_for_is_refused(model_copy):
    edit_sidecar(model_copy, lambda sidecar: sidecar["onnx"].update(kind="transformer"))
    assert_refused(model_copy, "'transformer'", "no input builder")


@pytest.mark.slow
def test_worker_with_a_tampered_model_exits_model_load_with_a_report_and_no_output(
    model_copy, tmp_path
):
    with open(model_copy.with_suffix(".onnx"), "r+b") as handle:  # the file the worker runs
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
