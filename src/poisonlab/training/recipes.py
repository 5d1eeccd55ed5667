"""Optimiser and learning-rate schedule for a TrainConfig."""

from __future__ import annotations

import torch
from torch import nn

from poisonlab.config import TrainConfig


def milestones(epochs: int) -> list[int]:
    """Multi-step decay points at 3/8, 5/8 and 7/8 of training (the reference ``epochs // 2.667`` etc.)."""
    return sorted({int(epochs // 2.667), int(epochs // 1.6), int(epochs // 1.142)} - {0})


def build_optimizer(
    params: list[nn.Parameter] | nn.Module, recipe: TrainConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The optimizer and its per-epoch scheduler."""
    if isinstance(params, nn.Module):
        params = list(params.parameters())
    if recipe.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            params,
            lr=recipe.lr,
            momentum=recipe.momentum,
            nesterov=recipe.nesterov,
            weight_decay=recipe.weight_decay,
        )
    else:
        opt = torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    if recipe.schedule == "multistep":
        sched: torch.optim.lr_scheduler.LRScheduler = torch.optim.lr_scheduler.MultiStepLR(
            opt, milestones=milestones(recipe.epochs), gamma=0.1
        )
    elif recipe.schedule == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=recipe.epochs)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    return opt, sched
