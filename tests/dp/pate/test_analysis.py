"""PATE privacy analysis: per-query formulas against hand-computed values, DI >= DD, budget, smooth sensitivity."""

from __future__ import annotations

import math

import dp_accounting
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ppml._validation import ParameterError
from ppml.dp.accounting import RDP_ORDERS, BudgetExceededError, PrivacyAccountant
from ppml.dp.pate.analysis import (
    PATEAccountant,
    epsilon_from_rdp,
    local_sensitivity_gnmax,
    local_sensitivity_threshold,
    log_pr_answered,
    log_q0_gnmax,
    log_q_gnmax,
    log_q_lnmax,
    rdp_gnmax_data_dependent,
    rdp_gnmax_data_independent,
    rdp_lnmax_data_dependent,
    rdp_lnmax_data_independent,
    rdp_smooth_sensitivity_release,
    rdp_threshold_data_dependent,
    rdp_threshold_data_independent,
    release_data_dependent_epsilon,
    smooth_sensitivity,
)

ORDERS = np.asarray(RDP_ORDERS)


def _sf(x: float, scale: float) -> float:
    """Pr[N(0, scale^2) >= x] = erfc(x / (scale sqrt 2)) / 2."""
    return 0.5 * math.erfc(x / (scale * math.sqrt(2.0)))


# ---------------------------------------------------------------------------------------------
# per-query formulas


def test_gnmax_data_independent_is_alpha_over_sigma_squared_and_matches_dp_accounting():
    # Proposition 8: alpha / sigma^2; at sigma = 40, order 14: 14 / 1600 = 0.00875.
    assert rdp_gnmax_data_independent(40.0, [14.0])[0] == pytest.approx(0.00875, rel=1e-12)
    # The same as dp-accounting's Gaussian mechanism with noise multiplier sigma / sqrt(2)
    # (L2 sensitivity sqrt(2)): 100 queries composed give the same epsilon.
    eps_ours = epsilon_from_rdp(100 * rdp_gnmax_data_independent(40.0), 1e-5)
    acc = PrivacyAccountant("rdp", 1e-5)
    eps_lib = acc.spend(dp_accounting.GaussianDpEvent(40.0 / math.sqrt(2.0)), label="q", count=100)
    assert eps_ours == pytest.approx(eps_lib, rel=1e-9)


def test_threshold_data_independent_is_half_of_gnmax_at_same_sigma():
    # sensitivity 1 instead of sqrt(2): alpha / (2 sigma1^2); sigma1 = 150, order 14: 14 / 45000.
    assert rdp_threshold_data_independent(150.0, [14.0])[0] == pytest.approx(14 / 45000, rel=1e-12)


def test_log_q_gnmax_is_union_bound_of_gaussian_tails():
    # Unanimous 250 votes, 10 classes, sigma 40: 9 rivals each at gap 250;
    # Pr[N(0, 2 sigma^2) >= 250] = erfc(250 / 80) / 2, so q = 9 * erfc(3.125) / 2 ~ 4.9e-5.
    votes = np.array([250] + [0] * 9)
    expected = 9 * 0.5 * math.erfc(250 / 80)
    assert math.exp(log_q_gnmax(votes, 40.0)) == pytest.approx(expected, rel=1e-9)
    # Mixed votes [200, 30, 20, 0 x 7]: gaps 170, 180 and 200 (x7), scale sqrt(2) * 40.
    votes = np.array([200, 30, 20] + [0] * 7)
    s = math.sqrt(2) * 40
    expected = _sf(170, s) + _sf(180, s) + 7 * _sf(200, s)
    assert math.exp(log_q_gnmax(votes, 40.0)) == pytest.approx(expected, rel=1e-9)
    # Split votes: the bound is capped at 1 - 1/C.
    assert math.exp(log_q_gnmax(np.array([5, 5, 5]), 40.0)) == pytest.approx(2 / 3)
    # Vectorised over queries.
    both = log_q_gnmax(np.array([[250, 0, 0], [5, 5, 5]]), 40.0)
    assert both.shape == (2,) and both[0] < both[1]


