"""A simulation stage plugin: the built-in fast detector with its own tracking efficiency.

What a third-party stage looks like: a subclass of a stage base class, an ``Options``
model that validates the spec's ``stages.simulation.options``, built as ``cls(options)``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from smartbkg_prod.physics.config import SimulationConfig
from smartbkg_prod.physics.detector import simulate
from smartbkg_prod.stages import Simulated, SimulationStage


class TunedDetector(SimulationStage):
    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")

        track_efficiency: float = Field(ge=0.0, le=1.0)

    def __init__(self, options: Options):
        self.config = SimulationConfig(track_efficiency=options.track_efficiency)

    def simulate(self, particles, job) -> Simulated:
        return Simulated(reco=simulate(particles, self.config, job.seed))
