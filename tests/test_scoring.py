"""learning.scoring against sklearn.metrics, which it stands in for (to keep sklearn's import out
of every model stage's start-up): the same accuracy, macro F1 and loss, per-class report and
confusion matrix on any input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    f1_score,
    log_loss,
)

from pipeline.learning.scoring import confusion, per_class, score


def reference(targets: np.ndarray, probs: np.ndarray) -> tuple[float, float, float]:
    labels = list(range(probs.shape[1]))
    predicted = probs.argmax(1)
    return (
        accuracy_score(targets, predicted),
        f1_score(targets, predicted, labels=labels, average="macro", zero_division=0),
        log_loss(targets, np.clip(probs, 1e-12, 1), labels=labels),
    )


@st.composite
def predictions(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    classes = draw(st.integers(2, 6))
    n = draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, draw(st.integers(1, classes)), n)  # some classes never occur
    logits = rng.normal(0, draw(st.sampled_from([0.1, 3.0, 40.0])), (n, classes))
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    if draw(st.booleans()):  # exact zeros and ones, which the clip handles
        probs = np.eye(classes)[rng.integers(0, classes, n)]
    return targets, probs


@settings(max_examples=200, deadline=None)
@given(predictions())
def test_scores_equal_sklearns(case: tuple[np.ndarray, np.ndarray]) -> None:
    targets, probs = case
    got = score(targets, probs)
    want = reference(targets, probs)
    assert (got.accuracy, got.macro_f1, got.loss) == pytest.approx(want, rel=1e-9, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(predictions())
def test_per_class_report_and_confusion_equal_sklearns(case: tuple[np.ndarray, np.ndarray]) -> None:
    targets, probs = case
    classes = probs.shape[1]
    predicted = probs.argmax(1)
    labels = list(range(classes))
    want = classification_report(
        targets, predicted, labels=labels, output_dict=True, zero_division=0
    )
    got = per_class(targets, predicted, classes)
    for column in ("precision", "recall", "f1-score", "support"):
        expected = [want[str(label)][column] for label in labels]
        assert got[column].tolist() == pytest.approx(expected, rel=1e-12, abs=1e-15), column
    counts = confusion(targets, predicted, classes)
    assert counts.tolist() == confusion_matrix(targets, predicted, labels=labels).tolist()


def test_a_class_never_predicted_counts_as_f1_zero() -> None:
    probs = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.4, 0.0]])
    got = score(np.array([0, 1, 2]), probs)
    assert got.accuracy == pytest.approx(2 / 3)
    assert got.macro_f1 == pytest.approx((2 / 3 + 1 + 0) / 3)  # class 2: F1 0, still counted
    assert got.loss == pytest.approx(-(np.log(0.9) + np.log(0.8) + np.log(1e-12)) / 3)
