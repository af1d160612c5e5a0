"""In-memory datasets and the clients' views of them.

A :class:`Dataset` holds features ``X`` (float32), integer labels ``y`` and, where the data has
natural owners (a vehicle, a person), an ``owners`` array. A :class:`ClientData` is one client's
*view*: an index array into its parent dataset, so that partitioning 100,000 vehicles never
copies the records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Dataset", "ClientData", "train_test_split_by_owner"]


@dataclass(frozen=True, eq=False)
class Dataset:
    """Features, labels and (optionally) the owner of each example.

    Parameters
    ----------
    X : ndarray of shape (n, ...) float32
        Features; images keep their channel/height/width axes (``(n, 1, 28, 28)``).
    y : ndarray of shape (n,) int64
        Class labels ``0 .. num_classes - 1``.
    name : str
        Registry name (``"adas"``, ``"digits"``, ``"mnist"``, ...).
    num_classes : int
        Number of classes.
    owners : ndarray of shape (n,) int64, optional
        Who each example belongs to (vehicle id, user id). Privacy units for user-level DP and
        natural partitions.
    feature_names : tuple of str, optional
        Names of the feature columns for tabular data.
    source : str
        Where the data came from (a file path, ``"synthetic"``, ``"scikit-learn bundled"``).
    """

    X: np.ndarray
    y: np.ndarray
    name: str
    num_classes: int
    owners: np.ndarray | None = None
    feature_names: tuple[str, ...] | None = None
    source: str = ""
    class_names: tuple[str, ...] | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.X) != len(self.y):
            raise ValueError(f"X and y have different lengths: {len(self.X)} != {len(self.y)}")
        if self.owners is not None and len(self.owners) != len(self.y):
            raise ValueError(f"owners has length {len(self.owners)}, expected {len(self.y)}")

    def __len__(self) -> int:
        return int(len(self.y))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.X.shape[1:])

    def subset(self, indices: np.ndarray, name: str | None = None) -> Dataset:
        """A new Dataset holding ``indices`` (copies the selected rows)."""
        idx = np.asarray(indices)
        return Dataset(
            X=self.X[idx],
            y=self.y[idx],
            name=name or self.name,
            num_classes=self.num_classes,
            owners=None if self.owners is None else self.owners[idx],
            feature_names=self.feature_names,
            source=self.source,
            class_names=self.class_names,
            meta=dict(self.meta),
        )

    def nbytes(self) -> int:
        """Bytes of the raw arrays (what central collection would upload)."""
        total = self.X.nbytes + self.y.nbytes
        return int(total)


@dataclass(frozen=True, eq=False)
class ClientData:
    """One client's share of a :class:`Dataset`, held as indices (no copy).

    ``owner`` is the natural owner's id when the partition is by owner (one client per vehicle).
    """

    client_id: int
    indices: np.ndarray
    parent: Dataset
    owner: int | None = None

    def __len__(self) -> int:
        return int(len(self.indices))

    @property
    def X(self) -> np.ndarray:  # noqa: N802 - the field's name
        return self.parent.X[self.indices]

    @property
    def y(self) -> np.ndarray:
        return self.parent.y[self.indices]

    def label_counts(self) -> np.ndarray:
        return np.bincount(self.parent.y[self.indices], minlength=self.parent.num_classes)


def train_test_split_by_owner(
    dataset: Dataset, test_fraction: float, rng: np.random.Generator
) -> tuple[Dataset, Dataset, np.ndarray, np.ndarray]:
    """Split a dataset so that every owner's records land on one side only.

    Returns ``(train, test, train_owners, test_owners)``. Without owners, examples are split.
    """
    if not 0.0 < test_fraction < 1.0:
        from .._validation import ParameterError

        raise ParameterError(
            "The 'test_fraction' parameter of train_test_split_by_owner must be a float in the range "
            f"(0, 1). Got {test_fraction!r} instead.",
            param="test_fraction",
        )
    units = np.unique(dataset.owners) if dataset.owners is not None else np.arange(len(dataset))
    perm = rng.permutation(units)
    n_test = max(1, int(round(test_fraction * len(units))))
    test_units = np.sort(perm[:n_test])
    train_units = np.sort(perm[n_test:])
    keys = dataset.owners if dataset.owners is not None else np.arange(len(dataset))
    test_mask = np.isin(keys, test_units)
    return (
        dataset.subset(np.flatnonzero(~test_mask)),
        dataset.subset(np.flatnonzero(test_mask)),
        train_units,
        test_units,
    )


def concat_indices(parts: Sequence[ClientData]) -> np.ndarray:
    """All indices of ``parts`` concatenated (helper for tests and pooled training)."""
    return np.concatenate([p.indices for p in parts]) if parts else np.zeros(0, dtype=np.int64)
