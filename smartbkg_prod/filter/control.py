"""The control sample of a filtered campaign, and what it says about the filter.

A filter is checked where it runs, the way a trigger is: ``filter.control_fraction`` = f
sends a random fraction f of the generated events to simulation whatever the filter
decided (a prescaled pass-through stream). The control draw has its own random stream,
independent of the filter's, so

* the filter-kept events, weighted 1/p, stay an unbiased sample on their own;
* the control events are an unfiltered sample: the reference for the bias test, and the
  events on which the filter's keep rates and effective speedup are measured in situ (p is
  known for every event, kept or not).

An event may be in both samples; it is simulated and written once, with its ``weight``
(0 when it is only a control event) and a ``control`` flag. Each job summarises its
skimmed events as fixed-binning histograms (:func:`job_monitor`), so the monitor can add
jobs up (:func:`add_monitors`) and compare them (:func:`filter_check`). The test's
filtered sample is the kept events that are *not* control events: each event is a control
event independently of everything else, so the control events and the others are two
independent samples of the same events' distribution, and the weighted sum W = Σw of the
others, scaled by 1/(1 − f), estimates the same skimmed count as C/f:

* normalisation: the pull of W/(1 − f) against C/f, with Var(W) ≈ Σw² and Var(C) ≈ C
  (a cut shows here as the events it lost);
* shape, per variable: the χ² test of an unweighted against a weighted histogram
  (:func:`unweighted_weighted_chi2`), and the KL divergence of the normalised histograms
  (control = P, weighted = Q) with the value pure sampling noise would give. SmartBKG's
  absolute criterion KL < 0.0015 (:data:`KL_REFERENCE`) is not used: an unbiased sample's
  KL is its noise level, which falls with the sample size, so the χ² tests judge bias.

>>> from smartbkg_prod.physics.config import SkimConfig
>>> sorted(monitor_edges(SkimConfig()))[:3]
['best_mode', 'delta_e', 'mbc']
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel

from smartbkg_prod.filter.metrics import (
    calibrated_p_values,
    chi2_p_value,
    histogram,
    histogram_toys,
    kl_and_noise,
    unweighted_weighted_chi2,
)
from smartbkg_prod.filter.speedup import (
    StageCosts,
    cut_speedup_from_keep,
    max_speedup,
    sampling_speedup_from_means,
)
from smartbkg_prod.filter.summary import BiasHistogram, FilterMonitor
from smartbkg_prod.filter.tune import TuneHistograms
from smartbkg_prod.physics.beams import E_BEAM_CM
from smartbkg_prod.physics.config import SkimConfig
from smartbkg_prod.physics.skim import MODE_NAMES

# SmartBKG's absolute KL criterion: retired (see the module docstring), shown for comparison.
KL_REFERENCE = 0.0015
DEFAULT_ALPHA = 0.01  # family-wise false-alarm rate of the χ² tests (Bonferroni over variables)
# Below this many skimmed control events the χ² approximations are poor: no alarm yet.
MIN_CONTROL_SKIMMED = 100
CONTROL_STREAM = 0xC0117201  # the control draw's own random stream (see module docstring)
# No-bias toys calibrating the control-sample tests (histogram_toys): enough to resolve the
# Bonferroni limit (0.01 over 11 tests); a fixed seed keeps a campaign's figures stable.
CONTROL_TOYS = 2000
CONTROL_TOY_SEED = 0xC0117202


def monitor_edges(skim: SkimConfig) -> dict[str, np.ndarray]:
    """Fixed bin edges of the monitored variables: the same in every job of a campaign.

    Values outside the range fall in the first or last bin.
    """
    return {
        "mbc": np.linspace(skim.mbc_min, E_BEAM_CM, 21),
        "delta_e": np.linspace(-skim.delta_e_max, skim.delta_e_max, 21),
        "best_mode": np.arange(-0.5, len(MODE_NAMES)),
        "n_candidates": np.concatenate([np.arange(0.5, 10.5), [12.5, 15.5, 20.5, 30.5]]),
        "n_tracks": np.arange(-0.5, 25.5),
        "n_photons": np.arange(-0.5, 41.5, 2.0),
        "n_mc_particles": np.arange(0.0, 161.0, 4.0),
        # Charge conservation makes the charged multiplicity even: bins of two.
        "n_charged_final": np.arange(-0.5, 32.5, 2.0),
        "p_max_charged": np.linspace(0.0, 5.5, 23),
        "p_sum_charged": np.linspace(0.0, 12.0, 25),
    }


def control_draw(n_events: int, fraction: float, seed: int) -> np.ndarray:
    """Which of a job's events are control events (deterministic for the job's seed)."""
    if fraction <= 0.0:
        return np.zeros(n_events, dtype=bool)
    return np.random.default_rng([seed, CONTROL_STREAM]).random(n_events) < fraction


def job_monitor(
    variables: dict[str, np.ndarray],
    edges: dict[str, np.ndarray],
    *,
    passed: np.ndarray,
    kept: np.ndarray,
    control: np.ndarray,
    weights: np.ndarray,
    keep_probability: np.ndarray,
    control_fraction: float,
    sample_mode: bool,
    tune_histograms: TuneHistograms | None = None,
) -> FilterMonitor:
    """One job's :class:`FilterMonitor` from its simulated events (kept or control).

    ``variables`` are event variables of those events (NaN where undefined); ``weights`` is
    1/p for kept events and 0 for control-only ones; ``tune_histograms`` (sample mode)
    are the job's q counts for ``filter.tune: auto``.
    """
    passed, kept, control = (np.asarray(a, dtype=bool) for a in (passed, kept, control))
    weights = np.asarray(weights, dtype=np.float64)
    keep_probability = np.asarray(keep_probability, dtype=np.float64)
    control_passed = control & passed
    # The filtered sample of the test leaves control events out: the two samples are then
    # disjoint and, events being independent, independent (see the module docstring).
    filtered_passed = kept & ~control & passed
    histograms = {}
    for name, bin_edges in edges.items():
        values = np.asarray(variables[name], dtype=np.float64)
        finite = np.isfinite(values)
        reference = finite & control_passed
        filtered = finite & filtered_passed
        sums = histogram(bin_edges, values[filtered], weights[filtered]).view()
        histograms[name] = BiasHistogram(
            edges=bin_edges.tolist(),
            control=histogram(bin_edges, values[reference]).values().astype(int).tolist(),
            weighted=sums.value.tolist(),
            weighted_squares=sums.variance.tolist(),
        )
    return FilterMonitor(
        control_fraction=control_fraction,
        control_events=int(control.sum()),
        control_skimmed=int(control_passed.sum()),
        control_kept=int((control & kept).sum()),
        control_kept_skimmed=int((control_passed & kept).sum()),
        control_sum_keep_probability=float(keep_probability[control].sum()),
        control_sum_inverse_p_skimmed=(
            float(np.sum(1.0 / keep_probability[control_passed])) if sample_mode else None
        ),
        histograms=histograms,
        tune_histograms=tune_histograms.model_dump() if tune_histograms is not None else None,
    )


def add_monitors(monitors: Sequence[FilterMonitor | dict]) -> FilterMonitor | None:
    """The sum of many jobs' monitors (``None`` for none), given as models or as the dicts
    stored in report bodies (summed without building a model per job: a monitor page
    adds thousands). Jobs must share fraction and binning, as the jobs of one campaign do.
    """
    if not monitors:
        return None
    blocks = [m.model_dump() if isinstance(m, FilterMonitor) else m for m in monitors]
    first = blocks[0]
    binning = {name: h["edges"] for name, h in first["histograms"].items()}
    for other in blocks[1:]:
        if other["control_fraction"] != first["control_fraction"] or binning != {
            name: h["edges"] for name, h in other["histograms"].items()
        }:
            raise ValueError(
                "filter monitors of one campaign differ in control fraction or binning"
            )

    def total(field: str) -> float:
        return sum(block[field] for block in blocks)

    inverse = [block.get("control_sum_inverse_p_skimmed") for block in blocks]
    tune = [block.get("tune_histograms") for block in blocks]
    return FilterMonitor(
        control_fraction=first["control_fraction"],
        control_events=total("control_events"),
        control_skimmed=total("control_skimmed"),
        control_kept=total("control_kept"),
        control_kept_skimmed=total("control_kept_skimmed"),
        control_sum_keep_probability=total("control_sum_keep_probability"),
        control_sum_inverse_p_skimmed=None if None in inverse else float(sum(inverse)),
        histograms={
            name: BiasHistogram(
                edges=edges,
                **{
                    column: np.sum(
                        [block["histograms"][name][column] for block in blocks], axis=0
                    ).tolist()
                    for column in ("control", "weighted", "weighted_squares")
                },
            )
            for name, edges in binning.items()
        },
        tune_histograms=None if None in tune else TuneHistograms.total(tune).model_dump(),
    )


class VariableBias(BaseModel):
    """Control vs filtered-and-weighted distribution of one variable, whole campaign."""

    variable: str
    edges: list[float]
    control_estimate: list[float]  # C_b / f: skimmed events per bin from the control sample
    weighted_estimate: list[float]  # W_b / (1 − f): the same from the filtered sample
    control_events: int
    kl_divergence: float | None  # None where a control bin has no weighted event
    kl_sampling_noise: float | None
    chi2: float
    ndf: int
    p_value: float  # calibrated on `toys` no-bias toys (asymptotic where toys = 0)
    p_value_asymptotic: float | None = None
    toys: int = 0


class FilterCheck(BaseModel):
    """The campaign's filter seen through its control sample."""

    control_fraction: float
    control_events: int
    control_skimmed: int
    retention: float | None  # skim retention of unfiltered (control) events
    keep_rate_passing: float | None  # ε1: control events the skim passed that the filter kept
    keep_rate_failing: float | None  # ε0
    mean_keep_probability: float | None  # ⟨p⟩_all
    mean_inverse_p_passing: float | None  # ⟨1/p⟩_pass (sample mode)
    speedup: float | None  # effective speedup at ``costs``, measured on the control sample
    max_speedup: float | None
    costs_ms: dict[str, float]
    # The same at the campaign's own measured stage costs (whatever stages are plugged in).
    measured_speedup: float | None = None
    measured_costs_ms: dict[str, float] | None = None
    weighted_estimate: float  # W/(1 − f): skimmed events estimated from the filtered sample
    control_estimate: float  # C/f: the same from the control sample
    normalization_pull: float | None  # (Σw − C/f) / σ
    normalization_p_value: float | None
    variables: list[VariableBias]
    max_kl: float | None
    min_p_value: float | None
    alpha: float
    kl_reference: float = KL_REFERENCE
    biased: bool
    note: str = ""

    def speedup_at(self, mode: str, costs: StageCosts) -> float | None:
        """The effective speedup these keep rates give at ``costs``."""
        return _control_speedup(
            mode,
            self.mean_inverse_p_passing,
            self.mean_keep_probability,
            self.keep_rate_passing,
            costs,
        )


