"""Checkpoints and artifacts: exact round trips, atomicity, verification, config-hash refusal."""

from __future__ import annotations

import json
import os

import pytest
import torch

from poisonlab.errors import CheckpointError
from poisonlab.io import Checkpointer, load_artifact, save_artifact
from poisonlab.io import checkpoint as checkpoint_module
from poisonlab.io.tree import flatten_state, unflatten_state


def _state(v: float = 1.0) -> dict:
    g = torch.Generator().manual_seed(3)
    return {
        "w": torch.full((3, 2), v),
        "opt": {"state": {0: {"momentum_buffer": torch.ones(2)}}, "param_groups": [{"lr": 0.1, "params": [0]}]},
        "rng": g.get_state(),
        "pos": (1, 2),
        "none": None,
        "flag": True,
    }


def test_tree_round_trip_keeps_key_types_and_tuples() -> None:
    tensors, tree = flatten_state(_state())
    back = unflatten_state(tensors, json.loads(json.dumps(tree)))
    assert list(back["opt"]["state"]) == [0] and back["pos"] == (1, 2) and back["none"] is None
    assert torch.equal(back["w"], _state()["w"]) and torch.equal(back["rng"], _state()["rng"])
    with pytest.raises(TypeError):
        flatten_state({"x": object()})


def test_checkpointer_round_trip_between_instances_and_keep(tmp_path) -> None:
    a = Checkpointer(tmp_path, "hash1", keep=2)
    for step in (1, 2, 3):
        a.save(step, _state(float(step)))
    assert [p.name for p in a.list()] == ["step-0000000002", "step-0000000003"]
    b = Checkpointer(tmp_path, "hash1")
    got = b.load_latest()
    assert torch.equal(got["w"], torch.full((3, 2), 3.0))
    g = torch.Generator()
    g.set_state(got["rng"])
    assert torch.equal(torch.rand(4, generator=g), torch.rand(4, generator=torch.Generator().manual_seed(3)))


def test_changed_config_is_refused_unless_force_new(tmp_path) -> None:
    Checkpointer(tmp_path, "hash1").save(1, _state())
    with pytest.raises(CheckpointError, match="--force-new"):
        Checkpointer(tmp_path, "hash2").load_latest()
    assert Checkpointer(tmp_path, "hash2").load_latest(force_new=True) is None
    assert Checkpointer(tmp_path, "hash1").list() == []


def test_crash_mid_save_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch) -> None:
    ck = Checkpointer(tmp_path, "h")
    ck.save(1, _state(1.0))

    def crash(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(checkpoint_module, "sha256_file", crash)  # dies after the tensor file is written
    with pytest.raises(OSError):
        ck.save(2, _state(2.0))
    monkeypatch.undo()
    assert [p.name for p in ck.list()] == ["step-0000000001"]
    assert not any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())
    assert torch.equal(ck.load_latest()["w"], torch.full((3, 2), 1.0))


def test_killed_save_leftover_temp_dir_is_ignored(tmp_path) -> None:
    ck = Checkpointer(tmp_path, "h")
    ck.save(1, _state(1.0))
    junk = tmp_path / ".tmp-step-0000000002-abc"
    junk.mkdir()
    (junk / "state.safetensors").write_bytes(b"partial")
    assert torch.equal(ck.load_latest()["w"], torch.full((3, 2), 1.0))


@pytest.mark.parametrize("damage", ["truncate", "flip", "manifest", "missing"])
def test_corrupt_checkpoint_is_rejected(tmp_path, damage: str) -> None:
    ck = Checkpointer(tmp_path, "h")
    path = ck.save(1, _state())
    state = path / "state.safetensors"
    if damage == "truncate":
        state.write_bytes(state.read_bytes()[:-10])
    elif damage == "flip":
        data = bytearray(state.read_bytes())
        data[-1] ^= 0xFF
        state.write_bytes(bytes(data))
    elif damage == "manifest":
        (path / "manifest.json").write_text("{not json")
    else:
        os.unlink(state)
    with pytest.raises(CheckpointError) as info:
        ck.load_latest()
    assert str(path) in str(info.value)


def test_oversized_manifest_rejected_before_parsing(tmp_path, monkeypatch) -> None:
    from poisonlab.io import safe_load

    ck = Checkpointer(tmp_path, "h")
    ck.save(1, _state())
    monkeypatch.setattr(safe_load, "MAX_MANIFEST_BYTES", 10)
    monkeypatch.setattr(checkpoint_module, "read_json", lambda p: safe_load.read_json(p, 10))
    with pytest.raises(CheckpointError, match="limit"):
        ck.load_latest()


def test_artifact_round_trip_exact_and_kind_checked(tmp_path) -> None:
    tensors = {"delta": torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)), "ids": torch.arange(4)}
    save_artifact(tmp_path / "a", "poisons", tensors, {"eps": 8 / 255})
    got, meta = load_artifact(tmp_path / "a", "poisons")
    assert all(torch.equal(got[k], v) for k, v in tensors.items()) and meta == {"eps": 8 / 255}
    with pytest.raises(CheckpointError, match="expected 'model'"):
        load_artifact(tmp_path / "a", "model")
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    manifest["shapes"]["ids"] = [5]
    (tmp_path / "a" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="shapes"):
        load_artifact(tmp_path / "a", "poisons")
    with pytest.raises(CheckpointError, match="no such"):
        load_artifact(tmp_path / "missing", "poisons")
