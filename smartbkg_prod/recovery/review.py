"""The review loop: recommend, accept or override, learn from the decisions.

Every function takes a :class:`~smartbkg_prod.store.Store`; the ``recover`` CLI and the
monitoring page only format what these return.

>>> from smartbkg_prod.store import Store
>>> refresh_recommendations(Store("sqlite://"))
[]
"""

from __future__ import annotations

import functools
import getpass
import os
from collections import Counter
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict
from sklearn.model_selection import StratifiedKFold

from smartbkg_prod.recovery.actions import Action, retry_changes
from smartbkg_prod.recovery.cases import evaluate_corpus
from smartbkg_prod.recovery.classifier import MIN_LABELS, ActionClassifier, Evaluation, evaluate
from smartbkg_prod.recovery.failures import FailureRecord, read_failure_export
from smartbkg_prod.recovery.features import PRIOR_FAILURE_RATE
from smartbkg_prod.recovery.recommend import Recommendation, recommend
from smartbkg_prod.recovery.records import (
    OPEN,
    RecoveryError,
    StoredRecommendation,
    campaign_records,
    get_recommendation,
    latest_model_blob,
    list_recommendations,
    live_jobs,
    recommendation_campaigns,
    record_decision,
    save_model,
    save_recommendations,
    supersede_stale,
    training_labels,
)
from smartbkg_prod.recovery.rules import decide
from smartbkg_prod.store import Store


def default_operator() -> str:
    return os.environ.get("SMARTBKG_OPERATOR") or getpass.getuser()


