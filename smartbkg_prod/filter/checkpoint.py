"""The torch side of the model artifact (training, evaluation of the torch net): write the
``.pt`` weights, export the ``.onnx`` the worker runs, and load the ``.pt`` back.

The ``.pt`` file is ``torch.save`` of a plain dict of tensors, numbers, strings and lists,
so it loads with ``weights_only=True`` (no pickled code runs). The ONNX export is
``torch.onnx.export(dynamo=True)`` at opset 18 (the legacy exporter gave wrong scores), and
is checked against torch on a small batch before it is written. See :mod:`artifact` for
the sidecar and what the worker checks.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
import warnings
from dataclasses import dataclass
from importlib import metadata as package_metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from smartbkg_prod import __version__
from smartbkg_prod.files import sha256_file
from smartbkg_prod.filter.artifact import (
    ARTIFACT_FORMAT,
    DEFAULT_MAX_UNKNOWN_FRACTION,
    FORMAT_VERSION,
    ONNX_OPSET,
    RETRAIN,
    UNKNOWN_PDG_POLICY,
    atomic_write,
    check_header,
    check_sha256,
    model_error,
    open_model,
    read_sidecar,
    sidecar_path,
    write_sidecar,
)
from smartbkg_prod.filter.encoding import FEATURE_COLUMNS, GraphEncoding
from smartbkg_prod.filter.errors import ModelLoadError
from smartbkg_prod.filter.inputs import (
    DECAY_TREE_GCN,
    DECAY_TREE_GCN_INPUTS,
    DECAY_TREE_GCN_SKIM_FEATURES,
    EVENT_FEATURES,
    decay_tree_graph,
)
from smartbkg_prod.filter.model import FilterNet, GraphScorer, NetShape
from smartbkg_prod.filter.sampling import SamplingCalibration
from smartbkg_prod.physics.events import ParticleBatch

# Largest |torch - ONNX Runtime| score on the export check batch (float32 rounding is ~1e-7).
EXPORT_TOLERANCE = 1e-5


@dataclass
class FilterModel:
    """A loaded torch model: network (on CPU) and its metadata."""

    net: FilterNet
    encoding: GraphEncoding
    calibration: SamplingCalibration
    threshold: float
    max_unknown_fraction: float
    metadata: dict[str, Any]
    sha256: str
    path: Path


def package_versions() -> dict[str, str]:
    versions = {"smartbkg_prod": __version__, "torch": str(torch.__version__)}
    for package in ("numpy", "onnx", "onnxscript", "onnxruntime"):
        with contextlib.suppress(package_metadata.PackageNotFoundError):
            versions[package] = package_metadata.version(package)
    return versions


def save_model(
    path: str | Path,
    net: FilterNet,
    encoding: GraphEncoding,
    calibration: SamplingCalibration,
    threshold: float,
    metadata: dict[str, Any],
    max_unknown_fraction: float = DEFAULT_MAX_UNKNOWN_FRACTION,
) -> str:
    """Write ``path`` (.pt), its ONNX export (.onnx) and the sidecar (.json) atomically;
    return the ``.pt`` file's sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header: dict[str, Any] = {
        "format": ARTIFACT_FORMAT,
        "format_version": FORMAT_VERSION,
        "net_shape": net.shape.to_dict(),
        "encoding": encoding.to_dict(),
        "unknown_pdg": {"policy": UNKNOWN_PDG_POLICY, "max_fraction": max_unknown_fraction},
        "sampling": calibration.to_dict(),
        "threshold": float(threshold),
        "versions": package_versions(),
        **metadata,
    }
    # Plain JSON types only (numpy scalars are not allowed by weights_only loading).
    header = json.loads(json.dumps(header, default=float))
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in net.state_dict().items()}
    atomic_write(path, lambda handle: torch.save({**header, "state_dict": state}, handle))
    sha256 = sha256_file(path)
    export = export_onnx(net, encoding, path.with_suffix(".onnx"))
    write_sidecar(path, {**header, "model_file": path.name, "sha256": sha256, "onnx": export})
    return sha256


