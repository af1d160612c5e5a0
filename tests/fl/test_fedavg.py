import numpy as np
import pytest
import torch

from ppml import ParameterError
from ppml.data.dataset import ClientData, Dataset
from ppml.fl.fedavg import FedAvg
from ppml.fl.simulation import run_federated
from ppml.fl.strategy import ClientResult, Strategy
from ppml.models import build_model, get_flat
from ppml.train import TrainConfig, train_epochs


def _dataset(n=300, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = (rng.normal(size=(n, 4)) + y[:, None]).astype(np.float32)
    return Dataset(X=X, y=y.astype(np.int64), name="toy", num_classes=3, owners=np.arange(n) // 30)


def _clients(ds, sizes):
    bounds = np.cumsum([0, *sizes])
    return [ClientData(i, np.arange(bounds[i], bounds[i + 1]), ds) for i in range(len(sizes))]


def test_fedavg_is_a_strategy_and_averages_by_size():
    s = FedAvg(fraction_fit=1.0)
    assert isinstance(s, Strategy)
    g = torch.zeros(3)
    results = [ClientResult(0, 1, torch.tensor([3.0, 0, 0])), ClientResult(1, 3, torch.tensor([-1.0, 4, 0]))]
    new, metrics = s.aggregate(1, g, results, np.random.default_rng(0))
    assert torch.allclose(new, torch.tensor([0.0, 3.0, 0.0]))
    assert metrics["clients"] == 2


def test_configure_round_samples_c_times_k_distinct_available_clients():
    s = FedAvg(fraction_fit=0.1)
    sel = s.configure_round(1, 100, np.arange(100), np.random.default_rng(0))
    assert len(sel) == 10 and len(set(sel.tolist())) == 10
    sel = s.configure_round(1, 100, np.array([3, 5, 7]), np.random.default_rng(0))
    assert set(sel.tolist()) <= {3, 5, 7} and len(sel) == 3
    assert (
        len(FedAvg(fraction_fit=0.001).configure_round(1, 100, np.arange(100), np.random.default_rng(0))) == 1
    )


def test_fedsgd_equals_one_full_batch_gradient_step_on_the_union():
    """FedSGD (E=1, B=inf, C=1) with size weights is one gradient step on all the clients' data."""
    torch.set_num_threads(1)
    ds = _dataset()
    clients = _clients(ds, [30, 70, 200])
    model = build_model("mlp", (4,), 3, hidden=(8,), seed=0)
    central = build_model("mlp", (4,), 3, hidden=(8,), seed=0)
    run_federated(model, clients, FedAvg(1.0, 1, None, lr=0.3), rounds=1, seed=0)
    train_epochs(
        central, ds.X, ds.y, TrainConfig(epochs=1, batch_size=None, lr=0.3), np.random.default_rng(0)
    )
    assert torch.allclose(get_flat(model), get_flat(central), atol=1e-6)


def test_run_is_reproducible_and_counts_bytes():
    ds = _dataset()
    clients = _clients(ds, [30] * 10)

    def run(seed):
        m = build_model("mlp", (4,), 3, hidden=(8,), seed=0)
        return run_federated(m, clients, FedAvg(0.3, 1, 10, 0.1), rounds=3, seed=seed, test=(ds.X, ds.y))

    a, b, c = run(1), run(1), run(2)
    assert torch.equal(get_flat(a.model), get_flat(b.model))
    assert not torch.equal(get_flat(a.model), get_flat(c.model))
    assert a.participation.sum() == 9  # 3 clients x 3 rounds
    model_bytes = 4 * (4 * 8 + 8 + 8 * 3 + 3)
    assert np.array_equal(a.bytes_up, a.participation * model_bytes)
    assert "test_accuracy" in a.history[-1]


def test_availability_limits_who_trains():
    ds = _dataset()
    clients = _clients(ds, [30] * 10)
    mask = np.zeros(10, dtype=bool)
    mask[[2, 4]] = True
    res = run_federated(
        build_model("logistic", (4,), 3), clients, FedAvg(1.0), rounds=2, seed=0, availability=lambda r: mask
    )
    assert set(np.flatnonzero(res.participation)) == {2, 4}


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"fraction_fit": 0.0}, "fraction_fit"),
        ({"fraction_fit": 1.2}, "fraction_fit"),
        ({"local_epochs": 0}, "local_epochs"),
        ({"lr": -1.0}, "lr"),
    ],
)
def test_bad_parameters(kwargs, param):
    with pytest.raises(ParameterError, match=f"'{param}' parameter of FedAvg"):
        FedAvg(**kwargs)


