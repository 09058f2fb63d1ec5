"""How well predicted probabilities match the labels: one computation, by sklearn, for the
validation curves during training and the test metrics of the evaluate stage alike."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, log_loss


@dataclass(frozen=True)
class Scores:
    accuracy: float
    macro_f1: float
    loss: float  # cross-entropy of the true class, probabilities clipped at 1e-12


def score(targets: np.ndarray, probs: np.ndarray) -> Scores:
    """Scores of probabilities [N, classes] (finite: check before) against targets [N]."""
    labels = list(range(probs.shape[1]))  # every class counts, predicted or not
    predicted = probs.argmax(1)
    return Scores(
        accuracy=float(accuracy_score(targets, predicted)),
        macro_f1=float(
            f1_score(targets, predicted, labels=labels, average="macro", zero_division=0)
        ),
        loss=float(log_loss(targets, np.clip(probs, 1e-12, 1), labels=labels)),
    )
