"""Worker images: build context, tag, build, push and digest, with the docker SDK.

A worker image is built from a small context that :func:`assemble_build_context` lays out::

    Dockerfile      containers/Dockerfile.cpu or containers/Dockerfile.gpu
    .dockerignore   containers/.dockerignore
    entrypoint.sh   containers/entrypoint.sh
    wheels/         the package and its dependencies as wheels, and constraints.txt

The wheels are made on the host (``pip wheel`` of the core install: no torch), so building
the CPU image downloads nothing: it runs with ``--network none`` on any base that has
Python 3.11 (``scripts/bootstrap-base-image.sh`` makes one offline). The GPU image takes
onnxruntime-gpu and its CUDA wheels from PyPI while building (see its Dockerfile).

Tags say what is inside: package version, flavour and git commit of the source.

>>> image_tag("0.1.0", SourceRevision(commit="4e12986abcde", dirty=False), "cpu")
'0.1.0-cpu-g4e12986abcde'
>>> image_tag("0.2.0.dev1+local", SourceRevision(commit=None, dirty=True), "gpu")
'0.2.0.dev1-local-gpu-nogit-dirty'

Every image is identified by its *image ID* (the sha256 of its config, the same on every
engine that pulls it); that is what campaigns record as ``image_digest``. A pushed image
also has a registry digest (``repo@sha256:...``), which is what ``docker://`` references
and grid sites pin.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from smartbkg_prod import __version__
from smartbkg_prod.errors import SmartBkgError

Flavour = Literal["cpu", "gpu"]
FLAVOURS: tuple[str, ...] = ("cpu", "gpu")
IMAGE_REPOSITORY = "smartbkg-prod-worker"
DEFAULT_BASE_IMAGES: dict[str, str] = {
    "cpu": "python:3.11-slim-bookworm",
    # onnxruntime-gpu's nvidia-* wheels carry the CUDA runtime: a plain Python base plus the
    # host driver.
    "gpu": "python:3.11-slim-bookworm",
}
# Sources that go into the image: a change there makes the tag "-dirty".
IMAGE_SOURCES = ("smartbkg_prod", "pyproject.toml", "containers")
CONTEXT_FILES = ("entrypoint.sh", ".dockerignore", "warm-worker.py")
# Wheels the GPU image does not take from the host's wheelhouse: onnxruntime-gpu from its
# index replaces the CPU onnxruntime.
GPU_INDEX_PACKAGES = ("onnxruntime",)
_TAG_ALLOWED = re.compile(r"[^A-Za-z0-9_.-]")
_TAG_MAX = 128

Progress = Callable[[str], None]


class ContainerError(SmartBkgError):
    """An image could not be assembled, built, pushed or inspected."""


class SourceRevision(BaseModel):
    """Which source an image is built from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    commit: str | None
    dirty: bool


class ImageRecord(BaseModel):
    """What ``smartbkg-prod build`` made: the facts a campaign's provenance refers to."""

    model_config = ConfigDict(extra="forbid")

    reference: str
    flavour: Flavour
    version: str
    commit: str | None
    dirty: bool
    base_image: str
    image_id: str
    repo_digest: str | None = None
    size_bytes: int
    build_seconds: float
    built_at: float

    @property
    def digest(self) -> str:
        """The identity recorded in campaign provenance (the image ID)."""
        return self.image_id


@dataclass(frozen=True)
class BuildContext:
    """An assembled build context directory."""

    path: Path
    flavour: Flavour
    wheels: tuple[str, ...]

    @property
    def dockerfile(self) -> Path:
        return self.path / "Dockerfile"


# -- source, version and tag ----------------------------------------------------------


def project_root() -> Path:
    """The source checkout this package is imported from (needs pyproject.toml and
    containers/, i.e. a checkout or an editable install)."""
    root = Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file() or not (root / "containers").is_dir():
        raise ContainerError(
            f"{root} is not a smartbkg-prod source checkout (no pyproject.toml and containers/): "
            "build images from a checkout (pip install -e .)"
        )
    return root


