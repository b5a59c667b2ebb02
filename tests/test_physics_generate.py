"""Pythia generation at Belle II energies: determinism, record sanity, process content."""

from __future__ import annotations

import numpy as np
import pytest

from smartbkg_prod.exitcodes import ExitCode
from smartbkg_prod.physics.beams import E_TOTAL, P_TOTAL_Z, SQRT_S
from smartbkg_prod.physics.errors import GeneratorError
from smartbkg_prod.physics.events import ParticleBatch
from smartbkg_prod.physics.generate import (
    EventGenerator,
    generate_events,
    pythia_seed,
    sample_cos_theta,
)
from smartbkg_prod.worker import library_exit_code

N_EVENTS = 200
M_B = {511: 5.27966, 521: 5.27934}


@pytest.fixture(scope="module")
def generic():
    return generate_events("bbbar_generic", N_EVENTS, seed=3, first_event=1000)


def global_mother(batch):
    event = batch.event_index()
    return np.where(batch.mother >= 0, batch.mother + batch.offsets[:-1][event], -1)


def test_same_seed_gives_bit_identical_arrays(generic):
    again = generate_events("bbbar_generic", N_EVENTS, seed=3, first_event=1000)
    assert generic.equals(again)


def test_different_seed_gives_different_events(generic):
    other = generate_events("bbbar_generic", N_EVENTS, seed=4, first_event=1000)
    assert not generic.equals(other)


def test_continuum_is_deterministic_too():
    first = generate_events("continuum_uds", 50, seed=9)
    assert first.equals(generate_events("continuum_uds", 50, seed=9))


def test_event_numbers_start_at_first_event(generic):
    assert generic.event_number.tolist() == list(range(1000, 1000 + N_EVENTS))
    assert generic.event_number.dtype == np.int64


def test_consecutive_calls_continue_the_random_stream():
    generator = EventGenerator("bbbar_mixed", seed=5)
    first, second = generator.generate(20), generator.generate(20, first_event=20)
    assert not np.array_equal(first.px[:10], second.px[:10])
    assert second.event_number[0] == 20


def test_record_is_consistent_csr_with_in_event_mothers(generic):
    counts = generic.counts()
    assert generic.offsets[0] == 0 and (counts > 0).all()
    assert 30 < counts.mean() < 55  # ~42 particles per event is the reference
    local_size = np.repeat(counts, counts)
    assert ((generic.mother >= -1) & (generic.mother < local_size)).all()
    # Pythia lists daughters after their mother.
    local_index = np.arange(generic.n_particles) - np.repeat(generic.offsets[:-1], counts)
    assert (generic.mother < local_index).all()


def test_each_event_starts_with_an_upsilon_4s_decaying_to_two_b(generic):
    first = generic.offsets[:-1]
    assert (generic.pdg[first] == 300553).all()
    daughters = generic.mother == 0
    assert (
        np.bincount(generic.event_index()[daughters], minlength=N_EVENTS).tolist() == [2] * N_EVENTS
    )
    assert set(np.unique(np.abs(generic.pdg[daughters]))) == {511, 521}


def test_upsilon_daughters_conserve_four_momentum_and_have_the_b_mass(generic):
    event = generic.event_index()
    daughters = generic.mother == 0
    for name in ("px", "py", "pz", "energy"):
        column = getattr(generic, name)
        total = np.bincount(event[daughters], weights=column[daughters], minlength=N_EVENTS)
        np.testing.assert_allclose(total, column[generic.offsets[:-1]], atol=1e-9)
    b = np.flatnonzero(daughters)
    mass = np.sqrt(
        generic.energy[b] ** 2 - generic.px[b] ** 2 - generic.py[b] ** 2 - generic.pz[b] ** 2
    )
    expected = np.vectorize(M_B.get)(np.abs(generic.pdg[b]))
    np.testing.assert_allclose(mass, expected, atol=1e-3)


