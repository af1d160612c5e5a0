"""The 'mkl' noise sampler (Intel oneMKL's ARS-5 + Box-Muller, ``ppml.dp._vsl``): the right noise
scale, reproducibility from a seed, chunking, threads, DP-SGD wiring, and clear errors."""

import threading

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from ppml import ParameterError
from ppml.dp import _vsl
from ppml.dp.accounting import PrivacyAccountant
from ppml.dp.dpsgd import DPSGD
from ppml.dp.mechanisms import GaussianMechanism
from ppml.experiment.config import parse_config
from ppml.fl.dp_fedavg import DPFedAvg
from ppml.fl.fedavg import FedAvg
from ppml.fl.strategy import ClientResult

pytestmark = pytest.mark.filterwarnings("ignore::ppml.dp.mechanisms.PrivacyWarning")
needs_mkl = pytest.mark.skipif(
    not _vsl.available(), reason=f"the 'mkl' sampler cannot run here: it {_vsl.unavailable_reason()}"
)


def _reload_on_next_use(monkeypatch):
    """Make the next use look for the library again; the loader's state is restored after the test."""
    for name in ("_lib", "_path", "_reason"):
        monkeypatch.setattr(_vsl, name, getattr(_vsl, name))
    monkeypatch.setattr(_vsl, "_tried", False)


def _draw(n, seed, dtype=torch.float32, std=1.0):
    return _vsl.gaussian_fill(torch.empty(n, dtype=dtype), std, seed)


@needs_mkl
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_noise_scale_is_right_and_two_thirds_or_three_halves_of_it_are_rejected(dtype):
    sd = 0.7
    x = _draw(20_000, 11, dtype, sd).double().numpy()
    assert stats.kstest(x, "norm", args=(0, sd)).pvalue > 1e-3
    assert stats.kstest(x, "norm", args=(0, sd * 2 / 3)).pvalue < 1e-6
    assert stats.kstest(x, "norm", args=(0, sd * 3 / 2)).pvalue < 1e-6


@needs_mkl
def test_a_seed_gives_the_same_bits_and_other_seeds_and_the_high_seed_word_give_others():
    a, b = _draw(1001, 5), _draw(1001, 5)
    assert torch.equal(a, b)
    assert not torch.equal(a, _draw(1001, 6))
    # The seed's upper 32 bits are part of ARS-5's key.
    assert not torch.equal(_draw(1001, 5 + 2**40), a)
    # A prefix of a longer draw is the shorter draw (one stream, the counter starts at zero; values come
    # in Box-Muller pairs, so an odd length's last value may differ in its last bit).
    assert torch.equal(_draw(4000, 5)[:1000], a[:1000])


@needs_mkl
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_filling_in_chunks_gives_the_same_sequence(monkeypatch, dtype):
    whole = _draw(5001, 3, dtype)
    monkeypatch.setattr(_vsl, "_MAX_CHUNK", 1000)
    assert torch.equal(_draw(5001, 3, dtype), whole)


@needs_mkl
def test_numpy_arrays_and_tensors_of_any_layout_or_float_dtype_get_the_same_draw():
    ref = _draw(12, 9, torch.float64)
    arr = _vsl.gaussian_fill(np.empty(12), 1.0, 9)
    np.testing.assert_array_equal(arr, ref.numpy())
    # Non-contiguous and half-precision tensors are drawn in float32 (in their shape's order) and copied.
    ref32 = _draw(12, 9).reshape(3, 4)
    view = torch.empty(4, 3).t()
    _vsl.gaussian_fill(view, 1.0, 9)
    assert torch.equal(view, ref32)
    half = _vsl.gaussian_fill(torch.empty(3, 4, dtype=torch.bfloat16), 1.0, 9)
    assert torch.equal(half, ref32.to(torch.bfloat16))
    with pytest.raises(ValueError, match="floating-point"):
        _vsl.gaussian_fill(torch.empty(3, dtype=torch.int64), 1.0, 0)
    with pytest.raises(ValueError, match="C-contiguous float32 or float64"):
        _vsl.gaussian_fill(np.empty(3, dtype=np.int64), 1.0, 0)
    with pytest.raises(ValueError, match="on the CPU"):
        _vsl.gaussian_fill(torch.empty(3, device="meta"), 1.0, 0)
    for std in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite std > 0"):
            _vsl.gaussian_fill(torch.empty(3), std, 0)
    # A non-contiguous float64 tensor keeps float64 precision.
    view64 = torch.empty(4, 3, dtype=torch.float64).t()
    _vsl.gaussian_fill(view64, 1.0, 9)
    assert torch.equal(view64, ref.reshape(3, 4))


