"""Train K small models at once (same architecture; own seeds and data), equal to K separate runs.

Strategies (measurements in benchmarks/RESULTS.md):

- ``"sequential"``: the oracle; K separate :class:`~poisonlab.training.trainer.Trainer` runs.
- ``"fused"``: the K members become one module (grouped convolutions with ``groups=K`` on inputs
  laid out (B, K*C, H, W); linear layers as batched matmuls; norm layers over K*C channels, which keeps
  per-member statistics) trained on the sum of the members' mean losses, so each member gets its own
  gradient and the elementwise optimizer equals K optimizers. Equal to sequential up to float rounding.
  ConvNet, MLP and LeNet; datasets of equal length. For the GPU, where one small model underuses the
  device; on CPU it is slower than sequential (oneDNN's grouped kernels), so "auto" never picks it there.
- ``"processes"``: a spawn pool of ``workers`` processes sharing the torch thread budget, each running
  the oracle. Bit-identical to sequential run with the same per-model thread count (oneDNN's conv
  backward sums in a thread-count dependent order). Scripts using it need ``if __name__ == "__main__":``.

Training hooks (defenses) come from ``hooks``, a picklable factory called once per member with the member's
class count and seed tree, so every member gets its own hook state (a DP ledger, a noise generator); members
with hooks train by "sequential" or "processes" ("fused" falls back with a warning). Resuming is not
supported here (callers save finished members).
"""

from __future__ import annotations

import multiprocessing as mp
import warnings
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from poisonlab.config import ModelConfig, TrainConfig
from poisonlab.data.dataset import Dataset
from poisonlab.models.build import build_model
from poisonlab.models.convnet import ConvNet
from poisonlab.models.lenet import LeNet5
from poisonlab.models.mlp import MLP
from poisonlab.rng import SeedTree
from poisonlab.training.augment import DifferentiableAugment
from poisonlab.training.hooks import TrainingHook
from poisonlab.training.recipes import build_optimizer
from poisonlab.training.trainer import Trainer, epoch_batches
from poisonlab.utils.progress import progress_bar

Strategy = Literal["auto", "fused", "processes", "sequential"]
HookFactory = Callable[[int, SeedTree], list[TrainingHook]]
"""``(num_classes, member seeds) -> hooks``: a module-level function or a ``functools.partial`` of one (the
"processes" strategy pickles it)."""


def train_many(
    model: ModelConfig,
    shape: tuple[int, int, int],
    num_classes: int,
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
    datasets: Sequence[Dataset],
    recipe: TrainConfig,
    seeds: Sequence[SeedTree],
    device: torch.device | str = "cpu",
    strategy: Strategy = "auto",
    workers: int | None = None,
    progress: bool = False,
    hooks: HookFactory | None = None,
) -> list[nn.Sequential]:
    """Train ``len(seeds)`` models; member k equals ``Trainer(build_model(..., seeds[k].generator("init"),
    ...), datasets[k], recipe, seeds[k], hooks=hooks(num_classes, seeds[k])).fit()``.

    Args:
        model: architecture (name, width, norm) shared by all members.
        shape: image shape (C, H, W).
        num_classes: output logits.
        mean: per-channel input mean for the Normalize layer (None: the build_model default).
        std: per-channel input std (None: the build_model default).
        datasets: one training set per member (the same object may repeat).
        recipe: training recipe shared by all members.
        seeds: one seed tree per member ("init", "data" and "augment" are used as by the Trainer).
        device: where to train.
        strategy: "fused", "processes", "sequential", or "auto" (see :func:`choose_strategy`).
            A strategy that cannot run these members falls back with a warning.
        workers: process-pool size (default: one per torch thread, at most K); the threads are split
            between the workers.
        progress: show a progress bar (not for "processes").
        hooks: the members' training hooks (a defense), built per member; None for none.

    Returns:
        K ordinary ``nn.Sequential(Normalize, net)`` models, in train mode, on ``device``.
    """
    if len(datasets) != len(seeds) or not seeds:
        raise ValueError(f"train_many: need one dataset per seed, got {len(datasets)} and {len(seeds)}")
    device = torch.device(device)
    args = (model, shape, num_classes, mean, std)
    if strategy == "auto":
        strategy = choose_strategy(model, device, datasets)
    if strategy == "fused" and hooks is not None:
        strategy = choose_strategy(model, torch.device("cpu"), datasets)
        warnings.warn(f"train_many: training hooks need the Trainer; using {strategy}", stacklevel=2)
    if strategy == "fused" and (reason := fuse_blocker(model, datasets)) is not None:
        strategy = choose_strategy(model, device, datasets)  # never "fused" here
        warnings.warn(f"train_many: cannot fuse ({reason}); using {strategy}", stacklevel=2)
    if strategy == "fused":
        return _train_fused(args, datasets, recipe, seeds, device, progress)
    if strategy == "processes" and len(seeds) > 1:
        return _train_processes(args, datasets, recipe, seeds, device, workers, hooks)
    if strategy not in ("sequential", "processes"):
        raise ValueError(f"train_many: unknown strategy {strategy!r}")
    return [_train_one(args, d, recipe, s, device, progress, hooks) for d, s in zip(datasets, seeds)]


