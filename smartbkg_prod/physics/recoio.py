"""Reconstructed objects and skim decisions as ROOT files: what external stages write.

The file contract of a simulation or skim stage that runs as a command (a Geant4 or
basf2 chain in its own container). One ROOT file of classic TTrees (``uproot.recreate`` +
``mktree``), momenta in GeV and lengths in mm, lab frame:

* ``reco``, one entry per event: ``event_number`` (int64), ``n_objects`` (int32, the
  counter) and per reconstructed track or photon the jagged branches ``px py pz E``
  (float64), ``charge`` (int8, 0 for photons), ``pdg_hypothesis`` (int32, signed),
  ``mc_index`` (int32, index of the matched MC particle within its event, -1 if none),
  ``vx vy vz`` (float64);
* ``skim``, one entry per event: ``event_number`` (int64), ``passed_skim`` (bool),
  ``n_candidates`` (int32), ``best_mode`` (int32, -1 if none), ``mbc`` and ``delta_e``
  (float64, nan if none);
* ``candidates``, one entry per B candidate passing the skim: ``event_number`` (int64),
  ``mode`` (int32), ``mbc delta_e d_mass delta_m`` (float64), ``b_charge`` (int8).

A simulation stage writes ``reco`` (and may write ``skim`` + ``candidates`` when its
chain also skims); a skim stage writes ``skim`` + ``candidates``. Both keep every input
event, in input order: the ``event_number`` columns must equal the input's.
:func:`read_stage_output` checks that, the branches and their lengths, and raises
:class:`StageFileError` with one line saying what is wrong.

>>> import tempfile, pathlib
>>> from smartbkg_prod.physics.skim import empty_skim_result
>>> path = pathlib.Path(tempfile.mkdtemp()) / "out.root"
>>> write_stage_output(path, np.arange(3), skim=empty_skim_result(np.arange(3)))
>>> read_stage_output(path, np.arange(3), need_reco=False, need_skim=True)[1].n_events
3
"""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import uproot

from smartbkg_prod.physics.detector import RecoBatch
from smartbkg_prod.physics.errors import PhysicsError
from smartbkg_prod.physics.events import offsets_from_counts
from smartbkg_prod.physics.skim import CANDIDATE_DTYPES, SkimResult

RECO_TREE, SKIM_TREE, CANDIDATES_TREE = "reco", "skim", "candidates"
RECO_COUNTER = "n_objects"
# RecoBatch column -> (branch, dtype); energy is "E" as in the MC particle branches.
RECO_BRANCHES: dict[str, tuple[str, type]] = {
    "px": ("px", np.float64),
    "py": ("py", np.float64),
    "pz": ("pz", np.float64),
    "energy": ("E", np.float64),
    "charge": ("charge", np.int8),
    "pdg_hypothesis": ("pdg_hypothesis", np.int32),
    "mc_index": ("mc_index", np.int32),
    "vx": ("vx", np.float64),
    "vy": ("vy", np.float64),
    "vz": ("vz", np.float64),
}
# SkimResult field -> (branch, dtype) of the per-event skim tree.
SKIM_BRANCHES: dict[str, tuple[str, type]] = {
    "passed": ("passed_skim", np.bool_),
    "n_candidates": ("n_candidates", np.int32),
    "best_mode": ("best_mode", np.int32),
    "best_mbc": ("mbc", np.float64),
    "best_delta_e": ("delta_e", np.float64),
}
COMPRESSION = uproot.ZLIB(1)


class StageFileError(PhysicsError, ValueError):
    """A stage's file is missing, unreadable or breaks the layout above."""


def write_stage_output(
    path: Path,
    event_number: np.ndarray,
    *,
    reco: RecoBatch | None = None,
    skim: SkimResult | None = None,
) -> None:
    """Write ``reco`` and/or ``skim`` of the events ``event_number`` to ``path`` (overwritten)."""
    event_number = np.asarray(event_number, dtype=np.int64)
    with uproot.recreate(path, compression=COMPRESSION) as file:
        if reco is not None:
            offsets = ak.index.Index64(reco.offsets)
            objects = ak.zip(
                {
                    branch: ak.Array(
                        ak.contents.ListOffsetArray(
                            offsets,
                            ak.contents.NumpyArray(np.asarray(getattr(reco, name), dtype)),
                        )
                    )
                    for name, (branch, dtype) in RECO_BRANCHES.items()
                }
            )
            events = {"event_number": event_number, "objects": objects}
            file.mktree(
                RECO_TREE,
                {"event_number": np.dtype(np.int64), "objects": objects.type},
                counter_name=lambda counted: RECO_COUNTER,
                field_name=lambda outer, inner: inner,
            )
            if reco.n_events:
                file[RECO_TREE].extend(events)
        if skim is not None:
            per_event = {"event_number": event_number} | {
                branch: np.asarray(getattr(skim, name), dtype)
                for name, (branch, dtype) in SKIM_BRANCHES.items()
            }
            file.mktree(SKIM_TREE, {name: values.dtype for name, values in per_event.items()})
            file.mktree(
                CANDIDATES_TREE, {name: np.dtype(dtype) for name, dtype in CANDIDATE_DTYPES.items()}
            )
            if skim.n_events:
                file[SKIM_TREE].extend(per_event)
            if len(skim.candidates["event_number"]):
                file[CANDIDATES_TREE].extend(
                    {
                        name: np.asarray(skim.candidates[name], dtype)
                        for name, dtype in CANDIDATE_DTYPES.items()
                    }
                )


