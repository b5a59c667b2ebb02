"""Evaluation of a filter model on held-out events: separation, speedup, bias.

:func:`evaluate_model` scores labelled events (fresh ones from :func:`simulate_labelled`
by default), then reports

* AUC, ROC, TPR/FPR at the cut threshold;
* per-event costs: generation, fast simulation + skim (measured here), filter (measured
  on one CPU core, graph building included);
* speedups for cut and sample mode with the measured costs and projected at the Belle II
  reference costs (t_g = 0.08 ms, t_NN = measured, t_s = 97 ms), next to S_max;
* bias: KL divergence and χ² p-value of event variables of the skimmed events, kept and
  weighted by the filter vs all of them (sample mode; cut mode shown for contrast).

**Bias is judged against its noise** (:class:`BiasVerdict`). SmartBKG's absolute
criterion KL < 0.0015 is retired: an unbiased sampling's KL is its own noise level
(``kl_sampling_noise``, reported beside every KL), which on 250k events sits at that
limit, so pass/fail followed the sample size. Instead every variable's χ² p-value must be
≥ 0.001 (0.01 family-wise, Bonferroni over the 10 variables) and, with a seed scan, the
mean pull of Σw of the skimmed events over the sampling seeds within ±0.2. The χ² here
compares the weighted kept events with *all* skimmed events, of which they are a subset:
each bin's variance is the exact sampling variance Σ(1 − p)/p of its events (the
Gagunashvili unweighted-vs-weighted test of the control sample, :mod:`control`, is for
two independent samples).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from smartbkg_prod.filter.control import KL_REFERENCE
from smartbkg_prod.filter.data import (
    CATEGORICAL_VARIABLES,
    CONTINUOUS_VARIABLES,
    DISCRETE_VARIABLES,
    LabelledEvents,
)
from smartbkg_prod.filter.graph import EncodingTensors, ParticleTensors
from smartbkg_prod.filter.infer import cpu_filter_ms, score_events, scoring_model
from smartbkg_prod.filter.metrics import BiasTest, auc, bias_test, roc_points
from smartbkg_prod.filter.sampling import KeepDecision, SamplingCalibration, decide
from smartbkg_prod.filter.speedup import (
    StageCosts,
    cut_speedup,
    max_speedup,
    reference_costs,
    sampling_speedup,
)

TIMING_EVENTS = 8192
# Bias criteria (see the module docstring).
P_VALUE_LIMIT = 0.001  # per variable: 0.01 family-wise with Bonferroni over 10 variables
PULL_LIMIT = 0.2  # |mean pull of Σw| over the sampling seeds
PULL_SEEDS = 200
MEASURED_COSTS_NOTE = (
    "Measured costs are this machine's built-in fast simulation: t_s (detector + skim, "
    "~0.1 ms) is about the cost of generating the event, so every event pays t_g + t_NN "
    "while simulation saves little; the effective sampling speedup is then below 1. The "
    "filter pays off where simulation dominates, as with Belle II's full simulation "
    "(t_s = 97 ms: the reference costs)."
)


class SpeedupFigures(BaseModel):
    costs_ms: dict[str, float]
    max_speedup: float
    cut_speedup: float
    sample_speedup: float
    sample_fraction_of_max: float


class OracleFigures(BaseModel):
    """The best any generator-level filter could do: ``q`` = P(pass | generated event)
    estimated by re-running simulation + skim ``resimulations`` times per event."""

    resimulations: int
    auc: float
    sample_speedup_reference: float
    sample_fraction_of_max: float
    cut_speedup_reference: float
    # No generator-level filter exceeds this (biased up at finite K; see filter/oracle.py).
    sample_fraction_of_max_upper_bound: float | None = None


class SamplingSeedScan(BaseModel):
    """Sample mode repeated with ``seeds`` decision seeds on the same events: the pull of
    Σ weights (passing events) against their count, and the spread of the worst KL."""

    seeds: int
    mean_pull: float
    mean_pull_error: float
    pull_std: float
    max_kl_median: float
    # The retired absolute criterion, for comparison: how often the worst KL is below it.
    max_kl_fraction_below_limit: float
    # The worst variable's KL over its own sampling-noise level (median over seeds).
    max_kl_over_noise_median: float | None = None


class BiasVerdict(BaseModel):
    """Bias judged against its noise: every variable's χ² p ≥ ``p_value_limit`` and, with a
    seed scan of at least ``pull_seeds`` seeds, |mean Σw pull| ≤ ``pull_limit``."""

    p_value_limit: float = P_VALUE_LIMIT
    pull_limit: float = PULL_LIMIT
    pull_seeds: int = PULL_SEEDS
    min_p_value: float
    p_values_pass: bool
    mean_pull: float | None = None
    pull_pass: bool | None = None  # None: no seed scan (or fewer seeds than pull_seeds)
    unbiased: bool


class EvaluationReport(BaseModel):
    model: str
    model_sha256: str
    n_events: int
    n_passed: int
    retention: float
    auc: float
    roc: dict[str, list[float]]
    threshold: float
    tpr_at_threshold: float
    fpr_at_threshold: float
    p_min: float
    keep_rate_sample: float
    mean_inverse_p_passed: float
    sum_weights_passed: float
    sum_weights_passed_error: float
    filter_ms_cpu_1core: float
    filter_over_generation: float
    measured: SpeedupFigures
    reference: SpeedupFigures
    bias_sample: list[dict[str, Any]]
    bias_cut: list[dict[str, Any]]
    max_kl_sample: float
    # Sampling-noise KL of the variable with the largest KL: the scale to judge it by.
    max_kl_sample_noise: float | None = None
    kl_reference: float = KL_REFERENCE  # SmartBKG's absolute KL criterion: retired, shown only
    min_p_value_sample: float
    bias_verdict: BiasVerdict | None = None
    measured_costs_note: str = MEASURED_COSTS_NOTE
    oracle: OracleFigures | None = None
    seed_scan: SamplingSeedScan | None = None
    plots: list[str] = []


def _speedups(scores, passed, keep_cut, keep_probability, costs: StageCosts) -> SpeedupFigures:
    retention = float(passed.mean())
    s_max = max_speedup(retention, costs)
    sample = sampling_speedup(keep_probability, passed, costs)
    return SpeedupFigures(
        costs_ms=costs.to_dict(),
        max_speedup=s_max,
        cut_speedup=cut_speedup(
            retention, float(keep_cut[passed].mean()), float(keep_cut[~passed].mean()), costs
        ),
        sample_speedup=sample,
        sample_fraction_of_max=sample / s_max,
    )


def _bias(events: LabelledEvents, decision: KeepDecision) -> list[BiasTest]:
    passed = events.passed
    tests = []
    kinds = {
        **dict.fromkeys(CONTINUOUS_VARIABLES, "continuous"),
        **dict.fromkeys(DISCRETE_VARIABLES, "discrete"),
        **dict.fromkeys(CATEGORICAL_VARIABLES, "categorical"),
    }
    # Exact sampling variance needs p > 0 everywhere (sample mode); a cut has no χ² test.
    probability = decision.keep_probability[passed]
    exact = probability if (probability > 0).all() else None
    for name, kind in kinds.items():
        if name in events.variables:
            values = events.variables[name][passed]
            tests.append(
                bias_test(
                    name,
                    values,
                    decision.keep[passed],
                    decision.weight[passed],
                    kind=kind,
                    keep_probability=exact,
                )
            )
    return tests


def oracle_figures(
    events: LabelledEvents, resimulations: int, costs: StageCosts, seed: int = 97_000
) -> OracleFigures:
    """Separation limit set by the detector and skim: the events' own labels are scored
    with their pass rate over ``resimulations`` independent detector seeds; next to it the
    upward-biased bound (:mod:`smartbkg_prod.filter.oracle`) from the same seeds."""
    from smartbkg_prod.filter.oracle import pass_fraction, resimulate_passes, upper_bound
    from smartbkg_prod.filter.sampling import fit_calibration
    from smartbkg_prod.filter.train import best_threshold

    q = pass_fraction(resimulate_passes(events.particles, resimulations, first_seed=seed))
    passed = events.passed
    calibration = fit_calibration(q, passed, costs)
    sample = sampling_speedup(calibration.keep_probability(q), passed, costs)
    keep = q > best_threshold(q, passed, costs)
    retention = float(passed.mean())
    return OracleFigures(
        resimulations=resimulations,
        auc=auc(passed, q),
        sample_speedup_reference=sample,
        sample_fraction_of_max=sample / max_speedup(retention, costs),
        cut_speedup_reference=cut_speedup(
            retention, float(keep[passed].mean()), float(keep[~passed].mean()), costs
        ),
        sample_fraction_of_max_upper_bound=upper_bound(q, costs, bootstrap=0).fraction_of_max,
    )


def sampling_seed_scan(
    events: LabelledEvents,
    scores: np.ndarray,
    calibration: SamplingCalibration,
    p_min: float,
    seeds: int,
) -> SamplingSeedScan:
    """Unbiasedness and KL spread over ``seeds`` independent sampling decisions."""
    passed = events.passed
    pulls, max_kl, kl_over_noise = [], [], []
    for seed in range(seeds):
        decision = decide(
            scores,
            "sample",
            np.random.default_rng(10_000 + seed),
            p_min=p_min,
            calibration=calibration,
        )
        p = decision.keep_probability[passed]
        pulls.append((decision.weight[passed].sum() - passed.sum()) / np.sqrt(np.sum((1 - p) / p)))
        tests = _bias(events, decision)
        worst = max(tests, key=lambda test: test.kl_divergence)
        max_kl.append(worst.kl_divergence)
        if worst.kl_sampling_noise > 0:
            kl_over_noise.append(worst.kl_divergence / worst.kl_sampling_noise)
    pulls_array, kl_array = np.asarray(pulls), np.asarray(max_kl)
    return SamplingSeedScan(
        seeds=seeds,
        mean_pull=float(pulls_array.mean()),
        mean_pull_error=float(pulls_array.std() / np.sqrt(seeds)),
        pull_std=float(pulls_array.std()),
        max_kl_median=float(np.median(kl_array)),
        max_kl_fraction_below_limit=float(np.mean(kl_array < KL_REFERENCE)),
        max_kl_over_noise_median=float(np.median(kl_over_noise)) if kl_over_noise else None,
    )


def bias_verdict(min_p_value: float, scan: SamplingSeedScan | None) -> BiasVerdict:
    """The bias criteria of the module docstring applied to one evaluation."""
    p_values_pass = min_p_value >= P_VALUE_LIMIT
    pull_pass = (
        abs(scan.mean_pull) <= PULL_LIMIT if scan is not None and scan.seeds >= PULL_SEEDS else None
    )
    return BiasVerdict(
        min_p_value=min_p_value,
        p_values_pass=p_values_pass,
        mean_pull=scan.mean_pull if scan is not None else None,
        pull_pass=pull_pass,
        unbiased=p_values_pass and pull_pass is not False,
    )


def evaluate_model(
    model: str | Path | None,
    events: LabelledEvents,
    *,
    threshold: float | None = None,
    p_min: float | None = None,
    seed: int = 1,
    device: str = "cpu",
    oracle_resimulations: int = 0,
    scan_seeds: int = 0,
) -> tuple[EvaluationReport, np.ndarray]:
    """Figures of merit of ``model`` on ``events``; also returns the scores (for plots)."""
    scorer = scoring_model(model, device)
    loaded = scorer.model
    scores = score_events(scorer, events.particles)
    passed = events.passed
    threshold = loaded.threshold if threshold is None else threshold
    p_min = loaded.calibration.p_min if p_min is None else p_min
    cut = decide(scores, "cut", np.random.default_rng(seed), threshold=threshold)
    sample = decide(
        scores, "sample", np.random.default_rng(seed), p_min=p_min, calibration=loaded.calibration
    )
    timing = events.particles.select(np.arange(events.n_events) < TIMING_EVENTS)
    filter_ms = cpu_filter_ms(
        copy.deepcopy(loaded.net).cpu(),
        EncodingTensors(loaded.encoding),
        ParticleTensors.from_batch(timing),
    )
    n = max(events.n_events, 1)
    seconds = events.seconds
    generation_ms = 1e3 * seconds.get("generation", float("nan")) / n
    measured_costs = StageCosts(
        generation_ms,
        filter_ms,
        1e3 * (seconds.get("simulation", float("nan")) + seconds.get("skim", float("nan"))) / n,
    )
    bias_sample = _bias(events, sample)
    worst = max(bias_sample, key=lambda test: test.kl_divergence, default=None)
    bias_cut = _bias(events, cut)
    p_passed = sample.keep_probability[passed]
    report = EvaluationReport(
        model=str(loaded.path),
        model_sha256=loaded.sha256,
        n_events=events.n_events,
        n_passed=int(passed.sum()),
        retention=events.retention,
        auc=auc(passed, scores),
        roc=roc_points(passed, scores),
        threshold=threshold,
        tpr_at_threshold=float(cut.keep[passed].mean()),
        fpr_at_threshold=float(cut.keep[~passed].mean()),
        p_min=p_min,
        keep_rate_sample=float(sample.keep.mean()),
        mean_inverse_p_passed=float(np.mean(1 / p_passed)),
        sum_weights_passed=float(sample.weight[passed].sum()),
        sum_weights_passed_error=float(np.sqrt(np.sum((1 - p_passed) / p_passed))),
        filter_ms_cpu_1core=filter_ms,
        filter_over_generation=filter_ms / generation_ms,
        measured=_speedups(scores, passed, cut.keep, sample.keep_probability, measured_costs),
        reference=_speedups(
            scores, passed, cut.keep, sample.keep_probability, reference_costs(filter_ms)
        ),
        bias_sample=[vars(test) for test in bias_sample],
        bias_cut=[vars(test) for test in bias_cut],
        max_kl_sample=worst.kl_divergence if worst else 0.0,
        max_kl_sample_noise=worst.kl_sampling_noise if worst else None,
        min_p_value_sample=min((test.p_value for test in bias_sample), default=1.0),
    )
    if scan_seeds > 0:
        report.seed_scan = sampling_seed_scan(events, scores, loaded.calibration, p_min, scan_seeds)
    report.bias_verdict = bias_verdict(report.min_p_value_sample, report.seed_scan)
    if oracle_resimulations > 0:
        report.oracle = oracle_figures(events, oracle_resimulations, reference_costs(filter_ms))
    return report, scores


def write_plots(
    report: EvaluationReport, events: LabelledEvents, scores: np.ndarray, directory: str | Path
) -> list[str]:
    """ROC, score distributions, keep probability and bias histograms as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    axes[0].plot(report.roc["fpr"], report.roc["tpr"], label=f"AUC = {report.auc:.3f}")
    axes[0].plot([0, 1], [0, 1], "k:", lw=0.8)
    axes[0].plot(
        report.fpr_at_threshold, report.tpr_at_threshold, "o", label=f"cut {report.threshold:.3f}"
    )
    axes[0].set(
        xlabel="false positive rate (fail skim, kept)", ylabel="true positive rate", title="ROC"
    )
    axes[0].legend()
    bins = np.linspace(0, 1, 51)
    axes[1].hist(scores[~events.passed], bins, histtype="step", density=True, label="fails skim")
    axes[1].hist(scores[events.passed], bins, histtype="step", density=True, label="passes skim")
    axes[1].set(xlabel="filter score", ylabel="density", yscale="log", title="score distributions")
    axes[1].legend()
    figure.tight_layout()
    written.append(directory / "filter_roc_scores.png")
    figure.savefig(written[-1], dpi=90)
    plt.close(figure)

    tests = report.bias_sample
    columns = 4
    rows = -(-len(tests) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
    for axis, test in zip(axes.flat, tests, strict=False):
        edges = np.asarray(test["edges"])
        axis.stairs(test["unfiltered"], edges, label="all skimmed")
        axis.stairs(test["weighted"], edges, label="sampled, weighted")
        axis.set_title(
            f"{test['variable']}: KL={test['kl_divergence']:.1e} p={test['p_value']:.2f}",
            fontsize=9,
        )
    axes.flat[0].legend(fontsize=8)
    for axis in list(axes.flat)[len(tests) :]:
        axis.set_visible(False)
    figure.tight_layout()
    written.append(directory / "filter_bias.png")
    figure.savefig(written[-1], dpi=80)
    plt.close(figure)
    return [str(path) for path in written]
