"""Summaries, plots and reports of the attribute-inference and canary-exposure experiments."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from poisonlab.io.atomic import write_bytes_atomic
from poisonlab.metrics.intervals import Proportion, t_interval
from poisonlab.metrics.membership import auc, tpr_at_fpr
from poisonlab.report.html import image, page, table
from poisonlab.report.plots import figure, png_bytes

ARMS = ("clean", "poisoned")


def _mean_ci(values: list[float], bounds: tuple[float, float] | None = None) -> dict[str, float]:
    """Mean and Student-t 95% interval over trials, clipped to ``bounds`` (a rate cannot leave [0, 1])."""
    mean, lo, hi = t_interval(values)
    if bounds is not None and not math.isnan(lo):
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return {"mean": mean, "lo": lo, "hi": hi, "n": len(values)}


def summarize_attribute(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per arm and attack: accuracy pooled over targets and trials (Wilson 95%), per-trial accuracy (t 95%),
    and the (target, completion) pairs scored as membership questions (AUC, TPR at 1% and 10% FPR)."""
    out: dict[str, Any] = {"trials": len(rows), "prior_accuracy": rows[0]["prior_accuracy"] if rows else None}
    for arm in ARMS:
        if not rows or arm not in rows[0]:
            continue
        arm_out: dict[str, Any] = {
            "replicas": rows[0][arm]["replicas"],
            "poisons": rows[0][arm]["poisons"],
            "test_accuracy": _mean_ci([r[arm]["test_accuracy"] for r in rows]),
        }
        for attack in ("confidence", "calibrated"):
            if attack not in rows[0][arm]:
                continue
            res = [r[arm][attack] for r in rows]
            pooled = Proportion(sum(x["correct"] for x in res), sum(x["n"] for x in res))
            scores = [s for x in res for s in x["pair_scores"]]
            labels = [lab for x in res for lab in x["pair_labels"]]
            arm_out[attack] = {
                "accuracy": pooled.as_dict(),
                "accuracy_per_trial": _mean_ci([x["accuracy"] for x in res], (0.0, 1.0)),
                "mean_rank": sum(x["mean_rank"] * x["n"] for x in res) / max(pooled.n, 1),
                "pair_auc": auc(scores, labels),
                "pair_tpr_at_1pct_fpr": tpr_at_fpr(scores, labels, 0.01),
                "pair_tpr_at_10pct_fpr": tpr_at_fpr(scores, labels, 0.1),
            }
        out[arm] = arm_out
    return out


def summarize_canary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per arm and scorer: mean exposure (t 95% over trials), extraction rate (rank 1, Wilson 95%), ranks."""
    out: dict[str, Any] = {"trials": len(rows), "max_exposure": math.log2(rows[0]["space"]) if rows else None}
    for arm in ARMS:
        if not rows or arm not in rows[0]:
            continue
        arm_out: dict[str, Any] = {
            "replicas": rows[0][arm]["replicas"],
            "valid_loss": _mean_ci([r[arm]["valid_loss"] for r in rows]),
        }
        for scorer in ("likelihood", "calibrated"):
            if scorer not in rows[0][arm]:
                continue
            res = [r[arm][scorer] for r in rows]
            arm_out[scorer] = {
                "exposure": _mean_ci([x["exposure"] for x in res], (0.0, math.log2(rows[0]["space"]))),
                "extraction": Proportion(sum(int(x["extracted"]) for x in res), len(res)).as_dict(),
                "ranks": [int(x["rank"]) for x in res],
            }
        out[arm] = arm_out
    return out


def attribute_plot(summary: dict[str, Any], chance: float) -> bytes:
    """Accuracy with 95% Wilson intervals per arm and attack, with the chance and prior-guess lines."""
    fig = figure(6, 3.2)
    ax = fig.subplots()
    labels, means, errs = [], [], [[], []]
    for arm in ARMS:
        for attack in ("confidence", "calibrated"):
            if attack in summary.get(arm, {}):
                a = summary[arm][attack]["accuracy"]
                labels.append(f"{arm}\n{attack}")
                means.append(a["rate"])
                errs[0].append(a["rate"] - a["lo"])
                errs[1].append(a["hi"] - a["rate"])
    ax.bar(range(len(means)), means, yerr=errs, capsize=4, color=["tab:blue", "tab:cyan", "tab:red", "tab:orange"])
    ax.axhline(chance, color="gray", ls="--", label=f"chance (1/m = {chance:.2f})")
    if summary.get("prior_accuracy") is not None:
        ax.axhline(summary["prior_accuracy"], color="black", ls=":", label="majority-value guess")
    ax.set(xticks=range(len(labels)), xticklabels=labels, ylabel="attribute-inference accuracy", ylim=(0, 1))
    ax.legend(fontsize=8)
    return png_bytes(fig)


def canary_plot(rows: list[dict[str, Any]], summary: dict[str, Any]) -> bytes:
    """Exposure of each trial's secret, clean versus poisoned (paired by trial), with the maximum."""
    fig = figure(6, 3.2)
    ax = fig.subplots()
    for scorer, marker in (("likelihood", "o"), ("calibrated", "s")):
        if rows and scorer in rows[0].get("clean", {}) and "poisoned" in rows[0]:
            for i, r in enumerate(rows):
                ax.plot([0, 1], [r["clean"][scorer]["exposure"], r["poisoned"][scorer]["exposure"]],
                        marker=marker, color="tab:blue" if scorer == "likelihood" else "tab:orange",
                        alpha=0.7, label=scorer if i == 0 else None)  # fmt: skip
    ax.axhline(summary["max_exposure"], color="gray", ls="--", label="max (rank 1)")
    ax.set(xticks=[0, 1], xticklabels=["clean", "poisoned"], ylabel="exposure (bits)", xlim=(-0.3, 1.3))
    ax.legend(fontsize=8)
    return png_bytes(fig)


