"""Membership-inference plots: log-log ROC curves (the view that shows the low-FPR regime)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from poisonlab.metrics.membership import auc, roc_curve
from poisonlab.report.plots import figure, png_bytes


def roc_png(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], title: str = "") -> bytes:
    """One log-log ROC curve per ``name -> (scores, labels)``, with the chance diagonal."""
    fig = figure(5.5, 4.5)
    ax = fig.subplots()
    lo = 1.0
    for name, (scores, labels) in curves.items():
        fpr, tpr, _ = roc_curve(scores, labels)
        n_neg = int((~np.asarray(labels, bool)).sum())
        lo = min(lo, 1.0 / max(n_neg, 1))
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc(scores, labels):.3f})", ls="--" if "global" in name else "-")
    ax.plot([0, 1], [0, 1], ls=":", color="gray")
    ax.set(xscale="log", yscale="log", xlim=(lo, 1), ylim=(lo, 1), xlabel="false positive rate")
    ax.set(ylabel="true positive rate", title=title)
    ax.legend(fontsize=6)
    return png_bytes(fig)
