"""DP-SGD: per-sample gradients against one-at-a-time autograd, ghost clipping against flat clipping,
noise scale (seeded KS test), accounting that matches what ran, refusals, and a utility sanity check."""

import math

import dp_accounting
import numpy as np
import pytest
import torch
from dp_accounting.rdp import RdpAccountant
from scipy import stats
from torch import nn
from torch.nn import functional as F

from ppml import ParameterError
from ppml.dp.accounting import RDP_ORDERS, BudgetExceededError, PrivacyAccountant
from ppml.dp.dpsgd import DPSGD, check_dp_model, clipped_gradient_sum, per_sample_gradients
from ppml.models.zoo import build_model

pytestmark = pytest.mark.filterwarnings("ignore::ppml.dp.mechanisms.PrivacyWarning")


def _mlp(seed=0, d=12, classes=4, dtype=torch.float64):
    return build_model("mlp", (d,), classes, hidden=(16, 8), seed=seed).to(dtype)


def _data(n=40, d=12, classes=4, seed=0, scale=1.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=dtype) * scale
    y = torch.randint(0, classes, (n,), generator=g)
    return X, y


def _loop_gradients(model, X, y):
    """One-example-at-a-time autograd: the reference per-sample gradients."""
    names = [k for k, _ in model.named_parameters()]
    out = {k: [] for k in names}
    for i in range(len(X)):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(X[i : i + 1]), y[i : i + 1]).backward()
        for k, p in model.named_parameters():
            out[k].append(p.grad.detach().clone())
    model.zero_grad(set_to_none=True)
    return {k: torch.stack(v) for k, v in out.items()}


def test_vmap_per_sample_gradients_equal_one_at_a_time_autograd():
    model = _mlp()
    X, y = _data()
    vm = per_sample_gradients(model, X, y)
    ref = _loop_gradients(model, X, y)
    assert vm.keys() == ref.keys()
    for k in ref:
        torch.testing.assert_close(vm[k], ref[k], rtol=1e-10, atol=1e-12)


