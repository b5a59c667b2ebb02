"""The files of external stages: HepMC3 in (pyhepmc), ROOT reco/skim trees out.

The HepMC3 round trip is bit for bit, so a simulation run on the file sees the worker's
events exactly; a HepMC3 file written by pyhepmc from Pythia's own event record (not by
our writer) reads with its mothers, production points and final-state flags.
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest
from pythia_hepmc import pythia_hepmc3_file

from smartbkg_prod.physics.config import SimulationConfig, SkimConfig
from smartbkg_prod.physics.detector import simulate
from smartbkg_prod.physics.generate import generate_events
from smartbkg_prod.physics.hepmc import HepMCError, count_hepmc3_events, read_hepmc3, write_hepmc3
from smartbkg_prod.physics.recoio import StageFileError, read_stage_output, write_stage_output
from smartbkg_prod.physics.skim import skim


@pytest.fixture(scope="module", params=["bbbar_generic", "continuum_uds"])
def particles(request):
    return generate_events(request.param, 400, seed=11, first_event=2000)


def test_hepmc3_round_trip_is_bit_identical(tmp_path, particles):
    path = tmp_path / "events.hepmc3"
    write_hepmc3(path, particles)
    back = read_hepmc3(path)
    for name in ("event_number", "offsets", "pdg", "mother", "px", "py", "pz", "energy"):
        assert np.array_equal(getattr(back, name), getattr(particles, name)), name
        assert getattr(back, name).dtype == getattr(particles, name).dtype, name
    for name in ("x", "y", "z", "t"):
        assert np.array_equal(getattr(back, name), getattr(particles, name)), name
    # HepMC3 status convention: 1 = final state; the batch keeps "positive = final".
    assert np.array_equal(back.status > 0, particles.status > 0)
    assert count_hepmc3_events(path) == particles.n_events


def test_hepmc3_holds_orphans_away_from_the_origin(tmp_path):
    # Hadrons of a B decay to quarks lose their mother with the dropped string, but keep
    # the B's decay point: the writer stands a status-0 placeholder in for the string.
    particles = generate_events("bbbar_generic", 500, seed=4242)
    away = (particles.x != 0) | (particles.y != 0) | (particles.z != 0) | (particles.t != 0)
    orphan = (particles.mother < 0) & away
    assert orphan.any()
    path = tmp_path / "events.hepmc3"
    write_hepmc3(path, particles)
    back = read_hepmc3(path)
    for name in ("x", "y", "z", "t", "mother", "pdg"):
        assert np.array_equal(getattr(back, name), getattr(particles, name)), name
    assert " 92 " in path.read_text()


def test_hepmc3_range_and_renumbering(tmp_path, particles):
    path = tmp_path / "events.hepmc3"
    write_hepmc3(path, particles)
    part = read_hepmc3(path, 100, 130, first_event=7)
    assert part.event_number.tolist() == list(range(7, 37))
    assert np.array_equal(part.pdg, particles.select(np.isin(np.arange(400), range(100, 130))).pdg)
    with pytest.raises(HepMCError, match="has 400 events, events 390..409"):
        read_hepmc3(path, 390, 410)


def test_malformed_hepmc3_event_is_an_error_not_a_short_batch(tmp_path, particles):
    path = tmp_path / "events.hepmc3"
    write_hepmc3(path, particles)
    lines = path.read_text().splitlines()
    particle_lines = [i for i, line in enumerate(lines) if line.startswith("P ")]
    lines[particle_lines[len(particle_lines) // 2]] = "P this is not a particle"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(HepMCError, match="is malformed"):
        read_hepmc3(path)
    with pytest.raises(HepMCError, match="no such HepMC3 file"):
        read_hepmc3(tmp_path / "missing.hepmc3")


def test_reads_a_hepmc3_file_pyhepmc_wrote_from_pythias_record(tmp_path):
    path = tmp_path / "pythia.hepmc3"
    final_counts = pythia_hepmc3_file(path, 50)
    batch = read_hepmc3(path)
    assert batch.n_events == 50
    final = batch.status > 0
    assert np.bincount(batch.event_index()[final], minlength=50).tolist() == final_counts
    # The beams (HepMC status 4) are roots; final-state particles have a mother.
    assert np.all(batch.mother[~final & (batch.status == -4)] == -1)
    assert np.all(batch.mother[final] >= 0)
    # Energy is conserved over the final state of each event (lab = CM here).
    energy = np.bincount(batch.event_index()[final], weights=batch.energy[final])
    assert np.allclose(energy, 10.58, rtol=1e-6)


@pytest.fixture(scope="module")
def chain_output():
    particles = generate_events("bbbar_generic", 800, seed=13, first_event=100)
    reco = simulate(particles, SimulationConfig(), seed=13)
    return particles, reco, skim(reco, SkimConfig())


def test_stage_output_round_trip_is_identical(tmp_path, chain_output):
    particles, reco, result = chain_output
    path = tmp_path / "out.root"
    write_stage_output(path, particles.event_number, reco=reco, skim=result)
    back_reco, back_skim = read_stage_output(
        path, particles.event_number, need_reco=True, need_skim=True
    )
    for field in fields(reco):
        ours, theirs = getattr(reco, field.name), getattr(back_reco, field.name)
        assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs), field.name
    for field in fields(result):
        if field.name == "candidates":
            continue
        ours, theirs = getattr(result, field.name), getattr(back_skim, field.name)
        assert ours.dtype == theirs.dtype, field.name
        assert np.array_equal(ours, theirs, equal_nan=ours.dtype.kind == "f"), field.name
    for name, values in result.candidates.items():
        assert np.array_equal(
            back_skim.candidates[name], values, equal_nan=values.dtype.kind == "f"
        )


def test_stage_output_with_other_events_is_refused(tmp_path, chain_output):
    particles, reco, result = chain_output
    path = tmp_path / "out.root"
    write_stage_output(path, particles.event_number, reco=reco, skim=result)
    with pytest.raises(StageFileError, match="has 800 events, expected 799"):
        read_stage_output(path, particles.event_number[:-1], need_reco=True, need_skim=True)
    with pytest.raises(StageFileError, match="entry 0 is event 100, expected 101"):
        read_stage_output(path, particles.event_number + 1, need_reco=False, need_skim=True)


def test_missing_trees_and_garbage_are_refused(tmp_path, chain_output):
    particles, reco, result = chain_output
    path = tmp_path / "skim_only.root"
    write_stage_output(path, particles.event_number, skim=result)
    with pytest.raises(StageFileError, match="no TTree 'reco'"):
        read_stage_output(path, particles.event_number, need_reco=True, need_skim=True)
    garbage = tmp_path / "garbage.root"
    garbage.write_bytes(b"root" * 100)
    with pytest.raises(StageFileError, match="not a readable ROOT file"):
        read_stage_output(garbage, particles.event_number, need_reco=True, need_skim=False)
    with pytest.raises(StageFileError, match="wrote no output file"):
        read_stage_output(
            tmp_path / "none.root", particles.event_number, need_reco=True, need_skim=False
        )
