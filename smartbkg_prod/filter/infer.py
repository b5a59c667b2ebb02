"""Batched torch inference (training, evaluation of the torch net, the runtime comparison
in ``benchmarks/bench_filter.py``): events -> scores on CPU or CUDA, model loaded once per
process. The worker scores with the ONNX export instead (:mod:`runtime`, no torch).

On CPU events are scored in cache-sized chunks (the per-node layers are memory-bound:
~128 events of ~40 particles keep the activations in cache); on CUDA in chunks of
``batch_size`` events with bf16 autocast, graph building included on the device.

>>> device, name = resolve_device("cpu")
>>> name
'cpu'
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from smartbkg_prod.filter.artifact import resolve_model_path
from smartbkg_prod.filter.checkpoint import FilterModel, load_model
from smartbkg_prod.filter.errors import FilterDeviceError
from smartbkg_prod.filter.graph import EncodingTensors, ParticleTensors, build_graphs_from_tensors
from smartbkg_prod.filter.inputs import check_unknown_fraction
from smartbkg_prod.filter.model import FilterNet
from smartbkg_prod.filter.skim_features import model_event_features
from smartbkg_prod.physics.events import ParticleBatch

CPU_CHUNK_EVENTS = 128


def resolve_device(requested: str) -> tuple[torch.device, str]:
    """``auto`` -> CUDA when usable, else CPU; ``cuda`` without a usable GPU -> FilterDeviceError."""
    if requested not in {"auto", "cpu", "cuda"}:
        raise ValueError(f"unknown device {requested!r} (allowed: auto, cpu, cuda)")
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu"), "cpu"
    try:
        if not torch.cuda.is_available():
            raise RuntimeError(
                "torch.cuda.is_available() is False (no driver or no visible device)"
            )
        device = torch.device("cuda:0")
        torch.zeros(1, device=device)  # touches the context: fails here, not mid-job
        return device, f"cuda:0 {torch.cuda.get_device_name(device)}"
    except RuntimeError as error:
        raise FilterDeviceError(
            f"filter.device '{requested}' needs a usable CUDA GPU: {error}; "
            "run on a GPU slot or set filter.device: cpu",
        ) from None


@dataclass
class ScoringModel:
    """A :class:`FilterModel` placed on a device, ready to score events."""

    model: FilterModel
    device: torch.device
    device_name: str
    encoding: EncodingTensors

    @property
    def sha256(self) -> str:
        return self.model.sha256


_CACHE: dict[tuple[str, int, int, str], ScoringModel] = {}


def scoring_model(model: str | Path | None, device: str = "auto") -> ScoringModel:
    """Load (once per process, per file version and device) and place the model."""
    path = resolve_model_path(model)
    torch_device, device_name = resolve_device(device)
    try:
        stat = path.stat()
        key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, str(torch_device))
    except OSError:
        key = None
    if key is not None and key in _CACHE:
        return _CACHE[key]
    loaded = load_model(path)
    try:
        loaded.net.to(torch_device)
    except RuntimeError as error:
        raise FilterDeviceError(f"cannot move the filter model to {device_name}: {error}") from None
    placed = ScoringModel(
        loaded, torch_device, device_name, EncodingTensors(loaded.encoding, torch_device)
    )
    if key is not None:
        _CACHE[key] = placed
    return placed


def score_events(
    scorer: ScoringModel, particles: ParticleBatch, batch_size: int = 4096
) -> np.ndarray:
    """Pass-probability scores (float32[n_events]) of every event.

    Raises :class:`ModelLoadError` when more than the model's allowed fraction of
    particles carry PDG codes outside its vocabulary (it was trained on another process).
    """
    on_cuda = scorer.device.type == "cuda"
    chunk = batch_size if on_cuda else min(batch_size, CPU_CHUNK_EVENTS)
    features = model_event_features(scorer.model.metadata)
    try:
        tensors = ParticleTensors.from_batch(particles, scorer.device)
        rows = None if features is None else torch.from_numpy(features(particles))
        scores, n_unknown = score_tensors(
            scorer.model.net,
            scorer.encoding,
            tensors,
            chunk,
            None if rows is None else rows.to(scorer.device),
        )
        scores, n_unknown = scores.cpu().numpy(), int(n_unknown)
    except torch.cuda.OutOfMemoryError as error:
        raise FilterDeviceError(
            f"GPU out of memory in the filter: {error}; lower filter.batch_size"
        ) from None
    except RuntimeError as error:
        if on_cuda:
            raise FilterDeviceError(
                f"CUDA error in the filter on {scorer.device_name}: {error}"
            ) from None
        raise
    model = scorer.model
    check_unknown_fraction(
        model.path, model.encoding, model.max_unknown_fraction, n_unknown, particles
    )
    return scores


def score_tensors(
    net: FilterNet,
    encoding: EncodingTensors,
    tensors: ParticleTensors,
    chunk: int,
    event_features: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores of particle tensors already on the net's device, ``chunk`` events at a time
    (with their rows of ``event_features`` for a hybrid net); also the number of particles
    with PDG codes outside the vocabulary (both on device)."""
    offsets = tensors.offsets
    device = offsets.device
    n_events = len(offsets) - 1
    scores = torch.empty(n_events, dtype=torch.float32, device=device)
    n_unknown = torch.zeros((), dtype=torch.int64, device=device)
    # Event-range slices of CSR tensors are views: no copies per chunk.
    bounds = offsets.cpu().numpy()
    on_cuda = device.type == "cuda"
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_cuda):
        for start in range(0, n_events, chunk):
            stop = min(start + chunk, n_events)
            first, last = int(bounds[start]), int(bounds[stop])
            part = ParticleTensors(
                offsets=offsets[start : stop + 1] - first,
                pdg=tensors.pdg[first:last],
                mother=tensors.mother[first:last],
                features=tensors.features[first:last],
            )
            graph = build_graphs_from_tensors(part, encoding)
            n_unknown += graph.n_unknown_pdg
            rows = None if event_features is None else event_features[start:stop]
            scores[start:stop] = torch.sigmoid(net(graph, rows).float())
    return scores, n_unknown


def cpu_filter_ms(
    net: FilterNet,
    encoding: EncodingTensors,
    particles: ParticleBatch,
    event_features: Callable[[ParticleBatch], np.ndarray] | None = None,
    repeats: int = 3,
) -> float:
    """Filter cost per event on one CPU thread, graph building and a hybrid net's
    ``event_features`` (events -> rows) included (best of ``repeats``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        best = np.inf
        for _ in range(repeats):
            start = time.perf_counter()
            rows = None if event_features is None else torch.from_numpy(event_features(particles))
            tensors = ParticleTensors.from_batch(particles)
            score_tensors(net, encoding, tensors, CPU_CHUNK_EVENTS, rows)
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return 1e3 * best / max(particles.n_events, 1)
