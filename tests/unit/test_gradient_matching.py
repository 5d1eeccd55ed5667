"""Gradient matching (Witches' Brew): loss oracle, optimiser oracle, crafting behaviour, resume, determinism."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from torch import nn

from poisonlab.attacks.poisoning import (
    GradientMatching,
    PoisonTask,
    SignedAdam,
    alignment,
    craft_config,
    matching_loss,
    poison_gradient,
    step_decay,
    target_gradient,
)
from poisonlab.config import ModelConfig, TrainConfig
from poisonlab.data import Dataset
from poisonlab.data.poisoned import PoisonedDataset
from poisonlab.errors import ConfigError, Interrupted
from poisonlab.io import Checkpointer
from poisonlab.models import build_model
from poisonlab.rng import SeedTree
from poisonlab.training import Trainer


def _tiny_mlp(seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 6), nn.Tanh(), nn.Linear(6, 3)).to(dtype)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=dtype) * 0.5)
    return net


@pytest.fixture(scope="module")
def surrogate(digits_small: Dataset) -> nn.Module:
    """An MLP surrogate trained briefly on 240 digits."""
    model = build_model("mlp", digits_small.shape, 10, SeedTree(0).generator("init"), width=32)
    Trainer(model, digits_small, TrainConfig(epochs=3, batch_size=32, lr=0.05), SeedTree(0)).fit()
    return model.eval()


def _task(data: Dataset, n: int = 12, adv: int = 3) -> PoisonTask:
    pool = torch.nonzero(data.labels == adv).flatten()[:n]
    target = torch.nonzero(data.labels == 5).flatten()[-1:]  # a training digit stands in for a test target
    return PoisonTask(data, data.ids[pool], data.subset(target), adv)


def _craft(task, surrogates, seed=0, **fields):
    base = {"restarts": 2, "steps": 8, "checkpoint_every": 3}
    return GradientMatching(craft_config(**{**base, **fields})).craft(task, surrogates, SeedTree(seed))


# ---------------------------------------------------------------------------------------------- oracles
def test_matching_loss_equals_hand_computed_cosine() -> None:
    model = _tiny_mlp()
    g = torch.Generator().manual_seed(1)
    xp, yp = torch.rand(5, 1, 4, 4, generator=g), torch.tensor([0, 1, 2, 1, 0])
    xt = torch.rand(1, 1, 4, 4, generator=g)
    params = list(model.parameters())
    # plain per-parameter loop: one autograd call per parameter, sums of products in Python floats
    dot = pn = tn = 0.0
    for p in params:
        lp = nn.functional.cross_entropy(model(xp), yp)
        lt = nn.functional.cross_entropy(model(xt), torch.tensor([2]))
        (gp,) = torch.autograd.grad(lp, p)
        (gt,) = torch.autograd.grad(lt, p)
        dot += float((gp.double() * gt.double()).sum())
        pn += float(gp.double().pow(2).sum())
        tn += float(gt.double().pow(2).sum())
    expected = 1 - dot / math.sqrt(pn * tn)
    got = matching_loss(poison_gradient(model, xp, yp), target_gradient(model, xt, 2))
    assert float(got.detach()) == pytest.approx(expected, abs=1e-6)
    scalar = matching_loss(poison_gradient(model, xp, yp), target_gradient(model, xt, 2), kind="scalar-product")
    assert float(scalar.detach()) == pytest.approx(-dot / math.sqrt(tn), rel=1e-5)  # the reference's scalar_product
    with pytest.raises(ValueError, match="expected one of cosine, scalar-product"):
        matching_loss(poison_gradient(model, xp, yp), target_gradient(model, xt, 2), kind="euclid")


def test_gradient_in_delta_matches_finite_differences() -> None:
    model = _tiny_mlp(dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(4, 1, 4, 4, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    tg = target_gradient(model, torch.rand(1, 1, 4, 4, generator=g, dtype=torch.float64), 1)
    delta = (torch.rand(4, 1, 4, 4, generator=g, dtype=torch.float64) - 0.5) * 0.1
    assert torch.autograd.gradcheck(
        lambda d: matching_loss(poison_gradient(model, x + d, y), tg), (delta.requires_grad_(),)
    )


def test_batched_double_backward_equals_per_poison_loop(surrogate: nn.Module, digits_small: Dataset) -> None:
    task = _task(digits_small)
    pos = digits_small.positions_of(task.poison_ids)
    x, y = digits_small.images[pos], digits_small.labels[pos]
    tg = target_gradient(surrogate, task.targets.images, task.adv_class)
    delta = (torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) - 0.5) * 0.1
    loss, grad = alignment(delta, x, y, [surrogate], [tg], pbatch=512)
    d = delta.clone().requires_grad_(True)
    params = [p for p in surrogate.parameters()]
    acc = [torch.zeros_like(p) for p in params]
    for i in range(len(x)):  # same math, one poison at a time
        li = nn.functional.cross_entropy(surrogate(x[i : i + 1] + d[i : i + 1]), y[i : i + 1]) / len(x)
        acc = [a + gi for a, gi in zip(acc, torch.autograd.grad(li, params, create_graph=True))]
    ref = matching_loss(acc, tg)
    (ref_grad,) = torch.autograd.grad(ref, d)
    assert loss == pytest.approx(float(ref.detach()), abs=1e-6)
    assert torch.allclose(grad, ref_grad, atol=1e-7, rtol=1e-4)
    # minibatches of pbatch give the same per-batch losses stitched together
    loss2, grad2 = alignment(delta, x, y, [surrogate], [tg], pbatch=5)
    assert grad2.shape == grad.shape and math.isfinite(loss2)


def test_signed_adam_equals_torch_adam_in_normalised_units() -> None:
    std = torch.tensor([0.2, 0.5, 0.3]).view(1, 3, 1, 1)
    g = torch.Generator().manual_seed(0)
    delta = torch.rand(2, 3, 4, 4, generator=g) * 0.01
    u = (delta / std).clone().requires_grad_(True)  # the reference's variable: delta in normalised units
    ref = torch.optim.Adam([u], lr=0.1)
    sched = torch.optim.lr_scheduler.MultiStepLR(ref, milestones=[10 // 2.667, 10 // 1.6, 10 // 1.142], gamma=0.1)
    ours = SignedAdam(0.1, scale=std)
    for step in range(10):
        grad = torch.randn(delta.shape, generator=g)
        delta = ours.step(delta, grad, step_decay(step, 10))
        u.grad = (grad * std).sign()  # d/du = std * d/d(delta): same sign
        ref.step()
        sched.step()
        assert torch.allclose(delta, u.detach() * std, atol=1e-6)


@pytest.mark.parametrize("steps", [1, 2, 3, 8, 10, 40, 250])
def test_step_decay_matches_multistep_lr(steps: int) -> None:
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=1.0)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [steps // 2.667, steps // 1.6, steps // 1.142], gamma=0.1)
    for s in range(steps):
        assert step_decay(s, steps) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
        opt.step()
        sched.step()
    assert step_decay(0, steps, enabled=False) == 1.0


# ---------------------------------------------------------------------------------------------- crafting
def test_alignment_loss_falls_and_beats_random_noise(surrogate: nn.Module, digits_small: Dataset) -> None:
    task = _task(digits_small)
    losses: list[float] = []
    cfg = craft_config(restarts=1, steps=25, augment=False, eps=8 / 255)
    ps = GradientMatching(cfg, on_step=lambda s: losses.append(s["loss"])).craft(task, [surrogate], SeedTree(0))
    assert losses[-1] < losses[0] - 0.01
    pos = digits_small.positions_of(task.poison_ids)
    x, y = digits_small.images[pos], digits_small.labels[pos]
    tg = target_gradient(surrogate, task.targets.images, task.adv_class)
    crafted, _ = alignment(ps.deltas, x, y, [surrogate], [tg], 512)
    noise = ps.linf.project((torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1) * ps.eps, x)
    control, _ = alignment(noise, x, y, [surrogate], [tg], 512)
    assert crafted < control - 0.01
    assert float(ps.deltas.abs().max()) <= ps.eps + 1e-6


def test_scalar_product_matching_grows_the_poison_gradient_along_the_target(
    surrogate: nn.Module, digits_small: Dataset
) -> None:
    task = _task(digits_small)
    pos = digits_small.positions_of(task.poison_ids)
    x, y = digits_small.images[pos], digits_small.labels[pos]
    tg = target_gradient(surrogate, task.targets.images, task.adv_class)
    losses: list[float] = []
    cfg = craft_config(restarts=1, steps=25, augment=False, eps=8 / 255, matching="scalar-product")
    ps = GradientMatching(cfg, on_step=lambda s: losses.append(s["loss"])).craft(task, [surrogate], SeedTree(0))
    assert losses[-1] < losses[0] and float(ps.deltas.abs().max()) <= ps.eps + 1e-6
    cosine = _craft(task, [surrogate], restarts=1, steps=25, augment=False, eps=8 / 255)
    noise = ps.linf.project((torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1) * ps.eps, x)
    along = {
        name: alignment(d, x, y, [surrogate], [tg], 512, kind="scalar-product")[0]
        for name, d in (("scalar", ps.deltas), ("cosine", cosine.deltas), ("noise", noise))
    }
    assert along["scalar"] < along["cosine"] and along["scalar"] < along["noise"]  # -<g_t, g_p>/||g_t||: lower is more
    with pytest.raises(ConfigError, match="matching is gradient matching's loss"):
        craft_config(recipe="metapoison", matching="scalar-product")


def test_restarts_keep_the_lowest_loss_and_surrogates_are_untouched(colour_small: Dataset) -> None:
    model = build_model("convnet", colour_small.shape, 10, SeedTree(0).generator("init"), width=4)  # BatchNorm
    Trainer(model, colour_small, TrainConfig(epochs=1, batch_size=32, lr=0.05), SeedTree(0)).fit()
    model.train()
    model.zero_grad(set_to_none=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    task = _task(colour_small, n=6, adv=1)
    ps = _craft(task, [model], restarts=3, steps=3, augment=True)
    assert len(ps.restart_losses) == 3
    assert ps.meta["best_restart"] == int(np.argmin(ps.restart_losses))
    assert model.training  # mode restored; BN ran in eval mode, so running statistics are unchanged
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_ensemble_averages_members(surrogate: nn.Module, digits_small: Dataset) -> None:
    other = build_model("mlp", digits_small.shape, 10, SeedTree(1).generator("init"), width=32).eval()
    task = _task(digits_small)
    ps = _craft(task, [surrogate, other], restarts=1, steps=3)
    assert ps.meta["ensemble"] == 2 and ps.deltas.shape[0] == len(task.poison_ids)


def test_same_seed_same_poisons_different_seed_different(surrogate: nn.Module, digits_small: Dataset) -> None:
    state = (torch.random.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    task = _task(digits_small)
    a, b, c = (_craft(task, [surrogate], seed=s) for s in (0, 0, 1))
    assert torch.equal(a.deltas, b.deltas) and a.restart_losses == b.restart_losses
    assert not torch.equal(a.deltas, c.deltas)
    assert torch.equal(state[0], torch.random.get_rng_state())
    assert np.array_equal(state[1], np.random.get_state()[1]) and state[2] == random.getstate()


class _Crash(RuntimeError):
    pass


@pytest.mark.parametrize("crash_at", [(0, 4), (1, 1), (1, 7)])
def test_killed_craft_resumes_bit_identical(surrogate, digits_small, tmp_path, crash_at) -> None:
    task = _task(digits_small)
    cfg = craft_config(restarts=2, steps=8, checkpoint_every=3)
    full = GradientMatching(cfg).craft(task, [surrogate], SeedTree(0))

    def crash(info: dict) -> None:
        if (info["restart"], info["step"]) == crash_at:
            raise _Crash("injected")

    ckpt = Checkpointer(tmp_path / "ckpt", "h")
    with pytest.raises(_Crash):
        GradientMatching(cfg, ckpt, on_step=crash).craft(task, [surrogate], SeedTree(0))
    resumed = GradientMatching(cfg, Checkpointer(tmp_path / "ckpt", "h")).craft(task, [surrogate], SeedTree(0))
    assert torch.equal(full.deltas, resumed.deltas)
    assert full.restart_losses == resumed.restart_losses


def test_should_stop_checkpoints_and_resumes(surrogate, digits_small, tmp_path) -> None:
    task = _task(digits_small)
    cfg = craft_config(restarts=2, steps=6, checkpoint_every=100)
    full = GradientMatching(cfg).craft(task, [surrogate], SeedTree(0))
    calls = iter(range(1000))
    stop = GradientMatching(cfg, Checkpointer(tmp_path, "h"), should_stop=lambda: next(calls) == 8)
    with pytest.raises(Interrupted):
        stop.craft(task, [surrogate], SeedTree(0))
    resumed = GradientMatching(cfg, Checkpointer(tmp_path, "h")).craft(task, [surrogate], SeedTree(0))
    assert torch.equal(full.deltas, resumed.deltas) and full.restart_losses == resumed.restart_losses


def test_resnet18_smoke_on_colour(colour_small: Dataset) -> None:
    model = build_model("resnet18", colour_small.shape, 10, SeedTree(0).generator("init"), width=8).eval()
    ps = _craft(_task(colour_small, n=4, adv=2), [model], restarts=1, steps=2)
    assert ps.deltas.shape == (4, 3, 32, 32) and float(ps.deltas.abs().max()) <= ps.eps + 1e-6


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_crafts_cifar_shaped_batch_on_gpu() -> None:
    g = torch.Generator().manual_seed(0)
    data = Dataset("cifar-like", torch.rand(64, 3, 32, 32, generator=g), torch.arange(64) % 10, torch.arange(64),
                   tuple(str(i) for i in range(10)))  # fmt: skip
    model = build_model("resnet18", data.shape, 10, SeedTree(0).generator("init"), width=16, device="cuda").eval()
    task = PoisonTask(data, data.ids[data.labels == 3], data.subset(torch.tensor([5])), 3)
    ps = _craft(task, [model], restarts=1, steps=4)
    assert ps.deltas.device.type == "cpu" and float(ps.deltas.abs().max()) <= ps.eps + 1e-6


@pytest.mark.slow
def test_poisoned_victims_flip_the_target_more_than_the_control() -> None:
    """Tiny end-to-end check (about 8 s): digits, MLP victims retrained from scratch without augmentation,
    crafted (no augmentation, as the victims) vs uniform-noise poisons at the same 100 ids, six borderline
    targets (correctly classified by the surrogate, runner-up class probability 0.05..0.45) x 4 victims."""
    from poisonlab.attacks.poisoning import evaluate_poisons, train_surrogates
    from poisonlab.data import load_dataset
    from poisonlab.training.evaluate import predict_logits

    splits = load_dataset("digits")
    train, test = splits.train, splits.test
    recipe = TrainConfig(epochs=6, batch_size=64, lr=0.05)
    mc = ModelConfig(name="mlp", width=64)
    surrogates = train_surrogates(mc, recipe, train, SeedTree(0))
    p = torch.softmax(predict_logits(surrogates[0], test), 1)
    correct = p.argmax(1) == test.labels
    p[torch.arange(len(test)), test.labels] = 0
    runner_up, adv = p.max(1)
    borderline = torch.nonzero(correct & (runner_up > 0.05) & (runner_up < 0.45)).flatten()[:6]
    hits = {"poisoned": 0, "control": 0}
    cfg = craft_config(eps=32 / 255, restarts=1, steps=60, augment=False)
    for i in borderline.tolist():
        a = int(adv[i])
        pool = torch.nonzero(train.labels == a).flatten()[:100]
        task = PoisonTask(train, train.ids[pool], test.subset(torch.tensor([i])), a)
        ps = GradientMatching(cfg).craft(task, surrogates, SeedTree(0))
        s = evaluate_poisons(ps, splits, mc, recipe, victims=4, seeds=SeedTree(7))["summary"]
        for arm in hits:
            hits[arm] += s[arm]["success"]["successes"]
    assert hits["poisoned"] >= hits["control"] + 4, hits


# ---------------------------------------------------------------------------------------------- retraining
class _SpyRetrainer:
    """Trains a fresh MLP on the poisoned digits for one epoch and records what it was given."""

    def __init__(self, task: PoisonTask) -> None:
        self.task = task
        self.calls: list[tuple[torch.Tensor, dict]] = []

    def __call__(self, delta: torch.Tensor, seeds: SeedTree) -> list[nn.Module]:
        self.calls.append((delta.clone(), seeds.record()))
        data = self.task.train
        view = PoisonedDataset(data, delta_ids=self.task.poison_ids, deltas=delta).materialize()
        model = build_model("mlp", data.shape, 10, seeds.generator("init"), width=32)
        Trainer(model, view, TrainConfig(epochs=1, batch_size=32, lr=0.05), seeds).fit()
        return [model.eval()]


def test_retraining_happens_every_n_steps_on_the_current_poisons(surrogate, digits_small) -> None:
    task = _task(digits_small)
    spy = _SpyRetrainer(task)
    cfg = craft_config(restarts=2, steps=8, retrain_every=3, schedule=False)
    GradientMatching(cfg, retrainer=spy).craft(task, [surrogate], SeedTree(0))
    assert len(spy.calls) == 4  # after steps 3 and 6 of each restart, never after the last step
    assert len({str(seeds) for _, seeds in spy.calls}) == 4  # a fresh initialisation every time
    # the first retraining sees the poisons after exactly 3 steps: a 3-step craft ends there
    short = GradientMatching(craft_config(restarts=1, steps=3, schedule=False)).craft(task, [surrogate], SeedTree(0))
    assert torch.equal(spy.calls[0][0], short.deltas)
    # and from then on the crafter matches the retrained surrogate's gradients, not the original's
    plain = GradientMatching(craft_config(restarts=1, steps=8, schedule=False)).craft(task, [surrogate], SeedTree(0))
    again = GradientMatching(craft_config(restarts=1, steps=8, retrain_every=3, schedule=False), retrainer=spy)
    assert not torch.equal(again.craft(task, [surrogate], SeedTree(0)).deltas, plain.deltas)


def test_identity_retrainer_changes_nothing(surrogate, digits_small) -> None:
    task = _task(digits_small)
    plain = _craft(task, [surrogate])
    same = GradientMatching(
        craft_config(restarts=2, steps=8, checkpoint_every=3, retrain_every=2), retrainer=lambda d, s: [surrogate]
    ).craft(task, [surrogate], SeedTree(0))
    assert torch.equal(plain.deltas, same.deltas) and plain.restart_losses == same.restart_losses


def test_retraining_needs_a_retrainer(surrogate, digits_small) -> None:
    with pytest.raises(ValueError, match="retrain_every needs a retrainer"):
        _craft(_task(digits_small), [surrogate], retrain_every=2)


@pytest.mark.parametrize("crash_at", [(0, 4), (1, 6)])
def test_killed_craft_with_retraining_resumes_bit_identical(surrogate, digits_small, tmp_path, crash_at) -> None:
    task = _task(digits_small)
    cfg = craft_config(restarts=2, steps=8, checkpoint_every=2, retrain_every=3)
    full = GradientMatching(cfg, retrainer=_SpyRetrainer(task)).craft(task, [surrogate], SeedTree(0))

    def crash(info: dict) -> None:
        if (info["restart"], info["step"]) == crash_at:
            raise _Crash("injected")

    with pytest.raises(_Crash):
        crafter = GradientMatching(cfg, Checkpointer(tmp_path, "h"), on_step=crash, retrainer=_SpyRetrainer(task))
        crafter.craft(task, [surrogate], SeedTree(0))
    spy = _SpyRetrainer(task)
    resumed = GradientMatching(cfg, Checkpointer(tmp_path, "h"), retrainer=spy).craft(task, [surrogate], SeedTree(0))
    assert torch.equal(full.deltas, resumed.deltas) and full.restart_losses == resumed.restart_losses
    assert len(spy.calls) < 4  # the retrained weights came from the checkpoint, not from retraining again
