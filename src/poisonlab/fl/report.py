"""Per-round curves (main-task and backdoor accuracy) as a PNG, and the experiment's HTML page and JSON."""

from __future__ import annotations

import html
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from poisonlab.io.atomic import write_bytes_atomic
from poisonlab.report.html import image, page, table


def curves_png(runs: Mapping[str, Sequence[dict[str, Any]]], attack_round: int | None = None) -> bytes:
    """Main-task accuracy (left) and backdoor accuracy (right) per round, one line per labelled run."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.6), dpi=110)
    ax1, ax2 = fig.subplots(1, 2)
    for label, history in runs.items():
        rounds = [h["round"] for h in history]
        ax1.plot(rounds, [h["main_accuracy"]["rate"] for h in history], label=label, lw=1.3)
        ax2.plot(rounds, [h["backdoor_accuracy"]["rate"] for h in history], label=label, lw=1.3)
    for ax, name in ((ax1, "main-task accuracy"), (ax2, "backdoor accuracy")):
        if attack_round is not None:
            ax.axvline(attack_round, color="red", ls=":", lw=1)
        ax.set(xlabel="round", ylabel=name)
        ax.grid(alpha=0.3)
    ax2.set_ylim(-0.02, 1.02)
    ax2.legend(fontsize=7, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_fl_report(directory: Path, row: dict[str, Any]) -> Path:
    """Write ``curves.png``, ``result.json`` and ``index.html`` into ``directory``; returns the page."""
    cfg, s = row["config"], row["summary"]
    attack = cfg["attack"]["kind"]
    label = f"{attack} / {cfg['aggregator']['name']}"
    png = curves_png({label: row["history"]}, cfg["attack"]["round"] if attack != "none" else None)

    def pr(p: dict[str, Any]) -> str:
        return f"{p['rate']:.4f} [{p['lo']:.4f}, {p['hi']:.4f}] ({p['successes']}/{p['n']})"

    rows = [
        ("aggregator", cfg["aggregator"]["name"]),
        ("norm bound S", s["norm_bound"]),
        ("main accuracy before the attack round", s["main_before"]),
        ("main accuracy right after (Wilson 95%)", pr(s["main_after"])),
        ("main accuracy drop", s["main_drop"]),
        ("backdoor accuracy before", s["backdoor_before"]),
        ("backdoor accuracy right after (Wilson 95%)", pr(s["backdoor_after"])),
        ("backdoor accuracy at the last round", pr(s["backdoor_final"])),
    ]
    for key in ("attacker_accepted", "attacker_flagged", "attacker_clipped", "honest_flagged", "dp_epsilon"):
        if key in s:
            rows.append((key.replace("_", " "), s[key]))
    per_round = [
        [h["round"], h["main_accuracy"]["rate"], h["backdoor_accuracy"]["rate"], ",".join(map(str, h["accepted"]))]
        for h in row["history"]
    ]
    body = page(
        f"poisonlab fl: {label} on {cfg['data']['name']}",
        [
            ("Result", table(rows, ["metric", "value"])),
            ("Per-round curves", image(png, "main-task and backdoor accuracy per round")),
            ("Per round", table(per_round, ["round", "main accuracy", "backdoor accuracy", "accepted clients"])),
            ("Configuration", f"<pre>{html.escape(json.dumps(cfg, indent=2))}</pre>"),
        ],
    )
    directory = Path(directory)
    write_bytes_atomic(directory / "curves.png", png)
    write_bytes_atomic(directory / "result.json", json.dumps(row, indent=1).encode())
    write_bytes_atomic(directory / "index.html", body.encode())
    return directory / "index.html"
