"""Campaign spec validation: every bad input gives one clear line per problem."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from smartbkg_prod.cli import main
from smartbkg_prod.errors import SpecError
from smartbkg_prod.spec import Campaign, load_campaign

GOOD = {
    "name": "demo",
    "process": "bbbar_mixed",
    "events": 1000,
    "events_per_job": 250,
}


def write_spec(tmp_path: Path, data, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def with_changes(**changes):
    data = {**GOOD}
    for key, value in changes.items():
        data[key] = value
    return data


BAD_SPECS = [
    # (case, spec data or raw text, expected field path, expected words)
    ("unknown key", with_changes(evnets=5), "evnets", "unknown key"),
    ("wrong type", with_changes(events="many"), "events", "wrong type"),
    ("negative count", with_changes(events=-5), "events", "out of range"),
    ("zero count", with_changes(events_per_job=0), "events_per_job", "out of range"),
    (
        "job larger than campaign",
        with_changes(events_per_job=5000),
        "(top level)",
        "events_per_job (5000)",
    ),
    ("unknown process", with_changes(process="higgs"), "process", "allowed: 'bbbar_mixed'"),
    ("filter without model", with_changes(filter={"mode": "cut"}), "filter", "needs filter.model"),
    ("unknown filter mode", with_changes(filter={"mode": "maybe"}), "filter.mode", "allowed:"),
    (
        "control sample without a filter",
        with_changes(filter={"mode": "off", "control_fraction": 0.1}),
        "filter",
        "control_fraction needs a filter",
    ),
    (
        "control fraction above one half",
        with_changes(filter={"mode": "sample", "model": "default", "control_fraction": 0.8}),
        "filter.control_fraction",
        "0.5",
    ),
    ("nested unknown key", with_changes(resources={"cpus": 2}), "resources.cpus", "unknown key"),
    ("non-YAML file", "name: [unclosed\n", "(file)", "not valid YAML"),
    ("empty file", "", "(top level)", "empty"),
    ("YAML list instead of mapping", "- a\n- b\n", "(top level)", "expected a mapping"),
    (
        "docker without image",
        with_changes(container={"runtime": "docker"}),
        "container",
        "needs container.image",
    ),
    ("bad name", with_changes(name="../etc"), "name", "not a valid name"),
]


@pytest.mark.parametrize(
    ("case", "data", "field", "words"), BAD_SPECS, ids=[c[0] for c in BAD_SPECS]
)
def test_bad_spec_gives_one_clear_line_per_problem(tmp_path, case, data, field, words):
    path = write_spec(tmp_path, data)
    with pytest.raises(SpecError) as raised:
        load_campaign(path)
    lines = str(raised.value).splitlines()
    assert any(line.startswith(f"{path}: {field}: ") and words in line for line in lines), lines


@pytest.mark.parametrize(
    ("case", "data", "field", "words"), BAD_SPECS, ids=[c[0] for c in BAD_SPECS]
)
def test_validate_command_exits_2_without_traceback(tmp_path, case, data, field, words):
    path = write_spec(tmp_path, data)
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert f"{path}: {field}: " in result.stderr
    assert result.stdout == ""


def test_several_problems_are_all_reported(tmp_path):
    path = write_spec(tmp_path, with_changes(events=-1, process="higgs", colour="red"))
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 3


def test_missing_and_unreadable_files_are_clear_errors(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(main, ["validate", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and "no such file" in missing.stderr
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    unreadable = runner.invoke(main, ["validate", str(binary)])
    assert unreadable.exit_code == 2 and "not a text file" in unreadable.stderr
    folder = runner.invoke(main, ["validate", str(tmp_path)])
    assert folder.exit_code == 2 and "is a directory" in folder.stderr


def test_good_spec_validates_with_exit_0(tmp_path):
    result = CliRunner().invoke(main, ["validate", str(write_spec(tmp_path, GOOD))])
    assert result.exit_code == 0, result.output
    assert "ok (demo-" in result.stdout


def test_bare_yaml_off_means_filter_mode_off(tmp_path):
    path = write_spec(
        tmp_path,
        "name: a\nprocess: bbbar_mixed\nevents: 10\nevents_per_job: 5\nfilter:\n  mode: off\n",
    )
    assert load_campaign(path).filter.mode == "off"


def test_campaign_id_depends_on_physics_not_on_bookkeeping():
    base = Campaign(**GOOD)
    assert (
        base.campaign_id
        == Campaign(**GOOD, description="x", outputs={"directory": "/elsewhere"}).campaign_id
    )
    assert base.campaign_id == Campaign(**GOOD, resources={"memory_mb": 4000}).campaign_id
    assert base.campaign_id != Campaign(**{**GOOD, "seed": 1}).campaign_id
    assert base.campaign_id != Campaign(**{**GOOD, "process": "bbbar_charged"}).campaign_id


def test_shipped_example_specs_are_valid():
    specs = sorted(Path(__file__).resolve().parents[1].glob("job_specs/*.yaml"))
    assert specs
    for spec in specs:
        load_campaign(spec)
