"""train_many: fused and process-pool training of K models equal K separate Trainer runs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from poisonlab.config import ModelConfig, TrainConfig
from poisonlab.data import Dataset
from poisonlab.rng import SeedTree
from poisonlab.training.many import choose_strategy, fuse_blocker, train_many

# Tolerances. The fused kernels sum in another order than the separate ones. Without norm layers the
# members then agree to float rounding (measured <= 1.5e-6 here). Norm layers divide by batch standard
# deviations, so forward activations differ by ~1e-5 and now and then a ReLU input that close to zero
# changes sign in one run only; measured <= 1.3e-4 within three full-batch steps. A real mismatch
# (another batch, pooled statistics, a member's weights in the wrong slot) moves weights by ~1e-2.
CLOSE = {"rtol": 1e-4, "atol": 1e-5}
NORM = {"rtol": 1e-3, "atol": 5e-4}


def _run(model: ModelConfig, data: list[Dataset], recipe: TrainConfig, strategy: str, **kw) -> list[nn.Sequential]:
    seeds = [SeedTree(10 + k) for k in range(len(data))]
    d = data[0]
    mean, std = d.channel_stats()
    return train_many(model, d.shape, d.num_classes, mean, std, data, recipe, seeds, strategy=strategy, **kw)


def _assert_members_close(a: list[nn.Sequential], b: list[nn.Sequential], tol: dict) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        sx, sy = x.state_dict(), y.state_dict()
        assert sx.keys() == sy.keys()
        for name in sx:
            torch.testing.assert_close(sx[name], sy[name], **tol, msg=lambda m, n=name: f"{n}: {m}")


def _halves(d: Dataset) -> list[Dataset]:
    """Three members: two share one half of the data, one trains on the other half."""
    n = len(d) // 2
    first, second = d.subset(torch.arange(n)), d.subset(torch.arange(n, 2 * n))
    return [first, second, first]


@pytest.mark.parametrize(
    ("name", "optimizer", "augment"),
    [("convnet", "sgd", True), ("convnet", "adam", False), ("lenet", "sgd", True)],
)
def test_fused_equals_sequential_without_norm(colour_small, name, optimizer, augment):
    model = ModelConfig(name=name, width=4 if name == "convnet" else 1, norm="none")
    recipe = TrainConfig(optimizer=optimizer, lr=0.1 if optimizer == "sgd" else 1e-3, epochs=2, batch_size=16,
                         augment=augment)  # fmt: skip
    data = _halves(colour_small)
    _assert_members_close(_run(model, data, recipe, "fused"), _run(model, data, recipe, "sequential"), CLOSE)


@pytest.mark.parametrize(("optimizer", "augment"), [("sgd", True), ("adam", False)])
def test_fused_mlp_equals_sequential(digits_small, optimizer, augment):
    model = ModelConfig(name="mlp", width=32)
    recipe = TrainConfig(optimizer=optimizer, lr=0.05 if optimizer == "sgd" else 1e-3, epochs=3, batch_size=64,
                         schedule="cosine", augment=augment)  # fmt: skip
    data = [digits_small] * 4
    _assert_members_close(_run(model, data, recipe, "fused"), _run(model, data, recipe, "sequential"), CLOSE)


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_fused_norm_layers_keep_per_member_statistics(colour_small, norm):
    model = ModelConfig(name="convnet", width=4, norm=norm)
    recipe = TrainConfig(lr=0.01, epochs=2, batch_size=48)  # full batches: two steps
    data = _halves(colour_small)
    fused, seq = _run(model, data, recipe, "fused"), _run(model, data, recipe, "sequential")
    _assert_members_close(fused, seq, NORM)
    if norm == "batch":
        assert int(fused[0][1].features[1].num_batches_tracked) == 2


def test_processes_are_bit_identical_with_equal_thread_counts(digits_small):
    # conftest pins torch to one thread, and two workers share it: one thread each, like sequential.
    model = ModelConfig(name="mlp", width=16)
    recipe = TrainConfig(epochs=2, batch_size=64, augment=True)
    data = [digits_small.subset(torch.arange(120)), digits_small.subset(torch.arange(120, 240))]
    proc = _run(model, data, recipe, "processes", workers=2)
    _assert_members_close(proc, _run(model, data, recipe, "sequential"), {"rtol": 0.0, "atol": 0.0})


def test_members_differ_and_global_rng_is_untouched(digits_small):
    model = ModelConfig(name="mlp", width=16)
    state = torch.get_rng_state()
    nets = _run(model, [digits_small] * 2, TrainConfig(epochs=1, batch_size=64, augment=True), "fused")
    assert torch.equal(torch.get_rng_state(), state)
    assert not torch.equal(nets[0][1].net[1].weight, nets[1][1].net[1].weight)


def test_returns_plain_unfused_models(colour_small):
    model = ModelConfig(name="convnet", width=4)
    nets = _run(model, [colour_small] * 2, TrainConfig(epochs=1, batch_size=32), "fused")
    for net in nets:
        assert isinstance(net, nn.Sequential) and net.training
        convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
        assert convs and all(c.groups == 1 for c in convs)
        assert net(colour_small.images[:5]).shape == (5, colour_small.num_classes)


def test_fused_falls_back_for_unequal_lengths_and_other_models(digits_small):
    assert fuse_blocker(ModelConfig(name="resnet18"), [digits_small]) is not None
    model = ModelConfig(name="mlp", width=16)
    data = [digits_small, digits_small.subset(torch.arange(100))]
    recipe = TrainConfig(epochs=1, batch_size=64)
    with pytest.warns(UserWarning, match="different lengths"):
        fused = _run(model, data, recipe, "fused")
    _assert_members_close(fused, _run(model, data, recipe, "sequential"), {"rtol": 0.0, "atol": 0.0})


def test_bad_arguments(digits_small):
    model = ModelConfig(name="mlp", width=16)
    with pytest.raises(ValueError, match="one dataset per seed"):
        train_many(model, digits_small.shape, 10, None, None, [digits_small], TrainConfig(), [])
    with pytest.raises(ValueError, match="unknown strategy"):
        _run(model, [digits_small], TrainConfig(epochs=1), "threads")


def test_auto_strategy(digits_small):
    data = [digits_small] * 3
    assert choose_strategy(ModelConfig(name="convnet"), "cuda", data) == "fused"
    assert choose_strategy(ModelConfig(name="resnet18"), "cuda", data) == "sequential"
    assert choose_strategy(ModelConfig(name="convnet"), "cpu", data) == "sequential"  # conftest: one thread


def test_hooks_train_each_member_as_the_trainer_does_with_that_defense(digits_small):
    """A defense's hooks are built per member from its own seeds: sequential and processes equal separate
    Trainer runs with those hooks, and differ from undefended members (the hooks really ran)."""
    from functools import partial

    from poisonlab.experiments.audit.defenses import defense_hooks, preset
    from poisonlab.models.build import build_model
    from poisonlab.training.trainer import Trainer

    model = ModelConfig(name="mlp", width=16)
    recipe = TrainConfig(epochs=2, batch_size=64)
    data = [digits_small.subset(torch.arange(120)), digits_small.subset(torch.arange(120, 240))]
    hooks = partial(defense_hooks, preset("mixup"))
    seq = _run(model, data, recipe, "sequential", hooks=hooks)
    mean, std = data[0].channel_stats()
    for k, (d, net) in enumerate(zip(data, seq)):
        seeds = SeedTree(10 + k)
        oracle = build_model("mlp", d.shape, d.num_classes, seeds.generator("init"), 16, "batch", mean, std)
        Trainer(oracle, d, recipe, seeds, hooks=defense_hooks(preset("mixup"), d.num_classes, seeds)).fit()
        _assert_members_close([net], [oracle], {"rtol": 0.0, "atol": 0.0})
    plain = _run(model, data, recipe, "sequential")
    assert not torch.equal(plain[0][1].net[1].weight, seq[0][1].net[1].weight)
    proc = _run(model, data, recipe, "processes", workers=2, hooks=hooks)  # the factory pickles
    _assert_members_close(proc, seq, {"rtol": 0.0, "atol": 0.0})
    with pytest.warns(UserWarning, match="hooks need the Trainer"):
        fused = _run(model, data, recipe, "fused", hooks=hooks)
    _assert_members_close(fused, seq, {"rtol": 0.0, "atol": 0.0})
