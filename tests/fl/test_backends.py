import numpy as np
import pytest
import torch
from torch import nn

from ppml import ParameterError
from ppml.fl.backends import train_clients_vectorized
from ppml.fl.fedavg import FedAvg
from ppml.fl.simulation import run_federated
from ppml.models import build_model, get_flat
from ppml.train import TrainConfig


@pytest.mark.parametrize(
    ("epochs", "batch_size"),
    [(1, 4), (2, 5), (1, None), (3, 16)],
)
def test_vectorized_matches_sequential_with_unequal_clients_and_partial_batches(
    epochs, batch_size, scattered_clients
):
    torch.set_num_threads(1)
    ds, clients = scattered_clients([3, 7, 20, 41, 1, 12])

    def run(backend):
        model = build_model("mlp", (6,), 3, hidden=(8,), seed=1)
        strategy = FedAvg(fraction_fit=1.0, local_epochs=epochs, batch_size=batch_size, lr=0.2)
        return run_federated(model, clients, strategy, rounds=3, seed=4, backend=backend)

    seq, vec = run("sequential"), run("vectorized")
    assert torch.allclose(get_flat(seq.model), get_flat(vec.model), atol=1e-5)
    assert np.array_equal(seq.bytes_up, vec.bytes_up)


def test_vectorized_updates_equal_per_client_training(scattered_clients):
    ds, clients = scattered_clients([5, 9, 30])
    model = build_model("logistic", (6,), 3, seed=0)
    g = get_flat(model)
    cfg = TrainConfig(epochs=2, batch_size=4, lr=0.1)
    ups = train_clients_vectorized(
        model, clients, g, cfg, [np.random.default_rng(i) for i in range(3)], max_buckets=2
    )
    assert [u.client_id for u in ups] == [0, 1, 2]
    assert [u.num_examples for u in ups] == [5, 9, 30]
    # A client that trains alone gets the same update as inside the group.
    alone = train_clients_vectorized(model, clients[1:2], g, cfg, [np.random.default_rng(1)])
    assert torch.allclose(alone[0].update, ups[1].update, atol=1e-6)


def test_vectorized_refuses_batchnorm_and_momentum(scattered_clients):
    ds, clients = scattered_clients([5, 5])
    bn = nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4), nn.Linear(4, 3))
    with pytest.raises(ParameterError, match="BatchNorm1d"):
        run_federated(bn, clients, FedAvg(1.0), rounds=1, seed=0, backend="vectorized")
    with pytest.raises(ParameterError, match="'backend' parameter of run_federated must be one of"):
        run_federated(build_model("logistic", (6,), 3), clients, FedAvg(1.0), rounds=1, seed=0, backend="gpu")
