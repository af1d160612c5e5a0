"""Noise mechanisms: noise scale (seeded KS tests that reject wrongly scaled noise), exact discrete samplers,
events that compose to the closed form, and secure mode."""

import math
import warnings
from decimal import Decimal, localcontext
from fractions import Fraction

import dp_accounting
import numpy as np
import pytest
import torch
from scipy import optimize, stats

from ppml import ParameterError
from ppml.dp import mechanisms
from ppml.dp.accounting import UnsupportedEventError
from ppml.dp.mechanisms import (
    SECURE_GRID_MARGIN,
    DiscreteGaussianMechanism,
    GaussianMechanism,
    LaplaceMechanism,
    Mechanism,
    PrivacyWarning,
    sample_discrete_gaussian,
    sample_discrete_laplace,
)

pytestmark = pytest.mark.filterwarnings("ignore::ppml.dp.mechanisms.PrivacyWarning")

N = 20_000


def _ks_accepts_only_the_right_scale(sample, dist, scale):
    assert stats.kstest(sample, dist, args=(0, scale)).pvalue > 1e-3
    assert stats.kstest(sample, dist, args=(0, scale * 2 / 3)).pvalue < 1e-6
    assert stats.kstest(sample, dist, args=(0, scale * 3 / 2)).pvalue < 1e-6


@pytest.fixture
def seeded_secure_source(monkeypatch):
    """Secure mode with a seeded bit source, so that its statistical tests are deterministic."""
    rng = np.random.default_rng(12345)
    monkeypatch.setattr(mechanisms, "secure_generator", lambda: rng)


# ---- Gaussian -----------------------------------------------------------------------------------


def test_gaussian_noise_has_std_z_times_sensitivity_numpy():
    mech = GaussianMechanism(sensitivity=2.0, noise_multiplier=1.3)
    assert mech.std == pytest.approx(2.6)
    _ks_accepts_only_the_right_scale(mech(np.zeros(N), rng=0), "norm", 2.6)


def test_gaussian_noise_has_std_z_times_sensitivity_torch():
    mech = GaussianMechanism(sensitivity=0.5, noise_multiplier=3.0)
    out = mech(torch.zeros(N, dtype=torch.float64), rng=np.random.default_rng(1))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64 and out.shape == (N,)
    _ks_accepts_only_the_right_scale(out.numpy(), "norm", 1.5)


def test_noise_is_sized_for_the_query_the_mechanism_was_built_for():
    """A mechanism built for a sum (sensitivity C) adds std z*C to whatever it gets; it never rescales for a mean."""
    clip, n, z = 1.0, 100, 1.1
    for_sum = GaussianMechanism(clip, z)
    for_mean = GaussianMechanism(clip / n, z)
    zeros = np.zeros(N)
    assert np.std(for_sum(zeros, rng=0)) == pytest.approx(z * clip, rel=0.02)
    assert np.std(for_mean(zeros, rng=0)) == pytest.approx(z * clip / n, rel=0.02)
    # the same privacy for each query: the event depends on the noise multiplier only
    assert for_sum.event == for_mean.event == dp_accounting.GaussianDpEvent(z)
    # noise for the sum, then divide: the mean's noise level
    released_mean = for_sum(zeros, rng=0) / n
    assert np.std(released_mean) == pytest.approx(z * clip / n, rel=0.02)


def test_gaussian_keeps_dtypes_and_scalars_and_is_reproducible():
    mech = GaussianMechanism(1.0, 1.0)
    x32 = np.ones(10, dtype=np.float32)
    assert mech(x32, rng=3).dtype == np.float32
    assert mech(np.arange(4), rng=3).dtype == np.float64
    assert isinstance(mech(5.0, rng=3), float)
    assert np.array_equal(mech(x32, rng=7), mech(x32, rng=7))
    t = torch.ones(3, 4, dtype=torch.float32)
    assert torch.equal(mech(t, rng=7), mech(t, rng=7))
    assert mech(t, rng=7).dtype == torch.float32
    assert np.array_equal(GaussianMechanism(1.0, 0.0)(x32, rng=0), x32)  # z = 0: no noise


def test_gaussian_handles_a_million_coordinates_in_both_array_types():
    mech = GaussianMechanism(1.0, 1.0)
    x, t = np.zeros(10**6), torch.zeros(10**6)
    assert abs(float(np.std(mech(x, rng=0))) - 1.0) < 0.01
    assert abs(float(mech(t, rng=0).std()) - 1.0) < 0.01


