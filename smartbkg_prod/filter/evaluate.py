"""Evaluation of a filter model on held-out events: separation, speedup, bias.

:func:`evaluate_model` scores labelled events (fresh ones from :func:`simulate_labelled`
by default), then reports

* AUC, ROC, TPR/FPR at the cut threshold;
* per-event costs: generation, fast simulation + skim (measured here), filter (measured
  on one CPU core, graph building included);
* speedups for cut and sample mode with the measured costs and projected at the Belle II
  reference costs (t_g = 0.08 ms, t_NN = measured, t_s = 97 ms), next to S_max;
* bias: KL divergence and χ² p-value of event variables of the skimmed events, kept and
  weighted by the filter, against an independent unfiltered sample (sample mode; cut
  mode shown for contrast).

**Bias** (:class:`BiasVerdict`): the filtered sample's skimmed events, kept and weighted
1/p, against an *independent* unfiltered sample (other generator seeds; ``reference``),
per variable with the unweighted-vs-weighted χ² test (Gagunashvili,
:func:`~smartbkg_prod.filter.metrics.unweighted_weighted_chi2`). Weights reach 1/p_min, and
with a few heavy weights in a bin the asymptotic χ² law does not hold (without bias, one
of the 10 variables is below 0.001 in 13 % of toys at 20k events, 2.4 % at 100k:
benchmarks/results/filter_bias_toys.json), so each p-value is calibrated on no-bias toys that
resample the keep decisions and the events (:func:`~smartbkg_prod.filter.metrics.bias_tests`).
The verdict names its checks: every calibrated p ≥ 0.001 (0.01 family-wise, Bonferroni
over the 10 variables), on ≥ 800k events in each sample; ``unbiased`` is ``None`` (not
judged) when a check did not run. SmartBKG's absolute criterion KL < 0.0015 is retired:
an unbiased sampling's KL is its own noise level (``kl_sampling_noise``, shown beside it).

The pull of Σw over sampling seeds on the *same* events (``--seed-scan``) is a check of
the weight arithmetic, not a bias test: w = 1/p makes it zero on average for any model.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from smartbkg_prod.filter.control import KL_REFERENCE
from smartbkg_prod.filter.data import (
    CATEGORICAL_VARIABLES,
    CONTINUOUS_VARIABLES,
    DISCRETE_VARIABLES,
    LabelledEvents,
)
from smartbkg_prod.filter.metrics import BiasTest, auc, bias_tests, roc_points
from smartbkg_prod.filter.runtime import onnx_filter_ms, open_scorer, score_events
from smartbkg_prod.filter.sampling import KeepDecision, SamplingCalibration, decide
from smartbkg_prod.filter.speedup import (
    StageCosts,
    best_threshold,
    cut_speedup,
    max_speedup,
    reference_costs,
    sampling_speedup,
)

TIMING_EVENTS = 8192
# The bias criterion (see the module docstring).
P_VALUE_LIMIT = 0.001  # per variable: 0.01 family-wise with Bonferroni over 10 variables
MIN_BIAS_EVENTS = 800_000  # events in the filtered and in the reference sample
BIAS_TOYS = 2000  # no-bias toys per evaluation (smallest calibrated p: 1/2001)
BIAS_TOY_STREAM = 0xB1A5  # the toys' random stream, beside the decision seed
# The weight-arithmetic check (not a bias criterion): |mean pull of Σw| over the seeds.
PULL_LIMIT = 0.2
PULL_SEEDS = 200
VARIABLE_KINDS = {
    **dict.fromkeys(CONTINUOUS_VARIABLES, "continuous"),
    **dict.fromkeys(DISCRETE_VARIABLES, "discrete"),
    **dict.fromkeys(CATEGORICAL_VARIABLES, "categorical"),
}
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
    """Sample mode repeated with ``seeds`` decision seeds on the same events.

    The pull of Σw of the skimmed events against their count checks the weight
    arithmetic (w = 1/p of the p the decision used): it is zero on average for *any*
    model, so it is not a bias test. Beside it, the spread of the worst KL against the
    reference sample."""

    seeds: int
    sum_weights_pull_mean: float
    sum_weights_pull_error: float
    sum_weights_pull_std: float
    pull_limit: float = PULL_LIMIT
    # |mean pull| ≤ pull_limit with ≥ PULL_SEEDS seeds; None: too few seeds to say.
    weight_arithmetic_ok: bool | None = None
    max_kl_median: float | None = None
    # The retired absolute criterion, for comparison: how often the worst KL is below it.
    max_kl_fraction_below_limit: float | None = None
    # The worst variable's KL over its own sampling-noise level (median over seeds).
    max_kl_over_noise_median: float | None = None


CheckStatus = Literal["passed", "failed", "not run"]


class BiasCheck(BaseModel):
    """One check the bias verdict needs, and whether it ran and passed."""

    name: str
    requirement: str
    status: CheckStatus
    value: float | None = None
    reason: str = ""


class BiasVerdict(BaseModel):
    """The bias criterion's checks (module docstring). ``unbiased`` is True only when every
    check ran and passed, False when one failed, None (not judged) when one did not run."""

    checks: list[BiasCheck]
    unbiased: bool | None

    def check(self, name: str) -> BiasCheck:
        return next(check for check in self.checks if check.name == name)


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
    # The independent unfiltered sample the bias tests compare with (None: no bias test).
    reference_events: int | None = None
    reference_skimmed: int | None = None
    bias_toys: int = 0
    bias_sample: list[dict[str, Any]]
    bias_cut: list[dict[str, Any]]
    max_kl_sample: float | None
    # Sampling-noise KL of the variable with the largest KL: the scale to judge it by.
    max_kl_sample_noise: float | None = None
    kl_reference: float = KL_REFERENCE  # SmartBKG's absolute KL criterion: retired, shown only
    # Smallest per-variable p-value: toy-calibrated when bias_toys > 0 (the one judged).
    min_p_value_sample: float | None
    min_p_value_sample_asymptotic: float | None = None
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


@dataclass
class UnfilteredReference:
    """The independent unfiltered sample of the bias tests, reduced to what they need:
    its skimmed events' variables and model scores (the no-bias toys give these events the
    filter's keep probability too), and how many events it has."""

    n_events: int
    variables: dict[str, np.ndarray]
    scores: np.ndarray

    @classmethod
    def from_events(cls, parts: Iterable[LabelledEvents], scorer) -> UnfilteredReference:
        """Score and reduce ``parts`` one at a time (a generator of chunks keeps memory flat)."""
        n_events, variables, scores = 0, [], []
        for part in parts:
            n_events += part.n_events
            skimmed = part.subset(part.passed)
            variables.append(skimmed.variables)
            scores.append(score_events(scorer, skimmed.particles))
        names = set.intersection(*(set(v) for v in variables)) if variables else set()
        return cls(
            n_events=n_events,
            variables={name: np.concatenate([v[name] for v in variables]) for name in names},
            scores=np.concatenate(scores) if scores else np.zeros(0),
        )


