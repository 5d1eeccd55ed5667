"""Models, built by name, initialised from an explicit generator (never the global RNG)."""

from poisonlab.models.build import MODELS, build_model, init_parameters

__all__ = ["MODELS", "build_model", "init_parameters"]
