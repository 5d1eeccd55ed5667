"""poisonlab: red-team ML training pipelines against training-time threats."""

__version__ = "0.1.0"
