"""Whole campaigns with other stages plugged in, on the local backend.

The built-in simulation and skim as an external command give the built-in chain's counts
(`status --json`, the issue's bar); a misbehaving command is retried without losing or
double-counting events; campaigns read generator-level HepMC3 and ROOT files; a plugin
installed from a separate package (tests/stage_plugin) is selected by the spec.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from pythia_hepmc import pythia_hepmc3_file
from unavailable import unavailable

from smartbkg_prod.exitcodes import ExitCode
from smartbkg_prod.physics.hepmc import read_hepmc3
from smartbkg_prod.physics.rootio import read_output
from smartbkg_prod.plan import campaign_output_dir
from smartbkg_prod.spec import Campaign
from smartbkg_prod.stages import StageError
from smartbkg_prod.stages.chain import build_chain
from smartbkg_prod.store import FAILED
from smartbkg_prod.submit import submit_campaign

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
MISBEHAVING = REPO / "tests" / "stage_commands" / "misbehaving_stage.py"
CLI = [sys.executable, "-m", "smartbkg_prod.cli"]


def run(campaign, store, **kwargs):
    return submit_campaign(campaign, store=store, poll_interval=0.05, **kwargs)


def outputs(campaign) -> list:
    return [read_output(path) for path in sorted(campaign_output_dir(campaign).glob("*.root"))]


def small(tmp_path, name="plugged", **fields) -> Campaign:
    defaults = {
        "process": "bbbar_generic",
        "events": 400,
        "events_per_job": 200,
        "seed": 31,
        "outputs": {"directory": str(tmp_path / name)},
        "backend": {"max_parallel": 2},
    }
    return Campaign(name=name, **{**defaults, **fields})


def test_external_sim_spec_gives_the_builtin_counts_in_status_json(tmp_path):
    spec = yaml.safe_load((REPO / "job_specs" / "external_sim.yaml").read_text())
    spec["outputs"]["directory"] = str(tmp_path / "out")
    builtin = {key: value for key, value in spec.items() if key != "stages"}
    paths = {}
    for label, data in (("external", spec), ("builtin", builtin)):
        paths[label] = tmp_path / f"{label}.yaml"
        paths[label].write_text(yaml.safe_dump(data))
    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    status = {}
    for label, path in paths.items():
        submitted = subprocess.run(
            [*CLI, "submit", str(path), "--db", db], capture_output=True, text=True, timeout=900
        )
        assert submitted.returncode == 0, submitted.stderr
        listed = subprocess.run(
            [*CLI, "status", "--db", db, "--json"], capture_output=True, text=True, timeout=120
        )
        [status[label]] = [
            s
            for s in json.loads(listed.stdout)
            if s["campaign_id"] not in {other["campaign_id"] for other in status.values()}
        ]
    assert status["external"]["campaign_id"] != status["builtin"]["campaign_id"]
    for key in ("events_generated", "events_simulated", "events_skimmed"):
        assert status["external"][key] == status["builtin"][key], key
    assert status["external"]["events_generated"] == 1000
    assert status["external"]["events_skimmed"] > 0
    reports = sorted((tmp_path / "out").glob(f"{status['external']['campaign_id']}/*.report.json"))
    assert len(reports) == 2
    for report in (json.loads(path.read_text()) for path in reports):
        assert report["exit_code"] == 0
        assert set(report["stage_seconds"]) >= {"generate", "simulate", "skim", "write"}
        assert report["stage_seconds"]["simulate"] > 0
    # The stage's scratch files are gone; the outputs are the usual ROOT files.
    assert not list((tmp_path / "out").glob("*/.*.stages"))


def test_failing_external_stage_is_retried_and_nothing_is_lost_or_double_counted(tmp_path, store):
    command = [
        sys.executable,
        str(MISBEHAVING),
        "flaky",
        "{input}",
        "{output}",
        "{seed}",
        "{attempt}",
    ]
    campaign = small(
        tmp_path,
        stages={
            "simulation": {"name": "external", "command": command},
            "skim": {"name": "in_simulation"},
        },
    )
    status = run(campaign, store)
    assert status.complete and status.failed_attempts == 2
    assert store.campaigns.job_attempts(campaign.campaign_id) == {0: 2, 1: 2}
    assert status.events_generated == status.events_simulated == 400
    events = np.concatenate([contents.event_number for contents in outputs(campaign)])
    assert np.array_equal(np.sort(events), np.arange(400))
    failed = [
        report for report in store.reports.of_campaign(campaign.campaign_id) if report.exit_code
    ]
    assert {(r.exit_code, r.error_class) for r in failed} == {(40, "simulation")}
    for report in failed:
        assert "stage simulation: command exited with code 3" in report.error_message
        assert any("geometry overlap" in line for line in report.log_tail)
        assert "eyJhbGciOiJSUzI1NiJ9" not in json.dumps(report.model_dump())
    builtin = small(tmp_path, name="reference")
    reference = run(builtin, store)
    assert reference.events_skimmed == status.events_skimmed


def test_stage_writing_too_few_events_fails_the_job_with_no_output(tmp_path, store):
    command = [sys.executable, str(MISBEHAVING), "drop-last", "{input}", "{output}", "{seed}", "1"]
    campaign = small(
        tmp_path,
        stages={
            "simulation": {"name": "external", "command": command},
            "skim": {"name": "in_simulation"},
        },
        retry={"max_attempts": 1},
    )
    status = run(campaign, store)
    assert not status.complete
    assert store.campaigns.job_states(campaign.campaign_id) == {0: FAILED, 1: FAILED}
    assert status.events_generated == 0
    [report, _] = store.reports.of_campaign(campaign.campaign_id)
    assert report.exit_code == ExitCode.OUTPUT_VALIDATION
    assert "stage simulation:" in report.error_message and "199 events, expected 200" in (
        report.error_message
    )
    assert not list(campaign_output_dir(campaign).glob("*.root"))


def test_campaign_from_hepmc3_files_written_by_pyhepmc_from_pythia(tmp_path, store):
    first, second = tmp_path / "a.hepmc3", tmp_path / "b.hepmc3"
    final_counts = pythia_hepmc3_file(first, 30) + pythia_hepmc3_file(second, 20)
    campaign = small(
        tmp_path,
        events=50,
        events_per_job=20,
        stages={"generation": {"name": "files", "files": [str(first), str(second)]}},
    )
    status = run(campaign, store)
    assert status.complete and status.events_generated == status.events_simulated == 50
    contents = outputs(campaign)
    assert [len(c.event_number) for c in contents] == [20, 20, 10]
    events = np.concatenate([c.event_number for c in contents])
    assert np.array_equal(events, np.arange(50))
    # Job 1 takes events 20..39: the last ten of a.hepmc3 and the first ten of b.hepmc3.
    finals = np.concatenate(
        [
            np.bincount(
                c.particles.event_index()[c.particles.status > 0], minlength=len(c.event_number)
            )
            for c in contents
        ]
    )
    assert finals.tolist() == final_counts
    assert np.array_equal(contents[1].particles.px[:5], read_hepmc3(first, 20, 21).px[:5])


def test_campaign_from_root_files_reproduces_the_generating_campaign(tmp_path, store):
    original = small(tmp_path, name="original")
    first = run(original, store)
    files = [str(path) for path in sorted(campaign_output_dir(original).glob("*.root"))]
    again = small(
        tmp_path, name="from-root", stages={"generation": {"name": "files", "files": files}}
    )
    second = run(again, store)
    assert second.complete and second.events_skimmed == first.events_skimmed
    for ours, theirs in zip(outputs(original), outputs(again), strict=True):
        assert ours.particles.equals(theirs.particles)
        assert np.array_equal(ours.passed_skim, theirs.passed_skim)


def test_files_shorter_than_the_campaign_are_an_input_error(tmp_path):
    path = tmp_path / "few.hepmc3"
    pythia_hepmc3_file(path, 5)
    campaign = small(
        tmp_path,
        events=10,
        events_per_job=10,
        stages={"generation": {"name": "files", "files": [str(path)]}},
    )
    from smartbkg_prod.stages import StageJob

    job = StageJob("plugged", 0, 1, 0, 10, 1, tmp_path / "work")
    with pytest.raises(StageError, match="hold 5 events, this job needs events 0..9") as raised:
        build_chain(campaign).generation.generate(job)
    assert raised.value.exit_code == ExitCode.INPUT


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory):
    """tests/stage_plugin pip-installed into a temporary directory (a real dist-info with
    an entry point); workers find it through PYTHONPATH."""
    work = tmp_path_factory.mktemp("plugin")
    source = work / "source"
    shutil.copytree(REPO / "tests" / "stage_plugin", source)
    target = work / "site"
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if installed.returncode != 0:
        unavailable(f"cannot build the plugin package here: {installed.stderr.strip()[-300:]}")
    return target


def test_plugin_stage_from_an_installed_package_is_selected_by_the_spec(
    installed_plugin, tmp_path, store, monkeypatch
):
    monkeypatch.syspath_prepend(str(installed_plugin))
    path = os.pathsep.join(
        filter(None, [str(installed_plugin), str(REPO), os.environ.get("PYTHONPATH")])
    )
    monkeypatch.setenv("PYTHONPATH", path)
    plugged = small(
        tmp_path,
        stages={"simulation": {"name": "tuned_detector", "options": {"track_efficiency": 0.6}}},
    )
    assert type(build_chain(plugged).simulation).__name__ == "TunedDetector"
    status = run(plugged, store)
    reference = small(tmp_path, name="reference", simulation={"track_efficiency": 0.6})
    expected = run(reference, store)
    default = run(small(tmp_path, name="default"), store)
    assert status.complete and status.events_skimmed == expected.events_skimmed
    for ours, theirs in zip(outputs(plugged), outputs(reference), strict=True):
        assert np.array_equal(ours.passed_skim, theirs.passed_skim)
    assert status.events_skimmed < default.events_skimmed  # the option reached the stage


def test_plugin_options_are_validated_by_the_plugin(installed_plugin, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(installed_plugin))
    campaign = small(
        tmp_path,
        stages={"simulation": {"name": "tuned_detector", "options": {"track_efficiency": 2}}},
    )
    with pytest.raises(StageError, match=r"stages.simulation.options.track_efficiency: ") as raised:
        build_chain(campaign)
    assert raised.value.exit_code == ExitCode.CONFIG
