"""Campaign specs: Pydantic models for the YAML files in ``job_specs/``.

A campaign is generate -> NN filter -> simulate -> skim, split into jobs by
:mod:`smartbkg_prod.plan`. :func:`load_campaign` turns a YAML file into a validated
:class:`Campaign` or raises :class:`~smartbkg_prod.errors.SpecError` whose lines read
``SPEC: field.path: what is wrong (allowed: ...)``.

>>> c = Campaign(name="demo", process="bbbar_mixed", events=2000, events_per_job=500)
>>> c.n_jobs
4
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import reprlib
import shlex
import string
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from smartbkg_prod.errors import SpecError
from smartbkg_prod.files import PathText
from smartbkg_prod.filter.config import FilterConfig
from smartbkg_prod.physics.config import (
    ConfigModel,
    NonNegativeInt,
    PositiveInt,
    Process,
    SimulationConfig,
    SkimConfig,
)
from smartbkg_prod.redact import is_secret_name

# Beyond this a campaign is several campaigns (planning and tracking stay bounded).
MAX_JOBS = 10_000_000
# Job and campaign names become file and dataset names: keep them to a portable alphabet.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


class Resources(ConfigModel):
    """What one job asks of a batch slot."""

    cores: PositiveInt = 1
    memory_mb: PositiveInt = 2000
    walltime_s: Annotated[int, Field(gt=0, le=10_000_000)] = 3600  # the worker's alarm()
    gpus: NonNegativeInt = 0
    disk_mb: PositiveInt = 2000


class ContainerConfig(ConfigModel):
    """Where the worker runs: a bare process, or a container image."""

    image: str | None = None
    runtime: Literal["process", "docker"] = "process"

    @model_validator(mode="after")
    def _docker_needs_image(self) -> ContainerConfig:
        if self.runtime == "docker" and not self.image:
            raise ValueError("container.runtime 'docker' needs container.image")
        return self


class SitePolicy(ConfigModel):
    """Site selection for grid backends; ignored by the local backend."""

    allowed: list[str] = Field(default_factory=list)
    excluded: list[str] = Field(default_factory=list)
    overrides: dict[str, Resources] = Field(default_factory=dict)


class BackendConfig(ConfigModel):
    name: Literal["local", "slurm", "htcondor", "panda"] = "local"
    max_parallel: PositiveInt | None = Field(
        default=None,
        description="jobs in flight at once (local default: resources.cores of the machine)",
    )
    queue: str | None = None
    sites: SitePolicy = Field(default_factory=SitePolicy)
    poll_interval_s: Annotated[float, Field(gt=0, le=3600)] | None = Field(
        default=None,
        description="seconds between two state queries of the engine (default: the engine's "
        "own cadence, README 'Backends'); not part of the campaign id",
    )
    pending_timeout_s: Annotated[float, Field(gt=0)] | None = Field(
        default=None,
        description="an attempt queued longer than this is reported (log, status) as stuck, "
        "not silently waited on; not part of the campaign id",
    )
    options: dict[str, str] = Field(default_factory=dict)

    @field_validator("options")
    @classmethod
    def _no_credentials(cls, options: dict[str, str]) -> dict[str, str]:
        # Specs are stored, copied into every job file and shown on the monitor page.
        secret = sorted(name for name in options if is_secret_name(name))
        if secret:
            raise ValueError(
                f"backend.options {', '.join(secret)} look like credentials; specs must not hold "
                "them: use the engine's environment (PANDA_AUTH_ID_TOKEN, OIDC_AUTH_TOKEN_FILE, "
                "X509_USER_PROXY, docker login) instead"
            )
        return options


class RetryPolicy(ConfigModel):
    """What the driver does when an attempt fails (``smartbkg_prod.recovery.retry_policy``).

    - ``auto`` (default): the driver asks recovery and applies the safe actions itself:
      more memory (up to ``max_memory_mb``), more walltime (up to ``max_walltime_s``), a
      split whose parts regenerate exactly the parent's events, excluding a site for that
      job (never the campaign's only site), a plain retry; a kill is only ever proposed,
      and the job waits for an operator's review;
    - ``review``: a failed job waits for an operator's decision (``recover list``);
    - ``blind``: same-seed retries with the same resources, as engines do.

    Every policy stops at ``max_attempts`` attempts per job. The caps default to
    3x the campaign's memory and 4x its walltime.
    """

    max_attempts: Annotated[int, Field(ge=1, le=20)] = 3
    policy: Literal["auto", "review", "blind"] = "auto"
    max_memory_mb: PositiveInt | None = None
    max_walltime_s: Annotated[int, Field(gt=0, le=10_000_000)] | None = None


class Outputs(ConfigModel):
    directory: PathText = "output"
    format: Literal["root"] = "root"
    keep_mc_particles: bool = True

    @field_validator("directory")
    @classmethod
    def _directory_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("outputs.directory must not be empty")
        return value


BUILTIN_STAGE, EXTERNAL_STAGE, FILES_STAGE, IN_SIMULATION_STAGE = (
    "builtin",
    "external",
    "files",
    "in_simulation",
)
# What an external stage's command template may name; the worker fills each in.
COMMAND_PLACEHOLDERS = {
    "input": "the file the stage reads (HepMC3 for simulation, ROOT 'reco' tree for skim)",
    "output": "the ROOT file the stage must write",
    "config": "a JSON file with the campaign's simulation and skim sections",
    "seed": "the job's seed",
    "first_event": "number of the job's first event",
    "n_events": "events in the input file",
    "job_index": "the job's index",
    "attempt": "the attempt number",
    "workdir": "a scratch directory of this stage, removed after the job",
}
INPUT_SUFFIXES = (".hepmc3", ".hepmc", ".root")
STAGE_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,99}$"


def _command_fields(part: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(part) if name is not None]


class StageConfig(ConfigModel):
    """One stage of the chain: ``builtin`` (the default), ``external`` (a command that reads
    and writes files, see :mod:`smartbkg_prod.physics.recoio`), or a plugin registered under
    the ``smartbkg_prod.stages`` entry-point group, by name, with its own ``options``."""

    name: Annotated[str, Field(pattern=STAGE_NAME_PATTERN)] = BUILTIN_STAGE
    command: list[str] | None = Field(
        default=None,
        description="external: the command, as a list of arguments or one string split like "
        "a shell would (no shell runs it); {input}, {output}, {seed}, ... are filled in",
    )
    timeout_s: Annotated[int, Field(gt=0, le=10_000_000)] | None = Field(
        default=None,
        description="external: seconds before the command is killed (default: "
        "what is left of the job's walltime)",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="a plugin's options, validated by the plugin"
    )

    @field_validator("command", mode="before")
    @classmethod
    def _split_command(cls, value: Any) -> Any:
        return shlex.split(value) if isinstance(value, str) else value

    @field_validator("command")
    @classmethod
    def _known_placeholders(cls, command: list[str] | None) -> list[str] | None:
        if command is not None:
            if not command or not command[0]:
                raise ValueError("an external command needs at least the program to run")
            for part in command:
                try:
                    names = _command_fields(part)
                except ValueError as error:
                    raise ValueError(
                        f"{part!r}: {error} (write {{{{ for a literal brace)"
                    ) from None
                unknown = sorted(set(names) - set(COMMAND_PLACEHOLDERS))
                if unknown:
                    raise ValueError(
                        f"unknown placeholder {{{unknown[0]}}} in {part!r} "
                        f"(allowed: {', '.join('{' + n + '}' for n in COMMAND_PLACEHOLDERS)})"
                    )
        return command

    @model_validator(mode="after")
    def _fields_fit_the_kind(self) -> StageConfig:
        if self.name == EXTERNAL_STAGE and self.command is None:
            raise ValueError(
                "an external stage needs a command (e.g. command: my-sim {input} {output})"
            )
        if self.name != EXTERNAL_STAGE and (self.command is not None or self.timeout_s is not None):
            raise ValueError(f"command and timeout_s are for name: external, not {self.name!r}")
        if self.name in (BUILTIN_STAGE, EXTERNAL_STAGE, IN_SIMULATION_STAGE) and self.options:
            raise ValueError(
                f"options are for plugin stages; the {self.name} stage takes none "
                "(the built-ins are set by the campaign's simulation and skim sections)"
            )
        return self


class GenerationStageConfig(StageConfig):
    """Generation: ``builtin`` (Pythia 8), ``files`` (existing generator-level files) or a plugin."""

    files: list[PathText] = Field(
        default_factory=list,
        description="name: files: HepMC3 (.hepmc3, .hepmc) or ROOT MCParticle files (.root, the "
        "'events' tree of smartbkg-prod's output) whose events, in this order, are the "
        "campaign's events 0, 1, ...; relative paths are from the worker's directory",
    )

    @model_validator(mode="after")
    def _generation_kinds(self) -> GenerationStageConfig:
        if self.name in (EXTERNAL_STAGE, IN_SIMULATION_STAGE):
            raise ValueError(
                f"generation cannot be {self.name!r}: generate elsewhere and read the files "
                "with name: files"
            )
        if self.name == FILES_STAGE:
            if not self.files:
                raise ValueError("name: files needs files (a list of HepMC3 or ROOT files)")
            wrong = [path for path in self.files if not path.endswith(INPUT_SUFFIXES)]
            if wrong:
                raise ValueError(
                    f"{wrong[0]!r} is neither HepMC3 nor ROOT (allowed suffixes: "
                    f"{', '.join(INPUT_SUFFIXES)})"
                )
        elif self.files:
            raise ValueError(f"files are for name: files, not {self.name!r}")
        return self


class StagesConfig(ConfigModel):
    """Which implementation runs each stage of generate -> filter -> simulate -> skim."""

    generation: GenerationStageConfig = Field(default_factory=GenerationStageConfig)
    simulation: StageConfig = Field(default_factory=StageConfig)
    skim: StageConfig = Field(default_factory=StageConfig)

    @model_validator(mode="after")
    def _stage_kinds(self) -> StagesConfig:
        if self.simulation.name in (FILES_STAGE, IN_SIMULATION_STAGE):
            raise ValueError(f"simulation cannot be {self.simulation.name!r}")
        if self.skim.name == FILES_STAGE:
            raise ValueError("skim cannot be 'files'")
        if self.skim.name == IN_SIMULATION_STAGE and self.simulation.name == BUILTIN_STAGE:
            raise ValueError(
                "skim in_simulation reads the skim decision from the simulation stage's "
                "output: the simulation must be external or a plugin"
            )
        return self


class Campaign(ConfigModel):
    """One production campaign."""

    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    description: str = ""
    process: Process
    events: PositiveInt
    events_per_job: PositiveInt
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 12345
    filter: FilterConfig = Field(default_factory=FilterConfig)
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)
    skim: SkimConfig = Field(default_factory=SkimConfig)
    resources: Resources = Field(default_factory=Resources)
    container: ContainerConfig = Field(default_factory=ContainerConfig)
    backend: BackendConfig = Field(default_factory=BackendConfig)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    outputs: Outputs = Field(default_factory=Outputs)
    stages: StagesConfig = Field(default_factory=StagesConfig)

    @model_validator(mode="after")
    def _job_size_fits(self) -> Campaign:
        if self.events_per_job > self.events:
            raise ValueError(
                f"events_per_job ({self.events_per_job}) is larger than events ({self.events}); "
                "lower events_per_job or raise events"
            )
        if self.n_jobs > MAX_JOBS:
            raise ValueError(
                f"{self.n_jobs} jobs is more than {MAX_JOBS:,} per campaign; "
                "raise events_per_job or split the campaign"
            )
        return self

    @model_validator(mode="after")
    def _retry_caps_above_requests(self) -> Campaign:
        for cap, request, name in (
            (self.retry.max_memory_mb, self.resources.memory_mb, "memory_mb"),
            (self.retry.max_walltime_s, self.resources.walltime_s, "walltime_s"),
        ):
            if cap is not None and cap < request:
                raise ValueError(
                    f"retry.max_{name} ({cap}) is below resources.{name} ({request}): "
                    f"the cap must be at least what every job already asks for"
                )
        return self

    @property
    def n_jobs(self) -> int:
        return -(-self.events // self.events_per_job)

    @model_serializer(mode="wrap")
    def _omit_default_stages(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # The built-in chain is written as no `stages` at all: specs from before stages
        # could be chosen keep their campaign ids, and job files stay readable by workers
        # of that time.
        data = handler(self)
        if self.stages == StagesConfig():
            data.pop("stages", None)
        return data

    def normalized(self) -> dict[str, Any]:
        """The spec with every default filled in (but a default ``stages``), as plain
        JSON-able data."""
        return self.model_dump(mode="json")

    @property
    def campaign_id(self) -> str:
        """Identity: hash of the normalized spec. Description and output directory do not
        change which events are produced, so they do not change the identity."""
        identity = self.normalized()
        identity.pop("description")
        identity["outputs"].pop("directory")
        if identity["filter"]["tune"] == "off":  # untuned specs keep their identities
            for key in ("tune", "tune_pilot_jobs", "tune_costs"):
                identity["filter"].pop(key)
        identity["backend"] = {}
        identity["resources"] = {}
        identity["retry"] = {}
        blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
        return f"{self.name}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


# Values quoted in error lines are shortened: a YAML alias bomb (nested anchors) would
# otherwise turn into a message of hundreds of megabytes.
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring = 2, 4, 4, 60


def _key(part: Any) -> str:
    # A key with a line break or control character would split or forge error lines.
    text = str(part)
    return text if text.isprintable() else _SHORT.repr(text)


def _field_path(loc: tuple[Any, ...]) -> str:
    return ".".join(_key(part) for part in loc) or "(top level)"


def _unwrap(annotation: Any) -> Any:
    """``X`` of ``Annotated[X, ...]`` and of ``X | None``."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            kinds = [kind for kind in get_args(annotation) if kind is not type(None)]
            if len(kinds) != 1:
                return annotation
            annotation = kinds[0]
        else:
            return annotation


def allowed_keys(loc: tuple[Any, ...], model: type[BaseModel] | None = None) -> list[str]:
    """The keys allowed beside the unknown key at ``loc`` (a pydantic error location),
    following the spec's sections, mappings and lists.

    >>> allowed_keys(("backend", "sites", "overrides", "CERN", "memory"))[:3]
    ['cores', 'memory_mb', 'walltime_s']
    """
    kind: Any = model or Campaign
    for part in loc[:-1]:
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            field = kind.model_fields.get(part)
            kind = _unwrap(field.annotation) if field is not None else None
        elif get_origin(kind) is dict:
            kind = _unwrap(get_args(kind)[1])
        elif get_origin(kind) is list:
            kind = _unwrap(get_args(kind)[0])
        else:
            return []
    if isinstance(kind, type) and issubclass(kind, BaseModel):
        return list(kind.model_fields)
    return []


def _unknown_key(loc: tuple[Any, ...]) -> str:
    key = _key(loc[-1])
    allowed = allowed_keys(loc)
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1, cutoff=0.6)
    if close:
        return f"unknown key '{key}' (did you mean '{close[0]}'?)"
    if allowed:
        return f"unknown key '{key}' (allowed: {', '.join(allowed)})"
    return f"unknown key '{key}' (remove it or check its spelling)"


