"""Operator corpora: engine failure histories with the action an operator would take.

Two corpora ship with the package:

- the development corpus (``cases/operator_cases.jsonl``, 68 cases, written by
  ``benchmarks/make_recovery_cases.py`` in the same change as the rules that score 1.000
  on it): its score is in-sample;
- the held-out corpus (``cases/heldout_cases.jsonl``, written by
  ``benchmarks/make_recovery_heldout.py`` from real upstream texts and committed before the
  rules were changed for it): a classifier is gated on it (:data:`HELDOUT`).

Each case (one JSON line) holds one campaign's report lines exactly as an export of its
engine would (read by the same :func:`~smartbkg_prod.recovery.failures.read_failure_lines`
as ``recover recommend --reports``), the target job, the expected action, the operator's
reason and the source of the codes. Neither corpus comes from the simulator and no
classifier is trained on either; the policy falls back to the rules for a classifier that
fails the gate on the held-out corpus (see :mod:`recommend`).

>>> cases = load_cases()
>>> len(cases) >= 60, sorted({case.engine for case in cases})
(True, ['htcondor', 'local', 'panda', 'slurm'])
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from smartbkg_prod.recovery.actions import Action
from smartbkg_prod.recovery.classifier import ActionClassifier, Evaluation, evaluate
from smartbkg_prod.recovery.failures import FailureRecord, FailureRecordError, read_failure_lines
from smartbkg_prod.recovery.features import failure_features
from smartbkg_prod.recovery.recommend import guarded
from smartbkg_prod.recovery.rules import decide

CORPUS = Path(__file__).parent / "cases" / "operator_cases.jsonl"  # development
HELDOUT = Path(__file__).parent / "cases" / "heldout_cases.jsonl"
# The gate a classifier passes on the held-out corpus before it decides: absolute figures,
# and no further than a couple of cases below the rules (a single miss must not refuse a
# model when the rules happen to score 1.000).
GATE_ACCURACY = 0.9
GATE_MACRO_RECALL = 0.85
GATE_MARGIN_CASES = 2


class OperatorCase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    case: str
    engine: str
    title: str
    target_job: int
    expected_action: Action
    reason: str
    source: str
    reports: list[dict]

    def records(self) -> list[FailureRecord]:
        """The case's report lines read as an export file would be."""
        export = read_failure_lines([json.dumps(line) for line in self.reports], self.case)
        if export.warnings:
            raise FailureRecordError(f"case {self.case}: {export.warnings[0]}")
        return export.records

    def target(self, records: Sequence[FailureRecord]) -> FailureRecord:
        mine = [r for r in records if r.job_index == self.target_job]
        if not mine or not max(mine, key=lambda r: r.attempt).failed:
            raise FailureRecordError(
                f"case {self.case}: target job {self.target_job} has no failed last attempt"
            )
        return max(mine, key=lambda r: r.attempt)


def load_cases(path: str | Path = CORPUS) -> list[OperatorCase]:
    """Read a corpus file (one case per line); a bad case is an error naming its line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise FailureRecordError(f"{path}: cannot be read ({error})") from None
    cases = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            cases.append(OperatorCase.model_validate_json(text))
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "case"
            raise FailureRecordError(f"{path}:{number}: {where}: {first['msg']}") from None
    if not cases:
        raise FailureRecordError(f"{path}: no cases")
    return cases


def case_rows(cases: Sequence[OperatorCase]) -> tuple[list[dict[str, float]], list[Action]]:
    """The target job's feature row and the expected action, per case."""
    rows, truth = [], []
    for case in cases:
        records = case.records()
        (row,) = failure_features(records, [case.target(records)])
        rows.append(row)
        truth.append(case.expected_action)
    return rows, truth


class CaseOutcome(BaseModel):
    case: str
    engine: str
    expected: Action
    predicted: Action
    reason: str  # the operator's


class CorpusScore(BaseModel):
    """One policy on the corpus: figures and the cases it got wrong."""

    policy: str
    evaluation: Evaluation
    wrong: list[CaseOutcome]


def score(
    name: str,
    cases: Sequence[OperatorCase],
    rows: Sequence[dict[str, float]],
    decide: Callable[[Sequence[dict[str, float]]], list[Action]],
) -> CorpusScore:
    """Score a policy (rows in, actions out) on the cases."""
    predicted = decide(rows)
    truth = [case.expected_action for case in cases]
    wrong = [
        CaseOutcome(case=c.case, engine=c.engine, expected=t, predicted=p, reason=c.reason)
        for c, t, p in zip(cases, truth, predicted, strict=True)
        if t is not p
    ]
    return CorpusScore(policy=name, evaluation=evaluate(truth, predicted), wrong=wrong)


class CorpusEvaluation(BaseModel):
    """Rules and a classifier on the corpus: the classifier alone, and behind the rules'
    guard rails (what :func:`~smartbkg_prod.recovery.recommend.recommend` uses)."""

    corpus: str
    n_cases: int
    cases_per_engine: dict[str, int]
    rules: CorpusScore
    model: CorpusScore | None = None
    policy: CorpusScore | None = None
    model_refused: bool | None = None  # failed the gate: the policy falls back to the rules

    @property
    def fallback(self) -> str:
        """Why the rules decide instead of the classifier ("" when it may decide)."""
        if not self.model_refused:
            return ""
        policy, rules = self.policy.evaluation, self.rules.evaluation
        return (
            f"{self.policy.policy} scores accuracy {policy.accuracy:.2f} / macro recall "
            f"{policy.macro_recall:.2f} on the {self.n_cases}-case corpus {Path(self.corpus).name} "
            f"(gate: >= {GATE_ACCURACY} / {GATE_MACRO_RECALL}, at most {GATE_MARGIN_CASES} cases "
            f"below the rules' {rules.accuracy:.2f} / {rules.macro_recall:.2f})"
        )


def evaluate_corpus(
    model: ActionClassifier | None = None,
    model_name: str = "model",
    path: str | Path = HELDOUT,
) -> CorpusEvaluation:
    """Score the rules and (if given) a classifier on a corpus file (default: the held-out
    corpus, the classifier's gate)."""
    cases = load_cases(path)
    rows, _ = case_rows(cases)
    engines: dict[str, int] = {}
    for case in cases:
        engines[case.engine] = engines.get(case.engine, 0) + 1
    result = CorpusEvaluation(
        corpus=str(path),
        n_cases=len(cases),
        cases_per_engine=engines,
        rules=score("rules", cases, rows, lambda rs: [decide(r).action for r in rs]),
    )
    if model is not None:
        result.model = score(f"{model_name} alone", cases, rows, lambda rs: model.predict(rs)[0])
        result.policy = score(
            model_name, cases, rows, lambda rs: [d.action for d in guarded(model, model_name, rs)]
        )
        policy, rules = result.policy.evaluation, result.rules.evaluation
        behind = (rules.accuracy - policy.accuracy) * result.n_cases
        result.model_refused = (
            policy.accuracy < GATE_ACCURACY
            or policy.macro_recall < GATE_MACRO_RECALL
            or behind > GATE_MARGIN_CASES + 1e-9
        )
    return result
