"""Hadronic B-tag skim: hand-built decays, event cuts, retention on generated events."""

from __future__ import annotations

import numpy as np
import pytest

from smartbkg_prod.physics.beams import E_BEAM_CM, cm_to_lab
from smartbkg_prod.physics.detector import RecoBatch, simulate
from smartbkg_prod.physics.events import offsets_from_counts
from smartbkg_prod.physics.generate import generate_events
from smartbkg_prod.physics.skim import MODE_NAMES, fox_wolfram_r2, skim
from smartbkg_prod.spec import SimulationConfig, SkimConfig

M_B, M_D0, M_PI, M_K = 5.27934, 1.86484, 0.13957039, 0.493677
# The hand-built events hold only the B decay (a 3-track, jet-like event): switch the
# continuum-suppression event cut off to test the B reconstruction itself.
NO_EVENT_CUT = SkimConfig(r2_max=1.0)


def boost(p4: np.ndarray, velocity: np.ndarray) -> np.ndarray:
    """Lorentz boost of four-vectors p4 = (px, py, pz, E) by the 3-velocity ``velocity``."""
    beta2 = velocity @ velocity
    gamma = 1.0 / np.sqrt(1.0 - beta2)
    bp = p4[:, :3] @ velocity
    coefficient = (gamma - 1.0) * bp / beta2 + gamma * p4[:, 3]
    return np.column_stack([p4[:, :3] + np.outer(coefficient, velocity), gamma * (p4[:, 3] + bp)])


def two_body(
    parent: np.ndarray, m_parent: float, m1: float, m2: float, axis: np.ndarray
) -> np.ndarray:
    """Daughters of ``parent`` decaying along ``axis`` in its rest frame."""
    p = np.sqrt((m_parent**2 - (m1 + m2) ** 2) * (m_parent**2 - (m1 - m2) ** 2)) / (2 * m_parent)
    axis = axis / np.linalg.norm(axis)
    rest = np.array([[*(p * axis), np.hypot(p, m1)], [*(-p * axis), np.hypot(p, m2)]])
    return boost(rest, parent[:3] / parent[3])


def b_to_d0bar_pi(m_d: float = M_D0) -> RecoBatch:
    """One event: B+ -> anti-D0 pi+, anti-D0 -> K+ pi-, with the B nearly at rest in the CM."""
    p_b = np.array([0.25, 0.1, -0.15])
    b_cm = np.array([*p_b, np.sqrt(M_B**2 + p_b @ p_b)])
    d_cm, bachelor_cm = two_body(b_cm, M_B, m_d, M_PI, np.array([0.3, -0.5, 0.8]))
    kaon_cm, pion_cm = two_body(d_cm, m_d, M_K, M_PI, np.array([-0.2, 0.9, 0.1]))
    tracks = np.array([kaon_cm, pion_cm, bachelor_cm])
    pz, energy = cm_to_lab(tracks[:, 2], tracks[:, 3])
    n = len(tracks)
    return RecoBatch(
        event_number=np.array([42], dtype=np.int64),
        offsets=offsets_from_counts(np.array([n])),
        px=tracks[:, 0].copy(),
        py=tracks[:, 1].copy(),
        pz=pz,
        energy=energy,
        charge=np.array([1, -1, 1], dtype=np.int8),
        pdg_hypothesis=np.array([321, -211, 211], dtype=np.int32),
        mc_index=np.arange(n, dtype=np.int32),
        vx=np.zeros(n),
        vy=np.zeros(n),
        vz=np.zeros(n),
    )