def _describe(error: dict[str, Any]) -> str:
    """One readable line for one pydantic error, with what is allowed where we know it."""
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = _SHORT.repr(error.get("input"))
    if kind == "extra_forbidden":
        return _unknown_key(error["loc"])
    if kind == "missing":
        return "required field is missing"
    if kind == "literal_error":
        return f"{value} is not allowed (allowed: {ctx.get('expected', '')})"
    if kind in {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}:
        bound = {
            "greater_than": ">",
            "greater_than_equal": ">=",
            "less_than": "<",
            "less_than_equal": "<=",
        }[kind]
        limit = next(iter(ctx.values()))
        return f"{value} is out of range (allowed: {bound} {limit})"
    if kind == "string_pattern_mismatch":
        return f"{value} is not a valid name (allowed: letters, digits, '.', '_', '-'; up to 100 characters)"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        expected = kind.removesuffix("_type").removesuffix("_parsing")
        return f"{value} has the wrong type (allowed: {expected})"
    message = error["msg"].removeprefix("Value error, ")
    return message


def validation_problems(error: ValidationError) -> list[str]:
    """Pydantic errors as ``field.path: what is wrong`` lines."""
    problems = []
    for item in error.errors():
        # Model-level validators report at their section's path; name the section.
        problems.append(f"{_field_path(item['loc'])}: {_describe(item)}")
    return problems


