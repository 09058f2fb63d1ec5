"""How well predictions match the labels: one computation for the validation curves during
training, the test metrics of the evaluate and fuse stages, evaluate's per-class table and the
plots' confusion matrices.

Written in numpy rather than by `sklearn.metrics`, on purpose: importing sklearn.metrics (it pulls
in scipy) costs about 1.8 CPU s, 40 % of a training stage's start-up, and every stage process
would pay it (six training, two evaluate stages and plots per `dvc repro`; evaluate and plots on
every experiment). tests/test_scoring.py checks every figure against sklearn's accuracy_score,
f1_score(average="macro", zero_division=0), log_loss, classification_report and
confusion_matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLIP = 1e-12  # probabilities are clipped to [CLIP, 1] before the log, as log_loss did


@dataclass(frozen=True)
class Scores:
    accuracy: float
    macro_f1: float
    loss: float  # cross-entropy of the true class, probabilities clipped at 1e-12


def score(targets: np.ndarray, probs: np.ndarray) -> Scores:
    """Scores of probabilities [N, classes] (finite: check before) against targets [N] (N >= 1,
    each in range(classes))."""
    targets = np.asarray(targets, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    classes = probs.shape[1]  # every class counts, predicted or not
    predicted = probs.argmax(1)
    hits = np.bincount(targets[predicted == targets], minlength=classes)
    actual = np.bincount(targets, minlength=classes)
    chosen = np.bincount(predicted, minlength=classes)
    # F1 = 2 TP / (actual + predicted); 0 where a class is neither (zero_division=0)
    both = actual + chosen
    f1 = np.divide(2.0 * hits, both, out=np.zeros(classes), where=both > 0)
    true_class = np.clip(probs[np.arange(len(targets)), targets], CLIP, 1)
    return Scores(
        accuracy=float(np.mean(predicted == targets)),
        macro_f1=float(f1.mean()),
        loss=float(-np.log(true_class).mean()),
    )


def confusion(actual: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """Counts [classes, classes] of clips of actual class i predicted as j (labels in
    range(classes)), as sklearn's confusion_matrix with labels=range(classes)."""
    counts = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(actual, np.int64), np.asarray(predicted, np.int64)), 1)
    return counts


def per_class(targets: np.ndarray, predicted: np.ndarray, classes: int) -> dict[str, np.ndarray]:
    """Each class's precision, recall, F1 and support (0 where undefined), the columns of
    sklearn's classification_report(labels=range(classes), zero_division=0)."""
    counts = confusion(targets, predicted, classes)
    hits = np.diag(counts).astype(np.float64)
    actual, chosen = counts.sum(1).astype(np.float64), counts.sum(0).astype(np.float64)

    def ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.divide(a, b, out=np.zeros(classes), where=b > 0)

    precision, recall = ratio(hits, chosen), ratio(hits, actual)
    return {
        "precision": precision,
        "recall": recall,
        "f1-score": ratio(2 * hits, actual + chosen),
        "support": actual,
    }
