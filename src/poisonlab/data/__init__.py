"""Datasets with stable integer ids, held as tensors."""

from poisonlab.data.dataset import Dataset, Splits
from poisonlab.data.poisoned import PoisonedDataset
from poisonlab.data.registry import DATASETS, dataset_names, load_dataset

__all__ = ["DATASETS", "Dataset", "PoisonedDataset", "Splits", "dataset_names", "load_dataset"]
