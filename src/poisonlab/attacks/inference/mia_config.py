"""Typed, frozen configuration of a membership-inference experiment: the ``mia:`` section."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from poisonlab.config import ExperimentConfig, Frozen, Ratio, apply_overrides, build, load_yaml


class MiaConfig(Frozen):
    """LiRA shadow models and optional Truth Serum poisoning. Defaults: the reference demo (16 models,
    250 targets x 8 mislabeled replicas, fixed-variance LiRA)."""

    shadows: int = Field(16, ge=4, le=1024, description="models, each on a random half of the universe")
    universe: Literal["all", "train"] = Field("all", description="all: train+test splits; train: train split")
    poison_targets: int = Field(0, ge=0, description="Truth Serum targets M (0: no poisoned arm)")
    replicas: int = Field(8, ge=1, le=1000, description="mislabeled replicas r per target")
    untargeted_share: Ratio = Field(0.0, ge=0, lt=1, description="untargeted arm: attacker's share (0: off)")
    label_noise_share: Ratio = Field(1.0, ge=0, le=1, description="untargeted: attacker samples relabelled")
    mislabeled_ood_share: Ratio = Field(0.0, ge=0, le=1, description="untargeted: inverted images, random label")
    query_shift: int = Field(
        0, ge=0, le=4, description="query views: the image and shifts up to this many pixels (0: the image only)"
    )
    k_at_once: int = Field(2, ge=1, le=256, description="shadow models per train_many call")
    strategy: Literal["auto", "sequential", "processes", "fused"] = "auto"
    n_boot: int = Field(1000, ge=10, le=100_000, description="bootstrap resamples for intervals")
    fprs: tuple[Ratio, ...] = (0.001, 0.01)

    @model_validator(mode="after")
    def _consistent(self) -> MiaConfig:
        if self.label_noise_share + self.mislabeled_ood_share > 1:
            raise ValueError("label_noise_share + mislabeled_ood_share must be <= 1")
        if not all(0 < f < 1 for f in self.fprs):
            raise ValueError("fprs must lie in (0, 1)")
        if self.untargeted_share > 0 and self.universe != "train":
            raise ValueError("untargeted_share needs universe=train (the test split is the attacker's pool)")
        return self


class MiaExperimentConfig(ExperimentConfig):
    """An experiment config with a ``mia`` section; the other sections describe the models' training."""

    mia: MiaConfig = MiaConfig()


def load_mia_config(path: str | Path | None = None, overrides: list[str] | None = None) -> MiaExperimentConfig:
    """MiaExperimentConfig from an optional YAML file and ``a.b=c`` overrides; errors name the field."""
    data: dict[str, Any] = load_yaml(path) if path is not None else {}
    return build(MiaExperimentConfig, apply_overrides(data, overrides or []))