def test_rdp_gnmax_data_dependent_matches_theorem_6_by_hand():
    # q = 1e-6, sigma = 40, order 14. Proposition 10: mu2 = sigma sqrt(log(1/q)) ~ 148.7, mu1 = mu2 + 1,
    # eps_i = mu_i / sigma^2. Theorem 6: rdp = log((1-q) A^13 + q B^13) / 13 with
    # A = (1-q) / (1 - (q e^eps2)^(1 - 1/mu2)) and B = e^eps1 / q^(1/(mu1-1)). All conditions hold here
    # (mu1 > 14; log q <= (mu2-1) eps2 - mu2 (log(mu1/(mu1-1)) + log(mu2/(mu2-1))) ~ 11.7; -log q > eps2).
    q, sigma, lam = 1e-6, 40.0, 14.0
    mu2 = sigma * math.sqrt(math.log(1 / q))
    mu1 = mu2 + 1
    eps1, eps2 = mu1 / sigma**2, mu2 / sigma**2
    a = (1 - q) / (1 - (q * math.exp(eps2)) ** (1 - 1 / mu2))
    b = math.exp(eps1) / q ** (1 / (mu1 - 1))
    expected = math.log((1 - q) * a ** (lam - 1) + q * b ** (lam - 1)) / (lam - 1)
    got = rdp_gnmax_data_dependent(math.log(q), sigma, [lam])[0]
    assert got == pytest.approx(expected, rel=1e-9)
    assert got < 1e-3 * lam / sigma**2  # far below the data-independent 0.00875
    # Orders at or above mu1 fall back to the data-independent bound.
    assert rdp_gnmax_data_dependent(math.log(q), sigma, [200.0])[0] == pytest.approx(200 / 1600)
    # A fixed answer (q = 0) costs nothing; a large q costs the data-independent bound.
    assert rdp_gnmax_data_dependent(-math.inf, sigma, [lam])[0] == 0.0
    assert rdp_gnmax_data_dependent(math.log(0.3), sigma, [lam])[0] == pytest.approx(lam / sigma**2)


def test_threshold_check_formulas():
    # Pr[answered] = Pr[250 + N(0, 150^2) >= 200] = Phi(50 / 150) = erfc(-(1/3)/sqrt 2) / 2 ~ 0.63.
    lp = log_pr_answered(np.array([250, 0, 0]), 200, 150.0)
    assert math.exp(lp) == pytest.approx(0.5 * math.erfc(-(50 / 150) / math.sqrt(2)), rel=1e-12)
    # q = min(0.63, 0.37) is large: the check costs its data-independent alpha / (2 sigma1^2).
    assert rdp_threshold_data_dependent(lp, 150.0, [14.0])[0] == pytest.approx(14 / 45000)
    # Top vote 0 against T = 1000 at sigma1 = 150: q = Pr[N >= 1000] = erfc(1000/(150 sqrt 2))/2 ~ 1.3e-11.
    # Theorem 6 with noise sqrt(2) * sigma1 (the check's sensitivity is 1), by hand at order 2:
    q = _sf(1000, 150)
    lp2 = log_pr_answered(np.array([0, 0]), 1000, 150.0)
    assert math.exp(lp2) == pytest.approx(q, rel=1e-9)
    s = math.sqrt(2) * 150
    mu2 = s * math.sqrt(math.log(1 / q))
    mu1 = mu2 + 1
    a = (1 - q) / (1 - (q * math.exp(mu2 / s**2)) ** (1 - 1 / mu2))
    b = math.exp(mu1 / s**2) / q ** (1 / (mu1 - 1))
    expected = math.log((1 - q) * a + q * b)  # order 2: exponent 1, divided by 1
    got = rdp_threshold_data_dependent(lp2, 150.0, [2.0])[0]
    assert got == pytest.approx(expected, rel=1e-6)
    assert got < 2 / (2 * 150**2)


