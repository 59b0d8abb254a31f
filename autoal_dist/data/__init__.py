"""Datasets (registry), the Pool and its parquet store."""
from autoal_dist.data import embedded  # noqa: F401  (registers digits, synthetic)
from autoal_dist.data import files  # noqa: F401  (registers npz, parquet)
from autoal_dist.data import packaged  # noqa: F401  (registers medmnist, cifar10, cifar100, svhn)
from autoal_dist.data import tinyimagenet  # noqa: F401  (registers tinyimagenet)
from autoal_dist.data.base import DATASETS, DataError, Dataset, load_dataset, validate

__all__ = ["DATASETS", "DataError", "Dataset", "load_dataset", "validate"]
