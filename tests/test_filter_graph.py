"""Graph construction checked against hand-built decay trees; the worker's numpy builder
(filter.inputs) against the training's torch one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smartbkg_prod.filter.encoding import FEATURE_COLUMNS, UNKNOWN_PDG_INDEX, GraphEncoding
from smartbkg_prod.filter.graph import (
    EncodingTensors,
    ParticleTensors,
    build_graphs,
    build_graphs_from_tensors,
    take_events,
)
from smartbkg_prod.filter.inputs import DECAY_TREE_GCN_INPUTS, decay_tree_graph
from smartbkg_prod.filter.model import FilterNet
from smartbkg_prod.physics.events import ParticleBatch, offsets_from_counts


def make_batch(pdg_per_event: list[list[int]], mother_per_event: list[list[int]]) -> ParticleBatch:
    counts = np.array([len(p) for p in pdg_per_event])
    n = int(counts.sum())
    rng = np.random.default_rng(0)
    return ParticleBatch(
        event_number=np.arange(len(counts), dtype=np.int64) + 100,
        offsets=offsets_from_counts(counts),
        pdg=np.array([c for p in pdg_per_event for c in p], dtype=np.int32),
        mother=np.array([m for ms in mother_per_event for m in ms], dtype=np.int32),
        status=np.ones(n, dtype=np.int32),
        **{name: rng.normal(size=n) for name in FEATURE_COLUMNS},
    )


@pytest.fixture
def trees() -> ParticleBatch:
    # Event 0: Y(4S) -> B+ B-; B+ -> anti-D0 pi+; anti-D0 -> K+ pi-.  Event 1: one photon.
    # Event 2: empty.  Event 3: a pi0 -> gamma gamma.
    return make_batch(
        [[300553, 521, -521, -421, 211, 321, -211], [22], [], [111, 22, 22]],
        [[-1, 0, 0, 1, 1, 3, 3], [-1], [], [-1, 0, 0]],
    )


def expected_block(mother: list[int]) -> np.ndarray:
    """D^-1/2 (A + I) D^-1/2 of one tree, written out by hand."""
    n = len(mother)
    a = np.eye(n)
    for child, parent in enumerate(mother):
        if parent >= 0:
            a[child, parent] = a[parent, child] = 1.0
    d = 1.0 / np.sqrt(a.sum(axis=1))
    return d[:, None] * a * d[None, :]


def test_adjacency_is_block_diagonal_normalised_with_self_loops(trees):
    graph = build_graphs(trees, GraphEncoding.fit(trees))
    adjacency = graph.dense_adjacency().numpy()
    expected = np.zeros((11, 11))
    expected[0:7, 0:7] = expected_block([-1, 0, 0, 1, 1, 3, 3])
    expected[7:8, 7:8] = expected_block([-1])
    expected[8:11, 8:11] = expected_block([-1, 0, 0])
    np.testing.assert_allclose(adjacency, expected, rtol=1e-6)
    assert np.allclose(adjacency, adjacency.T)
    assert (np.diag(adjacency) > 0).all()


def test_y4s_node_degree_counts_two_daughters_and_itself(trees):
    graph = build_graphs(trees, GraphEncoding.fit(trees))
    assert graph.dense_adjacency()[0, 0].item() == pytest.approx(1 / 3)
    assert graph.dense_adjacency()[1, 0].item() == pytest.approx(1 / np.sqrt(3 * 4))


def test_nodes_know_their_event_and_empty_events_pool_to_zero(trees):
    graph = build_graphs(trees, GraphEncoding.fit(trees))
    assert graph.node_graph.tolist() == [0] * 7 + [1] + [3] * 3
    assert graph.n_graphs == 4
    pooled = graph.mean_pool(torch.ones(graph.n_nodes, 2))
    assert pooled[:, 0].tolist() == [1.0, 1.0, 0.0, 1.0]


def test_propagate_equals_dense_matrix_product(trees):
    graph = build_graphs(trees, GraphEncoding.fit(trees))
    h = torch.randn(graph.n_nodes, 5)
    torch.testing.assert_close(
        graph.propagate(h), graph.dense_adjacency() @ h, rtol=1e-5, atol=1e-6
    )


def test_pdg_codes_outside_the_vocabulary_use_the_unknown_row(trees):
    encoding = GraphEncoding.fit(trees, min_pdg_count=2)  # only the photon (3 times) is kept
    graph = build_graphs(trees, encoding)
    is_photon = trees.pdg == 22
    assert (graph.pdg_index[torch.from_numpy(~is_photon)] == UNKNOWN_PDG_INDEX).all()
    assert (graph.pdg_index[torch.from_numpy(is_photon)] != UNKNOWN_PDG_INDEX).all()
    assert int(graph.n_unknown_pdg) == int((~is_photon).sum())


def test_mother_index_outside_its_event_is_ignored():
    batch = make_batch([[511, 211], [22]], [[-1, 5], [0]])  # 5: beyond event; 0: itself
    graph = build_graphs(batch, GraphEncoding.fit(batch))
    assert len(graph.edge_src) == 0
    assert graph.dense_adjacency().numpy().tolist() == np.eye(3).tolist()


def test_features_are_standardised_on_the_fitting_batch(trees):
    graph = build_graphs(trees, GraphEncoding.fit(trees))
    assert graph.features.shape == (11, len(FEATURE_COLUMNS))
    np.testing.assert_allclose(graph.features.mean(0).numpy(), 0.0, atol=1e-5)


def test_take_events_matches_selecting_the_batch(trees):
    encoding = EncodingTensors(GraphEncoding.fit(trees))
    taken = take_events(ParticleTensors.from_batch(trees), torch.tensor([3, 0]))
    reordered = ParticleBatch.concatenate(
        [trees.select(np.arange(4) == 3), trees.select(np.arange(4) == 0)]
    )
    expected = ParticleTensors.from_batch(reordered)
    assert torch.equal(taken.offsets, expected.offsets)
    assert torch.equal(taken.pdg, expected.pdg) and torch.equal(taken.mother, expected.mother)
    graph = build_graphs_from_tensors(taken, encoding)
    assert graph.node_graph.tolist() == [0, 0, 0] + [1] * 7


def test_event_scores_do_not_depend_on_the_rest_of_the_batch(trees):
    encoding = GraphEncoding.fit(trees)
    net = FilterNet(encoding.n_pdg, hidden=16).eval()
    with torch.no_grad():
        together = net(build_graphs(trees, encoding))
        alone = torch.cat(
            [net(build_graphs(trees.select(np.arange(4) == i), encoding)) for i in range(4)]
        )
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


def test_numpy_inputs_equal_the_torch_graph_field_by_field(trees):
    foreign = make_batch([[511, 9000221, 211], [22, 22]], [[-1, 0, 7], [-1, 0]])
    batch = ParticleBatch.concatenate([trees, foreign])  # unknown PDG, bad mother index
    encoding = GraphEncoding.fit(trees)
    graph = build_graphs(batch, encoding)
    inputs = decay_tree_graph(batch, encoding)
    assert list(inputs.arrays) == list(DECAY_TREE_GCN_INPUTS)
    for name, array in inputs.arrays.items():
        expected = getattr(graph, name).numpy()
        assert array.dtype == expected.dtype and array.shape == expected.shape, name
        np.testing.assert_allclose(array, expected, rtol=1e-6, atol=1e-7, err_msg=name)
    assert inputs.n_unknown_pdg == int(graph.n_unknown_pdg) == 2
