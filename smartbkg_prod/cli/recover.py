"""``smartbkg-prod recover``: review failed jobs' recommendations, decide, apply, learn.

Each command calls one function of :mod:`smartbkg_prod.recovery` and formats its result.
"""

from __future__ import annotations

import datetime
import json

import click

from smartbkg_prod.cli import db_option
from smartbkg_prod.errors import SmartBkgError
from smartbkg_prod.recovery.actions import ACTIONS, Recommendation
from smartbkg_prod.recovery.apply import apply_decisions
from smartbkg_prod.recovery.cases import evaluate_corpus
from smartbkg_prod.recovery.classifier import MIN_LABELS, Evaluation
from smartbkg_prod.recovery.features import code_site_matrix
from smartbkg_prod.recovery.records import (
    StoredRecommendation,
    campaign_records,
    get_recommendation,
    list_recommendations,
    policy_activity,
)
from smartbkg_prod.recovery.review import (
    accept,
    auto_accept,
    current_policy,
    evaluate_policies,
    override,
    recommend_from_file,
    refresh_recommendations,
    train,
)
from smartbkg_prod.store import STATUSES as RECOMMENDATION_STATUSES
from smartbkg_prod.store import Store

STATUSES = (*RECOMMENDATION_STATUSES, "all")


class _RecoverGroup(click.Group):
    """Used on its own, library errors become one line on stderr and exit 1; under the main
    ``smartbkg-prod`` group they propagate to its handler (same format as every command)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SmartBkgError as error:
            if ctx.parent is not None:
                raise
            raise click.ClickException(str(error)) from None


_db = db_option


def _json_option(function):
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable JSON.")(function)


def _dump(document: object) -> None:
    click.echo(json.dumps(document, indent=2))


def _public(recommendation: Recommendation) -> dict:
    """JSON of a recommendation without the bulky feature row."""
    return recommendation.model_dump(mode="json", exclude={"features"})


def _line(recommendation: Recommendation) -> str:
    prefix = ""
    if isinstance(recommendation, StoredRecommendation):
        prefix = f"{recommendation.id:>5} {recommendation.status:<10} "
    return (
        f"{prefix}{recommendation.campaign_id} job {recommendation.job_index} "
        f"attempt {recommendation.attempt} @ {recommendation.site}: {recommendation.failure_code} "
        f"-> {recommendation.action.value} ({recommendation.confidence:.2f}, {recommendation.decided_by})"
    )


@click.group(cls=_RecoverGroup)
def recover() -> None:
    """Recovery of failed jobs: recommendations, operator review, actions, learning."""


@recover.command("list")
@_db
@_json_option
@click.option("--status", type=click.Choice(STATUSES), default="open", show_default=True)
@click.option("--campaign", "campaign_id", default=None, help="Only this campaign id.")
@click.option("--no-refresh", is_flag=True, help="Do not recommend for newly failed jobs first.")
def list_command(db_url, as_json, status, campaign_id, no_refresh) -> None:
    """List recommendations (first recommends for jobs that failed since the last look)."""
    store = Store(db_url)
    if not no_refresh:
        refresh_recommendations(store, campaign_id)
    recommendations = list_recommendations(
        store, status=None if status == "all" else status, campaign_id=campaign_id
    )
    if as_json:
        _dump([_public(r) for r in recommendations])
        return
    if not recommendations:
        click.echo(f"no {'' if status == 'all' else status + ' '}recommendations")
    for recommendation in recommendations:
        click.echo(_line(recommendation))
    if status == "open":
        automatic = policy_activity(store, campaign_id).automatic
        if automatic:
            click.echo("decided by the driver's retry policy (retry.policy: auto):")
        for recommendation in automatic:
            decision = recommendation.decision
            click.echo(
                f"{_line(recommendation)}\n      {decision.action.value} by {decision.operator}: "
                f"{decision.comment}" + (f" [{decision.outcome}]" if decision.outcome else "")
            )


@recover.command()
@_db
@_json_option
@click.argument("recommendation_id", type=int)
def show(db_url, as_json, recommendation_id) -> None:
    """Show one recommendation: reason, evidence, retry changes, decision."""
    recommendation = get_recommendation(Store(db_url), recommendation_id)
    if as_json:
        _dump(recommendation.model_dump(mode="json"))
        return
    click.echo(_line(recommendation))
    click.echo(f"  failure: {recommendation.failure_name} ({recommendation.category})")
    click.echo(f"  reason:  {recommendation.reason}")
    changes = recommendation.changes.model_dump(exclude_defaults=True)
    click.echo(f"  changes: {changes or 'none (same resources, same seed)'}")
    decision = recommendation.decision
    if decision is not None:
        applied = f", applied: {decision.outcome}" if decision.applied_at else ", not applied yet"
        click.echo(
            f"  decision: {decision.kind} -> {decision.action.value} by {decision.operator} "
            f"at {_when(decision.decided_at)}{applied}"
        )


def _when(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC).strftime(
        "%Y-%m-%d %H:%M:%S UTC"
    )


@recover.command("accept")
@_db
@click.argument("recommendation_id", type=int)
@click.option(
    "--operator", default=None, help="Who decides (default $SMARTBKG_OPERATOR or the user)."
)
@click.option("--comment", default="", help="Free text kept with the decision.")
def accept_command(db_url, recommendation_id, operator, comment) -> None:
    """Accept a recommendation (stored as a training label)."""
    recommendation = accept(Store(db_url), recommendation_id, operator, comment)
    decision = recommendation.decision
    click.echo(f"{recommendation_id}: accepted {decision.action.value} by {decision.operator}")


@recover.command("override")
@_db
@click.argument("recommendation_id", type=int)
@click.option(
    "--action", required=True, type=click.Choice(ACTIONS), help="The action to take instead."
)
@click.option(
    "--operator", default=None, help="Who decides (default $SMARTBKG_OPERATOR or the user)."
)
@click.option("--comment", default="", help="Free text kept with the decision.")
def override_command(db_url, recommendation_id, action, operator, comment) -> None:
    """Choose another action than the recommended one (stored as a training label)."""
    recommendation = override(Store(db_url), recommendation_id, action, operator, comment)
    decision = recommendation.decision
    click.echo(
        f"{recommendation_id}: {decision.kind} -> {decision.action.value} by {decision.operator} "
        f"(recommended {recommendation.action.value})"
    )


@recover.command("auto-accept")
@_db
@click.option("--min-confidence", type=click.FloatRange(0.0, 1.0), required=True)
def auto_accept_command(db_url, min_confidence) -> None:
    """Accept open recommendations at or above a confidence (never a kill)."""
    accepted = auto_accept(Store(db_url), min_confidence)
    click.echo(f"auto-accepted {len(accepted)} recommendation(s)")


@recover.command("apply")
@_db
@_json_option
def apply_command(db_url, as_json) -> None:
    """Apply accepted and overridden actions (then `submit` the same spec to run them)."""
    results = apply_decisions(Store(db_url))
    if as_json:
        _dump([r.model_dump(mode="json") for r in results])
        return
    if not results:
        click.echo("nothing to apply (accept or override recommendations first)")
    for result in results:
        mark = "applied" if result.applied else "skipped"
        click.echo(f"{result.recommendation_id:>5} {mark}: {result.action.value}: {result.outcome}")


@recover.command("train")
@_db
@click.option("--min-labels", type=click.IntRange(min=1), default=MIN_LABELS, show_default=True)
def train_command(db_url, min_labels) -> None:
    """Train the classifier on recorded decisions; it replaces the rules from now on."""
    result = train(Store(db_url), min_labels)
    counts = ", ".join(f"{k}={v}" for k, v in sorted(result.label_counts.items()))
    click.echo(f"trained {result.model} on {result.n_labels} decisions ({counts})")
    if result.fallback:
        click.echo(f"the rules keep deciding: {result.fallback}")


def _figures(name: str, evaluation: Evaluation | None) -> str:
    if evaluation is None:
        return f"{name:9s} (not enough decisions to cross-validate)"
    return (
        f"{name:9s}  accuracy {evaluation.accuracy:.3f}  macro recall {evaluation.macro_recall:.3f}  "
        f"macro precision {evaluation.macro_precision:.3f}"
    )


@recover.command("evaluate")
@_db
@_json_option
@click.option(
    "--cases",
    "cases_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Score on an operator corpus instead of the recorded decisions (shipped: "
    "smartbkg_prod/recovery/cases/heldout_cases.jsonl, the classifier's gate, and "
    "operator_cases.jsonl, the rules' development corpus).",
)
def evaluate_command(db_url, as_json, cases_path) -> None:
    """Score rules, majority guess and the classifier against recorded decisions, or the
    rules and the store's classifier on an independent corpus (--cases)."""
    if cases_path is not None:
        policy = current_policy(Store(db_url))
        corpus = evaluate_corpus(policy.model, policy.name, cases_path)
        if as_json:
            _dump(corpus.model_dump(mode="json"))
            return
        engines = ", ".join(f"{k} {v}" for k, v in sorted(corpus.cases_per_engine.items()))
        click.echo(f"{corpus.n_cases} cases ({engines}) from {cases_path}")
        scores = [corpus.rules, corpus.model, corpus.policy]
        if corpus.model is None:
            click.echo("no trained classifier in the store: rules only")
        for result in filter(None, scores):
            click.echo(_figures(result.policy, result.evaluation))
        if corpus.fallback:
            click.echo(f"the rules decide: {corpus.fallback}")
        for result in filter(None, scores):
            for wrong in result.wrong:
                click.echo(
                    f"  {result.policy}: {wrong.case} expected {wrong.expected.value}, "
                    f"got {wrong.predicted.value} ({wrong.reason})"
                )
        return
    result = evaluate_policies(Store(db_url))
    if as_json:
        _dump(result.model_dump(mode="json"))
        return
    click.echo(f"{result.n_labels} recorded decisions")
    for name in ("model", "rules", "majority"):
        click.echo(_figures(name, getattr(result, name)))


