"""Membership-inference metrics: ROC curve, AUC, TPR at a fixed (low) FPR, balanced accuracy, and
stratified bootstrap intervals, all vectorised.

Conventions (as in Carlini et al., "Membership Inference Attacks From First Principles", S&P 2022, and its
reference code ``tensorflow/privacy:research/mi_lira_2021/plot.py``):

- a HIGHER score means "more likely a member"; ``labels`` is 1 (True) for members, 0 for non-members;
- ``tpr_at_fpr(..., fpr=a)`` is the largest TPR over ROC points whose FPR is strictly below ``a``
  (the reference's ``tpr[np.where(fpr < a)[0][-1]]``), so with ``N`` non-members it allows at most
  ``ceil(a * N) - 1`` false positives; that count and ``N`` are reported next to every TPR because a
  TPR at 0.1% FPR behind 500 negatives rests on zero false positives;
- balanced accuracy is the best over thresholds of ``1 - (FPR + FNR) / 2``;
- AUC counts ties half (the Mann-Whitney statistic), equal to the trapezoidal area under the ROC curve.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor | list[float] | list[bool] | list[int]
DEFAULT_FPRS: tuple[float, ...] = (0.001, 0.01)


class RocCurve(NamedTuple):
    """ROC points from the strictest threshold (+inf: nothing flagged) to the loosest (everything flagged)."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray


def _as_arrays(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = scores.detach().cpu().double().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores, float)
    y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    s, y = s.reshape(-1), y.reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"scores/labels: expected the same number of entries, got {s.size} and {y.size}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels: expected 0/1 (or bool) membership labels")
    if np.isnan(s).any():
        raise ValueError("scores: expected no NaN")
    return s, y.astype(bool)