def source_revision(project_dir: Path, sources: Iterable[str] = IMAGE_SOURCES) -> SourceRevision:
    """Git commit of ``project_dir`` and whether the image sources differ from it
    (modified or untracked files under ``sources``: both end up in the wheel)."""

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["git", "-C", str(project_dir), *args], capture_output=True, text=True, check=False
        )

    head = git("rev-parse", "--short=12", "HEAD")
    if head.returncode != 0:
        return SourceRevision(commit=None, dirty=True)
    status = git("status", "--porcelain", "--untracked-files=normal", "--", *sources)
    return SourceRevision(commit=head.stdout.strip(), dirty=bool(status.stdout.strip()))


def image_tag(version: str, revision: SourceRevision, flavour: Flavour) -> str:
    """``<version>-<flavour>-g<commit>[-dirty]``, in Docker's tag alphabet."""
    commit = f"g{revision.commit}" if revision.commit else "nogit"
    tag = f"{version}-{flavour}-{commit}" + ("-dirty" if revision.dirty else "")
    tag = _TAG_ALLOWED.sub("-", tag).lstrip(".-")
    return tag[:_TAG_MAX]


def image_reference(tag: str, repository: str = IMAGE_REPOSITORY) -> str:
    """``repository:tag``; a ``tag`` that already names a repository is kept as it is."""
    return tag if ("/" in tag or ":" in tag) else f"{repository}:{tag}"


def split_reference(reference: str) -> tuple[str, str]:
    """``(repository, tag)`` of a reference, ``latest`` when it has no tag."""
    from docker.utils import parse_repository_tag

    repository, tag = parse_repository_tag(reference)
    if tag and tag.startswith("sha256:"):
        raise ContainerError(f"{reference}: a digest reference has no tag to build or push")
    return repository, tag or "latest"


# -- wheelhouse and build context -------------------------------------------------------


def environment_constraints(exclude: Iterable[str] = ("smartbkg-prod",)) -> list[str]:
    """``name==version`` of every distribution in this environment: the image gets the
    versions the host runs (and tests) rather than whatever is newest."""
    skip = {_normalize(name) for name in exclude}
    pins = {}
    for dist in metadata.distributions():
        name = dist.metadata.get("Name")
        if not name or _normalize(name) in skip or not dist.version:
            continue
        pins[_normalize(name)] = f"{name}=={dist.version}"
    return [pins[key] for key in sorted(pins)]


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_name_version(filename: str) -> tuple[str, str]:
    """Distribution name and version of a wheel file name (PEP 427).

    >>> wheel_name_version("onnxruntime-1.32.0-cp311-cp311-manylinux_2_27_x86_64.whl")
    ('onnxruntime', '1.32.0')
    """
    parts = Path(filename).name.removesuffix(".whl").split("-")
    if len(parts) < 5:
        raise ContainerError(f"{filename}: not a wheel file name")
    return parts[0], parts[1]


def build_wheelhouse(
    project_dir: Path,
    wheel_dir: Path,
    *,
    pin_environment: bool = True,
    progress: Progress | None = None,
) -> list[Path]:
    """Wheels of the package (no extras) and all its dependencies, made with pip.

    Wheels already in ``wheel_dir`` are reused (it is also a find-links location), so a
    kept wheelhouse makes rebuilds fast and works offline once filled. The package's
    own wheel is always rebuilt from ``project_dir``.
    """
    wheel_dir.mkdir(parents=True, exist_ok=True)
    for stale in wheel_dir.glob("smartbkg_prod-*.whl"):
        stale.unlink()
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check"]
    command += ["--wheel-dir", str(wheel_dir), "--find-links", str(wheel_dir)]
    # Build with the host's setuptools: no isolated build env to download.
    command += ["--no-build-isolation"]
    with tempfile.TemporaryDirectory(prefix="smartbkg-constraints-") as scratch:
        if pin_environment:
            pins = Path(scratch) / "environment.txt"
            pins.write_text("\n".join(environment_constraints()) + "\n")
            command += ["--constraint", str(pins)]
        command.append(str(project_dir))
        if progress:
            progress(f"pip wheel {project_dir} -> {wheel_dir}")
        started = time.perf_counter()
        # A filled wheelhouse needs no index: try offline first (seconds, not a minute).
        result = subprocess.run([*command, "--no-index"], capture_output=True, text=True)
        if result.returncode != 0:
            result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if not line.startswith("WARNING")]
        raise ContainerError(
            "pip wheel failed for the image's wheelhouse:\n" + "\n".join(lines[-15:])
        )
    wheels = sorted(wheel_dir.glob("*.whl"))
    if progress:
        size = sum(path.stat().st_size for path in wheels) / 1e6
        progress(
            f"wheelhouse: {len(wheels)} wheels, {size:.0f} MB in {time.perf_counter() - started:.0f} s"
        )
    return wheels


