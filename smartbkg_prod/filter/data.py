"""Labelled events for training and evaluation: MC particles + skim decision + event variables.

Two sources: a filter-off campaign's ROOT outputs (what ``smartbkg-prod train SPEC``
uses), or the physics chain run in-process (generate -> simulate -> skim), which
``evaluate`` uses for fresh held-out events and which also measures per-stage costs.

>>> from smartbkg_prod.physics.config import SimulationConfig, SkimConfig
>>> events = simulate_labelled("bbbar_generic", 50, seed=3, simulation=SimulationConfig(), skim=SkimConfig())
>>> events.n_events
50
"""

from __future__ import annotations

import hashlib
import multiprocessing
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from smartbkg_prod.physics.config import SimulationConfig, SkimConfig
from smartbkg_prod.physics.detector import RecoBatch
from smartbkg_prod.physics.events import PARTICLE_COLUMNS, ParticleBatch
from smartbkg_prod.physics.skim import SkimResult

CHARGED_FINAL_STATE = np.array([11, 13, 211, 321, 2212])
# Event-level variables monitored for filter bias, by how they are binned.
CATEGORICAL_VARIABLES = ("best_mode",)
DISCRETE_VARIABLES = (
    "n_candidates",
    "n_mc_particles",
    "n_charged_final",
    "n_tracks",
    "n_photons",
)
CONTINUOUS_VARIABLES = ("mbc", "delta_e", "p_max_charged", "p_sum_charged")


@dataclass
class LabelledEvents:
    """Events with their skim label; ``variables`` hold NaN where undefined (no candidate)."""

    particles: ParticleBatch
    passed: np.ndarray  # bool[n_events]: the skim decision, the training label
    variables: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per stage
    # Soft label: the skim pass fraction q̂ over the label's detector seed and
    # ``resimulations`` more (:func:`add_pass_fraction`); None when never re-simulated.
    pass_fraction: np.ndarray | None = None
    resimulations: int = 0

    @property
    def n_events(self) -> int:
        return self.particles.n_events

    @property
    def retention(self) -> float:
        return float(self.passed.mean()) if self.n_events else 0.0

    def subset(self, mask: np.ndarray) -> LabelledEvents:
        return LabelledEvents(
            particles=self.particles.select(mask),
            passed=self.passed[mask],
            variables={name: values[mask] for name, values in self.variables.items()},
            pass_fraction=None if self.pass_fraction is None else self.pass_fraction[mask],
            resimulations=self.resimulations,
        )

    def data_hash(self) -> str:
        """sha256 of the particle columns and labels (identifies a training set)."""
        digest = hashlib.sha256()
        for array in (
            self.particles.event_number,
            self.particles.offsets,
            *self.particles.columns().values(),
        ):
            digest.update(np.ascontiguousarray(array).tobytes())
        digest.update(self.passed.astype(np.uint8).tobytes())
        if self.pass_fraction is not None:  # hard-label sets keep their old hash
            digest.update(np.ascontiguousarray(self.pass_fraction, dtype=np.float64).tobytes())
        return digest.hexdigest()

    def save(self, path: str | Path) -> None:
        """Write to a compressed ``.npz`` (benchmark inputs, cached training sets).

        Floating-point columns are stored as float32, the precision the filter uses.
        """
        columns = {
            f"particle_{name}": values.astype(np.float32) if values.dtype == np.float64 else values
            for name, values in self.particles.columns().items()
        }
        np.savez_compressed(
            path,
            event_number=self.particles.event_number,
            offsets=self.particles.offsets,
            passed=self.passed,
            **columns,
            **{f"variable_{name}": values for name, values in self.variables.items()},
            **{f"seconds_{stage}": np.float64(value) for stage, value in self.seconds.items()},
            **(
                {}
                if self.pass_fraction is None
                else {
                    "pass_fraction": self.pass_fraction,
                    "resimulations": np.int64(self.resimulations),
                }
            ),
        )

    @classmethod
    def load(cls, path: str | Path) -> LabelledEvents:
        with np.load(path) as stored:
            particles = ParticleBatch(
                event_number=stored["event_number"],
                offsets=stored["offsets"],
                **{
                    name: stored[f"particle_{name}"].astype(dtype)
                    for name, dtype in PARTICLE_COLUMNS.items()
                },
            )
            variables = {
                key.removeprefix("variable_"): stored[key]
                for key in stored.files
                if key.startswith("variable_")
            }
            seconds = {
                key.removeprefix("seconds_"): float(stored[key])
                for key in stored.files
                if key.startswith("seconds_")
            }
            soft = "pass_fraction" in stored.files
            return cls(
                particles=particles,
                passed=stored["passed"].astype(bool),
                variables=variables,
                seconds=seconds,
                pass_fraction=stored["pass_fraction"] if soft else None,
                resimulations=int(stored["resimulations"]) if soft else 0,
            )

    @classmethod
    def concatenate(cls, parts: Iterable[LabelledEvents]) -> LabelledEvents:
        parts = list(parts)
        names = set.intersection(*(set(part.variables) for part in parts)) if parts else set()
        seconds: dict[str, float] = {}
        for part in parts:
            for stage, value in part.seconds.items():
                seconds[stage] = seconds.get(stage, 0.0) + value
        soft = bool(parts) and all(part.pass_fraction is not None for part in parts)
        resimulations = {part.resimulations for part in parts}
        if soft and len(resimulations) > 1:
            raise ValueError(f"parts re-simulated a different number of times: {resimulations}")
        return cls(
            particles=ParticleBatch.concatenate([part.particles for part in parts]),
            passed=np.concatenate([part.passed for part in parts])
            if parts
            else np.zeros(0, dtype=bool),
            variables={
                name: np.concatenate([part.variables[name] for part in parts])
                for name in sorted(names)
            },
            seconds=seconds,
            pass_fraction=np.concatenate([part.pass_fraction for part in parts]) if soft else None,
            resimulations=resimulations.pop() if soft else 0,
        )


