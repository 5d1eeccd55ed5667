"""DP-SGD (Abadi et al., CCS 2016) as a Trainer hook: Poisson sampling, per-sample clipping, Gaussian noise, accounting.

Importing this module registers the hook as ``"dp-sgd"`` in :data:`~poisonlab.defenses.DEFENSES`.

    >>> hook = DPSGD(10, torch.Generator().manual_seed(0), noise_multiplier=1.1, max_grad_norm=1.0)
    >>> Trainer(model, data, recipe, seeds, hooks=[hook]).fit()  # doctest: +SKIP
    >>> hook.epsilon()  # doctest: +SKIP

Per optimizer update (ALGORITHMS.md section 15.3), with q the sampling rate, N the dataset size, C the clipping
norm and sigma the noise multiplier:

1. ``on_batch``: the trainer's fixed-size batch is discarded and replaced by a Poisson sample of the training set
   (each example independently with probability q: one ``torch.rand(N, generator=...) < q``).
2. ``on_loss`` detaches the trainer's loss (the trainer's backward then computes nothing: its batch gradient
   would be overwritten). ``on_grads``: per-example gradients with
   ``torch.func`` (``vmap(grad(functional_call))``), each clipped to l2 norm <= C over all trainable parameters
   (Opacus' flat clipping, factor ``min(1, C / (norm + 1e-6))``), summed, plus ``N(0, sigma^2 C^2 I)`` noise drawn
   from the hook's generator with Opacus' ``_generate_noise``, divided by the *expected* batch size q * N (Opacus'
   convention for Poisson sampling: the divisor must not depend on the sample), and written into ``p.grad``.
3. The trainer's optimizer takes the step (momentum and weight decay are post-processing of the private gradient).
4. One ``PoissonSampledGaussian(q, sigma)`` step is recorded per update in a :class:`PrivacyLedger`.

Sampling rate and epochs: q defaults to ``recipe.batch_size / len(trainer.data)`` (:func:`dp_sample_rate`, from the
*dataset size*, never a loader's length). The trainer still runs ``len(trainer.batches)`` steps per epoch, i.e.
about ``N / batch_size = 1 / q`` updates, so an "epoch" is about one expected pass. The accountant counts the updates
actually taken, so the epsilon is right whatever the epoch length.

Empty samples: with probability ``(1 - q)^N`` the Poisson sample is empty. The update is then *noise only*
(zero clipped sum + noise, divided by q * N), it is taken, and it is counted. This is the mechanism the accountant
analyses; skipping the update would be wrong, because an unchanged model would reveal that no example -- in
particular not the one whose privacy is at stake -- was sampled. (Opacus does the same.) The trainer's loss for an
empty batch is replaced by a zero (a leaf, like every DP-SGD loss), so its backward and epoch statistics stay finite.

Why ``torch.func`` and not Opacus' ``GradSampleModule``: wrapping the model renames its state_dict keys
(``_module.``) and installs hooks on the trainer's model; ``torch.func`` computes the same per-sample gradients
without touching the model. Opacus is still the engine for the noise (``_generate_noise``, including its
``secure_mode`` floating-point mitigation), the clipping formula (copied from ``DPOptimizer.clip_and_accumulate``)
and the accountants (through :mod:`poisonlab.defenses.dp.accounting`).

Limits: models with BatchNorm (samples mix through batch statistics) or active dropout (it would draw from the
global RNG) are refused with a ConfigError. DP-SGD must see the batch it sampled: a later hook that changes which
samples are in the batch is refused; a hook that perturbs inputs per sample (an attack) is fine. Losses changed by
other hooks' ``on_loss`` are ignored: the per-sample loss is cross-entropy (hard or soft labels).
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from poisonlab.defenses.dp.accounting import sample_rate_for
from poisonlab.defenses.dp.events import check_accountant, check_count, check_delta, check_real, check_sample_rate
from poisonlab.defenses.dp.ledger import PrivacyLedger
from poisonlab.defenses.registry import DEFENSES
from poisonlab.errors import CheckpointError, ConfigError
from poisonlab.training.hooks import Batch, TrainingHook

if TYPE_CHECKING:
    from poisonlab.config import TrainConfig
    from poisonlab.training.trainer import Trainer

__all__ = ["DPSGD", "check_dp_model", "clip_factors", "dp_sample_rate", "noisy_clipped_sum", "per_sample_gradients"]

CLIP_EPS = 1e-6
"""Opacus' stabiliser in the clip factor ``C / (norm + 1e-6)``; a clipped norm is then strictly below C."""