def choose_strategy(model: ModelConfig, device: torch.device | str, datasets: Sequence[Dataset]) -> str:
    """Fused on CUDA; on a CPU with several torch threads, processes; else sequential.

    Measured for 8 ConvNets on 2 cores: processes 0.91x on an idle machine (the ~3 s worker start-up
    against a 25 s job; per step it is 1.1x) and 2.3x while another job keeps one core busy, where two
    OpenMP threads stall each other; fused 0.58x and 0.70x.

    Args:
        model: the architecture.
        device: where training runs.
        datasets: the members' training sets.

    Returns:
        "fused", "processes" or "sequential".
    """
    if torch.device(device).type == "cuda" and fuse_blocker(model, datasets) is None:
        return "fused"
    if torch.device(device).type == "cpu" and len(datasets) > 1 and torch.get_num_threads() > 1:
        return "processes"
    return "sequential"


def fuse_blocker(model: ModelConfig, datasets: Sequence[Dataset]) -> str | None:
    """Why these members cannot be fused, or None when they can.

    Args:
        model: the architecture.
        datasets: the members' training sets.

    Returns:
        A reason for messages, or None.
    """
    if model.name not in ("convnet", "mlp", "lenet"):
        return f"model {model.name!r} has no fused form (convnet, mlp and lenet do)"
    if len({len(d) for d in datasets}) > 1:
        return "datasets of different lengths cannot share one batch schedule"
    return None


# ---------------------------------------------------------------------------------- sequential
def _build(args: tuple, seeds: SeedTree, device: torch.device) -> nn.Sequential:
    """One member, initialised from ``seeds.generator("init")``."""
    model, shape, num_classes, mean, std = args
    init = seeds.generator("init")
    return build_model(model.name, shape, num_classes, init, model.width, model.norm, mean, std, device)


def _train_one(
    args: tuple,
    data: Dataset,
    recipe: TrainConfig,
    seeds: SeedTree,
    device: torch.device,
    progress: bool = False,
    hooks: HookFactory | None = None,
) -> nn.Sequential:
    """The oracle: one model built from ``seeds`` and trained by the Trainer (with its own hooks)."""
    net = _build(args, seeds, device)
    member_hooks = hooks(args[2], seeds) if hooks is not None else []
    Trainer(net, data, recipe, seeds, hooks=member_hooks, progress=progress).fit()
    return net


# ---------------------------------------------------------------------------------- processes
def _worker(job: tuple) -> dict[str, torch.Tensor]:
    args, data, recipe, seeds, device, threads, hooks = job
    torch.set_num_threads(threads)
    return _train_one(args, data, recipe, seeds, torch.device(device), hooks=hooks).state_dict()


