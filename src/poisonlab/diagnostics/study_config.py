"""Configuration of the diagnostics studies (recipes/diagnose-rank.yaml, recipes/diagnose-norm.yaml)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from poisonlab.config import ExperimentConfig, Frozen, Ratio, apply_overrides, build, load_yaml
from poisonlab.errors import ConfigError


class RankProjectionConfig(Frozen):
    """The paper's rank minimisation (``mode: lower``, threshold 0.5) or maximisation (``raise``, 1.5)."""

    threshold: Ratio = Field(0.5, gt=0)
    mode: Literal["lower", "raise"] = "lower"
    at_epochs: list[int] | None = Field(
        None, description="0-based epochs after which to project; None = the lr drops before the last epoch"
    )
    skip_first: bool = True
    include_linear: bool = False


class NuclearNormConfig(Frozen):
    weight: Ratio = Field(gt=0)
    skip_first: bool = True


class NormBiasConfig(Frozen):
    """``(weight/2) * | ||theta||^2 - mu |`` with mu given directly or as a multiple of the initial squared norm."""

    weight: Ratio = Field(5e-4, gt=0)
    target_sq_norm: Ratio | None = Field(None, ge=0)
    target_ratio: Ratio | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _one_target(self) -> NormBiasConfig:
        if (self.target_sq_norm is None) == (self.target_ratio is None):
            raise ValueError("give exactly one of target_sq_norm and target_ratio")
        return self


class ArmConfig(Frozen):
    """One training variant: the base recipe plus at most these changes."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    weight_decay: Ratio | None = Field(None, ge=0, description="replaces train.weight_decay for this arm")
    rank_projection: RankProjectionConfig | None = None
    nuclear_norm: NuclearNormConfig | None = None
    norm_bias: NormBiasConfig | None = None


class RobustConfig(Frozen):
    """Robust accuracy on ``n`` test images spread evenly over the test split (datasets may be sorted by class)
    under l-inf PGD and WITCHcraft (pixel01 units)."""

    eps: Ratio = Field(0.1, gt=0, le=1)
    steps: int = Field(20, ge=1, le=1000)
    n: int = Field(300, ge=1)
    attacks: list[Literal["pgd", "witchcraft"]] = ["pgd", "witchcraft"]
    subset: Literal["spread"] = "spread"


class StudySection(Frozen):
    kind: Literal["rank", "norm"]
    seeds: int = Field(3, ge=1, le=100)
    arms: list[ArmConfig] = Field(min_length=1)
    robust: RobustConfig | None = RobustConfig()

    @model_validator(mode="after")
    def _unique_arms(self) -> StudySection:
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arm names must be unique, got {names}")
        return self


class DiagnoseStudyConfig(ExperimentConfig):
    """A training recipe (the usual sections) plus the ``study`` section."""

    study: StudySection

    def arm_config(self, arm: ArmConfig) -> ExperimentConfig:
        """The plain training config of one arm (its weight decay applied)."""
        data = self.model_dump(mode="json", exclude={"study"})
        if arm.weight_decay is not None:
            data["train"]["weight_decay"] = arm.weight_decay
        return build(ExperimentConfig, data)

    def train_hash(self, arm: ArmConfig) -> str:
        """Hash of what decides one arm's training (its checkpoints are keyed by it)."""
        payload = {"train": self.arm_config(arm).config_hash(), "arm": arm.model_dump(mode="json")}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def trial_hash(self, arm: ArmConfig) -> str:
        """Hash of everything that decides one arm's trial (not the number of seeds, not the runtime)."""
        payload = {
            "train": self.arm_config(arm).config_hash(),
            "arm": arm.model_dump(mode="json"),
            "robust": self.study.robust.model_dump(mode="json") if self.study.robust else None,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


RECIPES = {"rank": "diagnose-rank.yaml", "norm": "diagnose-norm.yaml"}


def recipe_path(name: str) -> Path:
    """A recipe name (``rank``/``norm``) -> recipes/ file; anything else is taken as a path."""
    if name in RECIPES:
        for here in (Path("recipes") / RECIPES[name], Path(__file__).resolve().parents[3] / "recipes" / RECIPES[name]):
            if here.is_file():
                return here
        raise ConfigError(f"--recipe {name}: recipes/{RECIPES[name]} not found (run from a checkout or pass a path)")
    path = Path(name)
    if not path.is_file():
        raise ConfigError(f"--recipe: expected 'rank', 'norm' or a YAML file, got {name!r}")
    return path


def load_study_config(recipe: str, overrides: list[str] | None = None) -> DiagnoseStudyConfig:
    data: dict[str, Any] = load_yaml(recipe_path(recipe))
    return build(DiagnoseStudyConfig, apply_overrides(data, overrides or []))
