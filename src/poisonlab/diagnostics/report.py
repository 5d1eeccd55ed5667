"""Plots and HTML pages of the diagnostics: spectra per layer, parameter norms, the interpolation curve, and
the studies' tables."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from poisonlab.io.atomic import write_bytes_atomic
from poisonlab.report.html import image, page, table
from poisonlab.report.plots import figure, png_bytes


def spectra_png(spectra: dict[str, Sequence[Any]]) -> bytes:
    """Singular values (log scale) against their rank position as a fraction of the layer's maximal rank, one
    panel per layer, one line per model (``{label: [LayerSpectrum, ...]}``)."""
    labels = list(spectra)
    first = spectra[labels[0]]
    cols = min(3, len(first))
    rows = (len(first) + cols - 1) // cols
    fig = figure(3.3 * cols, 2.5 * rows)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, layer in enumerate(first):
        ax = axes[i // cols][i % cols]
        for j, label in enumerate(labels):
            s = spectra[label][i].singular_values.double().clamp_min(1e-12)
            x = (s.new_tensor(range(1, len(s) + 1)) / len(s)).numpy()
            ax.plot(x, s.numpy(), label=label, linestyle="-" if j == 0 else "--")
        ax.set_yscale("log")
        ax.set_title(f"{layer.name} ({layer.kind}, rank<={layer.max_rank})", fontsize=8)
        ax.set_xlabel("index / max rank", fontsize=7)
        ax.tick_params(labelsize=7)
    for k in range(len(first), rows * cols):
        axes[k // cols][k % cols].axis("off")
    if len(labels) > 1:
        axes[0][0].legend(fontsize=7)
    return png_bytes(fig)


def norms_png(norms: dict[str, list[dict[str, Any]]]) -> bytes:
    """l2 norm of each parameter tensor, one bar group per model."""
    labels = list(norms)
    names = [str(r["name"]) for r in norms[labels[0]]]
    fig = figure(max(6.0, 0.35 * len(names)), 3.2)
    ax = fig.subplots()
    width = 0.8 / len(labels)
    for j, label in enumerate(labels):
        ax.bar([i + j * width for i in range(len(names))], [float(r["l2"]) for r in norms[label]], width, label=label)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(names))])
    ax.set_xticklabels(names, rotation=70, fontsize=6, ha="right")
    ax.set_ylabel("l2 norm")
    if len(labels) > 1:
        ax.legend(fontsize=7)
    return png_bytes(fig)


def interpolation_png(result: dict[str, Any]) -> bytes:
    """Loss and accuracy against alpha for each evaluated split."""
    fig = figure(8, 3)
    ax1, ax2 = fig.subplots(1, 2)
    a = result["alphas"]
    for name, curve in result["splits"].items():
        ax1.plot(a, curve["loss"], marker=".", label=name)
        ax2.plot(a, curve["accuracy"], marker=".", label=name)
    ax1.set(xlabel="alpha (0 = A, 1 = B)", ylabel="cross-entropy", yscale="log")
    ax2.set(xlabel="alpha (0 = A, 1 = B)", ylabel="accuracy")
    ax1.legend(fontsize=7)
    ax1.set_title(f"BatchNorm statistics: {result['bn']}", fontsize=8)
    return png_bytes(fig)


def write_diagnose_report(directory: Path, result: dict[str, Any], spectra: dict[str, Sequence[Any]]) -> Path:
    """``index.html`` and ``result.json`` of ``poisonlab diagnose``; returns the page."""
    sections: list[tuple[str, str]] = []
    for label, model in result["models"].items():
        rows = [
            (
                r["name"],
                r["kind"],
                r["max_rank"],
                r["effective_rank"],
                r["numerical_rank"],
                r["spectral_norm"],
                r["stable_rank"],
            )
            for r in model["layers"]
        ]
        head = ["layer", "kind", "max rank", "effective rank", "numerical rank", "spectral norm", "stable rank"]
        summ = table(list(model["summary"].items()), ["metric", "value"])
        sections.append((f"Model {label}: {model['source']}", summ + table(rows, head)))
    sections.append(("Singular-value spectra", image(spectra_png(spectra), "spectra per layer")))
    sections.append(
        ("Parameter norms", image(norms_png({k: v["norms"] for k, v in result["models"].items()}), "norms per layer"))
    )
    if result.get("interpolation"):
        it = result["interpolation"]
        rows = [(n, c["loss_barrier"], c["error_barrier"]) for n, c in it["splits"].items()]
        ends = [
            (
                n,
                e["a"]["loss"],
                it["splits"][n]["loss"][it["alphas"].index(0.0)] if 0.0 in it["alphas"] else "-",
                e["b"]["loss"],
                it["splits"][n]["loss"][it["alphas"].index(1.0)] if 1.0 in it["alphas"] else "-",
            )
            for n, e in it["endpoints"].items()
        ]
        body = (
            image(interpolation_png(it), "loss along the line")
            + table(rows, ["split", "loss barrier", "error barrier"])
            + "<p>Endpoints: each model's own loss (stored statistics) and the curve's value at alpha 0 / 1.</p>"
            + table(ends, ["split", "A own", "curve at 0", "B own", "curve at 1"])
        )
        sections.append(("Straight line from A to B", body))
    body = page("poisonlab diagnose", sections)
    directory = Path(directory)
    write_bytes_atomic(directory / "result.json", json.dumps(result, indent=1).encode())
    write_bytes_atomic(directory / "index.html", body.encode())
    return directory / "index.html"


def study_table(
    summary: dict[str, Any], metrics: Sequence[tuple[str, str, float]]
) -> tuple[list[list[str]], list[str]]:
    """Rows ``arm, metric intervals...`` (``metrics`` = (key, header, scale)), formatted ``mean [lo, hi]``."""
    from poisonlab.metrics.intervals import interval_text

    rows = []
    for arm, entry in summary["arms"].items():
        rows.append([arm] + [interval_text(entry.get(k), s, 2 if s == 100 else 3) for k, _, s in metrics])
    return rows, ["arm"] + [h for _, h, _ in metrics]


STUDY_COLUMNS = (
    ("test_accuracy", "test acc (%)", 100.0),
    ("train_accuracy", "train acc (%)", 100.0),
    ("test_loss", "test loss", 1.0),
    ("robust_pgd", "PGD robust acc (%)", 100.0),
    ("robust_witchcraft", "WITCHcraft robust acc (%)", 100.0),
    ("mean_effective_rank_ratio", "eff. rank / max", 1.0),
    ("total_l2", "||theta||_2", 1.0),
)


def write_study_report(directory: Path, result: dict[str, Any]) -> Path:
    """``index.html`` and ``result.json`` of a diagnostics study; returns the page."""
    summary = result["summary"]
    rows, head = study_table(summary, STUDY_COLUMNS)
    base = summary["baseline"]
    diff_cols = tuple((f"{k}_minus_{base}", f"{h} - {base}", s) for k, h, s in STUDY_COLUMNS)
    drows, dhead = study_table(summary, diff_cols)
    cfg = result["config"]
    body = page(
        f"poisonlab diagnose-study: {cfg['study']['kind']}",
        [
            ("Arms (mean [95% t interval] over seeds)", table(rows, head)),
            (f"Paired differences to {base} (same seeds)", table(drows[1:], dhead)),
            ("Configuration", "<pre>" + html.escape(json.dumps(cfg, indent=2)) + "</pre>"),
        ],
    )
    directory = Path(directory)
    write_bytes_atomic(directory / "result.json", json.dumps(result, indent=1).encode())
    write_bytes_atomic(directory / "index.html", body.encode())
    return directory / "index.html"
