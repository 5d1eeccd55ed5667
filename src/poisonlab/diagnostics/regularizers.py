"""Regularisers of "Truth or Backpropaganda?" as Trainer hooks: rank lowering (or raising) of convolution operators
and the norm bias. Plain weight decay is the recipe's own ``train.weight_decay``.

Goldblum, Geiping, Schwarzschild, Moeller & Goldstein, ICLR 2020, arXiv 1910.00359; reference code
``goldblum/TruthOrBackpropaganda`` (``Rank_study/utils.py``: ``clip_network`` / ``max_rank``;
``NormBias/main.py``: ``BN_higherNorm_1norm``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from poisonlab.diagnostics.norms import squared_norm
from poisonlab.diagnostics.spectra import _fft_size, conv_input_sizes, conv_transform
from poisonlab.errors import ConfigError
from poisonlab.training.hooks import Batch, TrainingHook

if TYPE_CHECKING:
    from poisonlab.training.trainer import Trainer


def project_conv_spectrum(
    weight: torch.Tensor,
    input_size: tuple[int, int],
    threshold: float,
    mode: Literal["lower", "raise"],
    groups: int = 1,
) -> torch.Tensor:
    """The kernel after thresholding the singular values of its convolution operator (see :mod:`.spectra`).

    ``"lower"`` sets singular values below ``threshold`` to zero (hard thresholding: lowers the rank);
    ``"raise"`` caps those above it at ``threshold`` (flattens the spectrum: raises the effective rank). The operator
    is rebuilt frequency by frequency, brought back with the inverse DFT, and its real part is cropped to the
    kernel's support, as the reference code does (so the result is the nearest kernel of the original size, not an
    exact low-rank operator).
    """
    t = conv_transform(weight.detach().double(), input_size, groups)  # (g, n, m, o, i)
    u, s, vh = torch.linalg.svd(t, full_matrices=False)
    s = torch.where(s < threshold, torch.zeros_like(s), s) if mode == "lower" else s.clamp(max=threshold)
    rebuilt = (u * s.to(u.dtype).unsqueeze(-2)) @ vh  # (g, n, m, o, i)
    kernel = torch.fft.ifft2(rebuilt.permute(0, 3, 4, 1, 2), dim=(-2, -1)).real  # (g, o, i, n, m)
    kh, kw = weight.shape[-2:]
    kernel = kernel[..., :kh, :kw].reshape(weight.shape)
    return kernel.to(weight.dtype)


class SpectralProjection(TrainingHook):
    """Lower (or raise) the rank of convolution operators at chosen epochs, as in "Truth or Backpropaganda?".

    Goldblum et al. (arXiv 1910.00359), rank section; reference ``Rank_study/train_net.py`` with ``--rankmin``: after
    the epochs in ``rank_sched`` (default 15, 30, 40 of 100, the same epochs as the learning-rate drops) every
    convolution except the first has the singular values of its operator below ``clip_to = 0.5`` set to zero
    (``--rankmax``: those above ``max_sig = 1.5`` capped). Paper defaults: threshold 0.5 (lower) / 1.5 (raise).

    Threat model: none (a training regulariser used to test whether low rank goes with generalisation and
    robustness).

    Args:
        model: the network being trained (its convolutions' input sizes are measured once here).
        input_shape: ``(C, H, W)`` of one training input.
        at_epochs: 0-based epoch indices after which to project (the reference's ``rank_sched``).
        threshold: singular-value threshold.
        mode: ``"lower"`` (rank minimisation) or ``"raise"`` (rank maximisation).
        skip_first: leave the first convolution alone (the reference skips ``conv1``).
        include_linear: also threshold the singular values of Linear weights (not in the reference).
    """

    def __init__(
        self,
        model: nn.Module,
        input_shape: tuple[int, ...],
        at_epochs: Sequence[int],
        threshold: float = 0.5,
        mode: Literal["lower", "raise"] = "lower",
        skip_first: bool = True,
        include_linear: bool = False,
    ) -> None:
        if mode not in ("lower", "raise"):
            raise ConfigError(f"rank_projection.mode: expected 'lower' or 'raise', got {mode!r}")
        if not threshold > 0:
            raise ConfigError(f"rank_projection.threshold: expected > 0, got {threshold!r}")
        self.at_epochs = frozenset(int(e) for e in at_epochs)
        self.threshold = float(threshold)
        self.mode = mode
        self.include_linear = include_linear
        sizes = conv_input_sizes(model, input_shape)
        convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        if skip_first:
            convs = convs[1:]
        self.convs = [(m, sizes[n]) for n, m in convs]
        self.linears = [m for m in model.modules() if isinstance(m, nn.Linear)] if include_linear else []
        self.applied: list[int] = []

    def project(self) -> None:
        """Apply the projection to every selected layer now."""
        with torch.no_grad():
            for m, size in self.convs:
                m.weight.copy_(project_conv_spectrum(m.weight, size, self.threshold, self.mode, m.groups))
            for m in self.linears:
                u, s, vh = torch.linalg.svd(m.weight.double(), full_matrices=False)
                s = torch.where(s < self.threshold, 0.0, s) if self.mode == "lower" else s.clamp(max=self.threshold)
                m.weight.copy_(((u * s) @ vh).to(m.weight.dtype))

    def on_epoch(self, trainer: Trainer, stats: dict[str, float]) -> None:
        if trainer.epoch in self.at_epochs:
            self.project()
            self.applied.append(trainer.epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"applied": list(self.applied)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.applied = [int(e) for e in state["applied"]]


class NuclearNormPenalty(TrainingHook):
    """A differentiable rank-lowering penalty: ``weight * sum_l ||A_l||_* / (n_l m_l)`` over convolution operators.

    ``||A||_*`` is the nuclear norm (sum of singular values, the convex envelope of rank on the spectral-norm ball)
    of each convolution's operator on its input size, as the reference's ``get_nuclear_norm`` helper computes it via
    the DFT; dividing by the number of frequencies makes it the mean per-frequency nuclear norm. A smooth
    alternative to :class:`SpectralProjection` (not the paper's training method).

    Threat model: none (a training regulariser).

    Args:
        model: the network; input sizes are measured once.
        input_shape: ``(C, H, W)`` of one training input.
        weight: penalty coefficient (> 0).
        skip_first: leave the first convolution out.
    """

    def __init__(self, model: nn.Module, input_shape: tuple[int, ...], weight: float, skip_first: bool = True) -> None:
        if not weight > 0:
            raise ConfigError(f"nuclear_norm.weight: expected > 0, got {weight!r}")
        self.weight = float(weight)
        sizes = conv_input_sizes(model, input_shape)
        convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        self.convs = [(m, sizes[n]) for n, m in (convs[1:] if skip_first else convs)]

    def penalty(self) -> torch.Tensor:
        terms = []
        for m, size in self.convs:
            n, k = _fft_size(m.weight, size)
            terms.append(torch.linalg.svdvals(conv_transform(m.weight, size, m.groups)).sum() / (n * k))
        return torch.stack(terms).sum() if terms else torch.zeros(())

    def on_loss(self, trainer: Trainer, batch: Batch, logits: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        return loss + self.weight * self.penalty().to(loss.dtype)


class NormBias(TrainingHook):
    """The norm bias of "Truth or Backpropaganda?": pull the squared parameter norm towards a target ``mu``.

    Goldblum et al. (arXiv 1910.00359), weight-decay section: replace weight decay's ``(lambda/2) ||theta||^2`` with
    ``(lambda/2) | ||theta||^2 - mu |``, whose gradient ``lambda * sign(||theta||^2 - mu) * theta`` is exactly the
    reference's ``BN_higherNorm_1norm`` update (``NormBias/main.py``, with the optimizer's own weight decay set to 0).
    ``mu = 0`` is plain weight decay; ``mu`` above the natural norm pushes the norm up to it. ``theta`` is every
    trainable parameter, as in the reference.

    Threat model: none (a training regulariser).

    Args:
        model: the network being trained.
        weight: lambda (the reference reuses its ``--weight_decay`` value).
        target_sq_norm: mu, the target squared l2 norm; or
        target_ratio: mu as a multiple of the squared norm of ``model``'s parameters now (its initialisation).
    """

    def __init__(
        self,
        model: nn.Module,
        weight: float,
        target_sq_norm: float | None = None,
        target_ratio: float | None = None,
    ) -> None:
        if not weight > 0:
            raise ConfigError(f"norm_bias.weight: expected > 0, got {weight!r}")
        if (target_sq_norm is None) == (target_ratio is None):
            raise ConfigError("norm_bias: give exactly one of target_sq_norm and target_ratio")
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.weight = float(weight)
        if target_ratio is not None:
            if not target_ratio >= 0:
                raise ConfigError(f"norm_bias.target_ratio: expected >= 0, got {target_ratio!r}")
            with torch.no_grad():
                target_sq_norm = float(target_ratio) * float(squared_norm(self.params))
        if not target_sq_norm >= 0:  # type: ignore[operator]
            raise ConfigError(f"norm_bias.target_sq_norm: expected >= 0, got {target_sq_norm!r}")
        self.target = float(target_sq_norm)  # type: ignore[arg-type]
        self.history: list[float] = []

    def penalty(self) -> torch.Tensor:
        return 0.5 * self.weight * (squared_norm(self.params) - self.target).abs()

    def on_loss(self, trainer: Trainer, batch: Batch, logits: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        return loss + self.penalty().to(loss.dtype)

    def on_epoch(self, trainer: Trainer, stats: dict[str, float]) -> None:
        with torch.no_grad():
            self.history.append(float(squared_norm(self.params)))

    def state_dict(self) -> dict[str, Any]:
        return {"target": self.target, "history": list(self.history)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.target = float(state["target"])
        self.history = [float(v) for v in state["history"]]
