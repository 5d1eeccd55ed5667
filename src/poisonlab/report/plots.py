"""Plots, rendered with matplotlib's non-interactive backend to PNG bytes."""

from __future__ import annotations

import io
from collections.abc import Sequence


def training_curves_png(history: Sequence[dict[str, float]]) -> bytes:
    """Loss and training accuracy per epoch."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3), dpi=110)
    ax1, ax2 = fig.subplots(1, 2)
    epochs = [h["epoch"] for h in history]
    ax1.plot(epochs, [h["loss"] for h in history], marker="o")
    ax1.set(xlabel="epoch", ylabel="training loss", yscale="log")
    ax2.plot(epochs, [h["train_accuracy"] for h in history], marker="o", color="tab:green")
    ax2.set(xlabel="epoch", ylabel="training accuracy")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
