"""Image similarity between a reconstruction and its ground truth: MSE, PSNR and SSIM, per image.

Images are float tensors (N, C, H, W) in a known data range (pixel01: ``data_range = 1``). Every function
returns one value per image (a tensor of shape (N,)), vectorised over the batch; average them yourself.

SSIM is Wang, Bovik, Sheikh & Simoncelli (IEEE TIP 2004) with their Gaussian window (sigma 1.5, 11x11),
K1 = 0.01, K2 = 0.03, population (not sample) covariances, computed per channel on the "valid" part of the
image (windows fully inside it) and averaged over positions and channels. This is exactly what
``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
data_range=1, channel_axis=0)`` returns: skimage filters with reflected borders and then crops a border of
(win - 1) / 2 pixels, which leaves precisely the valid windows.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _check(x: torch.Tensor, ref: torch.Tensor) -> None:
    if x.shape != ref.shape or x.dim() != 4:
        raise ValueError(f"expected two (N, C, H, W) tensors of one shape, got {tuple(x.shape)} and {tuple(ref.shape)}")


def mse(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image, shape (N,)."""
    _check(x, ref)
    return (x.double() - ref.double()).pow(2).flatten(1).mean(1)


def psnr(x: torch.Tensor, ref: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio ``10 log10(range^2 / MSE)`` in dB per image, shape (N,); +inf when equal.

    The inverting-gradients reference reports the mean of these per-image values.
    """
    err = mse(x, ref)
    return 10.0 * torch.log10(torch.as_tensor(data_range, dtype=err.dtype) ** 2 / err)


def gaussian_window(sigma: float = 1.5, truncate: float = 3.5) -> torch.Tensor:
    """The normalised 1-d Gaussian of scipy's ``gaussian_filter`` (radius ``int(truncate * sigma + 0.5)``)."""
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    w = torch.exp(-0.5 * (t / sigma) ** 2)
    return w / w.sum()


def ssim(
    x: torch.Tensor,
    ref: torch.Tensor,
    data_range: float = 1.0,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004, Gaussian window) per image, shape (N,), in [-1, 1].

    Raises:
        ValueError: the images are smaller than the window (11 pixels for sigma 1.5).
    """
    _check(x, ref)
    w1 = gaussian_window(sigma).to(x.device)
    size = w1.numel()
    n, c, h, w = x.shape
    if h < size or w < size:
        raise ValueError(f"ssim: images of {h}x{w} are smaller than the {size}x{size} window")
    a = x.double().reshape(n * c, 1, h, w)
    b = ref.double().reshape(n * c, 1, h, w)
    stack = torch.cat([a, b, a * a, b * b, a * b], dim=1)  # (NC, 5, H, W): filter all five maps at once
    kh = w1.view(1, 1, size, 1).expand(5, 1, size, 1)
    kw = w1.view(1, 1, 1, size).expand(5, 1, 1, size)
    f = F.conv2d(F.conv2d(stack, kh, groups=5), kw, groups=5)
    mu_a, mu_b, e_aa, e_bb, e_ab = f.unbind(1)
    var_a = e_aa - mu_a * mu_a
    var_b = e_bb - mu_b * mu_b
    cov = e_ab - mu_a * mu_b
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.reshape(n, c, -1).mean(dim=(1, 2))


def image_metrics(x: torch.Tensor, ref: torch.Tensor, data_range: float = 1.0) -> dict[str, list[float]]:
    """Per-image MSE, PSNR and SSIM as plain lists (SSIM is NaN for images smaller than its window)."""
    _check(x, ref)
    h, w = x.shape[-2:]
    size = gaussian_window().numel()
    s = ssim(x, ref, data_range) if min(h, w) >= size else torch.full((x.shape[0],), math.nan)
    return {
        "mse": mse(x, ref).tolist(),
        "psnr": psnr(x, ref, data_range).tolist(),
        "ssim": s.tolist(),
    }
