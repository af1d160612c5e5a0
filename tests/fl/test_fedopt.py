import math

import numpy as np
import pytest
import torch

from ppml import ParameterError
from ppml.data.dataset import ClientData, Dataset
from ppml.fl.fedopt import FedAdagrad, FedAdam, FedYogi, weighted_mean_update
from ppml.fl.simulation import run_federated
from ppml.fl.strategy import ClientResult, Strategy
from ppml.models import build_model
from ppml.train import evaluate

RNG = np.random.default_rng(0)
TAU, B1, B2, ETA = 1e-3, 0.9, 0.99, 0.1


def _results(*pairs):
    return [ClientResult(i, n, torch.tensor(u, dtype=torch.float32)) for i, (n, u) in enumerate(pairs)]


# Sizes 1 and 3: Delta = (1 * [4, 0] + 3 * [0, 4]) / 4 = [1, 3]
ROUND1 = _results((1, [4.0, 0.0]), (3, [0.0, 4.0]))
DELTA1 = [1.0, 3.0]
# Delta = [0.0625, -0.25] (one client; exact in float32)
ROUND2 = _results((5, [0.0625, -0.25]))
DELTA2 = [0.0625, -0.25]


def _expected_step(m, v):
    return [ETA * mi / (math.sqrt(vi) + TAU) for mi, vi in zip(m, v, strict=True)]


def test_weighted_mean_update():
    assert torch.allclose(weighted_mean_update(ROUND1), torch.tensor(DELTA1, dtype=torch.float64))
    assert weighted_mean_update([]) is None


@pytest.mark.parametrize("cls", [FedAdagrad, FedAdam, FedYogi])
def test_is_a_strategy(cls):
    s = cls(1.0)
    assert isinstance(s, Strategy)
    cfg = s.config_dict()
    assert cfg["strategy"] == cls.__name__ and cfg["tau"] == 1e-3 and cfg["server_lr"] == 0.1


def test_one_step_matches_algorithm_2():
    g = torch.tensor([0.5, -1.0], dtype=torch.float64)
    v0 = TAU**2
    m = [(1 - B1) * d for d in DELTA1]
    v_of = {
        "adam": [B2 * v0 + (1 - B2) * d * d for d in DELTA1],
        # d^2 > tau^2, so sign(v - d^2) = -1 and v grows by (1 - b2) d^2
        "yogi": [v0 + (1 - B2) * d * d for d in DELTA1],
        "adagrad": [v0 + d * d for d in DELTA1],
    }
    strategies = {
        "adam": FedAdam(1.0, server_lr=ETA, beta1=B1, beta2=B2, tau=TAU),
        "yogi": FedYogi(1.0, server_lr=ETA, beta1=B1, beta2=B2, tau=TAU),
        "adagrad": FedAdagrad(1.0, server_lr=ETA, beta1=B1, tau=TAU),
    }
    for key, s in strategies.items():
        new, metrics = s.aggregate(1, g, ROUND1, RNG)
        expected = [gi + si for gi, si in zip(g.tolist(), _expected_step(m, v_of[key]), strict=True)]
        assert new.dtype == torch.float64
        assert torch.allclose(new, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12), key
        assert torch.allclose(s.m_, torch.tensor(m, dtype=torch.float64), atol=1e-15)
        assert torch.allclose(s.v_, torch.tensor(v_of[key], dtype=torch.float64), atol=1e-15)
        assert metrics["clients"] == 2