def test_lnmax_formulas_match_2017_paper():
    # Pure eps = 2 gamma = 0.1 per query. Data-independent (Theorem 2 in Renyi form): min(eps, a eps^2/2):
    # order 5 -> min(0.1, 0.025) = 0.025; order 30 -> min(0.1, 0.15) = 0.1.
    np.testing.assert_allclose(rdp_lnmax_data_independent(0.05, [5.0, 30.0]), [0.025, 0.1], rtol=1e-12)
    # Lemma 4: votes [240, 10, 0 x 8], gamma 0.05: gaps 230 (once) and 240 (8 times);
    # q = (2 + 11.5) / (4 e^11.5) + 8 (2 + 12) / (4 e^12) ~ 3.1e-5.
    votes = np.array([240, 10] + [0] * 8)
    q = (2 + 11.5) / (4 * math.exp(11.5)) + 8 * (2 + 12) / (4 * math.exp(12))
    assert math.exp(log_q_lnmax(votes, 0.05)) == pytest.approx(q, rel=1e-9)
    # Theorem 3 at l = 8 (order 9): log((1-q)((1-q)/(1-e^eps q))^8 + q e^(8 eps)) / 8.
    eps = 0.1
    expected = math.log((1 - q) * ((1 - q) / (1 - math.exp(eps) * q)) ** 8 + q * math.exp(8 * eps)) / 8
    got = rdp_lnmax_data_dependent(math.log(q), 0.05, [9.0])[0]
    assert got == pytest.approx(expected, rel=1e-9)
    assert got < 0.5 * eps**2 * 9  # below the data-independent 0.045
    # q above 1 / (e^eps + 1): the theorem does not apply, data-independent value.
    assert rdp_lnmax_data_dependent(math.log(0.6), 0.05, [9.0])[0] == pytest.approx(0.045)


def test_conversions():
    # classic: min_a rdp(a) + log(1/delta)/(a-1); a constant curve 0.5 at orders 2 and 11, delta 1e-5:
    # order 11 gives 0.5 + 11.5129 / 10 = 1.65129.
    assert epsilon_from_rdp([0.5, 0.5], 1e-5, [2.0, 11.0], conversion="classic") == pytest.approx(
        0.5 + math.log(1e5) / 10, rel=1e-12
    )
    rdp = 300 * rdp_gnmax_data_independent(40.0)
    classic = epsilon_from_rdp(rdp, 1e-5, conversion="classic")
    lib = epsilon_from_rdp(rdp, 1e-5)
    assert lib < classic  # the newer conversion is tighter
    with pytest.raises(ParameterError, match="'conversion' parameter"):
        epsilon_from_rdp(rdp, 1e-5, conversion="mironov")


# ---------------------------------------------------------------------------------------------
# data-independent >= data-dependent


@st.composite
def vote_vectors(draw):
    c = draw(st.integers(2, 12))
    t = draw(st.integers(2, 400))
    cuts = sorted(draw(st.lists(st.integers(0, t), min_size=c - 1, max_size=c - 1)))
    return np.diff(np.array([0, *cuts, t]))


@settings(max_examples=60, deadline=None)
@given(votes=vote_vectors(), sigma=st.floats(1.0, 200.0), gamma=st.floats(0.005, 2.0))
def test_data_independent_never_below_data_dependent(votes, sigma, gamma):
    dd = rdp_gnmax_data_dependent(log_q_gnmax(votes, sigma), sigma)
    di = rdp_gnmax_data_independent(sigma)
    assert np.all(np.isfinite(dd)) and np.all(dd >= 0) and np.all(dd <= di * (1 + 1e-12))
    t = float(votes.sum()) * 0.6
    ddt = rdp_threshold_data_dependent(log_pr_answered(votes, t, sigma), sigma)
    assert np.all(ddt >= 0) and np.all(ddt <= rdp_threshold_data_independent(sigma) * (1 + 1e-12))
    ddl = rdp_lnmax_data_dependent(log_q_lnmax(votes, gamma), gamma)
    assert np.all(ddl >= 0) and np.all(ddl <= rdp_lnmax_data_independent(gamma) * (1 + 1e-12))
    acc = PATEAccountant(1e-5)
    for _ in range(50):
        acc.spend(di, dd)
    assert acc.data_dependent_epsilon() <= acc.epsilon()


