"""Training the filter GCN on labelled events (label = skim decision, or its pass fraction).

The label: with events re-simulated K times (:func:`~smartbkg_prod.filter.data.add_pass_fraction`)
the target is the soft label q̂(x), the skim pass fraction over K + 1 detector seeds, an
unbiased estimate of q(x) = P(skim passes | x) with (K + 1) times less label noise than the
one skim decision; otherwise that decision (0 or 1).

Loss: binary cross-entropy against the target with balanced class weights (each class
carries half the total weight: retention is a few per cent), optionally ``+ λ_disco · dCorr²(score, variable)`` on
failing events (DisCo: decorrelates the score from an event variable) and
``+ λ_speedup · 1/S_eff`` with ``p = clamp(score, p_min, 1)`` (the sampling formula of
ARCHITECTURE.md at reference costs, differentiable). Early stopping on the validation loss
(20% of the events, patience 10 epochs) with a wall-time cap; the best epoch's weights are
kept. After training: isotonic calibration and the sampling scale on the validation set,
the cut threshold, the single-core inference cost, and everything written into the artifact.

>>> TrainOptions().patience
10
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.nn import functional as F

from smartbkg_prod.filter.checkpoint import save_model
from smartbkg_prod.filter.data import LabelledEvents
from smartbkg_prod.filter.encoding import GraphEncoding
from smartbkg_prod.filter.graph import (
    EncodingTensors,
    ParticleTensors,
    build_graphs_from_tensors,
    take_events,
)
from smartbkg_prod.filter.infer import cpu_filter_ms
from smartbkg_prod.filter.metrics import auc
from smartbkg_prod.filter.model import FilterNet
from smartbkg_prod.filter.sampling import SamplingCalibration, fit_calibration
from smartbkg_prod.filter.skim_features import RawSkimFeatures, SkimFeatureEncoding, take_raw
from smartbkg_prod.filter.speedup import (
    StageCosts,
    best_threshold,
    cut_speedup,
    max_speedup,
    reference_costs,
    sampling_speedup,
)
from smartbkg_prod.physics.events import ParticleBatch

log = logging.getLogger(__name__)


class TrainOptions(BaseModel):
    """Hyperparameters of one training run (all recorded in the artifact)."""

    model_config = ConfigDict(extra="forbid")

    hidden: int = Field(
        default=64, gt=0, description="width of the dense and GCN layers (reference: 128)"
    )
    embedding_dim: int = Field(default=8, ge=1, le=64)
    batch_size: int = Field(default=1024, gt=0)
    learning_rate: float = Field(default=2e-3, gt=0)
    max_epochs: int = Field(default=200, gt=0)
    patience: int = Field(default=10, gt=0)
    validation_fraction: float = Field(default=0.2, gt=0, lt=1)
    max_minutes: float = Field(default=15.0, gt=0)
    min_pdg_count: int = Field(
        default=5, ge=1, description="rarer PDG codes share the unknown embedding"
    )
    disco_lambda: float = Field(default=0.0, ge=0)
    disco_variable: str = "n_mc_particles"
    speedup_lambda: float = Field(default=0.0, ge=0)
    soft_labels: bool = Field(
        default=True,
        description="train on the pass fraction q̂ when the events carry one (re-simulated)",
    )
    init_model: str | None = Field(
        default=None,
        description="start from this model's weights, shape and graph encoding (fine-tuning; "
        "'default' = the shipped model) instead of a fresh network",
    )
    seed: int = 1
    threads: int = Field(default=2, gt=0)
    device: str = Field(default="cpu", pattern="^(cpu|cuda)$")


@dataclass
class TrainResult:
    net: FilterNet
    encoding: GraphEncoding
    calibration: SamplingCalibration
    threshold: float
    metrics: dict[str, Any]
    history: list[dict[str, float]]
    feature_encoding: SkimFeatureEncoding | None = None


def distance_correlation_squared(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sample dCorr² of two 1-D tensors (Székely), differentiable; 0 = independent."""

    def centred(v: torch.Tensor) -> torch.Tensor:
        d = (v[:, None] - v[None, :]).abs()
        return d - d.mean(0, keepdim=True) - d.mean(1, keepdim=True) + d.mean()

    a, b = centred(x), centred(y)
    dcov_xy, dcov_xx, dcov_yy = (a * b).mean(), (a * a).mean(), (b * b).mean()
    return dcov_xy / (dcov_xx * dcov_yy).sqrt().clamp(min=1e-12)


