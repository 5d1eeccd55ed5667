"""Exposure of a secret (Carlini, Liu, Erlingsson, Kos, Song, "The Secret Sharer", USENIX Security 2019).

For a canary with secret s* drawn uniformly from a candidate space R, rank every candidate by the model's
likelihood (or a calibrated score; higher = more likely) and take the rank of s* (1 = the model's top guess):

    exposure = log2 |R| - log2 rank(s*)

so exposure ranges from 0 (s* ranked last) to log2 |R| (s* ranked first: extracted). Ties are broken in the
secret's favour: ``rank = 1 + #{candidates scoring strictly higher}``.
"""

from __future__ import annotations

import math

import torch


def secret_rank(scores: torch.Tensor, true_index: int) -> int:
    """Rank of candidate ``true_index`` among ``scores`` (higher is better); 1 + the number strictly higher.

    Vectorised over the whole candidate space (one comparison per candidate, no sort).
    """
    scores = scores.reshape(-1)
    if not 0 <= true_index < scores.numel():
        raise ValueError(f"true_index: expected 0 <= index < {scores.numel()}, got {true_index}")
    return 1 + int((scores > scores[true_index]).sum())


def exposure(rank: int, space_size: int) -> float:
    """``log2(space_size) - log2(rank)``; rank 1 gives the maximum ``log2(space_size)``."""
    if space_size < 1 or not 1 <= rank <= space_size:
        raise ValueError(f"exposure: need 1 <= rank <= space_size, got rank {rank} of {space_size}")
    return math.log2(space_size) - math.log2(rank)


def exposure_of(scores: torch.Tensor, true_index: int) -> dict[str, float]:
    """Rank, exposure and whether the secret is extracted (rank 1) from scores over the whole space."""
    rank = secret_rank(scores, true_index)
    n = scores.numel()
    return {"rank": rank, "space": n, "exposure": exposure(rank, n), "extracted": float(rank == 1)}
