"""Parameter norms per layer and in total, and how far parameters moved from a reference (e.g. the initialisation).

The total squared l2 norm over all trainable parameters is the quantity weight decay shrinks and the norm-bias
regulariser of Goldblum et al. (arXiv 1910.00359, section on weight decay) pulls towards a target; the reference
code measures it over every parameter the optimizer sees (``NormBias/main.py``, ``parameters_Norm``).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def squared_norm(parameters: list[torch.Tensor]) -> torch.Tensor:
    """``sum ||p||_2^2`` over ``parameters`` as a differentiable scalar (float32 or wider)."""
    if not parameters:
        return torch.zeros(())
    return torch.stack([p.float().pow(2).sum() for p in parameters]).sum()


def total_norm(model: nn.Module) -> float:
    """l2 norm of all trainable parameters concatenated."""
    with torch.no_grad():
        return math.sqrt(float(squared_norm([p for p in model.parameters() if p.requires_grad])))


def parameter_norms(model: nn.Module, reference: nn.Module | None = None) -> list[dict[str, object]]:
    """One row per named parameter: size, l2 and l-inf norms and, given ``reference`` (a model of the same
    architecture), the l2 distance to it and that distance relative to the reference's norm.

    Raises:
        ValueError: when ``reference`` has different parameter names or shapes.
    """
    ref = dict(reference.named_parameters()) if reference is not None else None
    rows: list[dict[str, object]] = []
    with torch.no_grad():
        for name, p in model.named_parameters():
            x = p.detach().double()
            row: dict[str, object] = {
                "name": name,
                "shape": list(p.shape),
                "numel": p.numel(),
                "l2": float(x.norm()),
                "linf": float(x.abs().max()) if p.numel() else 0.0,
            }
            if ref is not None:
                if name not in ref or ref[name].shape != p.shape:
                    raise ValueError(f"reference model: parameter {name} missing or of another shape")
                r = ref[name].detach().double().to(x.device)
                dist, rnorm = float((x - r).norm()), float(r.norm())
                row.update(distance=dist, relative_distance=dist / rnorm if rnorm > 0 else math.inf)
            rows.append(row)
    return rows


def norm_summary(model: nn.Module, reference: nn.Module | None = None) -> dict[str, float]:
    """Total l2 norm, the part in weight matrices (dim > 1) and, given ``reference``, the total distance to it."""
    rows = parameter_norms(model, reference)
    out = {
        "total_l2": math.sqrt(math.fsum(float(r["l2"]) ** 2 for r in rows)),  # type: ignore[arg-type]
        "weights_l2": math.sqrt(math.fsum(float(r["l2"]) ** 2 for r in rows if len(r["shape"]) > 1)),  # type: ignore[arg-type]
    }
    if reference is not None:
        out["distance_l2"] = math.sqrt(math.fsum(float(r["distance"]) ** 2 for r in rows))  # type: ignore[arg-type]
    return out
