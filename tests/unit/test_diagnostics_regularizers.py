"""Rank projection and norm bias: degenerate-parameter equivalences and known effects."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from poisonlab.diagnostics.norms import norm_summary, parameter_norms, squared_norm, total_norm
from poisonlab.diagnostics.regularizers import NormBias, NuclearNormPenalty, SpectralProjection, project_conv_spectrum
from poisonlab.diagnostics.spectra import conv_singular_values
from poisonlab.errors import ConfigError


def _net(seed: int = 0) -> nn.Sequential:
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 36, 3),
    )
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return net


def test_projection_with_a_threshold_below_the_spectrum_is_the_identity() -> None:
    w = torch.randn(5, 3, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(project_conv_spectrum(w, (6, 6), 1e-9, "lower"), w)
    torch.testing.assert_close(project_conv_spectrum(w, (6, 6), 1e9, "raise"), w)


def test_lower_projection_lowers_and_raise_caps_the_operator_spectrum() -> None:
    w = torch.randn(6, 6, 3, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    before = conv_singular_values(w, (8, 8))
    thr = float(before.median())
    low = conv_singular_values(project_conv_spectrum(w, (8, 8), thr, "lower"), (8, 8))
    assert (low < 1e-6).sum() < (before < thr).sum()  # cropping back to 3x3 does not keep it exactly low rank ...
    assert low.sum() < before.sum()  # ... but the nuclear norm drops
    # with a kernel as large as the input nothing is cropped: the projection is exact
    exact = conv_singular_values(project_conv_spectrum(w, (3, 3), 2.0, "lower"), (3, 3))
    ref = conv_singular_values(w, (3, 3))
    torch.testing.assert_close(exact, torch.where(ref < 2.0, 0.0, ref), atol=1e-9, rtol=0)
    capped = conv_singular_values(project_conv_spectrum(w, (3, 3), 2.0, "raise"), (3, 3))
    torch.testing.assert_close(capped, ref.clamp(max=2.0), atol=1e-9, rtol=0)


class _FakeTrainer:
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch


def test_spectral_projection_hook_acts_only_at_its_epochs_and_skips_the_first_conv() -> None:
    net = _net()
    thr = float(conv_singular_values(net[2].weight.detach(), (6, 6)).median())
    hook = SpectralProjection(net, (1, 6, 6), at_epochs=[1], threshold=thr, include_linear=True)
    first, second = net[0].weight.clone(), net[2].weight.clone()
    hook.on_epoch(_FakeTrainer(0), {})  # type: ignore[arg-type]
    assert torch.equal(net[2].weight, second)
    hook.on_epoch(_FakeTrainer(1), {})  # type: ignore[arg-type]
    assert torch.equal(net[0].weight, first) and not torch.equal(net[2].weight, second)
    s = torch.linalg.svdvals(net[5].weight.detach())
    assert bool(((s < 1e-5) | (s >= thr - 1e-5)).all()) and hook.state_dict() == {"applied": [1]}
    with pytest.raises(ConfigError):
        SpectralProjection(net, (1, 6, 6), [1], threshold=0.0)


def test_norm_bias_with_zero_target_is_weight_decay() -> None:
    """mu = 0: the penalty's gradient equals SGD's weight decay term lambda * theta (the reference update)."""
    net = _net()
    lam = 0.01
    hook = NormBias(net, lam, target_sq_norm=0.0)
    x = torch.randn(4, 1, 6, 6, generator=torch.Generator().manual_seed(2))
    loss = net(x).square().mean()
    (g_reg,) = torch.autograd.grad(hook.on_loss(None, None, None, loss).sum(), [net[2].weight])  # type: ignore[arg-type]
    (g_plain,) = torch.autograd.grad(net(x).square().mean(), [net[2].weight])
    torch.testing.assert_close(g_reg, g_plain + lam * net[2].weight.detach())


def test_norm_bias_above_the_norm_pushes_the_norm_up_and_targets_are_validated() -> None:
    net = _net()
    sq = float(squared_norm(list(net.parameters())).detach())
    hook = NormBias(net, 0.1, target_ratio=4.0)
    assert hook.target == pytest.approx(4 * sq)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(5):
        opt.zero_grad()
        hook.penalty().backward()
        opt.step()
    assert float(squared_norm(list(net.parameters())).detach()) > sq
    with pytest.raises(ConfigError):
        NormBias(net, 0.1)
    with pytest.raises(ConfigError):
        NormBias(net, 0.1, target_sq_norm=1.0, target_ratio=1.0)


def test_nuclear_norm_penalty_descent_lowers_the_nuclear_norm() -> None:
    net = _net()
    hook = NuclearNormPenalty(net, (1, 6, 6), weight=1.0, skip_first=True)
    before = float(hook.penalty().detach())
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    for _ in range(3):
        opt.zero_grad()
        hook.penalty().backward()
        opt.step()
    assert float(hook.penalty().detach()) < before
    assert net[0].weight.grad is None  # the first convolution is left out


def test_norms_known_answers() -> None:
    a = nn.Linear(2, 2)
    with torch.no_grad():
        a.weight.copy_(torch.tensor([[3.0, 0.0], [0.0, 4.0]]))
        a.bias.copy_(torch.tensor([0.0, 0.0]))
    b = nn.Linear(2, 2)
    with torch.no_grad():
        b.weight.zero_()
        b.bias.copy_(torch.tensor([1.0, 0.0]))
    assert total_norm(a) == pytest.approx(5.0)
    rows = {r["name"]: r for r in parameter_norms(a, reference=b)}
    assert rows["weight"]["l2"] == pytest.approx(5.0) and rows["weight"]["linf"] == pytest.approx(4.0)
    assert rows["bias"]["distance"] == pytest.approx(1.0) and rows["bias"]["relative_distance"] == pytest.approx(1.0)
    s = norm_summary(a, b)
    assert s["weights_l2"] == pytest.approx(5.0) and s["distance_l2"] == pytest.approx(26**0.5)
