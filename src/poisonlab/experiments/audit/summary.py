"""Reduce trial rows to numbers with intervals: Wilson for pooled proportions, Student-t over trials."""

from __future__ import annotations

import math
from typing import Any

from poisonlab.metrics.intervals import Proportion, t_interval


def mean_interval(values: list[float]) -> dict[str, Any] | None:
    """Mean with a Student-t 95% interval (``lo``/``hi`` None for a single value); non-finite values dropped."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return None
    if len(vals) == 1:
        return {"mean": vals[0], "lo": None, "hi": None, "n": 1}
    mean, lo, hi = t_interval(vals)
    return {"mean": mean, "lo": lo, "hi": hi, "n": len(vals)}


def pooled(rows: list[dict[str, Any]], successes: str, total: str) -> dict[str, float] | None:
    have = [r for r in rows if successes in r["metrics"] and total in r["metrics"]]
    if not have:
        return None
    p = Proportion(0, 0)
    for r in have:
        p = p + Proportion(int(r["metrics"][successes]), int(r["metrics"][total]))
    d = p.as_dict()
    return {"mean": d["rate"], "lo": d["lo"], "hi": d["hi"], "n": d["n"], "successes": d["successes"]}


def summarize_rows(rows: list[dict[str, Any]], headline: Any) -> dict[str, Any]:
    """Every numeric metric as a t interval over trials; the headline pooled (Wilson) when it is a proportion."""
    out: dict[str, Any] = {"trials": len(rows)}
    keys = sorted({k for r in rows for k, v in r["metrics"].items() if isinstance(v, (int, float))})
    for k in keys:
        out[k] = mean_interval([r["metrics"][k] for r in rows if k in r["metrics"]])
    if headline.kind == "proportion" and headline.successes and headline.total:
        out[headline.metric] = pooled(rows, headline.successes, headline.total)
    return out


def fmt_interval(d: dict[str, Any] | None, digits: int = 3) -> str:
    if d is None:
        return "-"
    if d.get("lo") is None or d.get("hi") is None:
        mean = d["mean"]
        return str(int(mean)) if float(mean).is_integer() and abs(mean) >= 1 else f"{mean:.{digits}f}"
    return f"{d['mean']:.{digits}f} [{d['lo']:.{digits}f}, {d['hi']:.{digits}f}]"
