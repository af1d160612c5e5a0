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


def _run(clients, rounds=5, **kwargs):
    torch.manual_seed(0)
    model = build_model("logistic", (3,), 2)
    return run_federated(model, clients, FedAvg(1.0, local_epochs=2), rounds=rounds, seed=0, **kwargs)


def test_slow_clients_are_stragglers_and_never_participate():
    k = 20
    clients = _clients(k)
    # 10 examples, 2 epochs: fast clients need 20 / 10 = 2 s (times jitter), slow ones 20 / 0.5 = 40 s.
    speed = np.where(np.arange(k) % 4 == 0, 0.5, 10.0)
    slow = speed < 1
    res = _run(clients, rounds=8, client_speed=speed, round_deadline=10.0)
    assert (res.participation[slow] == 0).all()
    assert (res.participation[~slow] == 8).all()
    assert [h["stragglers"] for h in res.history] == [slow.sum()] * 8
    assert [h["clients"] for h in res.history] == [(~slow).sum()] * 8
    assert all(h["dropped"] == 0 for h in res.history)
    assert all(h["round_time_s"] == 10.0 for h in res.history)  # the server waited until the deadline


def test_straggler_count_matches_simulated_times_with_dropout():
    k = 30
    clients = _clients(k)
    speed = np.random.default_rng(1).uniform(0.5, 4.0, k)
    res = _run(clients, rounds=10, client_speed=speed, round_deadline=12.0, dropout=0.2)
    total = sum(h["stragglers"] for h in res.history)
    assert 0 < total < 10 * k
    for h in res.history:
        assert h["stragglers"] + h["dropped"] + h["clients"] == h["selected"] == k
        assert 0 < h["round_time_s"] <= 12.0
        if h["stragglers"]:
            assert h["round_time_s"] == 12.0
    assert res.participation.sum() == sum(h["clients"] for h in res.history)


def test_bytes_up_excludes_stragglers_but_bytes_down_does_not():
    k = 10
    clients = _clients(k)
    speed = np.where(np.arange(k) < 3, 0.1, 100.0)
    model_bytes = num_bytes(build_model("logistic", (3,), 2))
    res = _run(clients, rounds=4, client_speed=speed, round_deadline=5.0)
    assert (res.bytes_down == 4 * model_bytes).all()
    assert (res.bytes_up[:3] == 0).all()
    assert (res.bytes_up[3:] == 4 * model_bytes).all()


def test_without_deadline_results_are_unchanged():
    clients = _clients(10)
    base = _run(clients, dropout=0.2)
    same = _run(clients, dropout=0.2, client_speed=np.linspace(0.5, 5.0, 10))
    assert torch.equal(get_flat(base.model), get_flat(same.model))
    np.testing.assert_array_equal(base.bytes_up, same.bytes_up)
    np.testing.assert_array_equal(base.participation, same.participation)
    for a, b in zip(base.history, same.history, strict=True):
        assert a["stragglers"] == b["stragglers"] == 0
        assert a["train_loss"] == b["train_loss"]
        assert a["clients"] == b["clients"]
        assert a["round_time_s"] > 0


def test_deadline_nobody_misses_changes_nothing():
    clients = _clients(10)
    base = _run(clients)
    loose = _run(clients, round_deadline=1e9)
    assert torch.equal(get_flat(base.model), get_flat(loose.model))
    assert all(h["stragglers"] == 0 for h in loose.history)


def test_aggregate_weights_only_arrived_clients():
    # The round's model equals a FedAvg run over the arrived clients alone (no weight for stragglers).
    k = 6
    clients = _clients(k)
    speed = np.array([100.0, 100.0, 100.0, 0.01, 0.01, 100.0])
    res = _run(clients, rounds=1, client_speed=speed, round_deadline=5.0)
    only_fast = _run(clients, rounds=1, availability=lambda r: speed > 1)
    assert res.history[0]["stragglers"] == 2
    assert torch.allclose(get_flat(res.model), get_flat(only_fast.model))


def test_round_without_arrivals_changes_nothing():
    clients = _clients(4)
    torch.manual_seed(0)
    before = get_flat(build_model("logistic", (3,), 2))
    res = _run(clients, rounds=2, client_speed=np.full(4, 0.01), round_deadline=1.0)
    assert all(h["stragglers"] == 4 and h["clients"] == 0 for h in res.history)
    assert all(h["round_time_s"] == 1.0 for h in res.history)
    assert torch.equal(get_flat(res.model), before)
    assert res.bytes_up.sum() == 0


@pytest.mark.parametrize(
    "speed",
    [
        np.ones(3),  # wrong length
        np.ones((4, 1)),
        np.array([1.0, 0.0, 1.0, 1.0]),
        np.array([1.0, -2.0, 1.0, 1.0]),
        np.array([1.0, np.inf, 1.0, 1.0]),
        np.array([1.0, np.nan, 1.0, 1.0]),
        np.array(["a", "b", "c", "d"]),
        "fast",
    ],
)
def test_bad_client_speed(speed):
    with pytest.raises(ParameterError, match="'client_speed' parameter of run_federated") as err:
        _run(_clients(4), rounds=1, client_speed=speed)
    assert err.value.param == "client_speed"


@pytest.mark.parametrize("deadline", [0.0, -1.0, float("nan"), "10"])
def test_bad_round_deadline(deadline):
    with pytest.raises(ParameterError, match="'round_deadline' parameter of run_federated"):
        _run(_clients(4), rounds=1, round_deadline=deadline)
