"""The filter library's own configuration: how the NN filter is applied between
generation and simulation. A campaign spec embeds it as its ``filter`` section.

>>> FilterConfig(mode="sample", model="models/filter.pt").p_min
0.05
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from smartbkg_prod.files import PathText
from smartbkg_prod.physics.config import ConfigModel, Fraction, PositiveInt

FilterMode = Literal["off", "cut", "sample"]


class FilterConfig(ConfigModel):
    """The NN filter stage applied between generation and simulation."""

    mode: FilterMode = "off"
    model: PathText | None = Field(
        default=None, description="path to a model artifact (.pt) made by `smartbkg-prod train`"
    )
    threshold: Fraction = Field(
        default=0.5, description="cut mode: keep events with score > threshold"
    )
    p_min: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        default=0.05,
        description="sample mode: smallest keep probability (weights are at most 1/p_min)",
    )
    batch_size: PositiveInt = 4096
    device: Literal["auto", "cpu", "cuda"] = "auto"
    control_fraction: Annotated[float, Field(ge=0.0, le=0.5)] = Field(
        default=0.0,
        description="fraction of generated events simulated whatever the filter decides: "
        "the unfiltered control sample the monitor checks the filter's bias and "
        "speedup against (0 = none)",
    )
    tune: Literal["off", "auto"] = Field(
        default="off",
        description="sample mode: 'auto' runs the first tune_pilot_jobs jobs with the "
        "model's k and p_min, then the others with the k and p_min (>= p_min) that "
        "maximise the effective speedup at the costs the pilot jobs measured (needs "
        "control_fraction > 0; the choice is recorded, retries reuse it)",
    )
    tune_pilot_jobs: PositiveInt = Field(
        default=4, description="tune: auto: jobs run before the choice is made"
    )
    tune_costs: Literal["measured", "reference"] = Field(
        default="measured",
        description="tune: auto: the pilot jobs' stage costs, or Belle II's reference "
        "t_g and t_s with the measured t_NN",
    )

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off_is_false(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `off` as boolean False; users mean the mode "off".
        return "off" if value is False else value

    @model_validator(mode="after")
    def _model_needed_when_filtering(self) -> FilterConfig:
        if self.mode != "off" and not self.model:
            raise ValueError(
                f"filter mode '{self.mode}' needs filter.model (path to a trained model), "
                "or set filter.mode: off"
            )
        if self.mode == "off" and self.control_fraction > 0:
            raise ValueError(
                "filter.control_fraction needs a filter to check: set filter.mode to cut "
                "or sample, or control_fraction: 0"
            )
        if self.tune == "auto" and (self.mode != "sample" or self.control_fraction <= 0):
            raise ValueError(
                "filter.tune: auto tunes sample mode from its control sample: set "
                "filter.mode: sample and filter.control_fraction > 0, or tune: off"
            )
        return self
