"""The Ray backend: same updates as sequential per-client training, clear error without Ray."""

import sys

import numpy as np
import pytest
import torch

from ppml.fl.backends.ray_backend import shutdown_ray, train_clients_ray
from ppml.models import build_model, get_flat
from ppml.models.params import set_flat
from ppml.train import TrainConfig
from ppml.train.loop import train_epochs


def _sequential(model, clients, g, cfg, rngs, mu):
    out = []
    for c, rng in zip(clients, rngs, strict=True):
        set_flat(model, g)
        extra = {"proximal_to": [p.detach().clone() for p in model.parameters()], "mu": mu} if mu > 0 else {}
        local = train_epochs(model, c.X, c.y, cfg, rng, **extra)
        out.append((get_flat(model) - g, local["loss"]))
    return out


@pytest.fixture(scope="module")
def ray_session():
    try:
        import ray
    except ImportError as err:  # absent or broken: the Ray tests are skipped, the others still run
        pytest.skip(f"Ray is not importable: {err}")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray
    shutdown_ray()


@pytest.mark.parametrize(("epochs", "batch_size", "mu"), [(2, 4, 0.0), (1, None, 0.0), (3, 5, 0.5)])
def test_ray_updates_equal_sequential_training(ray_session, epochs, batch_size, mu, scattered_clients):
    torch.set_num_threads(1)
    _, clients = scattered_clients([3, 7, 20, 41, 1, 12])
    model = build_model("mlp", (6,), 3, hidden=(8,), seed=1)
    g = get_flat(model)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=0.2)
    seeds = [10 + i for i in range(len(clients))]
    ref = _sequential(
        build_model("mlp", (6,), 3, hidden=(8,), seed=1),
        clients,
        g,
        cfg,
        [np.random.default_rng(s) for s in seeds],
        mu,
    )
    rngs = [np.random.default_rng(s) for s in seeds]
    got = train_clients_ray(model, clients, g, cfg, rngs, mu=mu, num_workers=2)
    assert torch.equal(get_flat(model), g)  # the caller's model is not trained here
    assert [r.client_id for r in got] == [c.client_id for c in clients]
    assert [r.num_examples for r in got] == [len(c) for c in clients]
    for r, (update, loss) in zip(got, ref, strict=True):
        assert torch.allclose(r.update, update, atol=1e-6)
        assert r.metrics["loss"] == pytest.approx(loss, rel=1e-5)
    # The caller's generators end where sequential training leaves them.
    after = [np.random.default_rng(s) for s in seeds]
    _sequential(model, clients, g, cfg, after, mu)
    assert [r.random() for r in rngs] == [a.random() for a in after]


def test_ray_reuses_pool_across_calls_and_handles_a_new_model(ray_session, scattered_clients):
    _, clients = scattered_clients([5, 9, 30, 2])
    cfg = TrainConfig(epochs=1, batch_size=4, lr=0.1)
    for seed in (0, 1):  # a second model object must not train with the first one's architecture
        model = build_model("mlp", (6,), 3, hidden=(4 + seed,), seed=seed)
        g = get_flat(model)
        # The second call asks for more actors than CPUs: they share the CPUs instead of waiting.
        rngs = [np.random.default_rng(i) for i in range(4)]
        got = train_clients_ray(model, clients, g, cfg, rngs, num_workers=2 + seed)
        ref = _sequential(model, clients, g, cfg, [np.random.default_rng(i) for i in range(4)], 0.0)
        for r, (update, _) in zip(got, ref, strict=True):
            assert torch.allclose(r.update, update, atol=1e-6)
    assert train_clients_ray(model, [], g, cfg, []) == []


def test_missing_ray_gives_a_clear_message(monkeypatch, scattered_clients):
    monkeypatch.setitem(sys.modules, "ray", None)
    _, clients = scattered_clients([3])
    model = build_model("logistic", (6,), 3, seed=0)
    cfg = TrainConfig(epochs=1, batch_size=2, lr=0.1)
    with pytest.raises(ImportError, match=r"pip install 'ppml\[ray\]'"):
        train_clients_ray(model, clients, get_flat(model), cfg, [np.random.default_rng(0)])


def test_run_federated_on_ray_equals_sequential(ray_session, scattered_clients):
    from ppml.fl import FedAvg, run_federated

    ds, clients = scattered_clients([4, 9, 17, 30])

    def run(backend):
        model = build_model("mlp", (6,), 3, hidden=(8,), seed=2)
        return run_federated(model, clients, FedAvg(1.0, 1, 5, 0.2), rounds=2, seed=5, backend=backend)

    seq, on_ray = run("sequential"), run("ray")
    assert torch.allclose(get_flat(seq.model), get_flat(on_ray.model), atol=1e-6)
    assert on_ray.history[-1]["train_loss"] == pytest.approx(seq.history[-1]["train_loss"], rel=1e-5)
