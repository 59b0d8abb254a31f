"""Datasets (registry), the Pool and its parquet store."""
from autoal_dist.data import embedded  # noqa: F401  (registers digits, synthetic)
from autoal_dist.data.base import DATASETS, DataError, Dataset, load_dataset, validate

__all__ = ["DATASETS", "DataError", "Dataset", "load_dataset", "validate"]