def _analytic_gaussian_epsilon(sigma: float, delta: float, sensitivity: float = 1.0) -> float:
    """Balle and Wang 2018, Theorem 8: the exact epsilon of the Gaussian mechanism at delta."""

    def delta_of(eps: float) -> float:
        a = sensitivity / (2 * sigma)
        b = eps * sigma / sensitivity
        return stats.norm.cdf(a - b) - math.exp(eps) * stats.norm.cdf(-a - b) - delta

    return optimize.brentq(delta_of, 1e-9, 100.0, xtol=1e-12)


@pytest.mark.parametrize(("z", "delta"), [(1.0, 1e-5), (2.0, 1e-5), (4.0, 1e-6)])
def test_gaussian_event_composes_to_the_analytic_gaussian_epsilon(z, delta):
    mech = GaussianMechanism(sensitivity=3.0, noise_multiplier=z)
    exact = _analytic_gaussian_epsilon(z * 3.0, delta, sensitivity=3.0)
    pld = mech.epsilon(delta, accountant="pld")
    assert exact <= pld <= exact * 1.002  # PLD: tight and pessimistic
    rdp = mech.epsilon(delta)
    assert exact <= rdp <= exact * 1.2  # RDP: a valid, looser bound
    assert rdp == pytest.approx(
        dp_accounting.rdp.RdpAccountant().compose(mech.event).get_epsilon(delta), rel=0.01
    )


# ---- Laplace ------------------------------------------------------------------------------------


def test_laplace_noise_has_the_given_scale():
    mech = LaplaceMechanism(sensitivity=1.0, scale=2.5)
    _ks_accepts_only_the_right_scale(mech(np.zeros(N), rng=0), "laplace", 2.5)
    out = mech(torch.zeros(N, dtype=torch.float32), rng=0)
    assert out.dtype == torch.float32
    _ks_accepts_only_the_right_scale(out.double().numpy(), "laplace", 2.5)


def test_laplace_epsilon():
    mech = LaplaceMechanism(sensitivity=1.0, scale=2.0)
    assert mech.event == dp_accounting.LaplaceDpEvent(2.0)
    assert mech.epsilon() == 0.5 and mech.epsilon(count=3) == 1.5
    assert 0.45 < mech.epsilon(1e-12, accountant="pld") <= 0.5 * 1.001


# ---- discrete Gaussian and the exact samplers --------------------------------------------------


def _discrete_gaussian_pmf(sigma: float, support: np.ndarray) -> np.ndarray:
    k = np.arange(-int(40 * sigma) - 40, int(40 * sigma) + 41)
    z = np.exp(-(k**2) / (2 * sigma**2)).sum()
    return np.exp(-(support**2) / (2 * sigma**2)) / z


def _chisquare_pvalue(sample: np.ndarray, pmf, half_width: int) -> float:
    support = np.arange(-half_width, half_width + 1)
    counts = np.array([(sample == k).sum() for k in support], dtype=float)
    probs = pmf(support)
    counts = np.append(counts, sample.size - counts.sum())  # both tails in one bin
    probs = np.append(probs, max(1.0 - probs.sum(), 0.0))
    keep = probs * sample.size >= 5
    tail = ~keep
    obs = np.append(counts[keep], counts[tail].sum())
    exp = np.append(probs[keep], probs[tail].sum()) * sample.size
    if exp[-1] < 5:  # fold a tiny tail bin into the largest one
        obs[np.argmax(exp[:-1])] += obs[-1]
        exp[np.argmax(exp[:-1])] += exp[-1]
        obs, exp = obs[:-1], exp[:-1]
    return stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue


@pytest.mark.parametrize("sigma", [0.7, 1.5, 3.0])
def test_discrete_gaussian_pmf_matches(sigma):
    sample = sample_discrete_gaussian(sigma, 50_000, np.random.default_rng(int(sigma * 10)))
    width = int(math.ceil(5 * sigma))
    assert _chisquare_pvalue(sample, lambda k: _discrete_gaussian_pmf(sigma, k), width) > 1e-3
    assert _chisquare_pvalue(sample, lambda k: _discrete_gaussian_pmf(sigma * 1.3, k), width) < 1e-6
    assert _chisquare_pvalue(sample, lambda k: _discrete_gaussian_pmf(sigma / 1.3, k), width) < 1e-6