def test_events_are_in_the_lab_frame(generic):
    """Final-state particles sum to the beams: pz = 7 - 4 GeV, E = 11 GeV."""
    final = generic.status > 0
    event = generic.event_index()
    pz = np.bincount(event[final], weights=generic.pz[final], minlength=N_EVENTS)
    energy = np.bincount(event[final], weights=generic.energy[final], minlength=N_EVENTS)
    np.testing.assert_allclose(pz, P_TOTAL_Z, atol=1e-6)
    np.testing.assert_allclose(energy, E_TOTAL, atol=1e-6)
    upsilon = generic.offsets[:-1]
    mass = np.sqrt(generic.energy[upsilon] ** 2 - generic.pz[upsilon] ** 2)
    np.testing.assert_allclose(mass, SQRT_S, atol=1e-6)


def test_b_decay_vertices_are_displaced_along_the_boost(generic):
    """Daughters of B mesons start at the B decay point: ~130 µm forward on average."""
    mothers = global_mother(generic)
    from_b = (mothers >= 0) & np.isin(np.abs(generic.pdg[np.maximum(mothers, 0)]), [511, 521])
    assert 0.05 < generic.z[from_b].mean() < 0.3


@pytest.mark.parametrize(
    ("process", "expected", "absent"),
    [("bbbar_charged", 521, 511), ("bbbar_mixed", 511, 521)],
)
def test_forced_channels_give_only_their_b_pair(process, expected, absent):
    batch = generate_events(process, 100, seed=1)
    daughters = batch.mother == 0
    assert (np.abs(batch.pdg[daughters]) == expected).all()
    assert not (np.abs(batch.pdg) == absent).any()


def test_continuum_has_no_b_mesons_and_cc_has_charm():
    uds = generate_events("continuum_uds", 100, seed=2)
    cc = generate_events("continuum_cc", 100, seed=2)
    for batch in (uds, cc):
        assert not np.isin(np.abs(batch.pdg), [511, 521, 300553]).any()
        assert not np.isin(np.abs(batch.pdg), [1, 2, 3, 4, 5, 21, 90, 92]).any()
    charm = np.isin(np.abs(cc.pdg), [411, 421, 431, 4122])
    assert np.unique(cc.event_index()[charm]).size > 90
    assert not np.isin(np.abs(uds.pdg), [411, 421]).any()


def test_continuum_events_conserve_the_beam_four_momentum():
    batch = generate_events("continuum_cc", 50, seed=4)
    final = batch.status > 0
    energy = np.bincount(batch.event_index()[final], weights=batch.energy[final], minlength=50)
    np.testing.assert_allclose(energy, E_TOTAL, atol=1e-6)


def test_unknown_process_is_a_generator_error():
    with pytest.raises(GeneratorError) as caught:
        EventGenerator("bbbar_everything", seed=1)
    assert library_exit_code(caught.value) == ExitCode.GENERATOR


def test_zero_events_gives_an_empty_batch():
    assert generate_events("continuum_uds", 0, seed=1).n_events == 0


def test_pythia_seed_stays_in_pythias_range():
    seeds = np.array([pythia_seed(s) for s in (0, 1, 899_999_999, 2**31 - 1)])
    assert (seeds >= 1).all() and (seeds <= 900_000_000).all()


def test_quark_direction_follows_one_plus_cos_squared():
    cos_theta = sample_cos_theta(np.random.default_rng(1), 200_000)
    assert np.abs(cos_theta).max() <= 1.0
    assert np.mean(cos_theta**2) == pytest.approx(0.4, abs=0.005)  # <cos²> = 2/5


@pytest.mark.parametrize("process", ["bbbar_generic", "continuum_cc"])
def test_splitting_a_run_into_calls_gives_the_same_events(process):
    whole = generate_events(process, 60, seed=12)
    generator = EventGenerator(process, seed=12)
    parts = [generator.generate(25), generator.generate(35, first_event=25)]
    assert ParticleBatch.concatenate(parts).equals(whole)
