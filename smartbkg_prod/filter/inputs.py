"""Events -> the named input arrays of an exported filter model, in numpy (no torch).

The ONNX model's contract is a set of named arrays; the model's sidecar records the names
and the model's ``kind``, and :data:`INPUT_BUILDERS` maps each kind to the function that
builds them from a chunk of events. A model with other inputs (event-level features, say)
adds a builder under its own kind; the scorer (:mod:`runtime`) feeds the session by name.

``decay_tree_gcn`` (the SmartBKG GCN) takes the same block-diagonal graph that
:func:`smartbkg_prod.filter.graph.build_graphs` builds in torch for training: nodes are the
event's particles, edges link each particle with its mother (both directions), and the
normalisation ``D^-1/2 (A + I) D^-1/2`` is carried by ``inv_sqrt_degree``.

>>> from smartbkg_prod.physics.events import ParticleBatch
>>> kinematics = {name: np.ones(3) for name in FEATURE_COLUMNS}
>>> tree = ParticleBatch(event_number=np.array([7]), offsets=np.array([0, 3]),
...     pdg=np.array([511, 211, -211], dtype=np.int32), mother=np.array([-1, 0, 0], dtype=np.int32),
...     status=np.zeros(3, dtype=np.int32), **kinematics)
>>> inputs = decay_tree_graph(tree, GraphEncoding.fit(tree))
>>> (1 / inputs.arrays["inv_sqrt_degree"] ** 2).round().tolist()  # degree: the B has 2 daughters + itself
[3.0, 2.0, 2.0]
>>> inputs.arrays["edge_src"].tolist(), inputs.arrays["edge_dst"].tolist()
([1, 2, 0, 0], [0, 0, 1, 2])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smartbkg_prod.filter.encoding import FEATURE_COLUMNS, UNKNOWN_PDG_INDEX, GraphEncoding
from smartbkg_prod.filter.errors import ModelLoadError
from smartbkg_prod.physics.events import ParticleBatch


@dataclass(frozen=True)
class ModelInputs:
    """One chunk's model inputs by ONNX input name, and its out-of-vocabulary particles."""

    arrays: dict[str, np.ndarray]
    n_unknown_pdg: int


# (events of one chunk, the model's encoding) -> its inputs
InputBuilder = Callable[[ParticleBatch, GraphEncoding], ModelInputs]

DECAY_TREE_GCN = "decay_tree_gcn"
DECAY_TREE_GCN_INPUTS = (
    "pdg_index",  # int64[n_particles], embedding row per particle
    "features",  # float32[n_particles, 8], squashed and standardised
    "edge_src",  # int64[n_edges], mother<->daughter, both directions
    "edge_dst",  # int64[n_edges]
    "inv_sqrt_degree",  # float32[n_particles], deg^-1/2 with deg = 1 + neighbours
    "node_graph",  # int64[n_particles], event position of each particle
    "inverse_counts",  # float32[n_events], 1/particles (0 for an empty event)
)


def decay_tree_graph(particles: ParticleBatch, encoding: GraphEncoding) -> ModelInputs:
    """The ``decay_tree_gcn`` inputs of ``particles`` (every step a whole-chunk array op)."""
    offsets = np.asarray(particles.offsets, dtype=np.int64)
    counts = np.diff(offsets)
    n_nodes = len(particles.pdg)
    node_graph = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    event_start = offsets[:-1][node_graph]
    local_index = np.arange(n_nodes, dtype=np.int64) - event_start
    mother = np.asarray(particles.mother, dtype=np.int64)
    # A mother index outside its own event (or the particle itself) is ignored, not trusted.
    has_mother = (mother >= 0) & (mother < counts[node_graph]) & (mother != local_index)
    child = np.flatnonzero(has_mother)
    parent = event_start[child] + mother[child]
    degree = 1.0 + np.bincount(child, minlength=n_nodes) + np.bincount(parent, minlength=n_nodes)

    codes = np.asarray(encoding.pdg_codes, dtype=np.int64)
    pdg = np.asarray(particles.pdg, dtype=np.int64)
    if len(codes):
        position = np.minimum(np.searchsorted(codes, pdg), len(codes) - 1)
        known = codes[position] == pdg
        pdg_index = np.where(known, position + 1, UNKNOWN_PDG_INDEX)
    else:
        known = np.zeros(n_nodes, dtype=bool)
        pdg_index = np.full(n_nodes, UNKNOWN_PDG_INDEX, dtype=np.int64)

    features = np.empty((n_nodes, len(FEATURE_COLUMNS)), dtype=np.float32)
    for column, name in enumerate(FEATURE_COLUMNS):
        features[:, column] = getattr(particles, name)
    features /= np.asarray(encoding.feature_scale, dtype=np.float32)
    # asinh as torch's graph builder computes it (odd symmetry, float32): same rounding.
    magnitude = np.abs(features)
    squashed = np.log(magnitude + np.sqrt(magnitude * magnitude + np.float32(1.0)))
    features = np.copysign(squashed, features, out=squashed)
    features -= np.asarray(encoding.feature_mean, dtype=np.float32)
    features /= np.asarray(encoding.feature_std, dtype=np.float32)

    inverse_counts = np.zeros(len(counts), dtype=np.float32)
    np.divide(1.0, counts, out=inverse_counts, where=counts > 0, casting="unsafe")
    return ModelInputs(
        arrays={
            "pdg_index": pdg_index.astype(np.int64, copy=False),
            "features": features,
            "edge_src": np.concatenate([child, parent]),
            "edge_dst": np.concatenate([parent, child]),
            "inv_sqrt_degree": (1.0 / np.sqrt(degree)).astype(np.float32),
            "node_graph": node_graph,
            "inverse_counts": inverse_counts,
        },
        n_unknown_pdg=int(n_nodes - np.count_nonzero(known)),
    )


# The hybrid filter: the decay-tree graph plus one row of ideal-detector skim features per
# event (smartbkg_prod.filter.skim_features), float32[n_events, width]. The graph builder
# makes the graph; the scorer adds the rows, which it builds once per batch (the skim runs
# on whole batches) and slices per chunk.
DECAY_TREE_GCN_SKIM_FEATURES = "decay_tree_gcn_skim_features"
EVENT_FEATURES = "event_features"

# Model kind (recorded in the sidecar) -> its builder and the input names it produces.
INPUT_BUILDERS: dict[str, tuple[InputBuilder, tuple[str, ...]]] = {
    DECAY_TREE_GCN: (decay_tree_graph, DECAY_TREE_GCN_INPUTS),
    DECAY_TREE_GCN_SKIM_FEATURES: (
        decay_tree_graph,
        (*DECAY_TREE_GCN_INPUTS, EVENT_FEATURES),
    ),
}


def check_unknown_fraction(
    model: Path,
    encoding: GraphEncoding,
    max_unknown_fraction: float,
    n_unknown: int,
    particles: ParticleBatch,
) -> None:
    """ModelLoadError when more than the model's allowed fraction of particles carry PDG
    codes outside its vocabulary (it was trained on another process)."""
    if particles.n_particles == 0 or n_unknown <= max_unknown_fraction * particles.n_particles:
        return
    known = np.asarray(encoding.pdg_codes)
    unknown = np.unique(particles.pdg[~np.isin(particles.pdg, known)])
    raise ModelLoadError(
        f"filter model {model}: {n_unknown / particles.n_particles:.1%} of particles have PDG codes "
        f"outside its vocabulary (e.g. {unknown[:5].tolist()}; the model allows "
        f"{max_unknown_fraction:.1%}): it was trained on another process; "
        "train a model on this process with `smartbkg-prod train SPEC`",
    )
