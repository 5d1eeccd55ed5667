"""Disparate impact of DP-SGD on an under-represented class (Bagdasaryan, Poursaeed & Shmatikov, NeurIPS 2019).

"Differential Privacy Has Disparate Impact on Model Accuracy" (arXiv 1905.12101; code
``ebagdasa/differential-privacy-vs-fairness``): a measurement study, not an attack. Train the same architecture
with the same recipe with and without DP-SGD on data where one group is under-represented (their unbalanced
MNIST keeps ~500 of ~5,000 class-8 images) and compare per-group accuracy. Their finding: the accuracy drop
acc_nonDP(g) - acc_DP(g) is far larger for the small group ("the poor get poorer"), because its examples have
larger gradients, clipping removes more of their signal, and the noise swamps their small summed signal.

Threat model: none (a fairness measurement); DP-SGD as in ALGORITHMS.md section 15.3 with (epsilon, delta)
from the RDP/PRV accountant.

This module holds the pieces (ALGORITHMS.md section 12): :func:`underrepresent` builds the unbalanced training
set, :func:`per_class_accuracy` and :func:`group_accuracy` measure, :class:`ClipStatistics` records the per-class
clipping diagnostics of the DP run, and :func:`summarize_impact` turns per-seed rows into t intervals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from poisonlab.data.dataset import Dataset
from poisonlab.defenses.dp.dp_sgd import DPSGD
from poisonlab.errors import ConfigError
from poisonlab.metrics.intervals import t_interval
from poisonlab.training.evaluate import predict_logits
from poisonlab.training.hooks import Batch, TrainingHook

__all__ = ["ClipStatistics", "group_accuracy", "per_class_accuracy", "summarize_impact", "underrepresent"]


def kept_count(available: int, keep_fraction: float) -> int:
    """``round(keep_fraction * available)``; a fraction that keeps nothing is an error, not a silent no-op.

    Raises:
        ConfigError: ``keep_fraction`` is outside (0, 1] or rounds to 0 images.
    """
    if not (isinstance(keep_fraction, (int, float)) and 0 < keep_fraction <= 1):
        raise ConfigError(f"impact.keep_fraction: expected 0 < fraction <= 1, got {keep_fraction!r}")
    k = int(round(keep_fraction * available))
    if k < 1:
        raise ConfigError(
            f"impact.keep_fraction: {keep_fraction:g} of {available} images rounds to 0; keep at least one"
        )
    return k


def underrepresent(data: Dataset, cls: int, keep_fraction: float, generator: torch.Generator) -> Dataset:
    """A new training set in which class ``cls`` keeps ``round(keep_fraction * n_cls)`` images (chosen uniformly
    at random with ``generator``) and every other class keeps all of its images.

    Rows keep their ids and their original order; ``data`` is never written to (a fresh Dataset is returned).

    Raises:
        ConfigError: ``cls`` is not a class of ``data``, has no images, or the fraction keeps none of them.
    """
    if not (isinstance(cls, int) and 0 <= cls < data.num_classes):
        raise ConfigError(f"impact.underrepresented_class: expected a class in [0, {data.num_classes}), got {cls!r}")
    labels = data.labels.cpu()
    members = (labels == cls).nonzero().squeeze(1)
    if len(members) == 0:
        raise ConfigError(f"impact.underrepresented_class: class {cls} has no training images in {data.name}")
    k = kept_count(len(members), keep_fraction)
    chosen = members[torch.randperm(len(members), generator=generator)[:k]]
    keep = labels != cls
    keep[chosen] = True
    return data.subset(keep.nonzero().squeeze(1))


@torch.no_grad()
def per_class_accuracy(model: nn.Module, data: Dataset) -> tuple[list[int], list[int]]:
    """(correct, total) per class of ``model`` on ``data`` (eval mode; the mode is restored)."""
    logits = predict_logits(model, data)
    labels = data.labels.to(logits.device)
    k = data.num_classes
    correct = torch.bincount(labels[logits.argmax(1) == labels], minlength=k)
    total = torch.bincount(labels, minlength=k)
    return correct.tolist(), total.tolist()


def group_accuracy(correct: Sequence[int], total: Sequence[int], cls: int) -> dict[str, float]:
    """Accuracy of class ``cls`` (the small group), of all other test images pooled ("rest"), overall, and the
    gap rest - small. Classes without test images are left out of the pooled figures."""
    rest_c = sum(c for i, c in enumerate(correct) if i != cls)
    rest_n = sum(n for i, n in enumerate(total) if i != cls)
    small = correct[cls] / total[cls] if total[cls] else math.nan
    rest = rest_c / rest_n if rest_n else math.nan
    overall = sum(correct) / sum(total) if sum(total) else math.nan
    return {"acc_small": small, "acc_rest": rest, "acc_overall": overall, "gap": rest - small}


class ClipStatistics(TrainingHook):
    """Per-class clipping diagnostics of a DP-SGD run (paper section 5: the small group's gradients are larger
    and clipped more often). Place it after the :class:`DPSGD` hook; after each update it reads the update's
    per-example gradient norms (before clipping) and the labels of the Poisson sample.

    Args:
        dp: the run's DP-SGD hook.
        num_classes: K.
    """

    def __init__(self, dp: DPSGD, num_classes: int) -> None:
        self.dp = dp
        self.num_classes = num_classes
        self.count = torch.zeros(num_classes, dtype=torch.float64)
        self.clipped = torch.zeros(num_classes, dtype=torch.float64)
        self.norm_sum = torch.zeros(num_classes, dtype=torch.float64)

    def on_step(self, trainer: Any, batch: Batch, loss: torch.Tensor) -> None:
        norms = self.dp.last_norms
        if norms is None or norms.numel() == 0:
            return
        y = (batch.y if batch.y.dim() == 1 else batch.y.argmax(1)).cpu()
        norms = norms.detach().double().cpu()
        k = self.num_classes
        self.count += torch.bincount(y, minlength=k).double()
        self.clipped += torch.bincount(y, weights=(norms > self.dp.max_grad_norm).double(), minlength=k)
        self.norm_sum += torch.bincount(y, weights=norms, minlength=k)

    def summary(self) -> dict[str, list[float]]:
        """Per class: examples seen in updates, fraction clipped and mean gradient norm (NaN if never seen)."""
        seen = self.count.clamp(min=1)
        nan = torch.full_like(self.count, math.nan)
        frac = torch.where(self.count > 0, self.clipped / seen, nan)
        mean = torch.where(self.count > 0, self.norm_sum / seen, nan)
        return {"seen": self.count.tolist(), "fraction_clipped": frac.tolist(), "mean_grad_norm": mean.tolist()}

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count.clone(), "clipped": self.clipped.clone(), "norm_sum": self.norm_sum.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count = state["count"].to(torch.float64).clone()
        self.clipped = state["clipped"].to(torch.float64).clone()
        self.norm_sum = state["norm_sum"].to(torch.float64).clone()


def _iv(values: Sequence[float]) -> dict[str, float | None]:
    mean, lo, hi = t_interval(values)
    return {"mean": mean, "lo": None if math.isnan(lo) else lo, "hi": None if math.isnan(hi) else hi, "n": len(values)}


def summarize_impact(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """95% Student-t intervals over seeds of each arm's group accuracies and gap, and of the paired (same seed)
    accuracy drops nonDP - DP per group and the difference of gaps DP - nonDP.

    Args:
        rows: per-(seed, arm) rows with keys "seed", "arm" ("non-private" or "dp-sgd"), "acc_small",
            "acc_rest", "acc_overall", "gap", "per_class_accuracy".

    Returns:
        {"arms": {arm: {metric: interval}}, "drop": {...}, "seeds": [...], "effect": {...}} where "effect" says
        whether the DP gap exceeds the non-DP gap (interval of the difference above 0) and the ratio of mean
        drops small / rest.
    """
    by_arm: dict[str, dict[int, dict[str, Any]]] = {}
    for r in rows:
        by_arm.setdefault(r["arm"], {})[r["seed"]] = r
    metrics = ("acc_small", "acc_rest", "acc_overall", "gap")
    out: dict[str, Any] = {"arms": {}}
    for arm, per_seed in by_arm.items():
        out["arms"][arm] = {m: _iv([per_seed[s][m] for s in sorted(per_seed)]) for m in metrics}
        k = len(next(iter(per_seed.values()))["per_class_accuracy"])
        out["arms"][arm]["per_class_accuracy"] = [
            _iv([per_seed[s]["per_class_accuracy"][c] for s in sorted(per_seed)]) for c in range(k)
        ]
    private, public = by_arm.get("dp-sgd", {}), by_arm.get("non-private", {})
    paired = sorted(set(private) & set(public))
    out["seeds"] = paired
    if paired:
        drop = {
            f"drop_{g}": _iv([public[s][f"acc_{g}"] - private[s][f"acc_{g}"] for s in paired])
            for g in ("small", "rest", "overall")
        }
        drop["gap_increase"] = _iv([private[s]["gap"] - public[s]["gap"] for s in paired])
        out["drop"] = drop
        rest = drop["drop_rest"]["mean"]
        lo = drop["gap_increase"]["lo"]
        out["effect"] = {
            "dp_gap_larger": drop["gap_increase"]["mean"] > 0,
            "dp_gap_larger_significant": lo is not None and lo > 0,
            "drop_ratio_small_over_rest": drop["drop_small"]["mean"] / rest if rest else None,
        }
    return out