@needs_mkl
def test_draws_in_two_threads_at_once_equal_the_same_draws_one_after_the_other():
    n, seeds = 400_000, (21, 22)
    expected = [_draw(n, s) for s in seeds]
    out = [torch.empty(n), torch.empty(n)]
    barrier = threading.Barrier(2)

    def work(i):
        barrier.wait()
        for _ in range(5):
            _vsl.gaussian_fill(out[i], 1.0, seeds[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.equal(o, e) for o, e in zip(out, expected, strict=True))


@needs_mkl
def test_the_mechanism_adds_mkl_noise_of_its_std_to_arrays_tensors_and_scalars():
    mech = GaussianMechanism(sensitivity=0.5, noise_multiplier=3.0, sampler="mkl")
    x = np.linspace(-1, 1, 30_000)
    out = mech(x, rng=4)
    assert out.dtype == np.float64 and out.shape == x.shape
    noise = out - x
    assert stats.kstest(noise, "norm", args=(0, 1.5)).pvalue > 1e-3
    assert stats.kstest(noise, "norm", args=(0, 1.0)).pvalue < 1e-6
    assert stats.kstest(noise, "norm", args=(0, 2.25)).pvalue < 1e-6
    np.testing.assert_array_equal(mech(x, rng=4), out)  # seeded
    t = torch.from_numpy(x).float()
    tout = mech(t, rng=4)
    assert tout.dtype == torch.float32
    # The same seed keys the same ARS-5 stream for either kind of input (float32 draws differ in precision).
    torch.testing.assert_close(tout.double(), torch.from_numpy(out), rtol=0, atol=1e-3)
    assert isinstance(mech(2.0, rng=1), float)
    with pytest.raises(ParameterError, match="on the CPU") as err:
        mech(torch.zeros(3, device="meta"), rng=0)
    assert err.value.param == "sampler"


@needs_mkl
def test_dpsgd_with_mkl_noise_has_the_right_scale_and_prefetching_keeps_it_bit_for_bit():
    n, q, z, c, lr = 300, 0.2, 0.9, 0.5, 0.3
    g = torch.Generator().manual_seed(7)
    X, y = torch.randn(n, 12, generator=g), torch.randint(0, 4, (n,), generator=g)

    def net():
        torch.manual_seed(7)
        return nn.Sequential(nn.Linear(12, 256), nn.ReLU(), nn.Linear(256, 4))

    base = torch.cat([p.detach().reshape(-1) for p in net().parameters()])
    runs = {}
    for name, zz, sampler, prefetch in (
        ("inline", z, "mkl", False),
        ("prefetched", z, "mkl", True),
        ("native", z, "native", False),
        ("quiet", 0.0, "mkl", False),
    ):
        m = net()
        opt = DPSGD(zz, c, q, lr=lr, clipping="ghost", noise_sampler=sampler, noise_prefetch=prefetch)
        opt.step(m, X, y, rng=5, accountant=PrivacyAccountant())
        runs[name] = torch.cat([p.detach().reshape(-1) for p in m.parameters()]) - base
    assert torch.equal(runs["inline"], runs["prefetched"])
    assert "noise_sampler='mkl'" in repr(DPSGD(z, c, q, noise_sampler="mkl"))
    assert not torch.allclose(runs["inline"], runs["native"])  # another generator, other bits
    noise = (runs["inline"] - runs["quiet"]).double().numpy()  # same seed => same Poisson batch
    sd = lr * z * c / (q * n)
    assert stats.kstest(noise, "norm", args=(0, sd)).pvalue > 1e-3
    assert stats.kstest(noise, "norm", args=(0, sd * 2 / 3)).pvalue < 1e-6
    assert stats.kstest(noise, "norm", args=(0, sd * 3 / 2)).pvalue < 1e-6


def test_the_setting_is_validated_and_a_missing_library_is_named_with_its_install_command(monkeypatch):
    with pytest.raises(ParameterError, match="one of {'native', 'mkl'}") as err:
        DPSGD(1.0, 1.0, 0.1, noise_sampler="fast")
    assert err.value.param == "noise_sampler"
    with pytest.raises(ParameterError, match="secure mode") as err:
        DPSGD(1.0, 1.0, 0.1, secure=True, noise_sampler="mkl")
    assert err.value.param == "noise_sampler"
    with pytest.raises(ParameterError, match="secure mode") as err:
        GaussianMechanism(1.0, 1.0, secure=True, sampler="mkl")
    assert err.value.param == "sampler"

    # A library path that does not exist: the loader finds nothing, and every entry point says so.
    monkeypatch.setenv("PPML_MKL_RT", "/nonexistent/libmkl_rt.so.3")
    _reload_on_next_use(monkeypatch)
    assert not _vsl.available() and _vsl.library_path() is None
    with pytest.raises(ParameterError, match=r"pip install 'ppml\[mkl\]'") as err:
        DPSGD(1.0, 1.0, 0.1, noise_sampler="mkl")
    assert err.value.param == "noise_sampler"
    with pytest.raises(ImportError, match="PPML_MKL_RT"):
        _vsl.gaussian_fill(torch.empty(3), 1.0, 0)
    with pytest.raises(
        ParameterError, match=r"'privacy.noise_sampler' parameter .* needs Intel oneMKL"
    ) as err:
        parse_config({"data": {"name": "digits"}, "privacy": {"epsilon": 1.0, "noise_sampler": "mkl"}})
    assert err.value.param == "privacy.noise_sampler"


def test_a_cpu_without_aes_instructions_is_told_to_use_the_native_sampler(monkeypatch):
    class NoAesLib:
        """A libmkl_rt stand-in whose ARS-5 streams fail as oneMKL's do on a CPU without AES-NI."""

        def __init__(self, path):
            self.calls = []

            def new_stream(stream, brng, n, params):
                self.calls.append(brng)
                return -1140  # VSL_RNG_ERROR_ARS5_NOT_SUPPORTED

            self.vslNewStreamEx = new_stream
            self.vslDeleteStream = lambda stream: 0
            self.vsRngGaussian = self.vdRngGaussian = lambda *args: 0

    monkeypatch.setattr(_vsl, "_candidates", lambda: ["/fake/libmkl_rt.so.3"])
    monkeypatch.setattr(_vsl, "_open", NoAesLib)
    _reload_on_next_use(monkeypatch)
    assert not _vsl.available()
    assert _vsl.library_path() == "/fake/libmkl_rt.so.3"
    assert _vsl.unavailable_reason() == _vsl.NO_AES
    with pytest.raises(ParameterError, match="AES-NI") as err:
        DPSGD(1.0, 1.0, 0.1, noise_sampler="mkl")
    assert err.value.param == "noise_sampler"
    with pytest.raises(ImportError, match="'native' sampler"):
        _vsl.gaussian_fill(torch.empty(3), 1.0, 0)


@needs_mkl
def test_the_experiment_file_takes_the_sampler_for_dp_sgd_and_dp_fedavg_and_refuses_it_in_secure_mode():
    from ppml.experiment.runner import run_experiment

    cfg = parse_config(
        {
            "data": {"name": "digits"},
            "train": {"epochs": 1, "batch_size": 64, "lr": 0.5, "momentum": 0.0},
            "privacy": {"epsilon": 3.0, "delta": 1e-4, "noise_sampler": "mkl"},
            "attack": {"membership": False},
        }
    )
    priv = run_experiment(cfg).privacy
    assert priv["noise_sampler"] == "mkl" and priv["ledger"][0]["count"] > 0
    with pytest.raises(ParameterError, match="secure"):
        parse_config(
            {"data": {"name": "digits"}, "privacy": {"epsilon": 1.0, "noise_sampler": "mkl", "secure": True}}
        )
    fl_cfg = parse_config(
        {
            "data": {"name": "digits"},
            "partition": {"name": "iid", "num_clients": 20},
            "fl": {"rounds": 1, "fraction_fit": 0.5},
            "privacy": {"noise_multiplier": 1.0, "delta": 1e-3, "noise_sampler": "mkl"},
            "attack": {"membership": False},
        }
    )
    fl_priv = run_experiment(fl_cfg).privacy
    assert fl_priv["noise_sampler"] == "mkl" and fl_priv["ledger"][0]["count"] == 1


@needs_mkl
@pytest.mark.parametrize("placement", ["server", "clients"])
def test_dp_fedavg_with_mkl_noise_has_z_times_clip_on_the_sum(placement):
    q, z, clip, k, t = 0.5, 1.3, 2.0, 40, 20
    s = DPFedAvg(
        FedAvg(fraction_fit=q),
        clip,
        z,
        PrivacyAccountant("rdp", 1e-5),
        noise_sampler="mkl",
        noise_placement=placement,
        min_noisy_clients=t if placement == "clients" else None,
    )
    assert s.config_dict()["noise_sampler"] == "mkl"
    assert "noise_sampler" not in DPFedAvg(FedAvg(), clip, z, PrivacyAccountant()).config_dict()
    s.configure_round(1, k, np.arange(k), np.random.default_rng(0))
    results = [ClientResult(i, 10, torch.zeros(5000)) for i in range(t)]
    new, _ = s.aggregate(1, torch.zeros(5000), results, np.random.default_rng(1))
    again = s.aggregate(1, torch.zeros(5000), results, np.random.default_rng(1))[0]
    assert torch.equal(new, again)  # seeded
    sample = new.double().numpy()
    sd = z * clip / (q * k)
    assert stats.kstest(sample, "norm", args=(0, sd)).pvalue > 0.01
    assert stats.kstest(sample, "norm", args=(0, sd * 2 / 3)).pvalue < 1e-6
    assert stats.kstest(sample, "norm", args=(0, sd * 3 / 2)).pvalue < 1e-6
    with pytest.raises(ParameterError, match="secure mode") as err:
        DPFedAvg(FedAvg(), clip, z, PrivacyAccountant(), secure=True, noise_sampler="mkl")
    assert err.value.param == "noise_sampler"
