"""TrainingHook: how defenses and training-time attacks plug into the Trainer without forking it."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from poisonlab.training.trainer import Trainer


@dataclass(frozen=True)
class Batch:
    """One minibatch: inputs, labels and the sample ids they came from."""

    x: torch.Tensor
    y: torch.Tensor
    ids: torch.Tensor

    def with_(self, **changes: Any) -> Batch:
        return replace(self, **changes)


class TrainingHook:
    """Base class; override only what you need. Called in registration order.

    - ``on_batch``: change the batch before the forward pass (augmentation, injection, mixup).
    - ``on_loss``: change the loss (loss-computation compromise, regularisers). ``logits`` is the
      model output for ``batch.x``.
    - ``on_grads``: after backward, before the optimizer step (clipping, noise).
    - ``on_step``: after the optimizer step.
    - ``on_epoch``: after each epoch, with the epoch's statistics.
    Hooks with progress implement ``state_dict``/``load_state_dict`` so a resumed run matches.
    """

    def on_batch(self, trainer: Trainer, batch: Batch) -> Batch:
        return batch

    def on_loss(self, trainer: Trainer, batch: Batch, logits: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        return loss

    def on_grads(self, trainer: Trainer, batch: Batch) -> None:
        return None

    def on_step(self, trainer: Trainer, batch: Batch, loss: torch.Tensor) -> None:
        return None

    def on_epoch(self, trainer: Trainer, stats: dict[str, float]) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None
