"""The federated round engine: partitions, local training against a plain-PyTorch oracle, vmap against
sequential, the model-replacement known answer, determinism under a seed, and resume after a kill."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from poisonlab.attacks.federated.backdoor_tasks import PatternTask
from poisonlab.attacks.federated.model_replacement import AttackerRecipe, ModelReplacement
from poisonlab.data import Dataset, load_dataset
from poisonlab.defenses.aggregation import FedAvg, NormDetector
from poisonlab.errors import ConfigError, Interrupted
from poisonlab.fl import (
    ClientUpdate,
    Federation,
    LocalRecipe,
    LocalTrainer,
    ParamLayout,
    RoundEngine,
    ServerPayload,
    dirichlet_partition,
    iid_partition,
)
from poisonlab.fl.local import batch_schedule
from poisonlab.io.checkpoint import Checkpointer
from poisonlab.models.build import build_model
from poisonlab.rng import SeedTree


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits").train.subset(torch.arange(320))


def mlp(data: Dataset, seed: int = 0, width: int = 16) -> torch.nn.Module:
    return build_model("mlp", data.shape, 10, torch.Generator().manual_seed(seed), width, "none")


def engine(data: Dataset, seed: int, clients: int = 8, per_round: int = 4, **kw) -> tuple[RoundEngine, torch.Tensor]:
    model = mlp(data)
    layout = ParamLayout.of(model)
    shards = dirichlet_partition(data.labels, clients, 0.9, SeedTree(seed).generator("partition"))
    local = LocalTrainer(model, layout, data.images, data.labels, LocalRecipe(epochs=2, batch_size=16, lr=0.05))
    fed = Federation(tuple(shards), per_round, 1.0)
    return RoundEngine(local, fed, kw.pop("aggregator", FedAvg()), SeedTree(seed), **kw), layout.flatten(model)


def test_partitions_are_disjoint_deterministic_and_skewed(digits: Dataset) -> None:
    iid = iid_partition(len(digits), 7, torch.Generator().manual_seed(0))
    assert sorted(torch.cat(iid).tolist()) == list(range(len(digits)))
    assert max(len(s) for s in iid) - min(len(s) for s in iid) <= 1
    a = dirichlet_partition(digits.labels, 10, 0.3, torch.Generator().manual_seed(5))
    b = dirichlet_partition(digits.labels, 10, 0.3, torch.Generator().manual_seed(5))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    flat = torch.cat(a)
    assert flat.unique().numel() == flat.numel()
    # alpha 0.3 skews labels: some client's majority class holds well over the uniform 10%
    shares = [float(torch.bincount(digits.labels[s], minlength=10).max()) / max(len(s), 1) for s in a if len(s)]
    assert max(shares) > 0.4
    with pytest.raises(ConfigError, match="fl.clients"):
        iid_partition(3, 5, torch.Generator())


def test_local_sgd_matches_plain_pytorch(digits: Dataset) -> None:
    """One client's functional local training equals nn.Module + torch.optim.SGD on the same batches."""
    model = mlp(digits)
    layout = ParamLayout.of(model)
    recipe = LocalRecipe(epochs=3, batch_size=24, lr=0.1, momentum=0.9, weight_decay=5e-4)
    shard = torch.arange(50, 110)  # 60 samples: batches of 24, 24, 12 per epoch
    trainer = LocalTrainer(model, layout, digits.images, digits.labels, recipe, "sequential")
    g0 = layout.flatten(model)
    ours = trainer.deltas(g0, [shard], [torch.Generator().manual_seed(9)])[0]
    oracle = mlp(digits)
    opt = torch.optim.SGD(oracle.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    plan = batch_schedule(len(shard), recipe, torch.Generator().manual_seed(9))
    for step in plan:
        rows = shard[step[step >= 0]]
        loss = F.cross_entropy(oracle(digits.images[rows]), digits.labels[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.testing.assert_close(ours, layout.flatten(oracle) - g0, atol=1e-6, rtol=1e-5)


def test_vmap_equals_sequential_with_uneven_shards(digits: Dataset) -> None:
    model = mlp(digits)
    layout = ParamLayout.of(model)
    recipe = LocalRecipe(epochs=2, batch_size=16, lr=0.05)
    shards = [torch.arange(0, 40), torch.arange(40, 47), torch.zeros(0, dtype=torch.long), torch.arange(100, 133)]
    g0 = layout.flatten(model)
    out = {}
    for strategy in ("vmap", "sequential"):
        gens = [torch.Generator().manual_seed(i) for i in range(4)]
        out[strategy] = LocalTrainer(model, layout, digits.images, digits.labels, recipe, strategy).deltas(
            g0, shards, gens
        )
    torch.testing.assert_close(out["vmap"], out["sequential"], atol=1e-6, rtol=1e-5)
    assert torch.equal(out["vmap"][2], torch.zeros_like(g0))  # no data: no update at all
    fedsgd = LocalRecipe.fedsgd(lr=0.5)
    assert batch_schedule(7, fedsgd, torch.Generator()).shape == (1, 7)


class _FixedModel(ModelReplacement):
    """The attacker with its training replaced by a fixed backdoored model X (for the exact known answer)."""

    def __init__(self, x: torch.Tensor, **kw) -> None:
        super().__init__(**kw)
        self.x = x

    def train(self, global_vec: torch.Tensor, generator: torch.Generator, radius: float | None) -> torch.Tensor:
        return self.x.clone()


def _attacker_args(data: Dataset, model: torch.nn.Module, layout: ParamLayout) -> dict:
    return dict(
        task=PatternTask(data.shape, 2),
        model=model,
        layout=layout,
        images=data.images[:64],
        labels=data.labels[:64],
        recipe=AttackerRecipe(epochs=2, per_batch=8),
        client_id=0,
    )


def test_model_replacement_known_answer(digits: Dataset) -> None:
    """gamma = n / eta and all-benign deltas zero: the global model becomes exactly the attacker's X."""
    model = mlp(digits)
    layout = ParamLayout.of(model)
    grid = 2.0**-10  # dyadic values: every sum, scale and difference below is exact in float32
    g0 = torch.round(layout.flatten(model) / grid) * grid
    x = g0 + grid * torch.randint(-64, 64, g0.shape, generator=torch.Generator().manual_seed(1)).float()
    for n, eta in ((4, 1.0), (8, 2.0)):
        attacker = _FixedModel(x, **_attacker_args(digits, model, layout))
        empty = tuple(torch.zeros(0, dtype=torch.long) for _ in range(n + 1))  # honest clients without data
        local = LocalTrainer(model, layout, digits.images, digits.labels, LocalRecipe())
        fed = Federation(empty, n, eta, excluded=(0,))
        eng = RoundEngine(local, fed, FedAvg(), SeedTree(0), attackers={1: [attacker]})
        new, record = eng.run_round(g0, 1)
        assert len(record["participants"]) == n and record["participants"][0] == 0
        assert attacker.last["gamma_used"] == n / eta
        assert torch.equal(new, x)


def test_real_attacker_replaces_the_global_model(digits: Dataset) -> None:
    model = mlp(digits)
    layout = ParamLayout.of(model)
    g0 = layout.flatten(model)
    attacker = ModelReplacement(**_attacker_args(digits, model, layout))
    payload = ServerPayload(g0, 1, {"per_round": 5, "eta": 1.0})
    up = attacker.update(payload, torch.Generator().manual_seed(0))
    assert attacker.last["gamma"] == 5.0 and attacker.last["gamma_used"] == 5.0
    zeros = [ClientUpdate(i, torch.zeros_like(g0), 10) for i in range(1, 5)]
    new = g0 + 1.0 * FedAvg().aggregate([up, *zeros], torch.Generator()).delta
    x = attacker.train(g0, torch.Generator().manual_seed(0), None)
    torch.testing.assert_close(new, x, atol=1e-6, rtol=0)


def test_constrain_and_scale_respects_the_bound(digits: Dataset) -> None:
    model = mlp(digits)
    layout = ParamLayout.of(model)
    g0 = layout.flatten(model)
    args = _attacker_args(digits, model, layout)
    payload = ServerPayload(g0, 1, {"per_round": 5, "eta": 1.0})
    naive = ModelReplacement(**args).update(payload, torch.Generator().manual_seed(0))
    bound = 0.5 * float(naive.delta.norm())
    cs = ModelReplacement(**args, alpha=0.7, norm_bound=bound).update(payload, torch.Generator().manual_seed(0))
    assert float(cs.delta.double().norm()) <= bound * (1 + 1e-5)
    detector = NormDetector(bound)
    out = detector.aggregate([naive, cs.__class__(1, cs.delta, cs.num_examples)], torch.Generator())
    assert out.info["flagged"] == [0] and out.accepted == (1,)


def _run(data: Dataset, seed: int, rounds: int, **kw):
    eng, g0 = engine(data, seed, **kw)
    return eng.run(g0, rounds)


def test_rounds_are_deterministic_under_a_seed(digits: Dataset) -> None:
    a, ha = _run(digits, 3, 3)
    b, hb = _run(digits, 3, 3)
    c, _ = _run(digits, 4, 3)
    assert torch.equal(a, b)
    strip = [{k: v for k, v in h.items() if not k.endswith("seconds")} for h in ha]
    assert strip == [{k: v for k, v in h.items() if not k.endswith("seconds")} for h in hb]
    assert not torch.equal(a, c)


def test_killed_run_resumes_from_its_last_round_and_ends_identical(digits: Dataset, tmp_path) -> None:
    full, hist = _run(digits, 7, 4)
    stops = iter([False, True])  # stop after round 2
    ck = Checkpointer(tmp_path / "ck", "cfg")
    with pytest.raises(Interrupted, match="after round 2"):
        _run(digits, 7, 4, checkpointer=ck, should_stop=lambda: next(stops))
    assert [p.name for p in ck.list()][-1] == "step-0000000002"

    class Boom(FedAvg):  # a crash inside round 4, after round 3 was checkpointed
        def aggregate(self, updates, generator):
            if self.calls == 1:
                raise RuntimeError("killed")
            self.calls += 1
            return super().aggregate(updates, generator)

    boom = Boom()
    boom.calls = 0
    with pytest.raises(RuntimeError, match="killed"):
        _run(digits, 7, 4, checkpointer=ck, aggregator=boom)
    assert [p.name for p in ck.list()][-1] == "step-0000000003"
    resumed, rhist = _run(digits, 7, 4, checkpointer=ck)
    assert torch.equal(resumed, full)
    assert [h["participants"] for h in rhist] == [h["participants"] for h in hist]
