"""The recovery policy on failures as operators meet them (issue 16): deterministic errors,
a job's own history, unknown and generic codes, failures-only exports, real notations."""

from __future__ import annotations

import json

import pytest
from failure_records import attempt

from smartbkg_prod.recovery.actions import Action
from smartbkg_prod.recovery.failures import read_failure_export
from smartbkg_prod.recovery.recommend import recommend
from smartbkg_prod.recovery.review import recommend_from_file
from smartbkg_prod.recovery.taxonomy import parse_native


def successes(n, sites=("T2_A", "T2_B", "T2_C"), start=100):
    return [attempt(start + i, sites[i % len(sites)]) for i in range(n)]


def actions(records):
    return {r.job_index: r.action for r in recommend(records)}


@pytest.mark.parametrize("exit_code", [10, 20, 30])
def test_deterministic_worker_errors_are_proposed_as_kill_on_first_sight(exit_code):
    records = successes(20) + [attempt(0, "T2_A", exit_code)]
    (recommendation,) = recommend(records)
    assert recommendation.action is Action.KILL
    assert "same on every try" in recommendation.reason


def test_single_site_campaign_failing_with_config_errors_is_killed_not_its_site_excluded():
    records = [attempt(i, "ONLY", 10) for i in range(6)]
    assert set(actions(records).values()) == {Action.KILL}


def test_a_crash_gets_one_more_try_and_a_reproduced_crash_a_kill_proposal():
    first = successes(20) + [attempt(0, "T2_A", 139, log_lines=["Segmentation fault"])]
    assert actions(first)[0] is Action.RESUBMIT
    twice = [*first, attempt(0, "T2_B", 139, attempt=2)]
    assert actions(twice)[0] is Action.KILL


def test_out_of_memory_again_after_a_raise_is_split_not_a_third_try():
    first = attempt(0, exit_code=50, memory_used_mb=2050, memory_requested_mb=2000)
    plain_retry = attempt(0, exit_code=50, attempt=2, memory_used_mb=2050, memory_requested_mb=2000)
    assert actions([*successes(10), first, plain_retry])[0] is Action.RESUBMIT_MORE_MEMORY
    raised = attempt(0, exit_code=50, attempt=2, memory_used_mb=3050, memory_requested_mb=3000)
    assert actions([*successes(10), first, raised])[0] is Action.SPLIT_JOB


def test_stage_out_twice_at_the_same_site_moves_the_job_elsewhere():
    records = successes(20) + [
        attempt(0, "T2_A", native="pilot:1137"), attempt(0, "T2_A", native="pilot:1137", attempt=2)
    ]  # fmt: skip
    assert actions(records)[0] is Action.EXCLUDE_SITE


def test_a_widespread_preemption_code_is_resubmitted_never_killed():
    records = successes(10) + [
        attempt(i, ("T2_A", "T2_B", "T2_C")[i % 3], native="pilot:1379") for i in range(20)
    ]
    assert set(actions(records).values()) == {Action.RESUBMIT}


def test_an_unknown_widespread_code_is_not_taken_for_permanent():
    records = successes(5) + [
        attempt(i, ("T2_A", "T2_B")[i % 2], native="pilot:1999") for i in range(20)
    ]
    assert set(actions(records).values()) == {Action.RESUBMIT}
    # ... and a code whose retries succeed elsewhere stays a resubmit on a repeat
    retried = records + [attempt(i, "T2_C", attempt=2) for i in range(1, 10)]
    retried += [attempt(0, "T2_C", native="pilot:1999", attempt=2)]
    assert actions(retried)[0] is Action.RESUBMIT


def test_an_unknown_code_repeated_across_sites_is_an_incident_not_a_kill():
    sites = ("T2_A", "T2_B", "T2_C")
    records = [attempt(i, sites[i % 3], native="pilot:1999") for i in range(12)]
    records += [attempt(i, sites[(i + 1) % 3], native="pilot:1999", attempt=2) for i in range(12)]
    assert set(actions(records).values()) == {Action.RESUBMIT}


def test_an_input_transfer_hold_for_a_missing_file_is_an_input_failure():
    record = attempt(0, native="HoldReasonCode=13/2")
    assert (record.category, record.transient) == ("input", False)
    assert attempt(0, native="HoldReasonCode=13/110").transient


def test_a_policy_hold_whose_text_states_memory_use_gets_more_memory():
    hold = attempt(0, native="HoldReasonCode=26", log_lines=["The job used 6144 of 4096 MB"])
    (recommendation,) = recommend(successes(10) + [hold])
    assert recommendation.action is Action.RESUBMIT_MORE_MEMORY
    assert recommendation.changes.memory_mb >= 6144


