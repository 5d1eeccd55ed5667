"""LiRA, the likelihood-ratio membership-inference attack, and the global-threshold baseline.

Paper: Carlini, Chien, Nasr, Song, Terzis, Tramèr, "Membership Inference Attacks From First Principles",
IEEE S&P 2022; reference code ``tensorflow/privacy:research/mi_lira_2021`` (``score.py``, ``plot.py``) and
``research/mi_poison_2022/plot_poison.py`` (scores pooled over leave-one-model-out rotations).

Threat model: black-box access to the target model's logits on chosen inputs; the attacker knows the
target record (x, y) and can train shadow models of the same architecture and recipe on data from the same
distribution (random halves of a universe that contains x in half of them).

Scores are ``phi = log p_y - log(1 - p_y)`` (logit-scaled confidence), computed in float64 as
``z_y - logsumexp_{j != y} z_j`` (exact, no ``1 - p`` cancellation), one per query view (the image and small
shifts of it). Per view, the attack fits Gaussians to the shadow models' phi (median as the mean, as the
reference) and the per-view log-likelihood ratios are averaged over views. A higher score means "member".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from poisonlab.errors import ConfigError

ATTACKS: tuple[str, ...] = ("lira-online-fixed", "lira-online", "lira-offline-fixed", "lira-offline", "global")


def logit_scaled_confidence(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """phi = log(p_y / (1 - p_y)) from logits (..., C) and labels (...), in float64, stable for p_y -> 0 or 1."""
    z = logits.double()
    y = labels.long().unsqueeze(-1).expand(*z.shape[:-1], 1)
    z_true = z.gather(-1, y).squeeze(-1)
    others = z.scatter(-1, y, -math.inf)
    return z_true - torch.logsumexp(others, -1)


def query_shifts(max_shift: int) -> list[tuple[int, int]]:
    """Query views: the identity, then shifts by up to ``max_shift`` pixels along each axis (no flips:
    flipping a digit changes its meaning). ``max_shift=1`` gives 5 views."""
    views = [(0, 0)]
    for s in range(1, max_shift + 1):
        views += [(s, 0), (-s, 0), (0, s), (0, -s)]
    return views


def shift_images(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Translate images (B, C, H, W) by (dy, dx) pixels with zero fill."""
    if dy == 0 and dx == 0:
        return x
    h, w = x.shape[-2:]
    out = torch.zeros_like(x)
    out[..., max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = x[
        ..., max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


@torch.no_grad()
def model_phi(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    views: Sequence[tuple[int, int]] = ((0, 0),),
    batch_size: int = 1000,
) -> torch.Tensor:
    """phi of ``model`` (eval mode) on every image and view: (n, len(views)) float64."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        cols = []
        for dy, dx in views:
            parts = []
            for i in range(0, len(images), batch_size):
                x = shift_images(images[i : i + batch_size].to(device), dy, dx)
                parts.append(logit_scaled_confidence(model(x), labels[i : i + batch_size].to(device)).cpu())
            cols.append(torch.cat(parts))
    finally:
        model.train(was_training)
    return torch.stack(cols, 1)


def _masked(phi: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.where(mask[:, :, None], phi, np.nan)


def _balanced(mask: np.ndarray, which: str) -> np.ndarray:
    """Keep, for every point, only its first ``k`` shadow models of the group (model order), ``k`` the
    smallest group size over the points, as the reference's ``x[:in_size]`` truncation does. Without it, the
    leave-one-model-out rotations give a target's IN points one fewer IN shadow than its OUT points, and the
    noisier median alone pushes the online score of members down (AUC ~0.47 on identical distributions)."""
    counts = mask.sum(0)
    if (counts == 0).any():
        raise ConfigError(f"mia.shadows: some points have no {which} shadow model; train more shadow models")
    return mask & (np.cumsum(mask, 0) <= counts.min())


def _normal_logpdf(x: np.ndarray, mu: np.ndarray, sigma: np.ndarray | float) -> np.ndarray:
    return -0.5 * ((x - mu) / sigma) ** 2 - np.log(sigma) - 0.5 * math.log(2 * math.pi)


def _fit(phi: np.ndarray, mask: np.ndarray, fixed_variance: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-point, per-view median of the masked shadow scores and their spread: the per-point standard
    deviation, or (fixed variance) one standard deviation per view, of the scores around their point's
    median pooled over all points. (The reference pools one scalar over the views too; per view, a shifted
    view that the model never trained on, and whose scores scatter widely, cannot drown the others.)"""
    x = _masked(phi, mask)
    mu = np.nanmedian(x, 0)
    if fixed_variance:
        sigma = np.broadcast_to(np.sqrt(np.nanmean((x - mu[None]) ** 2, axis=(0, 1))), mu.shape)
    else:
        sigma = np.nanstd(x, 0)
    return mu, np.maximum(sigma, 1e-30)


def lira_online(
    shadow_phi: np.ndarray, shadow_keep: np.ndarray, target_phi: np.ndarray, fixed_variance: bool = False
) -> np.ndarray:
    """Online LiRA: ``mean_views [log N(phi; mu_in, s_in^2) - log N(phi; mu_out, s_out^2)]``.

    Args:
        shadow_phi: (S, n, V) shadow models' scores.
        shadow_keep: (S, n) bool, point IN shadow model.
        target_phi: (n, V) the target model's scores.
        fixed_variance: one sigma per view shared by all points (the reference's choice with few shadows;
            the reference uses the IN scores' spread for both Gaussians, as here).
    """
    mu_in, s_in = _fit(shadow_phi, _balanced(shadow_keep, "IN"), fixed_variance)
    mu_out, s_out = _fit(shadow_phi, _balanced(~shadow_keep, "OUT"), fixed_variance)
    if fixed_variance:
        s_out = s_in
    ratio = _normal_logpdf(target_phi, mu_in, s_in) - _normal_logpdf(target_phi, mu_out, s_out)
    return ratio.mean(-1)


def lira_offline(
    shadow_phi: np.ndarray, shadow_keep: np.ndarray, target_phi: np.ndarray, fixed_variance: bool = False
) -> np.ndarray:
    """Offline LiRA (OUT models only), one-sided: ``mean_views log Pr[Z <= phi]`` with Z ~ N(mu_out, s_out^2),
    i.e. a member is a point the target model is more confident on than the OUT models are."""
    from scipy.special import log_ndtr

    mu_out, s_out = _fit(shadow_phi, _balanced(~shadow_keep, "OUT"), fixed_variance)
    return log_ndtr((target_phi - mu_out) / s_out).mean(-1)


def global_threshold(target_phi: np.ndarray) -> np.ndarray:
    """The global threshold baseline (Yeom et al. 2018): the target model's phi averaged over views. phi is a
    decreasing function of the cross-entropy loss, so for one view this is the loss-threshold attack."""
    return target_phi.mean(-1)


def attack_scores(attack: str, shadow_phi: np.ndarray, shadow_keep: np.ndarray, target_phi: np.ndarray) -> np.ndarray:
    """Scores of the named attack (one of :data:`ATTACKS`)."""
    if attack == "global":
        return global_threshold(target_phi)
    if attack.startswith("lira-online"):
        return lira_online(shadow_phi, shadow_keep, target_phi, attack.endswith("fixed"))
    if attack.startswith("lira-offline"):
        return lira_offline(shadow_phi, shadow_keep, target_phi, attack.endswith("fixed"))
    raise ConfigError(f"attack: unknown {attack!r}; expected one of {list(ATTACKS)}")


def pooled_scores(
    attack: str, phi: np.ndarray | torch.Tensor, keep: np.ndarray | torch.Tensor, points: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-model-out: each model in turn is the target and the others its shadows (the reference's
    ``do_plot_all``); the scores of all rotations are concatenated.

    Args:
        attack: one of :data:`ATTACKS`.
        phi: (N, n, V) scores of N models on n points.
        keep: (N, n) membership.
        points: optional positions (of the n) to evaluate; the Gaussians are fitted per point anyway.

    Returns:
        ``(scores, labels)``, each of length ``N * len(points)``, rotation-major.
    """
    phi = phi.numpy() if isinstance(phi, torch.Tensor) else np.asarray(phi)
    keep = keep.numpy() if isinstance(keep, torch.Tensor) else np.asarray(keep, bool)
    if phi.ndim != 3 or keep.shape != phi.shape[:2]:
        raise ValueError(f"phi/keep: expected (N, n, V) and (N, n), got {phi.shape} and {keep.shape}")
    if points is not None:
        phi, keep = phi[:, points], keep[:, points]
    scores, labels = [], []
    all_models = np.arange(len(phi))
    for i in all_models:
        others = all_models != i
        scores.append(attack_scores(attack, phi[others], keep[others], phi[i]))
        labels.append(keep[i])
    return np.concatenate(scores), np.concatenate(labels)
