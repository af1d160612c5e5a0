"""Book-keeping (ghost) clipping for Linear, Conv2d, Embedding, LayerNorm and GroupNorm against
vmap(grad); per-layer clipping; virtual steps; shuffled batches only with a warning."""

import warnings

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn
from torch.nn import functional as F

from ppml import ParameterError
from ppml.dp.accounting import PrivacyAccountant
from ppml.dp.dpsgd import DPSGD, check_dp_model, clipped_gradient_sum, layer_clip_norms, per_sample_gradients
from ppml.dp.mechanisms import PrivacyWarning
from ppml.models.zoo import build_model

pytestmark = pytest.mark.filterwarnings("ignore:.*secure=False.*:ppml.dp.mechanisms.PrivacyWarning")


class _SwapBatch(nn.Module):
    def forward(self, x):
        return x.transpose(0, 1)


def _conv_net():
    # stride/dilation with reflect padding, grouped 'same' convolution, GroupNorm, a 1x1 convolution on
    # a 2x2 map with many channels (Gram route), then a Linear head.
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.Tanh(),
        nn.Conv2d(4, 6, 3, stride=2, dilation=2, padding=1, padding_mode="reflect"),
        nn.ReLU(),
        nn.Conv2d(6, 6, 3, groups=2, padding="same"),
        nn.GroupNorm(2, 6),
        nn.AdaptiveAvgPool2d(2),
        nn.Conv2d(6, 40, 2),
        nn.Flatten(),
        nn.Linear(40, 3),
    )


def _embedding_net():
    # index collisions within an example, padding_idx, LayerNorm, a Linear on (B, T, d) by the direct
    # route (5x4 weight) and one by the Gram route (32x32 weight on T=6), then a flattening head.
    return nn.Sequential(
        nn.Embedding(5, 5, padding_idx=0),
        nn.LayerNorm(5),
        nn.Linear(5, 32),
        nn.ReLU(),
        nn.Linear(32, 32),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(32 * 6, 3),
    )


def _mlp_net():
    return nn.Sequential(
        nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3)
    )


def _case(kind, n=9, seed=0):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    if kind == "conv":
        model, X = _conv_net().double(), torch.randn(n, 2, 9, 9, generator=g, dtype=torch.float64)
    elif kind == "embedding":
        model, X = _embedding_net().double(), torch.randint(0, 5, (n, 6), generator=g)
    elif kind == "zoo_cnn":
        model = build_model("cnn", (1, 8, 8), 3, channels=(2, 3), cnn_hidden=6, seed=seed).double()
        X = torch.randn(n, 1, 8, 8, generator=g, dtype=torch.float64)
    else:
        model, X = _mlp_net().double(), torch.randn(n, 12, generator=g, dtype=torch.float64)
    return model, X, torch.randint(0, 3, (n,), generator=g)


KINDS = ["conv", "embedding", "zoo_cnn", "mlp"]


@pytest.fixture(params=["kept", "second backward"])
def conv_sum_route(request, monkeypatch):
    """Both routes to a convolution's clipped sum: from the kept per-example gradients, and (when they
    would be too large to keep) from a second convolution backward with scaled output gradients."""
    import ppml.dp.ghost as ghost

    if request.param == "second backward":
        monkeypatch.setattr(ghost, "_KEEP_FLOATS", 0)
    return request.param


