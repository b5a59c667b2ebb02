"""Score rules and classifier on both operator corpora in a checkout of any commit.

Written for issue 23's "before" figures: run in a checkout of the commit that added the
held-out corpus and changed no rule yet (0776fe3), with that checkout first on the path.
The classifier is trained exactly as ``bench_recovery.py`` trains it. Export lines are read
leniently (a case whose native code the old taxonomy cannot read is scored, not refused).

    git archive 0776fe3 | tar -x -C DIR && cp benchmarks/recovery_heldout_before.py DIR/
    cd DIR && PYTHONPATH=DIR python3 recovery_heldout_before.py > before.json
"""

from __future__ import annotations

import json
import sys

sys.path.insert(0, "benchmarks")
from bench_recovery import labelled_rows  # noqa: E402
from recovery_simulator import SimulatorConfig  # noqa: E402

from smartbkg_prod.recovery.cases import load_cases  # noqa: E402
from smartbkg_prod.recovery.classifier import ActionClassifier  # noqa: E402
from smartbkg_prod.recovery.failures import read_failure_lines  # noqa: E402
from smartbkg_prod.recovery.features import failure_features  # noqa: E402
from smartbkg_prod.recovery.recommend import guarded  # noqa: E402
from smartbkg_prod.recovery.rules import decide  # noqa: E402

CORPORA = {
    "development": "smartbkg_prod/recovery/cases/operator_cases.jsonl",
    "heldout": "smartbkg_prod/recovery/cases/heldout_cases.jsonl",
}


def main() -> None:
    rows, labels, _ = labelled_rows(SimulatorConfig(seed=1, n_campaigns=1000, label_noise=0.2))
    model = ActionClassifier().fit(rows, [label.operator_action for label in labels])
    result = {}
    for name, path in CORPORA.items():
        cases = load_cases(path)
        case_rows = []
        for case in cases:
            records = read_failure_lines([json.dumps(line) for line in case.reports], case.case)
            case_rows += failure_features(records.records, [case.target(records.records)])
        truth = [case.expected_action for case in cases]
        policies = {
            "rules": [decide(row).action for row in case_rows],
            "model_alone": model.predict(case_rows)[0],
            "classifier_as_used": [d.action for d in guarded(model, "classifier", case_rows)],
        }
        result[name] = {
            policy: {
                "correct": sum(a is t for a, t in zip(actions, truth, strict=True)),
                "n": len(truth),
                "wrong": [
                    f"{c.case}: {t.value} -> {a.value}"
                    for c, a, t in zip(cases, actions, truth, strict=True)
                    if a is not t
                ],
            }
            for policy, actions in policies.items()
        }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
