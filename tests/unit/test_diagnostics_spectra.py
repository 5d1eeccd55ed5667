"""Known-answer tests of the diagnostics' spectra and ranks against numpy/scipy SVD."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import nn

from poisonlab.diagnostics.spectra import (
    conv_input_sizes,
    conv_singular_values,
    effective_rank,
    layer_spectra,
    numerical_rank,
)


def circular_conv_matrix(weight: torch.Tensor, n: int) -> np.ndarray:
    """The explicit (c_out n^2) x (c_in n^2) matrix of a stride-1 circular convolution, column by column."""
    c_in, k = weight.shape[1], weight.shape[-1]
    basis = torch.eye(c_in * n * n, dtype=torch.float64).reshape(-1, c_in, n, n)
    out = F.conv2d(F.pad(basis, (k // 2,) * 4, mode="circular"), weight.double())
    return out.reshape(c_in * n * n, -1).T.numpy()


@pytest.mark.parametrize(("c_out", "c_in", "k", "n"), [(3, 2, 3, 5), (2, 4, 3, 6), (4, 4, 5, 7), (1, 1, 3, 4)])
def test_conv_operator_spectrum_equals_svd_of_explicit_operator(c_out: int, c_in: int, k: int, n: int) -> None:
    g = torch.Generator().manual_seed(c_out * 100 + n)
    w = torch.randn(c_out, c_in, k, k, generator=g, dtype=torch.float64)
    expected = np.linalg.svd(circular_conv_matrix(w, n), compute_uv=False)
    ours = conv_singular_values(w, (n, n)).numpy()
    assert ours.shape == (n * n * min(c_out, c_in),)
    np.testing.assert_allclose(ours, expected[: ours.size], rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(expected[ours.size :], 0.0, atol=1e-9)  # the rest of a wide/tall operator is zero


def test_grouped_conv_spectrum_is_the_union_of_its_groups() -> None:
    g = torch.Generator().manual_seed(1)
    w = torch.randn(4, 1, 3, 3, generator=g, dtype=torch.float64)  # depthwise, 4 groups
    both = conv_singular_values(w, (5, 5), groups=4)
    parts = torch.cat([conv_singular_values(w[i : i + 1], (5, 5)) for i in range(4)]).sort(descending=True).values
    torch.testing.assert_close(both, parts)


def test_effective_rank_known_answers() -> None:
    assert effective_rank(torch.ones(7)) == pytest.approx(7.0)
    assert effective_rank(torch.tensor([3.0, 0.0, 0.0])) == pytest.approx(1.0)
    assert effective_rank(torch.zeros(4)) == 0.0
    s = torch.tensor([4.0, 2.0, 1.0, 1.0])
    p = np.array([0.5, 0.25, 0.125, 0.125])
    assert effective_rank(s) == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    assert 1.0 <= effective_rank(torch.rand(20) + 0.01) <= 20.0


@pytest.mark.parametrize("rank", [1, 3, 6])
def test_numerical_rank_matches_numpy_matrix_rank(rank: int) -> None:
    g = torch.Generator().manual_seed(rank)
    a = torch.randn(12, rank, generator=g, dtype=torch.float64) @ torch.randn(rank, 9, generator=g, dtype=torch.float64)
    s = torch.linalg.svdvals(a)
    assert numerical_rank(s, tuple(a.shape)) == np.linalg.matrix_rank(a.numpy()) == rank
    assert numerical_rank(s, tuple(a.shape), tol=1e30) == 0


def test_layer_spectra_of_a_small_network_against_scipy() -> None:
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3 * 4 * 4, 5)
    )
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    assert conv_input_sizes(net, (2, 8, 8)) == {"0": (8, 8)}
    spectra = {s.name: s for s in layer_spectra(net, (2, 8, 8))}
    conv, lin = spectra["0"], spectra["4"]
    assert conv.operator_shape == (3 * 64, 2 * 64) and conv.input_size == (8, 8)
    want = scipy.linalg.svdvals(circular_conv_matrix(net[0].weight.detach(), 8))[: conv.max_rank]
    np.testing.assert_allclose(conv.singular_values.numpy(), want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        lin.singular_values.numpy(), scipy.linalg.svdvals(net[4].weight.detach().numpy()), rtol=1e-5
    )
    reshaped = {s.name: s for s in layer_spectra(net, conv_mode="reshape")}["0"]
    np.testing.assert_allclose(
        reshaped.singular_values.numpy(),
        scipy.linalg.svdvals(net[0].weight.detach().reshape(3, -1).numpy()),
        rtol=1e-5,
    )
    summary = lin.summary()
    assert summary["numerical_rank"] == 5 and summary["max_rank"] == 5
    assert summary["spectral_norm"] == pytest.approx(float(np.linalg.norm(net[4].weight.detach().numpy(), 2)), rel=1e-5)
