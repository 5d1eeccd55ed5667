"""Loss along the line between two checkpoints: endpoints equal the checkpoints' own losses; vmap equals a loop."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from poisonlab.data import Dataset
from poisonlab.diagnostics.interpolation import interpolate, interpolated_states, spread_subset
from poisonlab.models.build import build_model


def _model(seed: int, norm: str, data: Dataset) -> nn.Module:
    m = build_model("convnet", data.shape, data.num_classes, torch.Generator().manual_seed(seed), 4, norm)
    m.train()
    with torch.no_grad():  # give BatchNorm non-trivial running statistics, different per model
        for i in range(3):
            m(data.images[i * 24 + seed : i * 24 + seed + 24])
    return m.eval()


@pytest.fixture(scope="module")
def colour_small() -> Dataset:
    """96 random 1x28x28 images in 4 classes."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(96, 1, 28, 28, generator=g)
    return Dataset("rand", x, torch.randint(0, 4, (96,), generator=g), torch.arange(96), ("a", "b", "c", "d"))


@pytest.fixture(scope="module")
def pair(colour_small: Dataset) -> tuple[nn.Module, nn.Module, dict[str, Dataset]]:
    data = {"train": colour_small.subset(torch.arange(64)), "test": colour_small.subset(torch.arange(64, 96))}
    return _model(1, "batch", colour_small), _model(2, "batch", colour_small), data


def _own(model: nn.Module, ds: Dataset) -> tuple[float, float]:
    model.eval()
    with torch.no_grad():
        logits = model(ds.images)
    return nn.functional.cross_entropy(logits, ds.labels).item(), (logits.argmax(1) == ds.labels).float().mean().item()


def test_interpolated_bn_endpoints_are_the_checkpoints_own_losses(pair) -> None:
    a, b, data = pair
    out = interpolate(a, b, data, alphas=[0.0, 0.5, 1.0], bn="interpolate", batch_size=16, chunk=2)
    for name, ds in data.items():
        curve = out["splits"][name]
        for i, model in ((0, a), (2, b)):
            loss, acc = _own(model, ds)
            assert curve["loss"][i] == pytest.approx(loss, rel=1e-5)
            assert curve["accuracy"][i] == pytest.approx(acc)
        assert out["endpoints"][name]["a"]["loss"] == pytest.approx(curve["loss"][0], rel=1e-5)
        assert out["endpoints"][name]["b"]["loss"] == pytest.approx(curve["loss"][2], rel=1e-5)


def test_recomputed_bn_endpoints_equal_the_checkpoints_after_update_bn(pair) -> None:
    a, b, data = pair
    calib = spread_subset(data["train"], 48).images  # the calibration images: 48 spread over the 64
    out = interpolate(a, b, data, alphas=[0.0, 1.0], bn="recompute", calibration_size=48, batch_size=16)
    for i, model in enumerate((a, b)):
        ref = _copy(model)
        update_bn([calib[j : j + 16] for j in range(0, 48, 16)], ref)  # torch's own recalibration, equal-size batches
        for name, ds in data.items():
            loss, acc = _own(ref, ds)
            assert out["splits"][name]["loss"][i] == pytest.approx(loss, rel=1e-4)
            assert out["splits"][name]["accuracy"][i] == pytest.approx(acc)


def test_vectorised_path_equals_the_loop_and_models_are_untouched(pair) -> None:
    a, b, data = pair
    before = {k: v.clone() for k, v in a.state_dict().items()}
    kw = dict(alphas=[-0.25, 0.3, 0.6, 1.2], bn="recompute", calibration_size=32, batch_size=16, chunk=3)
    fast = interpolate(a, b, data, vectorize=True, **kw)
    slow = interpolate(a, b, data, vectorize=False, **kw)
    for name in data:
        assert fast["splits"][name]["loss"] == pytest.approx(slow["splits"][name]["loss"], rel=1e-4)
        assert fast["splits"][name]["accuracy"] == pytest.approx(slow["splits"][name]["accuracy"])
    for k, v in a.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_without_batchnorm_both_modes_give_the_own_losses_at_the_ends(colour_small: Dataset) -> None:
    a, b = _model(3, "none", colour_small), _model(4, "none", colour_small)
    data = {"test": colour_small.subset(torch.arange(40))}
    for bn in ("recompute", "interpolate"):
        out = interpolate(a, b, data, alphas=[0.0, 0.5, 1.0], bn=bn, batch_size=20)  # type: ignore[arg-type]
        assert out["bn"] in ("none", "interpolate")
        assert out["splits"]["test"]["loss"][0] == pytest.approx(_own(a, data["test"])[0], rel=1e-5)
        assert out["splits"]["test"]["loss"][2] == pytest.approx(_own(b, data["test"])[0], rel=1e-5)


def test_same_model_gives_a_flat_line_and_zero_barrier(pair) -> None:
    a, _, data = pair
    out = interpolate(a, a, {"test": data["test"]}, alphas=[0.0, 0.25, 0.5, 1.0], bn="interpolate", batch_size=16)
    losses = out["splits"]["test"]["loss"]
    assert max(losses) - min(losses) < 1e-5
    assert abs(out["splits"]["test"]["loss_barrier"]) < 1e-5


def test_interpolated_states_mix_floats_and_keep_integer_buffers() -> None:
    a = {"w": torch.zeros(2), "n": torch.tensor(3)}
    b = {"w": torch.ones(2), "n": torch.tensor(7)}
    s = interpolated_states(a, b, torch.tensor([0.0, 0.25, 1.0]))
    torch.testing.assert_close(s["w"], torch.tensor([[0.0, 0.0], [0.25, 0.25], [1.0, 1.0]]))
    assert s["n"].tolist() == [3, 3, 3]
    with pytest.raises(ValueError):
        interpolated_states(a, {"w": torch.ones(3), "n": torch.tensor(1)}, torch.tensor([0.5]))


def _copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)


def test_spread_subset_is_class_balanced_on_sorted_data() -> None:
    labels = torch.arange(10).repeat_interleave(30)
    ds = Dataset("sorted", torch.zeros(300, 1, 2, 2), labels, torch.arange(300), tuple("0123456789"))
    picked = spread_subset(ds, 50)
    assert len(picked) == 50 and torch.bincount(picked.labels).tolist() == [5] * 10
    assert spread_subset(ds, 1000) is ds


def test_diagnose_api_returns_json_able_numbers_for_a_pair(pair) -> None:
    import json

    from poisonlab.diagnostics import diagnose

    a, b, data = pair
    out = diagnose(a, data, compare=b, alphas=[0.0, 0.5, 1.0], bn="interpolate")
    text = json.dumps(out, allow_nan=False)  # plain numbers only
    assert '"interpolation"' in text and set(out["models"]) == {"A", "B"}
    sa, sb = out["models"]["A"]["summary"], out["models"]["B"]["summary"]
    assert out["difference"]["test_loss"] == pytest.approx(sb["test_loss"] - sa["test_loss"])
    assert out["interpolation"]["splits"]["test"]["loss"][0] == pytest.approx(sa["test_loss"], rel=1e-5)
    assert [r["kind"] for r in out["models"]["A"]["layers"]] == ["conv"] * 5 + ["linear"]
    assert len(out["difference"]["layers"]) == 6 and out["difference"]["distance_l2"] > 0
    alone = diagnose(a, data["test"])
    assert "interpolation" not in alone and "data_accuracy" in alone["models"]["A"]["summary"]
