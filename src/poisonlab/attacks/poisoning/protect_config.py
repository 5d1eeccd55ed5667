"""Typed, frozen configuration of availability poisoning for secure dataset release: the ``protect:`` section.

Defaults follow ALGORITHMS.md section 4 and the gradient-matching engine it reuses (Fowl et al. 2021, built on
``JonasGeiping/poisoning-gradient-matching``): eps 8/255, the whole dataset protected, reverse cross-entropy
target, 250 signed-Adam steps with step decay, tau 0.1, poison batches of 512, randn start. Restarts default
to 1 (the reference's ImageNet release command; its CIFAR default is 8), because every sample is crafted.
Units are explicit: ``eps`` is in pixel01 units, so write ``8/255``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from poisonlab.budget import LinfBudget, PoisonBudget
from poisonlab.config import NORMS, ExperimentConfig, Frozen, ModelConfig, Ratio, apply_overrides, build, load_yaml

Objective = Literal["reverse-ce", "negative-ce"]
Method = Literal["alignment", "adversarial-targeted", "adversarial-untargeted"]
Optimizer = Literal["signed-adam", "pgd"]
TargetScope = Literal["batch", "all"]
LabelMap = Literal["shift", "nearest"]


def _member_spec(text: str) -> tuple[str, int | None, str | None]:
    """``name[:width[:norm]]`` -> (name, width or None, norm or None); ValueError on a malformed entry."""
    name, _, rest = str(text).partition(":")
    width, _, norm = rest.partition(":")
    ok = name and (not width or (width.isdigit() and int(width) > 0)) and (not norm or norm in NORMS)
    if not ok or (norm and not width):
        raise ValueError(f"expected entries name[:width[:norm]] such as resnet18:8 or convnet:8:none, got {text!r}")
    return name, int(width) if width else None, norm or None


class ProtectConfig(Frozen):
    """What the data owner protects and how hard it tries.

    ``method``: ``alignment`` (Fowl et al., arXiv 2103.02683: align each batch's training gradient with the
    gradient of ``objective``), or the adversarial poisons of the same reference code (Fowl et al., "Adversarial
    Examples Make Strong Poisons", arXiv 2106.10807): ``adversarial-targeted`` = class-targeted adversarial
    examples of the surrogates towards the permuted label ``(y + 1) mod C`` (the reference's default recipe),
    ``adversarial-untargeted`` = error-maximising adversarial examples (maximise CE at the true label).
    ``optimizer`` None = signed Adam with step decay for ``alignment`` (lr ``tau``) and PGD for the adversarial
    methods (fixed signed step ``pgd_tau * eps``, never decayed, as the reference's ``--attackoptim PGD --tau 0.05``).
    ``label_map`` (adversarial-targeted): the permutation each class is pushed to: ``shift`` = ``(y + 1) mod C``
    (the reference's), ``nearest`` = the derangement that maximises the surrogates' mean log-probability of the
    new class on the clean images (each class goes to a neighbouring class; fixed before crafting, and online by
    the first release batch's surrogates).
    ``minibatch``: the adversarial methods split each poison batch into minibatches of this size, each augmented
    once (the reference's loader batch of 128; on CPU twice as fast as one backward over 512).
    ``objective``: the loss whose descent destroys clean accuracy: ``reverse-ce`` = -log(1 - p_y) (reference
    ``reverse_xent``), or ``negative-ce`` = -CE (forest's ``untargeted-cross-entropy``).
    ``target_scope``: the clean samples the target gradient is taken over: ``batch`` = each poison batch's own
    clean images (ALGORITHMS.md section 4 step 2, usable online), ``all`` = every sample of the release.
    ``surrogates``: a mixed ensemble, one member per ``name[:width[:norm]]`` entry (e.g. ``[mlp, resnet18:8]``,
    ``convnet:8:none`` for a member without normalisation layers; the norm defaults to ``model.norm``), each
    trained with the surrogate recipe; empty = ``ensemble`` members of ``model``.
    ``augment`` None follows the victim recipe (``train.augment``).
    Online: the protected ids are released in ``release_batches`` consecutive batches; before batch b > 0 the
    surrogates train ``update_epochs`` more epochs on the batches released so far (their clean copies, or the
    protected ones with ``online_update: protected``).
    """

    eps: Ratio = Field(8 / 255, gt=0, le=1, description="l-inf radius in pixel01 units, e.g. 8/255")
    fraction: Ratio = Field(1.0, gt=0, le=1, description="fraction of the training set protected")
    method: Method = "alignment"
    label_map: LabelMap = Field("shift", description="adversarial-targeted: shift (y + 1 mod C) or nearest")
    objective: Objective = "reverse-ce"
    optimizer: Optimizer | None = Field(None, description="signed-adam or pgd; None = the method's reference choice")
    pgd_tau: Ratio = Field(0.05, gt=0, le=1, description="PGD step as a fraction of eps")
    minibatch: int = Field(128, ge=1, le=1_000_000, description="adversarial methods: samples per backward")
    target_scope: TargetScope = "batch"
    restarts: int = Field(1, ge=1, le=1000)
    steps: int = Field(250, ge=1, le=100_000, description="signed-Adam iterations per poison batch")
    tau: Ratio = Field(0.1, gt=0, le=10, description="step size in the surrogate's normalised units")
    pbatch: int = Field(512, ge=1, le=1_000_000, description="samples per poison batch (one double-backward)")
    init: Literal["randn", "rand", "zero"] = "randn"
    schedule: bool = Field(True, description="x0.1 step decay at M/2.667, M/1.6, M/1.142")
    augment: bool | None = Field(None, description="differentiable augmentation while crafting; None = as train")
    ensemble: int = Field(1, ge=1, le=64, description="surrogates the alignment is averaged over")
    surrogates: tuple[str, ...] = Field((), description="mixed ensemble: one member per name[:width]")
    stagger: bool = Field(False, description="member i trained for i epochs of the surrogate recipe")
    surrogate_epochs: int | None = Field(None, ge=1, le=10_000, description="surrogate epochs; None = train.epochs")
    online: bool = Field(False, description="protect and release batch by batch, updating the surrogates")
    release_batches: int = Field(1, ge=1, le=100_000, description="online: number of release batches")
    update_epochs: int = Field(1, ge=1, le=10_000, description="online: surrogate epochs between releases")
    online_update: Literal["clean", "protected"] = "clean"
    checkpoint_every: int = Field(25, ge=1, description="crafting steps between checkpoints")

    @field_validator("eps", mode="before")
    @classmethod
    def _eps_units(cls, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 1:
            raise ValueError(f"eps is in pixel01 units; write {value:g}/255 for {value:g} intensity levels")
        return value

    @field_validator("surrogates", mode="before")
    @classmethod
    def _surrogate_list(cls, value: Any) -> Any:
        if isinstance(value, str):  # the CLI's comma-separated form
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @field_validator("surrogates")
    @classmethod
    def _surrogate_specs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for text in value:
            _member_spec(text)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ProtectConfig:
        if self.surrogates and self.ensemble not in (1, len(self.surrogates)):
            raise ValueError(f"ensemble {self.ensemble} disagrees with the {len(self.surrogates)} surrogates listed")
        if self.stagger and self.members < 2:
            raise ValueError("stagger needs ensemble >= 2")
        if self.release_batches > 1 and not self.online:
            raise ValueError("release_batches > 1 needs online: true")
        return self

    @property
    def members(self) -> int:
        """Number of ensemble members."""
        return len(self.surrogates) or self.ensemble

    def member_models(self, model: ModelConfig) -> list[ModelConfig]:
        """The architecture of each ensemble member: the ``surrogates`` entries, or ``ensemble`` x ``model``."""
        if not self.surrogates:
            return [model] * self.ensemble
        return [ModelConfig(name=n, width=w, norm=m or model.norm) for n, w, m in map(_member_spec, self.surrogates)]

    @property
    def crafting_optimizer(self) -> Optimizer:
        """The optimiser that runs: ``optimizer``, or the method's reference choice when None."""
        if self.optimizer is not None:
            return self.optimizer
        return "signed-adam" if self.method == "alignment" else "pgd"

    @property
    def linf(self) -> LinfBudget:
        return LinfBudget(self.eps)

    @property
    def budget(self) -> PoisonBudget:
        return PoisonBudget(fraction=self.fraction)


class ProtectionExperimentConfig(ExperimentConfig):
    """An experiment config with a ``protect`` section. ``model`` is the surrogate architecture; ``train`` is
    the surrogate recipe and, by default, the victims' recipe too."""

    protect: ProtectConfig = ProtectConfig()

    def crafting_augment(self) -> bool:
        return self.train.augment if self.protect.augment is None else self.protect.augment


def protect_config(**fields: Any) -> ProtectConfig:
    """A ProtectConfig from keyword fields; errors are ConfigError naming the field (``protect.<field>``)."""
    return build(ProtectionExperimentConfig, {"protect": fields}).protect


def load_protection_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> ProtectionExperimentConfig:
    """ProtectionExperimentConfig from an optional YAML file and ``a.b=c`` overrides; errors name the field."""
    data: dict[str, Any] = load_yaml(path) if path is not None else {}
    return build(ProtectionExperimentConfig, apply_overrides(data, overrides or []))
