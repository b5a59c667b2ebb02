"""The local backend's docker runtime: each attempt is one worker container.

Same worker entry point, same job file, same outputs as the bare-process runtime; only
where it runs changes. Selected by ``container.runtime: docker`` (with
``container.image``). Per attempt:

- the campaign's output directory is bind-mounted at the *same path* inside the
  container, so the job file, the report and the outputs have one path everywhere;
- ``--network none``, a read-only root file system with a private ``/tmp``, and
  ``--init`` (tini as PID 1) so the worker gets signals as a plain process does;
- ``--cpus`` = ``resources.cores``, ``--memory`` = ``resources.memory_mb`` (no swap) and
  ``--gpus`` = ``resources.gpus`` (for the GPU image);
- the container runs as the submitting user's uid:gid (outputs stay theirs);
- ``SMARTBKG_IMAGE`` / ``SMARTBKG_IMAGE_DIGEST`` tell the worker what to record; the
  submitter's other ``SMARTBKG_*`` variables (site, fault drills) pass through, as the
  process runtime's environment does; nothing else of the host's environment does, nor
  ``SMARTBKG_DB`` (it may hold credentials);
- the container's exit code is the attempt's exit code (137 with ``OOMKilled`` is
  reported as ``docker:OOMKilled``).

Containers carry labels (campaign id, job index, attempt), so a restarted submitter can
still poll the containers an earlier one started.
"""

from __future__ import annotations

import contextlib
import os
import shlex
from collections.abc import Sequence
from pathlib import Path

from smartbkg_prod.backends.base import (
    Backend,
    JobHandle,
    JobState,
    attempt_handle,
    exit_status,
    finished_state,
    write_job_file,
)
from smartbkg_prod.errors import SubmitError
from smartbkg_prod.plan import ENV_IMAGE, ENV_IMAGE_DIGEST, JobInput
from smartbkg_prod.spec import Campaign, Resources

LABEL_PREFIX = "org.smartbkg"
ENV_PREFIX = "SMARTBKG_"
# The database URL may hold credentials, and the worker never talks to the database.
ENV_KEPT_OUT = {"SMARTBKG_DB"}
_RUNNING = {"created", "running", "restarting", "paused"}


def container_arguments(
    job_input: JobInput,
    job_file: Path,
    image: str,
    image_digest: str,
    resources: Resources | None = None,
) -> dict:
    """Keyword arguments of ``docker.containers.run`` for one attempt (see module doc).

    ``resources`` overrides the job's (a retry with more memory passes its own).
    """
    resources = resources or job_input.campaign.resources
    output_dir = str(Path(job_input.output_dir).resolve())
    job_file = Path(job_file).resolve()
    volumes = {output_dir: {"bind": output_dir, "mode": "rw"}}
    if not job_file.is_relative_to(output_dir):
        # A rendered job file outside the output directory is still seen at its path.
        volumes[str(job_file.parent)] = {"bind": str(job_file.parent), "mode": "ro"}
    memory = f"{resources.memory_mb}m"
    arguments = {
        "image": image,
        "command": ["worker", "--job", str(job_file)],
        "detach": True,
        "init": True,
        "network_mode": "none",
        "volumes": volumes,
        "working_dir": output_dir,
        "read_only": True,
        "tmpfs": {"/tmp": "rw,exec,nosuid,nodev"},
        "nano_cpus": int(resources.cores * 1e9),
        "mem_limit": memory,
        "memswap_limit": memory,
        "user": f"{os.getuid()}:{os.getgid()}",
        "environment": {
            **{
                key: value
                for key, value in os.environ.items()
                if key.startswith(ENV_PREFIX) and key not in ENV_KEPT_OUT
            },
            ENV_IMAGE: image,
            ENV_IMAGE_DIGEST: image_digest,
            "HOME": "/tmp",
        },
        "labels": {
            f"{LABEL_PREFIX}.campaign_id": job_input.job.campaign_id,
            f"{LABEL_PREFIX}.job_index": str(job_input.job.index),
            f"{LABEL_PREFIX}.attempt": str(job_input.attempt),
            f"{LABEL_PREFIX}.job_file": str(job_file),
        },
    }
    if resources.gpus:
        # The GPU image carries CUDA; the engine's NVIDIA runtime injects the driver.
        from docker.types import DeviceRequest

        arguments["device_requests"] = [DeviceRequest(count=resources.gpus, capabilities=[["gpu"]])]
    return arguments


def docker_run_command(arguments: dict) -> list[str]:
    """The ``docker run`` command line equivalent to :func:`container_arguments`, in the
    foreground (``--rm``): a rendered script waits for each job and stops at a failure."""
    command = ["docker", "run", "--rm", "--init", f"--network={arguments['network_mode']}"]
    for source, mount in arguments["volumes"].items():
        command += ["--volume", f"{source}:{mount['bind']}:{mount['mode']}"]
    command += ["--workdir", arguments["working_dir"]]
    if arguments["read_only"]:
        command.append("--read-only")
    for path, options in arguments["tmpfs"].items():
        command += ["--tmpfs", f"{path}:{options}"]
    command += [f"--cpus={arguments['nano_cpus'] / 1e9:g}"]
    command += [f"--memory={arguments['mem_limit']}", f"--memory-swap={arguments['memswap_limit']}"]
    command += ["--user", arguments["user"]]
    for request in arguments.get("device_requests", []):
        command.append(f"--gpus={request['Count']}")
    for key, value in arguments["environment"].items():
        command += ["--env", f"{key}={value}"]
    for key, value in arguments["labels"].items():
        command += ["--label", f"{key}={value}"]
    return [*command, arguments["image"], *arguments["command"]]


