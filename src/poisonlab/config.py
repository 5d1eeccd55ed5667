"""Typed, frozen experiment configuration: YAML (safe_load) + dotted ``--set`` overrides.

Unknown keys and out-of-range values raise ConfigError naming the field. Ratios such as ``16/255``
are accepted wherever a float is expected. The config hash goes into every checkpoint and result.
"""

from __future__ import annotations

import hashlib
import json
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from poisonlab.errors import ConfigError


def _ratio(value: Any) -> Any:
    """Accept '16/255' (and plain numbers) for floats."""
    if isinstance(value, str) and "/" in value:
        try:
            return float(Fraction(value.strip()))
        except (ValueError, ZeroDivisionError):
            return value
    return value


Ratio = Annotated[float, BeforeValidator(_ratio)]


class Frozen(BaseModel):
    """Base for config sections: frozen, unknown keys forbidden."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class DataConfig(Frozen):
    name: str = "mnist5k"
    root: str | None = Field(None, description="folder of an on-disk dataset; default data/<name>")


NormName = Literal["batch", "group", "none"]
NORMS: tuple[str, ...] = get_args(NormName)


class ModelConfig(Frozen):
    name: str = "convnet"
    width: int | None = Field(None, gt=0, description="channel/hidden width; None = the model's default")
    norm: NormName = "batch"


class TrainConfig(Frozen):
    """A training recipe. Defaults: the poisoning papers' victim recipe, shortened for mnist5k."""

    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: Ratio = Field(0.01, gt=0)
    momentum: Ratio = Field(0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: Ratio = Field(5e-4, ge=0)
    epochs: int = Field(8, gt=0, le=10_000)
    batch_size: int = Field(128, gt=0)
    schedule: Literal["multistep", "cosine", "none"] = "multistep"
    augment: bool = False
    drop_last: bool = False

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> TrainConfig:
        if self.optimizer == "sgd" and self.nesterov and self.momentum == 0:
            raise ValueError("nesterov requires momentum > 0")
        return self


class RuntimeConfig(Frozen):
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(None, gt=0, le=1024, description="CPU threads; None = torch default")
    deterministic: bool = False
    amp: bool = True
    channels_last: bool = True
    checkpoint_every: int = Field(1, gt=0, description="epochs between checkpoints")
    keep_checkpoints: int = Field(2, gt=0)


class ExperimentConfig(Frozen):
    seed: int = Field(0, ge=0, lt=2**63)
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    runtime: RuntimeConfig = RuntimeConfig()

    def config_hash(self) -> str:
        """sha256 of the canonical JSON of every field that can change a result."""
        payload = self.model_dump(mode="json")
        payload.pop("runtime")  # where and how fast it runs, not what it computes (CPU bits documented)
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _format_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "config"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    got = first.get("input")
    shown = "" if first["type"] == "extra_forbidden" or isinstance(got, dict) else f" (got {got!r})"
    return f"{loc}: {msg}{shown}"


def build(model: type[Frozen], data: dict[str, Any]) -> Any:
    """Validate ``data`` into ``model``, raising ConfigError naming the first bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=c`` overrides; values are parsed as YAML scalars (``8``, ``true``, ``16/255``)."""
    out = json.loads(json.dumps(data))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"--set {item!r}: empty key")
        node = out
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"{key}: {p} is not a section")
            node = nxt
        try:
            node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            node[parts[-1]] = raw
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with safe_load; errors name the file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as err:
        raise ConfigError(f"{p}: cannot read config file ({err.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: invalid YAML ({str(err).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    return data


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> ExperimentConfig:
    """ExperimentConfig from an optional base mapping, an optional YAML file and overrides, in that order."""
    data = dict(base or {})
    if path is not None:
        data = _merge(data, load_yaml(path))
    data = apply_overrides(data, overrides or [])
    return build(ExperimentConfig, data)


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