class Policy(BaseModel):
    """Who decides: the newest trained classifier, or the rules (``model`` None), and why
    the rules decide although a classifier exists (``fallback``)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: ActionClassifier | None = None
    name: str = "rules"
    fallback: str = ""


@functools.lru_cache(maxsize=8)
def _corpus_fallback(name: str, blob: bytes) -> str:
    """The corpus verdict on a stored classifier (cached: the blob names it)."""
    return evaluate_corpus(ActionClassifier.from_bytes(blob), name).fallback


def current_policy(store: Store) -> Policy:
    """The newest trained classifier, checked against the independent corpus: where it
    scores below the rules there, the rules decide and every reason says so."""
    stored = latest_model_blob(store)
    if stored is None:
        return Policy()
    blob, name = stored
    return Policy(
        model=ActionClassifier.from_bytes(blob), name=name, fallback=_corpus_fallback(name, blob)
    )


def refresh_recommendations(
    store: Store, campaign_id: str | None = None
) -> list[StoredRecommendation]:
    """Recommend for every job whose retries are exhausted (state ``failed``) and store
    what is new; returns the new recommendations."""
    policy = current_policy(store)
    campaigns = [campaign_id] if campaign_id else recommendation_campaigns(store)
    new_ids: list[int] = []
    for campaign in campaigns:
        failed = set(live_jobs(store, campaign).get("failed", []))
        recommendations = []
        if failed:
            records = campaign_records(store, campaign)
            recommendations = [
                r
                for r in recommend(records, policy.model, policy.name, fallback=policy.fallback)
                if r.job_index in failed
            ]
        supersede_stale(store, campaign, {r.job_index: r.attempt for r in recommendations})
        before = {r.id for r in list_recommendations(store, campaign_id=campaign)}
        new_ids += [i for i in save_recommendations(store, recommendations) if i not in before]
    return [get_recommendation(store, i) for i in new_ids]


class FileRecommendations(BaseModel):
    """Recommendations for an export file, and what the reader had to warn about."""

    recommendations: list[Recommendation]
    warnings: list[str]


def with_store_context(
    store: Store | None, records: list[FailureRecord]
) -> tuple[list[FailureRecord], set[str]]:
    """The export's records plus the store's attempts of the same campaigns (the file's
    line wins for the same attempt); returns them and the campaigns the store knew."""
    if store is None:
        return records, set()
    in_file = {(r.campaign_id, r.job_index, r.attempt) for r in records}
    known, extra = set(), []
    for campaign_id in sorted({r.campaign_id for r in records}):
        try:
            stored = campaign_records(store, campaign_id)
        except RecoveryError:
            continue  # not a campaign of this store
        known.add(campaign_id)
        extra += [r for r in stored if (r.campaign_id, r.job_index, r.attempt) not in in_file]
    return records + extra, known


def recommend_from_file(
    store: Store | None, path: str | Path, save: bool = False
) -> FileRecommendations:
    """Recommendations for a JSON-lines export (JobReports + optional ``native_code``).

    Unreadable lines are skipped with a warning. The store supplies the trained model (if
    any) and, for a campaign it holds, every attempt it recorded, so the rates are the
    campaign's and not only the file's. A campaign without any successful attempt gets a
    warning and the neutral prior failure rate. With ``save`` the recommendations are
    stored for review like the store's own.
    """
    export = read_failure_export(path)
    records, from_store = with_store_context(store, export.records)
    warnings = list(export.warnings)
    for campaign_id in sorted({r.campaign_id for r in records} - from_store):
        if not any(not r.failed for r in records if r.campaign_id == campaign_id):
            warnings.append(
                f"{path}: campaign {campaign_id} has no successful attempt in the file and "
                f"none in the store: site and code rates use a neutral prior of "
                f"{PRIOR_FAILURE_RATE:.0%} failures (export the successes too for real rates)"
            )
    policy = current_policy(store) if store is not None else Policy()
    in_file = {(r.campaign_id, r.job_index) for r in export.records}
    recommendations = [
        r
        for r in recommend(records, policy.model, policy.name, fallback=policy.fallback)
        if (r.campaign_id, r.job_index) in in_file
    ]
    if save and store is not None:
        save_recommendations(store, recommendations)
    return FileRecommendations(recommendations=recommendations, warnings=warnings)


def accept(store: Store, recommendation_id: int, operator: str | None = None, comment: str = ""):
    """Record that an operator accepted the recommended action."""
    return record_decision(
        store, recommendation_id, operator or default_operator(), comment=comment
    )


def override(
    store: Store,
    recommendation_id: int,
    action: Action | str,
    operator: str | None = None,
    comment: str = "",
) -> StoredRecommendation:
    """Record that an operator chose ``action`` instead; its retry changes are computed
    from the failure record the recommendation was made for."""
    try:
        chosen = Action(action)
    except ValueError:
        allowed = ", ".join(a.value for a in Action)
        raise RecoveryError(f"unknown action {action!r} (allowed: {allowed})") from None
    recommendation = get_recommendation(store, recommendation_id)
    changes = retry_changes(chosen, recommendation.record)
    return record_decision(
        store, recommendation_id, operator or default_operator(), chosen, changes, comment
    )


def auto_accept(
    store: Store, min_confidence: float, operator: str = "policy"
) -> list[StoredRecommendation]:
    """Accept open recommendations at or above ``min_confidence``; never a kill."""
    accepted = []
    for recommendation in list_recommendations(store, status=OPEN):
        if recommendation.action.destructive or recommendation.confidence < min_confidence:
            continue
        accepted.append(
            record_decision(store, recommendation.id, operator, comment="auto-accepted")
        )
    return accepted


class TrainResult(BaseModel):
    model: str
    n_labels: int
    label_counts: dict[str, int]
    fallback: str = ""  # why the rules keep deciding (its score on the independent corpus)


def train(store: Store, min_labels: int = MIN_LABELS) -> TrainResult:
    """Train the classifier on every recorded decision and store it as the new policy."""
    rows, labels = training_labels(store)
    counts = Counter(label.value for label in labels)
    if len(labels) < min_labels:
        raise RecoveryError(
            f"only {len(labels)} recorded decision(s), {min_labels} needed to train; "
            "the rules stay in charge (accept or override more recommendations)"
        )
    if len(counts) < 2:
        raise RecoveryError(f"every decision is {labels[0].value!r}: nothing to learn yet")
    model = ActionClassifier().fit(rows, labels)
    blob = model.to_bytes()
    name = save_model(store, blob, ActionClassifier.digest(blob), model.n_labels, dict(counts))
    return TrainResult(
        model=name,
        n_labels=len(labels),
        label_counts=dict(counts),
        fallback=_corpus_fallback(name, blob),
    )


class PolicyEvaluation(BaseModel):
    """The policies scored against the operators' recorded decisions."""

    n_labels: int
    rules: Evaluation
    majority: Evaluation
    model: Evaluation | None = None  # cross-validated (5 folds) on the same decisions


def evaluate_policies(store: Store, folds: int = 5) -> PolicyEvaluation:
    """Rules, majority guess and (cross-validated) classifier against recorded decisions."""
    rows, labels = training_labels(store)
    if not labels:
        raise RecoveryError("no recorded decisions yet: accept or override recommendations first")
    truth = [label.value for label in labels]
    majority = Counter(truth).most_common(1)[0][0]
    result = PolicyEvaluation(
        n_labels=len(labels),
        rules=evaluate(truth, [decide(row).action for row in rows]),
        majority=evaluate(truth, [majority] * len(truth)),
    )
    smallest = min(Counter(truth).values())
    if len(labels) >= MIN_LABELS and len(set(truth)) >= 2 and smallest >= 2:
        predicted = np.empty(len(truth), dtype=object)
        splitter = StratifiedKFold(n_splits=min(folds, smallest), shuffle=True, random_state=0)
        for train_idx, test_idx in splitter.split(np.zeros(len(truth)), truth):
            model = ActionClassifier().fit(
                [rows[i] for i in train_idx], [truth[i] for i in train_idx]
            )
            actions, _ = model.predict([rows[i] for i in test_idx])
            predicted[test_idx] = [a.value for a in actions]
        result.model = evaluate(truth, list(predicted))
    return result
