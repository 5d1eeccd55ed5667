"""Training: the one Trainer loop with hooks, recipes, differentiable augmentation, many models at once."""

from poisonlab.training.augment import DifferentiableAugment
from poisonlab.training.evaluate import evaluate
from poisonlab.training.hooks import Batch, TrainingHook
from poisonlab.training.trainer import Trainer

__all__ = ["Batch", "DifferentiableAugment", "Trainer", "TrainingHook", "evaluate"]
