"""The ideal-detector view, the skim features built on it, and the hybrid network."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from smartbkg_prod.filter.checkpoint import load_model
from smartbkg_prod.filter.data import LabelledEvents
from smartbkg_prod.filter.encoding import GraphEncoding
from smartbkg_prod.filter.errors import ModelLoadError
from smartbkg_prod.filter.graph import EncodingTensors, build_graphs
from smartbkg_prod.filter.infer import cpu_filter_ms, score_events, scoring_model
from smartbkg_prod.filter.model import FilterNet
from smartbkg_prod.filter.runtime import open_scorer
from smartbkg_prod.filter.runtime import score_events as onnx_score_events
from smartbkg_prod.filter.skim_features import (
    DENSE_FEATURES,
    IdealSkim,
    SkimFeatureEncoding,
    take_raw,
)
from smartbkg_prod.filter.train import (
    TrainOptions,
    _with_event_features,
    save_trained,
    train_filter,
)
from smartbkg_prod.physics.config import SimulationConfig, SkimConfig
from smartbkg_prod.physics.detector import simulate
from smartbkg_prod.physics.generate import generate_events
from smartbkg_prod.physics.ideal import ideal_view
from smartbkg_prod.physics.skim import skim
from smartbkg_prod.spec import Campaign
from smartbkg_prod.stages import StageJob
from smartbkg_prod.stages.chain import build_chain
from smartbkg_prod.worker import _ideal_skim

BENCH_EVENTS = Path(__file__).parent.parent / "benchmarks" / "data" / "filter_events.npz"


@pytest.fixture(scope="module")
def generic():
    return generate_events("bbbar_generic", 3000, seed=11)


def test_ideal_view_has_true_momenta_and_identities_of_accepted_particles(generic):
    config = SimulationConfig()
    view = ideal_view(generic, config)
    row = generic.offsets[:-1][view.event_index()] + view.mc_index
    track = view.charge != 0
    assert np.array_equal(view.px, generic.px[row]) and np.array_equal(view.pz, generic.pz[row])
    assert np.array_equal(view.pdg_hypothesis[track], generic.pdg[row][track])
    assert np.array_equal(view.energy[~track], generic.energy[row][~track])
    theta = np.degrees(np.arctan2(np.hypot(view.px, view.py), view.pz))
    assert ((theta > config.theta_min_deg) & (theta < config.theta_max_deg)).all()
    # No efficiency loss: every stable charged pion of the acceptance and momentum range is there.
    pt = np.hypot(generic.px, generic.py)
    theta_mc = np.degrees(np.arctan2(pt, generic.pz))
    pions = (
        (generic.status > 0)
        & (np.abs(generic.pdg) == 211)
        & (theta_mc > config.theta_min_deg)
        & (theta_mc < config.theta_max_deg)
        & (pt > config.track_pt_min)
        & (np.hypot(generic.x, generic.y) < 1100.0)
    )
    assert np.sum(np.abs(view.pdg_hypothesis) == 211) == pions.sum()
    # Deterministic: a function of the generated events alone.
    assert np.array_equal(ideal_view(generic, config).px, view.px)


def test_most_skim_passes_on_the_detector_also_pass_on_the_ideal_view(generic):
    real = skim(simulate(generic, SimulationConfig(), seed=3), SkimConfig())
    ideal = skim(ideal_view(generic, SimulationConfig()), SkimConfig())
    assert real.passed.sum() > 30
    # Measured on 60k events: 83 %; detector-made combinations are the rest.
    assert ideal.passed[real.passed].mean() > 0.65
    assert real.passed[~ideal.passed].mean() < 0.02


def test_features_are_the_ideal_skims_outputs_event_by_event(generic):
    raw = IdealSkim.builtin(SimulationConfig(), SkimConfig()).raw(generic)
    ideal = skim(ideal_view(generic, SimulationConfig()), SkimConfig())
    column = {name: raw.values[:, k] for k, name in enumerate(DENSE_FEATURES)}
    assert np.array_equal(column["ideal_pass"] > 0, ideal.passed)
    passed = ideal.passed
    assert np.allclose(column["best_mbc"][passed], ideal.best_mbc[passed])
    assert np.array_equal(raw.best_mode[passed], ideal.best_mode[passed])
    assert (raw.best_mode[~passed] == -1).all() and (column["best_mbc"][~passed] == 5.0).all()
    # No event's features depend on the other events of its batch.
    first, second = generic.select(np.arange(3000) < 1234), generic.select(np.arange(3000) >= 1234)
    parts = [
        IdealSkim.builtin(SimulationConfig(), SkimConfig()).raw(part) for part in (first, second)
    ]
    assert np.array_equal(np.concatenate([part.values for part in parts]), raw.values)


def test_encoding_standardises_and_one_hot_encodes_the_mode(generic):
    raw = IdealSkim.builtin(SimulationConfig(), SkimConfig()).raw(generic)
    encoding = SkimFeatureEncoding.fit(raw, min_mode_count=3)
    encoded = encoding.encode(raw)
    dense = len(DENSE_FEATURES)
    assert encoded.shape == (generic.n_events, encoding.width) and encoded.dtype == np.float32
    assert np.allclose(encoded[:, :dense].mean(axis=0), 0.0, atol=1e-4)
    one_hot = encoded[:, dense:]
    assert np.array_equal(one_hot.sum(axis=1), (raw.best_mode >= 0).astype(np.float32))
    assert SkimFeatureEncoding.from_dict(encoding.to_dict()) == encoding
    # A mode never seen in training lands in the last ("other") column.
    unseen = take_raw(raw, raw.best_mode >= 0)
    unseen = type(unseen)(unseen.values, np.full(len(unseen.best_mode), 10_000), 0.0)
    assert (encoding.encode(unseen)[:, -1] == 1.0).all()


def test_hybrid_started_from_a_graph_model_scores_like_it(generic):
    encoding = GraphEncoding.fit(generic)
    graph_net = FilterNet(encoding.n_pdg, hidden=16).eval()
    hybrid = _with_event_features(graph_net, 7).eval()
    graph = build_graphs(generic.select(np.arange(3000) < 200), encoding)
    features = torch.randn(200, 7)
    with torch.no_grad():
        assert torch.allclose(graph_net(graph), hybrid(graph, features), atol=1e-6)
        with pytest.raises(ValueError, match="per-event features"):
            hybrid(graph)


def test_a_hybrid_model_trains_exports_and_scores_the_same_in_torch_and_onnx(tmp_path):
    events = LabelledEvents.load(BENCH_EVENTS).subset(np.arange(3000) < 1500)
    builder = IdealSkim.builtin(SimulationConfig(), SkimConfig()).raw
    options = TrainOptions(hidden=8, embedding_dim=4, max_epochs=1, threads=1)
    result = train_filter(events, options, builder(events.particles), builder)
    out = tmp_path / "hybrid.pt"
    save_trained(result, out, events, options, "test")
    model = load_model(out)
    assert SkimFeatureEncoding.from_dict(model.metadata["skim_features"]) == result.feature_encoding
    assert model.net.shape.n_event_features == result.feature_encoding.width
    # t_NN counts the features: more than the graph network alone on the same events.
    graph_only_ms = cpu_filter_ms(
        _graph_part(model.net), EncodingTensors(model.encoding), events.particles
    )
    assert result.metrics["filter_ms_cpu_1core"] > graph_only_ms
    # The worker's ONNX Runtime scorer builds the same features in numpy: same scores.
    scorer = open_scorer(out, "cpu")
    assert scorer.card.kind == "decay_tree_gcn_skim_features"
    onnx_scores = onnx_score_events(scorer, events.particles)
    torch_scores = score_events(scoring_model(out, "cpu"), events.particles)
    assert np.max(np.abs(onnx_scores - torch_scores)) < 1e-5


def _graph_part(net: FilterNet) -> FilterNet:
    """The same network without the feature inputs (for timing the graph alone)."""
    graph = FilterNet.from_shape(replace(net.shape, n_event_features=0))
    state = net.state_dict()
    state["head_layers.0.weight"] = state["head_layers.0.weight"][:, : net.shape.hidden]
    graph.load_state_dict(state)
    return graph.eval()


STAGE_SKIM = "smartbkg-prod stage skim --input {input} --output {output} --config {config}"


def test_the_worker_runs_its_campaigns_skim_stage_on_the_ideal_view(tmp_path, generic):
    # An external skim command reads the ideal view as its reco tree and gives the same
    # features as the built-in skim in-process; skim: in_simulation has none to run.
    particles = generic.select(np.arange(3000) < 400)
    job = StageJob(
        campaign="ideal",
        job_index=0,
        attempt=1,
        first_event=0,
        n_events=400,
        seed=11,
        workdir=tmp_path / "work",
    )

    def campaign(stages: dict) -> Campaign:
        return Campaign(
            name="ideal",
            process="bbbar_generic",
            events=400,
            events_per_job=400,
            filter={"mode": "sample", "model": "default"},
            stages=stages,
        )

    external = campaign({"skim": {"name": "external", "command": STAGE_SKIM}})
    raw = _ideal_skim(external, build_chain(external).skim, job).raw(particles)
    builtin = IdealSkim.builtin(SimulationConfig(), SkimConfig()).raw(particles)
    assert raw.values[:, 0].sum() > 0
    assert np.array_equal(raw.values, builtin.values)
    assert np.array_equal(raw.best_mode, builtin.best_mode)
    chain_skims = campaign(
        {
            "simulation": {"name": "external", "command": "true"},
            "skim": {"name": "in_simulation"},
        }
    )
    with pytest.raises(ModelLoadError, match="in_simulation"):
        _ideal_skim(chain_skims, build_chain(chain_skims).skim, job).raw(particles)
