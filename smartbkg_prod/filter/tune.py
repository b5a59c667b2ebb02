"""``filter.tune: auto``: keep probabilities tuned to the costs a campaign measures.

Sample mode keeps an event with ``p = clip(k √q, p_min, 1)``, q the model's calibrated
pass probability; the model ships the (k, p_min) that are best at the Belle II reference
costs. Where simulation is cheaper or dearer than that, other values are better. A
campaign with ``filter.tune: auto`` and a control sample runs its first
``filter.tune_pilot_jobs`` jobs with the model's values, then chooses (k, p_min) from
what those jobs measured and runs the other jobs with them:

* the costs ``t_g, t_NN, t_s`` per event from the pilot jobs' stage times (or the
  reference t_g, t_s with ``filter.tune_costs: reference``);
* ``⟨p⟩_all`` from the q of every generated event and ``⟨1/p⟩_pass`` from the q of the
  skimmed control events, both histogrammed by every job on the fixed grid :data:`Q_EDGES`
  (the control sample is unfiltered, so its skimmed events are the passing events'
  distribution, whatever the calibration says).

The choice maximises the effective speedup (:mod:`smartbkg_prod.filter.speedup`) over a
grid of k and the p_min values at or above ``filter.p_min`` (the bias limit: weights stay
at most 1/p_min), and is refused, keeping the model's values, when the pilot's control
sample is too small or its bias check raised an alarm. The choice is recorded with the
campaign and every later attempt of a tuned job uses it, so a retry regenerates the same
events. Costs may differ between sites; the choice for each site is reported, but the
jobs run with the choice for the pooled costs, because a job's events must not depend
on where it happened to run.

>>> hist = TuneHistograms.empty()
>>> hist.n_all[10], len(Q_EDGES) == len(hist.n_all) + 1
(0, True)
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from smartbkg_prod.filter.speedup import StageCosts, sampling_speedup_from_means

# q bins: [0, 1e-6) then 90 logarithmic bins up to 1 (q = 1 falls in the last one).
Q_EDGES = np.concatenate([[0.0], np.geomspace(1e-6, 1.0, 91)])
Q_EDGES[-1] = np.nextafter(1.0, 2.0)
# Each bin's q: 0 in the first, the geometric centre elsewhere.
Q_CENTRES = np.concatenate([[0.0], np.sqrt(Q_EDGES[1:-1] * Q_EDGES[2:])])
Q_CENTRES[-1] = np.sqrt(Q_EDGES[-2] * 1.0)
SCALES = np.geomspace(0.05, 2000.0, 400)
P_MIN_CHOICES = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
MIN_CONTROL_SKIMMED = 100  # as the bias check: fewer skimmed control events tune nothing


class TuneHistograms(BaseModel):
    """Counts per q bin (:data:`Q_EDGES`) of every generated event and of the skimmed
    control events; one job's, or the sum of many."""

    model_config = ConfigDict(extra="forbid")

    n_all: list[int] = Field(description="generated events per q bin")
    n_control_skimmed: list[int] = Field(description="skimmed control events per q bin")

    @classmethod
    def empty(cls) -> TuneHistograms:
        zeros = [0] * (len(Q_EDGES) - 1)
        return cls(n_all=zeros, n_control_skimmed=list(zeros))

    @classmethod
    def of_events(cls, q_all: np.ndarray, q_control_skimmed: np.ndarray) -> TuneHistograms:
        return cls(
            n_all=_counts(q_all).tolist(), n_control_skimmed=_counts(q_control_skimmed).tolist()
        )

    @classmethod
    def total(cls, parts: Iterable[TuneHistograms | dict]) -> TuneHistograms:
        n_all = np.zeros(len(Q_EDGES) - 1, dtype=np.int64)
        n_control = np.zeros_like(n_all)
        for part in parts:
            block = part.model_dump() if isinstance(part, TuneHistograms) else part
            n_all += np.asarray(block["n_all"], dtype=np.int64)
            n_control += np.asarray(block["n_control_skimmed"], dtype=np.int64)
        return cls(n_all=n_all.tolist(), n_control_skimmed=n_control.tolist())


def _counts(q: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(q, dtype=np.float64), 0.0, 1.0)
    return np.histogram(q, bins=Q_EDGES)[0]


