"""A malicious pickle fed to every load path never executes; unsafe YAML is refused."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from poisonlab.config import load_config
from poisonlab.errors import CheckpointError, ConfigError
from poisonlab.io import Checkpointer, load_artifact, save_artifact
from poisonlab.io.safe_load import read_safetensors, torch_load_weights


class _Payload:
    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (Path.touch, (self.sentinel,))


def _evil(tmp_path: Path) -> tuple[bytes, Path]:
    sentinel = tmp_path / "PWNED"
    return pickle.dumps({"weights": _Payload(sentinel)}), sentinel


def test_payload_really_executes_under_plain_pickle(tmp_path) -> None:
    blob, sentinel = _evil(tmp_path)
    pickle.loads(blob)  # the control: proves the payload is live
    assert sentinel.exists()


def test_checkpoint_state_file_replaced_by_pickle(tmp_path) -> None:
    blob, sentinel = _evil(tmp_path)
    ck = Checkpointer(tmp_path / "ck", "h")
    path = ck.save(1, {"w": torch.ones(2)})
    (path / "state.safetensors").write_bytes(blob)
    with pytest.raises(CheckpointError):
        ck.load_latest()
    assert not sentinel.exists()


def test_artifact_tensor_file_replaced_by_pickle(tmp_path) -> None:
    blob, sentinel = _evil(tmp_path)
    save_artifact(tmp_path / "a", "model", {"w": torch.ones(2)}, {})
    (tmp_path / "a" / "tensors.safetensors").write_bytes(blob)
    with pytest.raises(CheckpointError):
        load_artifact(tmp_path / "a", "model")
    assert not sentinel.exists()


def test_safetensors_reader_without_manifest(tmp_path) -> None:
    blob, sentinel = _evil(tmp_path)
    (tmp_path / "x.safetensors").write_bytes(blob)
    with pytest.raises(CheckpointError, match="safetensors"):
        read_safetensors(tmp_path / "x.safetensors")
    assert not sentinel.exists()


def test_third_party_pt_file_with_payload(tmp_path) -> None:
    sentinel = tmp_path / "PWNED"
    path = tmp_path / "model.pt"
    torch.save({"w": _Payload(sentinel)}, path)  # torch.save pickles the payload
    with pytest.raises(CheckpointError, match="refused"):
        torch_load_weights(path)
    assert not sentinel.exists()
    torch.save({"w": torch.ones(2)}, tmp_path / "ok.pt")
    assert torch.equal(torch_load_weights(tmp_path / "ok.pt")["w"], torch.ones(2))


def test_yaml_python_tags_are_refused(tmp_path) -> None:
    sentinel = tmp_path / "PWNED"
    p = tmp_path / "evil.yaml"
    p.write_text(f"seed: !!python/object/apply:pathlib.Path.touch [{str(sentinel)!r}]\n")
    with pytest.raises(ConfigError):
        load_config(p)
    assert not sentinel.exists()


def test_cli_model_workdir_with_pickle(tmp_path, capsys) -> None:
    from poisonlab.cli import main

    blob, sentinel = _evil(tmp_path)
    save_artifact(tmp_path / "w" / "model", "model", {"w": torch.ones(2)}, {"config": {}})
    (tmp_path / "w" / "model" / "tensors.safetensors").write_bytes(blob)
    assert main(["evaluate", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not sentinel.exists()
