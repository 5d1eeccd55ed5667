"""Config validation table: every invalid value raises ConfigError naming the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from poisonlab.config import ExperimentConfig, apply_overrides, load_config
from poisonlab.errors import ConfigError

INVALID = [
    ("train.lr=0", "train.lr"),
    ("train.lr=-0.1", "train.lr"),
    ("train.epochs=0", "train.epochs"),
    ("train.batch_size=0", "train.batch_size"),
    ("train.momentum=1.0", "train.momentum"),
    ("train.weight_decay=-1", "train.weight_decay"),
    ("train.optimizer=rmsprop", "train.optimizer"),
    ("train.schedule=linear-ramp", "train.schedule"),
    ("model.width=0", "model.width"),
    ("model.norm=layer", "model.norm"),
    ("runtime.threads=0", "runtime.threads"),
    ("runtime.device=tpu", "runtime.device"),
    ("runtime.checkpoint_every=0", "runtime.checkpoint_every"),
    ("seed=-1", "seed"),
    ("seed=abc", "seed"),
    ("train.unknown=1", "train.unknown"),
    ("typo=1", "typo"),
    ("train.epochs=2.5", "train.epochs"),
]


@pytest.mark.parametrize("override,field", INVALID)
def test_invalid_values_name_the_field(override: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[override])
    assert str(info.value).startswith(field + ":"), str(info.value)
    assert "\n" not in str(info.value)


def test_nesterov_without_momentum_is_rejected() -> None:
    with pytest.raises(ConfigError, match="train"):
        load_config(overrides=["train.momentum=0"])


def test_ratios_and_types_parse() -> None:
    cfg = load_config(overrides=["train.lr=1/255", "train.augment=true", "model.width=8"])
    assert cfg.train.lr == pytest.approx(1 / 255)
    assert cfg.train.augment is True and cfg.model.width == 8


def test_config_is_frozen_and_hash_tracks_results_not_runtime() -> None:
    a = ExperimentConfig()
    with pytest.raises(ValidationError):
        a.seed = 3  # type: ignore[misc]
    assert a.config_hash() == ExperimentConfig().config_hash()
    assert load_config(overrides=["seed=1"]).config_hash() != a.config_hash()
    assert load_config(overrides=["runtime.threads=1"]).config_hash() == a.config_hash()


def test_yaml_file_and_overrides(tmp_path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("seed: 3\ntrain:\n  epochs: 2\n")
    cfg = load_config(p, ["train.epochs=5"])
    assert cfg.seed == 3 and cfg.train.epochs == 5


@pytest.mark.parametrize(
    "text,needle",
    [("[1, 2]", "mapping"), ("seed: [unclosed", "invalid YAML"), ("!!python/object/apply:os.system ['true']", "YAML")],
)
def test_bad_yaml_files(tmp_path, text: str, needle: str) -> None:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_config(p)


def test_missing_config_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


def test_override_syntax_errors() -> None:
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["novalue"])
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides({"seed": 1}, ["seed.x=2"])