@recover.command("matrix")
@_db
@_json_option
@click.argument("campaign_id")
def matrix_command(db_url, as_json, campaign_id) -> None:
    """Failed attempts of a campaign by failure code and site."""
    matrix = code_site_matrix(campaign_records(Store(db_url), campaign_id))
    if as_json:
        _dump(matrix.model_dump())
        return
    width = max([len(code) for code in matrix.codes] + [8])
    click.echo(f"{'code':<{width}} " + " ".join(f"{site:>12}" for site in matrix.sites))
    for code, row in zip(matrix.codes, matrix.failures, strict=True):
        click.echo(f"{code:<{width}} " + " ".join(f"{count:>12}" for count in row))
    attempts = " ".join(f"{count:>12}" for count in matrix.attempts_per_site)
    click.echo(f"{'attempts':<{width}} {attempts}")


@recover.command("recommend")
@_db
@_json_option
@click.option(
    "--reports",
    "reports_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="JSON lines: one JobReport per line (partial reports are read; only job_index is "
    "required), optional 'native_code' (e.g. HoldReasonCode=34/102, slurm:CANCELLED by 0, "
    "pilot:1379). Unreadable lines are skipped with a warning on stderr.",
)
@click.option("--save", is_flag=True, help="Store the recommendations for review.")
def recommend_command(db_url, as_json, reports_path, save) -> None:
    """Recommend for failure records read from a file (offline review)."""
    result = recommend_from_file(Store(db_url), reports_path, save=save)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    recommendations = result.recommendations
    if as_json:
        _dump([_public(r) for r in recommendations])
        return
    if not recommendations:
        click.echo("no failed jobs in the file")
    for recommendation in recommendations:
        click.echo(_line(recommendation))
        click.echo(f"    {recommendation.reason}")
