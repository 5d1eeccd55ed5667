"""Typed, frozen configuration of a poison-crafting run: the ``poison:`` section next to the usual ones.

Defaults are those of the gradient-matching reference (``JonasGeiping/poisoning-gradient-matching``,
``forest/options.py``), with explicit booleans where the reference has ``store_false`` flags and
explicit units: ``eps`` is in pixel01 units, so write ``16/255`` rather than ``16``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, field_validator, model_validator

from poisonlab.budget import LinfBudget, PoisonBudget
from poisonlab.config import ExperimentConfig, Frozen, Ratio, apply_overrides, build, load_yaml

ThreatModel = Literal["single-class", "third-party", "random-subset"]
Selection = Literal["random", "gradient-norm"]


MatchingLoss = Literal["cosine", "scalar-product"]
"""Gradient matching's loss: the reference's ``--loss similarity`` (its default) or ``--loss scalar_product``."""
StaggerKind = Literal["first", "spread", "inbetween"]
Stagger = bool | StaggerKind
"""How an ensemble's members are spread over the recipe: False (all fully trained), True or "first" (member i
trains i epochs), "spread" (evenly from 0 to all epochs) or "inbetween" (evenly, both ends left out)."""


class CraftConfig(Frozen):
    """What the attacker does and how hard it tries.

    Targets: ``target_ids`` are ids of test images; empty means ``targets`` random test images of one random
    class (drawn from the "target" generator). ``adv_class`` None means a random class other than the targets'.
    """

    recipe: Literal["gradient-matching", "metapoison", "feature-collision"] = "gradient-matching"
    eps: Ratio = Field(16 / 255, gt=0, le=1, description="l-inf radius in pixel01 units, e.g. 16/255")
    budget: Ratio = Field(0.01, gt=0, le=1, description="fraction of the training set perturbed")
    poison_count: int | None = Field(None, ge=1, description="exact number of poisons; overrides budget")
    threat_model: ThreatModel = "single-class"
    poison_class: int | None = Field(None, ge=0, description="third-party: the class poisons come from")
    selection: Selection = "random"
    target_ids: tuple[int, ...] = Field((), description="test-split ids of the targets; empty = random")
    targets: int = Field(1, ge=1, le=1000, description="number of random targets when target_ids is empty")
    adv_class: int | None = Field(None, ge=0, description="the class the targets should be classified as")
    # crafting (reference defaults)
    restarts: int = Field(8, ge=1, le=1000)
    steps: int = Field(250, ge=1, le=100_000, description="signed-Adam iterations per restart (attackiter)")
    tau: Ratio = Field(
        0.1,
        gt=0,
        le=10,
        description="step size in the model's normalised units; signed Adam steps tau * (pbatch / 512) / E as in the "
        "reference; with E surrogates at a large eps, tau = 0.1 * E (the step of one surrogate) moves targets further",
    )
    pbatch: int = Field(512, ge=1, le=1_000_000, description="poisons per double-backward minibatch")
    init: Literal["randn", "rand", "zero"] = "randn"
    schedule: bool = Field(True, description="x0.1 step decay at M/2.667, M/1.6, M/1.142")
    augment: bool = Field(True, description="differentiable shift/flip of the poisons at every step")
    matching: MatchingLoss = Field(
        "cosine",
        description="gradient matching's loss: 1 - cosine (the reference's default) or -<g_t, g_p>/||g_t|| "
        "(its --loss scalar_product)",
    )
    # surrogates
    ensemble: int = Field(1, ge=1, le=64, description="surrogates the loss is averaged over")
    stagger: Stagger = Field(
        False,
        description="spread the members over the victim recipe: true/first = member i trained for i epochs "
        "(reference); spread = evenly from the initialisation to the trained model; inbetween = evenly, ends left out",
    )
    retrain_every: int = Field(
        0,
        ge=0,
        le=100_000,
        description="gradient matching, from scratch: every N crafting steps, retrain the surrogates from a fresh "
        "init on the current poisoned set and match their gradients from then on (Sleeper Agent's "
        "retrain_iter; 0 = off)",
    )
    scenario: Literal["from-scratch", "fine-tune", "transfer"] = Field(
        "from-scratch",
        description="victim training: from scratch; fine-tune all layers of a public pretrained model; or "
        "transfer (frozen pretrained feature extractor, last layer retrained)",
    )
    pretrained_seed: int = Field(0, ge=0, description="fine-tune/transfer: seed of the public pretrained model")
    # MetaPoison (wronnyhuang/metapoison parse.py defaults, additive part only)
    unroll_steps: int = Field(2, ge=1, le=50, description="MetaPoison: unrolled SGD steps K (nadapt)")
    objective: Literal["cw", "xent"] = Field("cw", description="MetaPoison: adversarial loss (cwT or xentT)")
    craft_lr: float = Field(
        200 / 255,
        gt=0,
        description="MetaPoison: outer Adam rate in pixel01 units (craftrate 200 in 0..255 units), 5-step warm-up",
    )
    craft_lr_drop_every: int = Field(
        20, ge=1, description="MetaPoison: x0.1 at N and x0.01 from 2N craft steps on (crdropperiod)"
    )
    # feature collision (Poison Frogs; units and defaults derived in feature_collision.py)
    beta0: float = Field(
        0.0,
        ge=0,
        description="feature collision: proximal weight beta = beta0 * (D / dim_b)^2 * 255^2 (D feature width, "
        "dim_b = C*H*W; the paper's 0.25 * 2048^2 / dim_b^2 for InceptionV3 on 0..255 images). 0 = only the "
        "l-inf ball keeps x near b, as the l-inf reference implementations; 0.25 pins x to b on small images",
    )
    fc_lr: float = Field(
        0.1,
        gt=0,
        description="feature collision: initial forward-step size on ||f(x) - f(t)||^2, pixel01 units (a step "
        "lambda on 0..255 images is lambda / 255^2 here); halved per poison whenever a step raises its objective",
    )
    fc_watermark: Ratio = Field(
        0.0,
        ge=0,
        lt=1,
        description="feature collision: target watermark opacity o, base b' = (1 - o) b + o t, clipped to eps "
        "(paper: 0.3 for end-to-end training; 0 = off)",
    )
    checkpoint_every: int = Field(25, ge=1, description="crafting steps between checkpoints")

    @field_validator("eps", mode="before")
    @classmethod
    def _eps_units(cls, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 1:
            raise ValueError(f"eps is in pixel01 units; write {value:g}/255 for {value:g} intensity levels")
        return value

    @field_validator("stagger", mode="before")
    @classmethod
    def _stagger_kind(cls, value: Any) -> Any:
        if isinstance(value, bool) or value in get_args(StaggerKind):
            return value
        raise ValueError("expected true, false, first, spread or inbetween")

    @model_validator(mode="after")
    def _consistent(self) -> CraftConfig:
        if self.poison_class is not None and self.threat_model != "third-party":
            raise ValueError("poison_class is only used by threat_model third-party")
        if len(set(self.target_ids)) != len(self.target_ids):
            raise ValueError("target_ids must be unique")
        if self.stagger and self.ensemble < 2:
            raise ValueError("stagger needs ensemble >= 2")
        if self.matching != "cosine" and self.recipe != "gradient-matching":
            raise ValueError("matching is gradient matching's loss; it needs recipe gradient-matching")
        if self.retrain_every and (self.recipe != "gradient-matching" or self.scenario != "from-scratch"):
            raise ValueError("retrain_every is for recipe gradient-matching in scenario from-scratch")
        return self

    @property
    def linf(self) -> LinfBudget:
        return LinfBudget(self.eps)

    @property
    def poison_budget(self) -> PoisonBudget:
        if self.poison_count is not None:
            return PoisonBudget(count=self.poison_count)
        return PoisonBudget(fraction=self.budget)


class PoisoningExperimentConfig(ExperimentConfig):
    """An experiment config with a ``poison`` section; the other sections are the victim's recipe,
    which the surrogates are trained with too (scenario "from-scratch")."""

    poison: CraftConfig = CraftConfig()

    def victim_config(self) -> ExperimentConfig:
        """The plain training config (no attack)."""
        return build(ExperimentConfig, self.model_dump(mode="json", exclude={"poison"}))


def craft_config(**fields: Any) -> CraftConfig:
    """A CraftConfig from keyword fields; errors are ConfigError naming the field (``poison.<field>``)."""
    return build(PoisoningExperimentConfig, {"poison": fields}).poison


def load_poisoning_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> PoisoningExperimentConfig:
    """PoisoningExperimentConfig from an optional YAML file and ``a.b=c`` overrides; errors name the field."""
    data: dict[str, Any] = load_yaml(path) if path is not None else {}
    return build(PoisoningExperimentConfig, apply_overrides(data, overrides or []))