def select_wheels(wheels: Iterable[Path], flavour: Flavour) -> list[Path]:
    """The wheels one flavour installs from its context: the GPU image takes
    ``GPU_INDEX_PACKAGES`` from its index; only the newest version of each distribution."""
    newest: dict[str, tuple[Path, str]] = {}
    for path in sorted(wheels, key=lambda p: p.stat().st_mtime):
        name, version = wheel_name_version(path.name)
        key = _normalize(name)
        if flavour == "gpu" and key in GPU_INDEX_PACKAGES:
            continue
        newest[key] = (path, version)
    return [path for path, _ in newest.values()]


def wheel_constraints(wheels: Iterable[Path]) -> str:
    """constraints.txt for the image: every shipped wheel pinned (the GPU image pins its
    index package, onnxruntime-gpu, in its Dockerfile: its releases differ from the CPU
    build's)."""
    lines = []
    for path in wheels:
        name, version = wheel_name_version(path.name)
        lines.append(f"{name}=={version}")
    return "\n".join(sorted(set(lines), key=str.lower)) + "\n"


def assemble_build_context(
    context_dir: Path,
    flavour: Flavour,
    wheels: Iterable[Path],
    containers_dir: Path | None = None,
) -> BuildContext:
    """Lay out a build context in ``context_dir`` (created; must be empty or absent).

    Wheels are hard-linked when the file system allows it (the CPU wheelhouse is ~320 MB).
    """
    if flavour not in FLAVOURS:
        raise ContainerError(f"unknown image flavour {flavour!r} (allowed: {', '.join(FLAVOURS)})")
    containers_dir = containers_dir or project_root() / "containers"
    dockerfile = containers_dir / f"Dockerfile.{flavour}"
    if not dockerfile.is_file():
        raise ContainerError(f"{dockerfile}: missing (the {flavour} worker Dockerfile)")
    context_dir.mkdir(parents=True, exist_ok=True)
    if any(context_dir.iterdir()):
        raise ContainerError(f"{context_dir}: build context directory is not empty")
    all_wheels = list(wheels)
    chosen = select_wheels(all_wheels, flavour)
    if not any(wheel_name_version(p.name)[0] == "smartbkg_prod" for p in chosen):
        raise ContainerError("the wheelhouse has no smartbkg_prod wheel (run build_wheelhouse)")

    shutil.copyfile(dockerfile, context_dir / "Dockerfile")
    for name in CONTEXT_FILES:
        shutil.copyfile(containers_dir / name, context_dir / name)
    (context_dir / "entrypoint.sh").chmod(0o755)
    wheel_target = context_dir / "wheels"
    wheel_target.mkdir()
    for path in chosen:
        _link_or_copy(path, wheel_target / path.name)
    (wheel_target / "constraints.txt").write_text(wheel_constraints(chosen))
    return BuildContext(
        path=context_dir, flavour=flavour, wheels=tuple(sorted(p.name for p in chosen))
    )


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


# -- engine: build, push, inspect -------------------------------------------------------


def docker_api_client(timeout: int = 600):
    """A low-level client for the engine at ``DOCKER_HOST`` (or the default socket),
    checked to answer."""
    import docker

    try:
        client = docker.APIClient(timeout=timeout, **docker.utils.kwargs_from_env())
        client.ping()
    except docker.errors.DockerException as error:
        where = os.environ.get("DOCKER_HOST", "the default socket")
        raise ContainerError(
            f"no Docker engine answers at {where} ({error.__class__.__name__}): start one "
            "(scripts/start-docker-engine.sh DIR prints the DOCKER_HOST to export)"
        ) from None
    return client