def expected_speedup(
    histograms: TuneHistograms, scale: float, p_min: float, costs: StageCosts
) -> float | None:
    """Effective speedup of ``p = clip(scale √q, p_min, 1)`` on the histogrammed events."""
    n_all = np.asarray(histograms.n_all, dtype=np.float64)
    n_pass = np.asarray(histograms.n_control_skimmed, dtype=np.float64)
    if n_all.sum() <= 0 or n_pass.sum() <= 0:
        return None
    p = np.clip(scale * np.sqrt(Q_CENTRES), p_min, 1.0)
    mean_p = float(np.sum(n_all * p) / n_all.sum())
    mean_inverse_p = float(np.sum(n_pass / p) / n_pass.sum())
    return sampling_speedup_from_means(mean_inverse_p, mean_p, costs)


class TuneChoice(BaseModel):
    """The best (k, p_min) for one set of costs, beside what the model's values give."""

    scale: float
    p_min: float
    speedup: float
    model_speedup: float | None  # the model's own (k, p_min) at the same costs
    costs_ms: dict[str, float]


def best_choice(
    histograms: TuneHistograms,
    costs: StageCosts,
    p_min_floor: float,
    model_scale: float,
    model_p_min: float,
) -> TuneChoice:
    """Grid search of (k, p_min ≥ ``p_min_floor``) for the best expected speedup."""
    best = (-np.inf, model_scale, max(model_p_min, p_min_floor))
    for p_min in (choice for choice in P_MIN_CHOICES if choice >= p_min_floor):
        for scale in SCALES:
            speedup = expected_speedup(histograms, float(scale), p_min, costs)
            if speedup is not None and speedup > best[0]:
                best = (speedup, float(scale), p_min)
    return TuneChoice(
        scale=best[1],
        p_min=best[2],
        speedup=float(best[0]),
        model_speedup=expected_speedup(
            histograms, model_scale, max(model_p_min, p_min_floor), costs
        ),
        costs_ms=costs.to_dict(),
    )


class FilterTuning(BaseModel):
    """What ``filter.tune: auto`` chose for a campaign (recorded with it; jobs from
    ``first_tuned_job`` on run with ``scale`` and ``p_min``)."""

    model_config = ConfigDict(extra="forbid")

    scale: float
    p_min: float
    tuned: bool  # False: the model's values were kept (see ``note``)
    note: str = ""
    costs: str  # "measured" | "reference"
    first_tuned_job: int
    pilot_jobs_succeeded: int
    control_skimmed: int
    expected_speedup: float | None = None
    model_scale: float
    model_p_min: float
    model_expected_speedup: float | None = None
    costs_ms: dict[str, float] = Field(default_factory=dict)
    sites: dict[str, TuneChoice] = Field(default_factory=dict)
    tuned_at: float | None = None


def choose_tuning(
    histograms: TuneHistograms,
    costs: StageCosts | None,
    site_costs: dict[str, StageCosts],
    *,
    p_min_floor: float,
    model_scale: float,
    model_p_min: float,
    costs_name: str,
    first_tuned_job: int,
    pilot_jobs_succeeded: int,
    biased: bool,
) -> FilterTuning:
    """The campaign's tuning from its pilot jobs' histograms and costs (pooled, per site)."""
    control_skimmed = int(sum(histograms.n_control_skimmed))
    kept_values = {
        "scale": model_scale,
        "p_min": max(model_p_min, p_min_floor),
        "costs": costs_name,
        "first_tuned_job": first_tuned_job,
        "pilot_jobs_succeeded": pilot_jobs_succeeded,
        "control_skimmed": control_skimmed,
        "model_scale": model_scale,
        "model_p_min": model_p_min,
    }
    refusal = None
    if costs is None:
        refusal = "no pilot job measured its stage costs"
    elif control_skimmed < MIN_CONTROL_SKIMMED:
        refusal = (
            f"{control_skimmed} skimmed control events in the pilot jobs, fewer than "
            f"{MIN_CONTROL_SKIMMED}: raise filter.control_fraction or filter.tune_pilot_jobs"
        )
    elif biased:
        refusal = "the pilot jobs' control sample raised the bias alarm"
    if refusal is not None:
        return FilterTuning(tuned=False, note=f"model values kept: {refusal}", **kept_values)
    choice = best_choice(histograms, costs, p_min_floor, model_scale, model_p_min)
    sites = {
        site: best_choice(histograms, site_cost, p_min_floor, model_scale, model_p_min)
        for site, site_cost in sorted(site_costs.items())
    }
    return FilterTuning(
        **{**kept_values, "scale": choice.scale, "p_min": choice.p_min},
        tuned=True,
        expected_speedup=choice.speedup,
        model_expected_speedup=choice.model_speedup,
        costs_ms=choice.costs_ms,
        sites=sites,
    )