def test_cnn_per_sample_gradients_equal_one_at_a_time_autograd():
    model = build_model("cnn", (1, 8, 8), 3, channels=(2, 3), cnn_hidden=6, seed=1).double()
    g = torch.Generator().manual_seed(1)
    X = torch.randn(5, 1, 8, 8, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (5,), generator=g)
    vm = per_sample_gradients(model, X, y)
    ref = _loop_gradients(model, X, y)
    for k in ref:
        torch.testing.assert_close(vm[k], ref[k], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("clip_norm", [1e-3, 0.3, 2.0, 1e3])
def test_ghost_clipped_sum_equals_flat_clipped_sum_of_explicit_gradients(clip_norm):
    model = _mlp(seed=3)
    X, y = _data(n=50, seed=3, scale=2.0)
    ref = _loop_gradients(model, X, y)
    norms = torch.sqrt(sum(g.reshape(len(X), -1).pow(2).sum(1) for g in ref.values()))
    c = torch.clamp(clip_norm / norms, max=1.0)
    expected = {k: torch.einsum("b,b...->...", c, g) for k, g in ref.items()}
    if clip_norm == 2.0:  # the interesting case: some examples clipped, some not
        assert 0 < int((norms > clip_norm).sum()) < len(X)
    for method in ("flat", "ghost"):
        out = clipped_gradient_sum(model, X, y, clip_norm, clipping=method)
        torch.testing.assert_close(out.norms, norms, rtol=1e-10, atol=1e-12)
        assert list(out.grad_sum) == list(expected)
        for k in expected:
            torch.testing.assert_close(out.grad_sum[k], expected[k], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("clip_norm", [0.05, 0.5])
def test_every_clipped_per_example_norm_is_at_most_clip_norm(clip_norm):
    model = _mlp(seed=4)
    X, y = _data(n=64, seed=4, scale=3.0)
    for method in ("flat", "ghost"):
        out = clipped_gradient_sum(model, X, y, clip_norm, clipping=method)
        assert bool((out.norms > clip_norm).any())
        assert float((out.factors * out.norms).max()) <= clip_norm + 1e-6
        # and from the explicit per-sample gradients, scaled by the returned factors
        grads = per_sample_gradients(model, X, y)
        clipped_norms = torch.sqrt(
            sum(
                (g * out.factors.view(-1, *[1] * (g.dim() - 1))).reshape(len(X), -1).pow(2).sum(1)
                for g in grads.values()
            )
        )
        assert float(clipped_norms.max()) <= clip_norm + 1e-6


def test_ghost_refuses_unsupported_layers_and_cross_example_layers_are_refused():
    rnn = nn.Sequential(nn.Linear(4, 4), nn.RNN(4, 4))
    with pytest.raises(ParameterError, match="RNN.*not supported.*clipping='flat'"):
        check_dp_model(rnn, "ghost")
    check_dp_model(rnn, "flat")
    check_dp_model(build_model("cnn", (1, 8, 8), 3, channels=(2, 3), cnn_hidden=6, seed=0), "ghost")
    for bn in (nn.BatchNorm1d(8), nn.SyncBatchNorm(8), nn.InstanceNorm1d(8, track_running_stats=True)):
        model = nn.Sequential(nn.Linear(4, 8), bn, nn.ReLU(), nn.Linear(8, 2))
        with pytest.raises(
            ParameterError, match=rf"{type(bn).__name__} layer '1'.*GroupNorm or nn.LayerNorm"
        ):
            DPSGD(1.0, 1.0, 0.1).fit(
                model,
                np.zeros((10, 4), np.float32),
                np.zeros(10, np.int64),
                steps=1,
                rng=0,
                accountant=PrivacyAccountant(),
            )
    check_dp_model(nn.Sequential(nn.Linear(4, 8), nn.InstanceNorm1d(8), nn.Linear(8, 2)))


def test_ghost_refuses_shared_linear_layer():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    with pytest.raises(ParameterError, match="more than once"):
        clipped_gradient_sum(model, torch.randn(3, 4), torch.tensor([0, 1, 2]), 1.0, clipping="ghost")


@pytest.mark.parametrize("clipping", ["flat", "ghost"])
def test_noise_of_one_step_has_sd_lr_z_c_over_expected_batch(clipping):
    """Zero gradients: the update is pure noise with sd lr * z * C / (q N); KS rejects 2/3 and 3/2 of it."""
    torch.manual_seed(0)  # only the initial weights; DP noise comes from rng
    model = nn.Sequential(nn.Linear(60, 50)).double()
    before = [p.detach().clone() for p in model.parameters()]
    n, q, z, c, lr = 200, 0.25, 1.3, 0.7, 0.5

    def zero_loss(out, t):
        return (out * 0.0).sum(1)

    opt = DPSGD(z, c, q, lr=lr, clipping=clipping, loss_fn=zero_loss)
    X = np.random.default_rng(0).normal(size=(n, 60))
    opt.step(model, X, np.zeros(n, np.int64), rng=123, accountant=PrivacyAccountant())
    delta = torch.cat(
        [(p.detach() - b).reshape(-1) for p, b in zip(model.parameters(), before, strict=True)]
    ).numpy()
    assert delta.size == 60 * 50 + 50
    sd = lr * z * c / (q * n)
    assert stats.kstest(delta, "norm", args=(0, sd)).pvalue > 1e-3
    assert stats.kstest(delta, "norm", args=(0, sd * 2 / 3)).pvalue < 1e-6
    assert stats.kstest(delta, "norm", args=(0, sd * 3 / 2)).pvalue < 1e-6


def test_noisy_minus_noiseless_update_has_the_right_scale_and_same_seed_reproduces():
    n, q, z, c, lr = 300, 0.2, 0.9, 0.5, 0.3
    X, y = _data(n=n, seed=7, dtype=torch.float32)
    base = build_model("mlp", (12,), 4, hidden=(256,), seed=7)
    runs = {}
    for name, zz, seed in (("a", z, 5), ("b", z, 5), ("quiet", 0.0, 5)):
        m = build_model("mlp", (12,), 4, hidden=(256,), seed=7)
        DPSGD(zz, c, q, lr=lr, clipping="ghost").step(m, X, y, rng=seed, accountant=PrivacyAccountant())
        runs[name] = torch.cat(
            [(p - b).detach().reshape(-1) for p, b in zip(m.parameters(), base.parameters(), strict=True)]
        )
    torch.testing.assert_close(runs["a"], runs["b"])  # same seed, same batch, same noise
    noise = (runs["a"] - runs["quiet"]).double().numpy()  # same seed => same Poisson batch
    sd = lr * z * c / (q * n)
    assert stats.kstest(noise, "norm", args=(0, sd)).pvalue > 1e-3
    assert stats.kstest(noise, "norm", args=(0, sd * 2 / 3)).pvalue < 1e-6
    assert stats.kstest(noise, "norm", args=(0, sd * 3 / 2)).pvalue < 1e-6


def test_accountant_steps_and_sampling_rate_match_what_ran_and_epsilon_matches_dp_accounting():
    n, q, z, steps = 200, 0.05, 1.1, 30
    X, y = _data(n=n, seed=2, dtype=torch.float32)
    model = build_model("mlp", (12,), 4, hidden=(8,), seed=2)
    acc = PrivacyAccountant("rdp", delta=1e-5)
    opt = DPSGD(z, 1.0, q, lr=0.1, clipping="ghost").fit(model, X, y, steps=steps, rng=0, accountant=acc)
    assert opt.steps_ == steps and len(opt.batch_sizes_) == steps
    assert len(acc.ledger) == 1
    entry = acc.ledger[0]
    assert entry.count == steps
    assert entry.params["sampling_rate"] == q and entry.params["sampling"] == "poisson"
    assert entry.params["noise_multiplier"] == z and entry.params["clip_norm"] == 1.0
    assert entry.event == {
        "class_name": "PoissonSampledDpEvent",
        "sampling_probability": q,
        "event": {"class_name": "GaussianDpEvent", "noise_multiplier": z},
    }
    ref = RdpAccountant(list(RDP_ORDERS))
    ref.compose(dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(z)), steps)
    assert acc.epsilon() == pytest.approx(ref.get_epsilon(1e-5), rel=1e-9)
    assert opt.epsilon_ == acc.epsilon()
    # the realised batch sizes look like Binomial(n, q) draws (not a fixed batch)
    assert len(set(opt.batch_sizes_)) > 1
    assert abs(np.mean(opt.batch_sizes_) - q * n) < 4 * math.sqrt(n * q * (1 - q) / steps)
    # epochs convention
    opt2 = DPSGD(z, 1.0, q).fit(model, X, y, epochs=0.5, rng=1, accountant=PrivacyAccountant())
    assert opt2.steps_ == math.ceil(0.5 / q)


def test_budget_exceeded_leaves_model_optimizer_and_accountant_intact():
    X, y = _data(n=100, seed=1, dtype=torch.float32)
    model = build_model("logistic", (12,), 4, seed=1)
    acc = PrivacyAccountant("rdp", delta=1e-5, budget_epsilon=1.0)
    opt = DPSGD(1.5, 1.0, 0.1, lr=0.1, momentum=0.5)
    gen = np.random.default_rng(0)
    with pytest.raises(BudgetExceededError):
        for _ in range(10_000):
            snapshot = [p.detach().clone() for p in model.parameters()]
            eps_before, steps_before = acc.epsilon(), opt.steps_
            opt.step(model, X, y, rng=gen, accountant=acc)
    for p, s in zip(model.parameters(), snapshot, strict=True):
        assert torch.equal(p, s)
    assert acc.epsilon() == eps_before <= 1.0
    assert opt.steps_ == steps_before == acc.ledger[-1].count == len(opt.batch_sizes_)


def test_parameter_validation():
    with pytest.raises(ParameterError, match="'clip_norm' parameter of DPSGD"):
        DPSGD(1.0, -1.0, 0.1)
    with pytest.raises(ParameterError, match="'sampling_rate'"):
        DPSGD(1.0, 1.0, 0.0)
    with pytest.raises(ParameterError, match="'clipping'"):
        DPSGD(1.0, 1.0, 0.1, clipping="per_layer")
    model = build_model("logistic", (3,), 2, seed=0)
    X, y = np.zeros((5, 3), np.float32), np.zeros(5, np.int64)
    with pytest.raises(ParameterError, match="'rng'"):
        DPSGD(1.0, 1.0, 0.1).fit(model, X, y, steps=1, accountant=PrivacyAccountant())
    with pytest.raises(ParameterError, match="'rng'.*secure"):
        DPSGD(1.0, 1.0, 0.1, secure=True).fit(model, X, y, steps=1, rng=0, accountant=PrivacyAccountant())
    with pytest.raises(ParameterError, match="Exactly one"):
        DPSGD(1.0, 1.0, 0.1).fit(model, X, y, rng=0, accountant=PrivacyAccountant())


def test_secure_mode_step_runs_and_charges_the_secure_event():
    model = build_model("logistic", (3,), 2, seed=0)
    X = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    acc = PrivacyAccountant()
    opt = DPSGD(1.0, 1.0, 0.5, secure=True).step(model, X, np.zeros(20, np.int64), accountant=acc)
    assert opt.steps_ == 1
    assert acc.ledger[0].event["event"]["noise_multiplier"] < 1.0


@pytest.mark.parametrize("clipping", ["flat", "ghost"])
def test_logistic_regression_on_separable_data_reaches_good_accuracy(clipping):
    rng = np.random.default_rng(0)
    n = 2000
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, 5)).astype(np.float32)
    X[:, 0] += np.where(y == 1, 2.5, -2.5)
    model = build_model("logistic", (5,), 2, seed=0)
    acc = PrivacyAccountant("rdp", delta=1e-5)
    DPSGD(1.0, 1.0, 0.05, lr=1.0, clipping=clipping).fit(model, X, y, epochs=3, rng=1, accountant=acc)
    with torch.no_grad():
        accuracy = float((model(torch.from_numpy(X)).argmax(1).numpy() == y).mean())
    assert accuracy > 0.95
    assert 0 < acc.epsilon() < 10