def test_accountant_caps_data_dependent_at_data_independent():
    acc = PATEAccountant(1e-5, orders=[2.0, 8.0])
    acc.spend([0.1, 0.4], [0.5, 0.01])  # a data-dependent value above the data-independent one is capped
    np.testing.assert_allclose(acc.rdp_data_dependent, [0.1, 0.01])


# ---------------------------------------------------------------------------------------------
# budget


def test_budget_refuses_before_overspending_and_leaves_state_intact():
    acc = PATEAccountant(1e-5, budget_epsilon=1.0)
    di = rdp_gnmax_data_independent(40.0, acc.orders)
    spent = 0
    with pytest.raises(BudgetExceededError, match="refused"):
        while True:
            acc.spend(di, 0.5 * di)
            spent += 1
    assert spent > 0 and acc.num_queries == spent
    before = (acc.epsilon(), acc.data_dependent_epsilon(), acc.rdp_data_independent, acc.num_answered)
    assert before[0] <= 1.0
    assert acc.would_exceed(di)
    with pytest.raises(BudgetExceededError):
        acc.spend(di)
    after = (acc.epsilon(), acc.data_dependent_epsilon(), acc.rdp_data_independent, acc.num_answered)
    assert after[0] == before[0] and after[1] == before[1] and after[3] == before[3]
    np.testing.assert_array_equal(after[2], before[2])
    # One more query would indeed go over: the refusal was not premature.
    assert acc.epsilon_after(di) > 1.0


def test_accountant_refuses_malformed_curves():
    acc = PATEAccountant()
    with pytest.raises(ParameterError, match="one value per order"):
        acc.spend([0.1, 0.2])


# ---------------------------------------------------------------------------------------------
# smooth sensitivity


def test_release_cost_matches_theorem_23_by_hand():
    # Table 2 (MNIST) release parameters: order 14, beta 0.0329, sigma 6.23:
    # 14 e^(2 * 0.0329) / 6.23^2 + (0.0329 * 14 - log(1 - 2 * 14 * 0.0329) / 2) / 13 ~ 0.3853 + 0.1332.
    expected = 14 * math.exp(0.0658) / 6.23**2 + (0.0329 * 14 - 0.5 * math.log(1 - 28 * 0.0329)) / 13
    assert rdp_smooth_sensitivity_release(0.0329, 6.23, 14) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.5184, abs=1e-3)
    with pytest.raises(ParameterError, match="1 / \\(2 beta\\)"):
        rdp_smooth_sensitivity_release(0.05, 6.23, 14)  # needs order < 10


def test_log_q0_separates_data_dependent_from_data_independent():
    sigma, order = 40.0, 14.0
    lq0 = log_q0_gnmax(sigma, order)
    assert lq0 < 0
    below = rdp_gnmax_data_dependent(lq0 - 0.5, sigma, [order])[0]
    above = rdp_gnmax_data_dependent(lq0 + 0.5, sigma, [order])[0]
    assert below < order / sigma**2
    assert above == pytest.approx(order / sigma**2)


def _brute_force_ls_gnmax(votes, sigma, order):
    """Largest change of the data-dependent RDP over all vote vectors one teacher away."""
    base = rdp_gnmax_data_dependent(log_q_gnmax(votes, sigma), sigma, [order])[0]
    best = 0.0
    for i in range(votes.size):
        for j in range(votes.size):
            if i == j or votes[i] == 0:
                continue
            w = votes.copy()
            w[i] -= 1
            w[j] += 1
            r = rdp_gnmax_data_dependent(log_q_gnmax(w, sigma), sigma, [order])[0]
            best = max(best, abs(r - base))
    return best


@pytest.mark.parametrize("votes", [[250, 0, 0, 0], [200, 30, 20, 0], [120, 100, 30, 0], [230, 20, 0, 0]])
def test_local_sensitivity_gnmax_bounds_brute_force_and_is_monotone(votes):
    votes = np.array(votes)
    ls = local_sensitivity_gnmax(votes, 250, 40.0, 14.0)
    assert ls.shape == (250,)
    assert np.all(np.diff(ls) >= 0)  # A(k) is non-decreasing in the distance k
    assert ls[0] >= _brute_force_ls_gnmax(votes, 40.0, 14.0) * (1 - 1e-9)
    assert ls[-1] > 0
    ss = smooth_sensitivity(ls, 0.0329)
    assert ls[0] <= ss <= ls.max()


