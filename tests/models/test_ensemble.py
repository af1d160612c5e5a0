import numpy as np
import pytest
import torch
from torch import nn

from ppml import ParameterError
from ppml.models import build_model, get_flat
from ppml.train import TrainConfig, evaluate
from ppml.train.ensemble import (
    EnsembleParams,
    predict_ensemble,
    train_ensemble,
    train_ensemble_sequential,
)


def _data(n=300, d=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    centres = rng.normal(size=(classes, d)) * 2.0
    X = (centres[y] + rng.normal(size=(n, d))).astype(np.float32)
    return X, y.astype(np.int64)


def _subsets(n, sizes, seed=1):
    rng = np.random.default_rng(seed)
    return [rng.choice(n, size=s, replace=False) for s in sizes]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.mark.parametrize(
    ("config", "init"),
    [
        (TrainConfig(epochs=3, batch_size=16, lr=0.1), "independent"),
        (TrainConfig(epochs=2, batch_size=20, lr=0.05, momentum=0.9, weight_decay=1e-3), "independent"),
        (TrainConfig(epochs=2, batch_size=None, lr=0.2), "same"),
    ],
)
def test_vectorized_equals_sequential_with_unequal_sizes(config, init):
    X, y = _data()
    model = build_model("mlp", (6,), 3, hidden=(16,), seed=3)
    # unequal sizes: different step counts, a last partial batch, a subset smaller than the batch
    subsets = _subsets(len(y), [120, 37, 80, 9, 120])
    vec = train_ensemble(model, X, y, subsets, config, seed=7, init=init)
    seq = train_ensemble_sequential(model, X, y, subsets, config, seed=7, init=init)
    assert len(vec) == len(seq) == 5
    torch.testing.assert_close(vec.to_flat(), seq.to_flat(), atol=2e-5, rtol=1e-4)
    # and training moved every member (not a no-op comparison)
    start = get_flat(model)
    for i in range(5):
        assert (vec.to_flat()[i] - start).abs().max() > 1e-3


def test_momentum_member_with_fewer_steps_matches_alone():
    """A short member padded with no-op steps ends where it ends when trained on its own."""
    X, y = _data()
    model = build_model("mlp", (6,), 3, hidden=(8,), seed=0)
    config = TrainConfig(epochs=2, batch_size=10, lr=0.05, momentum=0.9)
    subsets = _subsets(len(y), [200, 15])
    both = train_ensemble(model, X, y, subsets, config, seed=11)
    seq = train_ensemble_sequential(model, X, y, subsets, config, seed=11)
    torch.testing.assert_close(both.to_flat()[1], seq.to_flat()[1], atol=1e-5, rtol=1e-4)


def test_independent_inits_differ_and_same_init_starts_equal():
    X, y = _data()
    model = build_model("mlp", (6,), 3, hidden=(8,), seed=0)
    config = TrainConfig(epochs=1, batch_size=None, lr=1e-6)  # tiny step: params stay near the start
    subsets = _subsets(len(y), [50, 50, 50])
    ind = train_ensemble(model, X, y, subsets, config, seed=0).to_flat()
    same = train_ensemble(model, X, y, subsets, config, seed=0, init="same").to_flat()
    assert (ind[0] - ind[1]).abs().max() > 0.05
    assert (same[0] - same[1]).abs().max() < 1e-4
    assert (same[0] - get_flat(model)).abs().max() < 1e-4


def test_seed_reproducible_and_chunking_does_not_change_result():
    X, y = _data()
    model = build_model("mlp", (6,), 3, hidden=(8,), seed=0)
    config = TrainConfig(epochs=2, batch_size=32, lr=0.1, momentum=0.5)
    subsets = _subsets(len(y), [100, 60, 30, 100, 80])
    a = train_ensemble(model, X, y, subsets, config, seed=5)
    b = train_ensemble(model, X, y, subsets, config, seed=5, chunk_size=2)
    c = train_ensemble(model, X, y, subsets, config, seed=6)
    torch.testing.assert_close(a.to_flat(), b.to_flat(), atol=1e-6, rtol=1e-5)
    assert (a.to_flat() - c.to_flat()).abs().max() > 1e-2


def test_member_and_predictions_agree_and_models_learn():
    X, y = _data()
    model = build_model("mlp", (6,), 3, hidden=(16,), seed=0)
    subsets = _subsets(len(y), [150, 100, 150])
    ens = train_ensemble(model, X, y, subsets, TrainConfig(epochs=5, batch_size=16, lr=0.1), seed=2)
    logits = predict_ensemble(model, ens, X, batch_size=64)
    assert logits.shape == (3, len(y), 3)
    for i in range(3):
        member = ens.member(i)
        with torch.no_grad():
            torch.testing.assert_close(logits[i], member(torch.from_numpy(X)), atol=1e-5, rtol=1e-5)
        assert torch.equal(get_flat(member), ens.to_flat()[i])
        assert evaluate(member, X, y)["accuracy"] > 0.8
    # the template is used when model is None; chunking members does not change predictions
    torch.testing.assert_close(predict_ensemble(None, ens, X, chunk_size=2), logits)
    sub = ens.select([2, 0])
    assert len(sub) == 2 and torch.equal(sub.to_flat()[0], ens.to_flat()[2])
    # the caller's model is untouched
    assert torch.equal(get_flat(model), get_flat(build_model("mlp", (6,), 3, hidden=(16,), seed=0)))


def test_cnn_members_match_sequential():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 2, 60)
    model = build_model("cnn", (1, 8, 8), 2, channels=(2, 3), cnn_hidden=8, seed=0)
    subsets = _subsets(60, [30, 20])
    cfg = TrainConfig(epochs=1, batch_size=8, lr=0.05)
    vec = train_ensemble(model, X, y, subsets, cfg, seed=1)
    seq = train_ensemble_sequential(model, X, y, subsets, cfg, seed=1)
    torch.testing.assert_close(vec.to_flat(), seq.to_flat(), atol=2e-5, rtol=1e-4)