def test_a_hand_built_b_to_d0bar_pi_is_found_with_the_right_kinematics():
    result = skim(b_to_d0bar_pi(), NO_EVENT_CUT)
    assert result.passed.tolist() == [True]
    assert result.n_candidates.tolist() == [1]
    assert MODE_NAMES[int(result.best_mode[0])].startswith("B+ -> anti-D0 pi+; anti-D0 -> K+ pi-")
    expected_mbc = np.sqrt(E_BEAM_CM**2 - (0.25**2 + 0.1**2 + 0.15**2))
    assert result.best_mbc[0] == pytest.approx(expected_mbc, abs=1e-6)
    expected_delta_e = np.sqrt(M_B**2 + 0.25**2 + 0.1**2 + 0.15**2) - E_BEAM_CM
    assert result.best_delta_e[0] == pytest.approx(expected_delta_e, abs=1e-6)
    candidates = result.candidates
    assert candidates["event_number"].tolist() == [42]
    assert candidates["b_charge"].tolist() == [1]
    assert candidates["d_mass"][0] == pytest.approx(M_D0, abs=1e-6)


def test_a_d_mass_outside_the_window_is_rejected():
    result = skim(b_to_d0bar_pi(m_d=M_D0 + 0.1), NO_EVENT_CUT)
    assert result.passed.tolist() == [False]
    assert result.best_mode.tolist() == [-1] and np.isnan(result.best_mbc[0])
    assert len(result.candidates["mbc"]) == 0


def test_a_wrong_sign_bachelor_is_rejected():
    reco = b_to_d0bar_pi()
    wrong = RecoBatch(
        **{
            **reco.__dict__,
            "charge": np.array([1, -1, -1], dtype=np.int8),
            "pdg_hypothesis": np.array([321, -211, -211], dtype=np.int32),
        }
    )
    assert not skim(wrong, NO_EVENT_CUT).passed[0]


def test_jet_like_events_fail_the_r2_event_cut():
    assert fox_wolfram_r2(b_to_d0bar_pi())[0] > SkimConfig().r2_max
    assert not skim(b_to_d0bar_pi(), SkimConfig()).passed[0]


def test_an_empty_batch_skims_to_empty_results():
    reco = simulate(generate_events("bbbar_generic", 0, seed=1), SimulationConfig(), seed=1)
    result = skim(reco, SkimConfig())
    assert result.n_events == 0 and len(result.candidates["event_number"]) == 0


@pytest.fixture(scope="module")
def generic_skim():
    particles = generate_events("bbbar_generic", 4000, seed=21)
    return skim(simulate(particles, SimulationConfig(), seed=21), SkimConfig())


def test_generic_bbbar_retention_is_in_the_two_to_ten_percent_band(generic_skim):
    retention = generic_skim.retention
    error = np.sqrt(retention * (1 - retention) / generic_skim.n_events)
    assert 0.02 - 3 * error < retention < 0.10 + 3 * error


def test_skim_results_are_consistent_per_event(generic_skim):
    result = generic_skim
    assert (result.passed == (result.n_candidates > 0)).all()
    assert (result.best_mode[result.passed] >= 0).all()
    assert (result.best_mbc[result.passed] > SkimConfig().mbc_min).all()
    assert (np.abs(result.candidates["delta_e"]) < SkimConfig().delta_e_max).all()
    assert set(np.unique(result.candidates["mode"])) <= set(MODE_NAMES)
    assert len(result.candidates["mbc"]) == result.n_candidates.sum()


def test_continuum_retention_is_much_lower_than_bbbar(generic_skim):
    particles = generate_events("continuum_uds", 4000, seed=21)
    continuum = skim(simulate(particles, SimulationConfig(), seed=21), SkimConfig())
    assert continuum.retention < 0.5 * generic_skim.retention


def test_processing_in_chunks_does_not_change_the_result(monkeypatch):
    import smartbkg_prod.physics.skim as skim_module

    reco = simulate(generate_events("bbbar_generic", 300, seed=4), SimulationConfig(), seed=4)
    whole = skim(reco, SkimConfig())
    monkeypatch.setattr(skim_module, "CHUNK_EVENTS", 37)
    chunked = skim(reco, SkimConfig())
    assert np.array_equal(whole.passed, chunked.passed)
    assert np.array_equal(whole.best_mbc, chunked.best_mbc, equal_nan=True)
    for name, values in whole.candidates.items():
        assert np.array_equal(values, chunked.candidates[name], equal_nan=values.dtype.kind == "f")