def test_local_sensitivity_threshold_bounds_brute_force_and_is_monotone():
    def rdp(m):
        return rdp_threshold_data_dependent(log_pr_answered(np.array([m, 0]), 200, 150.0), 150.0, [14.0])[0]

    for m in [250, 200, 125, 0]:
        ls = local_sensitivity_threshold(
            np.array([m, 250 - m]) if m >= 125 else np.array([m, 0]), 250, 200, 150.0, 14.0
        )
        assert np.all(np.diff(ls) >= 0)
        nbrs = [x for x in (m - 1, m + 1) if 0 <= x <= 250]
        assert ls[0] >= max(abs(rdp(x) - rdp(m)) for x in nbrs) * (1 - 1e-9)
        assert smooth_sensitivity(ls, 0.0329) >= ls[0]


def test_smooth_sensitivity_discounts_distance():
    # A(k) = [0, 0, 1]: SS = max(0, 0, e^(-2 beta)).
    assert smooth_sensitivity([0.0, 0.0, 1.0], 0.5) == pytest.approx(math.exp(-1.0))


def test_release_adds_its_cost_and_noise_scales_with_smooth_sensitivity():
    rng = np.random.default_rng(3)
    votes = np.zeros((40, 10), dtype=np.int64)
    votes[:, 0] = 240
    votes[np.arange(40), 1 + rng.integers(0, 9, 40)] = 10
    answered = np.arange(40) % 2 == 0
    kw = dict(
        sigma2=40.0, threshold=200, sigma1=150.0, order=14, beta=0.0329, sigma=6.23, conversion="classic"
    )
    rel = release_data_dependent_epsilon(votes, answered, rng=0, **kw)
    conv = math.log(1e5) / 13
    assert rel.epsilon_expected == pytest.approx(rel.rdp_data_dependent + rel.release_rdp + conv)
    assert rel.epsilon == pytest.approx(max(rel.noisy_rdp, 0) + rel.release_rdp + conv)
    assert rel.smooth_sensitivity > 0
    # Exact data-dependent sum, by hand from the per-query functions at order 14.
    lq = log_q_gnmax(votes[answered], 40.0)
    f = rdp_gnmax_data_dependent(lq, 40.0, [14.0]).sum()
    f += rdp_threshold_data_dependent(log_pr_answered(votes, 200, 150.0), 150.0, [14.0]).sum()
    assert rel.rdp_data_dependent == pytest.approx(f, rel=1e-6)
    # The released noise has standard deviation sigma * SS: check over many seeds.
    noise = [
        release_data_dependent_epsilon(votes[:6], answered[:6], rng=s, **kw).noisy_rdp for s in range(200)
    ]
    one = release_data_dependent_epsilon(votes[:6], answered[:6], rng=0, **kw)
    z = (np.array(noise) - one.rdp_data_dependent) / (6.23 * one.smooth_sensitivity)
    assert 0.8 < z.std() < 1.2 and abs(z.mean()) < 0.25
    assert set(rel.public()) >= {"epsilon", "order", "beta", "sigma"}
    assert "rdp_data_dependent" not in rel.public()


def test_release_refuses_seed_in_secure_mode_and_missing_seed_otherwise():
    votes = np.array([[250, 0], [240, 10]])
    ans = np.array([True, False])
    kw = dict(sigma2=40.0, order=14, beta=0.0329, sigma=6.23)
    with pytest.raises(ParameterError, match="'rng'"):
        release_data_dependent_epsilon(votes, ans, rng=1, secure=True, **kw)
    with pytest.raises(ParameterError, match="'rng'"):
        release_data_dependent_epsilon(votes, ans, **kw)
    rel = release_data_dependent_epsilon(votes, ans, secure=True, **kw)
    assert math.isfinite(rel.epsilon)
