"""The model artifact: one ``.pt`` file (weights + metadata) and a ``.json`` sidecar.

The ``.pt`` file is ``torch.save`` of a plain dict of tensors, numbers, strings and lists,
so it loads with ``weights_only=True`` (no pickled code runs). The sidecar repeats the
metadata in readable form and records the ``.pt`` file's sha256; the worker refuses a model
whose bytes do not match it. Every problem is a
``ModelLoadError`` naming the file and the fix.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from smartbkg_prod import __version__
from smartbkg_prod.files import sha256_file
from smartbkg_prod.filter.errors import ModelLoadError
from smartbkg_prod.filter.graph import GraphEncoding
from smartbkg_prod.filter.model import FilterNet, NetShape
from smartbkg_prod.filter.sampling import SamplingCalibration

ARTIFACT_FORMAT = "smartbkg-prod/filter-model"
FORMAT_VERSION = 1
# The one policy this worker implements for PDG codes missing from the vocabulary: embed
# them with the shared "unknown" row, and refuse events where they are more than
# ``max_fraction`` of the particles (the model was then trained on another process).
UNKNOWN_PDG_POLICY = "embed_as_unknown"
DEFAULT_MAX_UNKNOWN_FRACTION = 0.01
SHIPPED_MODEL = Path(__file__).resolve().parent.parent / "models" / "default.pt"


@dataclass
class FilterModel:
    """A loaded model: network (on CPU until :mod:`infer` moves it) and its metadata."""

    net: FilterNet
    encoding: GraphEncoding
    calibration: SamplingCalibration
    threshold: float
    max_unknown_fraction: float
    metadata: dict[str, Any]
    sha256: str
    path: Path


def sidecar_path(model_path: str | Path) -> Path:
    return Path(model_path).with_suffix(".json")


def resolve_model_path(model: str | Path | None) -> Path:
    """``default`` (or nothing) means the model shipped inside the package."""
    if model is None or str(model) == "default":
        return SHIPPED_MODEL
    return Path(model).expanduser()


def package_versions() -> dict[str, str]:
    return {"smartbkg_prod": __version__, "torch": str(torch.__version__), "numpy": np.__version__}


def save_model(
    path: str | Path,
    net: FilterNet,
    encoding: GraphEncoding,
    calibration: SamplingCalibration,
    threshold: float,
    metadata: dict[str, Any],
    max_unknown_fraction: float = DEFAULT_MAX_UNKNOWN_FRACTION,
) -> str:
    """Write ``path`` (.pt) and its sidecar (.json) atomically; return the sha256."""
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
    _atomic_write(path, lambda handle: torch.save({**header, "state_dict": state}, handle))
    sha256 = sha256_file(path)
    sidecar = {**header, "model_file": path.name, "sha256": sha256}
    _atomic_write(
        sidecar_path(path),
        lambda handle: handle.write(json.dumps(sidecar, indent=2, sort_keys=True).encode() + b"\n"),
    )
    return sha256


def _atomic_write(path: Path, write: Any) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
        os.chmod(temporary, 0o644)  # mkstemp makes 0600; models are shared read-only files
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _model_error(path: Path, problem: str, fix: str) -> ModelLoadError:
    return ModelLoadError(f"filter model {path}: {problem}; {fix}")


def load_model(model: str | Path | None) -> FilterModel:
    """Read and check a model artifact (see module docstring for what is checked)."""
    path = resolve_model_path(model)
    retrain = "retrain with `smartbkg-prod train SPEC` or set filter.model to a model made by it"
    if not path.is_file():
        raise _model_error(
            path, "no such file", f"check filter.model (the shipped model is 'default'); {retrain}"
        )
    sidecar = sidecar_path(path)
    try:
        recorded = json.loads(sidecar.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _model_error(
            path,
            f"metadata file {sidecar} is missing",
            "copy the .json written by `train` next to the .pt",
        ) from None
    except (OSError, ValueError) as error:
        raise _model_error(
            path, f"metadata file {sidecar} is unreadable ({error})", retrain
        ) from None
    sha256 = sha256_file(path)
    if recorded.get("sha256") != sha256:
        raise _model_error(
            path,
            f"sha256 {sha256[:16]}… does not match {recorded.get('sha256', 'none')!s:.16}… recorded in {sidecar.name} "
            "(file corrupt, truncated or replaced)",
            "copy the .pt and .json pair again from where the model was trained",
        )
    try:
        artifact = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for bad pickles and zip files
        raise _model_error(
            path, f"not a readable torch file ({type(error).__name__}: {error})", retrain
        ) from None
    if not isinstance(artifact, dict) or artifact.get("format") != ARTIFACT_FORMAT:
        raise _model_error(path, f"not a {ARTIFACT_FORMAT} artifact", retrain)
    if artifact.get("format_version") != FORMAT_VERSION:
        raise _model_error(
            path,
            f"format version {artifact.get('format_version')} but this worker (smartbkg-prod {__version__}) "
            f"reads version {FORMAT_VERSION}",
            "use a worker image matching the model, or " + retrain,
        )
    policy = artifact.get("unknown_pdg", {})
    if policy.get("policy") != UNKNOWN_PDG_POLICY:
        raise _model_error(
            path,
            f"unknown-PDG policy {policy.get('policy')!r} is not supported (this worker: {UNKNOWN_PDG_POLICY!r})",
            retrain,
        )
    try:
        encoding = GraphEncoding.from_dict(artifact["encoding"])
        shape = NetShape(**artifact["net_shape"])
        if shape.n_pdg != encoding.n_pdg:
            raise ValueError(f"embedding has {shape.n_pdg} rows, vocabulary needs {encoding.n_pdg}")
        net = FilterNet.from_shape(shape)
        net.load_state_dict(artifact["state_dict"])
        calibration = SamplingCalibration.from_dict(artifact["sampling"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise _model_error(path, f"weights and metadata do not fit ({error})", retrain) from None
    net.eval()
    metadata = {key: value for key, value in artifact.items() if key != "state_dict"}
    return FilterModel(
        net=net,
        encoding=encoding,
        calibration=calibration,
        threshold=float(artifact["threshold"]),
        max_unknown_fraction=float(policy.get("max_fraction", DEFAULT_MAX_UNKNOWN_FRACTION)),
        metadata=metadata,
        sha256=sha256,
        path=path.resolve(),
    )