def test_state_accumulates_across_rounds():
    g = torch.zeros(2, dtype=torch.float64)
    v0 = TAU**2
    m2 = [B1 * (1 - B1) * d1 + (1 - B1) * d2 for d1, d2 in zip(DELTA1, DELTA2, strict=True)]
    adagrad = FedAdagrad(1.0, server_lr=ETA, beta1=B1, tau=TAU)
    adam = FedAdam(1.0, server_lr=ETA, beta1=B1, beta2=B2, tau=TAU)
    yogi = FedYogi(1.0, server_lr=ETA, beta1=B1, beta2=B2, tau=TAU)
    for s in (adagrad, adam, yogi):
        g1, _ = s.aggregate(1, g, ROUND1, RNG)
        g2, _ = s.aggregate(2, g1, ROUND2, RNG)
        assert torch.allclose(s.m_, torch.tensor(m2, dtype=torch.float64), atol=1e-15)
        v_expected = {
            adagrad: [v0 + a * a + b * b for a, b in zip(DELTA1, DELTA2, strict=True)],
            adam: [
                B2 * (B2 * v0 + (1 - B2) * a * a) + (1 - B2) * b * b
                for a, b in zip(DELTA1, DELTA2, strict=True)
            ],
            # round 2: v1 > d2^2, so sign(v1 - d2^2) = +1 and Yogi *decreases* v (Adam would mix it)
            yogi: [v0 + (1 - B2) * a * a - (1 - B2) * b * b for a, b in zip(DELTA1, DELTA2, strict=True)],
        }[s]
        assert torch.allclose(s.v_, torch.tensor(v_expected, dtype=torch.float64), rtol=0, atol=1e-15)
        expected = [a + b for a, b in zip(g1.tolist(), _expected_step(m2, v_expected), strict=True)]
        assert torch.allclose(g2, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)
    s = FedAdagrad(1.0)
    s.aggregate(1, g, ROUND1, RNG)
    s.reset()
    assert not hasattr(s, "v_")


def test_no_results_leaves_model_and_state_alone():
    s = FedAdam(1.0)
    g = torch.ones(2)
    new, metrics = s.aggregate(1, g, [], RNG)
    assert new is g and metrics["clients"] == 0 and not hasattr(s, "m_")


@pytest.mark.parametrize("cls", [FedAdagrad, FedAdam, FedYogi])
def test_converges_on_a_convex_quadratic(cls):
    """Clients k hold f_k(w) = 1/2 ||w - c_k||^2; one local gradient step gives Delta_k = -lr (w - c_k).

    The global optimum is the size-weighted mean of the c_k.
    """
    gen = np.random.default_rng(1)
    centres = torch.from_numpy(gen.normal(size=(5, 10)))
    sizes = [10, 20, 30, 40, 50]
    optimum = (torch.tensor(sizes, dtype=torch.float64)[:, None] * centres).sum(0) / sum(sizes)
    w = torch.zeros(10, dtype=torch.float64)
    s = cls(1.0, server_lr=0.05)
    start = float(torch.linalg.vector_norm(w - optimum))
    for r in range(1, 301):
        results = [ClientResult(k, sizes[k], -0.5 * (w - centres[k])) for k in range(5)]
        w, _ = s.aggregate(r, w, results, RNG)
    assert float(torch.linalg.vector_norm(w - optimum)) < 0.02 * start


def test_fedadam_trains_a_model_in_the_round_loop():
    torch.set_num_threads(1)
    gen = np.random.default_rng(0)
    y = gen.integers(0, 3, 300)
    X = (gen.normal(size=(300, 4)) + 2.0 * y[:, None]).astype(np.float32)
    ds = Dataset(X=X, y=y.astype(np.int64), name="toy", num_classes=3, owners=np.arange(300) // 30)
    clients = [ClientData(k, np.arange(30 * k, 30 * (k + 1)), ds) for k in range(10)]
    model = build_model("logistic", (4,), 3, seed=0)
    before = evaluate(model, X, y)["loss"]
    res = run_federated(model, clients, FedAdam(0.5, 1, 10, 0.05, server_lr=0.1), rounds=20, seed=0)
    assert evaluate(res.model, X, y)["loss"] < 0.5 * before
    assert res.config["strategy"] == "FedAdam" and res.config["beta2"] == 0.99


@pytest.mark.parametrize(
    ("cls", "kwargs", "param"),
    [
        (FedAdam, {"beta1": 1.0}, "beta1"),
        (FedAdam, {"beta2": -0.1}, "beta2"),
        (FedYogi, {"tau": 0.0}, "tau"),
        (FedAdagrad, {"server_lr": 0.0}, "server_lr"),
    ],
)
def test_bad_parameters(cls, kwargs, param):
    with pytest.raises(ParameterError, match=rf"The '{param}' parameter of {cls.__name__} must be .* Got"):
        cls(**kwargs)
