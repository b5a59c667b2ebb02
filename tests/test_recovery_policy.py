"""Features, rules, classifier and simulator: the recovery policy without a database."""

from __future__ import annotations

import pytest

from benchmarks.recovery_simulator import SimulatorConfig, simulate
from smartbkg_prod.recovery.actions import Action, retry_changes
from smartbkg_prod.recovery.classifier import ActionClassifier, evaluate
from smartbkg_prod.recovery.failures import FailureRecord, latest_failures
from smartbkg_prod.recovery.features import failure_features
from smartbkg_prod.recovery.recommend import recommend
from smartbkg_prod.recovery.retry_policy import next_step
from smartbkg_prod.recovery.rules import decide
from smartbkg_prod.spec import Resources, RetryPolicy


def attempt(job, site, exit_code=0, attempt=1, campaign="c1", **fields):
    return FailureRecord(
        campaign_id=campaign,
        job_index=job,
        attempt=attempt,
        site=site,
        exit_code=exit_code,
        **fields,
    )


def labelled(config):
    history = simulate(config)
    targets = latest_failures(history.records)
    by_job = {(label.campaign_id, label.job_index): label for label in history.labels}
    return failure_features(history.records, targets), [
        by_job[(t.campaign_id, t.job_index)] for t in targets
    ]


def test_features_count_codes_per_site_and_site_failure_rates():
    records = [attempt(i, "BAD", exit_code=60) for i in range(4)]
    records += [attempt(i, "GOOD") for i in range(4, 10)]
    records += [attempt(10, "GOOD", exit_code=60)]
    rows = failure_features(records)
    bad = rows[0]
    assert len(rows) == 5
    assert bad["site_failure_rate"] == 1.0
    assert bad["site_code_failures"] == 4
    assert bad["site_code_share"] == pytest.approx(0.8)
    assert bad["other_sites_code_rate"] == pytest.approx(1 / 7)
    assert bad["code_sites"] == 2
    assert bad["code=worker:60"] == 1.0 and bad["category=storage"] == 1.0


def test_features_follow_a_job_across_attempts_and_read_log_keywords():
    records = [
        attempt(0, "A", exit_code=139, attempt=1),
        attempt(0, "B", exit_code=139, attempt=2, log_lines=["Segmentation fault (core dumped)"]),
    ]
    (row,) = failure_features(records)
    assert row["attempt"] == 2 and row["job_failed_attempts"] == 2
    assert row["job_sites"] == 2 and row["job_same_code"] == 2
    assert row["log=crash"] == 1.0


def test_projected_need_extrapolates_from_progress():
    record = attempt(
        0,
        "A",
        exit_code=50,
        memory_used_mb=2000,
        memory_requested_mb=2000,
        n_events=1000,
        events_processed=400,
    )
    assert record.projected_memory_ratio == pytest.approx(2.5)


@pytest.mark.parametrize(
    ("row", "action"),
    [
        ({"category=memory": 1, "projected_memory_ratio": 1.2}, Action.RESUBMIT_MORE_MEMORY),
        ({"category=memory": 1, "projected_memory_ratio": 3.5, "progress": 0.3}, Action.SPLIT_JOB),
        ({"category=memory": 1, "projected_memory_ratio": 3.5, "progress": 0.0}, Action.RESUBMIT_MORE_MEMORY),
        ({"category=walltime": 1, "projected_walltime_ratio": 1.5}, Action.RESUBMIT_MORE_WALLTIME),
        ({"category=walltime": 1, "projected_walltime_ratio": 6}, Action.SPLIT_JOB),
        ({"category=storage": 1, "transient": 1, "site_code_failures": 1}, Action.RESUBMIT),
        (
            {"category=storage": 1, "transient": 1, "site_code_failures": 6, "site_code_share": 0.9,
             "site_failure_rate": 0.7},
            Action.EXCLUDE_SITE,
        ),
        (
            {"category=software": 1, "transient": 0, "code_job_fraction": 0.5, "code_sites": 4},
            Action.KILL,
        ),
        ({"category=software": 1, "transient": 0, "code_job_fraction": 0.02, "code_sites": 1}, Action.RESUBMIT),
    ],
)  # fmt: skip
def test_rules_give_the_operator_default(row, action):
    assert decide(row).action is action


def test_retry_changes_are_concrete():
    record = attempt(
        3, "T2_X", exit_code=51, memory_used_mb=2100, memory_requested_mb=2000,
        walltime_used_s=3600, walltime_requested_s=3600, n_events=1000, events_processed=250,
    )  # fmt: skip
    assert retry_changes(Action.RESUBMIT_MORE_MEMORY, record).memory_mb == 6000  # capped at x3
    assert retry_changes(Action.RESUBMIT_MORE_WALLTIME, record).walltime_s == 14400  # x4 cap
    assert retry_changes(Action.SPLIT_JOB, record).split_into == 6  # 4.2x memory, +20%
    assert retry_changes(Action.EXCLUDE_SITE, record).exclude_sites == ["T2_X"]
    assert retry_changes(Action.RESUBMIT, record).model_dump(exclude_defaults=True) == {}


