"""Pictures of a protected release: a clean | protected | difference grid, and accuracy curves over eps or
the fraction protected (matplotlib, Agg backend, PNG bytes)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from poisonlab.attacks.poisoning.poison_set import PoisonSet
from poisonlab.data.dataset import Dataset
from poisonlab.report.plots import figure, png_bytes


def protection_grid_png(protected: PoisonSet, base: Dataset, rows: int = 8) -> bytes:
    """The first ``rows`` protected samples: clean | protected | difference amplified from [-eps, eps] to [0, 1]."""
    n = max(1, min(rows, len(protected)))
    x = base.images[base.positions_of(protected.poison_ids[:n])].cpu()
    d = protected.deltas[:n]
    cols = (x, (x + d).clamp(0, 1), (d / (2 * protected.eps) + 0.5).clamp(0, 1))
    fig = figure(4.5, 1.5 * n, dpi=100)
    axes = fig.subplots(n, 3, squeeze=False)
    for i in range(n):
        for j, (col, title) in enumerate(zip(cols, ("clean", "protected", "difference (amplified)"))):
            img = col[i]
            ax = axes[i][j]
            shown = img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy()
            ax.imshow(shown, cmap="gray" if img.shape[0] == 1 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=8)
        axes[i][0].set_ylabel(f"id {int(protected.poison_ids[i])}", fontsize=7)
    return png_bytes(fig)


ARM_STYLES = {"protected": "-", "noise": "--", "clean": ":"}


def curve_style(label: str, models: list[str]) -> dict[str, Any]:
    """Line style of a ``"<model> <arm>"`` curve: one colour per model (in order of first appearance, appended to
    ``models``), solid for the protected arm, dashed for noise, dotted for clean; other labels get defaults."""
    model, _, arm = label.rpartition(" ")
    if arm not in ARM_STYLES or not model:
        return {}
    if model not in models:
        models.append(model)
    return {"color": f"C{models.index(model) % 10}", "linestyle": ARM_STYLES[arm]}


def accuracy_curve_png(
    xs: Sequence[float],
    curves: Mapping[str, Sequence[Mapping[str, float]]],
    xlabel: str,
    title: str,
    bar: float | None = None,
) -> bytes:
    """Clean test accuracy (mean with t-interval error bars) against ``xs``, one line per label; labels
    ``"<model> <arm>"`` share a colour per model and a line style per arm."""
    fig = figure(6, 4, dpi=100)
    ax = fig.subplots()
    models: list[str] = []
    for label, points in curves.items():
        mean = [p["mean"] for p in points]
        err = [
            [p["mean"] - p["lo"] if p["lo"] == p["lo"] else 0.0 for p in points],
            [p["hi"] - p["mean"] if p["hi"] == p["hi"] else 0.0 for p in points],
        ]
        style = curve_style(label, models)
        ax.errorbar(xs[: len(points)], mean, yerr=err, marker="o", capsize=3, label=label, **style)
    if bar is not None:
        ax.axhline(bar, color="gray", linestyle="--", linewidth=1, label=f"bar {bar:g}")
    ax.set(xlabel=xlabel, ylabel="clean test accuracy", title=title, ylim=(0, 1))
    ax.legend(fontsize=7)
    return png_bytes(fig)


def summary_rows(summary: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """Table rows (model, arm, mean [lo, hi], n) of a ``summarize_protection`` result."""
    rows = []
    for model, entry in summary.items():
        for key, v in entry.items():
            rows.append((model, key, f"{v['mean']:.4f} [{v['lo']:.4f}, {v['hi']:.4f}]", v["n"]))
    return rows


def max_abs(deltas: torch.Tensor) -> float:
    return float(deltas.abs().max()) if deltas.numel() else 0.0
