"""Report of a train experiment: metrics, training curves, configuration and seeds."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from poisonlab.io.atomic import write_bytes_atomic
from poisonlab.report.html import image, page, table
from poisonlab.report.plots import training_curves_png


def write_train_report(directory: Path, row: dict[str, Any]) -> Path:
    """Write ``index.html`` (self-contained) and ``result.json`` into ``directory``; returns the page."""
    cfg = row["config"]
    metrics = [(k, v) for k, v in row["metrics"].items()]
    metrics.append(("training time (s)", row["train_seconds"]))
    hist = [(int(h["epoch"]), h["loss"], h["train_accuracy"], h["lr"], h["seconds"]) for h in row["history"]]
    body = page(
        f"poisonlab train: {cfg['model']['name']} on {cfg['data']['name']}",
        [
            ("Result", table(metrics, ["metric", "value"])),
            (
                "Training",
                image(training_curves_png(row["history"]), "training curves")
                + table(hist, ["epoch", "loss", "train acc", "lr", "seconds"]),
            ),
            (
                "Configuration",
                f"<p>config hash <code>{row['config_hash']}</code></p><pre>"
                + html.escape(json.dumps(cfg, indent=2))
                + "</pre>",
            ),
            (
                "Seeds and environment",
                "<pre>"
                + html.escape(json.dumps({"seeds": row["seeds"], "environment": row["environment"]}, indent=2))
                + "</pre>",
            ),
        ],
    )
    directory = Path(directory)
    write_bytes_atomic(directory / "result.json", json.dumps(row, indent=1).encode())
    write_bytes_atomic(directory / "index.html", body.encode())
    return directory / "index.html"