def test_a_memory_kill_with_unknown_progress_far_above_the_request_is_split():
    record = attempt(0, native="pilot:1212", memory_used_mb=9000, memory_requested_mb=3000,
                     n_events=1000)  # fmt: skip
    assert record.progress is None
    assert actions(successes(10) + [record])[0] is Action.SPLIT_JOB


def test_slurm_cancelled_reads_slurmstepds_reason():
    line = (
        "slurmstepd: error: *** JOB 77 ON n1 CANCELLED AT 2024-01-01T00:00:00 DUE TO TIME LIMIT ***"
    )
    record = attempt(0, native="slurm:CANCELLED by 0", log_lines=[line],
                     walltime_used_s=3600, walltime_requested_s=3600)  # fmt: skip
    assert actions(successes(10) + [record])[0] is Action.RESUBMIT_MORE_WALLTIME


@pytest.mark.parametrize(
    ("text", "token", "rest"),
    [
        ("slurm:CANCELLED by 0", "slurm:CANCELLED", ""),
        ("slurm:FAILED 0:9", "slurm:FAILED/137", ""),
        ("slurm:FAILED/1", "slurm:FAILED/1", ""),
        ("HoldReasonCode=26/0 memory usage exceeded", "htcondor:26/0", "memory usage exceeded"),
        ("HoldReasonCode = 34, HoldReasonSubCode = 102", "htcondor:34/102", ""),
        ("pilot:1379", "pilot:1379", ""),
        ("pilotErrorCode=1213", "pilot:1213", ""),
        ("signal:SIGKILL", "signal:9", ""),
        ("137", "signal:9", ""),
    ],
)
def test_native_codes_in_the_engines_own_notation(text, token, rest):
    code, text_left = parse_native(text)
    assert (code.token, text_left) == (token, rest)


def write_lines(path, rows):
    path.write_text(
        "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)
    )
    return path


def test_a_crash_on_many_jobs_at_several_sites_is_a_bug_even_in_a_failures_only_export():
    records = [attempt(i, ("T2_A", "T2_B")[i % 2], 139) for i in range(6)]
    assert set(actions(records).values()) == {Action.KILL}
    assert set(actions(records[:3]).values()) == {Action.RESUBMIT}


def test_failures_only_export_warns_and_does_not_exclude_a_site(tmp_path):
    rows = [
        {"campaign_id": "x", "job_index": i, "site": "T2_A", "native_code": "pilot:1137"}
        for i in range(3)
    ] + [{"campaign_id": "x", "job_index": 3, "site": "T2_B", "native_code": "pilot:1379"}]
    result = recommend_from_file(None, write_lines(tmp_path / "f.jsonl", rows))
    assert {r.action for r in result.recommendations} == {Action.RESUBMIT}
    assert any("no successful attempt" in w for w in result.warnings)


def test_partial_lines_extra_keys_and_unreadable_codes_are_read(tmp_path):
    rows = [
        {"job_index": 0, "site": "A", "exit_code": 0, "GlobalJobId": "x#1"},
        {"job_index": 1, "site": "A", "native_code": "lsf:TERM_MEMLIMIT"},
        {"job_index": 2, "site": "A", "native_code": "HoldReasonCode=26",
         "HoldReason": "Job has gone over cgroup memory limit of 4096 megabytes. "
                       "Last measured usage: 6144 megabytes."},
        '{"job_index": 3, "native_code": "slurm:CANCELLED by 0"',
    ]  # fmt: skip
    export = read_failure_export(write_lines(tmp_path / "p.jsonl", rows))
    assert [r.job_index for r in export.records] == [0, 1, 2]
    assert export.records[1].failed and export.records[1].failure_code.token == "lsf:TERM_MEMLIMIT"
    assert export.records[2].memory_ratio == pytest.approx(1.5)
    assert export.records[2].category == "memory"
    assert any(":4: not valid JSON" in w and "line skipped" in w for w in export.warnings)
    assert any(":2: native_code" in w for w in export.warnings)


def test_missing_progress_stays_unknown(tmp_path):
    rows = [{"campaign_id": "c", "job_index": 0, "n_events": 100, "exit_code": 50}]
    (record,) = read_failure_export(write_lines(tmp_path / "m.jsonl", rows)).records
    assert record.events_processed is None and record.progress is None


