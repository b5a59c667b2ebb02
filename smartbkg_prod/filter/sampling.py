"""Keep decisions and weights: cut mode and importance sampling.

**Sample mode.** Keep an event with probability ``p = clip(k · sqrt(q(score)), p_min, 1)``
and give kept events the weight ``1/p``; every event has ``p > 0``, so weighted totals are
unbiased by construction. ``q(score)`` is the calibrated skim pass probability (isotonic
fit on the training validation set). Why ``sqrt(q)``: the effective speedup
``(t_g + t_s) / (⟨1/p⟩_pass (t_g + t_NN + t_s ⟨p⟩_all))`` is maximised, for a fixed
``⟨p⟩_all``, by minimising ``Σ q/p`` subject to ``Σ p`` fixed, whose Lagrange solution is
``p ∝ sqrt(q)``. The scale ``k`` and the recommended ``p_min`` are then chosen on the
validation set to maximise the effective speedup at the reference costs.

**Cut mode.** Keep events with ``score > threshold`` (weight 1; biased by design).

>>> calibration = SamplingCalibration(score=(0.0, 1.0), pass_probability=(0.0, 1.0), scale=1.0, p_min=0.01)
>>> calibration.keep_probability(np.array([0.0, 0.25, 1.0]), p_min=0.05).tolist()
[0.05, 0.5, 1.0]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from smartbkg_prod.filter.speedup import StageCosts, sampling_speedup

CALIBRATION_POINTS = 201


@dataclass(frozen=True)
class SamplingCalibration:
    """Score -> keep probability for sample mode (stored in the model artifact)."""

    score: tuple[float, ...]  # increasing score grid
    pass_probability: tuple[float, ...]  # calibrated q at the grid points (non-decreasing)
    scale: float  # k in p = k sqrt(q)
    p_min: float  # recommended lower clip (the campaign's filter.p_min overrides it)

    def pass_probability_of(self, scores: np.ndarray) -> np.ndarray:
        return np.interp(np.asarray(scores, dtype=np.float64), self.score, self.pass_probability)

    def keep_probability(self, scores: np.ndarray, p_min: float | None = None) -> np.ndarray:
        p_min = self.p_min if p_min is None else p_min
        raw = self.scale * np.sqrt(self.pass_probability_of(scores))
        return np.clip(raw, p_min, 1.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "function": "clip(scale * sqrt(isotonic_pass_probability(score)), p_min, 1)",
            "score": list(self.score),
            "pass_probability": list(self.pass_probability),
            "scale": self.scale,
            "p_min": self.p_min,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SamplingCalibration:
        return cls(
            score=tuple(float(v) for v in data["score"]),
            pass_probability=tuple(float(v) for v in data["pass_probability"]),
            scale=float(data["scale"]),
            p_min=float(data["p_min"]),
        )


def fit_calibration(
    scores: np.ndarray,
    passed: np.ndarray,
    costs: StageCosts,
    p_min_choices: tuple[float, ...] = (0.002, 0.005, 0.01, 0.02, 0.05),
) -> SamplingCalibration:
    """Isotonic ``q(score)``, then the (k, p_min) with the best effective speedup at ``costs``.

    ``passed``: the skim decisions (bool), or pass fractions q̂ of re-simulated events
    (float), which fit the same ``q(score)`` with less noise."""
    # Imported here: training needs scikit-learn, the worker (decide) does not.
    from sklearn.isotonic import IsotonicRegression

    scores = np.asarray(scores, dtype=np.float64)
    passed = np.asarray(passed)
    passed = passed.astype(np.float64) if passed.dtype.kind == "f" else passed.astype(bool)
    isotonic = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(
        scores, passed.astype(np.float64)
    )
    grid = np.unique(np.quantile(scores, np.linspace(0.0, 1.0, CALIBRATION_POINTS)))
    grid[0], grid[-1] = 0.0, 1.0
    q_grid = isotonic.predict(grid)
    q_events = np.interp(scores, grid, q_grid)
    best = (-np.inf, 1.0, p_min_choices[0])
    root_q = np.sqrt(q_events)
    for p_min in p_min_choices:
        for scale in np.geomspace(0.5, 200.0, 120):
            speedup = sampling_speedup(np.clip(scale * root_q, p_min, 1.0), passed, costs)
            if speedup > best[0]:
                best = (speedup, float(scale), p_min)
    return SamplingCalibration(
        score=tuple(grid.tolist()),
        pass_probability=tuple(q_grid.tolist()),
        scale=best[1],
        p_min=best[2],
    )


@dataclass(frozen=True)
class KeepDecision:
    """Per-event decision: ``weight`` is 1/p for kept events, 0 for dropped ones."""

    keep: np.ndarray  # bool[n_events]
    weight: np.ndarray  # float64[n_events]
    keep_probability: np.ndarray  # float64[n_events]


def decide(
    scores: np.ndarray,
    mode: str,
    rng: np.random.Generator,
    *,
    threshold: float = 0.5,
    p_min: float | None = None,
    calibration: SamplingCalibration | None = None,
) -> KeepDecision:
    """Keep/drop each event. ``rng`` draws one uniform per event (sample mode only)."""
    scores = np.asarray(scores, dtype=np.float64)
    if mode == "off":
        keep_probability = np.ones(len(scores))
        keep = np.ones(len(scores), dtype=bool)
    elif mode == "cut":
        keep = scores > threshold
        keep_probability = keep.astype(np.float64)
    elif mode == "sample":
        if calibration is None:
            raise ValueError("sample mode needs the model's sampling calibration")
        keep_probability = calibration.keep_probability(scores, p_min)
        keep = rng.random(len(scores)) < keep_probability
    else:
        raise ValueError(f"unknown filter mode {mode!r} (allowed: off, cut, sample)")
    weight = np.zeros(len(scores))
    weight[keep] = 1.0 / keep_probability[keep]
    return KeepDecision(keep=keep, weight=weight, keep_probability=keep_probability)
