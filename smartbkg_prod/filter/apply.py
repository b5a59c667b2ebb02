"""The worker's entry to the filter: score events and decide which to simulate.

>>> from smartbkg_prod.filter.config import FilterConfig
>>> run_filter(ParticleBatch.empty(), FilterConfig(mode="off"), seed=1).keep.shape
(0,)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from smartbkg_prod.filter.config import FilterConfig
from smartbkg_prod.filter.runtime import open_scorer, score_events
from smartbkg_prod.filter.sampling import decide
from smartbkg_prod.filter.skim_features import IdealSkim
from smartbkg_prod.physics.events import ParticleBatch


@dataclass(frozen=True)
class FilterDecision:
    """What the filter decided for each event of one batch.

    ``weights`` is 1/p for kept events in sample mode, 1 for kept events otherwise, and 0
    for dropped events; ``keep_probability`` is p (1 or 0 in cut mode).
    """

    keep: np.ndarray  # bool[n_events]
    weights: np.ndarray  # float64[n_events]
    scores: np.ndarray  # float32[n_events] (1 when mode is off)
    keep_probability: np.ndarray  # float64[n_events]
    model_sha256: str  # "" when mode is off
    device: str  # "cpu" or "cuda:0 <GPU name>"
    seconds: float  # wall time of scoring + decision (model check and session excluded)
    # The model's calibrated skim pass probability q of each event (sample mode), which
    # ``filter.tune: auto`` histograms; None otherwise.
    pass_probability: np.ndarray | None = None

    @property
    def n_kept(self) -> int:
        return int(self.keep.sum())


def run_filter(
    particles: ParticleBatch,
    config: FilterConfig,
    seed: int,
    scale: float | None = None,
    p_min: float | None = None,
    threads: int = 1,
    ideal_skim: IdealSkim | None = None,
) -> FilterDecision:
    """Apply ``config`` (mode off / cut / sample) to ``particles``.

    ``scale`` and ``p_min``, when given, replace the sample mode's k of the model and
    ``config.p_min`` (the values ``filter.tune: auto`` chose for the job); ``threads`` is
    the job's CPU cores (ONNX Runtime's intra-op threads); ``ideal_skim`` is where a
    hybrid model's skim features come from (the campaign's skim on the ideal view).
    Deterministic given ``seed`` (one numpy Generator draw per event in sample mode).
    Model problems raise :class:`~smartbkg_prod.filter.errors.ModelLoadError`, an unusable
    requested GPU :class:`~smartbkg_prod.filter.errors.FilterDeviceError`.
    """
    n_events = particles.n_events
    if config.mode == "off":
        ones = np.ones(n_events)
        return FilterDecision(
            keep=np.ones(n_events, dtype=bool),
            weights=ones,
            scores=np.ones(n_events, dtype=np.float32),
            keep_probability=ones.copy(),
            model_sha256="",
            device="cpu",
            seconds=0.0,
        )
    scorer = open_scorer(config.model, config.device, threads, config.batch_size, ideal_skim)
    start = time.perf_counter()
    scores = score_events(scorer, particles)
    calibration = scorer.card.calibration
    if scale is not None:
        calibration = replace(calibration, scale=scale)
    decision = decide(
        scores,
        config.mode,
        np.random.default_rng(seed),
        threshold=config.threshold,
        p_min=config.p_min if p_min is None else p_min,
        calibration=calibration,
    )
    return FilterDecision(
        keep=decision.keep,
        weights=decision.weight,
        scores=scores,
        keep_probability=decision.keep_probability,
        model_sha256=scorer.sha256,
        device=scorer.device_name,
        seconds=time.perf_counter() - start,
        pass_probability=calibration.pass_probability_of(scores)
        if config.mode == "sample"
        else None,
    )