@pytest.mark.parametrize("kind", KINDS)
def test_ghost_norms_and_clipped_sum_equal_vmap(kind, conv_sum_route):
    model, X, y = _case(kind, n=10, seed=1)
    ref = per_sample_gradients(model, X, y)
    norms = torch.sqrt(sum(g.reshape(len(X), -1).pow(2).sum(1) for g in ref.values()))
    clip = float(norms.median())  # about half the examples are clipped
    assert 0 < int((norms > clip).sum()) < len(X)
    ghost = clipped_gradient_sum(model, X, y, clip, clipping="ghost")
    flat = clipped_gradient_sum(model, X, y, clip, clipping="flat")
    assert list(ghost.layer_norms) == list(ref) == list(ghost.grad_sum)
    c = torch.clamp(clip / norms, max=1.0)
    for k, g in ref.items():
        expected_norm = g.reshape(len(X), -1).norm(dim=1)
        assert float(expected_norm.max()) > 0, k  # every parameter takes part (no vacuous equality)
        torch.testing.assert_close(ghost.layer_norms[k], expected_norm, rtol=1e-5, atol=1e-10)
        expected = torch.einsum("b,b...->...", c, g)
        torch.testing.assert_close(flat.grad_sum[k], expected, rtol=1e-7, atol=1e-10)
        torch.testing.assert_close(ghost.grad_sum[k], expected, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(ghost.norms, norms, rtol=1e-5, atol=1e-10)
    torch.testing.assert_close(ghost.factors, c)
    assert float((ghost.factors * ghost.norms).max()) <= clip * (1 + 1e-9)


def test_ghost_float32_benchmark_cnn_layers_match_vmap(conv_sum_route):
    model = nn.Sequential(
        nn.Conv2d(1, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(128, 10),
    )  # fmt: skip
    g = torch.Generator().manual_seed(0)
    X, y = torch.randn(40, 1, 20, 20, generator=g), torch.randint(0, 10, (40,), generator=g)
    flat = clipped_gradient_sum(model, X, y, 0.5, clipping="flat")
    ghost = clipped_gradient_sum(model, X, y, 0.5, clipping="ghost")  # 40 > one cache chunk for conv 2
    for k in flat.layer_norms:
        torch.testing.assert_close(ghost.layer_norms[k], flat.layer_norms[k], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(ghost.grad_sum[k], flat.grad_sum[k], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("threads", [1, 2])
def test_few_input_channel_convolutions_take_the_faster_route_for_the_thread_count_and_match_vmap(
    threads, conv_sum_route
):
    from ppml.dp import ghost as ghost_module

    model = nn.Sequential(nn.Conv2d(1, 16, 5), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 8 * 8, 3)).double()
    g = torch.Generator().manual_seed(3)
    X, y = (
        torch.randn(12, 1, 12, 12, generator=g, dtype=torch.float64),
        torch.randint(0, 3, (12,), generator=g),
    )
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        # 1 input channel, 16 output channels: grouped convolution backward on one thread, im2col on two.
        assert ghost_module._use_im2col(1, 16) == (threads > 1)
        assert ghost_module._use_im2col(1, 32) and ghost_module._use_im2col(8, 1)
        assert not ghost_module._use_im2col(2, 8)
        ghost = clipped_gradient_sum(model, X, y, 0.3, clipping="ghost")
    finally:
        torch.set_num_threads(before)
    flat = clipped_gradient_sum(model, X, y, 0.3, clipping="flat")
    for k in flat.layer_norms:
        torch.testing.assert_close(ghost.layer_norms[k], flat.layer_norms[k], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(ghost.grad_sum[k], flat.grad_sum[k], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "conv",
    [
        lambda: nn.Conv2d(16, 6, 3, stride=2, dilation=2, padding=2, groups=2),
        lambda: nn.Conv2d(8, 5, (3, 2), stride=(1, 2), padding=(1, 0), padding_mode="reflect"),
        lambda: nn.Conv2d(9, 4, 3, padding="same"),
    ],
    ids=["grouped-strided-dilated", "reflect-rectangular", "same"],
)
def test_ghost_im2col_route_for_many_input_channels_matches_vmap(conv, conv_sum_route):
    """Convolutions with >= 8 input channels per group take the im2col route for their norms."""
    torch.manual_seed(0)
    conv = conv()
    model = nn.Sequential(conv, nn.Tanh(), nn.Flatten(), nn.LazyLinear(3)).double()
    g = torch.Generator().manual_seed(1)
    X = torch.randn(7, conv.in_channels, 9, 8, generator=g, dtype=torch.float64)
    model(X)  # materialise the lazy head
    y = torch.randint(0, 3, (7,), generator=g)
    ref = per_sample_gradients(model, X, y)
    ghost = clipped_gradient_sum(model, X, y, 0.1, clipping="ghost")
    norms = torch.sqrt(sum(v.reshape(7, -1).pow(2).sum(1) for v in ref.values()))
    assert float((norms > 0.1).float().mean()) > 0.5  # most examples clipped
    c = torch.clamp(0.1 / norms, max=1.0)
    for k, v in ref.items():
        torch.testing.assert_close(ghost.layer_norms[k], v.reshape(7, -1).norm(dim=1), rtol=1e-7, atol=1e-12)
        torch.testing.assert_close(
            ghost.grad_sum[k], torch.einsum("b,b...->...", c, v), rtol=1e-7, atol=1e-12
        )


def test_unused_layer_gets_zero_gradient_and_empty_batch_gives_zeros():
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.used, self.unused = nn.Linear(4, 4), nn.Linear(4, 2), nn.Linear(4, 2)

        def forward(self, x):
            return self.used(torch.relu(self.body(x)))

    torch.manual_seed(0)
    model = TwoHeads().double()
    X, y = torch.randn(6, 4, dtype=torch.float64), torch.tensor([0, 1, 0, 1, 1, 0])
    flat = clipped_gradient_sum(model, X, y, 0.3, clipping="flat")
    ghost = clipped_gradient_sum(model, X, y, 0.3, clipping="ghost")
    for k in flat.grad_sum:
        torch.testing.assert_close(ghost.grad_sum[k], flat.grad_sum[k])
    assert float(ghost.grad_sum["unused.weight"].abs().max()) == 0.0
    assert float(ghost.grad_sum["used.weight"].abs().max()) > 0.0
    empty = clipped_gradient_sum(model, X[:0], y[:0], 0.3, clipping="ghost")
    assert len(empty.norms) == 0 and all(float(v.abs().sum()) == 0 for v in empty.grad_sum.values())


class _OutsideUse(nn.Module):
    """Uses ``self.lin.weight`` without calling ``self.lin`` (e.g. tied output projection)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x):
        return F.linear(x, self.lin.weight)


@pytest.mark.parametrize(
    ("model", "X", "match"),
    [
        (nn.Sequential(nn.Linear(4, 4), nn.PReLU(), nn.Linear(4, 2)), torch.randn(3, 4), "PReLU.*not supported"),
        # (a dense model with an in-place ReLU takes the dense path, which handles it: tests/dp/test_dpsgd_dense.py)
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(8, 2)),
         torch.randn(3, 1, 4, 4), "in place"),
        (nn.Sequential(nn.Embedding(5, 4, scale_grad_by_freq=True), nn.Flatten(), nn.Linear(8, 2)),
         torch.randint(0, 5, (3, 2)), "scale_grad_by_freq"),
        (_OutsideUse(), torch.randn(3, 4), "outside"),
        (nn.Sequential(nn.Linear(4, 4), _SwapBatch(), nn.Linear(4, 2), _SwapBatch(), nn.Flatten(), nn.Linear(8, 2)),
         torch.randn(5, 4, 4), "dimension 0"),
    ],
)  # fmt: skip
def test_ghost_refuses_what_it_cannot_clip_correctly(model, X, match):
    y = torch.zeros(len(X), dtype=torch.int64)
    with pytest.raises(ParameterError, match=match):
        clipped_gradient_sum(model, X, y, 1.0, clipping="ghost")
    if match != "scale_grad_by_freq":  # flat (vmap) handles all the others
        clipped_gradient_sum(model, X, y, 1.0, clipping="flat")


def test_weight_tying_is_refused_by_ghost():
    emb = nn.Embedding(5, 4)
    head = nn.Linear(4, 5, bias=False)
    head.weight = emb.weight
    with pytest.raises(ParameterError, match="weight tying"):
        check_dp_model(nn.Sequential(emb, head), "ghost")


# -- per-layer clipping ------------------------------------------------------------------------


def test_layer_clip_norms_split_the_total_bound():
    model, _, _ = _case("mlp")
    names = [k for k, _ in model.named_parameters()]
    equal = layer_clip_norms(model, 2.0)
    assert list(equal) == names
    assert np.allclose(list(equal.values()), 2.0 / np.sqrt(len(names)))
    weights = {k: float(i + 1) for i, k in enumerate(names)}
    weighted = layer_clip_norms(model, 2.0, weights)
    assert np.sqrt(sum(v * v for v in weighted.values())) == pytest.approx(2.0, rel=1e-12)
    assert weighted[names[1]] / weighted[names[0]] == pytest.approx(2.0)
    with pytest.raises(ParameterError, match="'weights'"):
        layer_clip_norms(model, 2.0, {names[0]: 1.0})
    with pytest.raises(ParameterError, match="'weights'"):
        layer_clip_norms(model, 2.0, {k: -1.0 for k in names})


@pytest.mark.parametrize(("kind", "method"), [("conv", "ghost"), ("mlp", "flat"), ("mlp", "ghost")])
def test_per_layer_clipping_bounds_every_layer_and_matches_explicit_clipping(kind, method):
    model, X, y = _case(kind, n=10, seed=2)
    total = 0.05
    bounds = layer_clip_norms(model, total)
    ref = per_sample_gradients(model, X, y)
    out = clipped_gradient_sum(model, X, y, bounds, clipping=method)
    clipped_sq = torch.zeros(len(X), dtype=torch.float64)
    for k, g in ref.items():
        g2 = g.reshape(len(X), -1)
        n_l = g2.norm(dim=1)
        c_l = torch.clamp(bounds[k] / n_l, max=1.0)
        torch.testing.assert_close(out.layer_factors[k], c_l, rtol=1e-6, atol=1e-12)
        assert float((c_l * n_l).max()) <= bounds[k] * (1 + 1e-9)  # every layer within its bound
        clipped_sq += (c_l * n_l) ** 2
        torch.testing.assert_close(
            out.grad_sum[k], torch.einsum("b,b...->...", c_l, g), rtol=1e-6, atol=1e-10
        )
    assert bool((torch.stack(list(out.layer_factors.values())) < 1).any())  # clipping is active
    # the whole per-example gradient is within the combined bound C = sqrt(sum C_l^2)
    assert float(clipped_sq.sqrt().max()) <= total * (1 + 1e-9)
    torch.testing.assert_close(out.factors * out.norms, clipped_sq.sqrt())


def test_per_layer_dpsgd_has_sensitivity_c_and_noise_scaled_to_c():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 30), nn.Tanh(), nn.Linear(30, 20)).double()
    before = [p.detach().clone() for p in model.parameters()]
    n, q, z, c, lr = 100, 0.5, 1.2, 0.8, 0.5

    def zero_loss(out, t):
        return (out * 0.0).sum(1)

    opt = DPSGD(z, c, q, lr=lr, per_layer=True, clipping="ghost", loss_fn=zero_loss)
    bounds = opt.layer_clip_norms(model)
    assert len(bounds) == 4 and np.sqrt(sum(b * b for b in bounds.values())) == pytest.approx(c)
    assert opt.mechanism.sensitivity == c
    acc = PrivacyAccountant()
    opt.step(
        model, np.random.default_rng(0).normal(size=(n, 40)), np.zeros(n, np.int64), rng=5, accountant=acc
    )
    assert acc.ledger[0].params["clipping_scope"] == "per_layer"
    delta = torch.cat([(p.detach() - b).reshape(-1) for p, b in zip(model.parameters(), before, strict=True)])
    sd = lr * z * c / (q * n)
    assert stats.kstest(delta.numpy(), "norm", args=(0, sd)).pvalue > 1e-3
    assert stats.kstest(delta.numpy(), "norm", args=(0, sd * 2 / 3)).pvalue < 1e-6
    assert stats.kstest(delta.numpy(), "norm", args=(0, sd * 3 / 2)).pvalue < 1e-6


# -- virtual steps -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["flat", "ghost"])
def test_virtual_steps_equal_one_physical_batch_and_respect_the_chunk_size(method):
    X, y = torch.randn(120, 12, dtype=torch.float64), torch.randint(0, 3, (120,))
    seen: list[int] = []

    def loss(out, t):
        seen.append(len(t))
        return F.cross_entropy(out, t, reduction="none")

    results = {}
    for chunk in (None, 16):
        model, _, _ = _case("mlp", seed=3)
        seen.clear()
        opt = DPSGD(
            1.0, 0.1, 0.6, lr=0.5, momentum=0.5, clipping=method, max_physical_batch_size=chunk, loss_fn=loss
        )
        opt.fit(model, X, y, steps=2, rng=11, accountant=PrivacyAccountant())
        results[chunk] = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        if method == "ghost" and chunk is not None:  # (vmap calls the loss on one example at a time)
            assert max(seen) <= chunk and sum(seen) == sum(opt.batch_sizes_)  # every example once per step
            assert len(seen) == sum(-(-b // chunk) for b in opt.batch_sizes_)
        elif method == "ghost":
            assert seen == opt.batch_sizes_ and max(seen) > 60  # one chunk per step
    torch.testing.assert_close(results[16], results[None], rtol=1e-10, atol=1e-12)


# -- sampling ----------------------------------------------------------------------------------


def test_shuffle_is_explicit_warns_and_is_recorded_in_the_ledger():
    n, q = 50, 0.2
    X = np.random.default_rng(0).normal(size=(n, 12))
    y = np.arange(n)  # targets are example ids, recorded by the loss
    seen: list[list[int]] = []

    def loss(out, t):
        seen.append(t.tolist())
        return out.pow(2).sum(1)

    model, _, _ = _case("mlp")
    opt = DPSGD(1.0, 1.0, q, sampling="shuffle", clipping="ghost", loss_fn=loss)
    acc = PrivacyAccountant()
    with pytest.warns(PrivacyWarning, match="Poisson sampling at rate batch_size/dataset_size"):
        opt.fit(model, X, y, steps=10, rng=0, accountant=acc)
    assert opt.batch_sizes_ == [10] * 10 and opt.expected_batch_size_ == 10
    for epoch in (seen[:5], seen[5:]):  # each epoch is a permutation cut into fixed-size batches
        assert sorted(i for batch in epoch for i in batch) == list(range(n))
    assert seen[:5] != seen[5:]
    entry = acc.ledger[0]
    assert entry.params["sampling"] == "shuffle" and entry.params["batch_size"] == 10
    assert "Poisson" in entry.params["accountant_assumes"] and "Chua" in entry.params["accountant_assumes"]
    assert entry.event["sampling_probability"] == pytest.approx(10 / n)
    assert acc.to_dict()["ledger"][0]["params"]["sampling"] == "shuffle"


def test_poisson_is_the_default_and_does_not_warn_about_sampling():
    model, _, _ = _case("mlp")
    opt = DPSGD(1.0, 1.0, 0.3, clipping="ghost")
    assert opt.sampling == "poisson"
    acc = PrivacyAccountant()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt.fit(model, np.random.default_rng(0).normal(size=(40, 12)), np.zeros(40, np.int64), steps=4, rng=0,
                accountant=acc)  # fmt: skip
    assert not [w for w in caught if "shuffle" in str(w.message)]
    assert acc.ledger[0].params["sampling"] == "poisson"
    assert len(set(opt.batch_sizes_)) > 1  # Poisson batch sizes vary
    with pytest.raises(ParameterError, match="'sampling'"):
        DPSGD(1.0, 1.0, 0.3, sampling="fixed")
    with pytest.raises(ParameterError, match="'max_physical_batch_size'"):
        DPSGD(1.0, 1.0, 0.3, max_physical_batch_size=0)
