"""MSE / PSNR / SSIM known answers and the scikit-image oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from poisonlab.metrics.image import gaussian_window, image_metrics, mse, psnr, ssim


def test_psnr_and_mse_known_values() -> None:
    ref = torch.zeros(2, 1, 4, 4)
    x = torch.stack([torch.full((1, 4, 4), 0.1), torch.full((1, 4, 4), 0.5)])
    assert mse(x, ref).tolist() == pytest.approx([0.01, 0.25])
    assert psnr(x, ref).tolist() == pytest.approx([20.0, 10 * math.log10(4)])
    assert psnr(ref, ref).isinf().all()


def test_ssim_of_constant_images_is_the_luminance_term() -> None:
    # constant images: variances and covariance vanish, SSIM = (2ab + C1) / (a^2 + b^2 + C1)
    a, b, c1 = 0.25, 0.75, 0.01**2  # exact in float32
    x, y = torch.full((1, 3, 16, 16), a), torch.full((1, 3, 16, 16), b)
    assert ssim(x, y).item() == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-9)
    assert ssim(x, x).item() == pytest.approx(1.0)


def test_gaussian_window_is_scipys() -> None:
    w = gaussian_window(1.5)
    assert w.numel() == 11 and w.sum().item() == pytest.approx(1.0)
    assert w[5] / w[6] == pytest.approx(math.exp(0.5 / 1.5**2))


def test_ssim_matches_scikit_image() -> None:
    skimage_metrics = pytest.importorskip("skimage.metrics", reason="scikit-image is the SSIM oracle")
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 3, 32, 32, generator=g)
    b = (a + 0.15 * torch.randn(3, 3, 32, 32, generator=g)).clamp(0, 1)
    ours = ssim(a, b)
    for i in range(3):
        ref = skimage_metrics.structural_similarity(
            a[i].double().numpy(),
            b[i].double().numpy(),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
            channel_axis=0,
        )
        assert ours[i].item() == pytest.approx(float(ref), abs=1e-10)
    gray = ssim(a[:, :1, :28, :28], b[:, :1, :28, :28])
    ref0 = skimage_metrics.structural_similarity(
        a[0, 0, :28, :28].double().numpy(),
        b[0, 0, :28, :28].double().numpy(),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
    )
    assert gray[0].item() == pytest.approx(float(np.float64(ref0)), abs=1e-10)


def test_image_metrics_reports_nan_ssim_for_tiny_images() -> None:
    m = image_metrics(torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8))
    assert m["mse"] == [1.0] and m["psnr"] == [0.0] and math.isnan(m["ssim"][0])