def _control_speedup(
    mode: str,
    mean_inverse_p: float | None,
    mean_p: float | None,
    keep_rate_passing: float | None,
    costs: StageCosts,
) -> float | None:
    if mode == "sample" and mean_inverse_p is not None and mean_p is not None:
        return sampling_speedup_from_means(mean_inverse_p, mean_p, costs)
    if mode == "cut" and keep_rate_passing is not None and mean_p is not None:
        return cut_speedup_from_keep(keep_rate_passing, mean_p, costs)
    return None


def compare_histogram(
    name: str,
    histogram: BiasHistogram,
    fraction: float,
    toys: int = CONTROL_TOYS,
    rng: np.random.Generator | None = None,
) -> VariableBias:
    """Shape χ² (:func:`unweighted_weighted_chi2`) and KL of one variable; the p-value is
    calibrated on ``toys`` no-bias toys made from the histograms
    (:func:`~smartbkg_prod.filter.metrics.histogram_toys`): with few heavy weights the
    asymptotic χ² law gives false alarms."""
    control = np.asarray(histogram.control, dtype=np.float64)
    weighted = np.asarray(histogram.weighted, dtype=np.float64)
    squares = np.asarray(histogram.weighted_squares, dtype=np.float64)
    chi2, ndf = unweighted_weighted_chi2(control, weighted, squares)
    kl, noise = kl_and_noise(control, weighted, squares)
    p_asymptotic = float(chi2_p_value(chi2, ndf))
    p_value = p_asymptotic
    if toys > 0 and ndf > 0:
        rng = rng if rng is not None else np.random.default_rng(CONTROL_TOY_SEED)
        toy_p = chi2_p_value(
            *unweighted_weighted_chi2(*histogram_toys(control, weighted, squares, toys, rng))
        )
        p_value = float(calibrated_p_values(np.array([p_asymptotic]), toy_p[:, None])[0])
    return VariableBias(
        variable=name,
        edges=histogram.edges,
        control_estimate=(control / fraction).tolist(),
        weighted_estimate=(weighted / (1.0 - fraction)).tolist(),
        control_events=int(control.sum()),
        kl_divergence=kl,
        kl_sampling_noise=noise,
        chi2=float(chi2),
        ndf=int(ndf),
        p_value=p_value,
        p_value_asymptotic=p_asymptotic,
        toys=toys if ndf > 0 else 0,
    )


