import numpy as np
import pytest
import torch

from ppml import ParameterError
from ppml.models import build_model, get_flat
from ppml.train import TrainConfig, evaluate, train_epochs


def _blobs(n=400, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = (rng.normal(size=(n, 2)) + 2.5 * y[:, None]).astype(np.float32)
    return X, y.astype(np.int64)


def test_training_learns_separable_data_and_is_reproducible():
    torch.set_num_threads(1)
    X, y = _blobs()
    m1 = build_model("logistic", (2,), 2, seed=0)
    m2 = build_model("logistic", (2,), 2, seed=0)
    before = evaluate(m1, X, y)["accuracy"]
    train_epochs(m1, X, y, TrainConfig(epochs=5, batch_size=16, lr=0.1), np.random.default_rng(1))
    train_epochs(m2, X, y, TrainConfig(epochs=5, batch_size=16, lr=0.1), np.random.default_rng(1))
    after = evaluate(m1, X, y)["accuracy"]
    assert after > 0.9 > before or after > before + 0.2
    assert torch.equal(get_flat(m1), get_flat(m2))


def test_full_batch_step_equals_one_gradient_step():
    X, y = _blobs(50)
    m = build_model("logistic", (2,), 2, seed=0)
    w0 = get_flat(m)
    ref = build_model("logistic", (2,), 2, seed=0)
    loss = torch.nn.functional.cross_entropy(ref(torch.from_numpy(X)), torch.from_numpy(y))
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    expected = w0 - 0.5 * torch.cat([g.reshape(-1) for g in grads])
    train_epochs(m, X, y, TrainConfig(epochs=1, batch_size=None, lr=0.5), np.random.default_rng(0))
    assert torch.allclose(get_flat(m), expected, atol=1e-6)


@pytest.mark.parametrize(
    ("field", "value"), [("epochs", 0), ("lr", 0.0), ("batch_size", 0), ("momentum", 1.5)]
)
def test_bad_train_config(field, value):
    with pytest.raises(ParameterError, match=f"'{field}' parameter of TrainConfig"):
        TrainConfig(**{field: value})
