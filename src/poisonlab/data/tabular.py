"""Embedded tabular data with categorical (sensitive) attributes: Fair's extramarital-affairs survey.

The records are encoded as a Dataset of shape (N, 1, 1, F) with every feature in [0, 1], so tabular models,
the Trainer and PoisonedDataset work on them unchanged: numeric columns are min-max scaled over the whole
table, categorical columns are one-hot. A :class:`TabularSchema` says which feature columns hold which
categorical attribute, which is what attribute inference needs to complete a partial record.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from poisonlab.data.dataset import Dataset, Splits, stratified_split
from poisonlab.data.registry import DatasetSpec, register_dataset
from poisonlab.errors import ConfigError, DataError

_SPLIT_SEED = 20201  # fixed forever, like the image datasets' split


@dataclass(frozen=True)
class CategoricalColumn:
    """A categorical attribute one-hot encoded in feature columns ``start .. start + len(values) - 1``."""

    name: str
    start: int
    values: tuple[str, ...]

    @property
    def stop(self) -> int:
        return self.start + len(self.values)


@dataclass(frozen=True)
class TabularSchema:
    """Names of the F feature columns and the categorical attributes among them."""

    features: tuple[str, ...]
    categorical: tuple[CategoricalColumn, ...]

    def attribute(self, name: str, field: str = "attribute") -> CategoricalColumn:
        """The categorical column ``name``; ConfigError naming ``field`` when there is none."""
        for col in self.categorical:
            if col.name == name:
                return col
        raise ConfigError(f"{field}: unknown categorical attribute {name!r}; expected one of {self.attribute_names()}")

    def attribute_names(self) -> list[str]:
        return [c.name for c in self.categorical]


def attribute_values(features: torch.Tensor, column: CategoricalColumn) -> torch.Tensor:
    """Index of the attribute value of each row, from its one-hot columns; ``features`` is (N, 1, 1, F)."""
    return features.reshape(features.shape[0], -1)[:, column.start : column.stop].argmax(1)


def complete_records(features: torch.Tensor, column: CategoricalColumn) -> torch.Tensor:
    """Every completion of each record with each attribute value: (T, 1, 1, F) -> (T, m, 1, 1, F).

    The attribute's one-hot columns are overwritten, the other features kept, so the result depends only on
    what an attacker who lacks the attribute knows. The input is not modified.
    """
    t = features.shape[0]
    m = len(column.values)
    out = features.reshape(t, 1, -1).repeat(1, m, 1)
    out[:, :, column.start : column.stop] = torch.eye(m, dtype=out.dtype, device=out.device)
    return out.reshape(t, m, *features.shape[1:])


# ---------------------------------------------------------------- Fair (1978) affairs survey
_FAIR_NUMERIC = ("age", "yrs_married", "children", "educ")
_FAIR_CATEGORICAL: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("rate_marriage", ("very poor", "poor", "fair", "good", "very good")),
    ("religious", ("not", "mildly", "fairly", "strongly")),
    ("occupation", ("student", "farming/semi-skilled/unskilled", "white collar", "teacher/nurse/writer/technician",
                    "managerial/business", "professional")),
    ("occupation_husb", ("student", "farming/semi-skilled/unskilled", "white collar",
                         "teacher/nurse/writer/technician", "managerial/business", "professional")),
)  # fmt: skip
FAIR_CLASSES = ("no affair", "affair")


@lru_cache(maxsize=1)
def _fair_table() -> tuple[np.ndarray, np.ndarray, TabularSchema]:
    try:
        from statsmodels.datasets import fair
    except ImportError as err:  # pragma: no cover - statsmodels is a dependency
        raise DataError(f"fair: needs the statsmodels package, which ships the data ({err})") from None
    table = fair.load_pandas().data
    columns: list[np.ndarray] = []
    names: list[str] = []
    for name in _FAIR_NUMERIC:
        v = table[name].to_numpy(dtype=np.float64)
        columns.append(((v - v.min()) / (v.max() - v.min()))[:, None])
        names.append(name)
    categorical: list[CategoricalColumn] = []
    for name, values in _FAIR_CATEGORICAL:
        codes = table[name].to_numpy(dtype=np.float64).round().astype(np.int64) - 1  # coded 1..m
        if codes.min() < 0 or codes.max() >= len(values):
            raise DataError(f"fair: column {name} has codes outside 1..{len(values)}")
        categorical.append(CategoricalColumn(name, sum(c.shape[1] for c in columns), values))
        columns.append(np.eye(len(values))[codes])
        names += [f"{name}={v}" for v in values]
    x = np.concatenate(columns, axis=1).astype(np.float32)
    y = (table["affairs"].to_numpy() > 0).astype(np.int64)
    return x, y, TabularSchema(tuple(names), tuple(categorical))


def fair_schema() -> TabularSchema:
    """Feature names and categorical attributes of the ``fair`` dataset."""
    return _fair_table()[2]


def load_fair(_root: Path | None = None) -> Splits:
    """Fair's 1974 affairs survey (6,366 women, statsmodels): any affair?, 25 features, 80/20 stratified."""
    x, y, _ = _fair_table()
    tr, te = stratified_split(y, 0.2, _SPLIT_SEED)
    return Splits(
        Dataset.from_numpy("fair", x[tr, None, None, :], y[tr], FAIR_CLASSES, ids=tr, scale=1.0),
        Dataset.from_numpy("fair", x[te, None, None, :], y[te], FAIR_CLASSES, ids=te, scale=1.0),
    )


TABULAR_SCHEMAS = {"fair": fair_schema}


def tabular_schema(name: str) -> TabularSchema:
    """The schema of a registered tabular dataset; ConfigError naming data.name for any other dataset."""
    if name not in TABULAR_SCHEMAS:
        raise ConfigError(f"data.name: {name!r} is not a tabular dataset; expected one of {sorted(TABULAR_SCHEMAS)}")
    return TABULAR_SCHEMAS[name]()


register_dataset(DatasetSpec("fair", load_fair, load_fair.__doc__.splitlines()[0], embedded=True))