def _bias(
    events: LabelledEvents,
    decision: KeepDecision,
    reference: UnfilteredReference,
    reference_keep_probability: np.ndarray | None,
    toys: int,
    seed: int,
) -> list[BiasTest]:
    """The skimmed events' variables, kept and weighted by ``decision``, against the
    reference (toy-calibrated with ``toys`` > 0; a cut has p = 0 and gets no toys)."""
    passed = events.passed
    return bias_tests(
        {name: values[passed] for name, values in events.variables.items()},
        decision.weight[passed],
        decision.keep_probability[passed],
        reference.variables,
        VARIABLE_KINDS,
        reference_keep_probability=reference_keep_probability,
        toys=toys,
        rng=np.random.default_rng([seed, BIAS_TOY_STREAM]),
    )


def oracle_figures(
    events: LabelledEvents, resimulations: int, costs: StageCosts, seed: int = 97_000
) -> OracleFigures:
    """Separation limit set by the detector and skim: the events' own labels are scored
    with their pass rate over ``resimulations`` independent detector seeds; next to it the
    upward-biased bound (:mod:`smartbkg_prod.filter.oracle`) from the same seeds."""
    from smartbkg_prod.filter.oracle import pass_fraction, resimulate_passes, upper_bound
    from smartbkg_prod.filter.sampling import fit_calibration

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
    reference: UnfilteredReference | None = None,
) -> SamplingSeedScan:
    """The weight-arithmetic check (pull of Σw) and, with a reference, the KL spread over
    ``seeds`` independent sampling decisions on the same events."""
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
        if reference is None:
            continue
        tests = [
            test
            for test in _bias(events, decision, reference, None, toys=0, seed=seed)
            if test.kl_divergence is not None
        ]
        worst = max(tests, key=lambda test: test.kl_divergence, default=None)
        if worst is None:
            continue
        max_kl.append(worst.kl_divergence)
        if worst.kl_sampling_noise:
            kl_over_noise.append(worst.kl_divergence / worst.kl_sampling_noise)
    pulls_array, kl_array = np.asarray(pulls), np.asarray(max_kl)
    mean_pull = float(pulls_array.mean())
    return SamplingSeedScan(
        seeds=seeds,
        sum_weights_pull_mean=mean_pull,
        sum_weights_pull_error=float(pulls_array.std() / np.sqrt(seeds)),
        sum_weights_pull_std=float(pulls_array.std()),
        weight_arithmetic_ok=abs(mean_pull) <= PULL_LIMIT if seeds >= PULL_SEEDS else None,
        max_kl_median=float(np.median(kl_array)) if len(kl_array) else None,
        max_kl_fraction_below_limit=float(np.mean(kl_array < KL_REFERENCE))
        if len(kl_array)
        else None,
        max_kl_over_noise_median=float(np.median(kl_over_noise)) if kl_over_noise else None,
    )


