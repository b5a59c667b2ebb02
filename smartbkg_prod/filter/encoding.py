"""What turns an event's particles into node inputs: the PDG vocabulary and feature scaling.

Fitted on training data and stored in the model's metadata; both the torch graph builder
(:mod:`graph`, training) and the numpy one (:mod:`inputs`, the worker) read it.

>>> GraphEncoding(pdg_codes=(211, 321), feature_scale=(1.0,) * 8,
...     feature_mean=(0.0,) * 8, feature_std=(1.0,) * 8).n_pdg
3
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from smartbkg_prod.physics.events import ParticleBatch

FEATURE_COLUMNS: tuple[str, ...] = ("px", "py", "pz", "energy", "x", "y", "z", "t")
UNKNOWN_PDG_INDEX = 0  # embedding row shared by every PDG code missing from the vocabulary


@dataclass(frozen=True)
class GraphEncoding:
    """What turns particles into node inputs; fitted on training data, stored in the model.

    ``pdg_codes`` is the sorted vocabulary: code ``pdg_codes[k]`` maps to embedding row
    ``k + 1``; anything else maps to :data:`UNKNOWN_PDG_INDEX`.
    """

    pdg_codes: tuple[int, ...]
    feature_scale: tuple[float, ...]
    feature_mean: tuple[float, ...]
    feature_std: tuple[float, ...]

    @property
    def n_pdg(self) -> int:
        """Embedding rows, the unknown-PDG row included."""
        return len(self.pdg_codes) + 1

    @classmethod
    def fit(cls, particles: ParticleBatch, min_pdg_count: int = 1) -> GraphEncoding:
        """Vocabulary of PDG codes seen at least ``min_pdg_count`` times; feature scaling."""
        codes, counts = np.unique(particles.pdg, return_counts=True)
        raw = raw_features(particles)
        if len(raw) == 0:
            raise ValueError("cannot fit a graph encoding on a batch without particles")
        # Median |v| sets where asinh turns from linear to logarithmic, per column.
        scale = np.maximum(np.median(np.abs(raw), axis=0), 1e-6)
        squashed = np.arcsinh(raw / scale)
        return cls(
            pdg_codes=tuple(int(c) for c in codes[counts >= min_pdg_count]),
            feature_scale=tuple(float(v) for v in scale),
            feature_mean=tuple(float(v) for v in squashed.mean(axis=0)),
            feature_std=tuple(float(v) for v in np.maximum(squashed.std(axis=0), 1e-6)),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "pdg_codes": list(self.pdg_codes),
            "feature_columns": list(FEATURE_COLUMNS),
            "feature_scale": list(self.feature_scale),
            "feature_mean": list(self.feature_mean),
            "feature_std": list(self.feature_std),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GraphEncoding:
        if tuple(data["feature_columns"]) != FEATURE_COLUMNS:
            raise ValueError(
                f"model expects feature columns {data['feature_columns']}, this version builds {list(FEATURE_COLUMNS)}"
            )
        return cls(
            pdg_codes=tuple(int(c) for c in data["pdg_codes"]),
            feature_scale=tuple(float(v) for v in data["feature_scale"]),
            feature_mean=tuple(float(v) for v in data["feature_mean"]),
            feature_std=tuple(float(v) for v in data["feature_std"]),
        )


def raw_features(particles: ParticleBatch) -> np.ndarray:
    """float64[n_particles, 8]: the columns of :data:`FEATURE_COLUMNS`."""
    return np.stack([getattr(particles, name) for name in FEATURE_COLUMNS], axis=1)
