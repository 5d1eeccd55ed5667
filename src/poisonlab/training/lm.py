"""Training loop for the character language model: resumable, and bit-reproducible on CPU under a seed.

The token stream is cut into windows of ``seq_len + 1`` tokens; every epoch starts at a random offset in
``[0, seq_len)`` (so an inserted line is seen in different contexts) and visits the windows in a random
order, both drawn from the "data" generator. Adam with gradient-norm clipping, as usual for RNNs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from pydantic import Field
from torch import nn

from poisonlab.config import Frozen, Ratio
from poisonlab.errors import CheckpointError, Interrupted
from poisonlab.io.checkpoint import Checkpointer
from poisonlab.models.charlm import CharLM
from poisonlab.rng import SeedTree
from poisonlab.utils.progress import progress_bar


class LMTrainConfig(Frozen):
    """Recipe of the character LM."""

    epochs: int = Field(10, ge=1, le=10_000)
    seq_len: int = Field(128, ge=2, le=100_000)
    batch_size: int = Field(32, ge=1)
    lr: Ratio = Field(3e-3, gt=0)
    clip: Ratio = Field(1.0, gt=0, description="max global gradient norm")


def lm_windows(n_tokens: int, seq_len: int, offset: int) -> torch.Tensor:
    """Start positions of the full ``seq_len + 1`` windows beginning at ``offset``."""
    return torch.arange(offset, n_tokens - seq_len, seq_len)


class LMTrainer:
    """Next-token cross-entropy training of a :class:`CharLM` on one token stream.

    Args:
        model: the language model.
        tokens: int64 token stream (N,).
        recipe: epochs, window length, batch size, learning rate, clipping.
        seeds: the run's seed tree ("data" orders the windows).
        checkpointer: when given, state is saved every epoch and on stop, and :meth:`fit` resumes.
        should_stop: polled after every step; True -> checkpoint and raise :class:`Interrupted`.
        progress: show a progress bar (quiet when not a terminal).
    """

    def __init__(
        self,
        model: CharLM,
        tokens: torch.Tensor,
        recipe: LMTrainConfig,
        seeds: SeedTree,
        checkpointer: Checkpointer | None = None,
        should_stop: Callable[[], bool] | None = None,
        progress: bool = False,
    ) -> None:
        if tokens.dim() != 1 or len(tokens) < recipe.seq_len + 2:
            raise ValueError(f"tokens: need a 1-d stream longer than seq_len + 1 = {recipe.seq_len + 1}")
        self.model = model
        self.tokens = tokens.to(next(model.parameters()).device)
        self.recipe = recipe
        self.checkpointer = checkpointer
        self.should_stop = should_stop or (lambda: False)
        self.progress = progress
        self.optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr)
        self.data_rng = seeds.generator("data")
        self.epoch = 0
        self.batch_index = 0
        self.step = 0
        self.history: list[dict[str, float]] = []
        self._order: torch.Tensor | None = None  # window starts of the current epoch, shuffled
        self._loss_sum = 0.0

    def fit(self) -> list[dict[str, float]]:
        """Train to ``recipe.epochs`` (resuming from the newest checkpoint if any); per-epoch mean loss."""
        if self.checkpointer is not None and (state := self.checkpointer.load_latest()) is not None:
            self.load_state_dict(state)
        self.model.train()
        per_epoch = -(-len(lm_windows(len(self.tokens), self.recipe.seq_len, 0)) // self.recipe.batch_size)
        with progress_bar(self.recipe.epochs * per_epoch, "train LM", self.progress, initial=self.step) as bar:
            while self.epoch < self.recipe.epochs:
                self._run_epoch(bar)
        return self.history

    def _run_epoch(self, bar: Any) -> None:
        r = self.recipe
        if self._order is None:
            offset = int(torch.randint(0, r.seq_len, (1,), generator=self.data_rng))
            starts = lm_windows(len(self.tokens), r.seq_len, offset)
            self._order = starts[torch.randperm(len(starts), generator=self.data_rng)]
            self.batch_index, self._loss_sum = 0, 0.0
        n_batches = -(-len(self._order) // r.batch_size)
        span = torch.arange(r.seq_len + 1, device=self.tokens.device)
        while self.batch_index < n_batches:
            starts = self._order[self.batch_index * r.batch_size : (self.batch_index + 1) * r.batch_size]
            window = self.tokens[starts.to(self.tokens.device)[:, None] + span]
            self._loss_sum += float(self.train_step(window[:, :-1], window[:, 1:]))
            self.batch_index += 1
            bar.update(1)
            if self.should_stop():
                self._save()
                raise Interrupted(f"stopped at step {self.step}; checkpoint saved, rerun the same command to resume")
        self.history.append({"epoch": float(self.epoch + 1), "loss": self._loss_sum / max(n_batches, 1)})
        self.epoch += 1
        self._order = None
        self._save()

    def train_step(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """One Adam step on next-token cross-entropy; returns the detached mean loss."""
        logits, _ = self.model(inputs)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), self.recipe.clip)
        self.optimizer.step()
        self.step += 1
        return loss.detach()

    def state_dict(self) -> dict[str, Any]:
        """Weights, optimiser, data RNG and position: enough to continue bit-identically."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": {"data": self.data_rng.get_state()},
            "epoch": self.epoch,
            "batch_index": self.batch_index,
            "step": self.step,
            "order": self._order,
            "loss_sum": self._loss_sum,
            "history": self.history,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; any failure raises CheckpointError."""
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.data_rng.set_state(state["rng"]["data"])
            self.epoch = int(state["epoch"])
            self.batch_index = int(state["batch_index"])
            self.step = int(state["step"])
            self._order = state["order"]
            self._loss_sum = float(state["loss_sum"])
            self.history = [dict(h) for h in state["history"]]
        except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as err:
            raise CheckpointError(f"cannot restore LM trainer state: {type(err).__name__}: {err}") from None

    def _save(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.save(self.step, self.state_dict())


@torch.no_grad()
def lm_loss(model: CharLM, tokens: torch.Tensor, seq_len: int = 256, batch_size: int = 64) -> float:
    """Mean next-token cross-entropy (nats) over ``tokens``, in windows of ``seq_len`` (state reset per window)."""
    was_training = model.training
    model.eval()
    try:
        starts = lm_windows(len(tokens), seq_len, 0)
        span = torch.arange(seq_len + 1)
        total, count = 0.0, 0
        for i in range(0, len(starts), batch_size):
            w = tokens[starts[i : i + batch_size, None] + span]
            logits, _ = model(w[:, :-1])
            flat = logits.reshape(-1, logits.shape[-1])
            loss = nn.functional.cross_entropy(flat, w[:, 1:].reshape(-1), reduction="sum")
            total, count = total + float(loss), count + w[:, 1:].numel()
        return total / max(count, 1)
    finally:
        model.train(was_training)
