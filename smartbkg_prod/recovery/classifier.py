"""The learned recovery policy: operator decisions in, action probabilities out.

Why a random forest (scikit-learn) and not a neural net or gradient boosting:

- the labels are operators' decisions, and some of them are wrong. Bagging with leaves of
  several samples averages a flipped label away; boosting re-weights exactly the examples
  it gets wrong, i.e. the mislabelled ones, and fits the noise;
- the classes are imbalanced (most failures just need a resubmit): ``class_weight=
  "balanced_subsample"`` re-weights inside every bootstrap sample, no resampling needed;
- the features mix counts, ratios and one-hot codes: trees need no scaling, and a few
  thousand decisions train in a second on one core, with no GPU;
- ``predict_proba`` gives the confidence shown to the operator.

The forest also sees the rules' proposal for each row (``rule=<action>``): the rules are
the field's reading of the failure itself (deterministic, transient, resources, the job's
own history), so the forest starts from it and learns where operators decide otherwise,
instead of leaning on campaign-wide rates alone.

>>> model = ActionClassifier(n_estimators=10)
>>> rows = [{"category=memory": 1.0}, {"category=storage": 1.0}] * 5
>>> model.fit(rows, ["resubmit_more_memory", "resubmit"] * 5).predict(rows[:1])[0][0].value
'resubmit_more_memory'
"""

from __future__ import annotations

import hashlib
import io
import pickle
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel
from sklearn.ensemble import RandomForestClassifier
from sklearn.feature_extraction import DictVectorizer
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from smartbkg_prod.recovery.actions import ACTIONS, Action
from smartbkg_prod.recovery.rules import decide

# Below this many recorded decisions the rules stay in charge.
MIN_LABELS = 50


class ActionClassifier:
    """Random forest over :func:`~smartbkg_prod.recovery.features.failure_features` rows."""

    def __init__(self, n_estimators: int = 300, min_samples_leaf: int = 2, random_state: int = 0):
        self.vectorizer = DictVectorizer(sparse=False)
        self.forest = RandomForestClassifier(
            n_estimators=n_estimators,
            min_samples_leaf=min_samples_leaf,
            class_weight="balanced_subsample",
            max_features="sqrt",
            n_jobs=1,
            random_state=random_state,
        )
        self.n_labels = 0

    @staticmethod
    def _with_rules(rows: Sequence[dict[str, float]]) -> list[dict[str, float]]:
        return [{**row, f"rule={decide(row).action.value}": 1.0} for row in rows]

    def fit(self, rows: Sequence[dict[str, float]], labels: Sequence[str]) -> ActionClassifier:
        matrix = self.vectorizer.fit_transform(self._with_rules(rows))
        self.forest.fit(matrix, np.asarray([Action(label).value for label in labels]))
        self.n_labels = len(labels)
        return self

    @property
    def classes(self) -> list[Action]:
        return [Action(value) for value in self.forest.classes_]

    def predict_proba(self, rows: Sequence[dict[str, float]]) -> np.ndarray:
        """Probabilities, one column per :attr:`classes` entry."""
        return self.forest.predict_proba(self.vectorizer.transform(self._with_rules(rows)))

    def predict(self, rows: Sequence[dict[str, float]]) -> tuple[list[Action], np.ndarray]:
        """Most likely action per row and its probability (the confidence)."""
        if not rows:
            return [], np.zeros(0)
        probabilities = self.predict_proba(rows)
        best = probabilities.argmax(axis=1)
        classes = self.classes
        return [classes[i] for i in best], probabilities[np.arange(len(best)), best]

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        pickle.dump(self, buffer, protocol=pickle.HIGHEST_PROTOCOL)
        return buffer.getvalue()

    @staticmethod
    def from_bytes(blob: bytes) -> ActionClassifier:
        # Only blobs this package wrote into its own database are loaded (see store/recovery.py).
        model = pickle.loads(blob)  # noqa: S301
        if not isinstance(model, ActionClassifier):
            raise TypeError("stored blob is not an ActionClassifier")
        return model

    @staticmethod
    def digest(blob: bytes) -> str:
        return hashlib.sha256(blob).hexdigest()[:12]


class Evaluation(BaseModel):
    """Accuracy, macro-averaged recall and precision, per-action figures, confusion matrix."""

    n: int
    accuracy: float
    macro_recall: float
    macro_precision: float
    labels: list[str]
    recall: dict[str, float]
    precision: dict[str, float]
    support: dict[str, int]
    confusion: list[list[int]]  # rows: true action, columns: predicted action (order: labels)


def evaluate(truth: Sequence[str], predicted: Sequence[str]) -> Evaluation:
    """Figures over the actions present in ``truth`` (macro averages ignore absent ones)."""
    truth = [Action(t).value for t in truth]
    predicted = [Action(p).value for p in predicted]
    labels = [a for a in ACTIONS if a in set(truth)]
    precision, recall, _, support = precision_recall_fscore_support(
        truth, predicted, labels=labels, zero_division=0
    )
    return Evaluation(
        n=len(truth),
        accuracy=float(accuracy_score(truth, predicted)),
        macro_recall=float(np.mean(recall)),
        macro_precision=float(np.mean(precision)),
        labels=labels,
        recall=dict(zip(labels, map(float, recall), strict=True)),
        precision=dict(zip(labels, map(float, precision), strict=True)),
        support=dict(zip(labels, map(int, support), strict=True)),
        confusion=confusion_matrix(truth, predicted, labels=labels).tolist(),
    )
