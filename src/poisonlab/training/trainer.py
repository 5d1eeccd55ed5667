"""The one training loop. Defenses and training-time attacks plug in as hooks; nobody forks it."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from poisonlab.config import TrainConfig
from poisonlab.data.dataset import Dataset
from poisonlab.errors import CheckpointError, Interrupted
from poisonlab.io.checkpoint import Checkpointer
from poisonlab.rng import SeedTree
from poisonlab.training.augment import DifferentiableAugment
from poisonlab.training.hooks import Batch, TrainingHook
from poisonlab.training.recipes import build_optimizer
from poisonlab.utils.progress import progress_bar


def epoch_batches(n: int, batch_size: int, drop_last: bool) -> list[tuple[int, int]]:
    """(start, end) ranges of one epoch's minibatches; a trailing batch of one sample is dropped
    (BatchNorm cannot normalise it)."""
    ranges = [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    if ranges and (drop_last and ranges[-1][1] - ranges[-1][0] < batch_size or ranges[-1][1] - ranges[-1][0] == 1):
        ranges.pop()
    return ranges


class Trainer:
    """Train ``model`` on ``data`` with a recipe; resumable and bit-reproducible on CPU.

    Randomness comes only from ``seeds``: "data" (epoch permutations) and "augment". The dataset
    is moved to the model's device once; batching is index arithmetic on tensors.

    Args:
        model: the network (inputs in [0, 1]).
        data: training set.
        recipe: optimiser, schedule, epochs, batch size, augmentation.
        seeds: seed tree of this run.
        hooks: TrainingHooks, called in order.
        checkpointer: when given, state is saved every ``checkpoint_every`` epochs and on stop, and
            :meth:`fit` resumes from the newest checkpoint.
        should_stop: polled after every step; when it returns True the trainer checkpoints and raises
            :class:`Interrupted` (the CLI wires SIGTERM/SIGINT to it).
        amp: bfloat16 autocast on CUDA.
        channels_last: channels-last memory format on CUDA.
        progress: show a progress bar (quiet when not a terminal).
    """

    def __init__(
        self,
        model: nn.Module,
        data: Dataset,
        recipe: TrainConfig,
        seeds: SeedTree,
        hooks: Sequence[TrainingHook] = (),
        checkpointer: Checkpointer | None = None,
        checkpoint_every: int = 1,
        should_stop: Callable[[], bool] | None = None,
        amp: bool = False,
        channels_last: bool = False,
        progress: bool = False,
    ) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        self.data = data.to(self.device)
        self.recipe = recipe
        self.hooks = list(hooks)
        self.checkpointer = checkpointer
        self.checkpoint_every = checkpoint_every
        self.should_stop = should_stop or (lambda: False)
        self.progress = progress
        cuda = self.device.type == "cuda"
        self.autocast = torch.autocast("cuda", dtype=torch.bfloat16) if (amp and cuda) else nullcontext()
        self.memory_format = torch.channels_last if (channels_last and cuda) else torch.contiguous_format
        if self.memory_format is torch.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer, self.scheduler = build_optimizer(model, recipe)
        self.augment = DifferentiableAugment.for_shape(data.shape) if recipe.augment else None
        self.data_rng = seeds.generator("data")
        self.augment_rng = seeds.generator("augment", self.device)
        self.batches = epoch_batches(len(data), recipe.batch_size, recipe.drop_last)
        self.epoch = 0
        self.batch_index = 0
        self.step = 0
        self.history: list[dict[str, float]] = []
        self._perm: torch.Tensor | None = None
        self._acc = torch.zeros(3, dtype=torch.float64, device=self.device)  # loss sum, correct, seen
        self._epoch_time = 0.0

    # ------------------------------------------------------------------ training
    def fit(self) -> list[dict[str, float]]:
        """Train to ``recipe.epochs`` (resuming from the newest checkpoint if any); returns per-epoch stats."""
        if self.checkpointer is not None:
            state = self.checkpointer.load_latest()
            if state is not None:
                self.load_state_dict(state)
        self.model.train()
        total = self.recipe.epochs * len(self.batches)
        with progress_bar(total, "train", enabled=self.progress, initial=self.step) as bar:
            while self.epoch < self.recipe.epochs:
                self._run_epoch(bar)
        return self.history

    def _run_epoch(self, bar: Any) -> None:
        if self._perm is None:
            self._perm = torch.randperm(len(self.data), generator=self.data_rng).to(self.device)
            self.batch_index = 0
            self._acc.zero_()
            self._epoch_time = 0.0
        t0 = time.perf_counter()
        while self.batch_index < len(self.batches):
            start, end = self.batches[self.batch_index]
            idx = self._perm[start:end]
            self.train_step(Batch(self.data.images[idx], self.data.labels[idx], self.data.ids[idx]))
            self.batch_index += 1
            bar.update(1)
            if self.should_stop():
                self._epoch_time += time.perf_counter() - t0
                self._save()
                raise Interrupted(f"stopped at step {self.step}; checkpoint saved, rerun the same command to resume")
        self._epoch_time += time.perf_counter() - t0
        loss_sum, correct, seen = self._acc.tolist()
        stats = {
            "epoch": float(self.epoch + 1),
            "loss": loss_sum / max(seen, 1),
            "train_accuracy": correct / max(seen, 1),
            "lr": float(self.optimizer.param_groups[0]["lr"]),
            "seconds": self._epoch_time,
        }
        self.scheduler.step()
        self.history.append(stats)
        for h in self.hooks:
            h.on_epoch(self, stats)
        self.epoch += 1
        self._perm = None
        bar.set_postfix(loss=f"{stats['loss']:.3f}", acc=f"{stats['train_accuracy']:.3f}")
        if self.epoch % self.checkpoint_every == 0 or self.epoch == self.recipe.epochs:
            self._save()

    def train_step(self, batch: Batch) -> torch.Tensor:
        """One optimiser step on ``batch`` (hooks applied); returns the detached loss."""
        if self.augment is not None:
            batch = batch.with_(x=self.augment(batch.x, self.augment_rng))
        for h in self.hooks:
            batch = h.on_batch(self, batch)
        x = batch.x.contiguous(memory_format=self.memory_format)
        with self.autocast:
            logits = self.model(x)
            loss = nn.functional.cross_entropy(logits, batch.y) if batch.y.dim() == 1 else _soft_ce(logits, batch.y)
        for h in self.hooks:
            loss = h.on_loss(self, batch, logits, loss)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for h in self.hooks:
            h.on_grads(self, batch)
        self.optimizer.step()
        self.step += 1
        loss = loss.detach()
        with torch.no_grad():
            n = batch.x.shape[0]
            hard = batch.y if batch.y.dim() == 1 else batch.y.argmax(1)
            self._acc += torch.stack(
                [
                    loss.double() * n,
                    (logits.argmax(1) == hard).sum().double(),
                    torch.tensor(float(n), dtype=torch.float64, device=self.device),
                ]
            )
        for h in self.hooks:
            h.on_step(self, batch, loss)
        return loss

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue bit-identically: weights, optimiser, schedule, RNGs, position."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": {"data": self.data_rng.get_state(), "augment": self.augment_rng.get_state()},
            "epoch": self.epoch,
            "batch_index": self.batch_index,
            "step": self.step,
            "perm": self._perm,
            "acc": self._acc,
            "epoch_time": self._epoch_time,
            "history": self.history,
            "hooks": [h.state_dict() for h in self.hooks],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; any failure raises CheckpointError (never a silent partial restore)."""
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.data_rng.set_state(state["rng"]["data"])
            self.augment_rng.set_state(state["rng"]["augment"].to(self.augment_rng.device))
            self.epoch = int(state["epoch"])
            self.batch_index = int(state["batch_index"])
            self.step = int(state["step"])
            self._perm = None if state["perm"] is None else state["perm"].to(self.device)
            self._acc = state["acc"].to(self.device)
            self._epoch_time = float(state["epoch_time"])
            self.history = [dict(h) for h in state["history"]]
            if len(state["hooks"]) != len(self.hooks):
                raise ValueError("checkpoint has a different number of training hooks")
            for h, s in zip(self.hooks, state["hooks"]):
                h.load_state_dict(s)
        except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as err:
            raise CheckpointError(f"cannot restore trainer state: {type(err).__name__}: {err}") from None

    def _save(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.save(self.step, self.state_dict())


def _soft_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against soft labels (mixup-style targets), mean over the batch."""
    return -(targets * logits.log_softmax(1)).sum(1).mean()
