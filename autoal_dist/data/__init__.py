"""Datasets (registry), the Pool and its parquet store."""
from autoal_dist.data import (
    embedded,  # noqa: F401  (registers digits, synthetic)
    files,  # noqa: F401  (registers npz, parquet)
    packaged,  # noqa: F401  (registers medmnist, cifar10, cifar100, svhn)
    stored_pool,  # noqa: F401  (registers pool)
    tinyimagenet,  # noqa: F401  (registers tinyimagenet)
)
from autoal_dist.data.base import DATASETS, DataError, Dataset, load_dataset, validate

__all__ = ["DATASETS", "DataError", "Dataset", "load_dataset", "validate"]
