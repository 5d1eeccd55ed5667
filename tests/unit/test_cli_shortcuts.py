"""Shortcut flags are --set overrides: added to a parser, given back after the explicit --set ones."""

from __future__ import annotations

import argparse

import pytest

from poisonlab.cli_shortcuts import add_config_arguments, shortcut_overrides

SHORTCUTS = (
    ("--dataset", "NAME", "data.name", "dataset"),
    ("--data-root", "DIR", "data.root", "folder"),
    ("--epochs", "N", "train.epochs", "epochs"),
)


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_config_arguments(p, SHORTCUTS, "config file")
    return p.parse_args(argv)


def test_given_flags_become_overrides_after_the_explicit_ones() -> None:
    args = _parse(["--set", "seed=3", "--data-root", "/d", "--dataset", "mnist5k", "--config", "c.yaml"])
    assert args.config == "c.yaml"
    assert shortcut_overrides(args, SHORTCUTS) == ["seed=3", "data.name=mnist5k", "data.root=/d"]
    assert shortcut_overrides(_parse([]), SHORTCUTS) == []


def test_unknown_flags_are_refused() -> None:
    with pytest.raises(SystemExit):
        _parse(["--width", "8"])
