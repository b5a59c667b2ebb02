"""``smartbkg-prod build``: build (and optionally push) a worker image.

A thin layer over :func:`smartbkg_prod.containers.build_worker_image`; prints the build's
progress as the engine streams it, then the image record, the ``docker://`` reference
and a note for Apptainer sites.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("build")
@click.option(
    "--gpu/--cpu",
    "gpu",
    default=False,
    help="GPU image (onnxruntime-gpu and CUDA 13 wheels from PyPI) or CPU image.",
)
@click.option(
    "--tag",
    default=None,
    help="Image name and/or tag: 'name:tag', or just a tag for smartbkg-prod-worker:TAG "
    "(default smartbkg-prod-worker:<version>-<flavour>-g<commit>[-dirty]).",
)
@click.option(
    "--push", "registry", default=None, help="Push to this registry (host[:port][/path])."
)
@click.option(
    "--base-image",
    default=None,
    help="Base image with Python 3.11 (default python:3.11-slim-bookworm; offline: "
    "smartbkg-base:local from scripts/bootstrap-base-image.sh).",
)
@click.option(
    "--wheelhouse",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep dependency wheels here between builds (faster, offline once filled).",
)
@click.option(
    "--record",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the image record (reference, image ID, digest, size) as JSON here.",
)
@click.option("--quiet", is_flag=True, help="Do not stream the build's output.")
def build(
    gpu: bool,
    tag: str | None,
    registry: str | None,
    base_image: str | None,
    wheelhouse: Path | None,
    record: Path | None,
    quiet: bool,
) -> None:
    """Build a worker image with the Docker engine at DOCKER_HOST."""
    from smartbkg_prod.containers import apptainer_note, build_worker_image, docker_reference

    image = build_worker_image(
        "gpu" if gpu else "cpu",
        tag=tag,
        base_image=base_image,
        registry=registry,
        wheelhouse=wheelhouse,
        progress=None if quiet else lambda line: click.echo(line, err=True),
    )
    if record is not None:
        record.write_text(image.model_dump_json(indent=1) + "\n")
    click.echo(f"image      {image.reference}")
    click.echo(f"image id   {image.image_id}  (recorded as the campaign's image_digest)")
    if image.repo_digest:
        click.echo(f"pushed     {image.repo_digest}")
    click.echo(f"size       {image.size_bytes / 1e6:,.0f} MB, built in {image.build_seconds:.0f} s")
    click.echo(f"reference  {docker_reference(image)}")
    click.echo(apptainer_note(image))