def _train_processes(
    args: tuple, datasets: Sequence[Dataset], recipe: TrainConfig, seeds: Sequence[SeedTree],
    device: torch.device, workers: int | None, hooks: HookFactory | None = None,
) -> list[nn.Sequential]:  # fmt: skip
    """One oracle run per member in a spawn pool of ``workers`` processes sharing the threads."""
    workers = max(1, min(workers or torch.get_num_threads(), len(seeds)))
    threads = max(1, torch.get_num_threads() // workers)
    jobs = [(args, d, recipe, s, str(device), threads, hooks) for d, s in zip(datasets, seeds)]
    with mp.get_context("spawn").Pool(workers) as pool:
        states = pool.map(_worker, jobs, chunksize=1)
    nets = []
    for s, state in zip(seeds, states):
        for name in ("data", "augment"):  # record the seeds the workers used (not the hooks' own)
            s.seed(name)
        nets.append(_build(args, s, device))
        nets[-1].load_state_dict(state)
    return nets


# ---------------------------------------------------------------------------------- fused
class _BatchedLinear(nn.Module):
    """K linear layers applied as one batched matmul to inputs (K, B, in_features)."""

    def __init__(self, k: int, in_features: int, out_features: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(k, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(k, 1, out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias is None:
            return torch.bmm(x, self.weight.transpose(1, 2))
        return torch.baddbmm(self.bias, x, self.weight.transpose(1, 2))


class _Flatten(nn.Module):
    """(B, K*C, H, W) -> (K, B, C*H*W): each member's features flattened in its own (C, H, W) order."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], self.k, -1).transpose(0, 1)


def _layers(net: nn.Module) -> list[nn.Module]:
    """The architecture's layers in forward order (each model's forward is exactly this chain)."""
    if isinstance(net, ConvNet):
        return [*net.features, nn.Flatten(), net.head]
    if isinstance(net, LeNet5):
        return [*net.features, *net.head]
    if isinstance(net, MLP):
        return list(net.net)
    raise TypeError(f"no fused form for {type(net).__name__}")


def _fused_layer(m: nn.Module, k: int) -> nn.Module:
    """The K-member counterpart of layer ``m`` (uninitialised; built on the meta device)."""
    with torch.device("meta"):
        if isinstance(m, nn.Conv2d):
            c_in, c_out, groups = k * m.in_channels, k * m.out_channels, k * m.groups
            bias = m.bias is not None
            return nn.Conv2d(c_in, c_out, m.kernel_size, m.stride, m.padding, m.dilation, groups, bias, m.padding_mode)
        if isinstance(m, nn.BatchNorm2d):  # channels are independent, so statistics stay per member
            return nn.BatchNorm2d(k * m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats)
        if isinstance(m, nn.GroupNorm):  # K*G contiguous groups = each member's G groups
            return nn.GroupNorm(k * m.num_groups, k * m.num_channels, m.eps, m.affine)
        if isinstance(m, nn.Linear):
            return _BatchedLinear(k, m.in_features, m.out_features, m.bias is not None)
    if isinstance(m, nn.Flatten):
        return _Flatten(k)
    if isinstance(m, (nn.ReLU, nn.MaxPool2d, nn.Identity)):
        return m
    raise TypeError(f"no fused form for layer {type(m).__name__}")


class _FusedNet(nn.Module):
    """K models ``Sequential(Normalize, net)`` as one module mapping (K, B, C, H, W) to (K, B, classes).

    Inside, activations are laid out (B, K*C, H, W) until the flatten, then (K, B, features).
    """

    def __init__(self, members: Sequence[nn.Sequential]) -> None:
        super().__init__()
        k = len(members)
        device = members[0][0].mean.device
        self.register_buffer("mean", torch.stack([m[0].mean for m in members]))  # (K, 1, C, 1, 1)
        self.register_buffer("std", torch.stack([m[0].std for m in members]))
        self._member_layers = [_layers(m[1]) for m in members]
        self.layers = nn.Sequential(*(_fused_layer(m, k) for m in self._member_layers[0])).to_empty(device=device)
        with torch.no_grad():
            for i, fused in enumerate(self.layers):
                for name, t in fused.state_dict().items():
                    parts = [layers[i].state_dict()[name] for layers in self._member_layers]
                    t.copy_(torch.stack(parts).reshape(t.shape) if t.dim() else parts[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) / self.std
        return self.layers(x.transpose(0, 1).flatten(1, 2))  # (B, K*C, H, W)

    @torch.no_grad()
    def unfuse(self) -> None:
        """Copy the fused parameters and buffers back into the K member models."""
        k = len(self._member_layers)
        for i, fused in enumerate(self.layers):
            for name, t in fused.state_dict().items():
                for j, layers in enumerate(self._member_layers):
                    own = layers[i].state_dict()[name]
                    own.copy_(t.reshape(k, -1)[j].view(own.shape) if t.dim() else t)


def _augment_many(aug: DifferentiableAugment, x: torch.Tensor, gens: Sequence[torch.Generator]) -> torch.Tensor:
    """``aug`` applied to each member's batch x[k] (x: (K, B, C, H, W)) with its own generator.

    Each generator is consumed exactly as ``DifferentiableAugment.forward`` consumes it (shifts, then
    flips); only the draws loop over members, the image arithmetic runs once over all K*B images.
    """
    k, b, _, h, w = x.shape
    dev, s = x.device, aug.shift
    x = x.flatten(0, 1)
    if s > 0:
        offsets = torch.cat([torch.randint(0, 2 * s + 1, (2, b), device=dev, generator=g) for g in gens], 1)
        padded = F.pad(x, (s, s, s, s))
        rows = offsets[0][:, None] + torch.arange(h, device=dev)
        cols = offsets[1][:, None] + torch.arange(w, device=dev)
        bi = torch.arange(k * b, device=dev)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if aug.flip:
        mask = torch.cat([torch.rand(b, device=dev, generator=g) for g in gens]) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(-1), x)
    return x.contiguous().unflatten(0, (k, b))


def _train_fused(
    args: tuple, datasets: Sequence[Dataset], recipe: TrainConfig, seeds: Sequence[SeedTree],
    device: torch.device, progress: bool,
) -> list[nn.Sequential]:  # fmt: skip
    """Train the members as one fused module; loss = sum of the members' mean cross-entropies."""
    k, n = len(seeds), len(datasets[0])
    members = [_build(args, s, device) for s in seeds]
    fused = _FusedNet(members).train()
    optimizer, scheduler = build_optimizer(fused, recipe)
    data_rngs = [s.generator("data") for s in seeds]
    augment_rngs = [s.generator("augment", device) for s in seeds]
    augment = DifferentiableAugment.for_shape(datasets[0].shape) if recipe.augment else None
    if all(d is datasets[0] for d in datasets):  # one copy, every member indexes into it
        images, labels, offsets = datasets[0].images.to(device), datasets[0].labels.to(device), 0
    else:
        images = torch.cat([d.images for d in datasets]).to(device)
        labels = torch.cat([d.labels for d in datasets]).to(device)
        offsets = torch.arange(k, device=device)[:, None] * n
    batches = epoch_batches(n, recipe.batch_size, recipe.drop_last)
    with progress_bar(recipe.epochs * len(batches), f"train x{k}", enabled=progress) as bar:
        for _ in range(recipe.epochs):
            perms = torch.stack([torch.randperm(n, generator=g) for g in data_rngs]).to(device) + offsets
            for start, end in batches:
                idx = perms[:, start:end]  # (K, B) rows of images
                x = images[idx] if augment is None else _augment_many(augment, images[idx], augment_rngs)
                logits = fused(x)
                losses = F.cross_entropy(logits.flatten(0, 1), labels[idx].flatten(), reduction="none")
                loss = losses.view(k, -1).mean(1).sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                bar.update(1)
            scheduler.step()
    fused.unfuse()
    return members
