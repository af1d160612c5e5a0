import numpy as np
import pytest
import torch

from ppml import ParameterError
from ppml.data.dataset import ClientData, Dataset
from ppml.fl.fedavg import FedAvg
from ppml.fl.fedprox import FedProx
from ppml.fl.simulation import run_federated
from ppml.fl.strategy import Strategy
from ppml.models import build_model, get_flat


def _non_iid_clients(n_per_client=60, seed=0):
    """Three clients, each holding a single label (pathological non-IID)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), n_per_client)
    X = (rng.normal(size=(len(y), 4)) + 2.0 * y[:, None]).astype(np.float32)
    ds = Dataset(X=X, y=y.astype(np.int64), name="toy", num_classes=3, owners=np.arange(len(y)))
    return ds, [ClientData(k, np.flatnonzero(y == k), ds) for k in range(3)]


def _run(strategy, clients, rounds=2):
    model = build_model("mlp", (4,), 3, hidden=(8,), seed=0)
    return run_federated(model, clients, strategy, rounds=rounds, seed=3)


def test_fedprox_is_a_strategy_and_reports_mu():
    s = FedProx(1.0, mu=0.5)
    assert isinstance(s, Strategy)
    cfg = s.config_dict()
    assert cfg["strategy"] == "FedProx" and cfg["mu"] == 0.5 and cfg["fraction_fit"] == 1.0
    kw = s.local_train_kwargs([torch.zeros(2)])
    assert kw["mu"] == 0.5 and torch.equal(kw["proximal_to"][0], torch.zeros(2))


def test_mu_zero_is_exactly_fedavg():
    torch.set_num_threads(1)
    _, clients = _non_iid_clients()
    a = _run(FedAvg(1.0, 3, 10, 0.1), clients)
    b = _run(FedProx(1.0, 3, 10, 0.1, mu=0.0), clients)
    assert torch.equal(get_flat(a.model), get_flat(b.model))


def test_large_mu_limits_client_drift_on_non_iid_data():
    torch.set_num_threads(1)
    _, clients = _non_iid_clients()
    w0 = get_flat(build_model("mlp", (4,), 3, hidden=(8,), seed=0))
    drift = {}
    for mu in (0.0, 0.1, 10.0):
        for k in range(3):
            res = _run(FedProx(1.0, 5, 10, 0.1, mu=mu), [clients[k]], rounds=1)
            drift[mu, k] = float(torch.linalg.vector_norm(get_flat(res.model) - w0))
    for k in range(3):
        assert drift[10.0, k] < drift[0.1, k] < drift[0.0, k]
        assert drift[10.0, k] < 0.5 * drift[0.0, k]
    # and the server's round-one step (the weighted mean of the updates) is smaller too
    fedavg = _run(FedAvg(1.0, 5, 10, 0.1), clients, rounds=1)
    prox = _run(FedProx(1.0, 5, 10, 0.1, mu=10.0), clients, rounds=1)
    assert torch.linalg.vector_norm(get_flat(prox.model) - w0) < torch.linalg.vector_norm(
        get_flat(fedavg.model) - w0
    )


@pytest.mark.parametrize("mu", [-0.1, float("nan"), "1"])
def test_bad_mu(mu):
    with pytest.raises(ParameterError, match=r"The 'mu' parameter of FedProx must be .* Got .* instead\."):
        FedProx(mu=mu)