def add_pass_fraction(
    events: LabelledEvents,
    resimulations: int,
    simulation: SimulationConfig,
    skim: SkimConfig,
    first_seed: int,
) -> LabelledEvents:
    """``events`` with the soft label q̂: the skim pass fraction over the label's own
    detector seed and ``resimulations`` more (seeds ``first_seed ...``, re-simulated by
    :func:`smartbkg_prod.filter.oracle.resimulate_passes`); E[q̂] = q(x), the quantity the
    filter learns, with variance q(1 − q)/(K + 1) instead of the label's q(1 − q)."""
    from smartbkg_prod.filter.oracle import resimulate_passes

    started = time.perf_counter()
    passes = resimulate_passes(events.particles, resimulations, simulation, skim, first_seed)
    total = passes.sum(axis=0) + events.passed
    seconds = {**events.seconds, "resimulation": time.perf_counter() - started}
    return LabelledEvents(
        particles=events.particles,
        passed=events.passed,
        variables=events.variables,
        seconds=seconds,
        pass_fraction=total / (resimulations + 1.0),
        resimulations=resimulations,
    )


def mc_variables(particles: ParticleBatch) -> dict[str, np.ndarray]:
    """Generator-level event variables: multiplicities and charged final-state momenta."""
    event = particles.event_index()
    final_charged = (particles.status > 0) & np.isin(np.abs(particles.pdg), CHARGED_FINAL_STATE)
    momentum = np.sqrt(particles.px**2 + particles.py**2 + particles.pz**2)
    p_max = np.zeros(particles.n_events)
    np.maximum.at(p_max, event[final_charged], momentum[final_charged])
    return {
        "n_mc_particles": particles.counts().astype(np.float64),
        "n_charged_final": np.bincount(event[final_charged], minlength=particles.n_events).astype(
            np.float64
        ),
        "p_max_charged": p_max,
        "p_sum_charged": np.bincount(
            event[final_charged], weights=momentum[final_charged], minlength=particles.n_events
        ),
    }


def event_variables(
    particles: ParticleBatch, reco: RecoBatch, result: SkimResult
) -> dict[str, np.ndarray]:
    """Every monitored variable of the events of one simulated and skimmed batch."""
    charge = reco.charge
    reco_event = reco.event_index()
    return {
        **mc_variables(particles),
        "n_tracks": np.bincount(reco_event[charge != 0], minlength=reco.n_events).astype(
            np.float64
        ),
        "n_photons": np.bincount(reco_event[charge == 0], minlength=reco.n_events).astype(
            np.float64
        ),
        "mbc": result.best_mbc,
        "delta_e": result.best_delta_e,
        "best_mode": np.where(result.passed, result.best_mode, np.nan).astype(np.float64),
        "n_candidates": result.n_candidates.astype(np.float64),
    }


def simulate_labelled(
    process: str,
    n_events: int,
    seed: int,
    simulation: SimulationConfig,
    skim: SkimConfig,
    first_event: int = 0,
) -> LabelledEvents:
    """Generate, simulate and skim ``n_events``; time each stage."""
    from smartbkg_prod.physics.detector import simulate
    from smartbkg_prod.physics.generate import generate_events
    from smartbkg_prod.physics.skim import skim as run_skim

    start = time.perf_counter()
    particles = generate_events(process, n_events, seed, first_event=first_event)
    generated = time.perf_counter()
    reco = simulate(particles, simulation, seed)
    simulated = time.perf_counter()
    result = run_skim(reco, skim)
    skimmed = time.perf_counter()
    return LabelledEvents(
        particles=particles,
        passed=result.passed.astype(bool),
        variables=event_variables(particles, reco, result),
        seconds={
            "generation": generated - start,
            "simulation": simulated - generated,
            "skim": skimmed - simulated,
        },
    )