@pytest.mark.parametrize("decay", [0.0, 1.5, -0.5])
def test_lr_decay_outside_0_1_is_refused(decay):
    with pytest.raises(ParameterError, match="'lr_decay' parameter of FedAvg"):
        FedAvg(lr_decay=decay)


def test_lr_decay_sets_each_rounds_client_rate():
    s = FedAvg(lr=0.2, lr_decay=0.5)
    assert [s.round_train_config(t).lr for t in (1, 2, 3)] == pytest.approx([0.2, 0.1, 0.05])
    assert s.train_config.lr == 0.2 and s.config_dict()["lr_decay"] == 0.5
    constant = FedAvg(lr=0.2)
    assert constant.round_train_config(7) is constant.train_config
    assert (
        "lr_decay" not in constant.config_dict()
    )  # checkpoints of constant-rate runs keep their fingerprint


def test_dp_fedavg_trains_clients_at_the_wrapped_strategys_decayed_rate():
    from ppml.dp.accounting import PrivacyAccountant
    from ppml.fl.dp_fedavg import DPFedAvg

    dp = DPFedAvg(
        FedAvg(0.5, lr=0.2, lr_decay=0.5), clip_norm=1.0, noise_multiplier=1.0, accountant=PrivacyAccountant()
    )
    assert [dp.round_train_config(t).lr for t in (1, 3)] == pytest.approx([0.2, 0.05])


@pytest.mark.parametrize("backend", ["sequential", "vectorized"])
def test_decayed_fedsgd_takes_gradient_steps_of_the_decayed_sizes(backend):
    """FedSGD with C = 1 and lr_decay d: round t is one full-batch step of size lr * d^(t-1) on the union;
    without the decay (a loop that ignored it) round 2 would step twice as far."""
    torch.set_num_threads(1)
    ds = _dataset()
    clients = _clients(ds, [30, 70, 200])
    model = build_model("mlp", (4,), 3, hidden=(8,), seed=0)
    run_federated(
        model, clients, FedAvg(1.0, 1, None, lr=0.4, lr_decay=0.5), rounds=3, seed=0, backend=backend
    )
    central = build_model("mlp", (4,), 3, hidden=(8,), seed=0)
    for lr in (0.4, 0.2, 0.1):
        train_epochs(
            central, ds.X, ds.y, TrainConfig(epochs=1, batch_size=None, lr=lr), np.random.default_rng(0)
        )
    assert torch.allclose(get_flat(model), get_flat(central), atol=1e-5)
    undecayed = build_model("mlp", (4,), 3, hidden=(8,), seed=0)
    run_federated(undecayed, clients, FedAvg(1.0, 1, None, lr=0.4), rounds=3, seed=0, backend=backend)
    assert not torch.allclose(get_flat(model), get_flat(undecayed), atol=1e-3)


def test_on_round_sees_each_rounds_global_model_and_cannot_change_the_run():
    ds = _dataset()
    clients = _clients(ds, [30] * 10)
    seen = []

    def run(rounds):
        m = build_model("mlp", (4,), 3, hidden=(8,), seed=0)
        return get_flat(run_federated(m, clients, FedAvg(0.3, 1, 10, 0.1), rounds=rounds, seed=1).model)

    def meddle(entry):
        seen.append(get_flat(model_ref[0]).clone())
        for p in model_ref[0].parameters():
            p.data.zero_()  # must not leak into the next round

    model_ref = [build_model("mlp", (4,), 3, hidden=(8,), seed=0)]
    run_federated(model_ref[0], clients, FedAvg(0.3, 1, 10, 0.1), rounds=3, seed=1, on_round=meddle)
    for t in (1, 2, 3):
        assert torch.equal(seen[t - 1], run(t))
    assert not torch.equal(seen[0], seen[1])