def follow_build_stream(chunks: Iterable[dict], progress: Progress | None = None) -> str:
    """Consume the engine's build stream (decoded JSON chunks); return the image ID.

    Chunks are ``{"stream": text}`` (step output), ``{"status": ...}`` (base pulls),
    ``{"aux": {"ID": "sha256:..."}}`` (the result) and ``{"error": ...}`` (failure).
    """
    image_id, tail = None, []
    for chunk in chunks:
        if "error" in chunk:
            detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
            context = "\n".join(tail[-10:])
            raise ContainerError(f"image build failed: {detail.strip()}\n{context}".rstrip())
        if "aux" in chunk and "ID" in chunk["aux"]:
            image_id = chunk["aux"]["ID"]
        text = chunk.get("stream") or chunk.get("status")
        if text:
            for line in str(text).splitlines():
                if line.strip():
                    tail.append(line)
                    if progress:
                        progress(line)
    if image_id is None:
        raise ContainerError("image build ended without an image ID:\n" + "\n".join(tail[-10:]))
    return image_id


def build_image(
    context: BuildContext,
    reference: str,
    *,
    base_image: str,
    buildargs: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    network_mode: str | None = None,
    client=None,
    progress: Progress | None = None,
) -> str:
    """Build ``context`` as ``reference`` with streamed progress; return the image ID.

    The CPU image needs no network (``none``); the GPU one reaches PyPI (``host``).
    """
    client = client or docker_api_client()
    args = {"BASE_IMAGE": base_image, **(buildargs or {})}
    if network_mode is None:
        network_mode = "none" if context.flavour == "cpu" else "host"
    stream = client.build(
        path=str(context.path),
        dockerfile="Dockerfile",
        tag=reference,
        buildargs=args,
        labels=labels or None,
        network_mode=network_mode,
        rm=True,
        forcerm=True,
        pull=False,
        decode=True,
    )
    return follow_build_stream(stream, progress)


def follow_push_stream(chunks: Iterable[dict], progress: Progress | None = None) -> str:
    """Consume the engine's push stream; return the registry (manifest) digest."""
    digest = None
    for chunk in chunks:
        if "error" in chunk:
            detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
            raise ContainerError(f"image push failed: {detail.strip()}")
        aux = chunk.get("aux") or {}
        digest = aux.get("Digest", digest)
        if progress and chunk.get("status") and "progress" not in chunk:
            layer = chunk.get("id")
            progress(f"{layer}: {chunk['status']}" if layer else chunk["status"])
    if digest is None:
        raise ContainerError("image push ended without a digest from the registry")
    return digest


def push_target(reference: str, registry: str) -> tuple[str, str]:
    """``(repository in registry, tag)`` for pushing ``reference`` to ``registry``: the
    repository path is kept, a registry host already in it is replaced.

    >>> push_target("team/worker:1", "reg.example:5000/prod")
    ('reg.example:5000/prod/team/worker', '1')
    >>> push_target("old.example/worker:1", "reg.example")
    ('reg.example/worker', '1')
    """
    from docker.auth import resolve_repository_name

    repository, tag = split_reference(reference)
    _, path = resolve_repository_name(repository)
    return f"{registry.rstrip('/')}/{path}", tag


def push_image(reference: str, registry: str, *, client=None, progress: Progress | None = None):
    """Tag ``reference`` into ``registry`` and push it; return ``registry/repo@sha256:...``."""
    import docker

    client = client or docker_api_client()
    target, tag = push_target(reference, registry)
    try:
        client.tag(reference, target, tag=tag)
        stream = client.push(target, tag=tag, stream=True, decode=True)
        digest = follow_push_stream(stream, progress)
    except docker.errors.APIError as error:
        raise ContainerError(f"image push to {registry} failed: {error.explanation}") from None
    return f"{target}@{digest}"


