"""What one job reports about its filter: the control sample's counts and fixed-binning
histograms (made by :func:`smartbkg_prod.filter.control.job_monitor`, added up over jobs
by :func:`~smartbkg_prod.filter.control.add_monitors`). Pydantic models only: a job
report embeds them, so they load without numpy or scipy.

>>> FilterMonitor(control_fraction=0.1, control_events=10, control_skimmed=1,
...               control_kept=5, control_kept_skimmed=1, control_sum_keep_probability=4.2).histograms
{}
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

# Counts must fit a database's 64-bit integer columns.
Count = Annotated[int, Field(ge=0, le=2**63 - 1)]


class BiasHistogram(BaseModel):
    """One monitored variable of one job's skimmed events (fixed binning, so jobs add up):
    the control sample's counts, and Σw and Σw² of the filter-kept events that are not
    control events."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    edges: list[float]
    control: list[Count]
    weighted: list[float]
    weighted_squares: list[float]


class FilterMonitor(BaseModel):
    """What one job's control sample says about its filter (``filter.control_fraction``).

    Control events are a random fraction of the generated events simulated whatever the
    filter decided; ``control_sum_keep_probability`` is Σp over them and
    ``control_sum_inverse_p_skimmed`` Σ1/p over those the skim passed (sample mode only:
    a cut gives p = 0). ``histograms`` compare the control sample with the filter-kept,
    weighted, non-control events, variable by variable.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    control_fraction: float = Field(gt=0, le=1)
    control_events: Count
    control_skimmed: Count
    control_kept: Count
    control_kept_skimmed: Count
    control_sum_keep_probability: float = Field(ge=0)
    control_sum_inverse_p_skimmed: float | None = Field(default=None, ge=0)
    histograms: dict[str, BiasHistogram] = Field(default_factory=dict)
    # Sample mode: counts per bin of the model's calibrated pass probability q of every
    # generated event (``n_all``) and of the skimmed control events (``n_control_skimmed``),
    # on the fixed grid of smartbkg_prod.filter.tune (what ``filter.tune: auto`` reads).
    tune_histograms: dict[str, list[Count]] | None = None
