"""Plots, rendered with matplotlib's non-interactive backend to PNG bytes."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any


def figure(width: float, height: float, dpi: int = 110) -> Any:
    """A matplotlib Figure on the non-interactive backend (no pyplot state, safe without a display)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=dpi)


def png_bytes(fig: Any) -> bytes:
    """The figure laid out tightly and rendered to PNG bytes."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def training_curves_png(history: Sequence[dict[str, float]]) -> bytes:
    """Loss and training accuracy per epoch."""
    fig = figure(7, 3)
    ax1, ax2 = fig.subplots(1, 2)
    epochs = [h["epoch"] for h in history]
    ax1.plot(epochs, [h["loss"] for h in history], marker="o")
    ax1.set(xlabel="epoch", ylabel="training loss", yscale="log")
    ax2.plot(epochs, [h["train_accuracy"] for h in history], marker="o", color="tab:green")
    ax2.set(xlabel="epoch", ylabel="training accuracy")
    return png_bytes(fig)


def image_rows_png(rows: Sequence[object], labels: Sequence[str], scale: float = 1.0) -> bytes:
    """Rows of images (each a tensor (K, C, H, W) in [0, 1]) tiled into one picture, a label per row."""
    k = max(int(r.shape[0]) for r in rows)  # type: ignore[attr-defined]
    fig = figure(scale * 1.0 * k + 0.8, scale * 1.1 * len(rows), dpi=100)
    axes = fig.subplots(len(rows), k, squeeze=False)
    for i, (imgs, label) in enumerate(zip(rows, labels)):
        for j in range(k):
            ax = axes[i][j]
            ax.axis("off")
            if j < imgs.shape[0]:  # type: ignore[attr-defined]
                img = imgs[j].detach().cpu().clamp(0, 1).permute(1, 2, 0).numpy()  # type: ignore[index]
                ax.imshow(img.squeeze(-1) if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
            if j == 0:
                ax.set_title(label, fontsize=8, loc="left")
    return png_bytes(fig)


def paired_margins_png(control: Sequence[float], poisoned: Sequence[float], labels: Sequence[str]) -> bytes:
    """One point per trial: the target's adversarial margin under the noise control (x) and under the poisons (y).

    Points above the diagonal are moved towards the adversarial class by the poisons more than by noise; points
    above the horizontal line at 0 are flipped (on average over the trial's victims)."""
    fig = figure(5, 4.5)
    ax = fig.subplots()
    ax.scatter(control, poisoned, color="tab:red", zorder=3)
    for x, y, label in zip(control, poisoned, labels):
        ax.annotate(label, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    values = [*control, *poisoned, 0.0]
    lo, hi = min(values) - 1.0, max(values) + 1.0
    ax.plot([lo, hi], [lo, hi], ls=":", color="gray", label="no effect (poisons = noise)")
    ax.axhline(0.0, color="black", lw=0.8, label="flip threshold")
    ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="target margin, noise-control victims (logits)")
    ax.set(ylabel="target margin, poisoned victims (logits)")
    ax.legend(fontsize=7, loc="lower right")
    return png_bytes(fig)


Interval = tuple[float, float, float]  # (centre, lo, hi)
CurveSeries = tuple[
    str, Sequence[float], Sequence[Interval | None], Sequence[Interval | None], Sequence[Interval | None]
]


def budget_curve_png(curves: Sequence[CurveSeries], xlabel: str = "eps (/255)") -> bytes:
    """Attack strength against a budget (eps in /255 by default), one line per curve: (label, budget, poisoned
    success, noise-control success, target margin shift past noise). Left: success rates with their intervals
    (noise dashed). Right: the margin shift with its interval; above 0 the poisons move the target further than
    same-budget noise."""
    fig = figure(10, 4)
    ax1, ax2 = fig.subplots(1, 2)
    for i, (label, eps, success, control, shift) in enumerate(curves):
        colour = f"C{i % 10}"
        _error_line(ax1, eps, success, colour, label, "-", "o")
        _error_line(ax1, eps, control, colour, f"{label}: noise control", "--", "x")
        _error_line(ax2, eps, shift, colour, label, "-", "o")
    ax1.set(xlabel=xlabel, ylabel="target success rate (95% interval)", ylim=(-0.02, 1.02))
    ax2.axhline(0.0, color="black", lw=0.8)
    ax2.set(xlabel=xlabel, ylabel="target margin shift past noise, logits (95%)")
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    return png_bytes(fig)


def _error_line(
    ax: Any, xs: Sequence[float], values: Sequence[Interval | None], colour: str, label: str, ls: str, marker: str
) -> None:
    """Points with asymmetric error bars; missing (None) values are left out."""
    pts = [(x, v) for x, v in zip(xs, values) if v is not None]
    if not pts:
        return
    x = [p[0] for p in pts]
    y = [p[1][0] for p in pts]
    err = [[p[1][0] - p[1][1] for p in pts], [p[1][2] - p[1][0] for p in pts]]
    ax.errorbar(x, y, yerr=err, color=colour, ls=ls, marker=marker, capsize=3, label=label)
