"""``poisonlab diagnose`` and ``poisonlab diagnose-study`` end to end on tiny models, and their one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from poisonlab.cli import main
from poisonlab.config import load_config
from poisonlab.data import load_dataset
from poisonlab.diagnostics.study_config import load_study_config
from poisonlab.experiments.train import build_for
from poisonlab.io import save_artifact
from poisonlab.rng import SeedTree
from poisonlab.training.trainer import Trainer


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workdir laid out as ``poisonlab train`` leaves it (model/ artifact with its config), without the report."""
    work = tmp_path_factory.mktemp("train")
    config = load_config(overrides=["data.name=digits", "model.name=mlp", "model.width=16", "train.epochs=2",
                                     "train.lr=0.05", "runtime.device=cpu"])  # fmt: skip
    splits = load_dataset("digits")
    model = build_for(config, splits, SeedTree(0), torch.device("cpu"))
    Trainer(model, splits.train, config.train, SeedTree(0)).fit()
    save_artifact(work / "model", "model", dict(model.state_dict()), {"config": config.model_dump(mode="json")})
    return work


def test_diagnose_against_the_initialisation(trained: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "diag"
    code = main(["diagnose", "--checkpoint", str(trained), "--compare", "init", "--points", "3", "--path-size", "60",
                 "--out", str(out), "--threads", "1"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    result = json.loads((out / "result.json").read_text())
    assert (out / "index.html").read_text().count("data:image/png") == 3
    a, b = result["models"]["A"], result["models"]["B"]
    assert [r["kind"] for r in a["layers"]] == ["linear"] * 3
    assert a["summary"]["total_l2"] != b["summary"]["total_l2"]
    it = result["interpolation"]
    assert it["alphas"] == [0.0, 0.5, 1.0] and it["bn"] == "none"
    # the trained model is A (alpha 0), its initialisation is B (alpha 1); no BatchNorm, so the ends are their own
    # losses (on the first 60 samples of each split, as the path is)
    for split in ("train", "test"):
        assert it["splits"][split]["loss"][0] == pytest.approx(it["endpoints"][split]["a"]["loss"], rel=1e-5)
        assert it["splits"][split]["loss"][-1] == pytest.approx(it["endpoints"][split]["b"]["loss"], rel=1e-5)
    assert it["splits"]["test"]["loss"][0] < it["splits"]["test"]["loss"][-1]
    assert "line A -> B" in capsys.readouterr().out


def test_diagnose_study_tiny_recipe_and_resume(tmp_path: Path, capsys) -> None:
    recipe = {
        "seed": 0,
        "data": {"name": "digits"},
        "model": {"name": "mlp", "width": 16},
        "train": {"epochs": 2, "lr": 0.05, "batch_size": 64, "weight_decay": 0.0},
        "runtime": {"device": "cpu", "threads": 1},
        "study": {
            "kind": "norm",
            "seeds": 2,
            "arms": [
                {"name": "plain"},
                {"name": "wd", "weight_decay": 0.01},
                {"name": "bias", "norm_bias": {"weight": 0.01, "target_ratio": 4.0}},
                {"name": "low", "rank_projection": {"threshold": 0.3, "at_epochs": [1], "include_linear": True}},
            ],
            "robust": {"eps": 0.1, "steps": 2, "n": 30},
        },
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(recipe))
    work = tmp_path / "w"
    assert main(["diagnose-study", "--recipe", str(path), "--workdir", str(work), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "| plain |" in out and "| bias |" in out
    result = json.loads((work / "report" / "result.json").read_text())
    arms = result["summary"]["arms"]
    assert arms["plain"]["seeds"] == [0, 1] and len(arms["wd"]["test_accuracy"]["values"]) == 2
    assert "test_accuracy_minus_plain" in arms["wd"] and "robust_pgd" in arms["plain"]
    assert arms["bias"]["total_l2"]["mean"] > arms["wd"]["total_l2"]["mean"]  # pulled up vs shrunk
    assert arms["low"]["mean_effective_rank"]["mean"] < arms["plain"]["mean_effective_rank"]["mean"]
    assert (work / "models" / "bias-seed1" / "manifest.json").is_file()
    # a rerun trains nothing and reports the same numbers
    assert main(["diagnose-study", "--recipe", str(path), "--workdir", str(work), "--quiet"]) == 0
    again = json.loads((work / "report" / "result.json").read_text())
    assert again["summary"] == result["summary"]


def test_shipped_recipes_load() -> None:
    for name in ("rank", "norm"):
        cfg = load_study_config(name)
        assert cfg.study.seeds >= 3 and cfg.runtime.threads == 1
    assert load_study_config("recipes/diagnose-rank-convnet.yaml").model.width == 16


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["diagnose", "--checkpoint", "/nonexistent/x"], "not a model artifact"),
        (["diagnose-study", "--recipe", "nope", "--workdir", "/tmp/x"], "--recipe"),
        (["diagnose-study", "--recipe", "rank", "--workdir", "/tmp/x", "--set", "study.seeds=0"], "study.seeds"),
        (["diagnose-study", "--recipe", "norm", "--workdir", "/tmp/x", "--set", "study.arms=[]"], "study.arms"),
    ],
)
def test_bad_input_is_one_line_exit_2(argv: list[str], needle: str, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("poisonlab: error: ") and err.count("\n") == 1 and needle in err, err


def test_diagnose_points_validation(trained: Path, capsys) -> None:
    assert main(["diagnose", "--checkpoint", str(trained), "--compare", "init", "--points", "1"]) == 2
    assert "--points" in capsys.readouterr().err


def test_study_trial_resumes_bit_identically_after_a_stop(tmp_path: Path) -> None:
    from poisonlab.config import build
    from poisonlab.diagnostics.study import run_trial
    from poisonlab.diagnostics.study_config import DiagnoseStudyConfig
    from poisonlab.errors import Interrupted
    from poisonlab.io import load_artifact

    cfg = build(
        DiagnoseStudyConfig,
        {
            "data": {"name": "digits"},
            "model": {"name": "mlp", "width": 16},
            "train": {"epochs": 3, "lr": 0.05, "batch_size": 128, "weight_decay": 0.0},
            "runtime": {"device": "cpu"},
            "study": {
                "kind": "norm",
                "arms": [{"name": "nb", "norm_bias": {"weight": 0.05, "target_ratio": 3.0},
                          "rank_projection": {"threshold": 0.2, "at_epochs": [0, 1], "include_linear": True}}],
                "robust": None,
            },
        },
    )  # fmt: skip
    splits = load_dataset("digits")
    arm = cfg.study.arms[0]
    calls = {"n": 0}

    def stop_once() -> bool:
        calls["n"] += 1
        return calls["n"] == 15  # mid second epoch

    with pytest.raises(Interrupted):
        run_trial(cfg, arm, 0, splits, tmp_path / "a", torch.device("cpu"), should_stop=stop_once)
    resumed = run_trial(cfg, arm, 0, splits, tmp_path / "a", torch.device("cpu"))
    fresh = run_trial(cfg, arm, 0, splits, tmp_path / "b", torch.device("cpu"))
    ta, _ = load_artifact(tmp_path / "a" / "models" / "nb-seed0", "model")
    tb, _ = load_artifact(tmp_path / "b" / "models" / "nb-seed0", "model")
    assert all(torch.equal(ta[k], tb[k]) for k in tb)
    assert resumed["meta"]["hooks"] == fresh["meta"]["hooks"]
    assert resumed["meta"]["hooks"][0]["applied"] == [0, 1]


def test_backdoor_style_workdir_loads_with_the_config_yaml_above(trained: Path, tmp_path: Path) -> None:
    """victims/seedN artifacts carry only the seed; the config (with a backdoor section) is WORKDIR/config.yaml."""
    from poisonlab.diagnostics.loading import load_model
    from poisonlab.io import load_artifact

    tensors, meta = load_artifact(trained / "model", "model")
    work = tmp_path / "bd"
    for seed in (3, 4):
        save_artifact(work / "victims" / f"seed{seed}", "model", tensors, {"config_hash": "x", "seed": seed})
    cfg = dict(meta["config"], backdoor={"mode": "data"})
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    loaded = load_model(work)
    assert loaded.seed == 3 and "first of 2" in loaded.source
    assert all(torch.equal(v, tensors[k]) for k, v in loaded.model.state_dict().items())