def dp_sample_rate(recipe: TrainConfig, dataset_size: int) -> float:
    """The Poisson rate q = ``recipe.batch_size / dataset_size`` (the recipe's batch size is the expected one).

    Raises:
        ConfigError: the batch is larger than the dataset, or a size is not a positive integer.
    """
    return sample_rate_for(recipe.batch_size, dataset_size)


def check_dp_model(model: nn.Module) -> None:
    """Refuse layers for which per-sample gradients are not defined or not reproducible.

    Raises:
        ConfigError: a BatchNorm layer (mixes samples through batch statistics), or dropout in training mode.
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            raise ConfigError(
                "model.norm: DP-SGD needs a model without batch norm; use model.norm=group (or none)"
                f" (found {type(module).__name__} at {name!r})"
            )
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.training and module.p > 0:
            raise ConfigError(
                f"model: DP-SGD does not support dropout ({type(module).__name__} at {name!r}): per-sample "
                "gradients would draw its masks from the global RNG"
            )


def per_sample_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Gradient of each example's cross-entropy w.r.t. the trainable parameters, with ``torch.func``.

    Args:
        model: the network (not modified; its buffers are read).
        x: inputs (B, ...).
        y: hard labels (B,) or soft labels (B, K).

    Returns:
        ``{parameter name: tensor (B, *parameter shape)}``; entry i is the gradient of example i's loss alone.
    """
    from torch.func import functional_call, grad, vmap

    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    if x.shape[0] == 0:
        return {n: torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device) for n, p in params.items()}
    buffers = dict(model.named_buffers())

    def loss_one(prm: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, (prm, buffers), (xi.unsqueeze(0),))
        if yi.dim() == 0:
            return nn.functional.cross_entropy(logits, yi.unsqueeze(0))
        return -(yi.unsqueeze(0) * logits.log_softmax(1)).sum()

    return vmap(grad(loss_one), in_dims=(None, 0, 0))(params, x, y)


