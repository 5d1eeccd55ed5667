"""PNG plots of the DP studies (matplotlib, Agg): per-class accuracy bars and audit canary score histograms."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from poisonlab.report.plots import figure, png_bytes


def per_class_accuracy_png(summary: dict[str, Any], classes: Sequence[str], small: int, title: str) -> bytes:
    """Grouped bars: mean test accuracy per class for each arm, with 95% t intervals; the small class is marked."""
    fig = figure(8, 3.6)
    ax = fig.subplots()
    arms = [a for a in ("non-private", "dp-sgd") if a in summary["arms"]]
    width = 0.8 / max(len(arms), 1)
    colours = {"non-private": "tab:blue", "dp-sgd": "tab:orange"}
    for j, arm in enumerate(arms):
        ivs = summary["arms"][arm]["per_class_accuracy"]
        xs = [c + (j - (len(arms) - 1) / 2) * width for c in range(len(ivs))]
        means = [iv["mean"] for iv in ivs]
        err = [
            [m - (iv["lo"] if iv["lo"] is not None else m) for m, iv in zip(means, ivs)],
            [(iv["hi"] if iv["hi"] is not None else m) - m for m, iv in zip(means, ivs)],
        ]
        ax.bar(xs, means, width, yerr=err, capsize=2, label=arm, color=colours.get(arm))
    ax.axvspan(small - 0.45, small + 0.45, color="0.85", zorder=0, label=f"under-represented ({classes[small]})")
    ax.set_xticks(range(len(classes)), list(classes))
    ax.set(xlabel="class", ylabel="test accuracy", title=title, ylim=(0, 1.05))
    ax.legend(loc="lower left", fontsize=8)
    return png_bytes(fig)


def audit_scores_png(runs: Sequence[dict[str, Any]]) -> bytes:
    """One panel per audited mechanism: histograms of canary scores (-loss) for included and excluded canaries."""
    fig = figure(3.2 * max(len(runs), 1), 3)
    axes = fig.subplots(1, max(len(runs), 1), squeeze=False)[0]
    for ax, run in zip(axes, runs):
        scores, included = run["scores"], run["included"]
        ins = [s for s, i in zip(scores, included) if i]
        outs = [s for s, i in zip(scores, included) if not i]
        bins = 30
        ax.hist(outs, bins=bins, alpha=0.6, label="excluded", color="tab:blue")
        ax.hist(ins, bins=bins, alpha=0.6, label="included", color="tab:red")
        ax.set(xlabel="score (-loss)", title=f"{run['mechanism']}\nlb {run['epsilon_lb']:.2f} vs {run['claim']}")
        ax.title.set_fontsize(8)
        ax.legend(fontsize=7)
    return png_bytes(fig)
