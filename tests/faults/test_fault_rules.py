"""The drill variable itself: a malformed SMARTBKG_INJECT_FAULT stops the worker at once
with one clear line and exit CONFIG (it used to crash with a traceback and no report)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from smartbkg_prod.cli import main
from smartbkg_prod.exitcodes import ExitCode
from smartbkg_prod.faults import parse_rules
from smartbkg_prod.plan import JobInput, plan_jobs
from smartbkg_prod.spec import Campaign


@pytest.mark.parametrize(
    "text",
    ["kill@generate:job", "kill@generate:job=x", "boom@write", "raise=NOPE@write", "kill@nowhere"],
)
def test_malformed_rules_are_refused_with_the_variable_named(text, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="SMARTBKG_INJECT_FAULT"):
        parse_rules(text)
    campaign = Campaign(name="rules", process="bbbar_mixed", events=10, events_per_job=10)
    job_input = JobInput(job=plan_jobs(campaign)[0], campaign=campaign, output_dir=str(tmp_path))
    job_file = tmp_path / "job.json"
    job_file.write_text(job_input.model_dump_json())
    monkeypatch.setenv("SMARTBKG_INJECT_FAULT", text)
    result = CliRunner().invoke(main, ["worker", "--job", str(job_file)])
    assert result.exit_code == int(ExitCode.CONFIG)
    assert result.output.startswith("smartbkg-prod worker: SMARTBKG_INJECT_FAULT: ")
    assert "Traceback" not in result.output


def test_well_formed_rules_parse():
    rules = parse_rules("kill@generate:job=1:attempt=2; exit=0@report ;raise=STAGE_OUT@write:job=3")
    assert [(r.action, r.stage, r.job, r.attempt) for r in rules] == [
        ("kill", "generate", 1, 2),
        ("exit=0", "report", None, None),
        ("raise=STAGE_OUT", "write", 3, None),
    ]
