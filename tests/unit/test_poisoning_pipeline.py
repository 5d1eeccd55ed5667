"""Poisoning pipeline: config, target/poison selection, PoisonSet artifact, evaluation, experiment and CLI bodies."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from torch import nn

from poisonlab.attacks.poisoning import (
    PoisonSet,
    candidate_positions,
    choose_poisons,
    choose_targets,
    craft_config,
    evaluate_poisons,
    per_sample_grad_norms,
    random_noise_control,
    stagger_epochs,
)
from poisonlab.attacks.poisoning.commands import (
    add_craft_parser,
    add_evaluate_parser,
    run_craft,
    run_evaluate_poisons,
)
from poisonlab.budget import PoisonBudget
from poisonlab.config import ModelConfig, TrainConfig
from poisonlab.data import Dataset, Splits, load_dataset
from poisonlab.errors import CheckpointError, ConfigError, DataError
from poisonlab.models import build_model
from poisonlab.rng import SeedTree


def test_config_units_and_errors_name_the_field() -> None:
    assert craft_config(eps="16/255").eps == pytest.approx(16 / 255)
    assert craft_config().restarts == 8 and craft_config().steps == 250 and craft_config().augment
    with pytest.raises(ConfigError, match=r"poison\.eps: .*16/255"):
        craft_config(eps=16)
    with pytest.raises(ConfigError, match=r"poison\.steps"):
        craft_config(steps=0)
    with pytest.raises(ConfigError, match=r"poison\.colour: unknown key"):
        craft_config(colour=1)
    with pytest.raises(ConfigError, match="stagger needs"):
        craft_config(stagger=True)
    with pytest.raises(ConfigError, match="retrain_every is for recipe gradient-matching"):
        craft_config(recipe="metapoison", retrain_every=50)
    with pytest.raises(ConfigError, match="retrain_every is for recipe gradient-matching"):
        craft_config(scenario="transfer", retrain_every=50)
    assert craft_config(poison_count=7).poison_budget.resolve(100) == 7
    assert stagger_epochs(5, 3, True) == [0, 1, 2] and stagger_epochs(5, 2, False) == [5, 5]
    # the reference's alternatives, int(np.linspace(0, epochs, E)) and int(np.linspace(0, epochs, E + 2)[1:-1])
    assert stagger_epochs(6, 4, "first") == [0, 1, 2, 3] and stagger_epochs(2, 4, "first") == [0, 1, 2, 2]
    assert stagger_epochs(6, 4, "spread") == [0, 2, 4, 6] and stagger_epochs(40, 4, "spread") == [0, 13, 26, 40]
    assert stagger_epochs(6, 4, "inbetween") == [1, 2, 3, 4] and stagger_epochs(40, 4, "inbetween") == [8, 16, 24, 32]
    assert craft_config(ensemble=4, stagger="spread").stagger == "spread"
    assert craft_config(ensemble=4, stagger=True).model_dump(mode="json")["stagger"] is True  # old runs pool as before
    with pytest.raises(ConfigError, match=r"poison\.stagger: .*expected true, false, first, spread or inbetween"):
        craft_config(ensemble=4, stagger="wide")


def test_choose_targets(digits_small: Dataset) -> None:
    ids, adv = choose_targets(digits_small, SeedTree(0).generator("t"), count=2)
    labels = digits_small.labels[digits_small.positions_of(ids)]
    assert len(ids) == 2 and labels.unique().numel() == 1 and adv != int(labels[0])
    again = choose_targets(digits_small, SeedTree(0).generator("t"), count=2)
    assert torch.equal(again[0], ids) and again[1] == adv
    given, adv2 = choose_targets(
        digits_small, SeedTree(0).generator("t"), [int(ids[0])], adv_class=4 if adv != 4 else 5
    )
    assert given.tolist() == [int(ids[0])] and adv2 in (4, 5)
    with pytest.raises(DataError, match="unknown sample ids"):
        choose_targets(digits_small, SeedTree(0).generator("t"), [10**9])
    with pytest.raises(ConfigError, match="already the true class"):
        choose_targets(digits_small, SeedTree(0).generator("t"), [int(ids[0])], adv_class=int(labels[0]))


@pytest.mark.parametrize("threat", ["single-class", "third-party", "random-subset"])
def test_threat_models_and_exact_counts(digits_small: Dataset, threat: str) -> None:
    g = SeedTree(0)
    cand, cls = candidate_positions(digits_small, threat, [5], 3, g.generator("c"))
    labels = digits_small.labels[cand]
    if threat == "single-class":
        assert cls == 3 and bool((labels == 3).all())
    elif threat == "third-party":
        assert cls not in (3, 5) and bool((labels == cls).all())
    else:
        assert cls is None and len(cand) == len(digits_small)
    ids = choose_poisons(digits_small, PoisonBudget(count=7), cand, g.generator("s"))
    assert len(ids) == 7 and ids.unique().numel() == 7 and bool(torch.isin(ids, digits_small.ids[cand]).all())
    with pytest.raises(ConfigError, match="budget"):
        choose_poisons(digits_small, PoisonBudget(count=len(cand) + 1), cand, g.generator("s"))


def test_gradient_norm_selection_matches_a_per_sample_loop(colour_small: Dataset) -> None:
    model = build_model("convnet", colour_small.shape, 10, SeedTree(0).generator("init"), width=4).eval()
    x, y = colour_small.images[:10], colour_small.labels[:10]
    norms = per_sample_grad_norms(model, x, y, chunk=4)
    for i in range(10):
        loss = nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1])
        g = torch.autograd.grad(loss, list(model.parameters()))
        assert float(norms[i]) == pytest.approx(float(torch.cat([t.flatten() for t in g]).norm()), rel=1e-4)
    cand = torch.arange(10)
    ids = choose_poisons(colour_small, PoisonBudget(count=3), cand, torch.Generator(), "gradient-norm", [model])
    assert ids.tolist() == sorted(colour_small.ids[torch.topk(norms, 3).indices].tolist())


def _poisons(data: Dataset, eps: float = 8 / 255) -> PoisonSet:
    ids = data.ids[:5]
    x = data.images[:5]
    delta = ((torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1) * eps).clamp(-x, 1 - x)
    return PoisonSet(ids, delta, data.ids[-1:], 2, eps, "gradient-matching", {"root": 0}, (0.5, 0.4))


def test_poison_set_artifact_round_trip_and_budget_recheck(digits_small: Dataset, tmp_path) -> None:
    ps = _poisons(digits_small)
    ps.save(tmp_path / "p")
    back = PoisonSet.load(tmp_path / "p", digits_small)
    assert torch.equal(back.deltas, ps.deltas) and back.restart_losses == ps.restart_losses and back.adv_class == 2
    manifest = json.loads((tmp_path / "p" / "manifest.json").read_text())
    manifest["meta"]["eps"] = 1 / 255  # a tampered (smaller) budget no longer holds
    (tmp_path / "p" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="exceeds eps"):
        PoisonSet.load(tmp_path / "p")
    assert ps.export_png(tmp_path / "grid.png", digits_small).startswith(b"\x89PNG")
    view = ps.to_view(digits_small)
    assert view.changed_ids().tolist() == sorted(ps.poison_ids.tolist())


def test_evaluate_poisons_runs_victims_and_control(digits_small: Dataset) -> None:
    splits = Splits(digits_small.subset(torch.arange(200)), digits_small.subset(torch.arange(200, 240)))
    ps = _poisons(splits.train)
    ps = PoisonSet(ps.poison_ids, ps.deltas, splits.test.ids[:2], 2, ps.eps, ps.recipe)
    control = random_noise_control(ps, splits.train, torch.Generator().manual_seed(0))
    control.check(splits.train)
    assert torch.equal(control.poison_ids, ps.poison_ids) and not torch.equal(control.deltas, ps.deltas)
    seen = []
    out = evaluate_poisons(
        ps, splits, ModelConfig(name="mlp", width=16), TrainConfig(epochs=1, batch_size=64, lr=0.05), 2,
        SeedTree(0), on_result=seen.append,
    )  # fmt: skip
    assert len(out["results"]) == 4 and len(seen) == 4
    assert set(out["summary"]) == {"poisoned", "control"} and out["summary"]["poisoned"]["success"]["n"] == 4
    again = evaluate_poisons(
        ps, splits, ModelConfig(name="mlp", width=16), TrainConfig(epochs=1), 2, SeedTree(0),
        completed={(r.arm, r.victim): r for r in seen}, on_result=lambda r: pytest.fail("retrained"),
    )  # fmt: skip
    assert again["summary"] == out["summary"]


def test_craft_and_evaluate_commands_end_to_end(tmp_path, capsys) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    add_craft_parser(sub)
    add_evaluate_parser(sub)
    work = tmp_path / "w"
    test = load_dataset("digits").test
    target = int(test.ids[test.labels != 3][0])
    args = parser.parse_args(
        ["craft", "--dataset", "digits", "--model", "mlp", "--width", "16", "--epochs", "1", "--eps", "16/255",
         "--poison-count", "6", "--restarts", "2", "--steps", "2", "--adv-class", "3", "--device", "cpu",
         "--target-id", str(target),
         "--set", "train.lr=0.05", "--workdir", str(work), "--quiet"]
    )  # fmt: skip
    assert run_craft(args) == 0
    assert (work / "poisons" / "manifest.json").is_file() and (work / "report" / "index.html").is_file()
    ps = PoisonSet.load(work / "poisons")
    assert len(ps) == 6 and ps.adv_class == 3 and len(ps.restart_losses) == 2 and ps.target_ids.tolist() == [target]
    assert run_craft(args) == 0  # finished run: surrogates and crafting state are reused
    assert torch.equal(PoisonSet.load(work / "poisons").deltas, ps.deltas)
    ev = parser.parse_args(["evaluate-poisons", str(work), "--victims", "1", "--quiet"])
    assert run_evaluate_poisons(ev) == 0
    out = capsys.readouterr().out
    assert "poisoned: success" in out and "control: success" in out
    grey = ["evaluate-poisons", str(work), "--victims", "1", "--no-clean", "--victim-set", "train.epochs=2", "--quiet"]
    assert run_evaluate_poisons(parser.parse_args(grey)) == 0
    assert "report/evaluation-" in capsys.readouterr().out  # its own report; the default one is kept
    assert (work / "report" / "evaluation.html").is_file()


def test_adv_margin_known_answer() -> None:
    from poisonlab.attacks.poisoning.evaluate import adv_margin

    logits = torch.tensor([[1.0, 3.0, 2.0], [5.0, 0.0, -1.0]])
    assert adv_margin(logits, 1).tolist() == [1.0, -5.0]  # 3 - 2 (success); 0 - 5 (far from class 1)


def test_poisoned_retrainer_trains_the_ensemble_on_the_poisoned_set(digits_small: Dataset) -> None:
    from poisonlab.attacks.poisoning.config import load_poisoning_config
    from poisonlab.attacks.poisoning.experiment import poisoned_retrainer
    from poisonlab.attacks.poisoning.surrogates import train_surrogates
    from poisonlab.data.poisoned import PoisonedDataset

    config = load_poisoning_config(
        None,
        ["data.name=digits", "model.name=mlp", "model.width=16", "model.norm=none", "train.epochs=2",
         "train.batch_size=32", "train.lr=0.05", "poison.ensemble=3", "poison.stagger=true",
         "poison.retrain_every=5"],
    )  # fmt: skip
    ids = digits_small.ids[digits_small.labels == 3][:6]
    delta = (0.5 - digits_small.images[digits_small.positions_of(ids)]).clamp(-0.25, 0.25)
    retrain = poisoned_retrainer(config, digits_small, ids, "cpu", None)
    models = retrain(delta, SeedTree(7))
    assert len(models) == 3 and not any(m.training for m in models)
    view = PoisonedDataset(digits_small, delta_ids=ids, deltas=delta).materialize()
    oracle = train_surrogates(config.model, config.train, digits_small, SeedTree(7), 3, True, fit_on=view)
    clean = retrain(torch.zeros_like(delta), SeedTree(7))
    for m, o in zip(models, oracle, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), o.state_dict().values()))
    # member 0 is the untrained init (staggered); the trained members saw the perturbed images
    assert all(torch.equal(a, b) for a, b in zip(models[0].parameters(), clean[0].parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(models[2].parameters(), clean[2].parameters()))