def export_onnx(net: FilterNet, encoding: GraphEncoding, onnx_path: Path) -> dict[str, Any]:
    """Export ``net`` to ``onnx_path``, checked against torch; the sidecar's ``onnx`` entry."""
    import onnxruntime

    net = net.cpu().eval()
    events = _example_events(encoding)
    example = decay_tree_graph(events, encoding).arrays
    n_particles, n_events = torch.export.Dim("n_particles"), torch.export.Dim("n_events")
    axes = {
        "pdg_index": {0: n_particles},
        "features": {0: n_particles},
        "edge_src": {0: torch.export.Dim("n_edges")},
        "edge_dst": {0: torch.export.Dim("n_edges")},
        "inv_sqrt_degree": {0: n_particles},
        "node_graph": {0: n_particles},
        "inverse_counts": {0: n_events},
    }
    kind, input_names = DECAY_TREE_GCN, DECAY_TREE_GCN_INPUTS
    if net.shape.n_event_features:
        # The hybrid: one row of skim features per event (values only matter for the check).
        kind, input_names = DECAY_TREE_GCN_SKIM_FEATURES, (*DECAY_TREE_GCN_INPUTS, EVENT_FEATURES)
        rng = np.random.default_rng(1)
        example[EVENT_FEATURES] = rng.normal(
            size=(events.n_events, net.shape.n_event_features)
        ).astype(np.float32)
        axes[EVENT_FEATURES] = {0: n_events}
    args = tuple(torch.from_numpy(example[name]) for name in input_names)
    scorer = GraphScorer(net).eval()
    with tempfile.TemporaryDirectory() as scratch:
        scratch_file = Path(scratch) / onnx_path.name
        # The exporter reports its steps on stdout (keep `train --json` parseable) and warns
        # about axis names it merges (n_particles is shared on purpose).
        # (and logs that torchvision, which it never needs here, is missing).
        logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", FutureWarning)
            torch.onnx.export(
                scorer,
                args,
                str(scratch_file),
                input_names=list(input_names),
                output_names=["score"],
                dynamic_shapes=axes,
                opset_version=ONNX_OPSET,
                dynamo=True,
                external_data=False,
            )
        blob = scratch_file.read_bytes()
    session = onnxruntime.InferenceSession(blob, providers=["CPUExecutionProvider"])
    (exported,) = session.run(["score"], example)
    with torch.inference_mode():
        expected = scorer(*args).numpy()
    difference = float(np.max(np.abs(exported - expected)))
    if not difference <= EXPORT_TOLERANCE:
        raise ModelLoadError(
            f"ONNX export of the filter model disagrees with torch by {difference:.2e} "
            f"(allowed {EXPORT_TOLERANCE:.0e}); check the torch and onnxscript versions "
            "(known good: torch 2.13, onnxscript 0.7, onnxruntime 1.31-1.32)"
        )
    atomic_write(onnx_path, lambda handle: handle.write(blob))
    return {
        "file": onnx_path.name,
        "sha256": sha256_file(onnx_path),
        "kind": kind,
        "inputs": list(input_names),
        "output": "score",
        "opset": ONNX_OPSET,
        "export_check_max_abs_difference": difference,
    }


def _example_events(encoding: GraphEncoding) -> ParticleBatch:
    """Three decay chains of 5, 7 and 9 particles (distinct sizes: no axis is fixed)."""
    counts = np.array([5, 7, 9])
    offsets = np.concatenate([[0], np.cumsum(counts)])
    local = np.concatenate([np.arange(count) for count in counts])
    rng = np.random.default_rng(0)
    codes = np.asarray(encoding.pdg_codes or (211,), dtype=np.int32)
    n = int(offsets[-1])
    return ParticleBatch(
        event_number=np.arange(len(counts), dtype=np.int64),
        offsets=offsets,
        pdg=codes[rng.integers(0, len(codes), n)],
        mother=(local - 1).astype(np.int32),
        status=np.zeros(n, dtype=np.int32),
        **{name: rng.normal(size=n) for name in FEATURE_COLUMNS},
    )


def export_artifact(model: str | Path) -> str:
    """Add the ONNX export to an existing ``.pt`` artifact (made before the worker ran
    ONNX Runtime); return the ``.onnx`` file's sha256."""
    loaded = load_model(model)
    recorded = read_sidecar(loaded.path)
    export = export_onnx(loaded.net, loaded.encoding, loaded.path.with_suffix(".onnx"))
    write_sidecar(loaded.path, {**recorded, "onnx": export})
    return export["sha256"]


def load_model(model: str | Path | None) -> FilterModel:
    """Read and check the ``.pt`` artifact (see :mod:`artifact` for what is checked)."""
    path, recorded = open_model(model)
    sha256 = check_sha256(path, path, recorded.get("sha256"), sidecar_path(path).name)
    try:
        artifact = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for bad pickles and zip files
        raise model_error(
            path, f"not a readable torch file ({type(error).__name__}: {error})", RETRAIN
        ) from None
    check_header(path, artifact)
    try:
        encoding = GraphEncoding.from_dict(artifact["encoding"])
        shape = NetShape(**artifact["net_shape"])
        if shape.n_pdg != encoding.n_pdg:
            raise ValueError(f"embedding has {shape.n_pdg} rows, vocabulary needs {encoding.n_pdg}")
        net = FilterNet.from_shape(shape)
        net.load_state_dict(artifact["state_dict"])
        calibration = SamplingCalibration.from_dict(artifact["sampling"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise model_error(path, f"weights and metadata do not fit ({error})", RETRAIN) from None
    net.eval()
    return FilterModel(
        net=net,
        encoding=encoding,
        calibration=calibration,
        threshold=float(artifact["threshold"]),
        max_unknown_fraction=float(
            artifact["unknown_pdg"].get("max_fraction", DEFAULT_MAX_UNKNOWN_FRACTION)
        ),
        metadata={key: value for key, value in artifact.items() if key != "state_dict"},
        sha256=sha256,
        path=path.resolve(),
    )
