"""Datasets: the synthetic ADAS fleet, scikit-learn's bundled sets, real files from a data
directory, and partitioners that split a dataset across federated clients."""

from .dataset import ClientData, Dataset, train_test_split_by_owner
from .files import DatasetFormatError, DatasetNotFoundError
from .partition import (
    ByOwnerPartitioner,
    DirichletPartitioner,
    IIDPartitioner,
    Partitioner,
    QuantitySkewPartitioner,
    ShardPartitioner,
    make_partitioner,
)
from .registry import DatasetSplits, available_datasets, load_dataset

__all__ = [
    "ByOwnerPartitioner",
    "ClientData",
    "Dataset",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "DatasetSplits",
    "DirichletPartitioner",
    "IIDPartitioner",
    "Partitioner",
    "QuantitySkewPartitioner",
    "ShardPartitioner",
    "available_datasets",
    "load_dataset",
    "make_partitioner",
    "train_test_split_by_owner",
]