def clip_factors(grads: dict[str, torch.Tensor], max_grad_norm: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Opacus' flat clipping: per-example factors ``min(1, C / (norm + 1e-6))`` and the norms themselves.

    The norm is the l2 norm over all parameters together (``DPOptimizer.clip_and_accumulate``).

    Returns:
        (factors (B,), norms (B,)); ``factor_i * g_i`` has norm <= C.
    """
    per_param = [g.reshape(g.shape[0], -1).norm(2, dim=-1) for g in grads.values()]
    norms = torch.stack(per_param, dim=1).norm(2, dim=1)
    return (max_grad_norm / (norms + CLIP_EPS)).clamp(max=1.0), norms


def noisy_clipped_sum(
    summed: dict[str, torch.Tensor],
    std: float,
    generator: torch.Generator,
    secure_mode: bool = False,
) -> dict[str, torch.Tensor]:
    """``summed[name] + N(0, std^2)`` per coordinate, in parameter order, drawn only from ``generator``.

    Noise comes from Opacus' ``_generate_noise`` on the generator's device (then moved), so a CPU generator gives
    the same noise for parameters on any device. ``std == 0`` draws nothing.
    """
    from opacus.optimizers.optimizer import _generate_noise

    out = {}
    for name, s in summed.items():
        reference = torch.empty(s.shape, dtype=s.dtype, device=generator.device)
        noise = _generate_noise(std=std, reference=reference, generator=generator, secure_mode=secure_mode)
        out[name] = s + noise.to(s.device)
    return out


@DEFENSES.register("dp-sgd")
class DPSGD(TrainingHook):
    """DP-SGD with Poisson sampling and an RDP/PRV privacy ledger (see the module docstring for the algorithm).

    Defends against: poisoning and backdoors by bounding any one example's influence (Hong et al., 2020); the only
    defense here that reports a DP epsilon.

    Defaults: ``C = 1``, ``sigma = 1.1`` (ALGORITHMS.md section 15.3 CPU check), ``delta = 1e-5``.

    Args:
        num_classes: number of classes (unused; the registry's factory signature).
        generator: the only source of randomness (Poisson samples, then noise, per update).
        noise_multiplier: sigma = noise std / C, >= 0. ``0`` is a non-private debugging mode: epsilon is infinite.
        max_grad_norm: C, the per-example clipping norm, > 0; ``math.inf`` (no clipping) only with sigma = 0.
        sample_rate: q in (0, 1]; None derives it on the first batch as ``recipe.batch_size / len(data)``.
        delta: delta of the reported (epsilon, delta); a warning if it is >= 1 / N.
        accountant: "rdp" or "prv".
        chunk_size: examples per vectorised per-sample-gradient pass (memory bound; any value gives the same
            update up to float summation order, and noise is added once per update, never per chunk).
        secure_mode: Opacus' floating-point-attack mitigation for the noise (4 draws per value). The generator
            is still the caller's (not a CSPRNG).

    Raises:
        ConfigError: a value is out of range (the message names it); on the first batch, a model with BatchNorm
            or dropout (:func:`check_dp_model`).
    """

    def __init__(
        self,
        num_classes: int,
        generator: torch.Generator,
        noise_multiplier: float = 1.1,
        max_grad_norm: float = 1.0,
        sample_rate: float | None = None,
        delta: float = 1e-5,
        accountant: str = "rdp",
        chunk_size: int = 256,
        secure_mode: bool = False,
    ) -> None:
        self.num_classes = num_classes
        self.generator = generator
        sigma = check_real(noise_multiplier, "noise_multiplier")
        if sigma < 0:
            raise ConfigError(f"noise_multiplier: expected sigma >= 0, got {noise_multiplier!r}")
        unclipped = max_grad_norm == math.inf and sigma == 0 and not isinstance(max_grad_norm, bool)
        c = math.inf if unclipped else check_real(max_grad_norm, "max_grad_norm")
        if not c > 0:
            raise ConfigError(f"max_grad_norm: expected C > 0 (inf only when sigma = 0), got {max_grad_norm!r}")
        self.noise_multiplier = sigma
        self.max_grad_norm = c
        self.configured_sample_rate = None if sample_rate is None else check_sample_rate(sample_rate)
        self.delta = check_delta(delta)
        self.accountant = check_accountant(accountant)
        self.chunk_size = check_count(chunk_size, "chunk_size")
        self.secure_mode = bool(secure_mode)
        self.ledger = PrivacyLedger(self.accountant)
        self.noiseless_steps = 0
        self.sample_rate: float | None = self.configured_sample_rate
        self.dataset_size: int | None = None
        self.last_norms: torch.Tensor | None = None
        """Per-example gradient norms (before clipping) of the last update."""
        self._sampled_ids: torch.Tensor | None = None
        self._validated = False
        if sigma == 0:
            warnings.warn("dp-sgd: noise_multiplier=0 gives no privacy (epsilon = inf)", stacklevel=2)

    # ------------------------------------------------------------------ hook
    def on_batch(self, trainer: Trainer, batch: Batch) -> Batch:
        """Discard ``batch``; return a Poisson sample of ``trainer.data`` (rate q), augmented as the recipe says."""
        data = trainer.data
        n = len(data)
        if not self._validated:
            check_dp_model(trainer.model)
            self._validated = True
        if self.dataset_size is None:
            self._setup(trainer, n)
        elif n != self.dataset_size:
            raise ConfigError(f"dp-sgd: the training set changed size ({self.dataset_size} -> {n})")
        u = torch.rand(n, generator=self.generator, device=self.generator.device)
        idx = (u < self.sample_rate).nonzero().squeeze(1).to(data.images.device)
        x = data.images[idx]
        if trainer.augment is not None and len(idx) > 0:
            x = trainer.augment(x, trainer.augment_rng)
        self._sampled_ids = data.ids[idx]
        return Batch(x, data.labels[idx], data.ids[idx])

    def on_loss(self, trainer: Trainer, batch: Batch, logits: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
        """Cut the trainer's loss from the model: its batch gradient would be overwritten by :meth:`on_grads`, so
        the trainer's ``backward`` becomes a no-op on a leaf instead of a wasted full backward pass (the value is
        kept for the epoch statistics). An empty sample's mean loss is NaN: it becomes 0."""
        value = loss.detach() if batch.x.shape[0] else torch.zeros((), device=logits.device)
        return value.requires_grad_()

    def on_grads(self, trainer: Trainer, batch: Batch) -> None:
        """Replace ``p.grad`` by (sum of clipped per-example gradients + noise) / (q N); record one step."""
        if self._sampled_ids is None or not torch.equal(batch.ids, self._sampled_ids):
            raise ConfigError(
                "dp-sgd: the batch reaching backward is not the Poisson sample dp-sgd drew (another hook changed "
                "which samples it holds, or dp-sgd's on_batch did not run); DP-SGD must own the batch"
            )
        self._sampled_ids = None
        model = trainer.model
        params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        summed = {n: torch.zeros_like(p, memory_format=torch.contiguous_format) for n, p in params.items()}
        norms = []
        for start in range(0, batch.x.shape[0], self.chunk_size):
            sl = slice(start, start + self.chunk_size)
            grads = per_sample_gradients(model, batch.x[sl], batch.y[sl])
            factors, chunk_norms = clip_factors(grads, self.max_grad_norm)
            norms.append(chunk_norms)
            for name, g in grads.items():
                summed[name] += torch.einsum("i,i...", factors.to(g.dtype), g)
        self.last_norms = torch.cat(norms) if norms else torch.zeros(0, device=self.generator.device)
        std = self.noise_multiplier * self.max_grad_norm if self.noise_multiplier > 0 else 0.0
        noisy = noisy_clipped_sum(summed, std, self.generator, self.secure_mode)
        expected = self.sample_rate * self.dataset_size
        for name, p in params.items():
            p.grad = (noisy[name] / expected).to(p.dtype).contiguous(memory_format=_memory_format(p))
        if self.noise_multiplier > 0:
            self.ledger.step(self.sample_rate, self.noise_multiplier)
        else:
            self.noiseless_steps += 1

    # ------------------------------------------------------------------ privacy
    @property
    def steps(self) -> int:
        """Optimizer updates taken (accounted or not)."""
        return len(self.ledger) + self.noiseless_steps

    def epsilon(self, delta: float | None = None) -> float:
        """Epsilon of the updates so far at ``delta`` (default: the hook's); pure. ``inf`` after a sigma-0 step."""
        if self.noiseless_steps:
            return math.inf
        return self.ledger.epsilon(self.delta if delta is None else delta)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "ledger": self.ledger.state_dict(),
            "noiseless_steps": self.noiseless_steps,
            "sample_rate": self.sample_rate,
            "dataset_size": self.dataset_size,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        q = state["sample_rate"]
        if self.configured_sample_rate is not None and q is not None and q != self.configured_sample_rate:
            raise CheckpointError(
                f"dp-sgd state: recorded with sample_rate={q!r}, this hook has {self.configured_sample_rate!r}"
            )
        self.ledger.load_state_dict(state["ledger"])
        self.generator.set_state(state["generator"].to("cpu", torch.uint8))
        self.noiseless_steps = int(state["noiseless_steps"])
        self.sample_rate = q
        self.dataset_size = state["dataset_size"]

    # ------------------------------------------------------------------ helpers
    def _setup(self, trainer: Trainer, n: int) -> None:
        derived = dp_sample_rate(trainer.recipe, n)
        if self.sample_rate is None:
            self.sample_rate = derived
        elif abs(self.sample_rate - derived) > 1e-12:
            warnings.warn(
                f"dp-sgd: sample_rate={self.sample_rate:g} but recipe batch_size / N = {derived:g}: an epoch of "
                f"{len(trainer.batches)} updates is not one expected pass (epsilon counts the updates taken)",
                stacklevel=3,
            )
        if self.delta >= 1 / n:
            warnings.warn(f"dp-sgd: delta={self.delta:g} >= 1/N = {1 / n:g} is a weak guarantee", stacklevel=3)
        self.dataset_size = n


def _memory_format(p: torch.Tensor) -> torch.memory_format:
    if p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format
