"""Recommendations: failure records in, one reviewed-to-be action per failed job out.

The rules decide until a classifier trained on enough operator decisions is given; then
the classifier decides. Either way every recommendation names its evidence (code, site,
resource use, site and campaign rates) and the concrete :class:`RetryChanges` it implies.

>>> record = FailureRecord(campaign_id="c", job_index=0, site="T2_X", exit_code=50,
...                        memory_used_mb=2050, memory_requested_mb=2000)
>>> [r.action.value for r in recommend([record])]
['resubmit_more_memory']
"""

from __future__ import annotations

from collections.abc import Sequence

from smartbkg_prod.recovery.actions import Recommendation, retry_changes
from smartbkg_prod.recovery.classifier import MIN_LABELS, ActionClassifier
from smartbkg_prod.recovery.failures import FailureRecord, latest_failures
from smartbkg_prod.recovery.features import failure_features
from smartbkg_prod.recovery.rules import decide


def evidence(record: FailureRecord, row: dict[str, float]) -> str:
    """The facts behind a recommendation, in an operator's words."""
    info = record.info
    nature = (
        "deterministic" if info.deterministic
        else "transient" if info.transient
        else "not in the tables" if not info.known
        else "not transient"
    )  # fmt: skip
    parts = [
        f"{record.failure_code.token} {info.name} ({info.category.value}, {nature}) at {record.site}"
    ]
    if record.memory_used_mb is not None and record.memory_requested_mb:
        parts.append(f"memory {record.memory_used_mb:.0f}/{record.memory_requested_mb:.0f} MB")
    if record.walltime_used_s is not None and record.walltime_requested_s:
        parts.append(f"walltime {record.walltime_used_s:.0f}/{record.walltime_requested_s:.0f} s")
    if record.progress is not None:
        parts.append(f"stopped after {record.progress:.0%} of {record.n_events} events")
    parts.append(f"attempt {record.attempt}")
    parts.append(
        f"{row.get('site_code_failures', 0):.0f} failure(s) with this code at {record.site} "
        f"(site fails {row.get('site_failure_rate', 0):.0%} of its attempts), "
        f"code seen at {row.get('code_sites', 0):.0f} site(s) on {row.get('code_job_fraction', 0):.0%} of jobs"
    )
    return "; ".join(parts)


def recommend(
    records: Sequence[FailureRecord],
    model: ActionClassifier | None = None,
    model_name: str = "model",
    memory_mb: int | None = None,
    walltime_s: int | None = None,
) -> list[Recommendation]:
    """One recommendation per job whose last attempt failed.

    ``records`` holds every known attempt (successful ones give the sites' failure rates).
    ``model`` replaces the rules when it was trained on at least ``MIN_LABELS`` decisions.
    ``memory_mb`` / ``walltime_s``: the campaign's requests, for records that lack them.
    """
    targets = latest_failures(records)
    rows = failure_features(records, targets)
    use_model = model is not None and model.n_labels >= MIN_LABELS
    if use_model:
        actions, confidences = model.predict(rows)
    recommendations = []
    for i, (record, row) in enumerate(zip(targets, rows, strict=True)):
        rule = decide(row)
        if use_model:
            action, confidence = actions[i], float(confidences[i])
            why = f"{model_name} trained on {model.n_labels} operator decisions"
            # The rules' view stays visible: a disagreement is worth the operator's look.
            why += (
                f" (rules agree: {rule.why})"
                if rule.action is action
                else f" (rules would {rule.action.value}: {rule.why})"
            )
            decided_by = model_name
        else:
            action, confidence, why, decided_by = rule.action, rule.confidence, rule.why, "rules"
        info = record.info
        recommendations.append(
            Recommendation(
                campaign_id=record.campaign_id,
                job_index=record.job_index,
                attempt=record.attempt,
                site=record.site,
                failure_code=record.failure_code.token,
                failure_name=info.name[:128],
                category=info.category.value,
                action=action,
                confidence=round(confidence, 3),
                reason=f"{action.value}: {why}. Evidence: {evidence(record, row)}",
                changes=retry_changes(action, record, memory_mb, walltime_s),
                decided_by=decided_by,
                features=row,
                record=record,
            )
        )
    return recommendations