def bias_verdict(
    tests: list[BiasTest],
    filtered_events: int,
    reference_events: int | None,
    min_events: int = MIN_BIAS_EVENTS,
) -> BiasVerdict:
    """The bias criterion of the module docstring, check by check.

    ``tests`` are the sample-mode bias tests (none: no reference sample); their p-values
    count only when toy-calibrated.
    """
    # Fewer toys cannot resolve the limit: the smallest calibrated p is 1/(toys + 1).
    min_toys = int(np.ceil(1.0 / P_VALUE_LIMIT))
    calibrated = bool(tests) and all(test.toys >= min_toys for test in tests)
    min_p = min((test.p_value for test in tests), default=None)
    if not tests:
        chi2 = BiasCheck(
            name="calibrated_chi2",
            requirement=f"every variable's toy-calibrated χ² p ≥ {P_VALUE_LIMIT}",
            status="not run",
            reason="no independent unfiltered sample",
        )
    elif not calibrated:
        chi2 = BiasCheck(
            name="calibrated_chi2",
            requirement=f"every variable's toy-calibrated χ² p ≥ {P_VALUE_LIMIT}",
            status="not run",
            value=min_p,
            reason=f"fewer than {min_toys} toys: the asymptotic p-values do not hold with "
            "heavy weights, and fewer toys cannot resolve the limit",
        )
    else:
        chi2 = BiasCheck(
            name="calibrated_chi2",
            requirement=f"every variable's toy-calibrated χ² p ≥ {P_VALUE_LIMIT}",
            status="passed" if min_p >= P_VALUE_LIMIT else "failed",
            value=min_p,
        )
    smallest = min(filtered_events, reference_events or 0)
    size = BiasCheck(
        name="sample_size",
        requirement=f"≥ {min_events} events in the filtered and in the reference sample",
        status="passed" if smallest >= min_events else "not run",
        value=float(smallest),
        reason=""
        if smallest >= min_events
        else f"{filtered_events} filtered, {reference_events or 0} reference events",
    )
    checks = [chi2, size]
    statuses = {check.status for check in checks}
    unbiased = False if "failed" in statuses else None if "not run" in statuses else True
    return BiasVerdict(checks=checks, unbiased=unbiased)


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
    reference: LabelledEvents | Iterable[LabelledEvents] | None = None,
    bias_toys: int = BIAS_TOYS,
) -> tuple[EvaluationReport, np.ndarray]:
    """Figures of merit of ``model`` on ``events``; also returns the scores (for plots).

    ``reference``: the independent unfiltered sample of the bias tests (labelled events or
    chunks of them, e.g. a generator; without it the bias criterion does not run).
    """
    # The worker's runtime: the ONNX export on ONNX Runtime, one thread.
    scorer = open_scorer(model, device, threads=1)
    loaded = scorer.card
    scores = score_events(scorer, events.particles)
    if isinstance(reference, LabelledEvents):
        reference = [reference]
    unfiltered = None if reference is None else UnfilteredReference.from_events(reference, scorer)
    passed = events.passed
    threshold = loaded.threshold if threshold is None else threshold
    p_min = loaded.calibration.p_min if p_min is None else p_min
    cut = decide(scores, "cut", np.random.default_rng(seed), threshold=threshold)
    sample = decide(
        scores, "sample", np.random.default_rng(seed), p_min=p_min, calibration=loaded.calibration
    )
    timing = events.particles.select(np.arange(events.n_events) < TIMING_EVENTS)
    filter_ms = onnx_filter_ms(open_scorer(model, "cpu", threads=1), timing)
    n = max(events.n_events, 1)
    seconds = events.seconds
    generation_ms = 1e3 * seconds.get("generation", float("nan")) / n
    measured_costs = StageCosts(
        generation_ms,
        filter_ms,
        1e3 * (seconds.get("simulation", float("nan")) + seconds.get("skim", float("nan"))) / n,
    )
    bias_sample, bias_cut = [], []
    if unfiltered is not None:
        reference_p = loaded.calibration.keep_probability(unfiltered.scores, p_min)
        bias_sample = _bias(events, sample, unfiltered, reference_p, bias_toys, seed)
        bias_cut = _bias(events, cut, unfiltered, None, toys=0, seed=seed)
    with_kl = [test for test in bias_sample if test.kl_divergence is not None]
    worst = max(with_kl, key=lambda test: test.kl_divergence, default=None)
    p_passed = sample.keep_probability[passed]
    report = EvaluationReport(
        model=str(loaded.path),
        model_sha256=scorer.sha256,
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
        reference_events=None if unfiltered is None else unfiltered.n_events,
        reference_skimmed=None if unfiltered is None else len(unfiltered.scores),
        bias_toys=bias_toys if bias_sample else 0,
        bias_sample=[vars(test) for test in bias_sample],
        bias_cut=[vars(test) for test in bias_cut],
        max_kl_sample=worst.kl_divergence if worst else None,
        max_kl_sample_noise=worst.kl_sampling_noise if worst else None,
        min_p_value_sample=min((test.p_value for test in bias_sample), default=None),
        min_p_value_sample_asymptotic=min(
            (test.p_value_asymptotic for test in bias_sample), default=None
        ),
        bias_verdict=bias_verdict(
            bias_sample, events.n_events, None if unfiltered is None else unfiltered.n_events
        ),
    )
    if scan_seeds > 0:
        report.seed_scan = sampling_seed_scan(
            events, scores, loaded.calibration, p_min, scan_seeds, unfiltered
        )
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
        reference = np.asarray(test["reference"])
        weighted = np.asarray(test["weighted"])
        axis.stairs(reference / max(reference.sum(), 1), edges, label="reference (unfiltered)")
        axis.stairs(weighted / max(weighted.sum(), 1e-300), edges, label="sampled, weighted")
        kl = "-" if test["kl_divergence"] is None else f"{test['kl_divergence']:.1e}"
        axis.set_title(f"{test['variable']}: KL={kl} p={test['p_value']:.2g}", fontsize=9)
    axes.flat[0].legend(fontsize=8)
    for axis in list(axes.flat)[len(tests) :]:
        axis.set_visible(False)
    figure.tight_layout()
    written.append(directory / "filter_bias.png")
    figure.savefig(written[-1], dpi=80)
    plt.close(figure)
    return [str(path) for path in written]
