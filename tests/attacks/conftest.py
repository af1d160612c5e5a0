import numpy as np
import pytest

from ppml.models import build_model
from ppml.train import TrainConfig, train_epochs


def _overfit_target(n_pool=400, seed=0):
    """An overfit MLP on noisy synthetic data: half of a pool of candidates are its members.

    Returns ``(X, y, is_member, cfg, arch, target)``: the candidate pool, the membership truth, the
    training recipe, an untrained copy of the architecture (for shadow models) and the trained target.
    Pools of different sizes share their class centres (the first rows are the same draws).
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(5, 30))
    y = rng.integers(0, 5, n_pool)
    X = (centres[y] + 1.5 * rng.normal(size=(n_pool, 30))).astype(np.float32)
    flip = rng.random(n_pool) < 0.2  # label noise: memorised by the target, the membership signal
    y = np.where(flip, rng.integers(0, 5, n_pool), y).astype(np.int64)
    is_member = np.zeros(n_pool, bool)
    is_member[rng.choice(n_pool, n_pool // 2, replace=False)] = True
    cfg = TrainConfig(epochs=30, batch_size=32, lr=0.05, momentum=0.5)
    arch = build_model("mlp", (30,), 5, hidden=(64,), seed=0)
    target = build_model("mlp", (30,), 5, hidden=(64,), seed=99)
    train_epochs(target, X[is_member], y[is_member], cfg, np.random.default_rng(seed + 1))
    return X, y, is_member, cfg, arch, target


@pytest.fixture(scope="session")
def overfit_target():
    """Factory for the membership-inference test world (see :func:`_overfit_target`)."""
    return _overfit_target
