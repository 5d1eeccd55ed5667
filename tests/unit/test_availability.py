"""Availability poisoning for secure release: loss oracles, crafting behaviour, resume, online release, efficacy."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from poisonlab.attacks.poisoning.adversarial_poisons import (
    adversarial_objective,
    class_affinity,
    nearest_derangement,
    permuted_labels,
)
from poisonlab.attacks.poisoning.availability import (
    AvailabilityPoisoning,
    ProtectTask,
    availability_gradient,
    reverse_cross_entropy,
)
from poisonlab.attacks.poisoning.evaluate import random_noise_control
from poisonlab.attacks.poisoning.online import merge_releases, online_protect
from poisonlab.attacks.poisoning.poison_set import PoisonSet
from poisonlab.attacks.poisoning.protect_config import load_protection_config, protect_config
from poisonlab.attacks.poisoning.protection_eval import VictimSpec, evaluate_protection
from poisonlab.attacks.poisoning.surrogates import build_victim_model, train_surrogates
from poisonlab.config import ModelConfig, TrainConfig
from poisonlab.data import Dataset, load_dataset
from poisonlab.errors import ConfigError, Interrupted
from poisonlab.io import Checkpointer
from poisonlab.models import build_model
from poisonlab.rng import SeedTree
from poisonlab.training import Trainer


@pytest.fixture(scope="module")
def surrogate(digits_small: Dataset) -> nn.Module:
    model = build_model("mlp", digits_small.shape, 10, SeedTree(0).generator("init"), width=32)
    Trainer(model, digits_small, TrainConfig(epochs=3, batch_size=32, lr=0.05), SeedTree(0)).fit()
    return model.eval()


def _craft(data: Dataset, surrogates, seed: int = 0, n: int = 40, checkpointer=None, stop=None, **fields):
    cfg = protect_config(**{"eps": "32/255", "steps": 6, "pbatch": 16, "restarts": 2, "checkpoint_every": 2, **fields})
    crafter = AvailabilityPoisoning(cfg, checkpointer=checkpointer, should_stop=stop)
    return crafter.craft(ProtectTask(data, data.ids[:n]), surrogates, SeedTree(seed))


def test_reverse_cross_entropy_matches_its_definition_and_stays_finite() -> None:
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randint(0, 5, (7,), generator=g)
    naive = -torch.log(1 - logits.softmax(1)[torch.arange(7), y]).mean()
    torch.testing.assert_close(reverse_cross_entropy(logits, y), naive)
    confident = torch.tensor([[60.0, 0.0, 0.0]])  # p_y = 1 - 2e-26: the naive form gives inf
    assert torch.isfinite(reverse_cross_entropy(confident, torch.tensor([0])))
    assert float(reverse_cross_entropy(confident, torch.tensor([0]))) == pytest.approx(
        60 - torch.log(torch.tensor(2.0))
    )


def test_reverse_ce_gradient_is_the_weighted_opposite_of_the_training_gradient() -> None:
    # known answer for one sample: grad(-log(1 - p)) = -(p / (1 - p)) * grad(CE)
    net = nn.Sequential(nn.Linear(4, 3)).double()
    x, y = torch.randn(1, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1)), torch.tensor([2])
    rev = availability_gradient(net, x, y, "reverse-ce")
    ce = torch.autograd.grad(nn.functional.cross_entropy(net(x), y), list(net.parameters()))
    p = float(net(x).softmax(1)[0, 2].detach())
    for a, b in zip(rev, ce):
        torch.testing.assert_close(a, -(p / (1 - p)) * b)
    neg = availability_gradient(net, x, y, "negative-ce")
    for a, b in zip(neg, ce):
        torch.testing.assert_close(a, -b)


def test_target_gradient_does_not_depend_on_the_chunking(surrogate, digits_small) -> None:
    x, y = digits_small.images[:50], digits_small.labels[:50]
    whole = availability_gradient(surrogate, x, y, "reverse-ce", chunk=1000)
    for a, b in zip(whole, availability_gradient(surrogate, x, y, "reverse-ce", chunk=7)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_crafting_aligns_and_respects_the_budget(surrogate, digits_small) -> None:
    losses: list[dict] = []
    cfg = protect_config(eps="32/255", steps=12, pbatch=20, restarts=1, tau=2.0)
    ps = AvailabilityPoisoning(cfg, on_step=losses.append).craft(
        ProtectTask(digits_small, digits_small.ids[:40]), [surrogate], SeedTree(0)
    )
    for b in (0, 1):
        per = [d["loss"] for d in losses if d["batch"] == b]
        assert per[-1] < per[0] - 0.05  # the alignment loss falls in every poison batch
    assert len(ps.restart_losses) == 2 and ps.recipe == "availability" and ps.adv_class == -1
    assert float(ps.deltas.abs().max()) <= 32 / 255 + 1e-6
    ps.check(digits_small)
    assert torch.equal(ps.poison_ids, digits_small.ids[:40])


@pytest.mark.parametrize("scope", ["batch", "all"])
def test_same_seed_same_release_other_seed_other_release(surrogate, digits_small, scope) -> None:
    a, b = (
        _craft(digits_small, [surrogate], 0, target_scope=scope),
        _craft(digits_small, [surrogate], 0, target_scope=scope),
    )
    assert torch.equal(a.deltas, b.deltas)
    assert not torch.equal(a.deltas, _craft(digits_small, [surrogate], 1, target_scope=scope).deltas)


@pytest.mark.parametrize("crash_at", [3, 12, 13, 25])  # mid-restart, end of a batch, start of the next, last batch
def test_killed_protection_resumes_bit_identical(surrogate, digits_small, tmp_path, crash_at) -> None:
    full = _craft(digits_small, [surrogate])
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] == crash_at

    with pytest.raises(Interrupted):
        _craft(digits_small, [surrogate], checkpointer=Checkpointer(tmp_path, "h"), stop=stop)
    resumed = _craft(digits_small, [surrogate], checkpointer=Checkpointer(tmp_path, "h"))
    assert torch.equal(full.deltas, resumed.deltas)
    assert full.restart_losses == resumed.restart_losses


def test_ensemble_mean_differs_from_either_member(surrogate, digits_small) -> None:
    other = build_model("mlp", digits_small.shape, 10, SeedTree(5).generator("init"), width=32).eval()
    both = _craft(digits_small, [surrogate, other], restarts=1)
    assert both.meta["ensemble"] == 2
    assert not torch.equal(both.deltas, _craft(digits_small, [surrogate], restarts=1).deltas)


def _online_config(**extra: str):
    base = ["data.name=digits", "model.name=mlp", "model.width=16", "train.epochs=1", "train.lr=0.05",
            "train.batch_size=32", "protect.eps=32/255", "protect.steps=3", "protect.pbatch=32",
            "protect.online=true", "protect.release_batches=3", "protect.checkpoint_every=1"]  # fmt: skip
    return load_protection_config(overrides=base + [f"{k}={v}" for k, v in extra.items()])


@pytest.mark.parametrize("update", ["clean", "protected"])
def test_online_release_resumes_bit_identical(digits_small, tmp_path, update) -> None:
    config = _online_config(**{"protect.online_update": update})
    ids = digits_small.ids[:90]
    full = online_protect(config, digits_small, ids, SeedTree(0), tmp_path / "a", "h")
    assert torch.equal(full.poison_ids, ids) and full.meta["release_batches"] == 3
    calls = {"n": 0}

    def stop() -> bool:  # crafting polls after each step; surrogate training after each batch
        calls["n"] += 1
        return calls["n"] == 12

    with pytest.raises(Interrupted):
        online_protect(config, digits_small, ids, SeedTree(0), tmp_path / "b", "h", should_stop=stop)
    resumed = online_protect(config, digits_small, ids, SeedTree(0), tmp_path / "b", "h")
    assert torch.equal(full.deltas, resumed.deltas)
    assert (tmp_path / "b" / "stage-2" / "surrogate-0" / "model").is_dir()


def test_online_surrogates_change_between_releases(digits_small, tmp_path) -> None:
    config = _online_config()
    online_protect(config, digits_small, digits_small.ids[:90], SeedTree(0), tmp_path, "h")
    from poisonlab.io.artifact import load_artifact

    w0 = load_artifact(tmp_path / "stage-0" / "surrogate-0" / "model", "model")[0]
    w1 = load_artifact(tmp_path / "stage-1" / "surrogate-0" / "model", "model")[0]
    assert any(not torch.equal(w0[k], w1[k]) for k in w0)


def test_online_nearest_map_is_fixed_by_the_first_release(digits_small, tmp_path, monkeypatch) -> None:
    import poisonlab.attacks.poisoning.availability as availability

    config = _online_config(**{"protect.method": "adversarial-targeted", "protect.label_map": "nearest"})
    calls = []
    real = availability.nearest_derangement
    monkeypatch.setattr(availability, "nearest_derangement", lambda a: calls.append(a) or real(a))
    online_protect(config, digits_small, digits_small.ids[:90], SeedTree(0), tmp_path, "h")
    maps = [PoisonSet.load(tmp_path / f"release-{b}", digits_small).meta["label_map"] for b in range(3)]
    assert len(calls) == 1 and maps[0] == maps[1] == maps[2] == real(calls[0]).tolist()


def test_merge_releases_concatenates_in_order(surrogate, digits_small) -> None:
    a = _craft(digits_small, [surrogate], n=20, restarts=1)
    b = AvailabilityPoisoning(protect_config(eps="32/255", steps=2, pbatch=16)).craft(
        ProtectTask(digits_small, digits_small.ids[20:30]), [surrogate], SeedTree(0)
    )
    merged = merge_releases([a, b])
    assert torch.equal(merged.poison_ids, digits_small.ids[:30])
    assert torch.equal(merged.deltas[20:], b.deltas)


def test_protection_lowers_accuracy_more_than_same_budget_noise() -> None:
    """Known-answer efficacy on a tiny task: a protected digits release hurts an MLP victim (not the surrogate's
    seed) more than uniform noise of the same eps at the same ids, and more than a point below clean."""
    splits = load_dataset("digits")
    recipe = TrainConfig(epochs=6, batch_size=32, lr=0.05)
    model = build_model("mlp", splits.train.shape, 10, SeedTree(0).generator("init"), width=64)
    Trainer(model, splits.train, recipe, SeedTree(0)).fit()
    cfg = protect_config(eps="48/255", steps=40, pbatch=256)
    ps = AvailabilityPoisoning(cfg).craft(ProtectTask(splits.train, splits.train.ids), [model.eval()], SeedTree(0))
    out = evaluate_protection(ps, splits, [VictimSpec("mlp", 64)], "batch", recipe, 1, SeedTree(9))
    s = out["summary"]["mlp:64"]
    assert s["protected"]["mean"] < s["noise"]["mean"] - 0.05
    assert s["noise"]["mean"] > s["clean"]["mean"] - 0.05


def test_noise_control_is_within_budget(surrogate, digits_small) -> None:
    ps = _craft(digits_small, [surrogate], restarts=1)
    noise = random_noise_control(ps, digits_small, torch.Generator().manual_seed(0))
    noise.check(digits_small)
    assert not torch.equal(noise.deltas, ps.deltas)


@pytest.mark.parametrize(
    ("field", "value"),
    [("eps", 8), ("eps", 0), ("fraction", 0), ("fraction", 1.5), ("steps", 0), ("objective", "ce"),
     ("target_scope", "global"), ("release_batches", 0), ("unknown", 1), ("method", "pgd"),
     ("optimizer", "adam"), ("pgd_tau", 0), ("minibatch", 0), ("surrogates", ["resnet18:x"]), ("surrogates", [":8"])],
)  # fmt: skip
def test_config_rejects_bad_fields_naming_them(field, value) -> None:
    with pytest.raises(ConfigError, match=f"protect.{field}"):
        protect_config(**{field: value})


def test_config_rejects_inconsistent_settings() -> None:
    with pytest.raises(ConfigError, match="stagger"):
        protect_config(stagger=True)
    with pytest.raises(ConfigError, match="online"):
        protect_config(release_batches=3)
    with pytest.raises(ConfigError, match="ensemble 3 disagrees with the 2 surrogates"):
        protect_config(surrogates="mlp,resnet18:8", ensemble=3)
    for bad in ("convnet:8:layer", "convnet::none", "mlp:0", ":8"):
        with pytest.raises(ConfigError, match="name\\[:width\\[:norm\\]\\]"):
            protect_config(surrogates=bad)


def test_surrogate_norm_defaults_to_the_model_and_can_be_set_per_member() -> None:
    cfg = protect_config(surrogates="convnet:8:none,resnet18:8,mlp")
    members = cfg.member_models(ModelConfig(name="convnet", norm="group"))
    assert [(m.name, m.width, m.norm) for m in members] == [
        ("convnet", 8, "none"),
        ("resnet18", 8, "group"),
        ("mlp", None, "group"),
    ]


def test_mixed_ensemble_trains_one_member_per_listed_architecture(digits_small) -> None:
    cfg = protect_config(surrogates="mlp:16,mlp:24", stagger=True)
    assert cfg.members == 2 and protect_config(ensemble=3).members == 3
    models = cfg.member_models(ModelConfig(name="convnet"))
    recipe = TrainConfig(epochs=1, batch_size=32, lr=0.05)
    nets = train_surrogates(ModelConfig(name="mlp"), recipe, digits_small, SeedTree(0), stagger=True, models=models)
    widths = [max(p.shape[0] for p in net.parameters() if p.dim() == 2) for net in nets]
    assert widths == [16, 24] and all(not n.training for n in nets)
    fresh = build_victim_model(ModelConfig(name="mlp", width=16), digits_small, SeedTree(0).child("surrogate-0"))
    # staggered: member 0 is its untrained initialisation, drawn from its own seed
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), nets[0].state_dict().values()))


def test_victim_spec_parsing() -> None:
    assert VictimSpec.parse("convnet:16@0.01") == VictimSpec("convnet", 16, 0.01)
    assert VictimSpec.parse("mlp").label == "mlp"
    for bad in ("convnet:x", "mlp@-1", ":3"):
        with pytest.raises(ConfigError, match="--models"):
            VictimSpec.parse(bad)


# ---------------------------------------------------------------- adversarial poisons (Fowl et al. 2021b)
def test_permuted_labels_are_the_references_shift() -> None:
    assert permuted_labels(torch.tensor([0, 3, 9]), 10).tolist() == [1, 4, 0]


@pytest.mark.parametrize("method", ["adversarial-targeted", "adversarial-untargeted"])
def test_adversarial_objective_matches_a_hand_computed_loss_and_gradient(method) -> None:
    g = torch.Generator().manual_seed(3)
    nets = [nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).double() for _ in range(2)]
    x, y = torch.rand(5, 1, 2, 2, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2, 2, 1])
    delta = 0.1 * torch.randn(5, 1, 2, 2, generator=g, dtype=torch.float64)
    loss, grad = adversarial_objective(delta, x, y, nets, method, pbatch=2)
    d = delta.clone().requires_grad_(True)
    label = (y + 1) % 3 if method == "adversarial-targeted" else y
    sign = 1.0 if method == "adversarial-targeted" else -1.0
    per = torch.stack([nn.functional.cross_entropy(n(x + d), label, reduction="none") for n in nets]).mean(0) * sign
    # minibatches of 2, 2, 1: the loss is the mean of minibatch means; each sample's gradient is that of its minibatch
    weights = torch.tensor([1 / 2, 1 / 2, 1 / 2, 1 / 2, 1.0], dtype=torch.float64)
    (expected,) = torch.autograd.grad((per * weights).sum(), d)
    torch.testing.assert_close(grad, expected)
    per = per.detach()
    assert loss == pytest.approx(float((per[:2].mean() + per[2:4].mean() + per[4:].mean()) / 3))


def test_class_targeted_poisons_move_the_surrogate_to_the_next_class(surrogate, digits_small) -> None:
    cfg = protect_config(eps="96/255", steps=40, pbatch=40, method="adversarial-targeted")
    assert cfg.crafting_optimizer == "pgd"
    ids = digits_small.ids[:80]
    ps = AvailabilityPoisoning(cfg).craft(ProtectTask(digits_small, ids), [surrogate], SeedTree(0))
    assert ps.meta["method"] == "adversarial-targeted" and ps.meta["optimizer"] == "pgd"
    ps.check(digits_small)
    x, y = digits_small.images[:80], digits_small.labels[:80]
    noise = random_noise_control(ps, digits_small, SeedTree(1).generator("noise"))
    with torch.no_grad():
        shifted = (surrogate(x + ps.deltas).argmax(1) == (y + 1) % 10).float().mean()
        control = (surrogate(x + noise.deltas).argmax(1) == (y + 1) % 10).float().mean()
    assert shifted > 0.8 and control < 0.2


def test_nearest_derangement_is_the_best_permutation_without_fixed_points() -> None:
    g = torch.Generator().manual_seed(0)
    for c in (2, 3, 5, 6):
        for _ in range(5):
            a = torch.randn(c, c, generator=g, dtype=torch.float64)
            a.diagonal().add_(10.0)  # the identity would win by far if it were allowed
            table = nearest_derangement(a)
            assert sorted(table.tolist()) == list(range(c)) and all(table[i] != i for i in range(c))
            best = max(
                sum(float(a[i, p[i]]) for i in range(c))
                for p in itertools.permutations(range(c))
                if all(p[i] != i for i in range(c))
            )
            assert sum(float(a[i, table[i]]) for i in range(c)) == pytest.approx(best)
    with pytest.raises(ValueError, match="2 classes"):
        nearest_derangement(torch.zeros(1, 1))


def test_class_affinity_is_the_mean_log_probability_per_class() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).double()
    x = torch.rand(7, 1, 2, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 0, 2, 2, 2, 0, 2])
    a = class_affinity([net, net], x, y, 3, batch=3)
    logp = torch.log_softmax(net(x), 1).detach()
    torch.testing.assert_close(a[0], logp[y == 0].mean(0))
    torch.testing.assert_close(a[2], logp[y == 2].mean(0))
    assert torch.equal(a[1], torch.zeros(3, dtype=torch.float64))


def test_nearest_label_map_is_recorded_and_steers_the_surrogate(surrogate, digits_small) -> None:
    cfg = protect_config(eps="96/255", steps=40, pbatch=40, method="adversarial-targeted", label_map="nearest")
    ids = digits_small.ids[:80]
    ps = AvailabilityPoisoning(cfg).craft(ProtectTask(digits_small, ids), [surrogate], SeedTree(0))
    table = torch.tensor(ps.meta["label_map"])
    x, y = digits_small.images[:80], digits_small.labels[:80]
    expected = nearest_derangement(class_affinity([surrogate], x, y, 10))
    assert torch.equal(table, expected) and not torch.equal(table, (torch.arange(10) + 1) % 10)
    with torch.no_grad():
        assert (surrogate(x + ps.deltas).argmax(1) == table[y]).float().mean() > 0.8
    # a fixed map (online batches after the first) wins over the config, and a non-permutation is refused
    fixed = torch.tensor([9, 0, 1, 2, 3, 4, 5, 6, 7, 8])
    again = AvailabilityPoisoning(cfg).craft(ProtectTask(digits_small, ids, fixed), [surrogate], SeedTree(0))
    assert again.meta["label_map"] == fixed.tolist()
    with pytest.raises(ValueError, match="permutation of the 10 classes"):
        AvailabilityPoisoning(cfg).craft(ProtectTask(digits_small, ids, torch.zeros(10)), [surrogate], SeedTree(0))


def test_adversarial_protection_resumes_bit_identical(surrogate, digits_small, tmp_path) -> None:
    fields = {"method": "adversarial-untargeted"}
    full = _craft(digits_small, [surrogate], **fields)
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] == 9

    with pytest.raises(Interrupted):
        _craft(digits_small, [surrogate], checkpointer=Checkpointer(tmp_path, "h"), stop=stop, **fields)
    resumed = _craft(digits_small, [surrogate], checkpointer=Checkpointer(tmp_path, "h"), **fields)
    assert torch.equal(full.deltas, resumed.deltas) and full.restart_losses == resumed.restart_losses


def test_curve_styles_give_each_model_one_colour_and_each_arm_one_line_style() -> None:
    from poisonlab.attacks.poisoning.protect_report import accuracy_curve_png, curve_style

    models: list[str] = []
    styles = {lab: curve_style(lab, models) for lab in
              ["lenet protected", "resnet18:8 protected", "lenet noise", "resnet18:8 clean", "bar"]}  # fmt: skip
    assert styles["lenet protected"] == {"color": "C0", "linestyle": "-"}
    assert styles["lenet noise"] == {"color": "C0", "linestyle": "--"}
    assert styles["resnet18:8 clean"] == {"color": "C1", "linestyle": ":"} and styles["bar"] == {}
    point = {"mean": 0.5, "lo": 0.4, "hi": float("nan")}
    png = accuracy_curve_png([16, 32], {"lenet protected": [point, point]}, "eps", "t", bar=0.4)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
