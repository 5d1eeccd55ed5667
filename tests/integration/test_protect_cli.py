"""End to end through the CLI: protect (offline and online), evaluate-protection (with resume and a defense),
and one-line errors with exit code 2."""

from __future__ import annotations

import pytest

from poisonlab.attacks.poisoning import PoisonSet
from poisonlab.cli import main
from poisonlab.data import load_dataset
from poisonlab.experiments.store import ResultStore

TINY = ["--dataset", "digits", "--model", "mlp", "--width", "16", "--epochs", "1", "--set", "train.lr=0.05",
        "--eps", "32/255", "--steps", "2", "--pbatch", "256", "--device", "cpu", "--quiet"]  # fmt: skip


@pytest.mark.slow
def test_protect_then_evaluate_with_resume(tmp_path, capsys) -> None:
    work = tmp_path / "w"
    assert main(["protect", *TINY, "--fraction", "0.25", "--export-images", "--workdir", str(work)]) == 0
    out = capsys.readouterr().out
    assert "protected samples" in out and "360 (fraction 0.25)" in out
    train = load_dataset("digits").train
    ps = PoisonSet.load(work / "protected", train)  # budget re-checked on load
    assert len(ps) == 360 and ps.recipe == "availability"
    assert (work / "report" / "protected.png").read_bytes()[:4] == b"\x89PNG"
    assert len(list((work / "images").glob("*.png"))) == 360
    args = ["evaluate-protection", str(work), "--victims", "2", "--models", "mlp:16@0.05", "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "mlp:16@0.05: protected" in out and "drop_noise" in out
    rows = ResultStore(work / "results.sqlite").rows("protect-victim")
    assert len(rows) == 6
    assert main(args) == 0  # everything is in the store: nothing retrained
    assert len(ResultStore(work / "results.sqlite").rows("protect-victim")) == 6
    capsys.readouterr()
    assert main([*args, "--defense", "mixup", "--no-noise"]) == 0  # a victim that defends itself
    assert "defense mixup" in capsys.readouterr().out
    assert len(ResultStore(work / "results.sqlite").rows("protect-victim")) == 10


@pytest.mark.slow
def test_online_protect_through_the_cli(tmp_path, capsys) -> None:
    work = tmp_path / "o"
    args = ["protect", *TINY, "--fraction", "0.1", "--online", "--release-batches", "2", "--workdir", str(work)]
    assert main(args) == 0
    assert "online, 2 release batches" in capsys.readouterr().out
    assert (work / "online" / "release-1").is_dir() and (work / "online" / "stage-1" / "surrogate-0").is_dir()
    assert main(args) == 0  # rerun: every stage is loaded, same release
    first = PoisonSet.load(work / "online" / "release-0")
    assert first.poison_ids.numel() == 72  # 144 ids in 2 release batches


@pytest.mark.parametrize(
    ("extra", "field"),
    [(["--eps", "8"], "protect.eps"), (["--fraction", "0"], "protect.fraction"),
     (["--release-batches", "2"], "protect"), (["--set", "protect.nope=1"], "protect.nope")],
)  # fmt: skip
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, extra, field) -> None:
    assert main(["protect", *TINY, *extra, "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("poisonlab: error: ") and err.count("\n") == 1 and field in err


def test_evaluate_protection_needs_a_protected_workdir(tmp_path, capsys) -> None:
    assert main(["evaluate-protection", str(tmp_path), "--victims", "1"]) == 2
    assert "poisonlab protect" in capsys.readouterr().err
    assert main(["evaluate-protection", str(tmp_path / "missing"), "--victims", "1"]) == 2
