"""The stages of a job's chain, behind one small interface on columnar batches.

generate -> (NN filter) -> simulate -> skim. Each of the three stages has an abstract base
class here; the worker calls only these methods, so any implementation can take a place:

* :class:`GenerationStage` ``.generate(job) -> ParticleBatch``: the job's ``n_events``
  generator-level events, numbered ``job.first_event, job.first_event + 1, ...``;
* :class:`SimulationStage` ``.simulate(particles, job) -> Simulated``: reconstructed
  objects of every event (and, for a chain that also skims, the skim result);
* :class:`SkimStage` ``.skim(particles, simulated, job) -> SkimResult``: the per-event
  decision and the B candidates.

A stage keeps every event it is given, in order; the worker checks it.

Implementations (chosen per stage in the spec's ``stages`` section, see
:class:`smartbkg_prod.spec.StagesConfig`):

* ``builtin`` (the default): Pythia 8, the fast detector, the hadronic B-tag skim
  (:mod:`smartbkg_prod.stages.builtin`); ``files`` reads generator-level files instead of
  generating;
* ``external``: a command that reads and writes files (HepMC3 in, ROOT out), for a
  collaboration's Geant4/basf2 chain in its own container (:mod:`.external`);
  ``in_simulation`` takes the skim decision from such a chain's output;
* any other name: a Python plugin, a subclass of one of the base classes registered in
  the ``smartbkg_prod.stages`` entry-point group (``[project.entry-points."smartbkg_prod.stages"]
  my_sim = "my_package:MySimulation"``). Its ``Options`` (a pydantic model) validates the
  stage's ``options`` from the spec, and it is built as ``MySimulation(options)``.

>>> issubclass(SimulationStage, Stage)
True
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from smartbkg_prod.errors import WorkerError
from smartbkg_prod.exitcodes import ExitCode

if TYPE_CHECKING:
    from smartbkg_prod.physics.detector import RecoBatch
    from smartbkg_prod.physics.events import ParticleBatch
    from smartbkg_prod.physics.skim import SkimResult

StageKind = Literal["generation", "simulation", "skim"]
STAGE_KINDS: tuple[StageKind, ...] = ("generation", "simulation", "skim")


class StageError(WorkerError):
    """A stage failed; the message starts with the stage's name."""

    def __init__(self, exit_code: ExitCode, stage: str, message: str):
        self.stage = stage
        super().__init__(exit_code, f"stage {stage}: {message}")


@dataclass(frozen=True)
class StageJob:
    """What a stage knows of the job it runs in."""

    campaign: str
    job_index: int
    attempt: int
    first_event: int
    n_events: int
    seed: int
    workdir: Path  # scratch space for this job's stage files, created on demand
    deadline: float | None = None  # time.monotonic() at which the job's walltime ends
    memory_limit_mb: int | None = None
    events_to_skip: int = 0  # recovery splits: events of the random stream before first_event


@dataclass(frozen=True)
class Simulated:
    """What a simulation stage returns: reconstructed objects, and a skim result when the
    simulation chain skims too (``skim: in_simulation``)."""

    reco: RecoBatch | None
    skim: SkimResult | None = None

    def require_reco(self, needed_by: str) -> RecoBatch:
        if self.reco is None:
            raise StageError(
                ExitCode.OUTPUT_VALIDATION,
                "simulation",
                f"returned no reconstructed objects, which {needed_by} needs",
            )
        return self.reco

    def require_skim(self) -> SkimResult:
        if self.skim is None:
            raise StageError(
                ExitCode.OUTPUT_VALIDATION,
                "simulation",
                "wrote no skim decision although skim is in_simulation",
            )
        return self.skim


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Stage(ABC):
    """Common to every stage: its kind, its name and the model of its ``options``."""

    kind: ClassVar[StageKind]
    name: str = "builtin"
    Options: ClassVar[type[BaseModel]] = NoOptions


class GenerationStage(Stage):
    kind = "generation"

    def available_events(self) -> int | None:
        """How many events the stage can give at most (None: no limit)."""
        return None

    @abstractmethod
    def generate(self, job: StageJob) -> ParticleBatch:
        """The job's events, numbered ``job.first_event ...``."""


class SimulationStage(Stage):
    kind = "simulation"

    @abstractmethod
    def simulate(self, particles: ParticleBatch, job: StageJob) -> Simulated:
        """Reconstructed objects of every event of ``particles``, in order."""


class SkimStage(Stage):
    kind = "skim"

    @abstractmethod
    def skim(self, particles: ParticleBatch, simulated: Simulated, job: StageJob) -> SkimResult:
        """The skim decision and candidates of every event, in order."""
