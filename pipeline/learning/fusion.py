"""Late fusion: class probabilities of several models averaged with weights, the weights picked
on validation from a grid."""

from __future__ import annotations

import itertools

import numpy as np


def simplex(models: int, step: float) -> np.ndarray:
    """Every weight vector [G, models] of multiples of `step` summing to 1, in a fixed order
    (the equal weights, where the grid holds them, before any other of the same loss)."""
    n = round(1.0 / step)
    grid = [c for c in itertools.product(range(n + 1), repeat=models) if sum(c) == n]
    # nearest to equal weights first, so ties (a validation set every model gets right) go to
    # the plain average rather than to whichever corner the grid lists first
    grid.sort(key=lambda c: sum((x / n - 1.0 / models) ** 2 for x in c))
    return np.asarray(grid, dtype=np.float64) / n


def fused(weights: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """Weighted mean [N, classes] of probs [models, N, classes], each row summing to 1 (the
    grid's weights do but for rounding)."""
    out = np.tensordot(weights, probs, axes=1)
    return out / out.sum(-1, keepdims=True)


def choose(probs: np.ndarray, targets: np.ndarray, step: float) -> np.ndarray:
    """The grid's weights whose fused probabilities have the lowest cross-entropy on `targets`
    (probs [models, N, classes]); cross-entropy rather than accuracy, since validation
    accuracy is near 1 for most weights and cannot tell them apart."""
    grid = simplex(probs.shape[0], step)
    picked = np.einsum("gm,mn->gn", grid, probs[:, np.arange(len(targets)), targets])
    losses = -np.log(np.clip(picked, 1e-12, 1.0)).mean(1)
    # the first of the grid's order among losses equal but for rounding
    return grid[int(np.flatnonzero(losses <= losses.min() + 1e-9)[0])]
