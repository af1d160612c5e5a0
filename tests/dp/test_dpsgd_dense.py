"""Ghost clipping's dense path (DenseGhost: forward and backward written out for Linear layers and
elementwise activations with the default cross-entropy) against the general hook-and-autograd path and
against vmap(grad), and every case that must leave it for the general path."""

import numpy as np
import pytest
import torch
from torch import nn

import ppml.dp.dpsgd as dpsgd_module
from ppml.dp.accounting import PrivacyAccountant
from ppml.dp.dpsgd import DPSGD, _Plan, clipped_gradient_sum, per_sample_gradients
from ppml.dp.ghost import DenseGhost
from ppml.models.zoo import build_model

pytestmark = pytest.mark.filterwarnings("ignore:.*secure=False.*:ppml.dp.mechanisms.PrivacyWarning")


def _dense_models():
    torch.manual_seed(0)
    return {
        "zoo mlp": build_model("mlp", (1, 4, 3), 3, hidden=(16, 8), seed=0),
        "flatten relu tanh": nn.Sequential(
            nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3)
        ),
        "gelu, in-place leaky relu, no bias": nn.Sequential(
            nn.Flatten(),
            nn.Linear(12, 10, bias=False),
            nn.GELU(),
            nn.Identity(),
            nn.Linear(10, 7),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Linear(7, 3, bias=False),
        ),
        "sigmoid on the input, in-place relu": nn.Sequential(
            nn.Flatten(), nn.Sigmoid(), nn.Linear(12, 9), nn.ReLU(inplace=True), nn.Linear(9, 3)
        ),
        "one layer": nn.Sequential(nn.Flatten(), nn.Linear(12, 3)),
    }


def _batch(n=11, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 4, 3, generator=g, dtype=torch.float64), torch.randint(0, 3, (n,), generator=g)


@pytest.fixture
def general_only(monkeypatch):
    """Force the general path (as if no model were dense)."""
    monkeypatch.setattr(DenseGhost, "entries", lambda self, X, y: None)


@pytest.fixture
def no_general(monkeypatch):
    """Fail if the general path runs."""

    def refuse(*args, **kwargs):
        raise AssertionError("the general ghost path ran")

    monkeypatch.setattr(dpsgd_module, "ghost_pass", refuse)


@pytest.mark.parametrize("name", list(_dense_models()))
def test_dense_path_is_taken_and_equals_vmap(name, no_general):
    model = _dense_models()[name].double()
    X, y = _batch()
    assert _Plan(model, "ghost", "test").dense is not None
    ref = per_sample_gradients(model, X, y)
    norms = torch.sqrt(sum(g.reshape(len(X), -1).pow(2).sum(1) for g in ref.values()))
    clip = float(norms.median())
    assert 0 < int((norms > clip).sum()) < len(X)
    out = clipped_gradient_sum(model, X, y, clip, clipping="ghost")
    c = torch.clamp(clip / norms, max=1.0)
    for k, g in ref.items():
        assert float(g.abs().max()) > 0, k
        torch.testing.assert_close(
            out.layer_norms[k], g.reshape(len(X), -1).norm(dim=1), rtol=1e-7, atol=1e-12
        )
        torch.testing.assert_close(out.grad_sum[k], torch.einsum("b,b...->...", c, g), rtol=1e-7, atol=1e-12)
    torch.testing.assert_close(out.norms, norms, rtol=1e-7, atol=1e-12)


@pytest.mark.parametrize("name", [k for k in _dense_models() if "in-place" not in k])  # general refuses those
def test_dense_and_general_paths_agree_with_per_layer_clipping(name, monkeypatch):
    model = _dense_models()[name].double()
    X, y = _batch(seed=3)
    bounds = {k: 0.3 for k, p in model.named_parameters()}
    dense = clipped_gradient_sum(model, X, y, bounds, clipping="ghost")
    monkeypatch.setattr(DenseGhost, "entries", lambda self, X, y: None)
    general = clipped_gradient_sum(model, X, y, bounds, clipping="ghost")
    for k in bounds:
        torch.testing.assert_close(dense.grad_sum[k], general.grad_sum[k], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(dense.layer_factors[k], general.layer_factors[k], rtol=1e-9, atol=1e-12)


def test_dpsgd_steps_on_the_dense_path_equal_the_general_path(monkeypatch):
    def train():
        torch.manual_seed(0)
        model = _dense_models()["flatten relu tanh"].double()
        X, y = _batch(n=64, seed=5)
        opt = DPSGD(1.0, 0.5, sampling_rate=0.25, lr=0.1, momentum=0.9, clipping="ghost")
        acc = PrivacyAccountant("rdp", 1e-5)
        opt.fit(model, X, y, accountant=acc, steps=6, rng=np.random.default_rng(2))
        return torch.cat([p.detach().reshape(-1) for p in model.parameters()]), acc.epsilon()

    w_dense, eps_dense = train()
    monkeypatch.setattr(DenseGhost, "entries", lambda self, X, y: None)
    w_general, eps_general = train()
    assert eps_dense == eps_general
    torch.testing.assert_close(w_dense, w_general, rtol=1e-9, atol=1e-12)


def test_hooks_custom_losses_soft_labels_and_frozen_layers_take_the_general_path(monkeypatch):
    calls = []
    original = dpsgd_module.ghost_pass

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(dpsgd_module, "ghost_pass", counting)
    X, y = _batch()
    model = _dense_models()["flatten relu tanh"].double()
    clipped_gradient_sum(model, X, y, 1.0, clipping="ghost")
    assert calls == []  # dense
    # A forward hook (here one that records what it sees) must run: the dense path would bypass it.
    seen = []
    handle = model[3].register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    hooked = clipped_gradient_sum(model, X, y, 1.0, clipping="ghost")
    handle.remove()
    assert calls == [1] and seen == [(len(X), 8)]
    flat = clipped_gradient_sum(model, X, y, 1.0, clipping="flat")
    torch.testing.assert_close(hooked.grad_sum["5.weight"], flat.grad_sum["5.weight"], rtol=1e-7, atol=1e-12)
    # A backward hook too (a full backward hook sees the gradient at the module's output).
    grads = []
    handle = model[5].register_full_backward_hook(lambda m, gi, go: grads.append(go[0].shape))
    clipped_gradient_sum(model, X, y, 1.0, clipping="ghost")
    handle.remove()
    assert calls == [1, 1] and grads
    # A custom loss (here with soft labels) is not the dense path's cross-entropy.
    soft = torch.softmax(torch.randn(len(X), 3, dtype=torch.float64), 1)

    def soft_ce(out, t):
        return -(t * torch.log_softmax(out, 1)).sum(1)

    clipped_gradient_sum(model, X, soft, 1.0, clipping="ghost", loss_fn=soft_ce)
    assert calls == [1, 1, 1]
    # A frozen Linear layer: the trainable parameters are not the dense chain's.
    model[1].weight.requires_grad_(False)
    assert _Plan(model, "ghost", "test").dense is None


def test_labels_out_of_range_raise_cross_entropys_error_on_either_path():
    model = _dense_models()["flatten relu tanh"].double()
    X, y = _batch()
    y[0] = 3
    with pytest.raises(IndexError, match="out of bounds"):
        clipped_gradient_sum(model, X, y, 1.0, clipping="ghost")
