"""Victim scenarios (from scratch, fine-tune, transfer) and end-to-end independent trials."""

from __future__ import annotations

import pytest
import torch

from poisonlab.attacks.poisoning import gradient_matching, trials
from poisonlab.attacks.poisoning.config import load_poisoning_config
from poisonlab.attacks.poisoning.scenarios import Scenario, last_linear
from poisonlab.cli import main
from poisonlab.config import TrainConfig
from poisonlab.experiments.store import ResultStore
from poisonlab.models import build_model
from poisonlab.rng import SeedTree
from poisonlab.training.trainer import Trainer


def _convnet(seed: int, data) -> torch.nn.Module:
    return build_model("convnet", data.shape, data.num_classes, torch.Generator().manual_seed(seed), width=4)


def test_transfer_trains_only_a_fresh_head_and_keeps_batch_norm_statistics(colour_small) -> None:
    pre = _convnet(0, colour_small)
    Trainer(pre, colour_small, TrainConfig(epochs=1, batch_size=64, lr=0.05), SeedTree(0)).fit()
    weights = {k: v.clone() for k, v in pre.state_dict().items()}
    scenario = Scenario("transfer", weights)
    victim = _convnet(1, colour_small)
    hooks = scenario.prepare(victim, SeedTree(5))
    head = last_linear(victim)
    assert not torch.equal(head.weight, last_linear(pre).weight)  # re-initialised from the victim's seed
    assert [p for p in victim.parameters() if p.requires_grad] == list(head.parameters())
    Trainer(victim, colour_small, TrainConfig(epochs=1, batch_size=64, lr=0.05), SeedTree(5), hooks=hooks).fit()
    after = victim.state_dict()
    head_keys = {k for k in after if k.endswith(("head.weight", "head.bias"))}
    assert head_keys and all(torch.equal(after[k], weights[k]) for k in after if k not in head_keys)
    assert not torch.equal(after[next(iter(head_keys))], weights[next(iter(head_keys))])
    surrogate = scenario.surrogate(_convnet(2, colour_small))
    assert gradient_matching.parameters_of(surrogate) == list(last_linear(surrogate).parameters())


def test_fine_tune_starts_from_the_pretrained_model_and_trains_everything(colour_small) -> None:
    pre = _convnet(0, colour_small)
    weights = {k: v.clone() for k, v in pre.state_dict().items()}
    victim = _convnet(1, colour_small)
    assert Scenario("fine-tune", weights).prepare(victim, SeedTree(1)) == []
    assert all(torch.equal(victim.state_dict()[k], v) for k, v in weights.items())
    assert all(p.requires_grad for p in victim.parameters())
    with pytest.raises(ValueError):
        Scenario("transfer")
    with pytest.raises(ValueError):
        Scenario("sideways", weights)


TINY = [
    "--dataset", "digits", "--model", "mlp", "--width", "16", "--epochs", "1", "--eps", "16/255",
    "--poison-count", "4", "--restarts", "1", "--steps", "2", "--device", "cpu", "--set", "train.lr=0.05",
]  # fmt: skip


