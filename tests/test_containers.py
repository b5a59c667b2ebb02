"""Worker images without an engine: tags, build context, SDK streams, digests, provenance,
the docker runtime's container arguments and the entrypoint's dispatch."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import tarfile
from pathlib import Path

import docker
import pytest
from click.testing import CliRunner
from docker.utils import build as docker_build
from docker.utils import parse_repository_tag
from sqlalchemy import update

from smartbkg_prod.backends.docker_runtime import (
    DockerLocalBackend,
    container_arguments,
    docker_run_command,
)
from smartbkg_prod.cli.build import build
from smartbkg_prod.containers import (
    ContainerError,
    ImageRecord,
    SourceRevision,
    apptainer_note,
    assemble_build_context,
    docker_api_client,
    docker_reference,
    follow_build_stream,
    follow_push_stream,
    image_reference,
    image_tag,
    push_target,
    record_from_inspect,
    source_revision,
    split_reference,
    wheel_name_version,
)
from smartbkg_prod.errors import SubmitError
from smartbkg_prod.plan import (
    ENV_IMAGE,
    ENV_IMAGE_DIGEST,
    JobInput,
    campaign_output_dir,
    plan_jobs,
)
from smartbkg_prod.spec import Campaign
from smartbkg_prod.store import DONE
from smartbkg_prod.store.tables import JobRow
from smartbkg_prod.submit import check_image_provenance

REPO = Path(__file__).resolve().parents[1]
CONTAINERS = REPO / "containers"
# Docker's tag grammar (distribution/reference): [\w][\w.-]{0,127}
DOCKER_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
FAKE_WHEELS = (
    "smartbkg_prod-0.1.0-py3-none-any.whl",
    "onnxruntime-1.32.0-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
    "numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
    "pythia8mc-8.317.2-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
)
IMAGE_ID = "sha256:" + "a" * 64


@pytest.fixture
def wheelhouse(tmp_path: Path) -> list[Path]:
    """Files named like the real wheelhouse (contents do not matter to the context)."""
    directory = tmp_path / "wheelhouse"
    directory.mkdir()
    paths = []
    for name in FAKE_WHEELS:
        path = directory / name
        path.write_bytes(b"wheel " + name.encode())
        paths.append(path)
    return paths


# -- tags and references ------------------------------------------------------------------


def test_tag_names_version_flavour_and_commit():
    tag = image_tag("0.1.0", SourceRevision(commit="4e12986abcde", dirty=False), "cpu")
    assert tag == "0.1.0-cpu-g4e12986abcde"
    assert DOCKER_TAG.match(tag)


def test_tag_marks_a_dirty_tree_and_stays_in_dockers_alphabet():
    tag = image_tag("1.0.0rc1+local.7", SourceRevision(commit=None, dirty=True), "gpu")
    assert tag == "1.0.0rc1-local.7-gpu-nogit-dirty"
    assert DOCKER_TAG.match(tag)
    assert len(image_tag("9" * 200, SourceRevision(commit="x", dirty=False), "cpu")) == 128


def test_source_revision_reads_commit_and_counts_only_image_sources(tmp_path: Path):
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(tmp_path), *args], check=True, capture_output=True, text=True
        ).stdout.strip()

    git("init", "-q")
    (tmp_path / "smartbkg_prod").mkdir()
    (tmp_path / "smartbkg_prod" / "worker.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q", "-m", "init")
    commit = git("rev-parse", "--short=12", "HEAD")
    assert source_revision(tmp_path) == SourceRevision(commit=commit, dirty=False)
    (tmp_path / "notes.txt").write_text("not in the image\n")
    assert not source_revision(tmp_path).dirty
    (tmp_path / "smartbkg_prod" / "new_module.py").write_text("y = 2\n")
    assert source_revision(tmp_path).dirty


def test_source_revision_without_git_is_dirty(tmp_path: Path):
    assert source_revision(tmp_path) == SourceRevision(commit=None, dirty=True)


def test_references_parse_as_the_docker_sdk_parses_them():
    assert image_reference("0.1.0-cpu-gabc") == "smartbkg-prod-worker:0.1.0-cpu-gabc"
    assert image_reference("reg.example:5000/team/worker:1") == "reg.example:5000/team/worker:1"
    reference = image_reference("0.1.0-cpu-gabc")
    assert parse_repository_tag(reference) == split_reference(reference)
    assert split_reference("reg.example:5000/team/worker") == (
        "reg.example:5000/team/worker",
        "latest",
    )
    with pytest.raises(ContainerError, match="digest"):
        split_reference("worker@sha256:" + "b" * 64)


def test_push_keeps_the_repository_path_under_the_target_registry():
    assert push_target("smartbkg-prod-worker:0.1.0-cpu-gabc", "reg.example:5000/belle2") == (
        "reg.example:5000/belle2/smartbkg-prod-worker",
        "0.1.0-cpu-gabc",
    )
    assert push_target("old.example/team/worker", "reg.example") == (
        "reg.example/team/worker",
        "latest",
    )


def test_wheel_file_names_give_name_and_version():
    assert wheel_name_version(FAKE_WHEELS[1]) == ("onnxruntime", "1.32.0")
    with pytest.raises(ContainerError):
        wheel_name_version("README.md")


# -- build context -----------------------------------------------------------------------


def test_cpu_context_holds_dockerfile_entrypoint_and_every_wheel(tmp_path, wheelhouse):
    context = assemble_build_context(tmp_path / "ctx", "cpu", wheelhouse, CONTAINERS)
    assert context.dockerfile.read_text() == (CONTAINERS / "Dockerfile.cpu").read_text()
    entrypoint = context.path / "entrypoint.sh"
    assert entrypoint.stat().st_mode & stat.S_IXUSR
    assert set(context.wheels) == set(FAKE_WHEELS)
    constraints = (context.path / "wheels" / "constraints.txt").read_text().splitlines()
    assert "onnxruntime==1.32.0" in constraints
    assert "smartbkg_prod==0.1.0" in constraints


def test_gpu_context_leaves_onnxruntime_to_the_index_for_onnxruntime_gpu(tmp_path, wheelhouse):
    context = assemble_build_context(tmp_path / "ctx", "gpu", wheelhouse, CONTAINERS)
    assert context.dockerfile.read_text() == (CONTAINERS / "Dockerfile.gpu").read_text()
    assert not any(name.startswith("onnxruntime-") for name in context.wheels)
    assert not list((context.path / "wheels").glob("onnxruntime-*"))
    constraints = (context.path / "wheels" / "constraints.txt").read_text().splitlines()
    assert not any(line.startswith("onnxruntime") for line in constraints)
    assert "onnxruntime-gpu[cuda,cudnn]==" in context.dockerfile.read_text()


def test_context_archive_is_what_the_sdk_sends_without_caches(tmp_path, wheelhouse):
    context = assemble_build_context(tmp_path / "ctx", "cpu", wheelhouse, CONTAINERS)
    (context.path / "wheels" / "__pycache__").mkdir()
    (context.path / "wheels" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    # The same .dockerignore parsing and tar call docker.APIClient.build uses.
    lines = (context.path / ".dockerignore").read_text().splitlines()
    exclude = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    archive = docker_build.tar(str(context.path), exclude=exclude, dockerfile=("Dockerfile", None))
    with tarfile.open(fileobj=archive) as tar:
        members = set(tar.getnames())
    assert {"Dockerfile", "entrypoint.sh", "wheels/constraints.txt"} <= members
    assert {f"wheels/{name}" for name in FAKE_WHEELS} <= members
    assert not any("__pycache__" in name for name in members)


def test_context_needs_the_package_wheel_and_a_known_flavour(tmp_path, wheelhouse):
    with pytest.raises(ContainerError, match="smartbkg_prod wheel"):
        assemble_build_context(tmp_path / "a", "cpu", wheelhouse[1:], CONTAINERS)
    with pytest.raises(ContainerError, match="flavour"):
        assemble_build_context(tmp_path / "b", "tpu", wheelhouse, CONTAINERS)


def test_dockerfiles_are_multi_stage_offline_and_non_root():
    for flavour in ("cpu", "gpu"):
        text = (CONTAINERS / f"Dockerfile.{flavour}").read_text()
        assert text.count("FROM ${BASE_IMAGE}") == 2
        assert "COPY --from=builder /opt/smartbkg /opt/smartbkg" in text
        assert "--no-cache-dir" in text
        final_stage = text.split("FROM ${BASE_IMAGE}\n")[-1]
        assert "USER smartbkg" in final_stage and "wheels" not in final_stage
    assert "--index-url" not in (CONTAINERS / "Dockerfile.cpu").read_text()


# -- the engine's streams, image records, references ---------------------------------------


def test_build_stream_gives_the_image_id_and_streams_each_line():
    lines = []
    chunks = [
        {"stream": "Step 1/2 : FROM smartbkg-base:local\n"},
        {"stream": " ---> c417782c341f\n"},
        {"aux": {"ID": IMAGE_ID}},
        {"stream": "Successfully built aaaaaaaaaaaa\n"},
    ]
    assert follow_build_stream(chunks, lines.append) == IMAGE_ID
    assert lines[0] == "Step 1/2 : FROM smartbkg-base:local"
    assert len(lines) == 3


def test_build_stream_error_carries_the_engines_message_and_context():
    chunks = [
        {"stream": "Step 4/16 : RUN pip install ...\n"},
        {"stream": "ERROR: No matching distribution found for torch\n"},
        {
            "errorDetail": {"code": 1, "message": "The command returned a non-zero code: 1"},
            "error": "The command returned a non-zero code: 1",
        },
    ]
    with pytest.raises(ContainerError, match="non-zero code: 1") as raised:
        follow_build_stream(chunks)
    assert "No matching distribution" in str(raised.value)
    with pytest.raises(ContainerError, match="without an image ID"):
        follow_build_stream([{"stream": "Step 1/1\n"}])


def test_push_stream_gives_the_registry_digest():
    digest = "sha256:" + "c" * 64
    chunks = [
        {"status": "The push refers to repository [reg.example/smartbkg-prod-worker]"},
        {"status": "Pushing", "progressDetail": {}, "progress": "[=>  ]", "id": "5f70bf18a086"},
        {"status": "0.1.0: digest: ... size: 1234"},
        {"progressDetail": {}, "aux": {"Tag": "0.1.0", "Digest": digest, "Size": 1234}},
    ]
    assert follow_push_stream(chunks) == digest
    with pytest.raises(ContainerError, match="connection refused"):
        follow_push_stream([{"error": "dial tcp: connection refused"}])


def record(**changes) -> ImageRecord:
    inspect = {"Id": IMAGE_ID, "RepoDigests": [], "Size": 1_400_000_000}
    values = dict(
        reference="smartbkg-prod-worker:0.1.0-cpu-gabc",
        flavour="cpu",
        revision=SourceRevision(commit="abc", dirty=False),
        base_image="smartbkg-base:local",
        repo_digest=None,
        build_seconds=120.04,
    )
    values.update(changes)
    return record_from_inspect(inspect, **values)


def test_record_keeps_image_id_as_digest_and_the_build_facts():
    image = record()
    assert image.digest == image.image_id == IMAGE_ID
    assert image.size_bytes == 1_400_000_000 and image.build_seconds == 120.0
    assert image.commit == "abc" and not image.dirty and image.version
    assert ImageRecord.model_validate_json(image.model_dump_json()) == image


def test_docker_reference_pins_a_pushed_image_by_registry_digest():
    pushed = record(repo_digest="reg.example/smartbkg-prod-worker@sha256:" + "d" * 64)
    assert docker_reference(pushed) == f"docker://{pushed.repo_digest}"
    note = apptainer_note(pushed)
    assert "apptainer exec" in note and "unpacked" in note and pushed.image_id in note
    local = record()
    assert docker_reference(local) == "docker-daemon://smartbkg-prod-worker:0.1.0-cpu-gabc"
    assert "--push" in apptainer_note(local)
    assert "--nv" in apptainer_note(record(flavour="gpu"))


def test_no_engine_error_says_how_to_start_one(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/absent.sock")
    with pytest.raises(ContainerError, match="start-docker-engine.sh"):
        docker_api_client()


def test_build_command_reports_a_missing_engine_before_any_work(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/absent.sock")
    result = CliRunner().invoke(build, ["--cpu", "--tag", "t1", "--quiet"])
    assert result.exit_code != 0
    assert isinstance(result.exception, ContainerError)
    assert not list(tmp_path.iterdir())


def test_build_command_offers_flavour_tag_push_base_and_wheelhouse():
    result = CliRunner().invoke(build, ["--help"])
    assert result.exit_code == 0
    for option in ("--gpu / --cpu", "--tag", "--push", "--base-image", "--wheelhouse"):
        assert option in result.output


# -- provenance ------------------------------------------------------------------------------


@pytest.fixture
def docker_campaign(tmp_path: Path) -> Campaign:
    return Campaign(
        name="boxed",
        process="bbbar_mixed",
        events=400,
        events_per_job=200,
        seed=11,
        container={"image": "smartbkg-prod-worker:test", "runtime": "docker"},
        resources={"cores": 2, "memory_mb": 1500},
        outputs={"directory": str(tmp_path / "out")},
    )


def registered(store, campaign):
    store.campaigns.register(campaign, plan_jobs(campaign), campaign_output_dir(campaign))
    return campaign


def test_first_submission_records_the_image_digest(store, docker_campaign):
    registered(store, docker_campaign)
    check_image_provenance(store, docker_campaign, IMAGE_ID)
    provenance = store.campaigns.get(docker_campaign.campaign_id).provenance
    assert provenance["image_digest"] == IMAGE_ID
    assert provenance["image"] == "smartbkg-prod-worker:test"
    check_image_provenance(store, docker_campaign, IMAGE_ID)


def test_a_changed_digest_is_refused_while_jobs_remain(store, docker_campaign):
    registered(store, docker_campaign)
    check_image_provenance(store, docker_campaign, IMAGE_ID)
    with pytest.raises(SubmitError, match="changed under campaign"):
        check_image_provenance(store, docker_campaign, "sha256:" + "e" * 64)
    assert store.campaigns.get(docker_campaign.campaign_id).provenance["image_digest"] == IMAGE_ID


def test_a_changed_digest_does_not_matter_once_every_job_is_done(store, docker_campaign):
    registered(store, docker_campaign)
    check_image_provenance(store, docker_campaign, IMAGE_ID)
    with store.session() as session:
        session.execute(
            update(JobRow)
            .where(JobRow.campaign_id == docker_campaign.campaign_id)
            .values(state=DONE)
        )
    check_image_provenance(store, docker_campaign, "sha256:" + "e" * 64)
    assert store.campaigns.get(docker_campaign.campaign_id).provenance["image_digest"] == IMAGE_ID


def test_an_unregistered_campaign_cannot_record_an_image(store, docker_campaign):
    with pytest.raises(SubmitError, match="not registered"):
        check_image_provenance(store, docker_campaign, IMAGE_ID)


# -- docker runtime --------------------------------------------------------------------------


def job_input(campaign: Campaign) -> JobInput:
    return JobInput(
        job=plan_jobs(campaign)[1],
        campaign=campaign,
        attempt=2,
        output_dir=str(campaign_output_dir(campaign)),
    )


def test_container_sees_the_output_dir_at_the_same_path_with_limits_and_no_network(
    docker_campaign, monkeypatch
):
    monkeypatch.setenv("SMARTBKG_SITE", "DESY-HH")
    monkeypatch.setenv("SMARTBKG_DB", "postgresql+psycopg://user:secret@db/prod")
    given = job_input(docker_campaign)
    job_file = Path(given.output_dir) / "jobs" / "j.json"
    arguments = container_arguments(given, job_file, "img:1", IMAGE_ID)
    assert arguments["volumes"] == {given.output_dir: {"bind": given.output_dir, "mode": "rw"}}
    assert arguments["command"] == ["worker", "--job", str(job_file)]
    assert arguments["network_mode"] == "none"
    assert arguments["nano_cpus"] == 2_000_000_000
    assert arguments["mem_limit"] == arguments["memswap_limit"] == "1500m"
    assert arguments["environment"][ENV_IMAGE] == "img:1"
    assert arguments["environment"][ENV_IMAGE_DIGEST] == IMAGE_ID
    assert arguments["environment"]["SMARTBKG_SITE"] == "DESY-HH"
    assert "SMARTBKG_DB" not in arguments["environment"]
    assert arguments["user"] == f"{os.getuid()}:{os.getgid()}"
    assert arguments["labels"]["org.smartbkg.attempt"] == "2"
    # The SDK accepts exactly these keyword arguments for a container's host config.
    docker.types.HostConfig(
        version="1.41",
        binds=arguments["volumes"],
        network_mode=arguments["network_mode"],
        nano_cpus=arguments["nano_cpus"],
        mem_limit=arguments["mem_limit"],
        memswap_limit=arguments["memswap_limit"],
        read_only=arguments["read_only"],
        tmpfs=arguments["tmpfs"],
    )


def test_gpu_jobs_request_the_engines_gpus(docker_campaign):
    given = job_input(docker_campaign)
    gpus = docker_campaign.resources.model_copy(update={"gpus": 1})
    arguments = container_arguments(given, Path(given.output_dir) / "j.json", "i", "d", gpus)
    [request] = arguments["device_requests"]
    assert request["Count"] == 1 and request["Capabilities"] == [["gpu"]]
    assert "--gpus=1" in docker_run_command(arguments)
    assert "device_requests" not in container_arguments(given, Path("/x/j.json"), "i", "d")


def test_retry_resources_override_the_jobs_own(docker_campaign):
    given = job_input(docker_campaign)
    more = docker_campaign.resources.model_copy(update={"memory_mb": 4000})
    arguments = container_arguments(given, Path(given.output_dir) / "j.json", "i", "d", more)
    assert arguments["mem_limit"] == "4000m"


def test_dry_run_renders_equivalent_docker_run_commands(docker_campaign, tmp_path):
    backend = DockerLocalBackend.from_campaign(docker_campaign)
    jobs = [job_input(docker_campaign)]
    files = backend.render(docker_campaign, jobs, tmp_path / "render")
    script = files[-1].read_text()
    assert script.count("docker run --rm") == 1 and "set -e" in script
    assert "--network=none" in script and "--cpus=2" in script and "--memory=1500m" in script
    # The rendered job file lies outside the output directory: mounted read-only.
    assert f"{tmp_path / 'render'}:{tmp_path / 'render'}:ro" in script
    command = docker_run_command(container_arguments(jobs[0], files[0], "i", "d"))
    assert command[-4:] == ["i", "worker", "--job", str(files[0])]


def test_docker_runtime_needs_an_image():
    campaign = Campaign(name="bare", process="bbbar_mixed", events=10, events_per_job=10)
    with pytest.raises(SubmitError, match="container.image"):
        DockerLocalBackend.from_campaign(campaign)


# -- entrypoint -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "runs"),
    [
        (["--job", "/d/j.json"], "smartbkg-prod worker --job /d/j.json"),
        (["worker", "--job", "/d/j.json"], "smartbkg-prod worker --job /d/j.json"),
        (["--version"], "smartbkg-prod --version"),
        ([], "smartbkg-prod --help"),
        (["echo", "hello"], "hello"),
    ],
)
def test_entrypoint_dispatches_to_the_worker(tmp_path, arguments, runs):
    fake = tmp_path / "smartbkg-prod"
    fake.write_text('#!/bin/sh\necho "smartbkg-prod $*"\n')
    fake.chmod(0o755)
    result = subprocess.run(
        ["sh", str(CONTAINERS / "entrypoint.sh"), *arguments],
        capture_output=True,
        text=True,
        env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"},
    )
    assert result.stdout.strip() == runs


def test_entrypoint_passes_the_workers_exit_code_through(tmp_path):
    fake = tmp_path / "smartbkg-prod"
    fake.write_text("#!/bin/sh\nexit 42\n")
    fake.chmod(0o755)
    result = subprocess.run(
        ["sh", str(CONTAINERS / "entrypoint.sh"), "--job", "/d/j.json"],
        env={**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"},
    )
    assert result.returncode == 42
