"""Soft labels (the skim pass fraction over re-simulations)."""

from __future__ import annotations

import numpy as np
import pytest

from smartbkg_prod.filter.data import LabelledEvents, add_pass_fraction, simulate_labelled
from smartbkg_prod.filter.oracle import resimulate_passes
from smartbkg_prod.filter.sampling import fit_calibration
from smartbkg_prod.filter.speedup import reference_costs, sampling_speedup
from smartbkg_prod.spec import SimulationConfig, SkimConfig


@pytest.fixture(scope="module")
def soft_events() -> LabelledEvents:
    events = simulate_labelled("bbbar_generic", 1500, 71, SimulationConfig(), SkimConfig())
    return add_pass_fraction(events, 3, SimulationConfig(), SkimConfig(), first_seed=5000)


def test_pass_fraction_counts_the_label_and_the_resimulations(soft_events):
    passes = resimulate_passes(soft_events.particles, 3, first_seed=5000)
    expected = (passes.sum(axis=0) + soft_events.passed) / 4
    np.testing.assert_array_equal(soft_events.pass_fraction, expected)
    assert soft_events.resimulations == 3
    # The label is one of the four decisions: a passing event has q̂ >= 1/4.
    assert (soft_events.pass_fraction[soft_events.passed] >= 0.25).all()
    assert soft_events.pass_fraction.mean() == pytest.approx(soft_events.retention, abs=0.02)
    assert "resimulation" in soft_events.seconds


def test_soft_labels_survive_save_subset_and_concatenate(soft_events, tmp_path):
    soft_events.save(tmp_path / "soft.npz")
    loaded = LabelledEvents.load(tmp_path / "soft.npz")
    np.testing.assert_array_equal(loaded.pass_fraction, soft_events.pass_fraction)
    assert loaded.resimulations == 3
    hard = LabelledEvents(soft_events.particles, soft_events.passed, soft_events.variables)
    # The soft label is part of the training set's identity.
    assert hard.data_hash() != soft_events.data_hash()
    half = np.arange(soft_events.n_events) < 700
    parts = [soft_events.subset(half), soft_events.subset(~half)]
    joined = LabelledEvents.concatenate(parts)
    np.testing.assert_array_equal(joined.pass_fraction, soft_events.pass_fraction)
    # Mixing soft and hard parts drops the soft label rather than inventing one.
    assert LabelledEvents.concatenate([parts[0], hard]).pass_fraction is None


def test_speedup_with_pass_probabilities_is_its_expectation():
    rng = np.random.default_rng(3)
    q = rng.beta(0.2, 5, size=20_000)
    p = np.clip(3 * np.sqrt(q), 0.01, 1)
    costs = reference_costs(0.05)
    # 0/1 floats give the same as the decisions themselves.
    passed = rng.random(len(q)) < q
    assert sampling_speedup(p, passed.astype(float), costs) == pytest.approx(
        sampling_speedup(p, passed, costs)
    )
    # q itself gives the mean over many label draws (the soft label's expectation).
    draws = [sampling_speedup(p, rng.random(len(q)) < q, costs) for _ in range(200)]
    assert sampling_speedup(p, q, costs) == pytest.approx(np.mean(draws), rel=0.01)


def test_calibration_on_pass_fractions_follows_q():
    rng = np.random.default_rng(4)
    q = rng.beta(0.3, 6, size=30_000)
    scores = q**0.5  # any increasing function of q
    q_hat = rng.binomial(9, q) / 9
    calibration = fit_calibration(scores, q_hat, reference_costs(0.05))
    assert np.abs(calibration.pass_probability_of(scores) - q).mean() < 0.01


def test_soft_labels_train_a_model_that_records_them(soft_events):
    from smartbkg_prod.filter.train import TrainOptions, train_filter

    options = TrainOptions(hidden=8, max_epochs=1, threads=1)
    result = train_filter(soft_events, options)
    assert result.metrics["labels"] == "pass fraction over 4 detector seeds"
    hard = train_filter(
        soft_events, TrainOptions(hidden=8, max_epochs=1, threads=1, soft_labels=False)
    )
    assert hard.metrics["labels"] == "skim decision"


@pytest.mark.slow
def test_train_command_resimulates_and_fine_tunes(tmp_path):
    import json

    from click.testing import CliRunner

    from smartbkg_prod.cli.filter import train
    from smartbkg_prod.filter.checkpoint import load_model

    spec = tmp_path / "tiny.yaml"
    spec.write_text(
        "name: tiny\nprocess: bbbar_generic\nevents: 2000\nevents_per_job: 1000\nseed: 9\n"
    )
    cache = tmp_path / "soft.npz"
    base = [str(spec), "--in-process", "--cache", str(cache), "--max-epochs", "1", "--threads", "1"]
    result = CliRunner().invoke(
        train,
        [
            *base,
            "--resimulations",
            "2",
            "--init-model",
            "default",
            "--skim-features",  # the shipped model is the hybrid
            "--json",
            "--out",
            str(tmp_path / "ft.pt"),
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output[result.output.index("{") :])
    assert metrics["labels"] == "pass fraction over 3 detector seeds"
    assert metrics["init_model_sha256"] == load_model("default").sha256
    model = load_model(tmp_path / "ft.pt")
    # Fine-tuning keeps the shipped model's shape and vocabulary.
    assert model.encoding == load_model("default").encoding
    assert model.metadata["training"]["options"]["init_model"] == "default"
    # The cache holds soft labels for 2 re-simulations: asking for another count is refused.
    again = CliRunner().invoke(
        train, [*base, "--resimulations", "4", "--out", str(tmp_path / "x.pt")]
    )
    assert again.exit_code != 0 and "--resimulations 2" in again.output
