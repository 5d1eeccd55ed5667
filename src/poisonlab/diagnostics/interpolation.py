"""Loss and accuracy along the straight line between two checkpoints, ``theta(a) = (1 - a) theta_A + a theta_B``.

The one-dimensional linear path of Goodfellow, Vinyals & Saxe ("Qualitatively characterizing neural network
optimization problems", ICLR 2015), used by "Truth or Backpropaganda?" (Goldblum et al., arXiv 1910.00359) to look
at the landscape between initialisation and solution or between two solutions. Alphas outside [0, 1] extrapolate.

BatchNorm statistics. Running means and variances are not parameters: mixing two networks' statistics linearly does
not give the statistics of the mixed network, which inflates the loss in the middle of the path. Two modes:

- ``"recompute"`` (default): at every alpha, including the endpoints, the running statistics are re-estimated on a
  fixed calibration set (``calibration_size`` training images evenly spaced through the split, no randomness) as
  the equal-weight mean of per-batch statistics in train mode (what ``torch.optim.swa_utils.update_bn`` does),
  then the network is evaluated in eval mode. The endpoints are therefore the checkpoints *after* this
  recalibration; their own losses with stored statistics are reported next to the curve (``endpoints``).
- ``"interpolate"``: running statistics are interpolated like parameters; the endpoints are then exactly the two
  checkpoints (their own losses).

A model without BatchNorm has no statistics and the two modes coincide. The forward passes are vectorised over
a chunk of alphas with ``torch.func.vmap`` + ``functional_call`` (batched BatchNorm buffers updated in place) on
CUDA; on CPU that was slower than a loop over alphas, which is then the default (``vectorize``). The two paths are
tested equal.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from poisonlab.data.dataset import Dataset
from poisonlab.training.evaluate import evaluate

BnMode = Literal["recompute", "interpolate"]


def spread_subset(data: Dataset, n: int) -> Dataset:
    """``n`` samples evenly spaced through ``data``: deterministic, and class-balanced when the data are sorted by
    class (mnist5k's splits are, so "the first n" would be a few classes only)."""
    if n >= len(data):
        return data
    return data.subset(torch.linspace(0, len(data) - 1, n).round().long().unique())


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """BatchNorm modules that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def interpolated_states(
    a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], alphas: torch.Tensor
) -> dict[str, torch.Tensor]:
    """``(1 - alpha) a + alpha b`` for every floating tensor, stacked over alphas (leading dim); integer buffers
    (``num_batches_tracked``) are taken from ``a``."""
    if a.keys() != b.keys():
        raise ValueError("interpolate: the two models have different parameters/buffers")
    out = {}
    for k, va in a.items():
        vb = b[k]
        if va.shape != vb.shape:
            raise ValueError(f"interpolate: {k} has shape {tuple(va.shape)} in A and {tuple(vb.shape)} in B")
        if va.is_floating_point():
            w = alphas.to(va.device, va.dtype).view(-1, *([1] * va.dim()))
            out[k] = (1 - w) * va.detach() + w * vb.detach().to(va.device)
        else:
            out[k] = va.detach().expand(len(alphas), *va.shape).clone()
    return out


@contextmanager
def _bn_cumulative(model: nn.Module) -> Iterator[list[nn.modules.batchnorm._BatchNorm]]:
    """Put the model in train mode and hand out its BN layers; momenta and mode are restored afterwards."""
    bns = batchnorm_layers(model)
    saved = [m.momentum for m in bns]
    was = model.training
    model.train()
    try:
        yield bns
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom
        model.train(was)


def _reset_bn(state: dict[str, torch.Tensor], model: nn.Module) -> None:
    names = {id(m): n for n, m in model.named_modules()}
    for m in batchnorm_layers(model):
        prefix = names[id(m)] + "."
        state[prefix + "running_mean"].zero_()
        state[prefix + "running_var"].fill_(1.0)
        state[prefix + "num_batches_tracked"].zero_()


def recompute_bn(
    model: nn.Module, states: dict[str, torch.Tensor], images: torch.Tensor, batch_size: int, vectorize: bool = True
) -> None:
    """Re-estimate the BatchNorm running statistics in ``states`` (stacked over alphas) on ``images``, in place:
    the equal-weight mean of per-batch statistics (batch k enters with momentum 1/(k+1))."""
    if not batchnorm_layers(model):
        return
    _reset_bn(states, model)
    with torch.no_grad(), _bn_cumulative(model) as bns:
        for k, start in enumerate(range(0, len(images), batch_size)):
            xb = images[start : start + batch_size]
            if len(xb) < 2:
                break
            for m in bns:
                m.momentum = 1.0 / (k + 1)
            if vectorize:
                vmap(lambda s, x: functional_call(model, s, (x,)), in_dims=(0, None))(states, xb)
            else:
                for i in range(len(next(iter(states.values())))):
                    single = {n: v[i] for n, v in states.items()}  # views: updated in place
                    functional_call(model, single, (xb,))


def evaluate_states(
    model: nn.Module, states: dict[str, torch.Tensor], data: Dataset, batch_size: int, vectorize: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy and accuracy of the network at every stacked state, in eval mode: two ``(A,)`` tensors."""
    count = len(next(iter(states.values())))
    device = next(iter(states.values())).device
    loss = torch.zeros(count, dtype=torch.float64, device=device)
    correct = torch.zeros(count, dtype=torch.float64, device=device)
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(data), batch_size):
                xb = data.images[start : start + batch_size].to(device)
                yb = data.labels[start : start + batch_size].to(device)
                if vectorize:
                    logits = vmap(lambda s, x: functional_call(model, s, (x,)), in_dims=(0, None))(states, xb)
                else:
                    logits = torch.stack(
                        [functional_call(model, {n: v[i] for n, v in states.items()}, (xb,)) for i in range(count)]
                    )
                logits = logits.float()
                ce = F.cross_entropy(logits.flatten(0, 1), yb.repeat(count), reduction="none").view(count, -1)
                loss += ce.double().sum(1)
                correct += (logits.argmax(-1) == yb).double().sum(1)
    finally:
        model.train(was)
    n = max(len(data), 1)
    return loss / n, correct / n


