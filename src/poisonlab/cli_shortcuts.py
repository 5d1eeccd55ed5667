"""Command-line shortcuts for config fields: ``--dataset X`` means ``--set data.name=X``.

Every experiment command takes ``--config YAML``, repeatable ``--set KEY=VALUE`` overrides and its own list of
shortcut flags; these helpers add them to a parser and turn the parsed flags back into overrides, so the
commands share one behaviour (a shortcut is applied after the explicit ``--set`` overrides).
"""

from __future__ import annotations

import argparse

Shortcut = tuple[str, str, str, str]
"""(flag, metavar, config key, help)."""


def add_config_arguments(parser: argparse.ArgumentParser, shortcuts: tuple[Shortcut, ...], config_help: str) -> None:
    """Add ``--config``, ``--set`` and one flag per shortcut to ``parser``."""
    parser.add_argument("--config", metavar="YAML", help=config_help)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    for flag, meta, _, text in shortcuts:
        parser.add_argument(flag, metavar=meta, help=f"{text} (shortcut for --set)")


def shortcut_overrides(args: argparse.Namespace, shortcuts: tuple[Shortcut, ...]) -> list[str]:
    """The ``--set`` overrides followed by ``key=value`` for every shortcut flag that was given."""
    out = list(args.overrides)
    for flag, _, key, _ in shortcuts:
        value = getattr(args, flag[2:].replace("-", "_"), None)
        if value is not None:
            out.append(f"{key}={value}")
    return out


def data_shortcuts(dataset_help: str = "dataset (see 'poisonlab datasets')") -> tuple[Shortcut, ...]:
    """``--dataset`` and ``--data-root``, shared by the commands that load an image dataset."""
    return (
        ("--dataset", "NAME", "data.name", dataset_help),
        ("--data-root", "DIR", "data.root", "folder of an on-disk dataset"),
    )


def runtime_shortcuts(seed_help: str = "root seed") -> tuple[Shortcut, ...]:
    """``--seed``, ``--threads`` and ``--device``, shared by the experiment commands."""
    return (
        ("--seed", "S", "seed", seed_help),
        ("--threads", "N", "runtime.threads", "CPU threads"),
        ("--device", "DEV", "runtime.device", "auto, cpu or cuda"),
    )