class DockerLocalBackend(Backend):
    """The local backend with ``container.runtime: docker``: attempts run in containers.

    ``client`` is a ``docker.DockerClient`` (default: ``docker.from_env()``, i.e.
    ``DOCKER_HOST``). ``image_digest`` is resolved from the engine when not given.
    """

    name = "local"
    runtime = "docker"

    def __init__(self, image: str, *, client=None, image_digest: str | None = None):
        self.image = image
        self._client = client
        self._image_digest = image_digest
        self._job_files: dict[str, Path] = {}

    @classmethod
    def from_campaign(cls, campaign: Campaign) -> DockerLocalBackend:
        if not campaign.container.image:
            raise SubmitError("container.runtime 'docker' needs container.image")
        return cls(campaign.container.image)

    @property
    def client(self):
        if self._client is None:
            import docker

            try:
                self._client = docker.from_env()
                self._client.ping()
            except docker.errors.DockerException as error:
                where = os.environ.get("DOCKER_HOST", "the default socket")
                raise SubmitError(
                    f"container.runtime 'docker': no Docker engine answers at {where} "
                    f"({error.__class__.__name__}); start one (scripts/start-docker-engine.sh DIR) "
                    "or use container.runtime: process"
                ) from None
        return self._client

    @property
    def image_digest(self) -> str:
        """The image ID of ``image`` on the engine (what the campaign records)."""
        if self._image_digest is None:
            import docker

            try:
                self._image_digest = self.client.images.get(self.image).id
            except docker.errors.ImageNotFound:
                raise SubmitError(
                    f"image {self.image!r} is not on the Docker engine: build it "
                    "(smartbkg-prod build --tag ...) or pull it"
                ) from None
        return self._image_digest

    def submit(self, campaign: Campaign, jobs: Sequence[JobInput]) -> list[JobHandle]:
        import docker

        handles = []
        for job_input in jobs:
            job_file = write_job_file(job_input)
            # Limits from ``campaign``: a retry passes its changed resources there.
            arguments = container_arguments(
                job_input, job_file, self.image, self.image_digest, campaign.resources
            )
            try:
                container = self.client.containers.run(**arguments)
            except docker.errors.DockerException as error:
                raise SubmitError(
                    f"docker could not start job {job_input.job.index}: {error}"
                ) from None
            self._job_files[container.id] = job_file
            handles.append(attempt_handle(job_input, self.name, container.id, site="local"))
        return handles

    def poll(self, handles: Sequence[JobHandle]) -> list[JobState]:
        import docker

        states = []
        for handle in handles:
            try:
                container = self.client.containers.get(handle.backend_job_id)
            except docker.errors.NotFound:
                states.append(
                    JobState(
                        handle=handle,
                        state="lost",
                        native_reason="no such container on the Docker engine",
                        site="local",
                    )
                )
                continue
            if container.status in _RUNNING:
                states.append(JobState(handle=handle, state="running", site="local"))
                continue
            container_state = container.attrs["State"]
            code, native = exit_status(int(container_state.get("ExitCode", -1)))
            if container_state.get("OOMKilled"):
                native = "docker:OOMKilled"
            elif code > 128:
                native = f"signal:{code - 128}"
            self._save_log(container)
            with contextlib.suppress(docker.errors.DockerException):
                container.remove(force=True)
            states.append(
                finished_state(
                    handle, code, native, site="local", reason=container_state.get("Error") or ""
                )
            )
        return states

    def cancel(self, handles: Sequence[JobHandle]) -> None:
        import docker

        for handle in handles:
            with contextlib.suppress(docker.errors.NotFound):
                container = self.client.containers.get(handle.backend_job_id)
                self._save_log(container)
                container.remove(force=True)

    def _save_log(self, container) -> None:
        """The container's output, next to its job file (as the process runtime does)."""
        job_file = self._job_files.pop(container.id, None)
        if job_file is None:
            label = container.labels.get(f"{LABEL_PREFIX}.job_file")
            job_file = Path(label) if label else None
        if job_file is None:
            return
        with contextlib.suppress(OSError), open(job_file.with_suffix(".log"), "ab") as log:
            log.write(container.logs(stdout=True, stderr=True))

    def render(self, campaign: Campaign, jobs: Sequence[JobInput], directory: Path) -> list[Path]:
        """Job files and the equivalent ``docker run`` commands (digest resolved if the
        engine answers, else a placeholder)."""
        directory.mkdir(parents=True, exist_ok=True)
        try:
            digest = self.image_digest
        except SubmitError:
            digest = "<image id, resolved at submit>"
        files, lines = [], ["#!/bin/sh", "set -e"]
        for job_input in jobs:
            path = write_job_file(job_input, directory)
            files.append(path)
            arguments = container_arguments(job_input, path, self.image, digest, campaign.resources)
            lines.append(shlex.join(docker_run_command(arguments)))
        script = directory / "run_docker.sh"
        script.write_text("\n".join(lines) + "\n")
        return [*files, script]
