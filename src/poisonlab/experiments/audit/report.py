"""The audit report: one self-contained HTML page (tables, plots, every number linked to its trial rows)
and ``audit.json`` with every number."""

from __future__ import annotations

import html
import io
import json
import math
from pathlib import Path
from typing import Any

from poisonlab.experiments.audit.probes import PROBES
from poisonlab.experiments.audit.summary import fmt_interval
from poisonlab.io.atomic import write_bytes_atomic
from poisonlab.report.html import image, page


def _anchor(probe: str, defense: str) -> str:
    return f"rows-{probe}-{defense}"


def _cell(d: dict[str, float] | None, probe: str, defense: str) -> str:
    return f'<a href="#{_anchor(probe, defense)}">{html.escape(fmt_interval(d))}</a>'


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def overview(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Rows = defenses; columns = clean accuracy, each attack's headline, epsilon (all with 95% intervals)."""
    probes = result["probes"]
    attack_names = [n for n in probes if n != "clean"]
    header = ["defense", "clean accuracy"] + [probes[n]["headline"]["label"] + f" ({n})" for n in attack_names]
    header.append("epsilon (delta)")
    rows = []
    for defense in result["defenses"]:
        clean = probes.get("clean", {}).get("defenses", {}).get(defense)
        row = [
            f"<b>{html.escape(defense)}</b>",
            _cell(clean["summary"].get("clean_accuracy"), "clean", defense) if clean else "-",
        ]
        eps = "-"
        for n in attack_names:
            d = probes[n]["defenses"].get(defense)
            if d is None:
                row.append("n/a")
                continue
            row.append(_cell(d["summary"].get(probes[n]["headline"]["metric"]), n, defense))
        if clean and clean["summary"].get("epsilon"):
            e = clean["summary"]["epsilon"]["mean"]
            delta = clean["summary"].get("delta", {}).get("mean") if clean["summary"].get("delta") else None
            eps = f"{e:.2f}" + (f" ({delta:.0e})" if delta else "")
        row.append(eps)
        rows.append(row)
    return header, rows


def tradeoff_points(result: dict[str, Any]) -> dict[str, list[tuple[str, float, float]]]:
    """Per attack probe whose headline is a rate in [0, 1]: (defense, clean accuracy, attack success)."""
    probes = result["probes"]
    clean = probes.get("clean", {}).get("defenses", {})
    out: dict[str, list[tuple[str, float, float]]] = {}
    for n, entry in probes.items():
        # only success rates share the [0, 1] axis; a dB or bits headline stays in its own table
        if n == "clean" or not entry["headline"].get("rate", True):
            continue
        metric = entry["headline"]["metric"]
        points = []
        for defense, d in entry["defenses"].items():
            acc = clean.get(defense, {}).get("summary", {}).get("clean_accuracy")
            val = d["summary"].get(metric)
            if acc and val and math.isfinite(val["mean"]):
                points.append((defense, float(acc["mean"]), float(val["mean"])))
        out[n] = points
    return out


def tradeoff_png(result: dict[str, Any]) -> bytes | None:
    """Clean accuracy (x) against each attack's success (y), one point per defense and attack."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    series = tradeoff_points(result)
    if not any(series.values()):
        return None
    fig = Figure(figsize=(7, 4.2), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    markers = "os^Dv<>pP*"
    for i, (n, points) in enumerate(series.items()):
        xs = [x for _, x, _ in points]
        ys = [y for _, _, y in points]
        label = result["probes"][n]["headline"]["label"] + f" ({n})"
        ax.scatter(xs, ys, marker=markers[i % len(markers)], s=50, label=label)
        for lab, x, y in points:
            ax.annotate(lab, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set(xlabel="clean test accuracy (higher is better)", ylabel="attack success (lower is better)")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    ax.set_title("Defense trade-off: cost (x) against protection (y)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _probe_section(name: str, entry: dict[str, Any], workdir: Path) -> str:
    parts = [f"<p><b>Threat model:</b> {html.escape(entry['threat'])}</p>"]
    if entry.get("doc"):
        parts.append(f"<p><small>{html.escape(entry['doc'])}</small></p>")
    metrics = sorted({k for d in entry["defenses"].values() for k, v in d["summary"].items() if isinstance(v, dict)})
    metrics = [m for m in metrics if m != "seconds"]
    rows = [
        [html.escape(defense), str(d["summary"]["trials"])]
        + [_cell(d["summary"].get(m), name, defense) for m in metrics]
        for defense, d in entry["defenses"].items()
    ]
    parts.append(_table(["defense", "trials", *metrics], rows))
    probe = PROBES.get(name) if name in PROBES else None
    if probe is not None:
        for caption, png in probe.figures(entry, workdir):
            parts.append(f"<figure>{image(png, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>")
    return "\n".join(parts)


def _rows_section(result: dict[str, Any]) -> str:
    parts = []
    for name, entry in result["probes"].items():
        for defense, d in entry["defenses"].items():
            keys = sorted({k for r in d["rows"] for k in r["metrics"]})
            body = [
                [html.escape(r["key"]), str(r["seed"])] + [html.escape(_fmt(r["metrics"].get(k))) for k in keys]
                for r in d["rows"]
            ]
            parts.append(
                f'<h3 id="{_anchor(name, defense)}">{html.escape(name)} / {html.escape(defense)}</h3>'
                + _table(["trial", "seed", *keys], body)
            )
    return "\n".join(parts)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "-" if v is None else str(v)


def write_audit_report(directory: str | Path, result: dict[str, Any]) -> Path:
    """Write ``index.html`` and ``audit.json`` into ``directory``; returns the page's path."""
    directory = Path(directory)
    workdir = directory.parent
    header, rows = overview(result)
    cfg = result["config"]
    intro = (
        f"<p>Dataset <b>{html.escape(cfg['data']['name'])}</b>, model <b>{html.escape(cfg['model']['name'])}</b> "
        f"(width {cfg['model']['width']}, norm {cfg['model']['norm']}), {cfg['train']['epochs']} epochs, "
        f"budget <b>{html.escape(result['budget'])}</b>, root seed {cfg['seed']}, recipe hash "
        f"<code>{result['victim_config_hash']}</code>. Intervals are 95%: Wilson for success pooled over "
        "trials and victims, Student-t over trials otherwise (a single trial shows no interval). Click a number "
        "for the trial rows behind it.</p>"
    )
    sections = [("Summary", intro + _table(header, rows))]
    png = tradeoff_png(result)
    if png is not None:
        sections.append(("Defense trade-off", image(png, "clean accuracy against attack success per defense")))
    defenses = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in result["defenses"].items())
    sections.append(("Defenses", f"<ul>{defenses}</ul>"))
    for name, entry in result["probes"].items():
        sections.append((f"{entry['title']} ({name})", _probe_section(name, entry, workdir)))
    if result.get("skipped"):
        items = "".join(f"<li>{html.escape(k)}: {html.escape(v)}</li>" for k, v in result["skipped"].items())
        sections.append(("Not run", f"<ul>{items}</ul>"))
    sections.append(("Trial rows", _rows_section(result)))
    body = page("poisonlab audit", sections)
    write_bytes_atomic(directory / "audit.json", json.dumps(result, indent=1, default=str).encode())
    write_bytes_atomic(directory / "index.html", body.encode())
    return directory / "index.html"