def _arrays(file: uproot.ReadOnlyDirectory, tree: str, branches: list[str], path: Path) -> dict:
    if tree not in file:
        raise StageFileError(f"{path}: no TTree {tree!r}")
    found = set(file[tree].keys())
    missing = [name for name in branches if name not in found]
    if missing:
        raise StageFileError(f"{path}: TTree {tree!r} lacks the branch(es) {', '.join(missing)}")
    return file[tree].arrays(branches, library="ak", how=dict)


def _check_events(path: Path, tree: str, event_number: np.ndarray, expected: np.ndarray) -> None:
    if len(event_number) != len(expected):
        raise StageFileError(
            f"{path}: TTree {tree!r} has {len(event_number)} events, expected {len(expected)} "
            "(a stage must keep every input event, in order)"
        )
    if not np.array_equal(event_number, expected):
        first = int(np.flatnonzero(event_number != expected)[0])
        raise StageFileError(
            f"{path}: TTree {tree!r} entry {first} is event {int(event_number[first])}, "
            f"expected {int(expected[first])} (a stage must keep every input event, in order)"
        )


def _read_reco(file, path: Path, expected: np.ndarray) -> RecoBatch:
    branches = [branch for branch, _ in RECO_BRANCHES.values()]
    arrays = _arrays(file, RECO_TREE, ["event_number", RECO_COUNTER, *branches], path)
    event_number = np.asarray(ak.to_numpy(arrays["event_number"]), dtype=np.int64)
    _check_events(path, RECO_TREE, event_number, expected)
    counts = np.asarray(ak.to_numpy(arrays[RECO_COUNTER]), dtype=np.int64)
    columns = {}
    for name, (branch, dtype) in RECO_BRANCHES.items():
        jagged = arrays[branch]
        if not np.array_equal(np.asarray(ak.num(jagged, axis=1)), counts):
            raise StageFileError(
                f"{path}: branch {branch!r} of TTree {RECO_TREE!r} does not follow {RECO_COUNTER!r}"
            )
        columns[name] = np.asarray(ak.to_numpy(ak.flatten(jagged, axis=None)), dtype=dtype)
    return RecoBatch(event_number=event_number, offsets=offsets_from_counts(counts), **columns)


def _read_skim(file, path: Path, expected: np.ndarray) -> SkimResult:
    per_event = _arrays(
        file,
        SKIM_TREE,
        ["event_number", *(branch for branch, _ in SKIM_BRANCHES.values())],
        path,
    )
    event_number = np.asarray(ak.to_numpy(per_event["event_number"]), dtype=np.int64)
    _check_events(path, SKIM_TREE, event_number, expected)
    candidates = _arrays(file, CANDIDATES_TREE, list(CANDIDATE_DTYPES), path)
    result = SkimResult(
        **{
            name: np.asarray(ak.to_numpy(per_event[branch]), dtype=dtype)
            for name, (branch, dtype) in SKIM_BRANCHES.items()
        },
        candidates={
            name: np.asarray(ak.to_numpy(candidates[name]), dtype=dtype)
            for name, dtype in CANDIDATE_DTYPES.items()
        },
    )
    unknown = ~np.isin(result.candidates["event_number"], expected)
    if np.any(unknown):
        raise StageFileError(
            f"{path}: TTree {CANDIDATES_TREE!r} has candidates of event "
            f"{int(result.candidates['event_number'][unknown][0])}, which is not an input event"
        )
    return result


def read_stage_output(
    path: Path, expected_event_number: np.ndarray, *, need_reco: bool, need_skim: bool
) -> tuple[RecoBatch | None, SkimResult | None]:
    """The ``reco`` and/or skim trees of a stage's output file, checked against the input's
    event numbers. A tree that is not needed is read when present."""
    path = Path(path)
    expected = np.asarray(expected_event_number, dtype=np.int64)
    if not path.is_file():
        raise StageFileError(f"{path}: the stage wrote no output file")
    try:
        with uproot.open(path) as file:
            reco = _read_reco(file, path, expected) if need_reco or RECO_TREE in file else None
            skim = _read_skim(file, path, expected) if need_skim or SKIM_TREE in file else None
    except StageFileError:
        raise
    except Exception as error:  # uproot raises many types for a damaged file
        detail = " ".join(str(error).split())
        raise StageFileError(
            f"{path}: not a readable ROOT file of this layout ({type(error).__name__}: {detail})"
        ) from None
    return reco, skim


def empty_reco() -> RecoBatch:
    """Reconstructed objects of no events."""
    return RecoBatch(
        event_number=np.zeros(0, dtype=np.int64),
        offsets=np.zeros(1, dtype=np.int64),
        **{name: np.zeros(0, dtype=dtype) for name, (_, dtype) in RECO_BRANCHES.items()},
    )
