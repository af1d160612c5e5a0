import numpy as np
import pytest
import torch
from torch.nn import functional as F

from ppml import ParameterError
from ppml.data.dataset import ClientData, Dataset
from ppml.fl.fedavg import FedAvg
from ppml.fl.scaffold import Scaffold
from ppml.fl.simulation import run_federated
from ppml.fl.strategy import Strategy
from ppml.models import build_model, get_flat, set_flat


def _two_clients(n=40, seed=0):
    """Two equally sized clients with very different, overlapping (non-separable) data."""
    rng = np.random.default_rng(seed)
    X0 = rng.normal(loc=(-1.5, 0.5), size=(n, 2))
    y0 = (rng.random(n) < 0.8).astype(np.int64)  # mostly class 1
    X1 = rng.normal(loc=(1.5, -0.5), size=(n, 2))
    y1 = (rng.random(n) < 0.25).astype(np.int64)  # mostly class 0
    X = np.concatenate([X0, X1]).astype(np.float32)
    y = np.concatenate([y0, y1])
    ds = Dataset(X=X, y=y, name="toy", num_classes=2)
    return ds, [ClientData(0, np.arange(n), ds), ClientData(1, np.arange(n, 2 * n), ds)]


def _global_optimum(ds):
    """The minimiser of the mean of the two clients' mean losses (equal sizes: the pooled loss)."""
    model = build_model("logistic", (2,), 2, seed=0)
    set_flat(model, torch.zeros_like(get_flat(model)))
    X, y = torch.from_numpy(ds.X), torch.from_numpy(ds.y)
    opt = torch.optim.LBFGS(
        model.parameters(), lr=1.0, max_iter=500, tolerance_grad=1e-12, tolerance_change=0
    )

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(X), y)
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
    return _logit_gap(get_flat(model))


def _logit_gap(flat):
    """Two-class softmax regression is identified only up to a shared shift of both classes'
    weights, so compare (w_1 - w_0, b_1 - b_0): the function the model computes."""
    w, b = flat[:4].reshape(2, 2), flat[4:]
    return torch.cat([w[1] - w[0], b[1:] - b[:1]])


def _run(strategy, clients, rounds, backend="sequential"):
    model = build_model("logistic", (2,), 2, seed=0)
    set_flat(model, torch.zeros_like(get_flat(model)))
    return run_federated(model, clients, strategy, rounds=rounds, seed=1, backend=backend)


def test_scaffold_is_a_strategy_and_validates():
    s = Scaffold(1.0, 2, 10, 0.1)
    assert isinstance(s, Strategy)
    assert s.config_dict()["strategy"] == "SCAFFOLD"
    assert s.local_steps(25) == 2 * 3
    assert Scaffold(1.0, 3, None, 0.1).local_steps(25) == 3
    with pytest.raises(ParameterError, match="'weighted' parameter of Scaffold"):
        Scaffold(weighted="yes")  # type: ignore[arg-type]


def test_scaffold_reaches_the_optimum_where_fedavg_drifts():
    """Two heterogeneous clients, many local full-batch steps: FedAvg's fixed point is not the
    optimum of the global loss (client drift); SCAFFOLD's corrections remove the drift."""
    torch.set_num_threads(1)
    ds, clients = _two_clients()
    opt = _global_optimum(ds)
    fedavg = _logit_gap(get_flat(_run(FedAvg(1.0, 20, None, 0.5), clients, rounds=60).model))
    scaffold = _logit_gap(get_flat(_run(Scaffold(1.0, 20, None, 0.5), clients, rounds=60).model))
    err_fedavg = float(torch.linalg.vector_norm(fedavg - opt))
    err_scaffold = float(torch.linalg.vector_norm(scaffold - opt))
    assert err_scaffold < 1e-4
    assert err_fedavg > 0.05
    assert err_fedavg > 1000 * err_scaffold