def test_rates_come_from_the_stores_campaign_when_it_holds_it(tmp_path):
    from smartbkg_prod.plan import plan_jobs
    from smartbkg_prod.spec import Campaign
    from smartbkg_prod.store import Store

    store = Store(f"sqlite:///{tmp_path / 'jobs.db'}")
    campaign = Campaign(name="ctx", process="bbbar_mixed", events=2000, events_per_job=200)
    jobs = plan_jobs(campaign)
    store.campaigns.register(campaign, jobs, output_dir=tmp_path / "out")
    for job in jobs[1:]:
        number = store.attempts.start(job, "local", site="T2_A", memory_mb=2000, walltime_s=3600)
        store.attempts.finish(campaign.campaign_id, job.index, number, 0, "success", final=True)
    rows = [{"campaign_id": campaign.campaign_id, "job_index": 0, "site": "T2_A",
             "native_code": "pilot:1137"}]  # fmt: skip
    result = recommend_from_file(store, write_lines(tmp_path / "one.jsonl", rows))
    (recommendation,) = result.recommendations
    assert result.warnings == []
    assert recommendation.features["site_attempts"] == 10
    assert recommendation.features["site_failure_rate"] == pytest.approx(0.1)


def test_the_shipped_corpus_covers_four_engines_and_the_rules_pass_it():
    from smartbkg_prod.recovery.cases import CORPUS, evaluate_corpus

    result = evaluate_corpus(path=CORPUS)
    assert result.n_cases >= 60 and set(result.cases_per_engine) == {
        "local", "slurm", "htcondor", "panda"
    }  # fmt: skip
    assert result.rules.evaluation.accuracy >= 0.9
    assert result.rules.evaluation.macro_recall >= 0.85
    assert result.model is None and result.fallback == ""


def test_held_out_corpus_scores_the_rules_at_90_percent_or_more():
    from smartbkg_prod.recovery.cases import HELDOUT, evaluate_corpus

    result = evaluate_corpus(path=HELDOUT)
    assert result.n_cases >= 30
    assert result.rules.evaluation.accuracy >= 0.9, [w.case for w in result.rules.wrong]


def test_a_classifier_below_the_rules_on_the_corpus_leaves_decisions_to_them(tmp_path):
    from click.testing import CliRunner

    from smartbkg_prod.cli.recover import recover
    from smartbkg_prod.recovery.cases import HELDOUT as CORPUS
    from smartbkg_prod.recovery.classifier import ActionClassifier
    from smartbkg_prod.recovery.records import save_model
    from smartbkg_prod.store import Store

    db = f"sqlite:///{tmp_path / 'jobs.db'}"
    # Labels that contradict every operator: "resubmit" for memory, "split" for the rest.
    rows = [{"category=memory": 1.0}, {"category=storage": 1.0}] * 30
    model = ActionClassifier(n_estimators=5).fit(rows, ["resubmit", "split_job"] * 30)
    blob = model.to_bytes()
    save_model(Store(db), blob, ActionClassifier.digest(blob), model.n_labels, {})
    runner = CliRunner()
    result = runner.invoke(recover, ["evaluate", "--cases", str(CORPUS), "--db", db])
    assert result.exit_code == 0, result.output
    assert "the rules decide:" in result.output and "alone" in result.output
    rows = [{"campaign_id": "x", "job_index": 0, "site": "A", "native_code": "pilot:1379"}]
    path = write_lines(tmp_path / "one.jsonl", rows)
    recommended = json.loads(
        runner.invoke(recover, ["recommend", "--reports", str(path), "--json", "--db", db]).stdout
    )
    assert recommended[0]["decided_by"] == "rules" and "rules decide:" in recommended[0]["reason"]


def test_engine_keys_stand_in_for_a_missing_native_code(tmp_path):
    rows = [
        {"job_index": 0, "HoldReasonCode": 34, "HoldReasonSubCode": 102},
        {"job_index": 1, "pilotErrorCode": 1379, "pilotErrorDiag": "Job was preempted"},
        {"job_index": 2, "State": "CANCELLED by 0", "ExitCode": "0:15"},
        {"job_index": 3, "State": "COMPLETED", "ExitCode": "0:0"},
    ]
    export = read_failure_export(write_lines(tmp_path / "keys.jsonl", rows))
    assert [r.failure_code.token for r in export.records] == [
        "htcondor:34/102", "pilot:1379", "slurm:CANCELLED/143", "worker:0"
    ]  # fmt: skip
    assert not export.records[3].failed


def test_zero_based_attempts_and_engine_exit_keys_are_read(tmp_path):
    rows = [
        {"job_index": 0, "attemptNr": 0, "pilotErrorCode": 1137},
        {"job_index": 0, "attemptNr": 1, "exeErrorCode": 139},
        {"job_index": 1, "attempt": 0, "ExitBySignal": True, "ExitSignal": 9},
    ]
    records = read_failure_export(write_lines(tmp_path / "zero.jsonl", rows)).records
    assert [(r.job_index, r.attempt, r.failure_code.token) for r in records] == [
        (0, 1, "pilot:1137"), (0, 2, "signal:11"), (1, 1, "signal:9")
    ]  # fmt: skip