@pytest.mark.parametrize("recipe_scenario", [("gradient-matching", "from-scratch"), ("gradient-matching", "transfer")])
def test_trials_run_end_to_end_one_row_each_and_resume(tmp_path, capsys, monkeypatch, recipe_scenario) -> None:
    recipe, scenario = recipe_scenario
    work = tmp_path / "t"
    argv = ["trials", *TINY, "--recipe", recipe, "--scenario", scenario, "--trials", "2", "--victims", "1"]
    assert main([*argv, "--workdir", str(work), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "poisoned: success" in out and "control: success" in out and "clean: success" in out
    assert "target margin shift past noise" in out
    assert "Target margin: poisons against the noise control" in (work / "report" / "index.html").read_text()
    rows = ResultStore(work / "results.sqlite").rows(trials.KIND)
    assert sorted(r["trial_key"] for r in rows) == ["trial=0", "trial=1"]
    assert {r["seed"] for r in rows} == {0, 1}
    assert all(r["metrics"]["poisoned_n"] == 1 and 0 <= r["metrics"]["craft_loss"] <= 2 for r in rows)
    assert (work / "report" / "index.html").is_file() and (work / "trial-001" / "poisons" / "manifest.json").is_file()
    if scenario == "transfer":
        assert (work / "pretrained" / "surrogate-0" / "model").is_dir()  # one public model shared by the trials
        assert not (work / "trial-000" / "pretrained").exists()

    def boom(*a, **k):
        raise AssertionError("a recorded trial was rerun")

    monkeypatch.setattr(trials, "craft_experiment", boom)
    assert main([*argv, "--workdir", str(work), "--quiet"]) == 0  # every trial recorded: nothing recomputed


def test_margin_shift_is_the_paired_difference_of_the_arms_margins() -> None:
    from poisonlab.metrics.intervals import t_interval

    rows = [
        {"poisoned_successes": s, "poisoned_n": 2, "poisoned_accuracy": 0.97, "poisoned_margin": p,
         "control_successes": 0, "control_n": 2, "control_accuracy": 0.975, "control_margin": c, "craft_loss": 0.1}
        for s, p, c in [(0, -11.2, -18.3), (0, -2.8, -6.8), (1, -0.2, -3.0)]
    ]  # fmt: skip
    shift = trials.summarize_trials(rows)["margin_shift_vs_control"]
    mean, lo, hi = t_interval([7.1, 4.0, 2.8])
    assert shift["trials"] == 3 and shift["mean"] == pytest.approx(mean) and shift["mean"] == pytest.approx(4.633333)
    assert (shift["lo"], shift["hi"]) == pytest.approx((lo, hi)) and lo < 0 < mean < hi  # 3 trials: wide
    for r in rows:
        del r["control_margin"]  # rows written before margins were recorded: no shift, no crash
    assert "margin_shift_vs_control" not in trials.summarize_trials(rows)


def test_trials_bad_input_is_one_line(tmp_path, capsys) -> None:
    assert main(["trials", *TINY, "--trials", "0", "--workdir", str(tmp_path / "w"), "--quiet"]) == 2
    assert "--trials" in capsys.readouterr().err
    cfg = load_poisoning_config(None, ["poison.scenario=transfer", "poison.recipe=feature-collision"])
    assert cfg.poison.scenario == "transfer" and trials.trial_config(cfg, 3).seed == cfg.seed + 3


def test_victim_overrides_train_the_victims_differently_and_reuse_the_poisons(tmp_path, capsys, monkeypatch) -> None:
    import shutil

    from poisonlab.attacks.poisoning import experiment

    work = tmp_path / "t"
    argv = ["trials", *TINY, "--trials", "1", "--victims", "1", "--no-clean", "--workdir", str(work), "--quiet"]
    assert main(argv) == 0
    crafted = (work / "trial-000" / "poisons" / "tensors.safetensors").read_bytes()
    calls = []
    real = experiment.evaluate_poisons_experiment

    def spy(*a, **k):
        calls.append(k.get("victim_overrides"))
        return real(*a, **k)

    monkeypatch.setattr(trials, "evaluate_poisons_experiment", spy)
    assert main([*argv, "--victim-set", "train.epochs=3"]) == 0
    assert calls == [["train.epochs=3"]]  # the grey-box victims are a run of their own ...
    assert (work / "trial-000" / "poisons" / "tensors.safetensors").read_bytes() == crafted  # ... on the same poisons
    rows = ResultStore(work / "results.sqlite").rows(trials.KIND)
    assert len(rows) == 2 and len({r["config_hash"] for r in rows}) == 2
    assert any((work / f"report-victims-{r['config_hash']}" / "index.html").is_file() for r in rows)
    # oracle: the same as evaluating a copy whose recipe itself says 3 epochs
    copy = tmp_path / "copy"
    shutil.copytree(work / "trial-000", copy)
    (copy / "results.sqlite").unlink()
    text = (copy / "config.yaml").read_text()
    assert "  epochs: 1\n" in text
    (copy / "config.yaml").write_text(text.replace("  epochs: 1\n", "  epochs: 3\n"))
    edited = real(copy, 1, clean=False)
    again = real(work / "trial-000", 1, clean=False, victim_overrides=["train.epochs=3"])
    assert edited["results"] == again["results"]
    default = real(work / "trial-000", 1, clean=False)
    assert default["results"] != again["results"]


def test_victim_overrides_bad_input_is_one_line(tmp_path, capsys) -> None:
    work = tmp_path / "t"
    base = ["trials", *TINY, "--trials", "1", "--victims", "1", "--workdir", str(work), "--quiet"]
    assert main([*base, "--victim-set", "poison.eps=1/255"]) == 2
    assert "only train.* and model.* describe the victim" in capsys.readouterr().err
    assert not work.exists()  # refused before any work
    assert main([*base, "--scenario", "transfer", "--victim-set", "train.epochs=2"]) == 2
    assert "victims start from the public model" in capsys.readouterr().err
    assert main([*base, "--victim-set", "train.epochs=0"]) == 2
    assert "train.epochs" in capsys.readouterr().err
