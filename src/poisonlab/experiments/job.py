"""Job plumbing: graceful stop on SIGTERM/SIGINT, runtime settings, the environment recorded in results."""

from __future__ import annotations

import os
import platform
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

import poisonlab
from poisonlab.config import RuntimeConfig


@contextmanager
def stop_on_signals() -> Iterator[Callable[[], bool]]:
    """Yield a ``should_stop`` callable that turns True after SIGTERM or SIGINT (a second one aborts).

    Only installs handlers in the main thread; elsewhere ``should_stop`` is always False.
    """
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return

    def handler(signum: int, frame: Any) -> None:
        if flag["stop"]:
            raise KeyboardInterrupt
        flag["stop"] = True

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield lambda: flag["stop"]
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def resolve_device(runtime: RuntimeConfig) -> torch.device:
    if runtime.device == "cuda" or (runtime.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            from poisonlab.errors import ConfigError

            raise ConfigError("runtime.device: 'cuda' requested but no CUDA device is available")
        return torch.device("cuda")
    return torch.device("cpu")


def apply_runtime(runtime: RuntimeConfig) -> None:
    """Process-wide settings, applied only by the CLI: thread count and deterministic mode."""
    if runtime.threads is not None:
        torch.set_num_threads(runtime.threads)
    if runtime.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def trainer_options(runtime: RuntimeConfig) -> dict[str, Any]:
    """The Trainer keyword arguments a run's ``runtime`` section sets (checkpoint cadence, AMP, memory layout)."""
    return {
        "checkpoint_every": runtime.checkpoint_every,
        "amp": runtime.amp,
        "channels_last": runtime.channels_last,
    }


def environment(device: torch.device) -> dict[str, Any]:
    """Versions and device, stored with every result row."""
    env: dict[str, Any] = {
        "poisonlab": poisonlab.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        env["cuda"] = torch.version.cuda
        env["gpu"] = torch.cuda.get_device_name(device)
    return env
