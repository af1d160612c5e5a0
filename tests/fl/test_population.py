import numpy as np
import pytest
import torch

from ppml import ParameterError
from ppml.data.dataset import ClientData, Dataset
from ppml.fl import FedAvg, run_federated
from ppml.models import build_model, get_flat, num_bytes


def _clients(k=20, seed=0):
    rng = np.random.default_rng(seed)
    n = 10 * k
    y = rng.integers(0, 2, n)
    X = (rng.normal(size=(n, 3)) + 2 * y[:, None]).astype(np.float32)
    ds = Dataset(X=X, y=y.astype(np.int64), name="toy", num_classes=2)
    return [ClientData(i, np.arange(10 * i, 10 * (i + 1)), ds) for i in range(k)]


def test_dropout_rate_is_respected_and_uploads_only_count_survivors():
    clients = _clients(50)
    model = build_model("logistic", (3,), 2)
    res = run_federated(model, clients, FedAvg(1.0), rounds=20, seed=0, dropout=0.3)
    dropped = np.array([h["dropped"] for h in res.history])
    assert abs(dropped.mean() / 50 - 0.3) < 0.05
    b = num_bytes(model)
    assert res.bytes_down.sum() == 20 * 50 * b  # everyone selected downloads
    assert res.bytes_up.sum() == (20 * 50 - dropped.sum()) * b
    assert [h["clients"] for h in res.history] == list(50 - dropped)


def test_round_with_too_few_updates_changes_nothing():
    clients = _clients(4)
    model = build_model("logistic", (3,), 2)
    before = get_flat(model)
    # Four clients can never deliver five updates: every round is skipped and the model is unchanged.
    res = run_federated(model, clients, FedAvg(1.0), rounds=2, seed=0, min_results=5)
    assert all(h["skipped"] == "fewer than 5 updates arrived" for h in res.history)
    assert torch.equal(get_flat(res.model), before)
    # With enough updates the same run does change the model.
    moved = run_federated(
        build_model("logistic", (3,), 2), clients, FedAvg(1.0), rounds=2, seed=0, min_results=4
    )
    assert not torch.equal(get_flat(moved.model), before)


def test_client_accuracy_spread_is_reported_on_evaluation_rounds():
    clients = _clients(10)
    res = run_federated(
        build_model("logistic", (3,), 2),
        clients,
        FedAvg(1.0, lr=0.5),
        rounds=4,
        seed=0,
        eval_every=2,
        client_eval=True,
    )
    assert "client_accuracy_p10" not in res.history[0]
    last = res.history[-1]
    assert 0 <= last["client_accuracy_min"] <= last["client_accuracy_p10"] <= last["client_accuracy_p50"]
    assert last["client_accuracy_p50"] <= last["client_accuracy_p90"] <= 1
    assert last["client_accuracy_mean"] > 0.7


def test_bad_population_parameters():
    with pytest.raises(ParameterError, match="'dropout' parameter of run_federated"):
        run_federated(
            build_model("logistic", (3,), 2), _clients(2), FedAvg(1.0), rounds=1, seed=0, dropout=1.0
        )
