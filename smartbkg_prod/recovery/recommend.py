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
from dataclasses import dataclass

from smartbkg_prod.recovery.actions import Action, Recommendation, retry_changes
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


# Below this probability the classifier's pick is a guess: the rules decide.
MIN_MODEL_CONFIDENCE = 0.5


@dataclass(frozen=True)
class PolicyDecision:
    action: Action
    confidence: float
    why: str
    decided_by: str


def guarded(
    model: ActionClassifier, model_name: str, rows: Sequence[dict[str, float]]
) -> list[PolicyDecision]:
    """The classifier's action per row behind guard rails that are for safety only.

    The rules take over where a wrong action is unsafe or the model is unsure: the
    campaign's only site is never excluded, and a pick below ``MIN_MODEL_CONFIDENCE`` is
    left to the rules. A kill the model proposes stands as a proposal: no kill is ever
    applied without an operator (see :mod:`~smartbkg_prod.recovery.policy`).
    """
    if not rows:
        return []
    actions, confidences = model.predict(rows)
    decisions = []
    for row, action, confidence in zip(rows, actions, confidences, strict=True):
        rule = decide(row)
        taken_by = None
        if action is Action.EXCLUDE_SITE and row.get("campaign_sites", 2.0) <= 1:
            taken_by = "the only site is never excluded"
        elif confidence < MIN_MODEL_CONFIDENCE and rule.action is not action:
            taken_by = f"{model_name} is unsure ({confidence:.2f})"
        if taken_by is not None and rule.action is not action:
            decisions.append(
                PolicyDecision(
                    rule.action,
                    rule.confidence,
                    f"rules: {rule.why} ({taken_by}; {model_name} would {action.value})",
                    "rules",
                )  # fmt: skip
            )
            continue
        why = f"{model_name} trained on {model.n_labels} operator decisions"
        # The rules' view stays visible: a disagreement is worth the operator's look.
        why += (
            f" (rules agree: {rule.why})"
            if rule.action is action
            else f" (rules would {rule.action.value}: {rule.why})"
        )
        decisions.append(PolicyDecision(action, float(confidence), why, model_name))
    return decisions


def recommend(
    records: Sequence[FailureRecord],
    model: ActionClassifier | None = None,
    model_name: str = "model",
    memory_mb: int | None = None,
    walltime_s: int | None = None,
    fallback: str = "",
) -> list[Recommendation]:
    """One recommendation per job whose last attempt failed.

    ``records`` holds every known attempt (successful ones give the sites' failure rates).
    ``model`` decides (behind the rules' guard rails, see :func:`guarded`) when it was
    trained on at least ``MIN_LABELS`` decisions and no ``fallback`` is given; a
    ``fallback`` (why the model is not trusted, e.g. its score on the held-out corpus)
    leaves the decisions to the rules and is quoted in every reason.
    ``memory_mb`` / ``walltime_s``: the campaign's requests, for records that lack them.
    """
    targets = latest_failures(records)
    rows = failure_features(records, targets)
    use_model = model is not None and model.n_labels >= MIN_LABELS and not fallback
    if use_model:
        decisions = guarded(model, model_name, rows)
    else:
        note = f" (rules decide: {fallback})" if fallback else ""
        decisions = [
            PolicyDecision(rule.action, rule.confidence, rule.why + note, "rules")
            for rule in map(decide, rows)
        ]
    recommendations = []
    for record, row, decision in zip(targets, rows, decisions, strict=True):
        info = record.info
        action = decision.action
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
                confidence=round(decision.confidence, 3),
                reason=f"{action.value}: {decision.why}. Evidence: {evidence(record, row)}",
                changes=retry_changes(action, record, memory_mb, walltime_s),
                decided_by=decision.decided_by,
                features=row,
                record=record,
            )
        )
    return recommendations
