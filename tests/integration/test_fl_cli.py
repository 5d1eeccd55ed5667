"""End to end: ``poisonlab fl`` on a tiny federation (digits, MLP) writes per-round results, JSON and a plot."""

from __future__ import annotations

import json

import pytest

from poisonlab.cli import main
from poisonlab.experiments.store import ResultStore

TINY = [
    "--dataset", "digits", "--model", "mlp", "--set", "model.width=16", "--clients", "10", "--per-round", "4",
    "--pretrain-rounds", "2", "--rounds", "3", "--attack-round", "2", "--set", "attack.samples=64",
    "--set", "attack.epochs=3", "--set", "fl.local.batch_size=16", "--norm-bound", "0.5", "--gamma", "50", "--quiet",
]  # fmt: skip


def test_fl_command_attack_against_detector(tmp_path, capsys) -> None:
    work = tmp_path / "w"
    args = ["fl", *TINY, "--attack", "model-replacement", "--aggregator", "norm-detector", "--workdir", str(work)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "backdoor accuracy after attack" in out
    row = json.loads((work / "report" / "result.json").read_text())
    assert [h["round"] for h in row["history"]] == [1, 2, 3]
    attack_round = row["history"][1]
    assert attack_round["participants"][0] == 0 and "0" in attack_round["attack_info"]
    assert row["summary"]["attacker_flagged"] is True  # 50 times a trained update is far above S
    assert (work / "report" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    store = ResultStore(work / "results.sqlite")
    assert len(store.rows("fl-round")) == 3 and len(store.rows("fl")) == 1


@pytest.mark.slow
def test_constrain_and_scale_arm_reuses_pretraining_and_passes(tmp_path) -> None:
    work = tmp_path / "w"
    for attack in ("model-replacement", "constrain-and-scale"):
        assert main(["fl", *TINY, "--attack", attack, "--aggregator", "norm-detector", "--workdir", str(work)]) == 0
        row = json.loads((work / "report" / "result.json").read_text())
        if attack == "model-replacement":
            first = row
    assert row["pretrain"] == first["pretrain"]  # the cached pretrained model of the first arm
    assert row["summary"]["attacker_flagged"] is False and row["summary"]["attacker_accepted"] is True
    assert row["summary"]["attack_info"]["submitted_norm"] <= 0.5 * (1 + 1e-5)


def test_fl_command_rejects_bad_input(tmp_path, capsys) -> None:
    assert main(["fl", *TINY, "--per-round", "20", "--workdir", str(tmp_path)]) == 2
    assert "per_round" in capsys.readouterr().err
    assert main(["fl", *TINY, "--model", "convnet", "--workdir", str(tmp_path)]) == 2
    assert "model" in capsys.readouterr().err
