"""Errors a user can act on. The CLI turns each into one line and exit code 2."""


class PoisonlabError(Exception):
    """Base class for every error that is the user's input, not a bug."""


class ConfigError(PoisonlabError, ValueError):
    """An invalid configuration value; the message names the field."""


class DataError(PoisonlabError):
    """A dataset is missing, corrupt or has the wrong shape; the message names the file."""


class CheckpointError(PoisonlabError):
    """A checkpoint or artifact is missing, corrupt, unsafe, or from another configuration."""


class Interrupted(PoisonlabError):
    """A job stopped on a signal after saving a checkpoint; rerun the same command to resume."""