def test_one_client_scaffold_is_fedavg():
    """With a single client, c = c_i always, so the correction is zero and SCAFFOLD is FedAvg."""
    torch.set_num_threads(1)
    _, clients = _two_clients()
    a = get_flat(_run(FedAvg(1.0, 3, 8, 0.1), clients[:1], rounds=4).model)
    b = get_flat(_run(Scaffold(1.0, 3, 8, 0.1), clients[:1], rounds=4).model)
    assert torch.allclose(a, b, atol=1e-6)


def test_control_variates_average_to_the_server_control_under_full_participation():
    torch.set_num_threads(1)
    _, clients = _two_clients()
    s = Scaffold(1.0, 2, 10, 0.2)
    _run(s, clients, rounds=3)
    mean_ci = torch.stack([s.client_controls_[0], s.client_controls_[1]]).mean(0)
    assert torch.allclose(s.server_control_, mean_ci, atol=1e-9)
    assert float(s.server_control_.norm()) > 0


@pytest.mark.parametrize("backend", ["vectorized"])
def test_backends_apply_the_same_correction(backend):
    torch.set_num_threads(1)
    _, clients = _two_clients()
    a = get_flat(_run(Scaffold(1.0, 2, 8, 0.2), clients, rounds=5).model)
    b = get_flat(_run(Scaffold(1.0, 2, 8, 0.2), clients, rounds=5, backend=backend).model)
    assert torch.allclose(a, b, atol=1e-5)
    fedavg = get_flat(_run(FedAvg(1.0, 2, 8, 0.2), clients, rounds=5).model)
    assert not torch.allclose(a, fedavg, atol=1e-4)


def test_dp_fedavg_refuses_scaffold():
    from ppml.dp.accounting import PrivacyAccountant
    from ppml.fl.dp_fedavg import DPFedAvg

    with pytest.raises(ParameterError, match="control variates"):
        DPFedAvg(Scaffold(0.5), clip_norm=1.0, noise_multiplier=1.0, accountant=PrivacyAccountant())


def test_experiment_file_runs_scaffold():
    from ppml.experiment.config import parse_config
    from ppml.experiment.runner import run_experiment

    cfg = parse_config(
        {
            "name": "scaffold",
            "data": {"name": "adas", "vehicles": 30},
            "model": {"name": "logistic"},
            "fl": {"strategy": "scaffold", "rounds": 2, "fraction_fit": 0.5, "lr": 0.05},
            "attack": {"membership": False},
        }
    )
    summary = run_experiment(cfg, progress=False)
    assert summary.config["fl"]["strategy"] == "scaffold"
    assert "SCAFFOLD" in summary.description


def test_control_variates_use_the_rounds_decayed_rate():
    """With one local step (E = 1, B = n) option II gives c_i = the client's gradient at the global model,
    whatever the rate, provided the rate of that round divides the update (with the undecayed rate c_i
    would come out scaled by the decay)."""
    torch.set_num_threads(1)
    _, clients = _two_clients()
    after_one = get_flat(_run(Scaffold(1.0, 1, None, 0.5, lr_decay=0.5), clients, rounds=1).model)
    s = Scaffold(1.0, 1, None, 0.5, lr_decay=0.5)
    after_two = get_flat(_run(s, clients, rounds=2).model)
    # Round 2's step is the rate 0.25 times the mean corrected gradient, which (c the mean of the c_i under
    # full participation, equal sizes) is the mean gradient at round 2's start: the controls' mean.
    mean_grad = torch.stack([s.client_controls_[0], s.client_controls_[1]]).mean(0)
    assert torch.allclose(
        after_two.to(torch.float64), after_one.to(torch.float64) - 0.25 * mean_grad, atol=1e-5
    )
    probe = build_model("logistic", (2,), 2, seed=0)
    for cid, c in enumerate(clients):
        set_flat(probe, after_one)  # the global model round 2 started from
        probe.zero_grad()
        F.cross_entropy(probe(torch.from_numpy(c.X)), torch.from_numpy(c.y)).backward()
        grad = torch.cat([p.grad.reshape(-1) for p in probe.parameters()]).to(torch.float64)
        assert torch.allclose(s.client_controls_[cid], grad, atol=1e-6)