def test_empty_subset_stays_at_initialisation():
    X, y = _data()
    model = build_model("logistic", (6,), 3, seed=0)
    subsets = [np.arange(50), np.array([], dtype=np.int64)]
    cfg = TrainConfig(epochs=1, batch_size=10, lr=0.1, momentum=0.9)
    vec = train_ensemble(model, X, y, subsets, cfg, seed=4, init="same")
    assert torch.equal(vec.to_flat()[1], get_flat(model))
    assert not torch.equal(vec.to_flat()[0], get_flat(model))


def test_from_modules_round_trip():
    mods = [build_model("mlp", (4,), 2, hidden=(3,), seed=s) for s in range(3)]
    ens = EnsembleParams.from_modules(mods)
    for i, m in enumerate(mods):
        assert torch.equal(ens.to_flat()[i], get_flat(m))


def test_bad_inputs():
    X, y = _data(40)
    cfg = TrainConfig()
    model = build_model("mlp", (6,), 3, hidden=(4,), seed=0)
    with pytest.raises(ValueError, match="outside"):
        train_ensemble(model, X, y, [np.array([0, 40])], cfg, seed=0)
    with pytest.raises(ValueError, match="integer indices"):
        train_ensemble(model, X, y, [np.array([0.5])], cfg, seed=0)
    with pytest.raises(ValueError, match="subsets is empty"):
        train_ensemble(model, X, y, [], cfg, seed=0)
    with pytest.raises(ParameterError, match="'init' parameter of train_ensemble"):
        train_ensemble(model, X, y, [np.arange(5)], cfg, seed=0, init="random")
    with pytest.raises(ParameterError, match="'chunk_size' parameter of train_ensemble"):
        train_ensemble(model, X, y, [np.arange(5)], cfg, seed=0, chunk_size=0)
    with pytest.raises(ValueError, match="BatchNorm1d"):
        train_ensemble(nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4)), X, y, [np.arange(5)], cfg, seed=0)
    with pytest.raises(ValueError, match="dropout"):
        train_ensemble(nn.Sequential(nn.Linear(6, 3), nn.Dropout(0.5)), X, y, [np.arange(5)], cfg, seed=0)
    with pytest.raises(ValueError, match="explicit seed"):
        train_ensemble(model, X, y, [np.arange(5)], cfg, seed=None)
    with pytest.raises(IndexError):
        EnsembleParams.from_modules([model]).member(1)


def test_parameters_are_stored_in_their_gradients_layout_and_returned_in_the_original_one():
    # The vectorized step keeps each stacked Linear weight transposed (the layout its gradient comes
    # back in) so the update is a contiguous pass; what the caller gets is the original shape and a
    # contiguous layout, equal to the sequential reference with momentum and weight decay.
    from ppml.train.ensemble import _Stacked

    weight = torch.randn(3, 4, 5)  # (members, out, in)
    grad = torch.randn(3, 5, 4).transpose(1, 2)  # the layout autograd returns for a vmapped Linear
    state = _Stacked({"w": weight.clone()})
    (g,) = state.adopt_layouts((grad,))
    assert state.leaves["w"].is_contiguous() and g.is_contiguous()
    assert state.leaves["w"].shape == (3, 5, 4)
    torch.testing.assert_close(state.views()["w"], weight)
    out = state.original()["w"]
    assert out.shape == (3, 4, 5) and out.is_contiguous()
    torch.testing.assert_close(out, weight)

    X, y = _data(n=200, d=12)
    model = build_model("mlp", (12,), 3, hidden=(32, 16), seed=0)
    config = TrainConfig(epochs=3, batch_size=16, lr=0.05, momentum=0.9, weight_decay=1e-3)
    subsets = _subsets(len(y), [100, 100, 100])
    vec = train_ensemble(model, X, y, subsets, config, seed=2)
    assert all(p.is_contiguous() for p in vec.params.values())
    seq = train_ensemble_sequential(model, X, y, subsets, config, seed=2)
    torch.testing.assert_close(vec.to_flat(), seq.to_flat(), atol=2e-5, rtol=1e-4)


