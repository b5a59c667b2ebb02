"""ROOT output of a worker job: TTrees written and read with uproot.

Two trees (``uproot.recreate`` + ``mktree``, i.e. classic TTrees, never RNTuple):

* ``events``: one entry per event of the job's particle batch: ``event_number``,
  ``weight``, ``score`` (nan without a filter), ``control`` (a control-sample event, see
  :mod:`smartbkg_prod.filter.control`; its ``weight`` is 0 when the filter dropped it),
  ``passed_skim``, ``best_mode``, ``mbc``, ``delta_e``, ``n_particles`` and, with
  ``keep_mc_particles``, the jagged MC particle branches ``pdg mother px py pz E x y z t
  status`` (counted by ``n_particles``);
* ``candidates``: one entry per B-tag candidate passing the skim.

The worker owns temporary names, renames and checksums; this module writes the path given.

>>> import tempfile, pathlib
>>> from smartbkg_prod.physics.skim import empty_skim_result
>>> path = pathlib.Path(tempfile.mkdtemp()) / "empty.root"
>>> write_output(path, particles=ParticleBatch.empty(), weights=np.zeros(0), scores=None,
...              skim=empty_skim_result(np.zeros(0, dtype=np.int64)))
>>> read_output(path).event_number.size
0
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import awkward as ak
import numpy as np
import uproot

from smartbkg_prod.physics.events import PARTICLE_COLUMNS, ParticleBatch, offsets_from_counts
from smartbkg_prod.physics.skim import CANDIDATE_DTYPES, SkimResult

EVENTS_TREE = "events"
CANDIDATES_TREE = "candidates"
# Particle column -> branch name in the file (energy is "E" as in the MCParticle record).
PARTICLE_BRANCHES = {name: ("E" if name == "energy" else name) for name in PARTICLE_COLUMNS}
# The jagged particle branches are fields of one record, sharing the counter n_particles.
PARTICLE_RECORD = "mc"
COUNTER_BRANCH = "n_particles"
COMPRESSION = uproot.ZLIB(1)  # fast; these files are written once per job and read by analysis


@dataclass
class OutputContents:
    """What :func:`read_output` returns; arrays have the dtypes of the writer's inputs."""

    event_number: np.ndarray  # int64
    weight: np.ndarray  # float64
    score: np.ndarray  # float32, nan where no filter score exists
    control: np.ndarray  # bool, control-sample events
    passed_skim: np.ndarray  # bool
    best_mode: np.ndarray  # int32
    mbc: np.ndarray  # float64
    delta_e: np.ndarray  # float64
    n_particles: np.ndarray  # int64
    particles: ParticleBatch | None
    candidates: dict[str, np.ndarray]


def write_output(
    path: Path,
    *,
    particles: ParticleBatch,
    weights: np.ndarray,
    scores: np.ndarray | None,
    skim: SkimResult,
    keep_mc_particles: bool = True,
    control: np.ndarray | None = None,
) -> None:
    """Write one job's events and skim candidates to ``path`` (overwritten)."""
    n_events = particles.n_events
    control = np.zeros(n_events, dtype=np.bool_) if control is None else control
    weights = np.asarray(weights, dtype=np.float64)
    scores = (
        np.full(n_events, np.nan, dtype=np.float32)
        if scores is None
        else np.asarray(scores, np.float32)
    )
    for name, values in (
        ("weights", weights),
        ("scores", scores),
        ("control", control),
        ("skim.passed", skim.passed),
    ):
        if len(values) != n_events:
            raise ValueError(
                f"{name} has {len(values)} entries but particles has {n_events} events"
            )

    events: dict[str, object] = {
        "event_number": particles.event_number.astype(np.int64),
        "weight": weights,
        "score": scores,
        "control": np.asarray(control, dtype=np.bool_),
        "passed_skim": skim.passed.astype(np.bool_),
        "best_mode": skim.best_mode.astype(np.int32),
        "mbc": skim.best_mbc.astype(np.float64),
        "delta_e": skim.best_delta_e.astype(np.float64),
    }
    if not keep_mc_particles:
        events[COUNTER_BRANCH] = particles.counts().astype(np.int32)
    else:
        offsets = ak.index.Index64(particles.offsets)
        events[PARTICLE_RECORD] = ak.zip(
            {
                branch: ak.Array(
                    ak.contents.ListOffsetArray(
                        offsets, ak.contents.NumpyArray(getattr(particles, column))
                    )
                )
                for column, branch in PARTICLE_BRANCHES.items()
            }
        )
    with uproot.recreate(path, compression=COMPRESSION) as file:
        file.mktree(
            EVENTS_TREE,
            {name: _branch_type(values) for name, values in events.items()},
            counter_name=lambda counted: COUNTER_BRANCH,
            field_name=lambda outer, inner: inner,
        )
        file.mktree(
            CANDIDATES_TREE,
            {name: np.dtype(dtype) for name, dtype in CANDIDATE_DTYPES.items()},
        )
        if n_events:
            file[EVENTS_TREE].extend(events)
        if len(skim.candidates["event_number"]):
            file[CANDIDATES_TREE].extend(
                {
                    name: np.asarray(skim.candidates[name], dtype=dtype)
                    for name, dtype in CANDIDATE_DTYPES.items()
                }
            )


