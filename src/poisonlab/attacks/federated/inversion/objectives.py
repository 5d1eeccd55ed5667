"""Gradient-matching costs and the total-variation image prior of the gradient inversion attacks."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def cosine_cost(rec: Sequence[torch.Tensor], target: Sequence[torch.Tensor]) -> torch.Tensor:
    """``1 - <g_rec, g_target> / (|g_rec| |g_target|)`` over the concatenation of all parameter blocks
    (inverting-gradients' ``cost_fn='sim'`` with ``indices='def'``; breaching's ``cosine-similarity``)."""
    dot = sum((r * t).sum() for r, t in zip(rec, target))
    rec_sq = sum(r.pow(2).sum() for r in rec)
    tgt_sq = sum(t.pow(2).sum() for t in target)
    return 1 - dot / rec_sq.sqrt() / tgt_sq.sqrt()


def euclidean_cost(rec: Sequence[torch.Tensor], target: Sequence[torch.Tensor]) -> torch.Tensor:
    """``sum_l |g_rec,l - g_target,l|^2`` (DLG, Zhu et al. 2019; inverting-gradients' ``cost_fn='l2'``)."""
    return sum((r - t).pow(2).sum() for r, t in zip(rec, target))


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic TV: ``mean |x[..., :, 1:] - x[..., :, :-1]| + mean |x[..., 1:, :] - x[..., :-1, :]|``."""
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean()
    return dx + dy


COSTS = {"cosine": cosine_cost, "euclidean": euclidean_cost}