def test_recommendation_names_code_site_and_changes():
    records = [attempt(0, "T2_DE_DESY", exit_code=0, native_source="htcondor", native_code=34,
                       native_subcode=102, memory_used_mb=2040, memory_requested_mb=2000)]  # fmt: skip
    (recommendation,) = recommend(records)
    assert recommendation.action is Action.RESUBMIT_MORE_MEMORY
    assert "htcondor:34/102" in recommendation.reason and "T2_DE_DESY" in recommendation.reason
    assert recommendation.changes.memory_mb == 3000
    assert recommendation.decided_by == "rules"


def test_simulator_is_deterministic_imbalanced_and_noisy():
    config = SimulatorConfig(n_campaigns=150, seed=3, label_noise=0.2)
    first, second = simulate(config), simulate(config)
    assert first == second
    balance = first.class_balance()
    assert max(balance, key=balance.get) == "resubmit" and balance["resubmit"] > 0.5
    flipped = sum(label.operator_action != label.true_action for label in first.labels)
    assert 0.1 < flipped / len(first.labels) < 0.3
    assert simulate(SimulatorConfig(n_campaigns=150, seed=4)) != first


def test_classifier_trained_on_noisy_labels_beats_majority_and_rules():
    train_rows, train_labels = labelled(SimulatorConfig(n_campaigns=300, seed=11, label_noise=0.2))
    test_rows, test_labels = labelled(SimulatorConfig(n_campaigns=300, seed=12))
    model = ActionClassifier(n_estimators=100).fit(
        train_rows, [label.operator_action for label in train_labels]
    )
    truth = [label.true_action for label in test_labels]
    predicted, confidence = model.predict(test_rows)
    learned = evaluate(truth, predicted)
    majority = evaluate(truth, [Action.RESUBMIT] * len(truth))
    rules = evaluate(truth, [decide(row).action for row in test_rows])
    assert learned.accuracy > majority.accuracy
    assert learned.macro_recall > majority.macro_recall + 0.5
    assert learned.macro_recall >= rules.macro_recall - 0.02
    assert ((confidence > 0) & (confidence <= 1)).all()


def test_model_replaces_rules_only_with_enough_labels():
    records = [attempt(0, "A", exit_code=60)]
    rows = [{"category=storage": 1.0}, {"category=memory": 1.0}] * 5
    labels = ["resubmit_more_walltime", "resubmit"] * 5
    small = ActionClassifier(n_estimators=5).fit(rows, labels)
    (recommendation,) = recommend(records, small, "model:x")
    assert recommendation.decided_by == "rules"  # 10 labels < MIN_LABELS
    big = ActionClassifier(n_estimators=5).fit(rows * 10, labels * 10)
    (recommendation,) = recommend(records, big, "model:x")
    assert recommendation.decided_by == "model:x"
    assert recommendation.action is Action.RESUBMIT_MORE_WALLTIME
    (recommendation,) = recommend(records, big, "model:x", fallback="below the rules")
    assert recommendation.decided_by == "rules" and "below the rules" in recommendation.reason


def test_a_models_kill_proposal_stands_but_is_never_applied_by_the_retry_policy():
    # Issue 23: guard rails are for safety only; a confident kill proposal is the model's.
    records = [attempt(0, "A", exit_code=60)] + [attempt(i, "B") for i in range(1, 5)]
    rows = [{"category=storage": 1.0}, {"category=memory": 1.0}] * 50
    model = ActionClassifier(n_estimators=5).fit(rows, ["kill", "resubmit"] * 50)
    (recommendation,) = recommend(records, model, "model:x")
    assert recommendation.action is Action.KILL and recommendation.decided_by == "model:x"
    step = next_step(recommendation, RetryPolicy(), Resources(), attempts=1, sites=["A", "B"])
    assert step.verdict == "review" and step.action is Action.KILL


def test_a_model_never_excludes_the_only_site():
    records = [attempt(0, "ONLY", exit_code=60)] + [attempt(i, "ONLY") for i in range(1, 5)]
    rows = [{"category=storage": 1.0}, {"category=memory": 1.0}] * 50
    model = ActionClassifier(n_estimators=5).fit(rows, ["exclude_site", "resubmit"] * 50)
    (recommendation,) = recommend(records, model, "model:x")
    assert recommendation.action is not Action.EXCLUDE_SITE
    assert "the only site is never excluded" in recommendation.reason
