"""`recover` commands through click, on a real SQLite database."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from smartbkg_prod.cli.recover import recover
from smartbkg_prod.plan import plan_jobs
from smartbkg_prod.recovery.failures import write_failure_lines
from smartbkg_prod.report import JobReport
from smartbkg_prod.spec import Campaign


def report(index, exit_code, site="T2_US_MIT", campaign_id="export-1", **fields):
    now = time.time()
    values = dict(
        campaign_id=campaign_id, campaign_name="export", job_index=index, attempt=1,
        first_event=index * 100, n_events=100, seed=index + 1, site=site, started_at=now - 5,
        finished_at=now, wall_seconds=5, cpu_seconds=5, exit_code=exit_code,
        error_class="success" if exit_code == 0 else "failed", memory_requested_mb=2000,
    )  # fmt: skip
    values.update(fields)
    return JobReport(**values)


@pytest.fixture
def db(tmp_path):
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture
def reports_file(tmp_path):
    path = tmp_path / "history.jsonl"
    write_failure_lines(
        [
            (report(0, 0), None),
            (report(1, 0, peak_rss_mb=2100, events_generated=80), "HoldReasonCode=34/102"),
            (report(2, 0), "slurm:NODE_FAIL"),
            (report(3, 60, log_tail=["stage-out failed: No space left on device"]), None),
        ],
        path,
    )
    return path


@pytest.fixture
def failed_store(db, tmp_path):
    """A campaign with two failed jobs, recorded as the driver would."""
    from smartbkg_prod.store import Store

    store = Store(db)
    campaign = Campaign(name="cli", process="bbbar_mixed", events=400, events_per_job=200)
    store.campaigns.register(campaign, plan_jobs(campaign), output_dir=tmp_path / "out")
    for job in plan_jobs(campaign):
        attempt = store.attempts.start(job, "local", site="local", memory_mb=2000, walltime_s=3600)
        store.attempts.finish(
            campaign.campaign_id,
            job.index,
            attempt,
            137,
            "signal_9",
            final=True,
            native_code="signal:9",
        )
    return db


def invoke(*args):
    result = CliRunner().invoke(recover, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def test_recommend_from_jsonl_gives_one_recommendation_per_failed_job(db, reports_file):
    result = invoke("recommend", "--reports", str(reports_file), "--json", "--db", db)
    assert result.exit_code == 0
    recommendations = {r["job_index"]: r for r in json.loads(result.output)}
    assert set(recommendations) == {1, 2, 3}
    assert recommendations[1]["failure_code"] == "htcondor:34/102"
    assert recommendations[1]["action"] == "resubmit_more_memory"
    assert recommendations[1]["changes"]["memory_mb"] == 3000
    assert recommendations[2]["action"] == "resubmit"
    assert "T2_US_MIT" in recommendations[3]["reason"]


def test_recommend_text_output_shows_the_reason(db, reports_file):
    result = invoke("recommend", "--reports", str(reports_file), "--db", db)
    assert result.exit_code == 0
    assert "slurm:NODE_FAIL -> resubmit" in result.output and "Evidence:" in result.output


def test_bad_jsonl_line_is_skipped_with_its_line_number_on_stderr(db, reports_file):
    lines = reports_file.read_text().splitlines()
    lines.insert(2, '{"campaign_id": "x", "job_index": -1}')
    lines.insert(3, "not json")
    reports_file.write_text("\n".join(lines) + "\n")
    result = invoke("recommend", "--reports", str(reports_file), "--json", "--db", db)
    assert result.exit_code == 0
    assert f"warning: {reports_file}:3: job_index" in result.stderr
    assert f"warning: {reports_file}:4: not valid JSON" in result.stderr
    assert {r["job_index"] for r in json.loads(result.stdout)} == {1, 2, 3}
    assert "Traceback" not in result.output


def test_a_file_without_one_readable_line_is_one_clear_error(db, reports_file):
    reports_file.write_text("not json\n[1, 2]\n")
    result = invoke("recommend", "--reports", str(reports_file), "--db", db)
    assert result.exit_code != 0 and f"{reports_file}:1: not valid JSON" in result.output
    assert "Traceback" not in result.output


def test_missing_reports_file_is_one_clear_line(db, tmp_path):
    result = invoke("recommend", "--reports", str(tmp_path / "nope.jsonl"), "--db", db)
    assert result.exit_code != 0 and "no such file" in result.output


def test_review_loop_list_show_accept_override_apply(failed_store):
    db = failed_store
    listed = json.loads(invoke("list", "--json", "--db", db).output)
    assert [r["failure_code"] for r in listed] == ["signal:9", "signal:9"]
    first, second = (r["id"] for r in listed)
    shown = invoke("show", str(first), "--db", db)
    assert "reason:" in shown.output and "signal:9" in shown.output
    accepted = invoke("accept", str(first), "--operator", "alice", "--db", db)
    assert accepted.exit_code == 0 and "accepted resubmit by alice" in accepted.output
    overridden = invoke(
        "override", str(second), "--action", "resubmit_more_memory", "--operator", "bob", "--db", db
    )
    assert (
        overridden.exit_code == 0 and "override -> resubmit_more_memory by bob" in overridden.output
    )
    shown = json.loads(invoke("show", str(second), "--json", "--db", db).output)
    assert shown["decision"]["operator"] == "bob" and shown["decision"]["kind"] == "override"
    assert shown["decision"]["changes"]["memory_mb"] == 3000
    applied = invoke("apply", "--json", "--db", db)
    assert [a["applied"] for a in json.loads(applied.output)] == [True, True]
    assert "nothing to apply" in invoke("apply", "--db", db).output
    assert invoke("list", "--status", "applied", "--db", db).output.count("applied") == 2


def test_bad_ids_and_actions_are_one_line_errors(failed_store):
    db = failed_store
    invoke("list", "--db", db)
    missing = invoke("accept", "999", "--operator", "x", "--db", db)
    assert missing.exit_code == 1 and "no recommendation 999" in missing.output
    assert "Traceback" not in missing.output
    bad_action = invoke("override", "1", "--action", "reboot", "--db", db)
    assert bad_action.exit_code == 2 and "reboot" in bad_action.output
    invoke("accept", "1", "--operator", "alice", "--db", db)
    twice = invoke("accept", "1", "--operator", "bob", "--db", db)
    assert twice.exit_code == 1 and "already accepted by alice" in twice.output


def test_train_and_evaluate_need_decisions(failed_store):
    db = failed_store
    result = invoke("train", "--db", db)
    assert result.exit_code == 1 and "only 0 recorded decision" in result.output
    result = invoke("evaluate", "--db", db)
    assert result.exit_code == 1 and "no recorded decisions" in result.output
    invoke("list", "--db", db)
    invoke("accept", "1", "--operator", "alice", "--db", db)
    invoke("override", "2", "--action", "exclude_site", "--operator", "bob", "--db", db)
    trained = invoke("train", "--min-labels", "2", "--db", db)
    assert trained.exit_code == 0 and "trained model:" in trained.output
    assert "exclude_site=1, resubmit=1" in trained.output
    assert "the rules keep deciding:" in trained.output  # 2 labels are below the rules' score
    evaluated = json.loads(invoke("evaluate", "--json", "--db", db).output)
    assert evaluated["n_labels"] == 2 and evaluated["rules"]["accuracy"] == 0.5


def test_matrix_counts_failures_by_code_and_site(failed_store):
    from smartbkg_prod.store import Store

    (campaign_id,) = Store(failed_store).campaigns.ids()
    matrix = json.loads(invoke("matrix", campaign_id, "--json", "--db", failed_store).output)
    assert matrix == {
        "codes": ["signal:9"], "sites": ["local"], "failures": [[2]], "attempts_per_site": [2]
    }  # fmt: skip
    assert "signal:9" in invoke("matrix", campaign_id, "--db", failed_store).output
    unknown = invoke("matrix", "nope", "--db", failed_store)
    assert unknown.exit_code == 1 and "no campaign 'nope'" in unknown.output


def test_errors_under_the_main_command_use_its_one_line_format(failed_store):
    from smartbkg_prod.cli import main

    result = CliRunner().invoke(main, ["recover", "show", "999", "--db", failed_store])
    assert result.exit_code == 1
    assert "error: no recommendation 999" in result.output and "Traceback" not in result.output


def test_saved_offline_recommendations_are_reviewed_but_not_applied(db, reports_file):
    invoke("recommend", "--reports", str(reports_file), "--save", "--db", db)
    listed = json.loads(invoke("list", "--json", "--db", db).output)
    assert {r["job_index"] for r in listed} == {1, 2, 3}
    invoke("accept", str(listed[0]["id"]), "--operator", "alice", "--db", db)
    (result,) = json.loads(invoke("apply", "--json", "--db", db).output)
    assert not result["applied"] and "not in this database" in result["outcome"]
    assert "skipped" in invoke("list", "--status", "skipped", "--db", db).output
