"""Scoring with the hybrid filter: decay-tree GCN + ideal-detector skim features.

A model whose network has event features (``NetShape.n_event_features`` > 0) records the
feature encoding in its metadata (``skim_features``); its score of a batch needs the
batch's features (:mod:`smartbkg_prod.filter.skim_features`) besides the particles. Its
per-event cost t_NN is the feature building (ideal view + skim + encoding) plus the network.

>>> feature_encoding({"net_shape": {"n_event_features": 0}}) is None
True
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from smartbkg_prod.filter.graph import EncodingTensors, ParticleTensors, build_graphs_from_tensors
from smartbkg_prod.filter.model import FilterNet
from smartbkg_prod.filter.skim_features import RawSkimFeatures, SkimFeatureEncoding
from smartbkg_prod.physics.events import ParticleBatch

CPU_CHUNK_EVENTS = 128


def feature_encoding(metadata: dict[str, Any]) -> SkimFeatureEncoding | None:
    """The skim-feature encoding a model's metadata records (None: a graph-only model)."""
    if not metadata.get("net_shape", {}).get("n_event_features", 0):
        return None
    return SkimFeatureEncoding.from_dict(metadata["skim_features"])


def score_with_features(
    net: FilterNet,
    encoding: EncodingTensors,
    tensors: ParticleTensors,
    event_features: torch.Tensor | None,
    chunk: int = CPU_CHUNK_EVENTS,
) -> torch.Tensor:
    """Scores of particle tensors (and their event feature rows) ``chunk`` events at a time."""
    offsets = tensors.offsets
    n_events = len(offsets) - 1
    scores = torch.empty(n_events, dtype=torch.float32, device=offsets.device)
    bounds = offsets.cpu().numpy()
    with torch.inference_mode():
        for start in range(0, n_events, chunk):
            stop = min(start + chunk, n_events)
            first, last = int(bounds[start]), int(bounds[stop])
            part = ParticleTensors(
                offsets=offsets[start : stop + 1] - first,
                pdg=tensors.pdg[first:last],
                mother=tensors.mother[first:last],
                features=tensors.features[first:last],
            )
            rows = None if event_features is None else event_features[start:stop]
            scores[start:stop] = torch.sigmoid(net(build_graphs_from_tensors(part, encoding), rows))
    return scores


def cpu_hybrid_ms(
    net: FilterNet,
    encoding: EncodingTensors,
    particles: ParticleBatch,
    features: Callable[[ParticleBatch], np.ndarray] | None,
    repeats: int = 3,
) -> float:
    """t_NN on one CPU thread: feature building (``features``: particles -> encoded rows)
    plus graph building and the network, best of ``repeats``, per event."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        best = np.inf
        for _ in range(repeats):
            start = time.perf_counter()
            rows = None if features is None else torch.from_numpy(features(particles))
            score_with_features(net, encoding, ParticleTensors.from_batch(particles), rows)
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return 1e3 * best / max(particles.n_events, 1)


def encoded(raw: RawSkimFeatures, encoding: SkimFeatureEncoding) -> torch.Tensor:
    return torch.from_numpy(encoding.encode(raw))
