"""The oracle at K = 8, 32, 64 re-simulations on the very events ``evaluate`` scores.

``evaluate --oracle K`` gives one K; this re-simulates the events of an evaluation's
``--save-events`` file (or of ``--events N --seed S``, made exactly as ``evaluate`` makes
them) max(K) times once, and scores each K with the first K detector seeds, as
:func:`smartbkg_prod.filter.evaluate.oracle_figures` does, so the reader sees the model's
fraction of the limit on the same events.

    nice python benchmarks/bench_oracle_k.py --events 100000 --seed 424242 --filter-ms 0.5 \\
        --out benchmarks/results/filter_oracle_k_100k.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from results_file import machine, write_results

from smartbkg_prod.filter.data import LabelledEvents, simulate_labelled
from smartbkg_prod.filter.metrics import auc
from smartbkg_prod.filter.oracle import pass_fraction, resimulate_passes
from smartbkg_prod.filter.sampling import fit_calibration
from smartbkg_prod.filter.speedup import max_speedup, reference_costs, sampling_speedup
from smartbkg_prod.physics.config import SimulationConfig, SkimConfig

ORACLE_FIRST_SEED = 97_000  # evaluate's oracle seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events-file", type=Path, default=None)
    parser.add_argument(
        "--first", type=int, default=None, help="only the first N events (a CPU budget)"
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=424242, help="evaluate's generator seed")
    parser.add_argument("--resimulations", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--filter-ms", type=float, required=True, help="t_NN of the model")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.events_file:
        events = LabelledEvents.load(args.events_file)
    else:
        events = simulate_labelled(
            "bbbar_generic", args.events, args.seed, SimulationConfig(), SkimConfig()
        )
    if args.first is not None:
        events = events.subset(np.arange(events.n_events) < args.first)
    started = time.perf_counter()
    passes = resimulate_passes(
        events.particles, max(args.resimulations), first_seed=ORACLE_FIRST_SEED
    )
    seconds = time.perf_counter() - started
    costs = reference_costs(args.filter_ms)
    passed = events.passed
    rows = []
    for k in args.resimulations:
        q = pass_fraction(passes[:k])
        calibration = fit_calibration(q, passed, costs)
        speedup = sampling_speedup(calibration.keep_probability(q), passed, costs)
        rows.append(
            {
                "resimulations": k,
                "auc": auc(passed, q),
                "sample_speedup_reference": speedup,
                "sample_fraction_of_max": speedup / max_speedup(events.retention, costs),
            }
        )
        print(rows[-1], flush=True)
    write_results(
        {
            "benchmark": "oracle (re-simulated pass fraction) on evaluate's events",
            "command": "python benchmarks/bench_oracle_k.py " + " ".join(sys.argv[1:]),
            "machine": machine(),
            "n_events": events.n_events,
            "generator_seed": None if args.events_file else args.seed,
            "retention": events.retention,
            "costs_ms": costs.to_dict(),
            "max_speedup": max_speedup(events.retention, costs),
            "oracle": rows,
            "resimulation_seconds": seconds,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
