"""Stages behind one interface: built-ins, external commands, plugins, spec sections.

External stages run as real processes: `smartbkg-prod stage simulate|skim` (the built-in
chain on files) must give the in-process arrays exactly; a misbehaving command (a fake,
tests/stage_commands/misbehaving_stage.py) gives each failure its exit code.
"""

from __future__ import annotations

import json
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from smartbkg_prod.errors import SpecError
from smartbkg_prod.exitcodes import ExitCode
from smartbkg_prod.plan import JobInput, plan_jobs
from smartbkg_prod.spec import Campaign, load_campaign, parse_campaign
from smartbkg_prod.stages import StageError, StageJob
from smartbkg_prod.stages.chain import build_chain

REPO = Path(__file__).resolve().parents[1]
MISBEHAVING = REPO / "tests" / "stage_commands" / "misbehaving_stage.py"
STAGE_SIMULATE = (
    "smartbkg-prod stage simulate --input {input} --output {output} --seed {seed} --config {config}"
)


def campaign(**stages) -> Campaign:
    return Campaign(
        name="stages", process="bbbar_generic", events=300, events_per_job=300, stages=stages
    )


@pytest.fixture
def job(tmp_path) -> StageJob:
    return StageJob(
        campaign="stages",
        job_index=0,
        attempt=1,
        first_event=0,
        n_events=300,
        seed=4242,
        workdir=tmp_path / "work",
        memory_limit_mb=4000,
    )


@pytest.fixture
def particles(job):
    return build_chain(campaign()).generation.generate(job)


def assert_same_arrays(ours, theirs) -> None:
    for field in fields(ours):
        a, b = getattr(ours, field.name), getattr(theirs, field.name)
        if isinstance(a, dict):
            for name, values in a.items():
                assert np.array_equal(values, b[name], equal_nan=values.dtype.kind == "f"), name
            continue
        assert a.dtype == b.dtype, field.name
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), field.name


@pytest.mark.parametrize(
    "stages",
    [
        {
            "simulation": {"name": "external", "command": STAGE_SIMULATE + " --skim"},
            "skim": {"name": "in_simulation"},
        },
        {
            "simulation": {"name": "external", "command": STAGE_SIMULATE},
            "skim": {
                "name": "external",
                "command": "smartbkg-prod stage skim --input {input} --output {output} "
                "--config {config}",
            },
        },
    ],
    ids=["simulation-and-skim-in-one-command", "simulation-then-skim-commands"],
)
def test_builtin_chain_as_external_commands_gives_identical_arrays(job, particles, stages):
    builtin = build_chain(campaign())
    reference = builtin.simulation.simulate(particles, job)
    reference_skim = builtin.skim.skim(particles, reference, job)
    external = build_chain(campaign(**stages))
    simulated = external.simulation.simulate(particles, job)
    assert_same_arrays(reference.reco, simulated.reco)
    assert_same_arrays(reference_skim, external.skim.skim(particles, simulated, job))
    assert reference_skim.passed.any()


def misbehaving(mode: str, **extra) -> dict:
    command = [sys.executable, str(MISBEHAVING), mode, "{input}", "{output}", "{seed}", "{attempt}"]
    return {
        "simulation": {"name": "external", "command": command, **extra},
        "skim": {"name": "in_simulation"},
    }


@pytest.mark.parametrize(
    ("mode", "exit_code", "message"),
    [
        ("exit3", ExitCode.SIMULATION, "exited with code 3; stderr ends: .*geometry overlap"),
        ("segv", ExitCode.SIMULATION, "killed by signal SIGSEGV"),
        ("drop-last", ExitCode.OUTPUT_VALIDATION, "has 299 events, expected 300"),
        ("garbage", ExitCode.OUTPUT_VALIDATION, "not a readable ROOT file"),
        ("nothing", ExitCode.OUTPUT_VALIDATION, "the stage wrote no output file"),
    ],
)
def test_misbehaving_external_stage_gives_its_exit_code(job, particles, mode, exit_code, message):
    chain = build_chain(campaign(**misbehaving(mode)))
    with pytest.raises(StageError, match=message) as raised:
        chain.simulation.simulate(particles, job)
    assert raised.value.exit_code == exit_code
    assert str(raised.value).startswith("stage simulation: ")
    assert "eyJhbGciOiJSUzI1NiJ9" not in str(raised.value)


def test_hanging_external_stage_is_killed_at_its_timeout(job, particles):
    chain = build_chain(campaign(**misbehaving("hang", timeout_s=2)))
    with pytest.raises(StageError, match="ran past its timeout of 2 s") as raised:
        chain.simulation.simulate(particles, job)
    assert raised.value.exit_code == ExitCode.WALLTIME


def test_missing_program_is_a_simulation_error(job, particles):
    stages = {"simulation": {"name": "external", "command": "no-such-simulator {input} {output}"}}
    with pytest.raises(StageError, match="cannot start 'no-such-simulator'") as raised:
        build_chain(campaign(**stages)).simulation.simulate(particles, job)
    assert raised.value.exit_code == ExitCode.SIMULATION