@pytest.mark.parametrize("sigma", [2.0, 10.0, 1e6])
def test_discrete_gaussian_variance_is_sigma_squared(sigma):
    sample = sample_discrete_gaussian(sigma, 100_000, np.random.default_rng(3))
    assert sample.dtype == np.int64
    assert abs(sample.mean()) < 5 * sigma / math.sqrt(sample.size)
    assert sample.var() == pytest.approx(sigma**2, rel=0.02)


def test_discrete_laplace_pmf_matches():
    t = 3
    sample = sample_discrete_laplace(t, 50_000, np.random.default_rng(5))

    def pmf(k: np.ndarray) -> np.ndarray:
        return math.tanh(1 / (2 * t)) * np.exp(-np.abs(k) / t)

    assert _chisquare_pvalue(sample, pmf, 20) > 1e-3
    assert _chisquare_pvalue(sample, lambda k: math.tanh(1 / 8) * np.exp(-np.abs(k) / 4), 20) < 1e-6


def test_exact_bernoulli_is_right_when_float_bounds_cannot_decide():
    """Force every draw through the exact (decimal/Fraction) path: the frequency must still be exp(-gamma)."""
    gamma = Fraction(7, 10)
    n = 3000
    draws = mechanisms._bernoulli_exp_neg(
        np.full(n, 0.7), np.full(n, 10.0), lambda i: gamma, np.random.default_rng(11)
    )
    assert stats.binomtest(int(draws.sum()), n, math.exp(-0.7)).pvalue > 1e-3


def test_exact_bernoulli_refines_a_uniform_that_straddles_the_threshold():
    """U in [u/2^53, (u+1)/2^53) containing exp(-1): accepted with probability frac(exp(-1) * 2^53)."""
    with localcontext() as ctx:
        ctx.prec = 60
        scaled = Decimal(-1).exp() * Decimal(2) ** 53
    u, frac = int(scaled), float(scaled - int(scaled))
    rng = np.random.default_rng(2)
    hits = sum(mechanisms._uniform_below_exp_neg(u, Fraction(1), rng) for _ in range(2000))
    assert stats.binomtest(hits, 2000, frac).pvalue > 1e-3
    assert mechanisms._uniform_below_exp_neg(u - 1, Fraction(1), rng)  # entirely below exp(-1)
    assert not mechanisms._uniform_below_exp_neg(u + 1, Fraction(1), rng)  # entirely above


def test_discrete_gaussian_mechanism_on_integers():
    mech = DiscreteGaussianMechanism(sensitivity=1, sigma=4.0)
    x = np.arange(N) % 7
    out = mech(x, rng=0)
    assert out.dtype == np.int64 and out.shape == x.shape
    assert np.var(out - x) == pytest.approx(16.0, rel=0.05)
    assert isinstance(mech(3, rng=0), int)
    t_out = mech(torch.arange(5), rng=0)
    assert t_out.dtype == torch.int64
    with pytest.raises(ParameterError, match="integer-valued"):
        mech(np.ones(3), rng=0)
    with pytest.raises(ParameterError, match="integer-valued"):
        mech(torch.ones(3), rng=0)


def test_discrete_gaussian_event_is_zcdp_exact_for_rdp_and_refused_by_pld():
    mech = DiscreteGaussianMechanism(sensitivity=2, sigma=4.0)
    assert mech.event == dp_accounting.ZCDpEvent(4 / 32)
    # the same Renyi curve as the continuous Gaussian with z = sigma / sensitivity
    assert mech.epsilon(1e-5) == pytest.approx(GaussianMechanism(2.0, 2.0).epsilon(1e-5), rel=1e-12)
    with pytest.raises(UnsupportedEventError):
        mech.epsilon(1e-5, accountant="pld")


# ---- secure mode --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mech",
    [
        GaussianMechanism(1.0, 1.0, secure=True),
        LaplaceMechanism(1.0, 1.0, secure=True),
        DiscreteGaussianMechanism(1, 2.0, secure=True),
    ],
)
def test_secure_mode_refuses_seeds(mech):
    x = np.zeros(4, dtype=np.int64)
    for rng in (0, np.random.default_rng(0), np.random.SeedSequence(1)):
        with pytest.raises(ParameterError, match="refuses seeds") as info:
            mech(x, rng=rng)
        assert info.value.param == "rng"
    assert mech(x).shape == (4,)


