"""SeedTree and model construction: named streams, no global RNG, deterministic init."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from poisonlab.errors import ConfigError
from poisonlab.models import build_model
from poisonlab.rng import SeedTree


def test_seed_tree_named_streams_are_stable_and_independent() -> None:
    a, b = SeedTree(7), SeedTree(7)
    b.seed("other")  # using other names first must not shift a stream
    assert a.seed("init") == b.seed("init")
    assert a.seed("init") != a.seed("data")
    assert SeedTree(8).seed("init") != a.seed("init")
    assert a.child("victim").seed("init") != a.seed("init")
    rec = a.record()
    assert rec["root"] == 7 and "init" in rec["derived"] and "victim/init" in rec["derived"]
    with pytest.raises(ValueError):
        SeedTree(-1)


@pytest.mark.parametrize(
    "name,shape",
    [
        ("convnet", (1, 28, 28)),
        ("convnet", (3, 32, 32)),
        ("mlp", (1, 8, 8)),
        ("lenet", (1, 28, 28)),
        ("lenet", (3, 32, 32)),
        ("resnet18", (3, 32, 32)),
    ],
)
def test_models_build_forward_and_leave_global_rng_alone(name: str, shape: tuple[int, int, int]) -> None:
    torch_state, np_state, py_state = torch.random.get_rng_state(), np.random.get_state(), random.getstate()
    m1 = build_model(name, shape, 10, torch.Generator().manual_seed(1), width=4 if name != "lenet" else None)
    m2 = build_model(name, shape, 10, torch.Generator().manual_seed(1), width=4 if name != "lenet" else None)
    m3 = build_model(name, shape, 10, torch.Generator().manual_seed(2), width=4 if name != "lenet" else None)
    assert torch.equal(torch_state, torch.random.get_rng_state())
    assert np.array_equal(np_state[1], np.random.get_state()[1]) and py_state == random.getstate()
    for (k, p1), p2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(p1, p2), k
    assert any(not torch.equal(p1, p3) for p1, p3 in zip(m1.parameters(), m3.parameters()))
    out = m1.eval()(torch.rand(2, *shape))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_default_init_matches_pytorch_bounds() -> None:
    m = build_model("mlp", (1, 8, 8), 10, torch.Generator().manual_seed(0), width=32)
    lin = m[1].net[1]
    bound = 1 / 64**0.5
    assert lin.weight.abs().max() <= bound and lin.weight.abs().max() > 0.9 * bound
    assert lin.weight.std().item() == pytest.approx(bound / 3**0.5, rel=0.1)


def test_unknown_model_and_bad_shapes_are_config_errors() -> None:
    g = torch.Generator()
    with pytest.raises(ConfigError, match="model.name"):
        build_model("vgg99", (3, 32, 32), 10, g)
    with pytest.raises(ConfigError, match="convnet"):
        build_model("convnet", (1, 8, 8), 10, g)
    with pytest.raises(ConfigError, match="lenet"):
        build_model("lenet", (1, 8, 8), 10, g)


def test_normalize_layer_is_part_of_the_model() -> None:
    m = build_model("mlp", (1, 8, 8), 10, torch.Generator(), mean=(0.3,), std=(0.2,))
    assert torch.allclose(m[0](torch.full((1, 1, 8, 8), 0.5)), torch.ones(1, 1, 8, 8))
