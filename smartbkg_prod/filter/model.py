"""The SmartBKG graph convolutional network: node MLP -> GCN layers -> masked mean pool -> head.

With ``n_event_features`` > 0 (the hybrid filter) a per-event feature row, the campaign's
skim run on the ideal-detector view (:mod:`smartbkg_prod.filter.skim_features`), is joined
to the pooled graph vector before the head: the skim's combinations across the two B
subtrees are 4+ hops apart in the decay tree, beyond what 3 mean-pooled GCN layers form.

Reference shape (Kahn et al.): PDG embedding + 8 features -> 3 dense(128) -> 3 GCN(128) ->
mean pool -> 3 dense -> sigmoid. ``hidden`` is a parameter because the per-node layers
dominate the cost (~5 hidden x hidden matrix products per particle): the shipped model's
width is chosen to meet the CPU throughput target and is recorded in its metadata.

>>> net = FilterNet(n_pdg=10, hidden=16)
>>> sum(p.numel() for p in net.parameters()) > 0
True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from smartbkg_prod.filter.graph import FEATURE_COLUMNS, GraphBatch


@dataclass(frozen=True)
class NetShape:
    """Hyperparameters that fix the network's tensors (stored in the model artifact)."""

    n_pdg: int
    embedding_dim: int = 8
    hidden: int = 128
    n_node_layers: int = 3
    n_gcn_layers: int = 3
    n_head_layers: int = 3
    # Width of the per-event feature row joined to the pooled graph vector before the head
    # (the ideal-detector skim features, :mod:`skim_features`); 0: the graph alone.
    n_event_features: int = 0

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class FilterNet(nn.Module):
    """Logit of "this event passes the skim" per event of a :class:`GraphBatch`."""

    def __init__(
        self,
        n_pdg: int,
        embedding_dim: int = 8,
        hidden: int = 128,
        n_node_layers: int = 3,
        n_gcn_layers: int = 3,
        n_head_layers: int = 3,
        n_event_features: int = 0,
    ):
        super().__init__()
        self.shape = NetShape(
            n_pdg,
            embedding_dim,
            hidden,
            n_node_layers,
            n_gcn_layers,
            n_head_layers,
            n_event_features,
        )
        self.embedding = nn.Embedding(n_pdg, embedding_dim)
        n_inputs = embedding_dim + len(FEATURE_COLUMNS)
        self.node_layers = nn.ModuleList(
            [nn.Linear(n_inputs if i == 0 else hidden, hidden) for i in range(n_node_layers)]
        )
        self.gcn_layers = nn.ModuleList([nn.Linear(hidden, hidden) for _ in range(n_gcn_layers)])
        self.head_layers = nn.ModuleList(
            [
                nn.Linear(
                    hidden + n_event_features if i == 0 else hidden,
                    1 if i == n_head_layers - 1 else hidden,
                )
                for i in range(n_head_layers)
            ]
        )

    @classmethod
    def from_shape(cls, shape: NetShape) -> FilterNet:
        return cls(**shape.to_dict())

    def _first_layer(self, graph: GraphBatch) -> torch.Tensor:
        # Linear(concat(embedding, features)) = table[pdg] + Linear(features): the embedding's
        # share is computed once per vocabulary entry, not once per particle.
        first = self.node_layers[0]
        embedding_dim = self.shape.embedding_dim
        table = self.embedding.weight @ first.weight[:, :embedding_dim].T
        kinematic = F.linear(
            graph.features.to(table.dtype), first.weight[:, embedding_dim:], first.bias
        )
        return kinematic.add_(table.index_select(0, graph.pdg_index))

    def forward(
        self, graph: GraphBatch, event_features: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits; ``event_features`` (float32 [n_graphs, n_event_features]) is required
        when the shape has event features and joins the pooled vector before the head."""
        # In-place activations: the per-node steps are memory-bound on CPU.
        h = self._first_layer(graph).relu_()
        for layer in self.node_layers[1:]:
            h = layer(h).relu_()
        for layer in self.gcn_layers:
            # GCN: A_hat (H W) + b; multiplying by W first keeps the sparse product narrow.
            h = graph.propagate(F.linear(h, layer.weight)).add_(layer.bias).relu_()
        h = graph.mean_pool(h)
        if self.shape.n_event_features:
            if event_features is None:
                raise ValueError("this network needs the per-event features")
            h = torch.cat([h, event_features.to(h.dtype)], dim=1)
        for layer in self.head_layers[:-1]:
            h = F.relu(layer(h))
        return self.head_layers[-1](h).squeeze(1)


class GraphScorer(nn.Module):
    """The network as exported to ONNX: the named ``decay_tree_gcn`` arrays of
    :mod:`smartbkg_prod.filter.inputs` in (and ``event_features`` for the hybrid kind,
    ``decay_tree_gcn_skim_features``), the pass-probability score of each event out."""

    def __init__(self, net: FilterNet):
        super().__init__()
        self.net = net

    def forward(
        self,
        pdg_index: torch.Tensor,
        features: torch.Tensor,
        edge_src: torch.Tensor,
        edge_dst: torch.Tensor,
        inv_sqrt_degree: torch.Tensor,
        node_graph: torch.Tensor,
        inverse_counts: torch.Tensor,
        event_features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        graph = GraphBatch(
            pdg_index=pdg_index,
            features=features,
            edge_src=edge_src,
            edge_dst=edge_dst,
            inv_sqrt_degree=inv_sqrt_degree,
            node_graph=node_graph,
            inverse_counts=inverse_counts,
            n_unknown_pdg=pdg_index.new_zeros(()),
        )
        return torch.sigmoid(self.net(graph, event_features))
