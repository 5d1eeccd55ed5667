"""Trainer: determinism, hooks, kill-and-resume equivalence."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from poisonlab.config import TrainConfig
from poisonlab.errors import CheckpointError, Interrupted
from poisonlab.io import Checkpointer
from poisonlab.models import build_model
from poisonlab.rng import SeedTree
from poisonlab.training import Batch, Trainer, TrainingHook, evaluate
from poisonlab.training.recipes import milestones
from poisonlab.training.trainer import epoch_batches


def _mlp(data, seed: int):
    return build_model("mlp", data.shape, data.num_classes, SeedTree(seed).generator("init"), width=32)


def _convnet(data, seed: int):
    return build_model("convnet", data.shape, data.num_classes, SeedTree(seed).generator("init"), width=4)


def _train(data, recipe, seed, hooks=(), make=_mlp, **kw):
    model = make(data, seed)
    trainer = Trainer(model, data, recipe, SeedTree(seed), hooks=hooks, **kw)
    trainer.fit()
    return model, trainer


def _same(m1, m2) -> bool:
    return all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))


def test_training_learns(digits_small) -> None:
    model, trainer = _train(digits_small, TrainConfig(epochs=8, batch_size=32, lr=0.05), 0)
    assert trainer.history[-1]["loss"] < trainer.history[0]["loss"]
    assert evaluate(model, digits_small)["accuracy"] > 0.8


@pytest.mark.parametrize("augment", [False, True])
def test_same_seed_bit_identical_different_seed_different(colour_small, augment: bool) -> None:
    recipe = TrainConfig(epochs=2, batch_size=32, lr=0.05, augment=augment)
    state = (torch.random.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    m1, _ = _train(colour_small, recipe, 0, make=_convnet)
    m2, _ = _train(colour_small, recipe, 0, make=_convnet)
    m3, _ = _train(colour_small, recipe, 1, make=_convnet)
    assert _same(m1, m2)
    assert not _same(m1, m3)
    assert torch.equal(state[0], torch.random.get_rng_state())
    assert np.array_equal(state[1], np.random.get_state()[1]) and state[2] == random.getstate()


def test_adam_and_cosine_recipes_run(digits_small) -> None:
    for recipe in (
        TrainConfig(optimizer="adam", lr=1e-3, epochs=2, batch_size=64, schedule="cosine"),
        TrainConfig(epochs=2, batch_size=64, schedule="none", nesterov=False, momentum=0.0),
    ):
        _, trainer = _train(digits_small, recipe, 0)
        assert len(trainer.history) == 2


def test_multistep_milestones_match_reference() -> None:
    assert milestones(40) == [14, 24, 35]  # 40 // 2.667, 40 // 1.6 (= 24 in floating point), 40 // 1.142
    assert milestones(8) == [2, 4, 7]


def test_epoch_batches() -> None:
    assert epoch_batches(10, 4, False) == [(0, 4), (4, 8), (8, 10)]
    assert epoch_batches(10, 4, True) == [(0, 4), (4, 8)]
    assert epoch_batches(9, 4, False) == [(0, 4), (4, 8)]  # a single-sample batch is dropped


class _Recorder(TrainingHook):
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.steps = 0

    def on_batch(self, trainer, batch):
        self.calls.append("batch")
        return batch.with_(y=torch.zeros_like(batch.y))  # hooks can change the batch

    def on_loss(self, trainer, batch, logits, loss):
        self.calls.append("loss")
        return loss * 1.0

    def on_grads(self, trainer, batch):
        self.calls.append("grads")

    def on_step(self, trainer, batch, loss):
        self.calls.append("step")
        self.steps += 1

    def on_epoch(self, trainer, stats):
        self.calls.append("epoch")

    def state_dict(self):
        return {"steps": self.steps}

    def load_state_dict(self, state):
        self.steps = state["steps"]


def test_hooks_are_called_in_order_and_can_change_the_batch(digits_small) -> None:
    rec = _Recorder()
    model, trainer = _train(digits_small, TrainConfig(epochs=2, batch_size=120, lr=0.1), 0, hooks=[rec])
    assert rec.calls[:4] == ["batch", "loss", "grads", "step"] and rec.calls.count("epoch") == 2
    assert rec.steps == trainer.step == 4
    assert (evaluate(model, digits_small)["accuracy"]) == pytest.approx(
        float((digits_small.labels == 0).float().mean()), abs=0.02
    )  # learned the relabelled task: everything is class 0


class _CrashAt(TrainingHook):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step(self, trainer, batch, loss):
        if trainer.step == self.step:
            raise RuntimeError("simulated crash")


@pytest.mark.parametrize("augment", [False, True])
def test_crash_and_resume_equals_uninterrupted(tmp_path, colour_small, augment: bool) -> None:
    recipe = TrainConfig(epochs=4, batch_size=32, lr=0.05, augment=augment)
    ref, ref_trainer = _train(colour_small, recipe, 5, make=_convnet)
    ckpt = Checkpointer(tmp_path / "ck", "h")
    with pytest.raises(RuntimeError, match="simulated crash"):
        _train(colour_small, recipe, 5, hooks=[_CrashAt(8)], make=_convnet, checkpointer=ckpt)
    assert len(ckpt.list()) == 2  # epochs 1 and 2 completed and checkpointed
    resumed, trainer = _train(colour_small, recipe, 5, hooks=[_CrashAt(-1)], make=_convnet, checkpointer=ckpt)
    assert _same(ref, resumed)
    assert trainer.step == ref_trainer.step
    assert [h["loss"] for h in trainer.history] == [h["loss"] for h in ref_trainer.history]
    assert torch.equal(trainer.data_rng.get_state(), ref_trainer.data_rng.get_state())


def test_stop_mid_epoch_checkpoints_and_resumes_identically(tmp_path, digits_small) -> None:
    recipe = TrainConfig(epochs=3, batch_size=32, lr=0.05)
    ref, _ = _train(digits_small, recipe, 2)
    ckpt = Checkpointer(tmp_path / "ck", "h", keep=5)
    steps = iter(range(1000))
    with pytest.raises(Interrupted):
        _train(digits_small, recipe, 2, checkpointer=ckpt, should_stop=lambda: next(steps) == 10)
    assert ckpt.list()[-1].name == "step-0000000011"  # mid-epoch 2 (8 steps per epoch)
    resumed, rec_trainer = _train(digits_small, recipe, 2, checkpointer=ckpt)
    assert _same(ref, resumed) and rec_trainer.step == 24


def test_restore_failure_raises(tmp_path, digits_small) -> None:
    model = _mlp(digits_small, 0)
    trainer = Trainer(model, digits_small, TrainConfig(epochs=1), SeedTree(0))
    state = trainer.state_dict()
    bad = dict(state, rng={"data": torch.zeros(3, dtype=torch.uint8), "augment": state["rng"]["augment"]})
    with pytest.raises(CheckpointError, match="cannot restore"):
        trainer.load_state_dict(bad)
    with pytest.raises(CheckpointError, match="cannot restore"):
        trainer.load_state_dict({k: v for k, v in state.items() if k != "optimizer"})


def test_soft_labels_are_supported(digits_small) -> None:
    class Soft(TrainingHook):
        def on_batch(self, trainer, batch: Batch) -> Batch:
            return batch.with_(y=torch.nn.functional.one_hot(batch.y, 10).float())

    model, _ = _train(digits_small, TrainConfig(epochs=6, batch_size=32, lr=0.05), 0, hooks=[Soft()])
    assert evaluate(model, digits_small)["accuracy"] > 0.7
