"""run_filter: decisions, determinism, and clear MODEL_LOAD / GPU errors for bad models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from smartbkg_prod.exitcodes import ExitCode
from smartbkg_prod.files import sha256_file
from smartbkg_prod.filter.apply import run_filter
from smartbkg_prod.filter.artifact import sidecar_path
from smartbkg_prod.filter.checkpoint import load_model, save_model
from smartbkg_prod.filter.encoding import FEATURE_COLUMNS, GraphEncoding
from smartbkg_prod.filter.errors import FilterDeviceError, ModelLoadError
from smartbkg_prod.filter.model import FilterNet
from smartbkg_prod.filter.runtime import open_scorer
from smartbkg_prod.filter.sampling import SamplingCalibration
from smartbkg_prod.physics.events import ParticleBatch, offsets_from_counts
from smartbkg_prod.spec import FilterConfig
from smartbkg_prod.worker import library_exit_code


def random_events(n_events: int, seed: int, pdg_codes=(211, -211, 22, 111, 321)) -> ParticleBatch:
    """Random decay chains: particle i's mother is a random earlier particle of its event."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 30, n_events)
    offsets = offsets_from_counts(counts)
    n = int(offsets[-1])
    local = np.arange(n) - np.repeat(offsets[:-1], counts)
    mother = np.where(local > 0, (rng.random(n) * np.maximum(local, 1)).astype(np.int32), -1)
    return ParticleBatch(
        event_number=np.arange(n_events, dtype=np.int64),
        offsets=offsets,
        pdg=rng.choice(np.array(pdg_codes, dtype=np.int32), n),
        mother=mother.astype(np.int32),
        status=np.ones(n, dtype=np.int32),
        **{name: rng.normal(size=n) for name in FEATURE_COLUMNS},
    )


@pytest.fixture
def events() -> ParticleBatch:
    return random_events(500, seed=1)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    """One small model saved (.pt, exported .onnx, .json) per module: the export takes seconds."""
    torch.manual_seed(0)
    encoding = GraphEncoding.fit(random_events(500, seed=1))
    calibration = SamplingCalibration(
        score=(0.0, 1.0), pass_probability=(0.0, 1.0), scale=1.0, p_min=0.05
    )
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model(
        path, FilterNet(encoding.n_pdg, hidden=16), encoding, calibration, 0.5, {"command": "test"}
    )
    return path


@pytest.fixture
def model_path(tmp_path: Path, saved_model: Path) -> Path:
    """A fresh copy of the saved model's files (tests tamper with them)."""
    for suffix in (".pt", ".onnx", ".json"):
        shutil.copy(saved_model.with_suffix(suffix), tmp_path / f"model{suffix}")
    return tmp_path / "model.pt"


def rewrite_artifact(path: Path, **changes) -> None:
    """Change header fields of a model and re-sign it, as a different version would be."""
    artifact = torch.load(path, weights_only=True)
    artifact.update(changes)
    torch.save(artifact, path)
    sidecar = json.loads(sidecar_path(path).read_text())
    sidecar["sha256"] = sha256_file(path)
    sidecar_path(path).write_text(json.dumps(sidecar))


def assert_model_load_error(path: Path, *words: str) -> None:
    with pytest.raises(ModelLoadError) as caught:
        load_model(path)
    assert library_exit_code(caught.value) == ExitCode.MODEL_LOAD
    message = str(caught.value)
    assert str(path) in message
    for word in words:
        assert word in message


def test_saved_model_loads_with_its_sha256(model_path):
    model = load_model(model_path)
    assert model.sha256 == sha256_file(model_path)
    assert json.loads(sidecar_path(model_path).read_text())["sha256"] == model.sha256


def test_missing_model_file_names_the_file_and_the_fix(tmp_path):
    assert_model_load_error(tmp_path / "nope.pt", "no such file", "smartbkg-prod train")


def test_missing_metadata_file_is_a_model_load_error(model_path):
    sidecar_path(model_path).unlink()
    assert_model_load_error(model_path, "metadata file", "missing")


def test_hash_mismatch_with_metadata_is_a_model_load_error(model_path):
    with open(model_path, "ab") as handle:
        handle.write(b"tampered")
    assert_model_load_error(model_path, "sha256", "does not match")


def test_corrupted_file_with_matching_hash_is_a_model_load_error(model_path):
    model_path.write_bytes(b"\x00garbage" * 100)
    rewrite_sidecar = json.loads(sidecar_path(model_path).read_text())
    rewrite_sidecar["sha256"] = sha256_file(model_path)
    sidecar_path(model_path).write_text(json.dumps(rewrite_sidecar))
    assert_model_load_error(model_path, "not a readable torch file")