def _branch_type(values: object) -> object:
    if isinstance(values, ak.Array):
        return values.type
    return np.asarray(values).dtype


def read_output(path: Path) -> OutputContents:
    """Read a file written by :func:`write_output` back into arrays."""
    with uproot.open(path) as file:
        events = file[EVENTS_TREE]
        names = set(events.keys())
        arrays = events.arrays(library="ak")
        candidate_tree = file[CANDIDATES_TREE]
        candidates = {
            name: np.asarray(candidate_tree[name].array(library="np"), dtype=dtype)
            for name, dtype in CANDIDATE_DTYPES.items()
        }

    def column(name: str, dtype: type) -> np.ndarray:
        return np.asarray(ak.to_numpy(arrays[name]), dtype=dtype)

    event_number = column("event_number", np.int64)
    particles = None
    if "pdg" in names:
        particles = ParticleBatch(
            event_number=event_number,
            offsets=offsets_from_counts(column(COUNTER_BRANCH, np.int64)),
            **{
                column_name: np.asarray(
                    ak.to_numpy(ak.flatten(arrays[branch], axis=None)), dtype=dtype
                )
                for (column_name, branch), dtype in zip(
                    PARTICLE_BRANCHES.items(), PARTICLE_COLUMNS.values(), strict=True
                )
            },
        )
    return OutputContents(
        event_number=event_number,
        weight=column("weight", np.float64),
        score=column("score", np.float32),
        control=column("control", np.bool_)
        if "control" in names
        else np.zeros(len(event_number), dtype=np.bool_),
        passed_skim=column("passed_skim", np.bool_),
        best_mode=column("best_mode", np.int32),
        mbc=column("mbc", np.float64),
        delta_e=column("delta_e", np.float64),
        n_particles=column("n_particles", np.int64),
        particles=particles,
        candidates=candidates,
    )


def count_events(path: Path) -> int:
    """Entries of the ``events`` tree of a file written by :func:`write_output`."""
    with uproot.open(path) as file:
        return int(file[EVENTS_TREE].num_entries)


def read_mc_particles(path: Path, start: int, stop: int) -> ParticleBatch:
    """MC particles of entries ``start`` to ``stop`` (end excluded) of the ``events`` tree
    (a file written with ``keep_mc_particles``), numbered as in the file."""
    branches = ["event_number", COUNTER_BRANCH, *PARTICLE_BRANCHES.values()]
    with uproot.open(path) as file:
        tree = file[EVENTS_TREE]
        missing = [name for name in branches if name not in tree]
        if missing:
            raise ValueError(
                f"{path}: the {EVENTS_TREE!r} tree has no MC particles (missing "
                f"{', '.join(missing)}); write it with outputs.keep_mc_particles: true"
            )
        arrays = tree.arrays(branches, entry_start=start, entry_stop=stop, library="ak", how=dict)
    return ParticleBatch(
        event_number=np.asarray(ak.to_numpy(arrays["event_number"]), dtype=np.int64),
        offsets=offsets_from_counts(np.asarray(ak.to_numpy(arrays[COUNTER_BRANCH]), np.int64)),
        **{
            column: np.asarray(ak.to_numpy(ak.flatten(arrays[branch], axis=None)), dtype=dtype)
            for (column, branch), dtype in zip(
                PARTICLE_BRANCHES.items(), PARTICLE_COLUMNS.values(), strict=True
            )
        },
    )
