"""Upper bound on the speedup of any generator-level filter (smartbkg_prod.filter.oracle).

Re-simulates the same generic B B̄ events with K independent detector seeds and reports,
for K = 4 ... 64, the upward-biased bound ρ̂ = (mean q̂ / mean √q̂)² (and its exact form
at the reference costs) next to the achievable held-out fraction of S_max; then ρ̂ with
K = 32 for detector variants (perfect PID, tracking, photons, no smearing, all perfect).

    nice python benchmarks/bench_oracle_bound.py --out benchmarks/results/filter_oracle_bound.json

Costs: Belle II reference t_g = 0.08 ms and t_s = 97 ms, t_NN measured on one CPU core
(``filter_ms_per_event`` of benchmarks/results/filter_cpu.json).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from results_file import machine, write_results

from smartbkg_prod.filter.oracle import (
    FIRST_DETECTOR_SEED,
    held_out_fraction,
    pass_fraction,
    resimulate_passes,
    resimulation_scan,
    upper_bound,
)
from smartbkg_prod.filter.speedup import max_speedup, reference_costs
from smartbkg_prod.physics.generate import generate_events
from smartbkg_prod.spec import SimulationConfig

FILTER_CPU = Path(__file__).parent / "results" / "filter_cpu.json"
TARGET_FRACTION_OF_MAX = 0.6

PERFECT_PID = {"kaon_id_efficiency": 1.0, "pion_to_kaon_misid": 0.0}
PERFECT_EFFICIENCIES = {"track_efficiency": 1.0, "photon_efficiency": 1.0}
DETECTOR_VARIANTS: dict[str, dict[str, float]] = {
    "default": {},
    "perfect_pid": PERFECT_PID,
    "perfect_tracking": {"track_efficiency": 1.0},
    "perfect_photons": {"photon_efficiency": 1.0},
    "no_smearing": {
        "pt_resolution_a": 0.0,
        "pt_resolution_b": 0.0,
        "photon_resolution_stochastic": 0.0,
        "photon_resolution_constant": 0.0,
        "vertex_resolution_mm": 0.0,
    },
    "perfect_efficiencies_and_pid": {**PERFECT_EFFICIENCIES, **PERFECT_PID},
}


def detector_variants(particles, resimulations: int, costs, labels: int) -> dict:
    """ρ̂ (K = ``resimulations``) and the held-out fraction for each detector variant."""
    results = {}
    for name, changes in DETECTOR_VARIANTS.items():
        start = time.perf_counter()
        passes = resimulate_passes(particles, resimulations + 1, SimulationConfig(**changes))
        bound = upper_bound(pass_fraction(passes[:resimulations]), costs)
        held_out = held_out_fraction(passes, resimulations, costs, labels=labels)
        results[name] = {
            "changed_fields": changes,
            "retention": bound.retention,
            "ratio": bound.ratio,
            "ratio_error": bound.ratio_error,
            "fraction_of_max_bound": bound.fraction_of_max,
            "held_out_fraction_of_max": held_out.fraction_of_max,
            "held_out_fraction_of_max_error": held_out.fraction_of_max_error,
            "seconds": time.perf_counter() - start,
        }
        print(f"{name}: ρ̂ {bound.ratio:.3f}, held-out {held_out.fraction_of_max:.3f}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=4242, help="generation seed")
    parser.add_argument("--resimulations", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    parser.add_argument("--variant-events", type=int, default=8000)
    parser.add_argument("--variant-resimulations", type=int, default=32)
    parser.add_argument("--labels", type=int, default=8, help="label seeds per held-out figure")
    parser.add_argument(
        "--filter-ms",
        type=float,
        default=None,
        help="t_NN in ms (default: filter_ms_per_event of filter_cpu.json)",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    filter_ms = args.filter_ms
    if filter_ms is None:
        filter_ms = json.loads(FILTER_CPU.read_text())["filter_ms_per_event"]
    costs = reference_costs(filter_ms)
    start = time.perf_counter()
    particles = generate_events("bbbar_generic", args.events, args.seed)
    generation_seconds = time.perf_counter() - start

    start = time.perf_counter()
    passes = resimulate_passes(particles, max(args.resimulations) + 1)
    simulation_seconds = time.perf_counter() - start
    scan = resimulation_scan(passes, tuple(args.resimulations), costs, labels=args.labels)
    for point in scan:
        print(
            f"K={point.resimulations}: ρ̂ {point.upper_bound.ratio:.3f}, "
            f"held-out {point.held_out.fraction_of_max:.3f}",
            flush=True,
        )
    variant_particles = particles.select(np.arange(particles.n_events) < args.variant_events)
    variants = detector_variants(
        variant_particles, args.variant_resimulations, costs, labels=args.labels
    )

    retention = float(passes.mean())
    largest = scan[-1]
    results = {
        "command": "nice python benchmarks/bench_oracle_bound.py "
        f"--events {args.events} --seed {args.seed} "
        f"--resimulations {' '.join(map(str, args.resimulations))} "
        f"--variant-events {args.variant_events} "
        f"--variant-resimulations {args.variant_resimulations} --labels {args.labels}",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": machine(),
        "process": "bbbar_generic",
        "n_events": args.events,
        "generation_seed": args.seed,
        "detector_seeds": f"{FIRST_DETECTOR_SEED} + k",
        "costs_ms": costs.to_dict(),
        "filter_ms_source": "--filter-ms" if args.filter_ms is not None else str(FILTER_CPU.name),
        "retention_all_seeds": retention,
        "max_speedup": max_speedup(retention, costs),
        "target_fraction_of_max": TARGET_FRACTION_OF_MAX,
        "resimulation_scan": [point.to_dict() for point in scan],
        "summary": {
            "resimulations": [point.resimulations for point in scan],
            "ratio_upper_bound": [point.upper_bound.ratio for point in scan],
            "ratio_upper_bound_error": [point.upper_bound.ratio_error for point in scan],
            "fraction_of_max_upper_bound": [point.upper_bound.fraction_of_max for point in scan],
            "held_out_fraction_of_max": [point.held_out.fraction_of_max for point in scan],
            "held_out_fraction_of_max_error": [
                point.held_out.fraction_of_max_error for point in scan
            ],
            "target_reachable_by_generator_level_filter": (
                largest.upper_bound.fraction_of_max >= TARGET_FRACTION_OF_MAX
            ),
        },
        "detector_variants": {
            "n_events": variant_particles.n_events,
            "resimulations": args.variant_resimulations,
            "variants": variants,
        },
        "seconds": {
            "generation": generation_seconds,
            "simulation_and_skim": simulation_seconds,
        },
    }
    write_results(results, args.out)


if __name__ == "__main__":
    main()