def _barrier(values: Sequence[float], alphas: Sequence[float]) -> float:
    """``max_a [v(a) - ((1 - a) v(0) + a v(1))]`` over alphas in [0, 1] (NaN without both endpoints)."""
    ends = {a: v for a, v in zip(alphas, values) if a in (0.0, 1.0)}
    if len(ends) < 2:
        return math.nan
    return max(v - ((1 - a) * ends[0.0] + a * ends[1.0]) for a, v in zip(alphas, values) if 0.0 <= a <= 1.0)


def interpolate(
    model_a: nn.Module,
    model_b: nn.Module,
    data: Mapping[str, Dataset],
    alphas: Sequence[float] | torch.Tensor | None = None,
    bn: BnMode = "recompute",
    calibration: Dataset | None = None,
    calibration_size: int = 1000,
    batch_size: int = 500,
    chunk: int = 4,
    vectorize: bool | None = None,
) -> dict[str, Any]:
    """Loss and accuracy of ``(1 - a) A + a B`` on each dataset in ``data`` for every alpha.

    Args:
        model_a: the network at alpha 0 (its architecture is used for every point; neither model is changed).
        model_b: the network at alpha 1 (same parameter and buffer names and shapes).
        data: named datasets to evaluate on, e.g. ``{"train": ..., "test": ...}``.
        alphas: points on the line; default 21 points from 0 to 1.
        bn: ``"recompute"`` or ``"interpolate"`` (see the module docstring).
        calibration: images for ``"recompute"``; default ``data["train"]`` (else the first dataset).
        calibration_size: how many calibration images are used (evenly spaced, see :func:`spread_subset`).
        batch_size: images per forward pass.
        chunk: alphas evaluated at once by vmap (memory grows with ``chunk * batch_size``).
        vectorize: vmap over alphas (True) or loop over them (False); the results agree to float precision.
            None (default): vmap on CUDA, loop on CPU, where the vmapped convolutions (grouped over alphas) ran at
            0.4-0.6x the speed of a plain loop for a ConvNet (benchmarks/bench_diagnostics.py).

    Returns:
        JSON-able ``{"alphas", "bn", "splits": {name: {"loss", "accuracy", "loss_barrier", "error_barrier"}},
        "endpoints": {name: {"a": {...}, "b": {...}}}}``; endpoint entries are each model's own evaluation.
    """
    if bn not in ("recompute", "interpolate"):
        raise ValueError(f"bn: expected 'recompute' or 'interpolate', got {bn!r}")
    if not data:
        raise ValueError("interpolate: no datasets given")
    if alphas is None:
        alphas = torch.linspace(0, 1, 21, dtype=torch.float64)
    alphas = torch.as_tensor(alphas, dtype=torch.float64).flatten()
    if alphas.numel() == 0 or chunk < 1 or batch_size < 2:
        raise ValueError("interpolate: need at least one alpha, chunk >= 1 and batch_size >= 2")
    device = next(model_a.parameters()).device
    if vectorize is None:
        vectorize = device.type == "cuda"
    template = copy.deepcopy(model_a).to(device)
    sa = dict(model_a.state_dict())
    sb = {k: v.to(device) for k, v in model_b.state_dict().items()}
    calib_src = calibration if calibration is not None else data.get("train", next(iter(data.values())))
    calib = spread_subset(calib_src, calibration_size).images.to(device)
    recompute = bn == "recompute" and bool(batchnorm_layers(template))
    curves: dict[str, dict[str, list[float]]] = {n: {"loss": [], "accuracy": []} for n in data}
    for start in range(0, len(alphas), chunk):
        states = interpolated_states(sa, sb, alphas[start : start + chunk])
        if recompute:
            recompute_bn(template, states, calib, batch_size, vectorize)
        for name, ds in data.items():
            loss, acc = evaluate_states(template, states, ds, batch_size, vectorize)
            curves[name]["loss"] += loss.tolist()
            curves[name]["accuracy"] += acc.tolist()
    alist = alphas.tolist()
    out: dict[str, Any] = {"alphas": alist, "bn": bn if recompute or bn == "interpolate" else "none", "splits": {}}
    out["endpoints"] = {}
    for name, ds in data.items():
        c = curves[name]
        c_err = [1 - v for v in c["accuracy"]]
        out["splits"][name] = {**c, "loss_barrier": _barrier(c["loss"], alist), "error_barrier": _barrier(c_err, alist)}
        dd = ds.to(device)
        out["endpoints"][name] = {
            "a": {k: v for k, v in evaluate(model_a, dd, batch_size).items() if k != "n"},
            "b": {k: v for k, v in evaluate(model_b, dd, batch_size).items() if k != "n"},
        }
    return out
