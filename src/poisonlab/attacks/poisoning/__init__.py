"""Clean-label data poisoning: gradient matching (Witches' Brew), poison selection, PoisonSet artifacts,
surrogate training and success evaluation by retraining victims from scratch."""

from poisonlab.attacks.poisoning.config import (
    CraftConfig,
    PoisoningExperimentConfig,
    craft_config,
    load_poisoning_config,
)
from poisonlab.attacks.poisoning.evaluate import VictimResult, evaluate_poisons, random_noise_control
from poisonlab.attacks.poisoning.gradient_matching import (
    GradientMatching,
    PoisonTask,
    alignment,
    matching_loss,
    poison_gradient,
    target_gradient,
)
from poisonlab.attacks.poisoning.poison_set import PoisonSet
from poisonlab.attacks.poisoning.selection import (
    candidate_positions,
    choose_poisons,
    choose_targets,
    per_sample_grad_norms,
)
from poisonlab.attacks.poisoning.signed_adam import SignedAdam, step_decay
from poisonlab.attacks.poisoning.surrogates import build_victim_model, stagger_epochs, train_surrogates

__all__ = [
    "CraftConfig",
    "GradientMatching",
    "PoisonSet",
    "PoisonTask",
    "PoisoningExperimentConfig",
    "SignedAdam",
    "VictimResult",
    "alignment",
    "build_victim_model",
    "candidate_positions",
    "choose_poisons",
    "choose_targets",
    "craft_config",
    "evaluate_poisons",
    "load_poisoning_config",
    "matching_loss",
    "per_sample_grad_norms",
    "poison_gradient",
    "random_noise_control",
    "stagger_epochs",
    "step_decay",
    "target_gradient",
    "train_surrogates",
]
