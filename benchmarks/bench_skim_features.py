"""The hybrid NN filter against a gradient-boosted-tree reference, on the same events.

Both are trained on the same soft-labelled events (skim pass fraction over K + 1 detector
seeds, the same 80/20 split) and scored on the same held-out events; each sampling
speedup is at the Belle II reference costs with t_NN = that model's own cost on one CPU
thread, the ideal-detector skim features included. Rows:

* ``ideal_pass``: the one bit "the skim passes on the ideal detector" (a calibrated score);
* ``trees``: scikit-learn's HistGradientBoostingClassifier on the skim features;
* ``hybrid``: the shipped network shape (GCN + skim features joined before the head),
  trained here with ``smartbkg_prod.filter.train.train_filter``;
* ``shipped``: the model ``--model`` as shipped (graph-only or hybrid), for reference.

    nice python benchmarks/bench_skim_features.py --train train.npz --test test.npz \\
        --out benchmarks/results/filter_skim_features.json

``--train``/``--test`` are labelled-events ``.npz`` files (``LabelledEvents.save``; the
training set with ``pass_fraction``), made by ``--make-train N`` / ``--make-test N``.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from results_file import machine, write_results

from smartbkg_prod.filter.checkpoint import load_model
from smartbkg_prod.filter.data import ChainSettings, LabelledEvents, simulate_ranges
from smartbkg_prod.filter.graph import EncodingTensors, ParticleTensors
from smartbkg_prod.filter.infer import cpu_filter_ms, score_tensors
from smartbkg_prod.filter.metrics import auc
from smartbkg_prod.filter.sampling import fit_calibration
from smartbkg_prod.filter.skim_features import (
    IdealSkim,
    SkimFeatureEncoding,
    take_raw,
)
from smartbkg_prod.filter.speedup import max_speedup, reference_costs, sampling_speedup
from smartbkg_prod.filter.train import TrainOptions, train_filter
from smartbkg_prod.physics.config import SimulationConfig, SkimConfig

SIMULATION, SKIM = SimulationConfig(), SkimConfig()
RANGE_EVENTS = 10_000


@dataclass(frozen=True)
class EventRange:
    first_event: int
    n_events: int
    seed: int


def make_events(n_events: int, seed: int, resimulations: int) -> LabelledEvents:
    chain = ChainSettings("bbbar_generic", SIMULATION, SKIM, resimulations)
    ranges = [
        EventRange(start, min(RANGE_EVENTS, n_events - start), seed + start // RANGE_EVENTS)
        for start in range(0, n_events, RANGE_EVENTS)
    ]
    return simulate_ranges(chain, ranges)


def features_of(particles):
    return IdealSkim.builtin(SIMULATION, SKIM).raw(particles)


def figures(name, scores, validation_scores, validation_target, test, filter_ms, extra=None):
    """AUC and sampling speedup at reference costs, calibrated on the validation events."""
    costs = reference_costs(filter_ms)
    calibration = fit_calibration(validation_scores, validation_target, costs)
    p = calibration.keep_probability(scores)
    speedup = sampling_speedup(p, test.passed, costs)
    # Statistical error of the speedup: bootstrap over the held-out events.
    rng = np.random.default_rng(5)
    boot = [
        sampling_speedup(p[rows], test.passed[rows], costs)
        for rows in (rng.integers(0, test.n_events, test.n_events) for _ in range(50))
    ]
    return {
        "model": name,
        "auc": auc(test.passed, scores),
        "sample_speedup_reference": speedup,
        "sample_speedup_error": float(np.std(boot)),
        "fraction_of_max": speedup / max_speedup(test.retention, costs),
        "filter_ms_cpu_1core": filter_ms,
        "p_min": calibration.p_min,
        "keep_rate": float(p.mean()),
        **(extra or {}),
    }


def run(args) -> dict:
    train = LabelledEvents.load(args.train)
    test = LabelledEvents.load(args.test)
    if train.pass_fraction is None:
        raise SystemExit(f"{args.train} has no pass fraction (make it with --resimulations)")
    torch.set_num_threads(1)
    train_raw, test_raw = features_of(train.particles), features_of(test.particles)
    feature_ms = 1e3 * test_raw.seconds / test.n_events
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(train.n_events)
    n_validation = int(round(0.2 * train.n_events))
    validation_ids, fit_ids = np.sort(order[:n_validation]), np.sort(order[n_validation:])
    target = train.pass_fraction
    rows = []

    ideal_test, ideal_validation = test_raw.values[:, 0], train_raw.values[validation_ids, 0]
    rows.append(
        figures(
            "ideal_pass",
            ideal_test,
            ideal_validation,
            target[validation_ids],
            test,
            feature_ms,
        )
    )

    from sklearn.ensemble import HistGradientBoostingClassifier

    encoding = SkimFeatureEncoding.fit(take_raw(train_raw, fit_ids))
    x_train, x_test = encoding.encode(train_raw), encoding.encode(test_raw)
    # Soft labels: each event enters once as "passes" with weight q̂, once as "fails" with 1 - q̂.
    x_fit = np.concatenate([x_train[fit_ids], x_train[fit_ids]])
    y_fit = np.concatenate([np.ones(len(fit_ids)), np.zeros(len(fit_ids))])
    w_fit = np.concatenate([target[fit_ids], 1 - target[fit_ids]])
    trees = HistGradientBoostingClassifier(
        max_iter=300, learning_rate=0.05, max_leaf_nodes=31, random_state=args.seed
    )
    started, cpu_started = time.perf_counter(), time.process_time()
    trees.fit(x_fit, y_fit, sample_weight=w_fit)
    tree_fit = {
        "train_seconds": time.perf_counter() - started,
        "train_cpu_seconds": time.process_time() - cpu_started,
    }
    timing = x_test[:8192]
    started = time.perf_counter()
    trees.predict_proba(timing)
    tree_ms = 1e3 * (time.perf_counter() - started) / len(timing) + feature_ms
    rows.append(
        figures(
            "trees",
            trees.predict_proba(x_test)[:, 1],
            trees.predict_proba(x_train[validation_ids])[:, 1],
            target[validation_ids],
            test,
            tree_ms,
            tree_fit,
        )
    )

    options = TrainOptions(
        hidden=args.hidden,
        embedding_dim=16,
        max_minutes=args.max_minutes,
        learning_rate=args.learning_rate,
        threads=1,
        seed=args.seed,
        init_model=args.init_model,
    )
    started, cpu_started = time.perf_counter(), time.process_time()
    result = train_filter(train, options, train_raw, features_of)
    hybrid_fit = {
        "train_seconds": time.perf_counter() - started,
        "train_cpu_seconds": time.process_time() - cpu_started,
        "epochs": result.metrics["epochs"],
        "init_model": args.init_model,
    }
    encoding_tensors = EncodingTensors(result.encoding)

    def net_scores(net, enc, events, raw, feature_encoding_):
        rows_ = (
            None if feature_encoding_ is None else torch.from_numpy(feature_encoding_.encode(raw))
        )
        tensors = ParticleTensors.from_batch(events.particles)
        return score_tensors(net, enc, tensors, 128, rows_)[0].numpy()

    validation_mask = np.zeros(train.n_events, dtype=bool)
    validation_mask[validation_ids] = True
    validation = train.subset(validation_mask)
    validation_raw = take_raw(train_raw, validation_mask)
    rows.append(
        figures(
            "hybrid",
            net_scores(result.net, encoding_tensors, test, test_raw, result.feature_encoding),
            net_scores(
                result.net, encoding_tensors, validation, validation_raw, result.feature_encoding
            ),
            target[validation_ids],
            test,
            result.metrics["filter_ms_cpu_1core"],
            hybrid_fit,
        )
    )

    shipped = load_model(args.model)
    shipped_features = (
        SkimFeatureEncoding.from_dict(shipped.metadata["skim_features"])
        if shipped.net.shape.n_event_features
        else None
    )
    shipped_encoding = EncodingTensors(shipped.encoding)
    timing_particles = test.particles.select(np.arange(test.n_events) < 8192)
    rows.append(
        figures(
            f"shipped ({args.model})",
            net_scores(shipped.net, shipped_encoding, test, test_raw, shipped_features),
            net_scores(shipped.net, shipped_encoding, validation, validation_raw, shipped_features),
            target[validation_ids],
            test,
            cpu_filter_ms(
                shipped.net,
                shipped_encoding,
                timing_particles,
                None
                if shipped_features is None
                else lambda particles: shipped_features.encode(features_of(particles)),
            ),
        )
    )
    return {
        "benchmark": "hybrid NN filter vs gradient-boosted trees on ideal-detector skim features",
        "command": "python benchmarks/bench_skim_features.py " + " ".join(args.argv),
        "machine": machine(),
        "train_events": train.n_events,
        "train_resimulations": train.resimulations,
        "test_events": test.n_events,
        "test_retention": test.retention,
        "feature_ms_per_event": feature_ms,
        "costs": "Belle II reference t_g 0.08 ms, t_s 97 ms; t_NN = each model's measured "
        "cost on one CPU thread, the ideal-detector skim features included",
        "results": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--test", type=Path, required=True)
    parser.add_argument("--make-train", type=int, default=0, help="make --train with N events")
    parser.add_argument("--make-test", type=int, default=0, help="make --test with N events")
    parser.add_argument("--resimulations", type=int, default=8)
    parser.add_argument("--model", default="default")
    parser.add_argument("--init-model", default=None)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--max-minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path)
    import sys

    args = parser.parse_args()
    args.argv = sys.argv[1:]
    if args.make_train:
        make_events(args.make_train, 7100, args.resimulations).save(args.train)
    if args.make_test:
        make_events(args.make_test, 8800, 0).save(args.test)
    write_results(run(args), args.out)


if __name__ == "__main__":
    main()