def write_report(workdir: Path, title: str, result: dict[str, Any], png: bytes, rows_html: str) -> Path:
    """``workdir/results.json``, ``workdir/report/plot.png`` and ``workdir/report/index.html``."""
    write_bytes_atomic(workdir / "results.json", json.dumps(result, indent=2, default=float).encode())
    write_bytes_atomic(workdir / "report" / "plot.png", png)
    body = page(
        title,
        [
            ("Summary", rows_html),
            ("Plot", image(png, title)),
            ("Configuration", f"<pre>{json.dumps(result['config'], indent=2)}</pre>"),
        ],
    )
    path = workdir / "report" / "index.html"
    write_bytes_atomic(path, body.encode())
    return path


def attribute_rows(summary: dict[str, Any]) -> list[list[Any]]:
    """Table rows: arm, attack, accuracy [Wilson 95%], per-trial mean [t 95%], pair AUC, test accuracy."""
    rows = []
    for arm in ARMS:
        for attack in ("confidence", "calibrated"):
            v = summary.get(arm, {}).get(attack)
            if v is None:
                continue
            a, t = v["accuracy"], v["accuracy_per_trial"]
            rows.append([
                arm, attack, f"{a['rate']:.3f} [{a['lo']:.3f}, {a['hi']:.3f}] ({a['successes']}/{a['n']})",
                f"{t['mean']:.3f} [{t['lo']:.3f}, {t['hi']:.3f}]", f"{v['pair_auc']:.3f}",
                f"{v['pair_tpr_at_10pct_fpr']:.3f}", f"{summary[arm]['test_accuracy']['mean']:.4f}",
            ])  # fmt: skip
    return rows


ATTRIBUTE_HEADER = ["arm", "attack", "accuracy [Wilson 95%]", "per-trial mean [t 95%]", "pair AUC",
                    "pair TPR@10%FPR", "victim test acc."]  # fmt: skip


def canary_rows(summary: dict[str, Any]) -> list[list[Any]]:
    """Table rows: arm, scorer, mean exposure [t 95%], extraction rate [Wilson 95%], ranks, validation loss."""
    rows = []
    for arm in ARMS:
        for scorer in ("likelihood", "calibrated"):
            v = summary.get(arm, {}).get(scorer)
            if v is None:
                continue
            e, x = v["exposure"], v["extraction"]
            rows.append([
                arm, scorer, f"{e['mean']:.2f} [{e['lo']:.2f}, {e['hi']:.2f}]",
                f"{x['rate']:.2f} [{x['lo']:.2f}, {x['hi']:.2f}] ({x['successes']}/{x['n']})",
                ", ".join(str(r) for r in v["ranks"]), f"{summary[arm]['valid_loss']['mean']:.4f}",
            ])  # fmt: skip
    return rows


CANARY_HEADER = ["arm", "scorer", "exposure (bits) [t 95%]", "extraction [Wilson 95%]", "ranks", "valid loss"]


def html_table(rows: list[list[Any]], header: list[str]) -> str:
    return table(rows, header)
