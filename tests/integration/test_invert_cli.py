"""Tiny end-to-end runs of ``poisonlab invert``: artifacts, grid, results and resume without recomputation."""

from __future__ import annotations

import json

import pytest

from poisonlab.attacks.federated.inversion import Reconstruction
from poisonlab.cli import main


def test_invert_command_end_to_end(tmp_path, capsys) -> None:
    work = tmp_path / "w"
    argv = [
        "invert",
        "--dataset",
        "photos",
        "--model",
        "convnet",
        "--width",
        "4",
        "--batch-size",
        "2",
        "--trials",
        "2",
        "--restarts",
        "2",
        "--iterations",
        "2",
        "--threads",
        "1",
        "--quiet",
        "--workdir",
        str(work),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "PSNR" in out and "labels recovered  1.000" in out
    row = json.loads((work / "results.json").read_text())
    assert row["metrics"]["images"] == 4 and (work / "report" / "grid.png").stat().st_size > 1000
    rec = Reconstruction.load(work / "reconstructions" / "update-001")
    assert rec.images.shape == (2, 3, 32, 32) and 0 <= rec.images.min() and rec.images.max() <= 1
    assert len(rec.meta["sample_ids"]) == 2


def test_invert_analytic_on_an_mlp_is_exact(tmp_path, capsys) -> None:
    argv = [
        "invert",
        "--dataset",
        "digits",
        "--model",
        "mlp",
        "--width",
        "16",
        "--attack",
        "analytic",
        "--trials",
        "3",
        "--quiet",
        "--workdir",
        str(tmp_path / "a"),
    ]
    assert main(argv) == 0
    row = json.loads((tmp_path / "a" / "results.json").read_text())
    assert min(row["per_update"][i]["psnr"][0] for i in range(3)) > 60


def test_invert_bad_flag_value_exits_2(tmp_path, capsys) -> None:
    assert main(["invert", "--restarts", "0", "--workdir", str(tmp_path)]) == 2
    assert "invert.restarts" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["invert"])  # --workdir is required
