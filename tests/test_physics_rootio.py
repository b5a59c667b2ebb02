"""ROOT output: TTrees written with uproot read back identically, 0 events included."""

from __future__ import annotations

import numpy as np
import pytest
import uproot

from smartbkg_prod.physics.detector import simulate
from smartbkg_prod.physics.events import ParticleBatch
from smartbkg_prod.physics.generate import generate_events
from smartbkg_prod.physics.rootio import read_output, write_output
from smartbkg_prod.physics.skim import empty_skim_result, skim
from smartbkg_prod.spec import SimulationConfig, SkimConfig


@pytest.fixture(scope="module")
def job():
    particles = generate_events("bbbar_generic", 600, seed=8, first_event=3000)
    result = skim(simulate(particles, SimulationConfig(), seed=8), SkimConfig())
    weights = np.random.default_rng(8).uniform(1, 20, particles.n_events)
    scores = np.random.default_rng(9).random(particles.n_events).astype(np.float32)
    return particles, result, weights, scores


def test_round_trip_is_identical(tmp_path, job):
    particles, result, weights, scores = job
    path = tmp_path / "job.root"
    write_output(path, particles=particles, weights=weights, scores=scores, skim=result)
    back = read_output(path)
    assert back.particles is not None and back.particles.equals(particles)
    assert np.array_equal(back.event_number, particles.event_number)
    assert np.array_equal(back.weight, weights) and back.weight.dtype == np.float64
    assert np.array_equal(back.score, scores) and back.score.dtype == np.float32
    assert np.array_equal(back.passed_skim, result.passed)
    assert np.array_equal(back.best_mode, result.best_mode)
    assert np.array_equal(back.mbc, result.best_mbc, equal_nan=True)
    assert np.array_equal(back.n_particles, particles.counts())
    for name, values in result.candidates.items():
        assert np.array_equal(back.candidates[name], values, equal_nan=values.dtype.kind == "f"), (
            name
        )


def test_control_flags_round_trip_and_default_to_false(tmp_path, job):
    particles, result, weights, scores = job
    control = np.random.default_rng(10).random(particles.n_events) < 0.2
    path = tmp_path / "job.root"
    write_output(
        path, particles=particles, weights=weights, scores=scores, skim=result, control=control
    )
    assert np.array_equal(read_output(path).control, control)
    write_output(path, particles=particles, weights=weights, scores=scores, skim=result)
    assert not read_output(path).control.any()


def test_files_hold_ttrees_not_rntuples(tmp_path, job):
    particles, result, weights, scores = job
    path = tmp_path / "job.root"
    write_output(path, particles=particles, weights=weights, scores=scores, skim=result)
    with uproot.open(path) as file:
        assert file.classnames() == {"events;1": "TTree", "candidates;1": "TTree"}
        assert {"pdg", "mother", "E", "x", "status"} <= set(file["events"].keys())


def test_zero_events_write_empty_trees(tmp_path):
    path = tmp_path / "empty.root"
    empty = ParticleBatch.empty()
    write_output(
        path,
        particles=empty,
        weights=np.zeros(0),
        scores=None,
        skim=empty_skim_result(empty.event_number),
    )
    back = read_output(path)
    assert (
        back.event_number.size == 0 and back.particles is not None and back.particles.equals(empty)
    )
    assert all(values.size == 0 for values in back.candidates.values())


def test_without_mc_particles_only_event_level_branches_are_written(tmp_path, job):
    particles, result, weights, _ = job
    path = tmp_path / "slim.root"
    write_output(
        path,
        particles=particles,
        weights=weights,
        scores=None,
        skim=result,
        keep_mc_particles=False,
    )
    back = read_output(path)
    assert back.particles is None
    assert np.isnan(back.score).all()
    assert np.array_equal(back.n_particles, particles.counts())


def test_mismatched_weights_are_refused(tmp_path, job):
    particles, result, weights, _ = job
    with pytest.raises(ValueError, match="weights"):
        write_output(
            tmp_path / "bad.root",
            particles=particles,
            weights=weights[:-1],
            scores=None,
            skim=result,
        )
