"""The model artifact: ``model.pt`` (torch weights, for training), ``model.onnx`` (the
exported network the worker runs) and the ``model.json`` sidecar that ties them together.

The sidecar holds the metadata in readable form (encoding, calibration, threshold, the
unknown-PDG policy, training provenance), the ``.pt`` file's sha256 and, under ``onnx``,
the ``.onnx`` file's name, sha256, model ``kind`` and input names. The worker reads only the
sidecar and the ``.onnx`` file (no torch): :func:`load_card` refuses a model whose ``.onnx``
bytes do not match the recorded sha256, is missing, or was written for another format;
the torch side (:mod:`checkpoint`) checks the ``.pt`` file the same way. Every problem is a
``ModelLoadError`` naming the file and the fix. ``filter.model`` may name the ``.pt`` or the
``.onnx`` file: both share the sidecar.

>>> sidecar_path("models/filter.onnx").name
'filter.json'
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from smartbkg_prod import __version__
from smartbkg_prod.files import sha256_file
from smartbkg_prod.filter.encoding import GraphEncoding
from smartbkg_prod.filter.errors import ModelLoadError
from smartbkg_prod.filter.sampling import SamplingCalibration

ARTIFACT_FORMAT = "smartbkg-prod/filter-model"
FORMAT_VERSION = 1
ONNX_OPSET = 18
# The one policy this worker implements for PDG codes missing from the vocabulary: embed
# them with the shared "unknown" row, and refuse events where they are more than
# ``max_fraction`` of the particles (the model was then trained on another process).
UNKNOWN_PDG_POLICY = "embed_as_unknown"
DEFAULT_MAX_UNKNOWN_FRACTION = 0.01
SHIPPED_MODEL = Path(__file__).resolve().parent.parent / "models" / "default.pt"
RETRAIN = "retrain with `smartbkg-prod train SPEC` or set filter.model to a model made by it"


@dataclass(frozen=True)
class ModelCard:
    """What the worker needs of a model, read from its checked sidecar (no torch)."""

    path: Path  # the file filter.model named (.pt or .onnx)
    onnx_path: Path
    onnx_sha256: str
    kind: str  # which builder makes its inputs (smartbkg_prod.filter.inputs.INPUT_BUILDERS)
    input_names: tuple[str, ...]
    output_name: str
    encoding: GraphEncoding
    calibration: SamplingCalibration
    threshold: float
    max_unknown_fraction: float
    metadata: dict[str, Any]


def sidecar_path(model_path: str | Path) -> Path:
    return Path(model_path).with_suffix(".json")


def resolve_model_path(model: str | Path | None) -> Path:
    """``default`` (or nothing) means the model shipped inside the package."""
    if model is None or str(model) == "default":
        return SHIPPED_MODEL
    return Path(model).expanduser()


def model_error(path: Path, problem: str, fix: str) -> ModelLoadError:
    return ModelLoadError(f"filter model {path}: {problem}; {fix}")


def atomic_write(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """Write ``path`` through a temporary file in its folder, then rename it into place."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
        os.chmod(temporary, 0o644)  # mkstemp makes 0600; models are shared read-only files
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_sidecar(model_path: Path, sidecar: dict[str, Any]) -> None:
    blob = json.dumps(sidecar, indent=2, sort_keys=True).encode() + b"\n"
    atomic_write(sidecar_path(model_path), lambda handle: handle.write(blob))


