"""Multi-layer perceptron on flattened pixels."""

from __future__ import annotations

from torch import nn


class MLP(nn.Module):
    """Flatten -> [Linear(width) -> ReLU] x depth -> Linear(num_classes).

    Args:
        in_features: C*H*W.
        num_classes: output logits.
        width: hidden units per layer (default 256).
        depth: hidden layers (default 2).
    """

    def __init__(self, in_features: int, num_classes: int, width: int = 256, depth: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        d = in_features
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.ReLU()]
            d = width
        layers.append(nn.Linear(d, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):  # noqa: D102
        return self.net(x)