def test_worker_processes_give_the_same_members():
    X, y = _data()
    model = build_model("mlp", (6,), 3, hidden=(8,), seed=0)
    config = TrainConfig(epochs=2, batch_size=16, lr=0.1, momentum=0.5)
    subsets = _subsets(len(y), [100, 60, 30, 100, 80])
    one = train_ensemble(model, X, y, subsets, config, seed=3)
    two = train_ensemble(model, X, y, subsets, config, seed=3, n_jobs=2, chunk_size=2)
    torch.testing.assert_close(one.to_flat(), two.to_flat(), atol=1e-6, rtol=1e-5)
    with pytest.raises(ParameterError, match="n_jobs"):
        train_ensemble(model, X, y, subsets, config, seed=3, n_jobs=0)
    with pytest.raises(ParameterError, match="n_jobs"):
        train_ensemble(model, X, y, subsets, config, seed=3, n_jobs=-2)


def _chain_members(kind, seeds):
    members = []
    for s in seeds:
        torch.manual_seed(s)
        if kind == "mlp":
            members.append(build_model("mlp", (2, 3), 4, hidden=(8, 5), seed=s))
        elif kind == "tanh":
            members.append(
                nn.Sequential(nn.Flatten(), nn.Linear(6, 7), nn.Tanh(), nn.Linear(7, 4, bias=False))
            )
        else:  # activations autograd differentiates, one of them in place, and an activation on the input
            members.append(
                nn.Sequential(
                    nn.Flatten(),
                    nn.Sigmoid(),
                    nn.Linear(6, 9),
                    nn.LeakyReLU(0.1, inplace=True),
                    nn.Linear(9, 7),
                    nn.GELU(),
                    nn.Identity(),
                    nn.Linear(7, 4),
                )
            )
    return members


@pytest.mark.parametrize("kind", ["mlp", "tanh", "mixed"])
def test_dense_forward_equals_the_vmapped_forward(kind):
    from torch.func import functional_call, stack_module_state, vmap

    from ppml.train.ensemble import _DenseChain

    members = _chain_members(kind, range(3))
    model = members[0]
    params, _ = stack_module_state(members)
    x = torch.randn(3, 5, 2, 3)
    chain = _DenseChain.of(model)
    assert chain is not None
    wt = {p: params[p + "weight"].transpose(1, 2).contiguous() for p in chain.linears}
    b = {p: params[p + "bias"] for p in chain.linears if chain.has_bias[p]}
    reference = vmap(lambda p, xi: functional_call(model, (p, {}), (xi,)))(params, x)
    torch.testing.assert_close(chain.forward(wt, b, x), reference, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kind", ["tanh", "mixed"])
@pytest.mark.parametrize(
    "config",
    [
        TrainConfig(epochs=2, batch_size=16, lr=0.1),
        TrainConfig(epochs=2, batch_size=16, lr=0.05, weight_decay=1e-2),
        TrainConfig(epochs=2, batch_size=20, lr=0.05, momentum=0.9, weight_decay=1e-2),
    ],
)
def test_dense_chains_with_other_activations_match_sequential(kind, config):
    # The hand-written backward of the dense path (activations through autograd, no bias, an in-place
    # activation, unequal subset sizes so that some steps are partial) against torch's own training.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(150, 2, 3)).astype(np.float32)
    y = rng.integers(0, 4, 150)
    model = _chain_members(kind, [0])[0]
    subsets = _subsets(150, [90, 33, 60, 5])
    vec = train_ensemble(model, X, y, subsets, config, seed=4)
    seq = train_ensemble_sequential(model, X, y, subsets, config, seed=4)
    torch.testing.assert_close(vec.to_flat(), seq.to_flat(), atol=2e-5, rtol=1e-4)
    start = get_flat(model)
    assert all((vec.to_flat()[i] - start).abs().max() > 1e-3 for i in range(4))


def test_models_with_other_layers_take_the_vmap_path():
    from ppml.train.ensemble import _DenseChain

    assert _DenseChain.of(build_model("cnn", (1, 28, 28), 10, seed=0)) is None
    assert _DenseChain.of(nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))) is None
    assert _DenseChain.of(nn.Sequential(nn.Flatten(start_dim=2), nn.Linear(3, 3))) is None
    # a dense chain fed inputs with more than one feature axis and no Flatten: the vmap path serves it
    chain = _DenseChain.of(nn.Sequential(nn.Linear(3, 2)))
    assert chain is not None and not chain.accepts(torch.zeros(4, 5, 3))


def test_automatic_chunks_bound_the_stacked_parameters():
    from ppml.train import ensemble

    model = build_model("mlp", (784,), 10, hidden=(128,), seed=0)  # 101,770 float32 parameters
    per_member = 101_770 * 4
    size = ensemble._auto_chunk_size(model)
    assert size * per_member <= ensemble._CHUNK_BYTES < (size + 1) * per_member
    huge = nn.Linear(3000, 2000)  # 24 MB: more than the budget alone, still one member per chunk
    assert ensemble._auto_chunk_size(huge) == 1
