"""Build a campaign's chain of stages from its ``stages`` section.

Python plugins are found in the ``smartbkg_prod.stages`` entry-point group by the name the
spec gives; a plugin's ``options`` are validated by its ``Options`` model here, before any
event is produced, and every problem is a ``CONFIG`` error naming the spec field.

>>> from smartbkg_prod.spec import Campaign
>>> chain = build_chain(Campaign(name="d", process="bbbar_mixed", events=10, events_per_job=10))
>>> [stage.name for stage in chain.stages()]
['builtin', 'builtin', 'builtin']
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points

from pydantic import ValidationError

from smartbkg_prod.exitcodes import ExitCode
from smartbkg_prod.spec import (
    BUILTIN_STAGE,
    EXTERNAL_STAGE,
    FILES_STAGE,
    IN_SIMULATION_STAGE,
    Campaign,
    StageConfig,
)
from smartbkg_prod.stages import (
    GenerationStage,
    SimulationStage,
    SkimStage,
    Stage,
    StageError,
    StageKind,
)

ENTRY_POINT_GROUP = "smartbkg_prod.stages"
_BASES: dict[StageKind, type[Stage]] = {
    "generation": GenerationStage,
    "simulation": SimulationStage,
    "skim": SkimStage,
}


@dataclass(frozen=True)
class Chain:
    generation: GenerationStage
    simulation: SimulationStage
    skim: SkimStage

    def stages(self) -> tuple[Stage, Stage, Stage]:
        return (self.generation, self.simulation, self.skim)


def installed_plugins() -> dict[str, str]:
    """Plugin stage names and what they point to (``module:attribute``)."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_plugin(kind: StageKind, config: StageConfig) -> Stage:
    """The plugin registered as ``config.name``, built with its validated options."""
    where = f"stages.{kind}"
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == config.name]
    if not found:
        installed = ", ".join(sorted(installed_plugins())) or "none"
        raise StageError(
            ExitCode.CONFIG,
            kind,
            f"{where}.name: no stage named {config.name!r} (built-in: {BUILTIN_STAGE}, "
            f"{EXTERNAL_STAGE}; installed plugins: {installed}; a plugin registers in the "
            f"{ENTRY_POINT_GROUP!r} entry-point group of its package)",
        )
    try:
        cls = found[0].load()
    except Exception as error:  # noqa: BLE001 - any import problem of third-party code
        raise StageError(
            ExitCode.CONFIG,
            kind,
            f"{where}.name: plugin {config.name!r} ({found[0].value}) cannot be loaded: "
            f"{type(error).__name__}: {error}",
        ) from None
    base = _BASES[kind]
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise StageError(
            ExitCode.CONFIG,
            kind,
            f"{where}.name: plugin {config.name!r} ({found[0].value}) is not a "
            f"{base.__name__} subclass",
        )
    try:
        options = cls.Options.model_validate(config.options)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        raise StageError(
            ExitCode.CONFIG,
            kind,
            f"{where}.options{'.' + field if field else ''}: {first['msg']}",
        ) from None
    stage = cls(options)
    stage.name = config.name
    return stage


def build_chain(campaign: Campaign) -> Chain:
    """The stages the campaign's spec selects; raises ``StageError`` (``CONFIG``)."""
    from smartbkg_prod.stages.builtin import (
        FastDetector,
        FileInput,
        HadronicSkim,
        InSimulationSkim,
        PythiaGeneration,
    )
    from smartbkg_prod.stages.external import ExternalSimulation, ExternalSkim

    stages = campaign.stages
    if stages.generation.name == BUILTIN_STAGE:
        generation: Stage = PythiaGeneration(campaign.process)
    elif stages.generation.name == FILES_STAGE:
        generation = FileInput(stages.generation.files)
    else:
        generation = load_plugin("generation", stages.generation)

    skim_in_simulation = stages.skim.name == IN_SIMULATION_STAGE
    if stages.simulation.name == BUILTIN_STAGE:
        simulation: Stage = FastDetector(campaign.simulation)
    elif stages.simulation.name == EXTERNAL_STAGE:
        simulation = ExternalSimulation(
            stages.simulation,
            campaign,
            # The control sample's monitor counts tracks and photons per event.
            need_reco=not skim_in_simulation or campaign.filter.control_fraction > 0,
            need_skim=skim_in_simulation,
        )
    else:
        simulation = load_plugin("simulation", stages.simulation)

    if stages.skim.name == BUILTIN_STAGE:
        skim: Stage = HadronicSkim(campaign.skim)
    elif stages.skim.name == EXTERNAL_STAGE:
        skim = ExternalSkim(stages.skim, campaign)
    elif skim_in_simulation:
        skim = InSimulationSkim()
    else:
        skim = load_plugin("skim", stages.skim)
    return Chain(generation, simulation, skim)  # type: ignore[arg-type]
