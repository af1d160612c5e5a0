"""DP-SGD noise drawn in the background thread (``noise_prefetch``): bit-identical to drawing it inline,
really drawn in another thread, the right scale, secure mode, and errors that leave no draw running."""

import threading
from contextlib import nullcontext

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn
from torch.nn import functional as F

from ppml import ParameterError
from ppml.dp import dpsgd as dpsgd_module
from ppml.dp.accounting import PrivacyAccountant
from ppml.dp.dpsgd import DPSGD, PREFETCH_MIN_COORDINATES
from ppml.dp.mechanisms import GaussianMechanism, PrivacyWarning

pytestmark = pytest.mark.filterwarnings("ignore::ppml.dp.mechanisms.PrivacyWarning")


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 4))


def _data(n=120, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 20, generator=g), torch.randint(0, 4, (n,), generator=g)


def _flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _record_threads(monkeypatch, name):
    """Record the thread of every call of ``GaussianMechanism.<name>``."""
    threads = []
    original = getattr(GaussianMechanism, name)

    def wrapped(self, *args, **kwargs):
        threads.append(threading.current_thread())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GaussianMechanism, name, wrapped)
    return threads


@pytest.mark.parametrize(
    "settings",
    [
        {"clipping": "ghost"},
        {"clipping": "flat", "momentum": 0.5},
        {"clipping": "ghost", "max_physical_batch_size": 16, "per_layer": True},
        {"clipping": "ghost", "sampling": "shuffle"},
    ],
)
def test_prefetched_noise_is_bit_identical_to_inline_noise_and_drawn_in_another_thread(monkeypatch, settings):
    threads = _record_threads(monkeypatch, "_fill_noise")
    X, y = _data()
    params = {}
    for prefetch in (False, True):
        threads.clear()
        model = _net()
        opt = DPSGD(1.1, 0.5, 0.3, lr=0.2, noise_prefetch=prefetch, **settings)
        shuffle = settings.get("sampling") == "shuffle"
        with pytest.warns(PrivacyWarning, match="shuffle") if shuffle else nullcontext():
            opt.fit(model, X, y, steps=4, rng=7, accountant=PrivacyAccountant())
        gen = np.random.default_rng(8)
        for _ in range(2):  # step() with a Generator carried across calls
            opt.step(model, X, y, rng=gen, accountant=PrivacyAccountant())
        params[prefetch] = _flat(model)
        assert len(threads) == 6
        on_main = {t is threading.main_thread() for t in threads}
        assert on_main == ({False} if prefetch else {True})
    assert torch.equal(params[True], params[False])
    # ... and the noise is there: another seed moves the parameters elsewhere
    model = _net()
    DPSGD(1.1, 0.5, 0.3, lr=0.2, noise_prefetch=True, **settings).fit(
        model, X, y, steps=4, rng=8, accountant=PrivacyAccountant()
    )
    assert not torch.equal(_flat(model), params[True])