def test_wrong_format_version_is_a_model_load_error(model_path):
    rewrite_artifact(model_path, format_version=99)
    assert_model_load_error(model_path, "format version 99", "reads version 1")


def test_unsupported_unknown_pdg_policy_is_a_model_load_error(model_path):
    rewrite_artifact(model_path, unknown_pdg={"policy": "drop_particle", "max_fraction": 0.0})
    assert_model_load_error(model_path, "unknown-PDG policy", "drop_particle")


def test_weights_that_do_not_fit_the_vocabulary_are_a_model_load_error(model_path):
    artifact = torch.load(model_path, weights_only=True)
    rewrite_artifact(model_path, net_shape={**artifact["net_shape"], "hidden": 32})
    assert_model_load_error(model_path, "do not fit")


def test_events_of_another_process_violate_the_unknown_pdg_policy(model_path):
    foreign = random_events(50, seed=3, pdg_codes=(9000221, 100443, 211))
    config = FilterConfig(mode="cut", model=str(model_path), device="cpu")
    with pytest.raises(ModelLoadError) as caught:
        run_filter(foreign, config, seed=1)
    assert library_exit_code(caught.value) == ExitCode.MODEL_LOAD
    assert "outside its vocabulary" in str(caught.value) and "9000221" in str(caught.value)


def test_sample_mode_is_deterministic_given_the_seed(model_path, events):
    config = FilterConfig(mode="sample", model=str(model_path), device="cpu", p_min=0.05)
    first, again, other = (run_filter(events, config, seed=s) for s in (7, 7, 8))
    assert np.array_equal(first.keep, again.keep) and np.array_equal(first.weights, again.weights)
    assert not np.array_equal(first.keep, other.keep)
    assert first.model_sha256 == sha256_file(model_path.with_suffix(".onnx"))
    assert first.device == "cpu"


def test_sample_mode_weights_are_inverse_keep_probabilities(model_path, events):
    config = FilterConfig(mode="sample", model=str(model_path), device="cpu", p_min=0.05)
    decision = run_filter(events, config, seed=3)
    assert decision.scores.dtype == np.float32 and decision.weights.dtype == np.float64
    assert (decision.keep_probability >= 0.05).all() and (decision.keep_probability <= 1).all()
    np.testing.assert_allclose(
        decision.weights[decision.keep], 1 / decision.keep_probability[decision.keep]
    )
    assert (decision.weights[~decision.keep] == 0).all()


def test_cut_mode_keeps_scores_above_threshold_with_unit_weight(model_path, events):
    config = FilterConfig(mode="cut", model=str(model_path), device="cpu", threshold=0.5)
    decision = run_filter(events, config, seed=3)
    assert np.array_equal(decision.keep, decision.scores > 0.5)
    assert np.array_equal(decision.weights, decision.keep.astype(float))


def test_scores_do_not_depend_on_batch_size(model_path, events):
    small = run_filter(
        events, FilterConfig(mode="cut", model=str(model_path), device="cpu", batch_size=64), 1
    )
    large = run_filter(events, FilterConfig(mode="cut", model=str(model_path), device="cpu"), 1)
    np.testing.assert_allclose(small.scores, large.scores, rtol=1e-5, atol=1e-6)


def test_off_mode_keeps_everything_without_a_model(events):
    decision = run_filter(events, FilterConfig(mode="off"), seed=1)
    assert decision.keep.all() and (decision.weights == 1).all()


@pytest.mark.skipif(
    "CUDAExecutionProvider" in onnxruntime.get_available_providers(),
    reason="needs an onnxruntime without CUDA (the CPU worker's)",
)
def test_cuda_requested_without_a_gpu_is_a_gpu_error(model_path, events):
    with pytest.raises(FilterDeviceError) as caught:
        run_filter(events, FilterConfig(mode="cut", model=str(model_path), device="cuda"), seed=1)
    assert library_exit_code(caught.value) == ExitCode.GPU
    assert "filter.device: cpu" in str(caught.value)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_scores_agree_with_cpu_scores(model_path, events):
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        pytest.skip("needs onnxruntime-gpu (the GPU worker image)")
    cpu = run_filter(events, FilterConfig(mode="cut", model=str(model_path), device="cpu"), 1)
    gpu = run_filter(events, FilterConfig(mode="cut", model=str(model_path), device="cuda"), 1)
    assert gpu.device.startswith("cuda:0")
    np.testing.assert_allclose(cpu.scores, gpu.scores, atol=1e-4)  # the same fp32 graph


def test_the_session_runs_as_many_intra_op_threads_as_the_job_has_cores(model_path):
    for cores in (1, 3):
        options = open_scorer(model_path, "cpu", threads=cores).session.get_session_options()
        assert (options.intra_op_num_threads, options.inter_op_num_threads) == (cores, 1)