def build_worker_image(
    flavour: Flavour = "cpu",
    *,
    tag: str | None = None,
    base_image: str | None = None,
    registry: str | None = None,
    wheelhouse: Path | None = None,
    project_dir: Path | None = None,
    network_mode: str | None = None,
    buildargs: dict[str, str] | None = None,
    client=None,
    progress: Progress | None = None,
) -> ImageRecord:
    """Everything ``smartbkg-prod build`` does: wheelhouse, context, build, optional push.

    ``wheelhouse`` keeps the dependency wheels between builds (default: a temporary one);
    ``buildargs`` adds to the Dockerfile's (e.g. ``PIP_INDEX_URL`` for the GPU image).
    """
    client = client or docker_api_client()
    project_dir = project_dir or project_root()
    revision = source_revision(project_dir)
    reference = image_reference(tag or image_tag(__version__, revision, flavour))
    base_image = base_image or DEFAULT_BASE_IMAGES[flavour]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="smartbkg-build-") as scratch:
        wheel_dir = Path(wheelhouse) if wheelhouse else Path(scratch) / "wheelhouse"
        wheels = build_wheelhouse(project_dir, wheel_dir, progress=progress)
        context = assemble_build_context(
            Path(scratch) / "context", flavour, wheels, project_dir / "containers"
        )
        revision_text = (revision.commit or "unknown") + ("-dirty" if revision.dirty else "")
        built_id = build_image(
            context,
            reference,
            base_image=base_image,
            buildargs={
                "SMARTBKG_VERSION": __version__,
                "SMARTBKG_REVISION": revision_text,
                **(buildargs or {}),
            },
            labels={"org.smartbkg.flavour": flavour, "org.smartbkg.base-image": base_image},
            network_mode=network_mode,
            client=client,
            progress=progress,
        )
    build_seconds = time.perf_counter() - started
    repo_digest = (
        push_image(reference, registry, client=client, progress=progress) if registry else None
    )
    return record_from_inspect(
        client.inspect_image(built_id),
        reference=reference,
        flavour=flavour,
        revision=revision,
        base_image=base_image,
        repo_digest=repo_digest,
        build_seconds=build_seconds,
    )


def record_from_inspect(
    inspect: dict,
    *,
    reference: str,
    flavour: Flavour,
    revision: SourceRevision,
    base_image: str,
    repo_digest: str | None,
    build_seconds: float,
) -> ImageRecord:
    """An :class:`ImageRecord` from ``docker image inspect`` data of the built image."""
    if repo_digest is None:
        digests = inspect.get("RepoDigests") or []
        repo_digest = digests[0] if digests else None
    return ImageRecord(
        reference=reference,
        flavour=flavour,
        version=__version__,
        commit=revision.commit,
        dirty=revision.dirty,
        base_image=base_image,
        image_id=inspect["Id"],
        repo_digest=repo_digest,
        size_bytes=int(inspect.get("Size", 0)),
        build_seconds=round(build_seconds, 1),
        built_at=time.time(),
    )


# -- references for grid sites ----------------------------------------------------------


def docker_reference(record: ImageRecord) -> str:
    """The reference Apptainer/Singularity (and grid engines) use for this image.

    Pushed: ``docker://registry/repo@sha256:...`` (pinned by digest). Not pushed: the image
    only exists on this engine, which Apptainer reads as ``docker-daemon://repo:tag``.

    >>> r = ImageRecord(reference="w:1", flavour="cpu", version="0.1.0", commit=None,
    ...     dirty=True, base_image="b", image_id="sha256:ab", size_bytes=1,
    ...     build_seconds=1.0, built_at=0.0, repo_digest="reg.example/w@sha256:cd")
    >>> docker_reference(r)
    'docker://reg.example/w@sha256:cd'
    """
    if record.repo_digest:
        return f"docker://{record.repo_digest}"
    return f"docker-daemon://{record.reference}"


def apptainer_note(record: ImageRecord) -> str:
    """What a site running Apptainer/Singularity does with this image."""
    reference = docker_reference(record)
    lines = [
        f"Apptainer/Singularity: apptainer exec --containall --bind OUTDIR {reference} "
        "smartbkg-prod worker --job OUTDIR/jobs/JOB.json",
    ]
    if record.flavour == "gpu":
        lines.append("GPU: add --nv (the image needs only the host's NVIDIA driver).")
    if record.repo_digest:
        lines.append(
            "Sites using unpacked images (e.g. /cvmfs/unpacked.cern.ch) run the unpacked "
            "directory of the same tag; its digest must match "
            f"{record.repo_digest.split('@')[-1]} (image ID {record.image_id}) — "
            "request unpacking by tag and compare before a campaign starts."
        )
    else:
        lines.append(
            "Not pushed: grid sites cannot pull it. Push it (smartbkg-prod build --push "
            "REGISTRY) or convert it here with apptainer build worker.sif " + reference + "."
        )
    return "\n".join(lines)
