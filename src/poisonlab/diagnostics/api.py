"""``diagnose(model, data, compare=None)``: the diagnostics as JSON-able numbers, for the CLI, the audit and tests."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from poisonlab.data.dataset import Dataset, Splits
from poisonlab.diagnostics.interpolation import BnMode, interpolate, spread_subset
from poisonlab.diagnostics.norms import norm_summary, parameter_norms
from poisonlab.diagnostics.spectra import ConvMode, LayerSpectrum, layer_spectra
from poisonlab.training.evaluate import evaluate


def _datasets(data: Splits | Dataset | Mapping[str, Dataset]) -> dict[str, Dataset]:
    if isinstance(data, Splits):
        return {"train": data.train, "test": data.test}
    if isinstance(data, Dataset):
        return {"data": data}
    return dict(data)


def model_report(
    model: nn.Module,
    data: Mapping[str, Dataset],
    input_shape: tuple[int, ...],
    conv_mode: ConvMode = "operator",
    tol: float | None = None,
) -> tuple[dict[str, Any], list[LayerSpectrum]]:
    """Per-layer spectra summaries, parameter norms, summary numbers and clean evaluation of one model."""
    spectra = layer_spectra(model, input_shape, conv_mode)
    layers = [s.summary(tol) for s in spectra]
    pick = layers
    device = next(model.parameters()).device
    summary: dict[str, Any] = {
        "layers": len(layers),
        "mean_effective_rank": _mean(r["effective_rank"] for r in pick),
        "mean_effective_rank_ratio": _mean(r["effective_rank_ratio"] for r in pick),
        "mean_numerical_rank_ratio": _mean(r["numerical_rank"] / r["max_rank"] for r in pick if r["max_rank"]),
        **norm_summary(model),
    }
    for name, ds in data.items():
        ev = evaluate(model, ds.to(device))
        summary[f"{name}_loss"], summary[f"{name}_accuracy"] = ev["loss"], ev["accuracy"]
    return {"summary": summary, "layers": layers, "norms": parameter_norms(model)}, spectra


def _mean(values: Any) -> float:
    xs = [float(v) for v in values]
    return math.fsum(xs) / len(xs) if xs else math.nan


def diagnose_with_spectra(
    model: nn.Module,
    data: Splits | Dataset | Mapping[str, Dataset],
    compare: nn.Module | None = None,
    *,
    alphas: Sequence[float] | None = None,
    bn: BnMode = "recompute",
    conv_mode: ConvMode = "operator",
    tol: float | None = None,
    return_spectra: bool = False,
    path_size: int | None = None,
) -> tuple[dict[str, Any], dict[str, list[LayerSpectrum]]]:
    """:func:`diagnose`, also returning the spectra themselves (``{"A": [...], "B": [...]}``, for plots)."""
    datasets = _datasets(data)
    if not datasets:
        raise ValueError("diagnose: no data")
    shape = next(iter(datasets.values())).shape
    out: dict[str, Any] = {"models": {}}
    rep, spectra = model_report(model, datasets, shape, conv_mode, tol)
    out["models"]["A"] = rep
    all_spectra = {"A": spectra}
    if compare is not None:
        rep_b, spectra_b = model_report(compare, datasets, shape, conv_mode, tol)
        out["models"]["B"] = rep_b
        all_spectra["B"] = spectra_b
        out["difference"] = _difference(rep, rep_b, model, compare)
        on_path = datasets
        if path_size is not None:
            on_path = {k: spread_subset(v, path_size) for k, v in datasets.items()}
        out["interpolation"] = interpolate(model, compare, on_path, alphas=alphas, bn=bn)
    if return_spectra:
        for label, sp in all_spectra.items():
            for row, s in zip(out["models"][label]["layers"], sp):
                row["singular_values"] = s.singular_values.tolist()
    return out, all_spectra


def diagnose(
    model: nn.Module,
    data: Splits | Dataset | Mapping[str, Dataset],
    compare: nn.Module | None = None,
    *,
    alphas: Sequence[float] | None = None,
    bn: BnMode = "recompute",
    conv_mode: ConvMode = "operator",
    tol: float | None = None,
    return_spectra: bool = False,
    path_size: int | None = None,
) -> dict[str, Any]:
    """Diagnostics of "Truth or Backpropaganda?" (Goldblum et al., arXiv 1910.00359) for ``model``, and, given
    ``compare`` (same architecture), for it too, how the two differ, and the loss along the line between them.

    Args:
        model: model A (inputs in [0, 1]).
        data: a :class:`Splits` (train and test are evaluated; train calibrates BatchNorm along the path), one
            :class:`Dataset`, or named datasets.
        compare: model B, e.g. a clean model when ``model`` is a backdoored victim, or the initialisation.
        alphas: points on the line from A (0) to B (1); default 21 points in [0, 1].
        bn: BatchNorm statistics along the path, see :mod:`poisonlab.diagnostics.interpolation`.
        conv_mode: how convolutions become matrices, see :mod:`poisonlab.diagnostics.spectra`.
        tol: numerical-rank tolerance (default numpy's).
        return_spectra: include every layer's singular values (long lists).
        path_size: evaluate the path on ``path_size`` samples spread through each dataset (default all).

    Returns:
        JSON-able ``{"models": {"A": {...}, "B": {...}}, "difference": {...}, "interpolation": {...}}``: per model
        the summary (mean effective rank over weight layers, norms, loss/accuracy per dataset), per-layer rows and
        per-parameter norms; ``difference`` holds B minus A for the summary numbers and per layer, plus the l2
        distance between the models; ``interpolation`` is :func:`interpolate`'s result.
    """
    return diagnose_with_spectra(
        model,
        data,
        compare,
        alphas=alphas,
        bn=bn,
        conv_mode=conv_mode,
        tol=tol,
        return_spectra=return_spectra,
        path_size=path_size,
    )[0]


def _difference(a: dict[str, Any], b: dict[str, Any], model_a: nn.Module, model_b: nn.Module) -> dict[str, Any]:
    sa, sb = a["summary"], b["summary"]
    diff: dict[str, Any] = {k: sb[k] - sa[k] for k in sa if isinstance(sa[k], float) and isinstance(sb.get(k), float)}
    diff["distance_l2"] = norm_summary(model_b, model_a)["distance_l2"]
    diff["layers"] = [
        {
            "name": la["name"],
            "effective_rank": lb["effective_rank"] - la["effective_rank"],
            "numerical_rank": lb["numerical_rank"] - la["numerical_rank"],
            "spectral_norm": lb["spectral_norm"] - la["spectral_norm"],
        }
        for la, lb in zip(a["layers"], b["layers"])
    ]
    return diff
