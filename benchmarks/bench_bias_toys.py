"""Does the χ² bias test hold? Its p-value distribution without bias, and the 800k run.

The bias test of ``smartbkg-prod evaluate`` (smartbkg_prod/filter/metrics.py): per
variable, the unweighted-vs-weighted χ² (Gagunashvili) of the filtered sample's skimmed
events, kept with the filter's probability p and weighted 1/p (up to 1/p_min), against an
independent unfiltered sample. Two cached 800k-event generic B B̄ samples
(benchmarks/bias_samples.py, other seeds each) are scored with the model, then:

1. **No-bias toys of the asymptotic test** at 20k, 100k and 800k events per sample:
   * ``bootstrap``: both samples redrawn (with replacement) from the skimmed events of the
     two real samples, keep decisions redrawn from their p; no bias by construction;
   * ``disjoint``: the literal study: disjoint real 20k (100k) event sets of the filtered
     sample, each with its own disjoint set of the reference sample; the keep decisions of
     the same events redrawn (at 800k there is one pair: conditional on its events).
   Reported: KS test of the toy p-values against uniform, fractions below 0.01 / 0.001,
   and how often any of the 10 variables is below 0.001 (the verdict's false alarms; at
   most 1 % if the test holds).
2. **The toy-calibrated p-value** (what ``evaluate`` judges): "observed" no-bias data sets
   drawn as in ``bootstrap``, each calibrated on toys drawn from its own events; beside
   it the monitor's calibration from the histograms alone (control-sample test).
3. **The 800k run**: the filtered sample's decisions drawn as ``evaluate`` draws them,
   calibrated p-values and the verdict (the same library calls as ``evaluate``).

    nice python benchmarks/bias_samples.py --cache /work/cache-bias --events 800000
    nice python benchmarks/bench_bias_toys.py --cache /work/cache-bias --model default \\
        --out benchmarks/results/filter_bias_toys.json --plot benchmarks/results/filter_bias_toys.png
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from bias_samples import load_sample
from results_file import machine, write_results
from scipy import stats

from smartbkg_prod.filter.evaluate import (
    BIAS_TOY_STREAM,
    BIAS_TOYS,
    VARIABLE_KINDS,
    bias_verdict,
)
from smartbkg_prod.filter.metrics import (
    BinnedSample,
    bias_tests,
    bin_against_reference,
    bin_indices,
    binned_sums,
    calibrated_p_values,
    chi2_p_value,
    histogram_edges,
    histogram_toys,
    pool_rare_categories,
    toy_chi2,
    unweighted_weighted_chi2,
)
from smartbkg_prod.filter.runtime import open_scorer, score_events
from smartbkg_prod.filter.sampling import decide

SIZES = (20_000, 100_000, 800_000)
EVALUATE_SEED = 424242  # evaluate's default --seed: its decision and toy streams


def scored_sample(cache: Path, sample: str, n_events: int, scorer) -> dict[str, np.ndarray]:
    """Scores, skim decisions and variables of every event of a cached sample (scores
    cached per model sha256)."""
    path = cache / f"{sample}_{n_events}_{scorer.sha256[:16]}.npz"
    if path.exists():
        with np.load(path) as stored:
            return dict(stored)
    parts = []
    for events in load_sample(cache, sample, n_events):
        parts.append(
            {
                "scores": score_events(scorer, events.particles),
                "passed": events.passed,
                **{f"variable_{name}": events.variables[name] for name in VARIABLE_KINDS},
            }
        )
    columns = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    np.savez(path, **columns)
    return columns


def binned(skimmed: dict[str, np.ndarray], edges: dict[str, np.ndarray]) -> np.ndarray:
    """Bin index (variables, events) on fixed edges; rare decay modes pooled as evaluate does."""
    rows = []
    for name, bin_edges in edges.items():
        values = skimmed[name]
        if VARIABLE_KINDS[name] == "categorical":
            values = pool_rare_categories(values)
        rows.append(bin_indices(values, bin_edges))
    return np.array(rows)


def summary(p_values: np.ndarray, names: list[str], inner: int | None = None) -> dict:
    """Uniformity of toy p-values (toys, variables). A p-value calibrated on ``inner`` toys
    takes the values k/(inner + 1): the KS test sees it spread uniformly over its step."""
    spread = p_values
    if inner is not None:
        spread = p_values - np.random.default_rng(0).random(p_values.shape) / (inner + 1)
    flat = p_values.ravel()
    return {
        "toys": int(len(p_values)),
        "ks_p_value_all_variables": float(stats.kstest(spread.ravel(), "uniform").pvalue),
        "fraction_below_0.01": float(np.mean(flat < 0.01)),
        "fraction_below_0.001": float(np.mean(flat < 0.001)),
        "any_variable_below_0.001": float(np.mean((p_values < 0.001).any(axis=1))),
        "per_variable": {
            name: {
                "ks_p_value": float(stats.kstest(spread[:, v], "uniform").pvalue),
                "fraction_below_0.01": float(np.mean(p_values[:, v] < 0.01)),
                "fraction_below_0.001": float(np.mean(p_values[:, v] < 0.001)),
            }
            for v, name in enumerate(names)
        },
    }


def disjoint_toys(filtered, reference, names, n_events: int, toys: int, rng) -> np.ndarray:
    """Asymptotic p-values (toys, variables): disjoint real event sets of ``n_events``
    (filtered and reference), the keep decisions of each filtered set redrawn."""
    pairs = min(len(filtered["scores"]), len(reference["scores"])) // n_events
    per_pair = -(-toys // pairs)
    p_values = []
    for pair in range(pairs):
        window = slice(pair * n_events, (pair + 1) * n_events)
        f_skim = filtered["passed"][window]
        r_skim = reference["passed"][window]
        f_vars = {n: filtered[f"variable_{n}"][window][f_skim] for n in names}
        r_vars = {n: reference[f"variable_{n}"][window][r_skim] for n in names}
        binnings = [bin_against_reference(f_vars[n], r_vars[n], VARIABLE_KINDS[n]) for n in names]
        sizes = np.array([len(edges) - 1 for edges, _, _ in binnings])
        f_bins = np.array([bins for _, bins, _ in binnings])
        r_bins = np.array([bins for _, _, bins in binnings])
        p = filtered["keep_probability"][window][f_skim]
        weights = np.where(rng.random((per_pair, len(p))) < p, 1.0 / p, 0.0)
        toy_bins = np.broadcast_to(f_bins, (per_pair, *f_bins.shape))
        counts = np.broadcast_to(
            binned_sums(r_bins[None], sizes), (per_pair, len(names), sizes.max())
        )
        chi2, ndf = unweighted_weighted_chi2(
            counts, binned_sums(toy_bins, sizes, weights), binned_sums(toy_bins, sizes, weights**2)
        )
        p_values.append(chi2_p_value(chi2, ndf))
    return np.concatenate(p_values)[:toys]


def calibrated_toys(
    pool: BinnedSample, n_skimmed: int, outer: int, inner: int, rng
) -> tuple[np.ndarray, np.ndarray]:
    """Toy-calibrated p-values (outer, variables) of no-bias data sets drawn from ``pool``:
    calibrated on ``inner`` toys from the data set's own events (as evaluate does), and on
    ``inner`` toys from its histograms alone (as the monitor's control-sample test does)."""
    events, histograms = np.empty((outer, len(pool.n_bins))), np.empty((outer, len(pool.n_bins)))
    for k in range(outer):
        f_idx = rng.integers(len(pool), size=n_skimmed)
        r_idx = rng.integers(len(pool), size=n_skimmed)
        p = pool.keep_probability[f_idx]
        weights = np.where(rng.random(n_skimmed) < p, 1.0 / p, 0.0)
        f_bins, r_bins = pool.bins[:, f_idx], pool.bins[:, r_idx]
        observed = (
            binned_sums(r_bins[None], pool.n_bins)[0],
            binned_sums(f_bins[None], pool.n_bins, weights[None])[0],
            binned_sums(f_bins[None], pool.n_bins, weights[None] ** 2)[0],
        )
        observed_p = chi2_p_value(*unweighted_weighted_chi2(*observed))
        own = BinnedSample(
            np.concatenate([f_bins, r_bins], axis=1),
            pool.n_bins,
            np.concatenate([p, pool.keep_probability[r_idx]]),
        )
        toy_p = chi2_p_value(*toy_chi2(own, n_skimmed, n_skimmed, inner, rng))
        events[k] = calibrated_p_values(observed_p, toy_p)
        for v, size in enumerate(pool.n_bins):
            counts, sums, squares = (column[v, :size] for column in observed)
            toy_p = chi2_p_value(
                *unweighted_weighted_chi2(*histogram_toys(counts, sums, squares, inner, rng))
            )
            histograms[k, v] = calibrated_p_values(observed_p[v : v + 1], toy_p[:, None])[0]
    return events, histograms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("/work/cache-bias"))
    parser.add_argument("--model", default="default")
    parser.add_argument("--events", type=int, default=800_000)
    parser.add_argument("--toys", type=int, default=2000)
    parser.add_argument("--outer", type=int, default=200, help="data sets for the calibrated p")
    parser.add_argument("--inner", type=int, default=200, help="toys calibrating each of them")
    parser.add_argument("--skip-study", action="store_true", help="only the 800k run")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    started = time.perf_counter()
    scorer = open_scorer(args.model, "cpu", threads=1)  # evaluate's runtime
    calibration = scorer.card.calibration
    p_min = calibration.p_min
    filtered = scored_sample(args.cache, "filtered", args.events, scorer)
    reference = scored_sample(args.cache, "reference", args.events, scorer)
    for sample in (filtered, reference):
        sample["keep_probability"] = calibration.keep_probability(sample["scores"], p_min)
    scored = time.perf_counter()
    names = list(VARIABLE_KINDS)
    document: dict = {
        "what": __doc__.split("\n\n")[0],
        "model": str(scorer.card.path),
        "model_sha256": scorer.sha256,
        "p_min": p_min,
        "events_per_sample": args.events,
        "samples": "benchmarks/bias_samples.py: filtered seeds 515000+, reference seeds 616000+",
        "command": (
            f"nice python benchmarks/bench_bias_toys.py --model {args.model} --toys {args.toys} "
            f"--outer {args.outer} --inner {args.inner}"
        ),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
    }

    # 3. The 800k run, as evaluate runs it (decisions with evaluate's seed).
    decision = decide(
        filtered["scores"],
        "sample",
        np.random.default_rng(EVALUATE_SEED),
        p_min=p_min,
        calibration=calibration,
    )
    f_skim, r_skim = filtered["passed"], reference["passed"]
    tests = bias_tests(
        {n: filtered[f"variable_{n}"][f_skim] for n in names},
        decision.weight[f_skim],
        decision.keep_probability[f_skim],
        {n: reference[f"variable_{n}"][r_skim] for n in names},
        VARIABLE_KINDS,
        reference_keep_probability=reference["keep_probability"][r_skim],
        toys=BIAS_TOYS,
        rng=np.random.default_rng([EVALUATE_SEED, BIAS_TOY_STREAM]),
    )
    verdict = bias_verdict(tests, len(f_skim), len(r_skim))
    document["run_800k"] = {
        "filtered_events": int(len(f_skim)),
        "reference_events": int(len(r_skim)),
        "filtered_skimmed": int(f_skim.sum()),
        "reference_skimmed": int(r_skim.sum()),
        "max_weight": float(decision.weight.max()),
        "toys": BIAS_TOYS,
        "variables": {
            t.variable: {
                "chi2": round(t.chi2, 2),
                "ndf": t.ndf,
                "p_value_asymptotic": t.p_value_asymptotic,
                "p_value_calibrated": t.p_value,
                "kl_divergence": t.kl_divergence,
                "kl_sampling_noise": t.kl_sampling_noise,
            }
            for t in tests
        },
        "min_p_value_calibrated": min(t.p_value for t in tests),
        "min_p_value_asymptotic": min(t.p_value_asymptotic for t in tests),
        "bias_verdict": verdict.model_dump(),
    }
    document["seconds"] = {"scoring": round(scored - started, 1)}
    print(
        f"800k run: min calibrated p {document['run_800k']['min_p_value_calibrated']:.4g}, verdict {verdict.unbiased}",
        flush=True,
    )
    if args.skip_study:
        document["seconds"]["total"] = round(time.perf_counter() - started, 1)
        write_results(document, args.out)
        return

    # 1. No-bias toys of the asymptotic test.
    pooled = {
        n: np.concatenate([filtered[f"variable_{n}"][f_skim], reference[f"variable_{n}"][r_skim]])
        for n in names
    }
    edges = {
        n: histogram_edges(
            pool_rare_categories(pooled[n]) if VARIABLE_KINDS[n] == "categorical" else pooled[n],
            20,
            VARIABLE_KINDS[n],
        )
        for n in names
    }
    pool = BinnedSample(
        bins=binned(pooled, edges),
        n_bins=np.array([len(e) - 1 for e in edges.values()]),
        keep_probability=np.concatenate(
            [filtered["keep_probability"][f_skim], reference["keep_probability"][r_skim]]
        ),
    )
    retention = len(pool) / (len(f_skim) + len(r_skim))
    rng = np.random.default_rng(2222)
    study: dict = {}
    plots: dict = {}
    sizes = [size for size in SIZES if size <= args.events]
    for size in sizes:
        n_skimmed = int(round(size * retention))
        begun = time.perf_counter()
        boot = chi2_p_value(*toy_chi2(pool, n_skimmed, n_skimmed, args.toys, rng))
        literal = disjoint_toys(
            filtered, reference, names, size, min(args.toys, 500 * (args.events // size)), rng
        )
        study[str(size)] = {
            "skimmed_per_sample": n_skimmed,
            "bootstrap": summary(boot, names),
            "disjoint": {
                **summary(literal, names),
                "event_sets": args.events // size,
                "note": "conditional on one pair of event sets" if args.events // size == 1 else "",
            },
            "seconds": round(time.perf_counter() - begun, 1),
        }
        plots[f"asymptotic, {size // 1000}k"] = boot.ravel()
        print(
            f"{size}: {study[str(size)]['bootstrap']['any_variable_below_0.001']:.3f} any<0.001",
            flush=True,
        )
    document["asymptotic_toys"] = study

    # 2. The calibrated p-value.
    calibrated = {}
    for size in sizes[:2]:
        begun = time.perf_counter()
        events, histograms = calibrated_toys(
            pool, int(round(size * retention)), args.outer, args.inner, rng
        )
        calibrated[str(size)] = {
            "from_events": summary(events, names, args.inner),
            "from_histograms": summary(histograms, names, args.inner),
            "inner_toys": args.inner,
            "seconds": round(time.perf_counter() - begun, 1),
        }
        plots[f"calibrated, {size // 1000}k"] = events.ravel()
    document["calibrated_toys"] = calibrated
    document["seconds"]["total"] = round(time.perf_counter() - started, 1)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        figure, axis = plt.subplots(figsize=(7, 4))
        bins = np.logspace(-6, 0, 25)
        for label, values in plots.items():
            axis.hist(np.maximum(values, 1e-6), bins, histtype="step", density=True, label=label)
        axis.plot(bins, np.ones_like(bins), "k:", lw=0.8, label="uniform")
        axis.set(
            xscale="log",
            yscale="log",
            xlabel="p-value (no bias), all 10 variables",
            ylabel="density",
            title=f"χ² bias test without bias, {scorer.sha256[:8]}, p_min {p_min}",
        )
        axis.legend(fontsize=7)
        figure.tight_layout()
        figure.savefig(args.plot, dpi=80)
    write_results(document, args.out)


if __name__ == "__main__":
    main()
