"""Event features from the campaign's skim run on the ideal-detector view of each event.

The filter is given what the skim would compute on a perfect detector: the generated
particles seen by :func:`~smartbkg_prod.physics.ideal.ideal_view` (100 % efficiency in
acceptance, perfect PID, no smearing) go through the campaign's own skim (any
implementation returning a :class:`~smartbkg_prod.physics.skim.SkimResult`), and its outputs
become one float32 row per event:

* the skim's answer: pass, log(1 + candidates), best candidate's |ΔE|, Mbc, D mass and
  ΔM (best = smallest |ΔE|), the largest Mbc of any candidate, candidates with |ΔE| < 50 MeV;
* the best candidate's mode, one-hot over the modes seen in training (plus "other");
* event-level combinations on the ideal view: charged tracks, kaons, photons, hard tracks
  (p* > 1 GeV in the Υ(4S) frame), visible energy and missing momentum in that frame,
  Fox-Wolfram R2.

Values a candidate-less event lacks are filled with fixed out-of-range values; every
column is standardised with the training set's mean and spread
(:class:`SkimFeatureEncoding`, stored in the model artifact). Everything is numpy on whole
batches, so the worker builds the features without torch.

>>> from smartbkg_prod.physics.config import SimulationConfig, SkimConfig
>>> from smartbkg_prod.physics.generate import generate_events
>>> particles = generate_events("bbbar_generic", 20, seed=1)
>>> raw = IdealSkim.builtin(SimulationConfig(), SkimConfig()).raw(particles)
>>> raw.values.shape
(20, 17)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from smartbkg_prod.filter.errors import ModelLoadError
from smartbkg_prod.physics.beams import E_BEAM_CM, lab_to_cm
from smartbkg_prod.physics.config import SimulationConfig, SkimConfig
from smartbkg_prod.physics.detector import KAON, RecoBatch
from smartbkg_prod.physics.events import ParticleBatch
from smartbkg_prod.physics.ideal import ideal_view
from smartbkg_prod.physics.skim import SkimResult, fox_wolfram_r2

# Dense columns of raw_skim_features, in order (the mode one-hot follows them).
DENSE_FEATURES: tuple[str, ...] = (
    "ideal_pass",
    "log_candidates",
    "best_abs_delta_e",
    "best_mbc",
    "best_d_mass",
    "best_delta_m",
    "max_mbc",
    "candidates_delta_e_50mev",
    "n_tracks",
    "n_kaons",
    "n_photons",
    "n_hard_tracks",
    "visible_energy_cm",
    "missing_momentum_cm",
    "fox_wolfram_r2",
    "charge_sum",
    "n_objects",
)
# What a candidate-less event gets: outside every physical range of the column.
NO_CANDIDATE_FILL = {
    "best_abs_delta_e": 1.0,
    "best_mbc": 5.0,
    "best_d_mass": 0.0,
    "best_delta_m": 0.0,
    "max_mbc": 5.0,
}
HARD_TRACK_P_CM = 1.0  # GeV
NEAR_DELTA_E = 0.05  # GeV

# (generated events, their ideal view) -> the skim's result for every event, in order.
SkimFunction = Callable[[ParticleBatch, RecoBatch], SkimResult]


@dataclass(frozen=True)
class RawSkimFeatures:
    """Unstandardised features: dense columns (``DENSE_FEATURES``) and the best mode."""

    values: np.ndarray  # float64 [n_events, len(DENSE_FEATURES)]
    best_mode: np.ndarray  # int64 [n_events], -1 without a candidate
    seconds: float  # wall time: ideal view + skim + features


def _best_candidates(result: SkimResult, event_number: np.ndarray) -> dict[str, np.ndarray]:
    """Per event: the smallest-|ΔE| candidate's D mass and ΔM, the largest Mbc, and the
    number of candidates with |ΔE| < NEAR_DELTA_E (any skim's candidate table)."""
    candidates = result.candidates
    n_events = len(event_number)
    # Candidates carry event numbers; map them to positions in the batch.
    by_number = np.argsort(event_number, kind="stable")
    if n_events and np.any(np.diff(event_number[by_number]) == 0):
        raise ValueError("events need distinct event numbers (candidates name their event by it)")
    found = np.searchsorted(event_number[by_number], candidates["event_number"])
    position = by_number[found.clip(max=max(n_events - 1, 0))]
    abs_delta_e = np.abs(candidates["delta_e"])
    order = np.lexsort((abs_delta_e, position))
    position, ordered = position[order], {name: candidates[name][order] for name in candidates}
    first = np.ones(len(position), dtype=bool)
    first[1:] = position[1:] != position[:-1]
    best = {
        name: np.full(n_events, NO_CANDIDATE_FILL[f"best_{name}"]) for name in ("d_mass", "delta_m")
    }
    for name in best:
        values = np.nan_to_num(ordered[name][first], nan=NO_CANDIDATE_FILL[f"best_{name}"])
        best[name][position[first]] = values
    max_mbc = np.full(n_events, NO_CANDIDATE_FILL["max_mbc"])
    np.maximum.at(max_mbc, position, np.nan_to_num(ordered["mbc"], nan=0.0))
    near = np.bincount(
        position[np.abs(ordered["delta_e"]) < NEAR_DELTA_E], minlength=n_events
    ).astype(np.float64)
    return {**best, "max_mbc": max_mbc, "near": near}


def _view_features(view: RecoBatch) -> dict[str, np.ndarray]:
    event = view.event_index()
    n = view.n_events
    track = view.charge != 0
    pz_cm, e_cm = lab_to_cm(view.pz, view.energy)
    p_cm = np.sqrt(view.px**2 + view.py**2 + pz_cm**2)

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(event[mask], minlength=n).astype(np.float64)

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(event, weights=values, minlength=n)

    missing = np.sqrt(total(view.px) ** 2 + total(view.py) ** 2 + total(pz_cm) ** 2)
    return {
        "n_tracks": count(track),
        "n_kaons": count(track & (np.abs(view.pdg_hypothesis) == KAON)),
        "n_photons": count(~track),
        "n_hard_tracks": count(track & (p_cm > HARD_TRACK_P_CM)),
        "visible_energy_cm": total(e_cm) / (2 * E_BEAM_CM),
        "missing_momentum_cm": missing,
        "fox_wolfram_r2": fox_wolfram_r2(view),
        "charge_sum": total(view.charge.astype(np.float64)),
        "n_objects": view.counts().astype(np.float64),
    }


def raw_skim_features(
    particles: ParticleBatch, simulation: SimulationConfig, skim: SkimFunction
) -> RawSkimFeatures:
    """Run ``skim`` on the ideal view of ``particles`` and collect its outputs (module
    docstring). ``skim`` must keep every event, in order, as a skim stage does."""
    started = time.perf_counter()
    view = ideal_view(particles, simulation)
    result = skim(particles, view)
    n = particles.n_events
    if result.n_events != n:
        raise ValueError(f"the skim returned {result.n_events} events for {n} given")
    best = _best_candidates(result, view.event_number)
    passed = np.asarray(result.passed, dtype=bool)
    columns = {
        "ideal_pass": passed.astype(np.float64),
        "log_candidates": np.log1p(np.asarray(result.n_candidates, dtype=np.float64)),
        "best_abs_delta_e": np.nan_to_num(
            np.abs(result.best_delta_e), nan=NO_CANDIDATE_FILL["best_abs_delta_e"]
        ),
        "best_mbc": np.nan_to_num(result.best_mbc, nan=NO_CANDIDATE_FILL["best_mbc"]),
        "best_d_mass": best["d_mass"],
        "best_delta_m": best["delta_m"],
        "max_mbc": best["max_mbc"],
        "candidates_delta_e_50mev": best["near"],
        **_view_features(view),
    }
    values = np.stack([columns[name] for name in DENSE_FEATURES], axis=1)
    best_mode = np.where(passed, np.asarray(result.best_mode, dtype=np.int64), -1)
    return RawSkimFeatures(values, best_mode, time.perf_counter() - started)


@dataclass(frozen=True)
class SkimFeatureEncoding:
    """Standardisation of the dense columns and the mode vocabulary, fitted on training
    events and stored in the model; ``width`` columns reach the network."""

    modes: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def width(self) -> int:
        return len(DENSE_FEATURES) + len(self.modes) + 1

    @classmethod
    def fit(cls, raw: RawSkimFeatures, min_mode_count: int = 5) -> SkimFeatureEncoding:
        modes, counts = np.unique(raw.best_mode[raw.best_mode >= 0], return_counts=True)
        return cls(
            modes=tuple(int(m) for m in modes[counts >= min_mode_count]),
            mean=tuple(float(v) for v in raw.values.mean(axis=0)),
            std=tuple(float(v) for v in np.maximum(raw.values.std(axis=0), 1e-6)),
        )

    def encode(self, raw: RawSkimFeatures) -> np.ndarray:
        """float32 [n_events, width]: standardised dense columns, then the mode one-hot
        (column per vocabulary mode, last column: a candidate of another mode)."""
        n = len(raw.best_mode)
        out = np.zeros((n, self.width), dtype=np.float32)
        out[:, : len(DENSE_FEATURES)] = (raw.values - np.asarray(self.mean)) / np.asarray(self.std)
        modes = np.asarray(self.modes, dtype=np.int64)
        has = raw.best_mode >= 0
        if len(modes):
            position = np.searchsorted(modes, raw.best_mode).clip(max=len(modes) - 1)
            known = has & (modes[position] == raw.best_mode)
        else:
            position, known = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool)
        column = np.where(known, len(DENSE_FEATURES) + position, self.width - 1)
        rows = np.flatnonzero(has)
        out[rows, column[rows]] = 1.0
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "dense_features": list(DENSE_FEATURES),
            "modes": list(self.modes),
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SkimFeatureEncoding:
        if tuple(data["dense_features"]) != DENSE_FEATURES:
            raise ValueError(
                f"model expects skim features {data['dense_features']}, this version builds "
                f"{list(DENSE_FEATURES)}"
            )
        return cls(
            modes=tuple(int(m) for m in data["modes"]),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
        )


