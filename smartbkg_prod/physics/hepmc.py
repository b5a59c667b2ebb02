"""Generator-level events as HepMC3 ASCII files (through ``pyhepmc``), both ways.

The file external simulation chains read (Geant4, basf2's ``HepMCInputModule``), and one
of the two generator-level inputs a campaign may start from. Units are GeV and mm (time
as c·t in mm), as in :class:`ParticleBatch`.

Mapping of the MC record:

* one ``GenEvent`` per event, ``event_number`` = the batch's event number;
* particles in record order (HepMC ids 1..n); ``mother`` (index within the event) is the
  first incoming particle of a particle's production vertex, -1 where there is none;
* a particle's production vertex position is ``x y z t``; daughters of one mother share
  one vertex (Pythia's record has them at the mother's decay point); particles without
  a mother have no production vertex and so sit at the origin;
* status: HepMC3's convention, 1 = final state, 2 = decayed, 4 = beam, other codes
  generator-specific. The batch uses Pythia's sign convention (positive = final state),
  so status 1 reads as 1 and every other code ``s`` as ``-s``; a batch is written with
  1 for its final-state particles and 2 for the rest.

Writing refuses a record HepMC3 cannot hold (siblings at different production points, a
particle without a mother away from the origin) instead of writing something else.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "empty.hepmc3"
>>> write_hepmc3(path, ParticleBatch.empty())
>>> read_hepmc3(path).n_events
0
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyhepmc

from smartbkg_prod.physics.errors import PhysicsError
from smartbkg_prod.physics.events import ParticleBatch, offsets_from_counts

HEPMC_NULL, HEPMC_FINAL, HEPMC_DECAYED = 0, 1, 2
PLACEHOLDER_PDG = 92  # a string, as in Pythia's record: where the placeholder stands in
PRECISION = 17  # significant digits: doubles survive the text format bit for bit


class HepMCError(PhysicsError, ValueError):
    """A HepMC3 file cannot be read, or a batch cannot be written as HepMC3."""


def _event_arrays(particles: ParticleBatch, start: int, stop: int) -> dict[str, np.ndarray]:
    rows = slice(start, stop)
    n = stop - start
    mother = particles.mother[rows].astype(np.int64)
    position = np.stack([getattr(particles, name)[rows] for name in ("x", "y", "z", "t")], axis=1)
    has_mother = mother >= 0
    # Daughters of one mother share a vertex: all of them must be at the first one's point.
    daughters = np.flatnonzero(has_mother)
    by_mother = daughters[np.lexsort((daughters, mother[daughters]))]
    group_start = np.ones(len(by_mother), dtype=bool)
    group_start[1:] = mother[by_mother][1:] != mother[by_mother][:-1]
    leader = by_mother[np.maximum.accumulate(np.where(group_start, np.arange(len(by_mother)), 0))]
    if np.any(position[by_mother] != position[leader]):
        raise HepMCError(
            "daughters of one particle have different production points, which HepMC3 cannot hold"
        )
    # Particles whose mother is not in the record (hadrons of a string the record dropped)
    # away from the origin: one status-0 placeholder per production point enters a vertex
    # there (HepMC3 has no vertex without incoming particles); readers skip status 0.
    orphans = np.flatnonzero(~has_mother & np.any(position != 0, axis=1))
    points, point_of = np.unique(position[orphans], axis=0, return_inverse=True)
    n_placeholders = len(points)
    parents = np.where(has_mother, mother, -1)
    parents[orphans] = n + point_of.reshape(-1)
    parents = np.append(parents, np.full(n_placeholders, -1))
    status = np.where(particles.status[rows] > 0, HEPMC_FINAL, HEPMC_DECAYED).astype(np.int32)
    energy = particles.energy[rows]
    momentum2 = particles.px[rows] ** 2 + particles.py[rows] ** 2 + particles.pz[rows] ** 2
    zeros = np.zeros(n_placeholders)
    return {
        "px": np.append(particles.px[rows], zeros),
        "py": np.append(particles.py[rows], zeros),
        "pz": np.append(particles.pz[rows], zeros),
        "en": np.append(energy, zeros),
        "m": np.append(np.sqrt(np.maximum(energy**2 - momentum2, 0.0)), zeros),
        "pid": np.append(particles.pdg[rows], np.full(n_placeholders, PLACEHOLDER_PDG)).astype(
            np.int32
        ),
        "status": np.append(status, np.full(n_placeholders, HEPMC_NULL)).astype(np.int32),
        "parents": np.stack([parents, parents], axis=1),
        **{
            name: np.append(position[:, column], zeros)
            for column, name in enumerate(("vx", "vy", "vz", "vt"))
        },
    }


def write_hepmc3(path: Path, particles: ParticleBatch) -> None:
    """Write every event of ``particles`` to ``path`` (HepMC3 ASCII, overwritten)."""
    event = pyhepmc.GenEvent(pyhepmc.Units.GEV, pyhepmc.Units.MM)
    offsets = particles.offsets
    with pyhepmc.open(Path(path), "w", precision=PRECISION) as writer:
        for i, number in enumerate(particles.event_number.tolist()):
            try:
                arrays = _event_arrays(particles, int(offsets[i]), int(offsets[i + 1]))
            except HepMCError as error:
                raise HepMCError(f"event {number}: {error}") from None
            event.from_hepevt(number, fortran=False, **arrays)
            writer.write(event)


def _read_event(event: pyhepmc.GenEvent) -> tuple[int, dict[str, np.ndarray]]:
    scale = 1.0 if event.momentum_unit == pyhepmc.Units.GEV else 1e-3
    length = 1.0 if event.length_unit == pyhepmc.Units.MM else 10.0
    record, vertices = event.numpy.particles, event.numpy.vertices
    # Links come from the serialised form: (particle id > 0, vertex id < 0) is a particle
    # entering a vertex, (vertex id, particle id) one leaving it. Ids are not positions in
    # the arrays (a reader numbers vertices as the file does), so map them explicitly.
    data = pyhepmc.GenEventData()
    event.write_data(data)
    links1, links2 = np.asarray(data.links1, np.int64), np.asarray(data.links2, np.int64)
    particle_id = np.asarray(record.id, dtype=np.int64)
    vertex_id = np.asarray(vertices.id, dtype=np.int64)
    n, n_vertices = len(particle_id), len(vertex_id)
    particle_row = np.full(int(particle_id.max(initial=0)) + 1, -1, dtype=np.int64)
    particle_row[particle_id] = np.arange(n)
    vertex_row = np.full(int(-vertex_id.min(initial=0)) + 1, n_vertices, dtype=np.int64)
    vertex_row[-vertex_id] = np.arange(n_vertices)
    incoming = (links1 > 0) & (links2 < 0)
    outgoing = (links1 < 0) & (links2 > 0)
    production = np.full(n, n_vertices, dtype=np.int64)  # n_vertices: none (the origin)
    production[particle_row[links2[outgoing]]] = vertex_row[-links1[outgoing]]
    # First incoming particle of each vertex: assign in reverse so the first one wins.
    first_incoming = np.full(n_vertices + 1, -1, dtype=np.int64)
    first_incoming[vertex_row[-links2[incoming]][::-1]] = particle_row[links1[incoming]][::-1]
    mother = first_incoming[production]

    def position(name: str) -> np.ndarray:
        values = np.append(np.asarray(getattr(vertices, name), dtype=np.float64), 0.0)
        return values[production] * length

    status = np.asarray(record.status, dtype=np.int32)
    # Status 0 entries carry nothing (HepMC3's convention): drop them, renumber mothers.
    keep = status != HEPMC_NULL
    new_index = np.append(np.cumsum(keep) - 1, -1)
    mother = np.where(keep[mother] & (mother >= 0), new_index[mother], -1)
    columns = {
        "pdg": np.asarray(record.pid, dtype=np.int32),
        "mother": mother.astype(np.int32),
        "px": np.asarray(record.px, dtype=np.float64) * scale,
        "py": np.asarray(record.py, dtype=np.float64) * scale,
        "pz": np.asarray(record.pz, dtype=np.float64) * scale,
        "energy": np.asarray(record.e, dtype=np.float64) * scale,
        "x": position("x"),
        "y": position("y"),
        "z": position("z"),
        "t": position("t"),
        "status": np.where(status == HEPMC_FINAL, status, -status).astype(np.int32),
    }
    return int(event.event_number), {name: values[keep] for name, values in columns.items()}


def iter_hepmc3(path: Path) -> Iterator[pyhepmc.GenEvent]:
    """The events of a HepMC3 ASCII file, one reused ``GenEvent`` at a time."""
    path = Path(path)
    if not path.is_file():
        raise HepMCError(f"{path}: no such HepMC3 file")
    try:
        reader = pyhepmc.io.ReaderAscii(str(path))
    except Exception as error:  # pyhepmc raises plain RuntimeErrors from C++
        raise HepMCError(f"{path}: not a readable HepMC3 file ({error})") from None
    event = pyhepmc.GenEvent()
    try:
        while True:
            ok = reader.read_event(event)
            if not ok or reader.failed():
                return
            yield event
    finally:
        reader.close()


def count_hepmc3_events(path: Path) -> int:
    """Events in a HepMC3 ASCII file (counted from its ``E`` lines, without parsing them)."""
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.startswith(b"E "))


def read_hepmc3(
    path: Path, start: int = 0, stop: int | None = None, first_event: int | None = None
) -> ParticleBatch:
    """Events ``start`` to ``stop`` (0-based, end excluded) of a HepMC3 file as a batch.

    Event numbers are the file's, or ``first_event, first_event + 1, ...`` when given.
    Raises :class:`HepMCError` for a missing file, an event that does not parse, or fewer
    events than asked for.
    """
    numbers: list[int] = []
    parts: list[dict[str, np.ndarray]] = []
    parsed = 0
    for parsed, event in enumerate(iter_hepmc3(path), start=1):  # noqa: B007 - used after
        if stop is not None and parsed > stop:
            break
        if parsed > start:
            number, arrays = _read_event(event)
            numbers.append(number)
            parts.append(arrays)
    else:
        # The reader stops at the end of the file and at the first event it cannot parse.
        in_file = count_hepmc3_events(path)
        if parsed < in_file:
            raise HepMCError(
                f"{path}: event {parsed} (0-based) is malformed: HepMC3 cannot parse it"
            )
        if stop is not None and parsed < stop:
            raise HepMCError(
                f"{path}: has {parsed} events, events {start}..{stop - 1} were asked for"
            )
    if not parts:
        return ParticleBatch.empty()
    event_number = (
        np.asarray(numbers, dtype=np.int64)
        if first_event is None
        else first_event + np.arange(len(parts), dtype=np.int64)
    )
    counts = np.asarray([len(part["pdg"]) for part in parts], dtype=np.int64)
    return ParticleBatch(
        event_number=event_number,
        offsets=offsets_from_counts(counts),
        **{name: np.concatenate([part[name] for part in parts]) for name in parts[0]},
    )
