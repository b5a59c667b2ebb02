"""Property-based fuzzing of the worker's input (``worker --job FILE [--index I]``): any
malformed job file or job list gives exit code CONFIG (10) or INPUT (11), one line on
stderr, no traceback and nothing written; a job file that validates only ever names
outputs inside its output directory."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from fuzz_inputs import FUZZ, mutate, mutations
from hypothesis import given
from hypothesis import strategies as st

from smartbkg_prod.cli import main
from smartbkg_prod.errors import WorkerError
from smartbkg_prod.exitcodes import ExitCode
from smartbkg_prod.plan import JobInput, plan_jobs
from smartbkg_prod.spec import Campaign
from smartbkg_prod.worker import read_job_input

CAMPAIGN = Campaign(name="fuzzjob", process="bbbar_mixed", events=30, events_per_job=10)
BAD_INPUT_CODES = {int(ExitCode.CONFIG), int(ExitCode.INPUT)}


def valid_job(output_dir: Path) -> dict:
    job = plan_jobs(CAMPAIGN)[1]
    return JobInput(job=job, campaign=CAMPAIGN, output_dir=str(output_dir)).model_dump(mode="json")


PATHS = [
    ("job",),
    ("job", "campaign_id"),
    ("job", "index"),
    ("job", "first_event"),
    ("job", "n_events"),
    ("job", "seed"),
    ("job", "stream_start"),
    ("campaign",),
    ("campaign", "events"),
    ("campaign", "name"),
    ("campaign", "filter"),
    ("attempt",),
    ("output_dir",),
    ("backend",),
    ("site",),
    ("surprise",),
]


def run_cli_worker(job_file: Path, *extra: str):
    return CliRunner().invoke(main, ["worker", "--job", str(job_file), *extra])


@FUZZ
@given(changes=mutations(PATHS, max_size=3))
def test_mutated_job_files_are_refused_clearly_or_stay_inside_their_output_dir(
    changes, tmp_path_factory
):
    base = tmp_path_factory.mktemp("job")
    output_dir = base / "out"
    data = valid_job(output_dir)
    for path, action, value in changes:
        mutate(data, path, action, value)
    job_file = base / "job.json"
    job_file.write_text(json.dumps(data))
    try:
        job_input = read_job_input(job_file)
    except WorkerError as error:
        assert int(error.exit_code) in BAD_INPUT_CODES
        assert str(job_file) in str(error)
        result = run_cli_worker(job_file)
        assert result.exit_code in BAD_INPUT_CODES, result.output
        assert "Traceback" not in result.output
        assert not output_dir.exists() or not any(output_dir.iterdir()), "partial write"
        return
    # Accepted: whatever the job's name says, its files are one component in output_dir.
    for path in (job_input.output_file, job_input.report_file):
        assert path.parent == Path(job_input.output_dir)
        assert "/" not in path.name and path.name not in {".", ".."}


@FUZZ
@given(content=st.binary(max_size=400))
def test_arbitrary_bytes_as_a_job_file_are_refused(content, tmp_path_factory):
    job_file = tmp_path_factory.mktemp("bytes") / "job.json"
    job_file.write_bytes(content)
    with pytest.raises(WorkerError) as error:
        read_job_input(job_file)
    assert int(error.value.exit_code) in BAD_INPUT_CODES


@FUZZ
@given(
    lines=st.lists(st.text(max_size=60), max_size=4),
    index=st.integers(min_value=0, max_value=6),
)
def test_malformed_job_lists_are_refused(lines, index, tmp_path_factory):
    job_list = tmp_path_factory.mktemp("list") / "jobs.jsonl"
    job_list.write_text("\n".join(lines))
    with pytest.raises(WorkerError) as error:
        read_job_input(job_list, index)
    assert int(error.value.exit_code) in BAD_INPUT_CODES


@pytest.mark.parametrize(
    "content",
    [b"[" * 100_000, b'{"job":' * 50_000, b"\xff\xfe\x00", b"", b"null", b"1e999999"],
)
def test_pathological_job_files_exit_with_a_bad_input_code(content, tmp_path):
    job_file = tmp_path / "job.json"
    job_file.write_bytes(content)
    result = run_cli_worker(job_file)
    assert result.exit_code in BAD_INPUT_CODES
    assert "Traceback" not in result.output
    assert result.output.startswith("smartbkg-prod worker: ")


def test_missing_job_file_and_directory_give_input_errors(tmp_path):
    assert run_cli_worker(tmp_path / "absent.json").exit_code == int(ExitCode.INPUT)
    assert CliRunner().invoke(main, ["worker", "--job", str(tmp_path)]).exit_code == 2  # click


def test_job_file_through_a_symlink_is_read_but_outputs_stay_in_output_dir(tmp_path):
    real = tmp_path / "real.json"
    real.write_text(json.dumps(valid_job(tmp_path / "out")))
    link = tmp_path / "elsewhere" / "link.json"
    link.parent.mkdir()
    link.symlink_to(real)
    job_input = read_job_input(link)
    assert job_input.output_file.parent == tmp_path / "out"


def test_job_names_with_separators_are_flattened_into_one_file_name(tmp_path):
    data = valid_job(tmp_path / "out")
    data["job"]["campaign_id"] = "../../../../tmp/evil"
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(data))
    job_input = read_job_input(job_file)
    assert job_input.output_file.parent == tmp_path / "out"
    assert job_input.report_file.parent == tmp_path / "out"
    assert os.sep not in job_input.output_file.name


@pytest.mark.slow
def test_a_symlink_planted_at_the_workers_temporary_names_is_not_followed(tmp_path):
    """Someone with write access to the output directory plants symlinks where the
    worker writes its temporary output and report: the victim files stay untouched."""
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    job_input = JobInput.model_validate(valid_job(output_dir))
    victims = []
    for name in (
        f".{job_input.output_file.name}.attempt1.tmp",
        f".{job_input.report_file.name}.tmp",
    ):
        victim = tmp_path / f"victim-{len(victims)}"
        victim.write_text("precious")
        (output_dir / name).symlink_to(victim)
        victims.append(victim)
    job_file = tmp_path / "job.json"
    job_file.write_text(job_input.model_dump_json())
    # A real worker process: run in this test process, its memory check would read the peak
    # of the whole test session (2 GB late in a full run) against the job's 2000 MB.
    result = subprocess.run(
        [sys.executable, "-m", "smartbkg_prod.cli", "worker", "--job", str(job_file)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert [victim.read_text() for victim in victims] == ["precious", "precious"]
    assert job_input.report_file.is_file() and not job_input.report_file.is_symlink()
    assert job_input.output_file.is_file() and not job_input.output_file.is_symlink()


@pytest.mark.parametrize("attempt", [0, -1, "1; rm -rf /"])
def test_invalid_attempt_numbers_are_config_errors(attempt, tmp_path):
    data = copy.deepcopy(valid_job(tmp_path / "out"))
    data["attempt"] = attempt
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(data))
    assert run_cli_worker(job_file).exit_code == int(ExitCode.CONFIG)


def test_an_output_dir_with_a_nul_byte_is_a_config_error_not_a_traceback(tmp_path):
    data = valid_job(tmp_path / "out")
    data["output_dir"] = str(tmp_path / "o\x00ut")
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(data))
    result = run_cli_worker(job_file)
    assert result.exit_code == int(ExitCode.CONFIG) and "NUL" in result.output


def plant(tmp: Path, victim: Path) -> None:
    victim.write_text("precious")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.symlink_to(victim)


def test_job_lists_are_not_written_through_a_planted_symlink(tmp_path):
    from smartbkg_prod.plan import write_job_list

    job_list = tmp_path / "jobs" / "list.jsonl"
    plant(job_list.with_name(f".{job_list.name}.tmp"), tmp_path / "victim")
    inputs = [
        JobInput(job=job, campaign=CAMPAIGN, output_dir=str(tmp_path))
        for job in plan_jobs(CAMPAIGN)
    ]
    write_job_list(job_list, inputs, CAMPAIGN)
    assert (tmp_path / "victim").read_text() == "precious"
    assert read_job_input(job_list, 2).job.index == 2


def test_job_files_are_not_written_through_a_planted_symlink(tmp_path):
    from smartbkg_prod.backends.base import job_file_path, write_job_file

    job_input = JobInput(job=plan_jobs(CAMPAIGN)[0], campaign=CAMPAIGN, output_dir=str(tmp_path))
    path = job_file_path(job_input)
    plant(path.with_name(f".{path.name}.tmp"), tmp_path / "victim")
    write_job_file(job_input)
    assert (tmp_path / "victim").read_text() == "precious"