def test_unknown_plugin_is_a_config_error_naming_the_field():
    with pytest.raises(
        StageError, match="stages.simulation.name: no stage named 'geant5'"
    ) as raised:
        build_chain(campaign(simulation={"name": "geant5"}))
    assert raised.value.exit_code == ExitCode.CONFIG


@pytest.mark.parametrize(
    ("stages", "problem"),
    [
        ({"simulation": {"name": "external"}}, "needs a command"),
        (
            {"simulation": {"name": "external", "command": "sim {inptu}"}},
            "unknown placeholder {inptu}",
        ),
        (
            {"simulation": {"command": "sim {input}"}},
            "command and timeout_s are for name: external",
        ),
        ({"simulation": {"options": {"a": 1}}}, "options are for plugin stages"),
        ({"skim": {"name": "in_simulation"}}, "the simulation must be external or a plugin"),
        ({"generation": {"name": "files"}}, "needs files"),
        ({"generation": {"name": "files", "files": ["a.lhe"]}}, "neither HepMC3 nor ROOT"),
        ({"generation": {"name": "external", "command": "gen"}}, "generation cannot be 'external'"),
    ],
)
def test_bad_stages_sections_are_spec_errors(stages, problem):
    data = {"name": "s", "process": "bbbar_generic", "events": 10, "events_per_job": 10}
    with pytest.raises(SpecError, match="stages") as raised:
        parse_campaign({**data, "stages": stages}, "spec.yaml")
    assert problem in str(raised.value)


def test_default_stages_do_not_change_campaign_ids():
    # Pinned before the stages section existed (issue 18): ids of stored campaigns stay.
    assert load_campaign(REPO / "job_specs" / "demo.yaml").campaign_id == "demo-9d01d0d905be"
    plain = campaign()
    explicit = campaign(generation={"name": "builtin"}, simulation={}, skim={"name": "builtin"})
    assert plain.campaign_id == explicit.campaign_id
    assert "stages" not in plain.normalized()
    # Job files of the built-in chain stay readable by workers from before stages existed.
    job_file = JobInput(job=plan_jobs(plain)[0], campaign=plain, output_dir="out")
    assert "stages" not in json.loads(job_file.model_dump_json())["campaign"]
    other = campaign(**misbehaving("exit3"))
    assert other.campaign_id != plain.campaign_id and "stages" in other.normalized()


def test_shipped_external_spec_is_valid():
    spec = load_campaign(REPO / "job_specs" / "external_sim.yaml")
    assert spec.stages.simulation.command[:3] == ["smartbkg-prod", "stage", "simulate"]
    assert (spec.n_jobs, spec.events_per_job) == (2, 500)


def test_validate_finds_missing_plugins_and_short_input_files(tmp_path):
    from click.testing import CliRunner

    from smartbkg_prod.cli import main

    base = "name: v\nprocess: bbbar_generic\nevents: 100\nevents_per_job: 50\nstages:\n"
    plugin = tmp_path / "plugin.yaml"
    plugin.write_text(base + "  simulation: {name: geant5}\n")
    files = tmp_path / "files.yaml"
    files.write_text(base + f"  generation: {{name: files, files: [{tmp_path / 'none.hepmc3'}]}}\n")
    result = CliRunner().invoke(main, ["validate", str(plugin), str(files)])
    assert result.exit_code == 2
    assert f"{plugin}: stages.simulation.name: no stage named 'geant5'" in result.output
    assert f"{files}: stages.generation.files: cannot read {tmp_path / 'none.hepmc3'}" in (
        result.output
    )


def test_external_command_dies_with_a_killed_worker(tmp_path):
    # A backend kills the worker's process group; the command runs in its own session,
    # so the kernel must take it down with the worker (PR_SET_PDEATHSIG).
    import os
    import signal
    import subprocess
    import time

    script = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
from pathlib import Path
from smartbkg_prod.stages import StageJob
from smartbkg_prod.stages.chain import build_chain
from smartbkg_prod.spec import Campaign
campaign = Campaign(name="s", process="bbbar_generic", events=5, events_per_job=5,
                    stages={misbehaving("hang")!r})
job = StageJob("s", 0, 1, 0, 5, 1, Path({str(tmp_path / "work")!r}))
chain = build_chain(campaign)
chain.simulation.simulate(chain.generation.generate(job), job)
"""
    worker = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    stderr = tmp_path / "work" / "simulation.stderr"
    deadline = time.monotonic() + 120
    while "pid" not in (stderr.read_text() if stderr.exists() else ""):
        assert time.monotonic() < deadline and worker.poll() is None
        time.sleep(0.1)
    command_pid = int(stderr.read_text().split("pid ")[1].split()[0])
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(command_pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(command_pid, signal.SIGKILL)
    pytest.fail("the external command outlived its killed worker")
