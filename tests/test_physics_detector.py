"""Fast detector simulation: acceptance, efficiency, resolution, PID, truth links."""

from __future__ import annotations

import numpy as np
import pytest

from smartbkg_prod.physics.detector import simulate, tracking_efficiency
from smartbkg_prod.physics.events import ParticleBatch, offsets_from_counts
from smartbkg_prod.physics.generate import generate_events
from smartbkg_prod.spec import SimulationConfig

CONFIG = SimulationConfig()


@pytest.fixture(scope="module")
def generic():
    return generate_events("bbbar_generic", 400, seed=11)


def single_particles(
    pdg: int, momentum: np.ndarray, theta_deg: np.ndarray, mass: float
) -> ParticleBatch:
    """One final-state particle per event at the origin, phi uniform."""
    n = len(momentum)
    phi = np.random.default_rng(0).uniform(0, 2 * np.pi, n)
    theta = np.radians(theta_deg)
    zeros = np.zeros(n)
    return ParticleBatch(
        event_number=np.arange(n, dtype=np.int64),
        offsets=offsets_from_counts(np.ones(n, dtype=np.int64)),
        pdg=np.full(n, pdg, dtype=np.int32),
        mother=np.full(n, -1, dtype=np.int32),
        px=momentum * np.sin(theta) * np.cos(phi),
        py=momentum * np.sin(theta) * np.sin(phi),
        pz=momentum * np.cos(theta),
        energy=np.sqrt(momentum**2 + mass**2),
        x=zeros,
        y=zeros,
        z=zeros,
        t=zeros,
        status=np.full(n, 91, dtype=np.int32),
    )


def test_same_seed_same_reconstruction(generic):
    first, second = simulate(generic, CONFIG, seed=1), simulate(generic, CONFIG, seed=1)
    assert np.array_equal(first.px, second.px) and np.array_equal(first.offsets, second.offsets)
    assert not np.array_equal(first.px, simulate(generic, CONFIG, seed=2).px)


def test_objects_are_grouped_per_event_with_valid_truth_links(generic):
    reco = simulate(generic, CONFIG, seed=1)
    assert reco.n_events == generic.n_events
    assert np.array_equal(reco.event_number, generic.event_number)
    event = reco.event_index()
    truth = generic.offsets[:-1][event] + reco.mc_index
    assert (reco.mc_index < generic.counts()[event]).all()
    assert (generic.status[truth] > 0).all()
    true_abs = np.abs(generic.pdg[truth])
    assert set(np.unique(true_abs)) <= {11, 13, 22, 211, 321, 2212}
    assert ((reco.charge == 0) == (true_abs == 22)).all()


def test_nothing_is_reconstructed_outside_the_polar_acceptance():
    theta = np.concatenate([np.full(500, 10.0), np.full(500, 160.0)])
    particles = single_particles(211, np.full(1000, 1.0), theta, 0.1396)
    assert simulate(particles, CONFIG, seed=3).n_objects == 0


def test_high_pt_tracks_reach_the_efficiency_plateau():
    n = 20_000
    particles = single_particles(211, np.full(n, 1.0), np.full(n, 90.0), 0.1396)
    efficiency = simulate(particles, CONFIG, seed=3).n_objects / n
    sigma = np.sqrt(CONFIG.track_efficiency * (1 - CONFIG.track_efficiency) / n)
    assert abs(efficiency - CONFIG.track_efficiency) < 5 * sigma


def test_tracking_efficiency_turns_on_at_track_pt_min():
    pt = np.array([0.0, CONFIG.track_pt_min, 1.0])
    efficiency = tracking_efficiency(pt, CONFIG)
    assert efficiency[0] < 0.05 and efficiency[1] == pytest.approx(CONFIG.track_efficiency / 2)
    assert efficiency[2] == pytest.approx(CONFIG.track_efficiency)


def test_track_momentum_resolution_matches_the_parametrisation():
    n, p = 20_000, 2.0
    particles = single_particles(211, np.full(n, p), np.full(n, 90.0), 0.1396)
    reco = simulate(particles, CONFIG, seed=4)
    ratio = np.hypot(reco.px, reco.py) / p
    beta = p / np.hypot(p, 0.1396)
    expected = np.hypot(CONFIG.pt_resolution_a * p, CONFIG.pt_resolution_b / beta)
    assert ratio.mean() == pytest.approx(1.0, abs=5 * expected / np.sqrt(len(ratio)))
    assert ratio.std() == pytest.approx(expected, rel=0.05)


def test_photon_energy_resolution_and_threshold():
    n, energy = 20_000, 1.0
    particles = single_particles(22, np.full(n, energy), np.full(n, 90.0), 0.0)
    reco = simulate(particles, CONFIG, seed=5)
    expected = np.hypot(CONFIG.photon_resolution_stochastic, CONFIG.photon_resolution_constant)
    assert (reco.energy / energy).std() == pytest.approx(expected, rel=0.05)
    assert reco.n_objects / n == pytest.approx(CONFIG.photon_efficiency, abs=0.01)
    soft = single_particles(22, np.full(1000, 0.02), np.full(1000, 90.0), 0.0)
    assert simulate(soft, CONFIG, seed=5).n_objects == 0


def test_kaon_identification_and_pion_fake_rates():
    n = 20_000
    kaons = simulate(
        single_particles(321, np.full(n, 1.0), np.full(n, 90.0), 0.4937), CONFIG, seed=6
    )
    pions = simulate(
        single_particles(-211, np.full(n, 1.0), np.full(n, 90.0), 0.1396), CONFIG, seed=6
    )
    assert (kaons.pdg_hypothesis == 321).mean() == pytest.approx(
        CONFIG.kaon_id_efficiency, abs=0.01
    )
    assert (pions.pdg_hypothesis == -321).mean() == pytest.approx(
        CONFIG.pion_to_kaon_misid, abs=0.01
    )
    assert (pions.charge == -1).all() and (kaons.charge == 1).all()


def test_lepton_hypotheses_carry_the_lepton_sign_convention():
    electrons = simulate(
        single_particles(11, np.full(2000, 1.0), np.full(2000, 90.0), 0.000511), CONFIG, seed=7
    )
    identified = electrons.pdg_hypothesis == 11
    assert identified.mean() > 0.9
    assert (electrons.charge[identified] == -1).all()


def test_empty_input_gives_empty_reconstruction():
    reco = simulate(ParticleBatch.empty(), CONFIG, seed=1)
    assert reco.n_events == 0 and reco.n_objects == 0