def test_insecure_mode_needs_an_rng():
    with pytest.raises(ParameterError, match="'rng' parameter of GaussianMechanism"):
        GaussianMechanism(1.0, 1.0)(np.zeros(3))


def test_secure_gaussian_has_the_right_scale(seeded_secure_source):
    mech = GaussianMechanism(sensitivity=2.0, noise_multiplier=1.3, secure=True)
    _ks_accepts_only_the_right_scale(mech(np.zeros(N)), "norm", 2.6)


def test_secure_laplace_has_the_right_scale(seeded_secure_source):
    mech = LaplaceMechanism(sensitivity=1.0, scale=2.5, secure=True)
    _ks_accepts_only_the_right_scale(mech(np.zeros(N)), "laplace", 2.5)


def test_secure_noise_from_the_os_source_has_the_right_scale_and_is_not_reproducible():
    x = np.zeros(N)
    gauss = GaussianMechanism(1.0, 2.0, secure=True)
    a, b = gauss(x), gauss(x)
    assert np.std(a) == pytest.approx(2.0, rel=0.05)
    assert not np.array_equal(a, b)
    assert np.mean(np.abs(LaplaceMechanism(1.0, 3.0, secure=True)(x))) == pytest.approx(3.0, rel=0.05)


def test_secure_outputs_lie_on_a_power_of_two_grid_whatever_the_input():
    """The defence against floating-point attacks: the output lattice does not depend on x."""
    d, sens = 1000, 1.0
    g = math.floor(math.log2(SECURE_GRID_MARGIN * sens / math.sqrt(d)))
    x = np.random.default_rng(0).normal(size=d) * 3.0
    for xi in (x, np.nextafter(x, np.inf)):
        y = GaussianMechanism(sens, 1.0, secure=True)(xi)
        scaled = np.ldexp(y, -g)
        assert np.array_equal(scaled, np.rint(scaled))
        assert np.abs(y - xi).max() > 0.1  # and noise was added


def test_secure_event_accounts_for_grid_rounding():
    secure = GaussianMechanism(1.0, 1.1, secure=True)
    assert secure.event == dp_accounting.GaussianDpEvent(1.1 / (1 + SECURE_GRID_MARGIN))
    assert 0 < secure.epsilon(1e-5) / GaussianMechanism(1.0, 1.1).epsilon(1e-5) - 1 < 1e-5
    assert LaplaceMechanism(1.0, 2.0, secure=True).epsilon() == pytest.approx(0.5 * (1 + SECURE_GRID_MARGIN))


def test_secure_mode_works_on_torch_tensors():
    mech = GaussianMechanism(1.0, 1.0, secure=True)
    t = torch.zeros(2000, dtype=torch.float32)
    out = mech(t)
    assert out.dtype == torch.float32 and out.shape == t.shape
    assert float(out.std()) == pytest.approx(1.0, rel=0.1)


def test_insecure_mode_warns_once(monkeypatch):
    monkeypatch.setattr(mechanisms, "_insecure_warned", False)
    mech = GaussianMechanism(1.0, 1.0)
    with pytest.warns(PrivacyWarning, match="Mironov"):
        mech(np.zeros(3), rng=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mech(np.zeros(3), rng=0)
        GaussianMechanism(1.0, 1.0, secure=True)(np.zeros(3))


# ---- parameters ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "param"),
    [
        (lambda: GaussianMechanism(0.0, 1.0), "sensitivity"),
        (lambda: GaussianMechanism(math.inf, 1.0), "sensitivity"),
        (lambda: GaussianMechanism(1.0, -1.0), "noise_multiplier"),
        (lambda: GaussianMechanism(1.0, 1.0, secure="yes"), "secure"),
        (lambda: LaplaceMechanism(1.0, 0.0), "scale"),
        (lambda: DiscreteGaussianMechanism(1, 0.0), "sigma"),
    ],
)
def test_parameters_are_validated(build, param):
    with pytest.raises(ParameterError, match=f"'{param}' parameter") as info:
        build()
    assert info.value.param == param


def test_mechanisms_are_frozen_and_satisfy_the_protocol():
    mech = GaussianMechanism(1.0, 1.0)
    with pytest.raises(AttributeError):
        mech.noise_multiplier = 0.0  # type: ignore[misc]
    for m in (mech, LaplaceMechanism(1.0, 1.0), DiscreteGaussianMechanism(1, 1.0)):
        assert isinstance(m, Mechanism) and m.neighbouring == "add_or_remove"