def parse_campaign(data: Any, source: str = "<spec>") -> Campaign:
    """Validate already-parsed YAML/JSON data; raise SpecError naming ``source``."""
    if data is None:
        raise SpecError(
            source,
            ["(top level): the file is empty (expected a mapping with name, process, events, ...)"],
        )
    if not isinstance(data, dict):
        raise SpecError(
            source,
            [
                f"(top level): expected a mapping of fields, got {type(data).__name__} (allowed: a YAML mapping)"
            ],
        )
    try:
        return Campaign.model_validate(data)
    except ValidationError as error:
        raise SpecError(source, validation_problems(error)) from None


def load_campaign(path: str | Path) -> Campaign:
    """Read and validate a campaign YAML file.

    Raises :class:`SpecError` for an unreadable, non-YAML, empty or invalid file.
    """
    path = Path(path)
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(source, ["(file): no such file (check the path)"]) from None
    except IsADirectoryError:
        raise SpecError(source, ["(file): is a directory, not a YAML file"]) from None
    except UnicodeDecodeError:
        raise SpecError(source, ["(file): not a text file (expected UTF-8 YAML)"]) from None
    except OSError as error:
        raise SpecError(source, [f"(file): cannot be read: {error.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise SpecError(source, [f"(file): not valid YAML{where}: {problem}"]) from None
    return parse_campaign(data, source)


def dump_campaign(campaign: Campaign) -> str:
    """YAML text of a campaign (every default written out)."""
    return yaml.safe_dump(campaign.normalized(), sort_keys=False)


_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_component(name: str) -> str:
    """A name usable as one path component; never '..' or a separator."""
    cleaned = _SAFE.sub("_", name).strip(".") or "_"
    return cleaned
