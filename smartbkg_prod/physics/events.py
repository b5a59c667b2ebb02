"""Generator-level MC particles of many events in one columnar (CSR) batch.

Particles of event ``i`` are ``offsets[i]:offsets[i+1]`` of every per-particle array;
``mother`` indexes *within* the event (``-1`` = no kept mother). All stages (filter,
detector, ROOT output) consume this layout without per-event Python loops.

>>> batch = ParticleBatch.empty()
>>> batch.n_events, batch.n_particles
(0, 0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

# Per-particle columns and their dtypes, in record order. One place for the schema:
# empty(), concatenate(), select() and the ROOT writer all derive from it.
PARTICLE_COLUMNS: dict[str, type] = {
    "pdg": np.int32,
    "mother": np.int32,
    "px": np.float64,
    "py": np.float64,
    "pz": np.float64,
    "energy": np.float64,
    "x": np.float64,
    "y": np.float64,
    "z": np.float64,
    "t": np.float64,
    "status": np.int32,
}


def offsets_from_counts(counts: np.ndarray) -> np.ndarray:
    """``[0, c0, c0+c1, ...]`` as int64."""
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets


def ragged_take(offsets: np.ndarray, event_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the selected events of a CSR layout: (row indices, new offsets)."""
    counts = np.diff(offsets)[event_mask]
    new_offsets = offsets_from_counts(counts)
    starts = offsets[:-1][event_mask]
    rows = np.arange(new_offsets[-1], dtype=np.int64) - np.repeat(new_offsets[:-1] - starts, counts)
    return rows, new_offsets


class EventGrouped:
    """Per-event helpers for a CSR batch with ``event_number`` [n_events] and ``offsets``
    [n_events+1] (shared by MC particles and reconstructed objects)."""

    event_number: np.ndarray
    offsets: np.ndarray

    @property
    def n_events(self) -> int:
        return len(self.event_number)

    def counts(self) -> np.ndarray:
        """Rows (particles, objects) per event, int64."""
        return np.diff(self.offsets)

    def event_index(self) -> np.ndarray:
        """Position (0..n_events-1) of the event each row belongs to."""
        return np.repeat(np.arange(self.n_events, dtype=np.int64), self.counts())


@dataclass(frozen=True)
class ParticleBatch(EventGrouped):
    """MCParticles of ``n_events`` events; momenta in GeV, vertices in mm (t in mm/c), lab frame."""

    event_number: np.ndarray
    offsets: np.ndarray
    pdg: np.ndarray
    mother: np.ndarray
    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    energy: np.ndarray
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    t: np.ndarray
    status: np.ndarray

    def __post_init__(self) -> None:
        if self.offsets.shape != (len(self.event_number) + 1,) or self.offsets[0] != 0:
            raise ValueError("offsets must have n_events + 1 entries starting at 0")
        n_particles = int(self.offsets[-1])
        for name in PARTICLE_COLUMNS:
            if len(getattr(self, name)) != n_particles:
                raise ValueError(
                    f"column {name!r} has {len(getattr(self, name))} entries, expected {n_particles}"
                )

    @property
    def n_particles(self) -> int:
        return int(self.offsets[-1])

    def columns(self) -> dict[str, np.ndarray]:
        """The per-particle arrays by name (no copies)."""
        return {name: getattr(self, name) for name in PARTICLE_COLUMNS}

    def select(self, mask: np.ndarray) -> ParticleBatch:
        """The events where ``mask`` (bool[n_events]) is true, in order."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (self.n_events,):
            raise ValueError(f"mask has shape {mask.shape}, expected ({self.n_events},)")
        rows, offsets = ragged_take(self.offsets, mask)
        # Mother indices are event-local, so they survive event selection unchanged.
        return ParticleBatch(
            event_number=self.event_number[mask],
            offsets=offsets,
            **{name: column[rows] for name, column in self.columns().items()},
        )

    def event_range(self, start: int, stop: int) -> ParticleBatch:
        """Events ``start`` to ``stop - 1``: views of the columns, no copies (chunked scoring)."""
        first, last = int(self.offsets[start]), int(self.offsets[stop])
        return ParticleBatch(
            event_number=self.event_number[start:stop],
            offsets=self.offsets[start : stop + 1] - first,
            **{name: column[first:last] for name, column in self.columns().items()},
        )

    @classmethod
    def concatenate(cls, batches: Sequence[ParticleBatch]) -> ParticleBatch:
        """One batch holding the events of ``batches`` in order."""
        if not batches:
            return cls.empty()
        counts = np.concatenate([batch.counts() for batch in batches])
        return cls(
            event_number=np.concatenate([batch.event_number for batch in batches]).astype(np.int64),
            offsets=offsets_from_counts(counts),
            **{
                name: np.concatenate([getattr(batch, name) for batch in batches]).astype(dtype)
                for name, dtype in PARTICLE_COLUMNS.items()
            },
        )

    @classmethod
    def empty(cls) -> ParticleBatch:
        return cls(
            event_number=np.zeros(0, dtype=np.int64),
            offsets=np.zeros(1, dtype=np.int64),
            **{name: np.zeros(0, dtype=dtype) for name, dtype in PARTICLE_COLUMNS.items()},
        )

    def equals(self, other: ParticleBatch) -> bool:
        """Bit-identical arrays (dtype and values)."""
        return all(
            getattr(self, f.name).dtype == getattr(other, f.name).dtype
            and np.array_equal(getattr(self, f.name), getattr(other, f.name))
            for f in fields(self)
        )
