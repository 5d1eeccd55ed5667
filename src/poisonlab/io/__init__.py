"""The only code that reads or writes files: safetensors + JSON manifests, atomic directories, safe loaders."""

from poisonlab.io.artifact import load_artifact, save_artifact
from poisonlab.io.checkpoint import Checkpointer

__all__ = ["Checkpointer", "load_artifact", "save_artifact"]