@pytest.mark.parametrize("prefetch", [False, True])
def test_noise_scale_is_the_same_with_and_without_prefetching(prefetch):
    """Zero gradients: the update is pure noise with sd lr * z * C / (q N); KS rejects 2/3 and 3/2 of it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(60, 50))
    before = _flat(model)
    n, q, z, c, lr = 200, 0.25, 1.3, 0.7, 0.5
    opt = DPSGD(
        z, c, q, lr=lr, clipping="ghost", noise_prefetch=prefetch, loss_fn=lambda o, t: (o * 0.0).sum(1)
    )
    X = np.random.default_rng(0).normal(size=(n, 60)).astype(np.float32)
    opt.step(model, X, np.zeros(n, np.int64), rng=123, accountant=PrivacyAccountant())
    delta = (_flat(model) - before).double().numpy()
    sd = lr * z * c / (q * n)
    assert stats.kstest(delta, "norm", args=(0, sd)).pvalue > 1e-3
    assert stats.kstest(delta, "norm", args=(0, sd * 2 / 3)).pvalue < 1e-6
    assert stats.kstest(delta, "norm", args=(0, sd * 3 / 2)).pvalue < 1e-6


def test_secure_mode_prefetches_the_exact_sampler_noise_in_another_thread(monkeypatch):
    threads = _record_threads(monkeypatch, "_draw_secure_noise")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(60, 50)).double()
    before = _flat(model)
    n, q, z, c, lr = 200, 0.25, 1.3, 0.7, 0.5
    opt = DPSGD(z, c, q, lr=lr, secure=True, noise_prefetch=True, loss_fn=lambda o, t: (o * 0.0).sum(1))
    acc = PrivacyAccountant()
    opt.step(model, np.zeros((n, 60)), np.zeros(n, np.int64), accountant=acc)
    assert len(threads) == 1 and threads[0] is not threading.main_thread()
    assert acc.ledger[0].event["event"]["noise_multiplier"] < z  # the secure event
    delta = (_flat(model) - before).numpy()
    sd = lr * z * c / (q * n)
    assert stats.kstest(delta, "norm", args=(0, sd)).pvalue > 1e-3
    assert stats.kstest(delta, "norm", args=(0, sd * 2 / 3)).pvalue < 1e-6
    # the noisy sum lies on secure mode's power-of-two grid: lr / (q n) times integers times 2**g
    g = GaussianMechanism(c, z, secure=True)._grid_exp(60 * 50 + 50)
    steps = delta / (lr / (q * n)) / 2.0**g
    assert np.max(np.abs(steps - np.rint(steps))) < 1e-3


def test_a_failing_step_leaves_no_draw_running_and_the_next_step_matches_inline():
    X, y = _data()
    calls = []

    def flaky(out, t):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return F.cross_entropy(out, t, reduction="none")

    results = {}
    for prefetch in (True, False):
        calls.clear()
        model = _net()
        opt = DPSGD(1.0, 1.0, 0.5, clipping="ghost", noise_prefetch=prefetch, loss_fn=flaky)
        gen = np.random.default_rng(3)
        with pytest.raises(RuntimeError, match="boom"):
            opt.step(model, X, y, rng=gen, accountant=PrivacyAccountant())
        opt.step(model, X, y, rng=gen, accountant=PrivacyAccountant())
        results[prefetch] = _flat(model)
    assert torch.equal(results[True], results[False])


def test_auto_prefetches_only_large_models_on_several_cpus(monkeypatch):
    small = nn.Linear(10, 2)
    large = nn.Linear(PREFETCH_MIN_COORDINATES, 1)
    opt = DPSGD(1.0, 1.0, 0.5)
    assert opt.noise_prefetch == "auto"
    monkeypatch.setattr(dpsgd_module.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(dpsgd_module.torch, "get_num_threads", lambda: 1)
    assert not opt._prefetch(dpsgd_module._Plan(small, "flat", "t"))
    assert opt._prefetch(dpsgd_module._Plan(large, "flat", "t"))
    # no core left free by the step's own torch threads: the noise is drawn inline
    monkeypatch.setattr(dpsgd_module.torch, "get_num_threads", lambda: 2)
    assert not opt._prefetch(dpsgd_module._Plan(large, "flat", "t"))
    monkeypatch.setattr(dpsgd_module.torch, "get_num_threads", lambda: 1)
    monkeypatch.setattr(dpsgd_module.os, "cpu_count", lambda: 1)
    assert not opt._prefetch(dpsgd_module._Plan(large, "flat", "t"))
    assert DPSGD(1.0, 1.0, 0.5, noise_prefetch=True)._prefetch(dpsgd_module._Plan(small, "flat", "t"))


def test_noise_prefetch_is_validated_and_shown():
    with pytest.raises(ParameterError, match="'noise_prefetch' parameter of DPSGD"):
        DPSGD(1.0, 1.0, 0.5, noise_prefetch="yes")
    with pytest.raises(ParameterError, match="'noise_prefetch'"):
        DPSGD(1.0, 1.0, 0.5, noise_prefetch=1)
    assert "noise_prefetch=False" in repr(DPSGD(1.0, 1.0, 0.5, noise_prefetch=False))
