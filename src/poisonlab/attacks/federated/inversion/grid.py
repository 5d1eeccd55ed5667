"""A PNG grid of ground-truth images above their reconstructions (matplotlib, Agg backend)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import torch


def reconstruction_grid_png(
    truth: torch.Tensor, recon: torch.Tensor, captions: Sequence[str] | None = None, columns: int = 8
) -> bytes:
    """Rows of up to ``columns`` ground-truth images, each followed by a row of their reconstructions.

    Args:
        truth: (N, C, H, W) images in [0, 1].
        recon: (N, C, H, W) reconstructions in the same order.
        captions: one short caption per reconstruction (e.g. its PSNR).
        columns: images per row.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    n = truth.shape[0]
    cols = min(columns, n)
    blocks = (n + cols - 1) // cols
    fig = Figure(figsize=(1.25 * cols, 2.7 * blocks), dpi=100)
    axes = fig.subplots(2 * blocks, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        b, c = divmod(i, cols)
        for row, img in ((2 * b, truth[i]), (2 * b + 1, recon[i])):
            ax = axes[row][c]
            arr = img.detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy()
            ax.imshow(arr[..., 0] if arr.shape[-1] == 1 else arr, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        if captions is not None:
            axes[2 * b + 1][c].set_title(captions[i], fontsize=7)
        if c == 0:
            axes[2 * b][c].set_title("ground truth", fontsize=7, loc="left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