def normalization_test(
    histogram: BiasHistogram,
    control_skimmed: int,
    fraction: float,
    toys: int = CONTROL_TOYS,
    rng: np.random.Generator | None = None,
) -> tuple[float, float, float | None, float | None]:
    """Σw/(1 − f) of the filtered skimmed events against C/f of the control ones, from a
    histogram every skimmed event is in: the two estimates, the pull and its p-value,
    calibrated like :func:`compare_histogram` (toys: C ~ Poisson(f N̂), the weighted side
    as in :func:`~smartbkg_prod.filter.metrics.histogram_toys`, N̂ = C + Σw)."""
    f = fraction
    weighted = np.asarray(histogram.weighted, dtype=np.float64)
    squares = np.asarray(histogram.weighted_squares, dtype=np.float64)

    def pull_of(c, w, s2):
        sigma = np.sqrt(s2 / (1.0 - f) ** 2 + c / f**2)
        return np.divide(w / (1.0 - f) - c / f, sigma, out=np.zeros_like(sigma), where=sigma > 0)

    w_total, s2_total = float(weighted.sum()), float(squares.sum())
    weighted_estimate, control_estimate = w_total / (1.0 - f), control_skimmed / f
    if s2_total + control_skimmed <= 0:
        return weighted_estimate, control_estimate, None, None
    pull = float(pull_of(np.float64(control_skimmed), np.float64(w_total), np.float64(s2_total)))
    p_value = math.erfc(abs(pull) / math.sqrt(2.0))
    if toys > 0 and w_total > 0:
        rng = rng if rng is not None else np.random.default_rng(CONTROL_TOY_SEED)
        n_hat = control_skimmed + w_total
        effective = np.where(weighted > 0, squares / np.where(weighted > 0, weighted, 1.0), 1.0)
        mean_w = (1.0 - f) * n_hat * weighted / w_total
        drawn = rng.poisson(mean_w / effective, size=(toys, len(weighted)))
        toy_pulls = pull_of(
            rng.poisson(f * n_hat, size=toys).astype(np.float64),
            (drawn * effective).sum(axis=1),
            (drawn * effective**2).sum(axis=1),
        )
        p_value = (1.0 + np.sum(np.abs(toy_pulls) >= abs(pull))) / (1.0 + toys)
    return weighted_estimate, control_estimate, pull, float(p_value)


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def filter_check(
    monitor: FilterMonitor, mode: str, costs: StageCosts, alpha: float = DEFAULT_ALPHA
) -> FilterCheck:
    """Bias tests, keep rates and effective speedup of a campaign from its summed monitor.

    ``biased`` when the normalisation pull or any variable's shape χ² is significant at
    ``alpha`` (Bonferroni over the tests; toy-calibrated p-values), once there are
    ``MIN_CONTROL_SKIMMED`` skimmed control events.
    """
    m = monitor
    f = m.control_fraction
    retention = _ratio(m.control_skimmed, m.control_events)
    keep_rate_passing = _ratio(m.control_kept_skimmed, m.control_skimmed)
    keep_rate_failing = _ratio(
        m.control_kept - m.control_kept_skimmed, m.control_events - m.control_skimmed
    )
    mean_p = _ratio(m.control_sum_keep_probability, m.control_events)
    mean_inverse_p = (
        _ratio(m.control_sum_inverse_p_skimmed, m.control_skimmed)
        if m.control_sum_inverse_p_skimmed is not None
        else None
    )
    speedup = _control_speedup(mode, mean_inverse_p, mean_p, keep_rate_passing, costs)
    # Normalisation: every skimmed kept event counted once, in a variable defined for all.
    everyone = m.histograms.get("n_mc_particles")
    weighted_total, control_total, pull, pull_p = 0.0, m.control_skimmed / f, None, None
    if everyone is not None:
        weighted_total, control_total, pull, pull_p = normalization_test(
            everyone, m.control_skimmed, f
        )
    variables = [compare_histogram(name, histogram, f) for name, histogram in m.histograms.items()]
    p_values = [v.p_value for v in variables if v.ndf] + ([pull_p] if pull_p is not None else [])
    kls = [v.kl_divergence for v in variables if v.kl_divergence is not None]
    return FilterCheck(
        control_fraction=f,
        control_events=m.control_events,
        control_skimmed=m.control_skimmed,
        retention=retention,
        keep_rate_passing=keep_rate_passing,
        keep_rate_failing=keep_rate_failing,
        mean_keep_probability=mean_p,
        mean_inverse_p_passing=mean_inverse_p,
        speedup=speedup,
        max_speedup=max_speedup(retention, costs) if retention is not None else None,
        costs_ms=costs.to_dict(),
        weighted_estimate=weighted_total,
        control_estimate=control_total,
        normalization_pull=pull,
        normalization_p_value=pull_p,
        variables=variables,
        max_kl=max(kls) if kls else None,
        min_p_value=min(p_values, default=None),
        alpha=alpha,
        biased=m.control_skimmed >= MIN_CONTROL_SKIMMED
        and bool(p_values)
        and min(p_values) < alpha / len(p_values),
        note=""
        if m.control_skimmed >= MIN_CONTROL_SKIMMED
        else f"{m.control_skimmed} skimmed control events: no alarm below {MIN_CONTROL_SKIMMED}",
    )