def read_sidecar(path: Path) -> dict[str, Any]:
    """The sidecar of ``path``, its format and policies checked (not the files' hashes)."""
    sidecar = sidecar_path(path)
    try:
        recorded = json.loads(sidecar.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise model_error(
            path,
            f"metadata file {sidecar} is missing",
            "copy the .json written by `train` next to the model files",
        ) from None
    except (OSError, ValueError) as error:
        raise model_error(
            path, f"metadata file {sidecar} is unreadable ({error})", RETRAIN
        ) from None
    check_header(path, recorded)
    return recorded


def check_header(path: Path, header: Any) -> None:
    """The format, version and unknown-PDG policy this worker reads (sidecar or .pt header)."""
    if not isinstance(header, dict) or header.get("format") != ARTIFACT_FORMAT:
        raise model_error(path, f"not a {ARTIFACT_FORMAT} artifact", RETRAIN)
    if header.get("format_version") != FORMAT_VERSION:
        raise model_error(
            path,
            f"format version {header.get('format_version')} but this worker (smartbkg-prod {__version__}) "
            f"reads version {FORMAT_VERSION}",
            "use a worker image matching the model, or " + RETRAIN,
        )
    policy = header.get("unknown_pdg")
    if not isinstance(policy, dict) or policy.get("policy") != UNKNOWN_PDG_POLICY:
        found = policy.get("policy") if isinstance(policy, dict) else None
        raise model_error(
            path,
            f"unknown-PDG policy {found!r} is not supported (this worker: {UNKNOWN_PDG_POLICY!r})",
            RETRAIN,
        )


def check_sha256(path: Path, file: Path, recorded: Any, sidecar_name: str) -> str:
    """sha256 of ``file``; a ModelLoadError when it is not ``recorded``."""
    if not file.is_file():
        raise model_error(
            path,
            f"{file.name} (recorded in {sidecar_name}) is missing",
            "copy the model files written by `train` together (.pt, .onnx and .json)",
        )
    sha256 = sha256_file(file)
    if recorded != sha256:
        raise model_error(
            path,
            f"sha256 {sha256[:16]}… of {file.name} does not match {recorded or 'none'!s:.16}… "
            f"recorded in {sidecar_name} (file corrupt, truncated or replaced)",
            "copy the model files again from where the model was trained",
        )
    return sha256


def open_model(model: str | Path | None) -> tuple[Path, dict[str, Any]]:
    """The path ``filter.model`` names, checked to exist, and its checked sidecar."""
    path = resolve_model_path(model)
    if not path.is_file():
        raise model_error(
            path, "no such file", f"check filter.model (the shipped model is 'default'); {RETRAIN}"
        )
    return path, read_sidecar(path)


def load_card(model: str | Path | None) -> ModelCard:
    """Read and check the sidecar and the ``.onnx`` file of a model (no torch)."""
    path, recorded = open_model(model)
    export = recorded.get("onnx")
    if not isinstance(export, dict) or not isinstance(export.get("file"), str):
        raise model_error(
            path,
            f"{sidecar_path(path).name} records no ONNX export (a model from before the worker "
            "ran ONNX Runtime)",
            "export it with `smartbkg-prod export-onnx MODEL.pt` (needs the [train] extra), or "
            + RETRAIN,
        )
    onnx_path = path.parent / Path(export["file"]).name  # a name, never a path elsewhere
    onnx_sha256 = check_sha256(path, onnx_path, export.get("sha256"), sidecar_path(path).name)
    try:
        encoding = GraphEncoding.from_dict(recorded["encoding"])
        calibration = SamplingCalibration.from_dict(recorded["sampling"])
        card = ModelCard(
            path=path.resolve(),
            onnx_path=onnx_path.resolve(),
            onnx_sha256=onnx_sha256,
            kind=str(export["kind"]),
            input_names=tuple(str(name) for name in export["inputs"]),
            output_name=str(export["output"]),
            encoding=encoding,
            calibration=calibration,
            threshold=float(recorded["threshold"]),
            max_unknown_fraction=float(
                recorded["unknown_pdg"].get("max_fraction", DEFAULT_MAX_UNKNOWN_FRACTION)
            ),
            metadata=recorded,
        )
    except (KeyError, TypeError, ValueError) as error:
        raise model_error(path, f"metadata incomplete or malformed ({error})", RETRAIN) from None
    return card
