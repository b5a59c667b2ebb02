"""ParticleBatch: the CSR container every physics stage shares."""

from __future__ import annotations

import numpy as np
import pytest

from smartbkg_prod.physics.events import PARTICLE_COLUMNS, ParticleBatch


def make_batch(counts: list[int], first_event: int = 0) -> ParticleBatch:
    counts_array = np.asarray(counts, dtype=np.int64)
    n = int(counts_array.sum())
    offsets = np.concatenate([[0], np.cumsum(counts_array)]).astype(np.int64)
    columns = {name: np.arange(n).astype(dtype) for name, dtype in PARTICLE_COLUMNS.items()}
    columns["mother"] = np.concatenate([np.arange(c) - 1 for c in counts]).astype(np.int32)
    return ParticleBatch(
        event_number=first_event + np.arange(len(counts), dtype=np.int64),
        offsets=offsets,
        **columns,
    )


def test_empty_batch_has_no_events_and_one_offset():
    batch = ParticleBatch.empty()
    assert batch.n_events == 0 and batch.n_particles == 0
    assert batch.offsets.tolist() == [0]
    assert batch.pdg.dtype == np.int32 and batch.px.dtype == np.float64


def test_counts_and_event_index_follow_offsets():
    batch = make_batch([2, 0, 3])
    assert batch.counts().tolist() == [2, 0, 3]
    assert batch.event_index().tolist() == [0, 0, 2, 2, 2]


def test_select_keeps_whole_events_and_local_mothers():
    batch = make_batch([2, 1, 3], first_event=10)
    picked = batch.select(np.array([True, False, True]))
    assert picked.event_number.tolist() == [10, 12]
    assert picked.counts().tolist() == [2, 3]
    assert picked.px.tolist() == [0, 1, 3, 4, 5]
    assert picked.mother.tolist() == [-1, 0, -1, 0, 1]


def test_select_nothing_gives_an_empty_batch():
    picked = make_batch([2, 1]).select(np.zeros(2, dtype=bool))
    assert picked.n_events == 0 and picked.n_particles == 0


def test_select_rejects_a_mask_of_the_wrong_length():
    with pytest.raises(ValueError, match="mask"):
        make_batch([1, 1]).select(np.ones(3, dtype=bool))


def test_concatenate_round_trips_a_split():
    batch = make_batch([2, 1, 3, 0])
    first = batch.select(np.array([True, True, False, False]))
    second = batch.select(np.array([False, False, True, True]))
    assert ParticleBatch.concatenate([first, second]).equals(batch)
    assert ParticleBatch.concatenate([]).equals(ParticleBatch.empty())


def test_inconsistent_columns_are_rejected():
    batch = make_batch([2])
    with pytest.raises(ValueError, match="column"):
        ParticleBatch(
            event_number=batch.event_number,
            offsets=batch.offsets,
            **{**batch.columns(), "px": np.zeros(5)},
        )
