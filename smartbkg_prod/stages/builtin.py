"""The built-in stages: Pythia 8, generator-level files, the fast detector, the B-tag skim.

Also the two functions behind ``smartbkg-prod stage simulate|skim``, which run the built-in
simulation and skim on files in the external-stage layout
(:mod:`smartbkg_prod.physics.hepmc` in, :mod:`smartbkg_prod.physics.recoio` out): the same
arrays as in the worker's process, through a separate process and files.

>>> FastDetector(SimulationConfig()).name
'builtin'
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from smartbkg_prod.exitcodes import ExitCode
from smartbkg_prod.physics.config import SimulationConfig, SkimConfig
from smartbkg_prod.stages import (
    GenerationStage,
    Simulated,
    SimulationStage,
    SkimStage,
    StageError,
    StageJob,
)


class PythiaGeneration(GenerationStage):
    """Pythia 8 at Belle II energies (:mod:`smartbkg_prod.physics.generate`)."""

    def __init__(self, process: str):
        self.process = process

    def generate(self, job: StageJob):
        from smartbkg_prod.physics.generate import generate_events

        skip = job.events_to_skip
        particles = generate_events(
            self.process, skip + job.n_events, job.seed, first_event=job.first_event - skip
        )
        if skip:
            particles = particles.select(np.arange(particles.n_events) >= skip)
        return particles


class FileInput(GenerationStage):
    """Events read from generator-level files instead of generated.

    The files' events, in the order listed, are the campaign's events 0, 1, 2, ...: a job
    takes ``[first_event, first_event + n_events)`` of them, so a retry or a split job
    reads exactly the same events. Event numbers are the campaign's, not the files'.
    """

    name = "files"

    def __init__(self, files: list[str]):
        self.files = [Path(path) for path in files]

    def _count(self, path: Path) -> int:
        from smartbkg_prod.physics.hepmc import count_hepmc3_events
        from smartbkg_prod.physics.rootio import count_events

        if path.suffix == ".root":
            return count_events(path)
        return count_hepmc3_events(path)

    def _read(self, path: Path, start: int, stop: int):
        from smartbkg_prod.physics.hepmc import read_hepmc3
        from smartbkg_prod.physics.rootio import read_mc_particles

        if path.suffix == ".root":
            return read_mc_particles(path, start, stop)
        return read_hepmc3(path, start, stop)

    def _counts(self, paths: list[Path]) -> list[int]:
        counts = []
        for path in paths:
            try:
                counts.append(self._count(path))
            except (OSError, ValueError, KeyError) as error:
                raise _input_error(path, error) from None
        return counts

    def available_events(self) -> int:
        return sum(self._counts(self.files))

    def generate(self, job: StageJob):
        from smartbkg_prod.physics.events import ParticleBatch

        start, stop = job.first_event, job.first_event + job.n_events
        parts, offset = [], 0
        for path in self.files:
            if offset >= stop:
                break
            [n_file] = self._counts([path])
            low, high = max(start, offset), min(stop, offset + n_file)
            if low < high:
                try:
                    parts.append(self._read(path, low - offset, high - offset))
                except (OSError, ValueError, KeyError) as error:
                    raise _input_error(path, error) from None
            offset += n_file
        if offset < stop:
            raise StageError(
                ExitCode.INPUT,
                "generation",
                f"the input files hold {offset} events, this job needs events {start}..{stop - 1} "
                f"(lower the campaign's events to at most {offset} or add files)",
            )
        particles = ParticleBatch.concatenate(parts)
        return ParticleBatch(
            **{
                **particles.columns(),
                "offsets": particles.offsets,
                "event_number": start + np.arange(particles.n_events, dtype=np.int64),
            }
        )


def _input_error(path: Path, error: Exception) -> StageError:
    detail = " ".join(str(error).split())
    return StageError(
        ExitCode.INPUT, "generation", f"stages.generation.files: cannot read {path}: {detail}"
    )


class FastDetector(SimulationStage):
    """The fast parametric detector (:mod:`smartbkg_prod.physics.detector`)."""

    def __init__(self, config: SimulationConfig):
        self.config = config

    def simulate(self, particles, job: StageJob) -> Simulated:
        from smartbkg_prod.physics.detector import simulate

        return Simulated(reco=simulate(particles, self.config, job.seed))


class HadronicSkim(SkimStage):
    """The hadronic B-tag skim (:mod:`smartbkg_prod.physics.skim`)."""

    def __init__(self, config: SkimConfig):
        self.config = config

    def skim(self, particles, simulated: Simulated, job: StageJob):
        from smartbkg_prod.physics.skim import skim

        return skim(simulated.require_reco("the built-in skim"), self.config)


class InSimulationSkim(SkimStage):
    """The skim decision the simulation stage's chain made (``skim: in_simulation``)."""

    name = "in_simulation"

    def skim(self, particles, simulated: Simulated, job: StageJob):
        return simulated.require_skim()


def simulate_file(
    input_path: Path,
    output_path: Path,
    seed: int,
    simulation: SimulationConfig,
    skim_config: SkimConfig | None = None,
) -> int:
    """The built-in simulation (and skim, with ``skim_config``) of a HepMC3 file, written in
    the external-stage layout. Returns the number of events."""
    from smartbkg_prod.physics.detector import simulate
    from smartbkg_prod.physics.hepmc import read_hepmc3
    from smartbkg_prod.physics.recoio import write_stage_output
    from smartbkg_prod.physics.skim import skim

    particles = read_hepmc3(input_path)
    reco = simulate(particles, simulation, seed)
    result = None if skim_config is None else skim(reco, skim_config)
    write_stage_output(output_path, particles.event_number, reco=reco, skim=result)
    return particles.n_events


def skim_file(input_path: Path, output_path: Path, skim_config: SkimConfig) -> int:
    """The built-in skim of the ``reco`` tree of a ROOT file, written in the external-stage
    layout. Returns the number of events."""
    import uproot

    from smartbkg_prod.physics.recoio import RECO_TREE, read_stage_output, write_stage_output
    from smartbkg_prod.physics.skim import skim

    with uproot.open(input_path) as file:
        event_number = np.asarray(file[RECO_TREE]["event_number"].array(library="np"), np.int64)
    reco, _ = read_stage_output(input_path, event_number, need_reco=True, need_skim=False)
    write_stage_output(output_path, event_number, skim=skim(reco, skim_config))
    return len(event_number)
