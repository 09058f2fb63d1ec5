"""How well predicted probabilities match the labels: one computation for the validation curves
during training and the test metrics of the evaluate and fuse stages alike.

Written in numpy rather than by `sklearn.metrics`, on purpose: importing sklearn.metrics (it pulls
in scipy) costs about 1.8 CPU s, 40 % of a training stage's start-up, and every stage process pays
it (six training stages per `dvc repro`). tests/test_scoring.py checks these three figures
against sklearn's accuracy_score, f1_score(average="macro", zero_division=0) and log_loss.
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
