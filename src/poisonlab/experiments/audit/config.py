"""The audit's configuration: the user's recipe (the usual sections) plus an ``audit:`` section."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from poisonlab.config import ExperimentConfig, Frozen, _merge, apply_overrides, build, load_yaml
from poisonlab.errors import ConfigError

RECIPES: dict[str, dict[str, Any]] = {
    # the poisoning papers' victim recipe (SGD + Nesterov, lr 0.01 for ConvNet, wd 5e-4, batch 128, x0.1 at
    # 3/8, 5/8, 7/8) shortened to 6 epochs: 97-98% on mnist5k in about a minute on 2 cores
    "default": {
        "model": {"width": 16},
        "train": {"optimizer": "sgd", "lr": 0.01, "weight_decay": 5e-4, "epochs": 6, "batch_size": 128},
    },
    # the reference's full-length victim recipe (40 epochs)
    "paper": {
        "model": {"width": 64},
        "train": {"optimizer": "sgd", "lr": 0.01, "weight_decay": 5e-4, "epochs": 40, "batch_size": 128},
    },
}

QUICK_DEFENSES = ("none", "mixup")
STANDARD_DEFENSES = ("none", "mixup", "cutmix", "maxup", "dp-sgd", "dp-instahide", "adversarial", "spectral")
FULL_DEFENSES = (
    "none",
    "mixup",
    "cutmix",
    "maxup",
    "dp-sgd",
    "dp-sgd-weak",
    "dp-instahide",
    "adversarial",
    "spectral",
    "activation-clustering",
    "deep-knn",
)


class AuditSection(Frozen):
    """What the audit runs. Empty ``attacks`` means every registered probe; empty ``defenses`` the budget's list."""

    budget: Literal["quick", "standard", "full"] = "quick"
    attacks: tuple[str, ...] = ()
    defenses: tuple[str, ...] = ()
    executor: Literal["sequential", "local", "ray"] = "local"
    workers: int | None = Field(None, ge=1, le=1024)
    max_trials: int | None = Field(
        None,
        ge=1,
        description="run at most this many trials (seeds) per probe and defense; the budget's parameters, and so "
        "the stored trials, stay the same, so a later run without it adds the remaining seeds",
    )
    store: str | None = Field(None, description="result store file; default WORKDIR/results.sqlite")

    def defense_names(self) -> tuple[str, ...]:
        if self.defenses:
            return self.defenses
        return {"quick": QUICK_DEFENSES, "standard": STANDARD_DEFENSES, "full": FULL_DEFENSES}[self.budget]


class AuditConfig(ExperimentConfig):
    audit: AuditSection = AuditSection()

    def victim_config(self) -> ExperimentConfig:
        return build(ExperimentConfig, self.model_dump(mode="json", exclude={"audit"}))


def load_audit_config(
    recipe: str | None = None, path: str | Path | None = None, overrides: list[str] | None = None
) -> AuditConfig:
    """Recipe (a name in RECIPES or a YAML file) < ``path`` (a YAML config) < overrides."""
    data: dict[str, Any] = {}
    if recipe is not None:
        if recipe in RECIPES:
            data = dict(RECIPES[recipe])
        elif Path(recipe).suffix in (".yaml", ".yml"):
            data = load_yaml(recipe)
        else:
            raise ConfigError(f"--recipe: expected one of {sorted(RECIPES)} or a .yaml file, got {recipe!r}")
    if path is not None:
        data = _merge(data, load_yaml(path))
    return build(AuditConfig, apply_overrides(data, overrides or []))
