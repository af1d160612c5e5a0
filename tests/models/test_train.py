import numpy as np
import pytest
import torch

from ppml import ParameterError
from ppml.models import build_model, get_flat
from ppml.train import TrainConfig, evaluate, train_epochs
from ppml.train.loop import predict_logits


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


def _conv_case():
    model = build_model("cnn", (3, 12, 12), 3, channels=(4, 6), cnn_hidden=8, seed=0)
    g = torch.Generator().manual_seed(0)
    return model, torch.randn(40, 3, 12, 12, generator=g), torch.randint(0, 3, (40,), generator=g)


def test_conv_models_train_and_predict_in_channels_last_with_the_same_results(monkeypatch):
    import copy

    import ppml.train.loop as loop

    model, X, y = _conv_case()
    plain = copy.deepcopy(model)
    seen = []
    real_forward = type(model).forward

    def spy(self, x):
        w = self.features[0].weight
        seen.append(
            all(t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous() for t in (x, w))
        )
        return real_forward(self, x)

    monkeypatch.setattr(type(model), "forward", spy)
    cfg = TrainConfig(epochs=2, batch_size=8, lr=0.1, momentum=0.9)
    params_before = [id(p) for p in model.parameters()]
    train_epochs(model, X, y, cfg, np.random.default_rng(1))
    assert seen and all(seen)  # every batch reached the model channels-last
    assert [id(p) for p in model.parameters()] == params_before  # same Parameter objects
    assert all(p.is_contiguous() for p in model.parameters())  # default layout restored
    logits = predict_logits(model, X)
    assert seen[-1]
    monkeypatch.setattr(loop, "_channels_last", lambda m, x: False)
    train_epochs(plain, X, y, cfg, np.random.default_rng(1))
    for a, b in zip(model.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logits, predict_logits(plain, X), rtol=1e-4, atol=1e-5)


def test_channels_last_layout_is_restored_after_an_error():
    model, X, y = _conv_case()
    y[0] = 7  # out of range: cross-entropy raises mid-epoch
    with pytest.raises(IndexError):
        train_epochs(model, X, y, TrainConfig(epochs=1, batch_size=40, lr=0.1), np.random.default_rng(0))
    assert all(p.is_contiguous() for p in model.parameters())
