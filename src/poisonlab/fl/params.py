"""A model's trainable parameters as one flat vector: what federated clients send and servers average."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from poisonlab.errors import ConfigError


@dataclass(frozen=True)
class ParamLayout:
    """Names and shapes of a model's parameters in ``named_parameters()`` order.

    Only parameters are federated. Buffers must be constants (the input normalisation); a model with
    BatchNorm running statistics is refused, since averaging them is a different algorithm.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, model: nn.Module) -> ParamLayout:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                raise ConfigError(
                    "model.norm: federated learning averages parameters only; use norm 'none' or 'group', not batch"
                )
        named = list(model.named_parameters())
        return cls(tuple(n for n, _ in named), tuple(tuple(p.shape) for _, p in named))

    @property
    def size(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    def flatten(self, model: nn.Module) -> torch.Tensor:
        """The model's parameters as a fresh (D,) vector."""
        params = dict(model.named_parameters())
        return torch.cat([params[n].detach().reshape(-1) for n in self.names]).clone()

    def unflatten(self, vec: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of ``vec`` (..., D) shaped as the parameters (..., *shape), keyed by name."""
        out, start = {}, 0
        lead = vec.shape[:-1]
        for name, shape in zip(self.names, self.shapes):
            k = math.prod(shape)
            out[name] = vec[..., start : start + k].reshape(*lead, *shape)
            start += k
        return out

    @torch.no_grad()
    def load_into(self, model: nn.Module, vec: torch.Tensor) -> nn.Module:
        """Copy ``vec`` into ``model``'s parameters; returns the model."""
        params = dict(model.named_parameters())
        for name, value in self.unflatten(vec).items():
            params[name].copy_(value)
        return model
