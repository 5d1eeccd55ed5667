"""Signed Adam on an input perturbation, with a per-channel step scale and the reference's step decay.

The gradient-matching reference optimises the perturbation in the model's normalised units
``delta_n = delta / std`` with ``torch.optim.Adam`` fed ``sign(grad)``. Because Adam only sees the sign,
its moments are the same in either parametrisation, and the step in pixel units is exactly the
normalised step times ``std`` per channel. :class:`SignedAdam` therefore works on the pixel-space
delta directly with ``scale = std``: same iterates as the reference, no implicit units.
"""

from __future__ import annotations

import math
from typing import Any

import torch


class SignedAdam:
    """Adam (Kingma & Ba) whose gradient is replaced by its sign; arithmetic as ``torch.optim.Adam``
    (single-tensor path, no weight decay, no amsgrad).

    Args:
        lr: base step size, in the units that ``scale`` converts from (normalised units for ``scale=std``).
        scale: tensor broadcastable to the parameter, multiplying every step (per-channel ``std``).
        betas: Adam's moment decay rates.
        eps: Adam's denominator epsilon (applied in the unscaled units, as in the reference).
    """

    def __init__(
        self,
        lr: float,
        scale: torch.Tensor | float = 1.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.lr = float(lr)
        self.scale = scale
        self.betas = betas
        self.eps = eps
        self.t = 0
        self.exp_avg: torch.Tensor | None = None
        self.exp_avg_sq: torch.Tensor | None = None

    def step(self, param: torch.Tensor, grad: torch.Tensor, lr_factor: float = 1.0) -> torch.Tensor:
        """The updated parameter ``param - lr * lr_factor * scale * m_hat / (sqrt(v_hat) + eps)`` with
        moments of ``sign(grad)``. ``param`` is not modified in place."""
        g = grad.sign()
        b1, b2 = self.betas
        if self.exp_avg is None or self.exp_avg_sq is None:
            self.exp_avg = torch.zeros_like(param)
            self.exp_avg_sq = torch.zeros_like(param)
        self.t += 1
        self.exp_avg.lerp_(g, 1 - b1)
        self.exp_avg_sq.mul_(b2).addcmul_(g, g, value=1 - b2)
        step_size = self.lr * lr_factor / (1 - b1**self.t)
        denom = (self.exp_avg_sq.sqrt() / math.sqrt(1 - b2**self.t)).add_(self.eps)
        return param - step_size * self.scale * (self.exp_avg / denom)

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t, "exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t = int(state["t"])
        self.exp_avg = state["exp_avg"]
        self.exp_avg_sq = state["exp_avg_sq"]


def step_decay(step: int, steps: int, enabled: bool = True) -> float:
    """Learning-rate factor at optimiser step ``step`` (0-based) of ``steps``: x0.1 at each of the milestones
    ``steps // 2.667``, ``steps // 1.6`` and ``steps // 1.142`` already reached, counted with multiplicity.

    This is what ``MultiStepLR(milestones=[M // 2.667, M // 1.6, M // 1.142], gamma=0.1)`` stepped after every
    optimiser step yields (so for tiny M a milestone of 0 already applies to the first step).
    """
    if not enabled:
        return 1.0
    marks = (steps // 2.667, steps // 1.6, steps // 1.142)
    return 0.1 ** sum(step >= m for m in marks)


class SignedStep:
    """Plain PGD: ``param - lr * lr_factor * scale * sign(grad)`` (the reference's ``--attackoptim PGD``).
    Stateless; ``state_dict`` exists so it checkpoints like :class:`SignedAdam`."""

    def __init__(self, lr: float, scale: torch.Tensor | float = 1.0) -> None:
        self.lr = float(lr)
        self.scale = scale

    def step(self, param: torch.Tensor, grad: torch.Tensor, lr_factor: float = 1.0) -> torch.Tensor:
        return param - self.lr * lr_factor * self.scale * grad.sign()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None
