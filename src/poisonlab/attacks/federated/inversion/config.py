"""Typed, frozen configuration of a gradient inversion run: the ``invert:`` section next to the usual ones.

Attack defaults are those of ``JonasGeiping/invertinggradients`` (``reconstruct_image.py``, ``--optim ours``):
cosine cost over all layers, signed Adam at lr 0.1 with x0.1 decay at 3/8, 5/8, 7/8, box constraint,
4,000 iterations, TV weight 1e-4, 1 restart. ``None`` means "the chosen attack's reference default", so
``attack: dlg`` gets DLG's L-BFGS at lr 1 for 500 iterations with the Euclidean cost and no TV.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from poisonlab.config import ExperimentConfig, Frozen, Ratio, apply_overrides, build, load_yaml

Attack = Literal["inverting-gradients", "dlg", "idlg", "analytic"]

_DEFAULTS: dict[str, dict[str, Any]] = {
    "inverting-gradients": {"iterations": 4000, "lr": 0.1, "tv": 1e-4, "cost": "cosine"},
    "dlg": {"iterations": 500, "lr": 1.0, "tv": 0.0, "cost": "euclidean"},
    "idlg": {"iterations": 500, "lr": 1.0, "tv": 0.0, "cost": "euclidean"},
    "analytic": {"iterations": 0, "lr": 0.0, "tv": 0.0, "cost": "cosine"},
}


class InvertConfig(Frozen):
    """The attacker's settings and the simulated client's round."""

    attack: Attack = "inverting-gradients"
    iterations: int | None = Field(None, ge=1, le=1_000_000, description="optimiser steps per restart")
    lr: Ratio | None = Field(None, gt=0, le=100, description="step size (normalised units; L-BFGS lr for DLG)")
    tv: Ratio | None = Field(None, ge=0, le=100, description="total-variation weight (normalised units)")
    cost: Literal["cosine", "euclidean"] | None = None
    restarts: int = Field(1, ge=1, le=1024, description="independent initialisations; the lowest cost is kept")
    signed: bool = Field(True, description="Adam on sign(grad) (inverting gradients)")
    boxed: bool = Field(True, description="project onto the pixel box [0, 1] after every step")
    lr_decay: bool = Field(True, description="x0.1 at 3/8, 5/8 and 7/8 of the iterations")
    init: Literal["randn", "rand", "zeros"] = "randn"
    labels: Literal["auto", "idlg", "bias-sign", "weight-min"] = Field("auto", description="label recovery rule")
    vectorize: bool = Field(True, description="run all restarts (and clients) as one vmapped batch")
    lbfgs_max_iter: int = Field(20, ge=1, le=1000, description="DLG: L-BFGS evaluations per step (torch default)")
    checkpoint_every: int = Field(500, ge=1, description="iterations between checkpoints")
    # the simulated round
    batch_size: int = Field(1, ge=1, le=256, description="images per client update")
    trials: int = Field(1, ge=1, le=1000, description="independent client updates (batches) attacked")
    local_steps: int = Field(0, ge=0, le=1000, description="0: FedSGD gradient; n: FedAvg delta after n SGD steps")
    local_lr: Ratio = Field(1e-4, gt=0, le=10, description="FedAvg local learning rate (reference 1e-4)")
    images_per_step: int | None = Field(None, ge=1, description="FedAvg images per local step; None = batch")
    share_labels: bool = Field(False, description="the client reveals its labels (else they are recovered)")
    split: Literal["test", "train"] = Field("test", description="where the private images are drawn from")
    unique_labels: bool = Field(True, description="distinct labels within a batch when the classes allow it")

    @model_validator(mode="after")
    def _consistent(self) -> InvertConfig:
        if self.images_per_step is not None and self.images_per_step > self.batch_size:
            raise ValueError("images_per_step must be <= batch_size")
        if self.attack == "analytic" and self.local_steps:
            raise ValueError("analytic inversion needs a gradient (local_steps 0)")
        return self

    def resolved(self, name: str) -> Any:
        """The value of ``iterations``/``lr``/``tv``/``cost``, or the attack's reference default when unset."""
        value = getattr(self, name)
        return _DEFAULTS[self.attack][name] if value is None else value


class InvertExperimentConfig(ExperimentConfig):
    """An experiment config with an ``invert`` section; ``data``/``model`` describe the federated task."""

    invert: InvertConfig = InvertConfig()


def invert_config(**fields: Any) -> InvertConfig:
    """An InvertConfig from keyword fields; errors are ConfigError naming the field (``invert.<field>``)."""
    return build(InvertExperimentConfig, {"invert": fields}).invert


def load_invert_config(path: str | Path | None = None, overrides: list[str] | None = None) -> InvertExperimentConfig:
    """InvertExperimentConfig from an optional YAML file and ``a.b=c`` overrides; errors name the field."""
    data: dict[str, Any] = load_yaml(path) if path is not None else {}
    return build(InvertExperimentConfig, apply_overrides(data, overrides or []))