def inverse_speedup(
    scores: torch.Tensor, target: torch.Tensor, costs: StageCosts, p_min: float
) -> torch.Tensor:
    """``1/S_eff`` of sampling with ``p = clamp(score, p_min, 1)`` (differentiable);
    ``target`` is the skim decision (0/1) or the pass fraction q̂: ``⟨1/p⟩_pass`` is then
    ``Σ q̂/p / Σ q̂``, the same in expectation with far less noise."""
    p = scores.clamp(min=p_min)
    total = target.sum()
    if float(total) <= 0:
        return scores.new_zeros(())
    t_g, t_nn, t_s = costs.generation_ms, costs.filter_ms, costs.simulation_ms
    return (target / p).sum() / total * (t_g + t_nn + t_s * p.mean()) / (t_g + t_s)


class _Trainer:
    def __init__(
        self,
        events: LabelledEvents,
        options: TrainOptions,
        features: RawSkimFeatures | None = None,
    ):
        self.options = options
        self.rng = np.random.default_rng(options.seed)
        torch.manual_seed(options.seed)
        n = events.n_events
        order = self.rng.permutation(n)
        n_validation = max(1, int(round(options.validation_fraction * n)))
        self.validation_ids = np.sort(order[:n_validation])
        self.train_ids = np.sort(order[n_validation:])
        train_mask = np.zeros(n, dtype=bool)
        train_mask[self.train_ids] = True
        initial = None
        if options.init_model:
            from smartbkg_prod.filter.checkpoint import load_model

            initial = load_model(options.init_model)
            self.encoding = initial.encoding
        else:
            self.encoding = GraphEncoding.fit(
                events.particles.select(train_mask), options.min_pdg_count
            )
        self.init_sha256 = initial.sha256 if initial is not None else None
        self.device = torch.device("cuda:0" if options.device == "cuda" else "cpu")
        torch.backends.cuda.matmul.allow_tf32 = True  # ample precision for training, much faster
        self.encoding_tensors = EncodingTensors(self.encoding, self.device)
        self.tensors = ParticleTensors.from_batch(events.particles, self.device)
        self.passed = torch.from_numpy(events.passed.astype(np.float32)).to(self.device)
        self.soft = options.soft_labels and events.pass_fraction is not None
        target = events.pass_fraction if self.soft else events.passed
        self.target_array = np.asarray(target, dtype=np.float64)
        self.target = torch.from_numpy(self.target_array.astype(np.float32)).to(self.device)
        n_pass = float(self.target_array[self.train_ids].sum())
        n_train = len(self.train_ids)
        if n_pass == 0 or n_pass == n_train:
            raise ValueError("training events need both skim-passing and failing events")
        # Balanced class weights: each class carries half of the total weight. As a
        # pos_weight the positive term gets w1/w0, so a soft target q̂ splits each event's
        # weight between the classes like its hard label would on average.
        self.class_weight = (n_train / (2 * (n_train - n_pass)), n_train / (2 * n_pass))
        self.pos_weight = torch.tensor(self.class_weight[1] / self.class_weight[0]).to(self.device)
        variable = events.variables.get(options.disco_variable)
        if options.disco_lambda > 0 and variable is None:
            raise ValueError(
                f"DisCo variable {options.disco_variable!r} not in {sorted(events.variables)}"
            )
        self.disco_variable = (
            None
            if variable is None
            else torch.from_numpy(variable.astype(np.float32)).to(self.device)
        )
        self.feature_encoding = None
        self.event_features = None
        if features is not None:
            if initial is not None and initial.net.shape.n_event_features:
                # Fine-tuning a hybrid: its inputs keep their meaning (like its vocabulary).
                self.feature_encoding = SkimFeatureEncoding.from_dict(
                    initial.metadata["skim_features"]
                )
            else:
                self.feature_encoding = SkimFeatureEncoding.fit(take_raw(features, self.train_ids))
            self.event_features = torch.from_numpy(self.feature_encoding.encode(features)).to(
                self.device
            )
        n_event_features = 0 if self.feature_encoding is None else self.feature_encoding.width
        if initial is None:
            self.net = FilterNet(
                self.encoding.n_pdg,
                embedding_dim=options.embedding_dim,
                hidden=options.hidden,
                n_event_features=n_event_features,
            )
        elif initial.net.shape.n_event_features == n_event_features:
            self.net = initial.net
        elif initial.net.shape.n_event_features:
            raise ValueError(
                f"{options.init_model} is a hybrid model (skim features): fine-tune it with "
                "the skim features (train --skim-features) or start from a graph-only model"
            )
        else:
            self.net = _with_event_features(initial.net, n_event_features)
        self.net = self.net.to(self.device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=options.learning_rate)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, factor=0.5, patience=4
        )

    def _logits(self, ids: torch.Tensor) -> torch.Tensor:
        graph = build_graphs_from_tensors(take_events(self.tensors, ids), self.encoding_tensors)
        rows = None if self.event_features is None else self.event_features.index_select(0, ids)
        return self.net(graph, rows)

    def _loss(self, ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        labels = self.passed.index_select(0, ids)
        target = self.target.index_select(0, ids)
        loss = self.class_weight[0] * F.binary_cross_entropy_with_logits(
            logits, target, pos_weight=self.pos_weight
        )
        options = self.options
        if options.disco_lambda > 0 and self.disco_variable is not None:
            failing = labels < 0.5
            loss = loss + options.disco_lambda * distance_correlation_squared(
                torch.sigmoid(logits[failing]), self.disco_variable.index_select(0, ids)[failing]
            )
        if options.speedup_lambda > 0:
            loss = loss + options.speedup_lambda * inverse_speedup(
                torch.sigmoid(logits), target, reference_costs(), p_min=0.01
            )
        return loss

    def scores(self, ids: np.ndarray, chunk: int = 4096) -> np.ndarray:
        self.net.eval()
        with torch.inference_mode():
            parts = [
                torch.sigmoid(
                    self._logits(torch.from_numpy(ids[start : start + chunk]).to(self.device))
                )
                for start in range(0, len(ids), chunk)
            ]
        return torch.cat(parts).cpu().numpy()

    def _validation_loss(self) -> tuple[float, float]:
        scores = self.scores(self.validation_ids)
        labels = self.passed.cpu().numpy()[self.validation_ids]
        target = self.target_array[self.validation_ids]
        w0, w1 = self.class_weight
        clipped = np.clip(scores, 1e-7, 1 - 1e-7)
        bce = -(w1 * target * np.log(clipped) + w0 * (1 - target) * np.log(1 - clipped))
        return float(np.mean(bce)), auc(labels > 0.5, scores)

    def run(self) -> tuple[list[dict[str, float]], int]:
        options = self.options
        deadline = time.monotonic() + 60.0 * options.max_minutes
        best_loss, best_state, best_epoch, stale = np.inf, None, 0, 0
        history: list[dict[str, float]] = []
        for epoch in range(1, options.max_epochs + 1):
            self.net.train()
            started = time.monotonic()
            shuffled = torch.from_numpy(self.rng.permutation(self.train_ids)).to(self.device)
            total = 0.0
            for start in range(0, len(shuffled), options.batch_size):
                ids = shuffled[start : start + options.batch_size]
                loss = self._loss(ids, self._logits(ids))
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                total += float(loss.detach()) * len(ids)
            validation_loss, validation_auc = self._validation_loss()
            self.scheduler.step(validation_loss)
            history.append(
                {
                    "epoch": epoch,
                    "train_loss": total / len(shuffled),
                    "validation_loss": validation_loss,
                    "validation_auc": validation_auc,
                    "seconds": time.monotonic() - started,
                }
            )
            log.info("epoch %d: %s", epoch, history[-1])
            if validation_loss < best_loss:
                best_loss, best_state, best_epoch, stale = (
                    validation_loss,
                    copy.deepcopy(self.net.state_dict()),
                    epoch,
                    0,
                )
            else:
                stale += 1
            if stale >= options.patience:
                log.info("early stop: no validation improvement for %d epochs", options.patience)
                break
            if time.monotonic() + history[-1]["seconds"] > deadline:
                log.info(
                    "stopping: the next epoch would pass the %.1f min cap", options.max_minutes
                )
                break
        if best_state is not None:
            self.net.load_state_dict(best_state)
        self.net.eval()
        return history, best_epoch


def _with_event_features(graph_net: FilterNet, n_event_features: int) -> FilterNet:
    """A hybrid network starting from a trained graph-only one: every graph weight is
    copied, and the head's new feature inputs start at zero, so its first scores are the
    graph model's."""
    shape = replace(graph_net.shape, n_event_features=n_event_features)
    net = FilterNet.from_shape(shape)
    state = graph_net.state_dict()
    first = net.head_layers[0]
    with torch.no_grad():
        weight = torch.zeros_like(first.weight)
        weight[:, : shape.hidden] = state["head_layers.0.weight"]
        state["head_layers.0.weight"] = weight
    net.load_state_dict(state)
    return net


def train_filter(
    events: LabelledEvents,
    options: TrainOptions | None = None,
    features: RawSkimFeatures | None = None,
    feature_builder: Callable[[ParticleBatch], RawSkimFeatures] | None = None,
) -> TrainResult:
    """Train on ``events`` (80/20 train/validation split by ``options.seed``).

    With ``features`` (the ideal-detector skim features of ``events``,
    :mod:`smartbkg_prod.filter.skim_features`) the network is the hybrid;
    ``feature_builder`` then builds them for the timing events, so t_NN includes their cost.
    """
    options = options or TrainOptions()
    threads = torch.get_num_threads()
    torch.set_num_threads(options.threads)
    try:
        trainer = _Trainer(events, options, features)
        started = time.monotonic()
        history, best_epoch = trainer.run()
        train_seconds = time.monotonic() - started
        validation_scores = trainer.scores(trainer.validation_ids)
    finally:
        torch.set_num_threads(threads)
    validation_passed = events.passed[trainer.validation_ids]
    # The artifact is a CPU model; t_NN for the sampling optimisation is one CPU core's.
    trainer.net.cpu()
    timing = np.zeros(events.n_events, dtype=bool)
    timing[trainer.validation_ids[:4096]] = True
    feature_encoding = trainer.feature_encoding
    filter_ms = cpu_filter_ms(
        trainer.net,
        EncodingTensors(trainer.encoding),
        events.particles.select(timing),
        None
        if feature_encoding is None or feature_builder is None
        else lambda particles: feature_encoding.encode(feature_builder(particles)),
    )
    costs = reference_costs(filter_ms)
    # Soft labels calibrate q(score) and choose (k, p_min) with less noise than the labels.
    validation_target = (
        trainer.target_array[trainer.validation_ids] if trainer.soft else validation_passed
    )
    calibration = fit_calibration(validation_scores, validation_target, costs)
    threshold = best_threshold(validation_scores, validation_passed, costs)
    keep = validation_scores > threshold
    retention = float(validation_passed.mean())
    metrics = {
        "validation_auc": auc(validation_passed, validation_scores),
        "validation_events": int(len(validation_scores)),
        "train_events": int(len(trainer.train_ids)),
        "retention": retention,
        "best_epoch": best_epoch,
        "epochs": len(history),
        "train_seconds": train_seconds,
        "filter_ms_cpu_1core": filter_ms,
        "reference_costs_ms": costs.to_dict(),
        "max_speedup_reference": max_speedup(retention, costs),
        "init_model_sha256": trainer.init_sha256,
        "labels": f"pass fraction over {events.resimulations + 1} detector seeds"
        if trainer.soft
        else "skim decision",
        "sample_speedup_reference": sampling_speedup(
            calibration.keep_probability(validation_scores), validation_passed, costs
        ),
        "cut_speedup_reference": cut_speedup(
            retention,
            float(keep[validation_passed].mean()),
            float(keep[~validation_passed].mean()),
            costs,
        ),
    }
    return TrainResult(
        trainer.net,
        trainer.encoding,
        calibration,
        threshold,
        metrics,
        history,
        feature_encoding,
    )


def save_trained(
    result: TrainResult,
    path: str | Path,
    events: LabelledEvents,
    options: TrainOptions,
    command: str,
) -> str:
    """Write the artifact with its training provenance; return its sha256."""
    metadata = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "training": {
            "data_sha256": events.data_hash(),
            "n_events": events.n_events,
            "options": options.model_dump(),
            "metrics": result.metrics,
            "history": result.history,
        },
    }
    if result.feature_encoding is not None:
        metadata["skim_features"] = result.feature_encoding.to_dict()
    return save_model(
        path, result.net, result.encoding, result.calibration, result.threshold, metadata
    )
