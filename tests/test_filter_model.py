"""The shipped model, the train/evaluate commands, and unbiased sampling on a real campaign."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from smartbkg_prod.cli.filter import evaluate, train
from smartbkg_prod.files import sha256_file
from smartbkg_prod.filter.apply import run_filter
from smartbkg_prod.filter.artifact import FORMAT_VERSION, SHIPPED_MODEL, sidecar_path
from smartbkg_prod.filter.checkpoint import load_model
from smartbkg_prod.filter.data import LabelledEvents, simulate_labelled
from smartbkg_prod.filter.metrics import auc
from smartbkg_prod.spec import (
    Campaign,
    FilterConfig,
    SimulationConfig,
    SkimConfig,
    load_campaign,
)

BENCH_EVENTS = Path(__file__).parent.parent / "benchmarks" / "data" / "filter_events.npz"

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_model_is_small_and_matches_its_metadata():
    assert SHIPPED_MODEL.stat().st_size < 5_000_000
    sidecar = json.loads(sidecar_path(SHIPPED_MODEL).read_text())
    assert sidecar["sha256"] == sha256_file(SHIPPED_MODEL)
    assert sidecar["format_version"] == FORMAT_VERSION
    # Provenance: the command as run is quoted in the models README, with the repository
    # spec it was run on, whose campaign is the training data.
    readme = (SHIPPED_MODEL.parent / "README.md").read_text()
    assert sidecar["command"].startswith("smartbkg-prod train ")
    assert sidecar["command"] in readme
    spec = load_campaign(ROOT / "job_specs" / "train_60k_features.yaml")
    assert spec.campaign_id in readme
    assert spec.events == sidecar["training"]["n_events"]
    assert len(sidecar["training"]["data_sha256"]) == 64
    model = load_model("default")
    metrics = model.metadata["training"]["metrics"]
    assert metrics["validation_auc"] >= 0.85
    assert metrics["labels"] == "pass fraction over 9 detector seeds"
    assert len(model.encoding.pdg_codes) > 50
    # The hybrid: the ideal-detector skim features join the graph before the head.
    assert sidecar["onnx"]["kind"] == "decay_tree_gcn_skim_features"
    assert model.net.shape.n_event_features > 17
    # Started from the previous (graph-only) model, kept beside it with its own provenance,
    # itself fine-tuned from the one before.
    previous = SHIPPED_MODEL.parent / "soft200k.pt"
    assert metrics["init_model_sha256"] == sha256_file(previous) == load_model(previous).sha256
    assert load_model(previous).encoding == model.encoding
    assert json.loads(sidecar_path(previous).read_text())["command"] in readme
    first = SHIPPED_MODEL.parent / "hard800k.pt"
    init = load_model(previous).metadata["training"]["metrics"]["init_model_sha256"]
    assert init == sha256_file(first)
    assert json.loads(sidecar_path(first).read_text())["command"] in readme
    assert load_campaign(ROOT / "job_specs" / "train_200k_soft.yaml").campaign_id in readme
    assert load_campaign(ROOT / "job_specs" / "train_800k.yaml").campaign_id in readme


def test_evaluate_command_reports_auc_speedup_and_bias(tmp_path):
    result = CliRunner().invoke(
        evaluate, ["--events-file", str(BENCH_EVENTS), "--out", str(tmp_path), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "evaluation.json").read_text())
    assert report["auc"] > 0.7
    assert report["reference"]["max_speedup"] > report["reference"]["sample_speedup"] > 1.0
    assert {test["variable"] for test in report["bias_sample"]} >= {"mbc", "delta_e", "best_mode"}
    # Against an independent sample as large as the evaluated one, p-values from toys; a
    # 3000-event run does not judge bias: the verdict names the check that did not run.
    assert report["reference_events"] == report["n_events"]
    assert all(test["toys"] == report["bias_toys"] > 0 for test in report["bias_sample"])
    verdict = report["bias_verdict"]
    assert verdict["unbiased"] is None
    assert {c["name"]: c["status"] for c in verdict["checks"]}["sample_size"] == "not run"
    assert (tmp_path / "filter_roc_scores.png").stat().st_size > 0


def test_train_refuses_a_campaign_with_the_filter_on(tmp_path):
    spec = tmp_path / "filtered.yaml"
    spec.write_text(
        "name: filtered\nprocess: bbbar_generic\nevents: 100\nevents_per_job: 100\n"
        "filter: {mode: cut, model: default}\n"
    )
    result = CliRunner().invoke(train, [str(spec), "--in-process"])
    assert result.exit_code != 0
    assert "filter.mode: off" in str(result.exception)


@pytest.mark.slow
def test_shipped_model_beats_random_on_fresh_pythia_events():
    events = simulate_labelled("bbbar_generic", 10_000, 31_337, SimulationConfig(), SkimConfig())
    decision = run_filter(
        events.particles, FilterConfig(mode="cut", model="default", device="cpu"), 1
    )
    assert events.passed.sum() > 100
    assert auc(events.passed, decision.scores) > 0.8


@pytest.mark.slow
def test_train_command_runs_the_campaign_and_writes_a_model_the_worker_loads(tmp_path):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(
        "name: tiny\nprocess: bbbar_generic\nevents: 3000\nevents_per_job: 1500\nseed: 5\n"
        f"outputs: {{directory: {tmp_path / 'out'}}}\n"
    )
    out = tmp_path / "tiny.pt"
    arguments = [
        str(spec),
        "--db",
        f"sqlite:///{tmp_path / 'jobs.db'}",
        "--max-epochs",
        "1",
        "--hidden",
        "16",
        "--embedding-dim",
        "12",
    ]
    result = CliRunner().invoke(train, [*arguments, "--out", str(out)])
    assert result.exit_code == 0, result.output
    events = LabelledEvents.load(BENCH_EVENTS)
    decision = run_filter(
        events.particles, FilterConfig(mode="sample", model=str(out), device="cpu"), 2
    )
    assert decision.model_sha256 == sha256_file(out.with_suffix(".onnx"))
    metadata = load_model(out).metadata
    assert metadata["training"]["n_events"] == 3000
    assert metadata["net_shape"]["embedding_dim"] == 12
    # A second run reuses the finished campaign: same training data, same hash.
    again = CliRunner().invoke(train, [*arguments, "--out", str(tmp_path / "again.pt")])
    assert again.exit_code == 0, again.output
    assert (
        load_model(tmp_path / "again.pt").metadata["training"]["data_sha256"]
        == metadata["training"]["data_sha256"]
    )


@pytest.mark.slow
def test_sampled_campaign_weights_reproduce_the_unfiltered_skim_count(tmp_path):
    """Same seed, filter off vs sample: Σ weights of skimmed events matches the count."""
    from smartbkg_prod.physics.rootio import read_output
    from smartbkg_prod.plan import campaign_output_dir
    from smartbkg_prod.store import Store
    from smartbkg_prod.submit import submit_campaign

    def run(name: str, filter_config: dict):
        campaign = Campaign(
            name=name,
            process="bbbar_generic",
            events=8000,
            events_per_job=4000,
            seed=99,
            filter=filter_config,
            outputs={"directory": str(tmp_path / "out")},
        )
        status = submit_campaign(
            campaign, store=Store(f"sqlite:///{tmp_path / name}.db"), poll_interval=0.05
        )
        assert status.complete
        return [read_output(path) for path in sorted(campaign_output_dir(campaign).glob("*.root"))]

    unfiltered = run("off", {"mode": "off"})
    sampled = run("sample", {"mode": "sample", "model": "default", "p_min": 0.02, "device": "cpu"})
    n_skimmed = sum(int(np.count_nonzero(c.passed_skim)) for c in unfiltered)
    weights = np.concatenate([np.asarray(c.weight)[np.asarray(c.passed_skim)] for c in sampled])
    # Sampling variance Σ w(w-1) plus the detector's own binomial noise on both sides.
    sigma = np.sqrt(np.sum(weights * (weights - 1)) + 2 * n_skimmed)
    assert abs(weights.sum() - n_skimmed) < 4 * sigma
    assert len(np.concatenate([c.event_number for c in sampled])) < 8000
