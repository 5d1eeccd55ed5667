"""Typed, frozen configs of the DP studies: disparate impact (``impact:``) and the privacy audit (``audit:``).

Both extend :class:`~poisonlab.config.ExperimentConfig`; the other sections describe the training recipe, which
is the same for the private and the non-private arm. Defaults adapt the disparate-impact paper's MNIST recipe
(Bagdasaryan et al., NeurIPS 2019: batch 256, momentum 0.5, no weight decay, no schedule, clipping S = 1, noise
z = 0.8) to mnist5k on a CPU: fewer, larger steps (lr 0.1, 30 epochs) and a model without batch norm.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from poisonlab.config import ExperimentConfig, Frozen, Ratio, apply_overrides, build, load_yaml

STUDY_TRAIN_DEFAULTS: dict[str, Any] = {
    "lr": 0.1,
    "momentum": 0.5,
    "nesterov": False,
    "weight_decay": 0.0,
    "epochs": 30,
    "batch_size": 256,
    "schedule": "none",
}
"""The recipe both arms share unless a config says otherwise (paper: batch 256, momentum 0.5, decay 0)."""


class PrivateTraining(Frozen):
    """DP-SGD settings (ALGORITHMS.md section 15.3): clip norm S, noise z (or a target epsilon), delta.

    With ``target_epsilon`` set, z is calibrated (never overshooting) for the run's sampling rate and number of
    updates, and ``noise_multiplier`` is ignored.
    """

    noise_multiplier: Ratio = Field(0.8, gt=0, description="z = noise std / S (paper: 0.8)")
    target_epsilon: Ratio | None = Field(None, gt=0, description="calibrate z to this epsilon instead")
    max_grad_norm: Ratio = Field(1.0, gt=0, description="S, the per-example clipping norm (paper: 1)")
    delta: Ratio = Field(1e-5, gt=0, lt=1)
    accountant: Literal["rdp", "prv"] = "rdp"


class ImpactSettings(Frozen):
    """The disparate-impact measurement: which class is cut down, to what, over how many seeds."""

    underrepresented_class: int = Field(8, ge=0, description="the class kept at keep_fraction (paper: 8)")
    keep_fraction: Ratio = Field(0.1, gt=0, le=1, description="share of that class's training images kept")
    seeds: int = Field(3, ge=1, le=100, description="seeds seed, seed+1, ...; each trains both arms")
    dp: PrivateTraining = PrivateTraining()


class DisparateImpactConfig(ExperimentConfig):
    """Training sections + ``impact``. The default model has no batch norm (DP-SGD refuses it)."""

    impact: ImpactSettings = ImpactSettings()


class AuditSettings(Frozen):
    """The one-run privacy audit (Steinke, Nasr & Jagielski 2023) of DP-SGD at several noise levels.

    ``canaries`` canaries are drawn from the test split (never in the training set) and each is inserted with
    probability 1/2. ``noise_levels`` are the audited z values; ``broken`` adds a run with noise 0 and no
    clipping (what a DP-SGD that forgot both would do), judged against the epsilon the *first* noise level's
    accountant claims.
    """

    canaries: int = Field(500, ge=10, le=100_000, description="m, canaries each included with probability 1/2")
    canary_kind: Literal["mislabeled", "noise"] = Field(
        "mislabeled", description="test images with a wrong label, or uniform-noise images with a random label"
    )
    train_size: int | None = Field(1000, ge=1, description="clean training images kept (None: all)")
    noise_levels: tuple[Ratio, ...] = Field((0.8, 2.0), min_length=1, description="audited noise multipliers z")
    broken: bool = Field(True, description="also audit noise 0 without clipping")
    max_grad_norm: Ratio = Field(1.0, gt=0)
    delta: Ratio = Field(1e-5, gt=0, lt=1)
    confidence: Ratio = Field(0.95, gt=0.5, lt=1, description="of every empirical lower bound")
    accountant: Literal["rdp", "prv"] = "rdp"

    @model_validator(mode="after")
    def _positive_noise(self) -> AuditSettings:
        if any(z <= 0 for z in self.noise_levels):
            raise ValueError("noise_levels must be > 0 (the broken run is requested with broken=true)")
        return self


class PrivacyAuditConfig(ExperimentConfig):
    """Training sections + ``audit``."""

    audit: AuditSettings = AuditSettings()


def _study_defaults() -> dict[str, Any]:
    return {"model": {"norm": "none"}, "train": dict(STUDY_TRAIN_DEFAULTS)}


def _load(kind: type[ExperimentConfig], path: str | Path | None, overrides: list[str] | None) -> Any:
    data = _study_defaults()
    if path is not None:
        for key, value in load_yaml(path).items():
            data[key] = {**data[key], **value} if isinstance(value, dict) and key in data else value
    return build(kind, apply_overrides(data, overrides or []))


def load_impact_config(path: str | Path | None = None, overrides: list[str] | None = None) -> DisparateImpactConfig:
    """DisparateImpactConfig from the study defaults, an optional YAML file and ``a.b=c`` overrides."""
    return _load(DisparateImpactConfig, path, overrides)


def load_audit_config(path: str | Path | None = None, overrides: list[str] | None = None) -> PrivacyAuditConfig:
    """PrivacyAuditConfig from the study defaults, an optional YAML file and ``a.b=c`` overrides."""
    return _load(PrivacyAuditConfig, path, overrides)
