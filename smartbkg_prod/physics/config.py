"""The physics library's own configuration: which process to generate, and the settings
of the fast detector simulation and of the hadronic B-tag skim.

Pydantic models only (no numpy, no Pythia), so a campaign spec can embed them cheaply:
:class:`smartbkg_prod.spec.Campaign` uses them as its ``simulation`` and ``skim`` sections.

>>> SkimConfig().min_tracks
3
>>> SimulationConfig(theta_min_deg=20).theta_max_deg
150.0
"""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

Process = Literal[
    "bbbar_mixed",  # Y(4S) -> B0 anti-B0
    "bbbar_charged",  # Y(4S) -> B+ B-
    "bbbar_generic",  # Y(4S) with its natural 51.4% / 48.6% charged / mixed split
    "continuum_uds",  # e+e- -> q qbar, q = u, d, s
    "continuum_cc",  # e+e- -> c cbar
]
PROCESSES: tuple[str, ...] = get_args(Process)
# Pythia's Random:seed accepts 0..900_000_000 (0 = time based, which we never use); job
# seeds are derived into 1..PYTHIA_MAX_SEED.
PYTHIA_MAX_SEED = 900_000_000

# Counts stay exact in JSON and fit a database's 64-bit integers.
MAX_COUNT = 2**53
PositiveInt = Annotated[int, Field(gt=0, le=MAX_COUNT)]
NonNegativeInt = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class ConfigModel(BaseModel):
    """Base for every configuration section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SimulationConfig(ConfigModel):
    """Fast parametric detector simulation (Belle II-like)."""

    theta_min_deg: Annotated[float, Field(ge=0.0, le=180.0)] = 17.0
    theta_max_deg: Annotated[float, Field(ge=0.0, le=180.0)] = 150.0
    track_pt_min: Annotated[float, Field(ge=0.0)] = 0.05
    track_efficiency: Fraction = 0.95
    pt_resolution_a: Annotated[float, Field(ge=0.0)] = 0.0011  # sigma_pt/pt = a*pt (+) b/beta
    pt_resolution_b: Annotated[float, Field(ge=0.0)] = 0.0025
    photon_energy_min: Annotated[float, Field(ge=0.0)] = 0.05
    photon_efficiency: Fraction = 0.95
    photon_resolution_stochastic: Annotated[float, Field(ge=0.0)] = (
        0.02  # sigma_E/E = s/E^(1/4) (+) c
    )
    photon_resolution_constant: Annotated[float, Field(ge=0.0)] = 0.016
    kaon_id_efficiency: Fraction = 0.90
    pion_to_kaon_misid: Fraction = 0.05
    vertex_resolution_mm: Annotated[float, Field(ge=0.0)] = 0.02

    @model_validator(mode="after")
    def _theta_range(self) -> SimulationConfig:
        if self.theta_min_deg >= self.theta_max_deg:
            raise ValueError("theta_min_deg must be smaller than theta_max_deg")
        return self


class SkimConfig(ConfigModel):
    """Hadronic B-tag skim on the simulated objects."""

    name: Literal["hadronic_btag"] = "hadronic_btag"
    # Loose FEI-like preselection: retention on generic B Bbar ~3%, continuum well below 1%
    # (measured: benchmarks/results/worker.json).
    mbc_min: Annotated[float, Field(gt=0.0)] = 5.23
    delta_e_max: Annotated[float, Field(gt=0.0)] = 0.2
    d_mass_window: Annotated[float, Field(gt=0.0)] = 0.06
    dstar_delta_m_window: Annotated[float, Field(gt=0.0)] = 0.005
    pi0_mass_window: Annotated[float, Field(gt=0.0)] = 0.025
    r2_max: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        default=0.3, description="event cut: Fox-Wolfram R2 below this (continuum suppression)"
    )
    min_tracks: NonNegativeInt = Field(
        default=3, description="event cut: at least this many tracks"
    )
