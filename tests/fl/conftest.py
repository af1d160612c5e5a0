import numpy as np
import pytest

from ppml.data.dataset import ClientData, Dataset


@pytest.fixture
def scattered_clients():
    """Factory: clients of the given sizes holding scattered rows of one toy parent dataset."""

    def make(sizes, d=6, classes=3, seed=0):
        rng = np.random.default_rng(seed)
        n = sum(sizes)
        y = rng.integers(0, classes, n)
        X = (rng.normal(size=(n, d)) + y[:, None]).astype(np.float32)
        ds = Dataset(X=X, y=y.astype(np.int64), name="toy", num_classes=classes)
        bounds = np.cumsum([0, *sizes])
        perm = rng.permutation(n)
        return ds, [ClientData(i, np.sort(perm[bounds[i] : bounds[i + 1]]), ds) for i in range(len(sizes))]

    return make
