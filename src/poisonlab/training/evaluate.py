"""Clean evaluation of a model on a dataset (no_grad, eval mode)."""

from __future__ import annotations

import torch
from torch import nn

from poisonlab.data.dataset import Dataset


@torch.no_grad()
def predict_logits(model: nn.Module, data: Dataset, batch_size: int = 1000) -> torch.Tensor:
    """Logits for every sample, in dataset order; the model's train/eval mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        outs = [model(data.images[i : i + batch_size].to(device)) for i in range(0, len(data), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(outs) if outs else torch.zeros(0, data.num_classes)


def evaluate(model: nn.Module, data: Dataset, batch_size: int = 1000) -> dict[str, float]:
    """Accuracy and mean cross-entropy loss of ``model`` on ``data``."""
    logits = predict_logits(model, data, batch_size)
    labels = data.labels.to(logits.device)
    loss = nn.functional.cross_entropy(logits.float(), labels).item() if len(data) else float("nan")
    acc = (logits.argmax(1) == labels).float().mean().item() if len(data) else float("nan")
    return {"accuracy": acc, "loss": loss, "n": float(len(data))}
