"""Scoring a reconstruction against the private batch (the evaluator's side, never the attacker's)."""

from __future__ import annotations

from typing import Any

import torch
from scipy.optimize import linear_sum_assignment

from poisonlab.attacks.federated.inversion.reconstruction import Reconstruction
from poisonlab.metrics.image import image_metrics, mse


def match_order(recon: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """The permutation ``p`` minimising the summed MSE of ``recon[p[i]]`` against ``truth[i]`` (a batch's
    order is not identifiable from its mean gradient; breaching's ``order_batch`` does the same)."""
    b = truth.shape[0]
    pair = mse(recon.repeat_interleave(b, 0), truth.repeat(b, 1, 1, 1)).reshape(b, b)  # [rec, truth]
    rows, cols = linear_sum_assignment(pair.T.cpu().numpy())
    order = torch.empty(b, dtype=torch.long)
    order[torch.as_tensor(rows)] = torch.as_tensor(cols)
    return order


def score_reconstruction(rec: Reconstruction, truth: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """Per-image MSE/PSNR/SSIM after optimal matching, and the fraction of labels recovered (as multisets)."""
    if rec.images.shape != truth.shape:  # e.g. analytic inversion of a batch yields one mixture image
        metrics = image_metrics(rec.images.expand_as(truth), truth)
        order = torch.zeros(truth.shape[0], dtype=torch.long)
    else:
        order = match_order(rec.images, truth)
        metrics = image_metrics(rec.images[order], truth)
    true_counts = torch.bincount(labels.cpu(), minlength=1)
    rec_counts = torch.bincount(rec.labels.cpu(), minlength=1)
    k = max(len(true_counts), len(rec_counts))
    overlap = torch.minimum(
        torch.nn.functional.pad(true_counts, (0, k - len(true_counts))),
        torch.nn.functional.pad(rec_counts, (0, k - len(rec_counts))),
    ).sum()
    return {**metrics, "order": order.tolist(), "label_accuracy": float(overlap) / len(labels)}