def take_raw(raw: RawSkimFeatures, rows: np.ndarray) -> RawSkimFeatures:
    """The features of the events ``rows`` (positions or a boolean mask)."""
    return RawSkimFeatures(raw.values[rows], raw.best_mode[rows], raw.seconds)


@dataclass(frozen=True)
class IdealSkim:
    """Where a hybrid model's features come from: the ideal view with the acceptance of a
    simulation configuration, and a skim. The worker passes its campaign's simulation
    section and skim stage; training and evaluation in-process use the built-in skim."""

    simulation: SimulationConfig
    skim: SkimFunction

    @classmethod
    def builtin(
        cls, simulation: SimulationConfig | None = None, skim_config: SkimConfig | None = None
    ) -> IdealSkim:
        """The built-in hadronic B-tag skim (default configurations when not given)."""
        from smartbkg_prod.physics.skim import skim

        config = SkimConfig() if skim_config is None else skim_config
        return cls(
            SimulationConfig() if simulation is None else simulation,
            lambda _particles, view: skim(view, config),
        )

    def raw(self, particles: ParticleBatch) -> RawSkimFeatures:
        return raw_skim_features(particles, self.simulation, self.skim)


def model_event_features(
    metadata: dict[str, Any], ideal_skim: IdealSkim | None = None
) -> Callable[[ParticleBatch], np.ndarray] | None:
    """A hybrid model's feature rows of a batch (from ``ideal_skim``, default: the built-in
    skim with default configurations); None for a graph-only model."""
    if not metadata.get("net_shape", {}).get("n_event_features", 0):
        return None
    try:
        encoding = SkimFeatureEncoding.from_dict(metadata["skim_features"])
    except (KeyError, TypeError, ValueError) as error:
        raise ModelLoadError(
            f"filter model: skim-feature encoding missing or malformed ({error}); retrain "
            "with `smartbkg-prod train SPEC --skim-features`"
        ) from None
    source = IdealSkim.builtin() if ideal_skim is None else ideal_skim
    return lambda particles: encoding.encode(source.raw(particles))