def simulate_chunks(
    process: str,
    n_events: int,
    seed: int,
    simulation: SimulationConfig,
    skim: SkimConfig,
    chunk_events: int = 100_000,
) -> Iterator[LabelledEvents]:
    """``n_events`` events made ``chunk_events`` at a time (a generator: memory stays at one
    chunk), each chunk from its own generator seed derived from (``seed``, chunk number),
    so no two chunks repeat events."""
    for number, first in enumerate(range(0, n_events, chunk_events)):
        chunk_seed = int(np.random.SeedSequence([seed, number]).generate_state(1)[0] >> 1)
        size = min(chunk_events, n_events - first)
        yield simulate_labelled(process, size, chunk_seed, simulation, skim, first_event=first)


# Re-simulation seeds of a job: far from the job's own detector seed (the label's).
RESIMULATION_SEED_OFFSET = 1_000_000_000


class EventRange(Protocol):
    """Events ``first_event ..`` (``n_events`` of them) from the stream seeded ``seed``: a
    planned job (:class:`smartbkg_prod.plan.Job`) is one."""

    first_event: int
    n_events: int
    seed: int


@dataclass(frozen=True)
class ChainSettings:
    """What the in-process chain runs: the process, the stages' configuration and, when
    ``resimulations`` > 0, the soft label (:func:`add_pass_fraction`)."""

    process: str
    simulation: SimulationConfig
    skim: SkimConfig
    resimulations: int = 0

    def run(self, events: EventRange) -> LabelledEvents:
        labelled = simulate_labelled(
            self.process,
            events.n_events,
            events.seed,
            self.simulation,
            self.skim,
            events.first_event,
        )
        if self.resimulations > 0:
            first_seed = RESIMULATION_SEED_OFFSET + events.seed * 64
            labelled = add_pass_fraction(
                labelled, self.resimulations, self.simulation, self.skim, first_seed
            )
        return labelled


def simulate_ranges(
    chain: ChainSettings, ranges: Sequence[EventRange], workers: int = 1
) -> LabelledEvents:
    """Events made in-process range by range (a campaign's planned jobs give the same event
    ranges and seeds as its worker jobs; filter off), in ``workers`` processes."""
    if workers <= 1:
        return LabelledEvents.concatenate(chain.run(events) for events in ranges)
    context = multiprocessing.get_context("spawn")  # no inherited torch/OpenMP state
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        return LabelledEvents.concatenate(pool.map(chain.run, ranges))


def read_campaign_outputs(
    directory: str | Path,
    resimulations: int = 0,
    simulation: SimulationConfig | None = None,
    skim: SkimConfig | None = None,
    seed: int = 0,
) -> LabelledEvents:
    """Labelled events from every ``*.root`` output of a filter-off campaign;
    ``resimulations`` > 0 re-simulates each file's events for the soft label
    (:func:`add_pass_fraction`; detector seeds from ``seed`` and the file's place)."""
    from smartbkg_prod.physics.rootio import read_output

    files = sorted(Path(directory).glob("*.root"))
    if not files:
        raise FileNotFoundError(f"no *.root outputs in {directory} (run the campaign first)")
    parts = []
    for number, path in enumerate(files):
        contents = read_output(path)
        if contents.particles is None:
            raise ValueError(
                f"{path} has no MC particles: run the training campaign with outputs.keep_mc_particles: true"
            )
        passed = np.asarray(contents.passed_skim, dtype=bool)
        part = LabelledEvents(
            particles=contents.particles,
            passed=passed,
            variables={
                **mc_variables(contents.particles),
                "mbc": np.asarray(contents.mbc, dtype=np.float64),
                "delta_e": np.asarray(contents.delta_e, dtype=np.float64),
                "best_mode": np.where(passed, contents.best_mode, np.nan).astype(np.float64),
            },
        )
        if resimulations > 0:
            first_seed = RESIMULATION_SEED_OFFSET + (seed * 100_000 + number) * 64
            part = add_pass_fraction(
                part,
                resimulations,
                simulation or SimulationConfig(),
                skim or SkimConfig(),
                first_seed,
            )
        parts.append(part)
    return LabelledEvents.concatenate(parts)
