"""Gradient inversion: analytic exactness, label recovery, the attacker API, box, determinism, FedAvg unrolling,
checkpoint/resume and the artifact round trip. Tiny models so the file runs in a few seconds."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch
from torch import nn

from poisonlab.attacks.federated.inversion import (
    AnalyticFCInversion,
    ClientUpdate,
    DeepLeakage,
    GradientInversion,
    InvertingGradients,
    Reconstruction,
    ServerPayload,
    analytic_fc_inversion,
    client_update,
    invert_config,
    recover_labels,
)
from poisonlab.attacks.federated.inversion.client import update_simulator
from poisonlab.attacks.federated.inversion.functional import batch_loss
from poisonlab.attacks.federated.inversion.labels import last_layer
from poisonlab.attacks.federated.inversion.objectives import cosine_cost
from poisonlab.errors import ConfigError, Interrupted
from poisonlab.io import Checkpointer
from poisonlab.models import build_model


def _payload(name: str, shape: tuple[int, int, int], width: int, seed: int = 0, classes: int = 10) -> ServerPayload:
    g = torch.Generator().manual_seed(seed)
    model = build_model(
        name, shape, classes, g, width=width, norm="none", mean=(0.4,) * shape[0], std=(0.3,) * shape[0]
    )
    return ServerPayload.from_model(model, shape, classes)


def _images(n: int, shape: tuple[int, int, int], seed: int = 1) -> torch.Tensor:
    return torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed))


def test_analytic_fc_inversion_is_exact_for_one_sample() -> None:
    # known answer: z = W u + b followed by any loss; u must come back to float precision
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(50, 7)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(7, 50, generator=g))
        lin.bias.copy_(torch.randn(7, generator=g))
    u = torch.randn(1, 50, generator=g)
    loss = (torch.tanh(lin(u)) ** 3).sum()
    gw, gb = torch.autograd.grad(loss, [lin.weight, lin.bias])
    assert (analytic_fc_inversion(gw, gb) - u[0].double()).abs().max() < 1e-5


def test_analytic_attack_recovers_the_image_through_normalisation() -> None:
    payload = _payload("mlp", (1, 8, 8), 32)
    x, y = _images(1, (1, 8, 8)), torch.tensor([3])
    rec = AnalyticFCInversion().reconstruct(payload, client_update(payload, x, y))
    assert (rec.images - x).abs().max().item() < 1e-5
    assert rec.labels.tolist() == [3] and rec.label_source == "recovered:idlg"


def test_analytic_attack_refuses_a_conv_first_network() -> None:
    payload = _payload("convnet", (3, 32, 32), 4)
    update = client_update(payload, _images(1, (3, 32, 32)), torch.tensor([0]))
    with pytest.raises(ConfigError, match="model"):
        AnalyticFCInversion().reconstruct(payload, update)


def test_label_rules_on_a_hand_made_last_layer() -> None:
    # mean CE over 3 images with labels {1, 1, 4} and non-negative features: rows 1 and 4 are negative
    feats = torch.tensor([[1.0, 2.0], [0.5, 0.0], [3.0, 1.0]])
    probs = torch.full((3, 5), 0.2)
    onehot = torch.zeros(3, 5)
    onehot[[0, 1, 2], [1, 1, 4]] = 1
    dz = (probs - onehot) / 3
    gw, gb = dz.T @ feats, dz.sum(0)
    assert recover_labels(gw, gb, 3, "bias-sign")[0].tolist() == [1, 1, 4]
    assert recover_labels(gw[:, :], gb, 2, "weight-min")[0].tolist() == [1, 4]
    one_w = (probs[:1] - onehot[:1]).T @ feats[:1]
    assert recover_labels(one_w, None, 1, "auto") == (torch.tensor([1]), "idlg")


def test_label_recovery_from_real_updates() -> None:
    payload = _payload("convnet", (3, 32, 32), 4)
    for labels in ([7], [2, 5, 5, 9]):
        y = torch.tensor(labels)
        update = client_update(payload, _images(len(labels), (3, 32, 32)), y)
        w, b = last_layer(update.tensors, 10)
        assert recover_labels(w, b, len(labels))[0].tolist() == sorted(labels)


def test_attacker_api_never_receives_the_private_batch() -> None:
    sig = inspect.signature(GradientInversion.reconstruct)
    assert list(sig.parameters) == ["self", "payload", "update"]
    fields = {f.name for f in dataclasses.fields(ClientUpdate)}
    assert fields == {"kind", "tensors", "num_images", "local_steps", "local_lr", "images_per_step", "labels"}
    payload = _payload("convnet", (3, 32, 32), 4)
    x, y = _images(2, (3, 32, 32)), torch.tensor([1, 2])
    update = client_update(payload, x, y)
    assert update.labels is None  # labels stay private unless the protocol shares them
    assert all(t.shape == payload.parameters[k].shape for k, t in update.tensors.items())
    x.fill_(float("nan"))  # the client's batch is gone: anything that still read it would turn NaN
    rec = InvertingGradients(invert_config(iterations=2), seed=0).reconstruct(payload, update)
    assert torch.isfinite(rec.images).all() and rec.labels.tolist() == [1, 2]


def test_reconstructions_respect_the_box_and_are_deterministic() -> None:
    payload = _payload("convnet", (3, 32, 32), 4)
    update = client_update(payload, _images(2, (3, 32, 32)), torch.tensor([0, 3]))
    cfg = invert_config(iterations=4, restarts=3, lr=1.0)
    a = InvertingGradients(cfg, seed=5).reconstruct(payload, update)
    b = InvertingGradients(cfg, seed=5).reconstruct(payload, update)
    c = InvertingGradients(cfg, seed=6).reconstruct(payload, update)
    assert a.images.min() >= 0 and a.images.max() <= 1
    assert torch.equal(a.images, b.images) and torch.equal(a.restart_scores, b.restart_scores)
    assert not torch.equal(a.images, c.images)
    assert a.restart_scores.shape == (3,) and a.score == pytest.approx(float(a.restart_scores.min()))
    dlg = DeepLeakage(invert_config(attack="dlg", iterations=2, lbfgs_max_iter=3), seed=1).reconstruct(payload, update)
    assert dlg.images.min() >= 0 and dlg.images.max() <= 1 and dlg.images.shape == (2, 3, 32, 32)


def test_stacked_updates_equal_single_reconstructions() -> None:
    payload = _payload("convnet", (3, 32, 32), 4)
    updates = [client_update(payload, _images(1, (3, 32, 32), s), torch.tensor([s])) for s in (1, 2)]
    cfg = invert_config(iterations=3, restarts=2)
    many = InvertingGradients(cfg, seed=0).reconstruct_many(payload, updates)
    looped = InvertingGradients(invert_config(iterations=3, restarts=2, vectorize=False), seed=0)
    for i, r in enumerate(looped.reconstruct_many(payload, updates)):
        assert torch.allclose(many[i].images, r.images, atol=1e-5)
    assert torch.equal(many[0].images, InvertingGradients(cfg, seed=0).reconstruct(payload, updates[0]).images)


def test_fedavg_delta_matches_manual_sgd_and_the_truth_has_zero_cost() -> None:
    payload = _payload("convnet", (3, 32, 32), 4)
    x, y = _images(4, (3, 32, 32)), torch.tensor([0, 1, 2, 3])
    update = client_update(payload, x, y, local_steps=3, local_lr=0.1, images_per_step=2)
    model = payload.model
    params = {k: v.clone().requires_grad_(True) for k, v in payload.parameters.items()}
    current = dict(params)
    for s in (0, 2, 0):  # batches [0:2], [2:4], [0:2]
        loss = batch_loss(model, current, payload.buffers, x[s : s + 2], y[s : s + 2])
        grads = torch.autograd.grad(loss, list(current.values()))
        current = {k: v - 0.1 * gk for (k, v), gk in zip(current.items(), grads)}
    for k in params:
        assert torch.allclose(update.tensors[k], (current[k] - params[k]).detach(), atol=1e-6)
    simulated = update_simulator(payload, update)(x, y)
    names = list(payload.parameters)
    assert cosine_cost([simulated[k] for k in names], [update.tensors[k] for k in names]).item() < 1e-5
    rec = InvertingGradients(invert_config(iterations=2), seed=0).reconstruct(payload, update)
    assert rec.images.shape == x.shape and rec.meta["update_kind"] == "delta"


def test_inversion_resumes_bit_identically(tmp_path) -> None:
    payload = _payload("convnet", (3, 32, 32), 4)
    update = client_update(payload, _images(1, (3, 32, 32)), torch.tensor([4]))
    cfg = invert_config(iterations=6, restarts=2, checkpoint_every=2)
    full = InvertingGradients(cfg, seed=3).reconstruct(payload, update)
    calls = {"n": 0}

    def stop_after_three() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    ckpt = Checkpointer(tmp_path, "h")
    with pytest.raises(Interrupted):
        InvertingGradients(cfg, seed=3, checkpointer=ckpt, should_stop=stop_after_three).reconstruct(payload, update)
    resumed = InvertingGradients(cfg, seed=3, checkpointer=Checkpointer(tmp_path, "h")).reconstruct(payload, update)
    assert torch.equal(full.images, resumed.images)


def test_reconstruction_artifact_round_trip(tmp_path) -> None:
    rec = Reconstruction(
        torch.rand(2, 1, 8, 8), torch.tensor([1, 2]), "shared", 0.25, torch.tensor([0.25, 0.5]), {"a": 1}
    )
    back = Reconstruction.load(rec.save(tmp_path / "r"))
    assert torch.equal(back.images, rec.images) and back.label_source == "shared" and back.meta == {"a": 1}


def test_bad_settings_name_the_field() -> None:
    with pytest.raises(ConfigError, match="invert.restarts"):
        invert_config(restarts=0)
    with pytest.raises(ConfigError, match="local_steps"):
        ClientUpdate("delta", {}, 1, local_steps=0, local_lr=0.1)
