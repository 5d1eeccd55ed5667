"""End to end: ``poisonlab mia`` on digits with tiny MLPs writes the result row, JSON and plot, a rerun reuses
the saved models and scores and gives the same numbers, bad input exits 2 naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from poisonlab.cli import main
from poisonlab.experiments.store import ResultStore

ARGS = [
    "mia", "--dataset", "digits", "--model", "mlp", "--width", "16", "--epochs", "2", "--shadows", "4",
    "--poison-targets", "10", "--replicas", "4", "--n-boot", "20", "--strategy", "sequential",
    "--threads", "1", "--quiet",
]  # fmt: skip


def test_mia_command_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*ARGS, "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "TPR@0.1%" in out and "Truth Serum on the targets" in out and "accuracy on other held-out" in out
    row = json.loads((tmp_path / "results.json").read_text())
    m = row["metrics"]
    assert set(m) == {"clean", "poisoned"} and set(m["poisoned"]) == {"targets", "others"}
    lira = m["clean"]["all"]["lira-online-fixed"]
    assert lira["n_members"] + lira["n_nonmembers"] == 4 * 1797
    assert m["poisoned"]["targets"]["global"]["n_members"] == 20  # each target IN for 2 of 4 models
    assert (tmp_path / "report" / "roc.png").read_bytes()[:4] == b"\x89PNG"
    assert len(ResultStore(tmp_path / "results.sqlite").rows("mia")) == 1
    assert len(list((tmp_path).glob("clean-*/model-*"))) == 4
    # rerun: models and scores reloaded, identical metrics; the store keeps its one row
    assert main([*ARGS, "--workdir", str(tmp_path)]) == 0
    again = json.loads((tmp_path / "results.json").read_text())
    assert again["metrics"] == row["metrics"]
    assert again["timings"]["clean_train_s"] < row["timings"]["clean_train_s"]


def test_mia_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["mia", "--shadows", "2", "--workdir", str(tmp_path)]) == 2
    assert "mia.shadows" in capsys.readouterr().err
    assert main(["mia", "--dataset", "digits", "--untargeted-share", "0.5", "--workdir", str(tmp_path)]) == 2
    assert "universe=train" in capsys.readouterr().err


def test_mia_recipe_loads() -> None:
    from poisonlab.attacks.inference.mia_config import load_mia_config

    path = Path(__file__).resolve().parents[2] / "recipes" / "mia-mnist5k.yaml"
    cfg = load_mia_config(path, ["mia.poison_targets=250"])
    assert cfg.mia.shadows == 16 and cfg.mia.replicas == 8 and cfg.model.name == "convnet"