def _sorted_counts(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative (true positives, false positives) at each distinct threshold, highest first, starting at
    the +inf point (0, 0); the matching thresholds; and a ``(P, N)`` pair."""
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    last_of_tie = np.r_[s_sorted[1:] != s_sorted[:-1], True] if s.size else np.zeros(0, bool)
    tps = np.cumsum(y_sorted)[last_of_tie]
    fps = np.cumsum(~y_sorted)[last_of_tie]
    thresholds = s_sorted[last_of_tie]
    tps, fps = np.r_[0, tps], np.r_[0, fps]
    return tps, fps, np.r_[np.inf, thresholds], np.array([y.sum(), (~y).sum()])


def roc_curve(scores: ArrayLike, labels: ArrayLike) -> RocCurve:
    """ROC curve of a membership score (higher = member); one point per distinct score plus the (0, 0)
    point at threshold +inf. Same points as ``sklearn.metrics.roc_curve(labels, scores,
    drop_intermediate=False)``. A class with no examples gives NaN rates for that axis."""
    s, y = _as_arrays(scores, labels)
    tps, fps, thresholds, (p, n) = _sorted_counts(s, y)
    with np.errstate(invalid="ignore", divide="ignore"):
        return RocCurve(fps / n, tps / p, thresholds)


def auc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve = P(member score > non-member score) + P(tie) / 2. NaN if a class is empty."""
    s, y = _as_arrays(scores, labels)
    p, n = int(y.sum()), int((~y).sum())
    if p == 0 or n == 0:
        return math.nan
    from scipy.stats import rankdata

    ranks = rankdata(s)  # average ranks handle ties
    return float((ranks[y].sum() - p * (p + 1) / 2) / (p * n))


def tpr_at_fpr(scores: ArrayLike, labels: ArrayLike, fpr: float) -> float:
    """Largest TPR among ROC points with FPR strictly below ``fpr`` (the reference's convention)."""
    return float(_at_fpr(*_as_arrays(scores, labels), fpr)["tpr"])


def _at_fpr(s: np.ndarray, y: np.ndarray, fpr: float) -> dict[str, float]:
    if not 0 < fpr <= 1:
        raise ValueError(f"fpr: expected 0 < fpr <= 1, got {fpr}")
    tps, fps, _, (p, n) = _sorted_counts(s, y)
    if n == 0:
        raise ValueError("labels: TPR at a fixed FPR needs at least one non-member")
    ok = np.nonzero(fps < fpr * n)[0]
    i = ok[np.argmax(tps[ok])]
    return {
        "fpr": fpr,
        "tpr": tps[i] / p if p else math.nan,
        "true_positives": int(tps[i]),
        "false_positives": int(fps[i]),
        "achieved_fpr": fps[i] / n if n else math.nan,
        "max_false_positives": max(0, math.ceil(fpr * n) - 1),
        "n_negatives": int(n),
        "n_positives": int(p),
    }


def balanced_accuracy(scores: ArrayLike, labels: ArrayLike) -> float:
    """Best membership accuracy on a balanced prior: max over thresholds of ``1 - (FPR + FNR) / 2``."""
    fpr, tpr, _ = roc_curve(scores, labels)
    return float(np.max(1 - (fpr + (1 - tpr)) / 2))


def _fpr_key(fpr: float) -> str:
    return f"{fpr:g}"


def membership_metrics(
    scores: ArrayLike,
    labels: ArrayLike,
    fprs: tuple[float, ...] = DEFAULT_FPRS,
    generator: torch.Generator | None = None,
    n_boot: int = 1000,
    groups: ArrayLike | None = None,
) -> dict[str, Any]:
    """All membership metrics of one score vector (higher = member; labels 1 = member), JSON-ready.

    Returns ``{"auc", "balanced_accuracy", "n_members", "n_nonmembers", "tpr_at_fpr": {"0.001": tpr, ...},
    "fpr_points": {"0.001": {"tpr", "true_positives", "false_positives", "achieved_fpr",
    "max_false_positives", "n_negatives", "n_positives", "fpr"}, ...}}``, plus, when a ``generator`` is
    given, ``"intervals"``: 95% bootstrap intervals (see :func:`bootstrap_metrics`; ``groups`` as there).
    """
    s, y = _as_arrays(scores, labels)
    points = {_fpr_key(f): _at_fpr(s, y, f) for f in fprs}
    out = {
        "auc": auc(s, y),
        "balanced_accuracy": balanced_accuracy(s, y),
        "n_members": int(y.sum()),
        "n_nonmembers": int((~y).sum()),
        "tpr_at_fpr": {k: float(v["tpr"]) for k, v in points.items()},
        "fpr_points": points,
    }
    if generator is not None:
        out["intervals"] = bootstrap_metrics(s, y, generator, n_boot, fprs, groups=groups)
    return out


# ---------------------------------------------------------------- bootstrap


def _weighted_metrics(
    s: np.ndarray, y: np.ndarray, counts: np.ndarray, fprs: tuple[float, ...]
) -> dict[str, np.ndarray]:
    """AUC, balanced accuracy and TPR@FPR of B resamples of ``(s, y)``, resample b holding point i
    ``counts[b, i]`` times. The points are sorted once; each resample's ROC is the counts' cumulative sums
    at the original distinct thresholds (a threshold no resampled point sits at repeats the previous ROC
    point, which changes neither the area nor a maximum), so a resample costs O(n), not a sort."""
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    w = counts[:, order].astype(np.float64)
    last_of_tie = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    tps = np.cumsum(w * y_sorted, 1)[:, last_of_tie]
    fps = np.cumsum(w * ~y_sorted, 1)[:, last_of_tie]
    p, n = tps[:, -1:], fps[:, -1:]
    zero = np.zeros((len(w), 1))
    tps0, fps0 = np.concatenate([zero, tps], 1), np.concatenate([zero, fps], 1)
    area = (np.diff(fps0, axis=1) * (tps0[:, 1:] + tps0[:, :-1]) / 2).sum(1)
    tpr, fpr = tps / p, fps / n
    bal = np.maximum(0.5, (1 - (fpr + 1 - tpr) / 2).max(1))
    out = {"auc": area / (p * n)[:, 0], "balanced_accuracy": bal}
    for f in fprs:
        out[_fpr_key(f)] = np.where(fps < f * n, tpr, 0.0).max(1)
    return out


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    """(B, n) multiplicities of the points drawn in each row of ``idx`` (B, m)."""
    flat = (np.arange(len(idx))[:, None] * n + idx).reshape(-1)
    return np.bincount(flat, minlength=len(idx) * n).reshape(len(idx), n)


def _stratified_indices(y: np.ndarray, n_boot: int, generator: torch.Generator) -> np.ndarray:
    """``(n_boot, len(y))`` resampling indices that keep the member and non-member counts fixed."""
    pos, neg = np.nonzero(y)[0], np.nonzero(~y)[0]
    parts = []
    for idx in (pos, neg):
        draw = torch.randint(0, max(len(idx), 1), (n_boot, len(idx)), generator=generator).numpy()
        parts.append(idx[draw] if len(idx) else np.zeros((n_boot, 0), int))
    return np.concatenate(parts, 1)


def _resample_counts(y: np.ndarray, n_boot: int, generator: torch.Generator, groups: np.ndarray | None) -> np.ndarray:
    """(n_boot, n) multiplicities of each entry: stratified by label, or, with ``groups``, whole groups drawn
    with replacement (a cluster bootstrap: every entry of a drawn group comes along)."""
    if groups is None:
        return _counts(_stratified_indices(y, n_boot, generator), len(y))
    _, inverse = np.unique(groups, return_inverse=True)
    g = int(inverse.max()) + 1 if len(inverse) else 0
    draw = torch.randint(0, max(g, 1), (n_boot, g), generator=generator).numpy()
    return _counts(draw, g)[:, inverse]


def _groups(groups: ArrayLike | None, n: int) -> np.ndarray | None:
    if groups is None:
        return None
    out = np.asarray(groups.cpu() if isinstance(groups, torch.Tensor) else groups).reshape(-1)
    if len(out) != n:
        raise ValueError(f"groups: expected one group id per score ({n}), got {len(out)}")
    return out


def _interval(values: np.ndarray, confidence: float) -> dict[str, float]:
    lo, hi = np.nanquantile(values, [(1 - confidence) / 2, (1 + confidence) / 2])
    return {"lo": float(lo), "hi": float(hi)}


def bootstrap_metrics(
    scores: ArrayLike,
    labels: ArrayLike,
    generator: torch.Generator,
    n_boot: int = 1000,
    fprs: tuple[float, ...] = DEFAULT_FPRS,
    confidence: float = 0.95,
    chunk: int = 100,
    groups: ArrayLike | None = None,
) -> dict[str, dict[str, float]]:
    """Percentile bootstrap intervals for ``auc``, ``balanced_accuracy`` and each TPR at FPR (keyed
    ``"0.001"`` ...): members and non-members resampled separately (counts fixed), or, with ``groups``,
    whole groups resampled (use the data point behind each score when one point is scored by several
    models: those scores are not independent)."""
    s, y = _as_arrays(scores, labels)
    draws = _bootstrap_draws(s, y, generator, n_boot, fprs, chunk, _groups(groups, len(s)))
    return {k: _interval(v, confidence) for k, v in draws.items()}


def _bootstrap_draws(
    s: np.ndarray,
    y: np.ndarray,
    generator: torch.Generator,
    n_boot: int,
    fprs: tuple[float, ...],
    chunk: int,
    groups: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    if n_boot < 1:
        raise ValueError(f"n_boot: expected >= 1, got {n_boot}")
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, n_boot, chunk):
        counts = _resample_counts(y, min(chunk, n_boot - start), generator, groups)
        parts.append(_weighted_metrics(s, y, counts, fprs))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def bootstrap_ratio(
    treated: tuple[ArrayLike, ArrayLike],
    control: tuple[ArrayLike, ArrayLike],
    generator: torch.Generator,
    metric: str = "0.01",
    n_boot: int = 1000,
    confidence: float = 0.95,
    paired: bool = True,
    chunk: int = 100,
    groups: ArrayLike | None = None,
) -> dict[str, float]:
    """Amplification factor ``metric(treated) / metric(control)`` with a percentile bootstrap interval.

    ``metric`` is ``"auc"``, ``"balanced_accuracy"`` or an FPR key such as ``"0.01"`` (TPR at 1% FPR).
    With ``paired=True`` the two score vectors must describe the same (model, example) pairs in the same
    order with the same labels (as when the poisoned and clean arms share keep-masks), and each bootstrap draw
    resamples the same pairs in both arms; otherwise the arms are resampled independently. ``groups``
    (paired only) resamples whole groups, e.g. the target behind each pooled score.
    Returns ``{"ratio", "lo", "hi", "treated", "control", "difference", "difference_lo", "difference_hi"}``.
    """
    st, yt = _as_arrays(*treated)
    sc, yc = _as_arrays(*control)
    fprs = (float(metric),) if metric not in ("auc", "balanced_accuracy") else ()
    if paired and not np.array_equal(yt, yc):
        raise ValueError("bootstrap_ratio: paired=True needs identical labels in both arms")
    grp = _groups(groups, len(st))
    if grp is not None and not paired:
        raise ValueError("bootstrap_ratio: groups need paired=True")
    full_t = _weighted_metrics(st, yt, np.ones((1, len(st)), int), fprs)[metric][0]
    full_c = _weighted_metrics(sc, yc, np.ones((1, len(sc)), int), fprs)[metric][0]
    tb, cb = [], []
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        ct = _resample_counts(yt, size, generator, grp)
        cc = ct if paired else _resample_counts(yc, size, generator, None)
        tb.append(_weighted_metrics(st, yt, ct, fprs)[metric])
        cb.append(_weighted_metrics(sc, yc, cc, fprs)[metric])
    t, c = np.concatenate(tb), np.concatenate(cb)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = t / c  # x/0 = inf, 0/0 = NaN (dropped from the quantiles)
        ratio = full_t / full_c if full_c > 0 else (math.inf if full_t > 0 else math.nan)
    defined = ratios[~np.isnan(ratios)]
    lo, hi = math.nan, math.nan
    if defined.size:  # no interpolation: ratios may be +inf (control 0 in a resample)
        lo = float(np.quantile(defined, (1 - confidence) / 2, method="lower"))
        hi = float(np.quantile(defined, (1 + confidence) / 2, method="higher"))
    d = _interval(t - c, confidence)
    return {
        "ratio": float(ratio),
        "lo": float(lo),
        "hi": float(hi),
        "treated": float(full_t),
        "control": float(full_c),
        "difference": float(full_t - full_c),
        "difference_lo": d["lo"],
        "difference_hi": d["hi"],
    }


def precision_at_recall(scores: ArrayLike, labels: ArrayLike, recall: float) -> float:
    """Precision of the "member" calls at the strictest threshold that finds ``recall`` of the members
    (every point tied with the threshold score is called a member)."""
    if not 0 < recall <= 1:
        raise ValueError(f"recall: expected 0 < recall <= 1, got {recall}")
    s, y = _as_arrays(scores, labels)
    tps, fps, _, (p, _n) = _sorted_counts(s, y)
    if p == 0:
        return math.nan
    i = int(np.argmax(tps >= recall * p))
    return float(tps[i] / (tps[i] + fps[i]))
