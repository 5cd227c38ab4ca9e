"""The min-norm point of a few gradients' convex hull: MORE's per-batch source weights.

MORE (Zeng et al., eq. 9) weights K preference sources' losses by the λ on the simplex that
minimises ‖Σ_k λ_k g_k‖², where g_k is source k's gradient of the reward loss with respect to the
reward head's parameters. Solved with Frank–Wolfe as in Sener & Koltun (2018): start from the best
pair (exact for two sources), then move towards the vertex with the smallest directional
derivative, with an exact line search each time. Everything runs on the K×K Gram matrix, so the
cost does not depend on how many parameters the head has.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _segment_min(aa: float, ab: float, bb: float) -> tuple[float, float]:
    """argmin over γ in [0, 1] of ‖γ·a + (1 − γ)·b‖², from the Gram entries; returns (γ, value)."""
    curvature = aa - 2 * ab + bb  # ‖a − b‖²
    gamma = 0.0 if curvature <= 1e-20 else float(np.clip((bb - ab) / curvature, 0.0, 1.0))
    return gamma, gamma * gamma * aa + 2 * gamma * (1 - gamma) * ab + (1 - gamma) ** 2 * bb


def min_norm_weights(grads: Sequence[Sequence[float]] | np.ndarray, *, max_iter: int = 1000,
                     tol: float = 1e-12) -> np.ndarray:
    """λ (length K, non-negative, summing to 1) minimising ‖Σ_k λ_k · grads[k]‖².

    `grads` is K gradient vectors (a K×d array, or a torch tensor moved to numpy by the caller).
    Stops when a Frank–Wolfe step moves λ by less than `tol` (L1) or after `max_iter` steps.
    """
    g = np.asarray(grads, dtype=np.float64)
    if g.ndim != 2 or g.shape[0] == 0:
        raise ValueError(f"grads must be a non-empty K×d array of K gradients, got shape {g.shape}")
    k = g.shape[0]
    if k == 1:
        return np.ones(1)
    gram = g @ g.T

    # Best pair first (Sener & Koltun): exact for two sources, a good start for more.
    best_value, weights = np.inf, np.full(k, 1.0 / k)
    for i in range(k):
        for j in range(i + 1, k):
            gamma, value = _segment_min(gram[i, i], gram[i, j], gram[j, j])
            if value < best_value:
                best_value, weights = value, np.zeros(k)
                weights[i], weights[j] = gamma, 1.0 - gamma
    if k == 2:
        return weights

    for _ in range(max_iter):
        directional = gram @ weights  # ∇ of ½‖Σ λ g‖² with respect to λ
        vertex = int(np.argmin(directional))
        # Line search on the segment from the current point v = Σ λ g towards g_vertex.
        vv = float(weights @ directional)
        gamma, _ = _segment_min(gram[vertex, vertex], float(directional[vertex]), vv)
        step = -gamma * weights
        step[vertex] += gamma
        weights = weights + step
        if np.abs(step).sum() < tol:
            break
    weights = np.clip(weights, 0.0, None)
    return weights / weights.sum()


def min_norm_value(grads: Sequence[Sequence[float]] | np.ndarray, weights: Sequence[float]) -> float:
    """‖Σ_k weights[k] · grads[k]‖, the quantity `min_norm_weights` minimises (square-rooted)."""
    return float(np.linalg.norm(np.asarray(weights, dtype=np.float64) @ np.asarray(grads, dtype=np.float64)))
