"""The small classification datasets that ship inside scikit-learn, as :class:`Dataset`.

They need no files and no network, so they are what tests, examples and quick experiments use.

Scaling is fixed, never learned from the data, so that loading can not leak statistics of a
test split into training:

* ``digits``: pixel intensities 0..16 divided by 16, in [0, 1].
* ``breast_cancer``, ``wine``, ``iris``: raw measurements, whose columns span very different
  ranges (breast_cancer's from hundredths to thousands). ``meta["standardize"]`` is True: models
  should standardise features with the mean and standard deviation of their *training* split.

None of them has a standard train/test split; :func:`ppml.data.registry.load_dataset` makes one
on request (``test_fraction``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .._validation import Options, check_param
from .dataset import Dataset

__all__ = [
    "BUNDLED_DATASETS",
    "load_bundled",
    "load_digits",
    "load_breast_cancer",
    "load_wine",
    "load_iris",
]

_ORIGINS = {
    "digits": "UCI Optical Recognition of Handwritten Digits (test part, 8x8), bundled with scikit-learn",
    "breast_cancer": "UCI Breast Cancer Wisconsin (Diagnostic), bundled with scikit-learn",
    "wine": "UCI Wine (Forina et al.), bundled with scikit-learn",
    "iris": "Fisher's Iris (UCI), bundled with scikit-learn",
}


def _from_bunch(
    name: str, bunch: Any, X: np.ndarray, *, scaling: str, standardize: bool, extra: dict | None = None
) -> Dataset:
    return Dataset(
        X=np.ascontiguousarray(X, dtype=np.float32),
        y=np.asarray(bunch.target, dtype=np.int64),
        name=name,
        num_classes=len(bunch.target_names),
        feature_names=tuple(str(f) for f in bunch.feature_names),
        source=f"scikit-learn bundled (sklearn.datasets.load_{name})",
        class_names=tuple(str(c) for c in bunch.target_names),
        meta={"origin": _ORIGINS[name], "scaling": scaling, "standardize": standardize, **(extra or {})},
    )


def load_digits(*, as_images: bool = False) -> Dataset:
    """Handwritten digits, 1,797 images of 8x8 pixels, 10 classes.

    Parameters
    ----------
    as_images : bool
        Shape ``X`` as images (n, 1, 8, 8) instead of flat vectors (n, 64).

    Returns
    -------
    Dataset
        ``X`` float32 with pixel intensities (0..16) divided by 16, in [0, 1].
    """
    from sklearn import datasets

    check_param("as_images", as_images, "load_digits", bool)
    bunch = datasets.load_digits()
    X = bunch.data / 16.0
    if as_images:
        X = X.reshape(-1, 1, 8, 8)
    return _from_bunch(
        "digits",
        bunch,
        X,
        scaling="pixels / 16, in [0, 1]",
        standardize=False,
        extra={"image_shape": (1, 8, 8)},
    )


def load_breast_cancer() -> Dataset:
    """Breast Cancer Wisconsin (Diagnostic): 569 tumours, 30 raw features, malignant (0) / benign (1).

    Returns
    -------
    Dataset
        ``X`` float32, raw; standardise with training-split statistics (``meta["standardize"]``).
    """
    from sklearn import datasets

    bunch = datasets.load_breast_cancer()
    return _from_bunch("breast_cancer", bunch, bunch.data, scaling="raw", standardize=True)


def load_wine() -> Dataset:
    """Wine recognition: 178 wines, 13 raw chemical measurements, 3 cultivars.

    Returns
    -------
    Dataset
        ``X`` float32, raw; standardise with training-split statistics (``meta["standardize"]``).
    """
    from sklearn import datasets

    bunch = datasets.load_wine()
    return _from_bunch("wine", bunch, bunch.data, scaling="raw", standardize=True)


def load_iris() -> Dataset:
    """Fisher's iris: 150 flowers, 4 raw measurements in cm, 3 species.

    Returns
    -------
    Dataset
        ``X`` float32, raw; standardise with training-split statistics (``meta["standardize"]``).
    """
    from sklearn import datasets

    bunch = datasets.load_iris()
    return _from_bunch("iris", bunch, bunch.data, scaling="raw", standardize=True)


_LOADERS: dict[str, Callable[..., Dataset]] = {
    "digits": load_digits,
    "breast_cancer": load_breast_cancer,
    "wine": load_wine,
    "iris": load_iris,
}

#: Names of the bundled datasets.
BUNDLED_DATASETS: tuple[str, ...] = tuple(_LOADERS)


def load_bundled(name: str, **kwargs: Any) -> Dataset:
    """Load the bundled dataset ``name`` (one of :data:`BUNDLED_DATASETS`).

    Parameters
    ----------
    name : str
        ``"digits"``, ``"breast_cancer"``, ``"wine"`` or ``"iris"``.
    **kwargs
        Passed to the dataset's loader (``as_images`` for digits).
    """
    check_param("name", name, "load_bundled", Options(BUNDLED_DATASETS))
    return _LOADERS[name](**kwargs)
