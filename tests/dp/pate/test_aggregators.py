"""PATE aggregators: vote counting, noise scale, who pays what, budget refusals, secure mode."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from ppml._validation import ParameterError
from ppml.dp.accounting import BudgetExceededError
from ppml.dp.pate.aggregators import (
    ConfidentGNMax,
    GNMax,
    InteractiveGNMax,
    LNMax,
    PATEBudgetExceededError,
    votes_from_predictions,
)
from ppml.dp.pate.analysis import PATEAccountant, rdp_gnmax_data_independent, rdp_threshold_data_independent

pytestmark = pytest.mark.filterwarnings("ignore::ppml.dp.mechanisms.PrivacyWarning")


def test_votes_from_predictions_counts_each_teacher_once():
    rng = np.random.default_rng(0)
    preds = rng.integers(0, 4, size=(7, 30))
    votes = votes_from_predictions(preds, 4)
    expected = np.array([[np.sum(preds[:, i] == c) for c in range(4)] for i in range(30)])
    np.testing.assert_array_equal(votes, expected)
    assert np.all(votes.sum(axis=1) == 7)


@pytest.mark.parametrize(
    ("preds", "match"),
    [
        (np.zeros((1, 5), dtype=int), "at least 2 teachers"),
        (np.array([[0, 3], [1, 1]]), r"classes in \[0, 3\)"),
        (np.zeros((3, 2)), "integer array"),
    ],
)
def test_votes_from_predictions_refuses_bad_input(preds, match):
    with pytest.raises(ParameterError, match=match):
        votes_from_predictions(preds, 3)


# ---------------------------------------------------------------------------------------------
# noise scale (seeded KS tests that fail for a wrongly scaled noise)


@pytest.mark.parametrize("secure", [False, True])
def test_gnmax_noise_is_gaussian_with_std_sigma(secure):
    # Degenerate votes: noisy - votes is the noise itself. Secure mode cannot be seeded, so its draw
    # differs on every run: 100,000 draws make a 10% wrong scale fail by a wide margin (KS p ~ 1e-40)
    # while the right scale fails the 1e-6 threshold once in a million runs.
    votes = np.full((20_000, 5), 50)
    agg = GNMax(sigma=40.0, secure=secure)
    noisy = agg.noisy_votes(votes) if secure else agg.noisy_votes(votes, 1)
    z = (noisy - votes).ravel()
    assert stats.kstest(z, "norm", args=(0, 40.0)).pvalue > 1e-6
    assert stats.kstest(z, "norm", args=(0, 44.0)).pvalue < 1e-6  # a 10% wrong scale is caught


@pytest.mark.parametrize("secure", [False, True])
def test_lnmax_noise_is_laplace_with_scale_one_over_gamma(secure):
    votes = np.full((2000, 5), 50)
    agg = LNMax(gamma=0.05, secure=secure)
    noisy = agg.noisy_votes(votes) if secure else agg.noisy_votes(votes, 2)
    z = (noisy - votes).ravel()
    assert stats.kstest(z, "laplace", args=(0, 20.0)).pvalue > 1e-3
    assert stats.kstest(z, "laplace", args=(0, 24.0)).pvalue < 1e-3  # a 20% wrong scale is caught
    assert agg.pure_epsilon == pytest.approx(0.1)


def test_gnmax_answers_follow_the_noisy_argmax_distribution():
    # Two classes, votes [d, 0]: Pr[answer 0] = Pr[N(0, 2 sigma^2) < d] = Phi(d / (sigma sqrt 2)).
    n, d, sigma = 4000, 40, 40.0
    votes = np.tile([d, 0], (n, 1))
    ans = GNMax(sigma).answer(votes, 5)
    p = 0.5 * math.erfc(-d / (sigma * math.sqrt(2)) / math.sqrt(2))
    frac = float(np.mean(ans.labels == 0))
    assert abs(frac - p) < 4 * math.sqrt(p * (1 - p) / n)
    assert ans.answered.all() and len(ans) == n


def test_confident_answers_with_the_threshold_probability():
    # max vote m, threshold T: Pr[answered] = Phi((m - T) / sigma1); m = 230, T = 200, sigma1 = 150.
    n = 4000
    votes = np.tile([230, 20, 0], (n, 1))
    ans = ConfidentGNMax(200, 150.0, 40.0).answer(votes, 7)
    p = 0.5 * math.erfc(-(30 / 150) / math.sqrt(2))
    assert abs(ans.answered.mean() - p) < 4 * math.sqrt(p * (1 - p) / n)
    assert np.all(ans.labels[~ans.answered] == -1)
    assert np.all(ans.labels[ans.answered] >= 0)


def test_seeded_answers_are_reproducible():
    votes = np.random.default_rng(1).integers(0, 30, size=(50, 4))
    a = ConfidentGNMax(20, 10.0, 5.0).answer(votes, 11)
    b = ConfidentGNMax(20, 10.0, 5.0).answer(votes, 11)
    np.testing.assert_array_equal(a.labels, b.labels)


# ---------------------------------------------------------------------------------------------
# who pays what


def test_confident_pays_threshold_on_every_query_and_sigma2_only_on_answered():
    rng = np.random.default_rng(2)
    votes = np.zeros((300, 10), dtype=np.int64)
    top = rng.integers(100, 251, size=300)
    votes[:, 0] = top
    votes[:, 1] = 250 - top
    agg = ConfidentGNMax(200, 150.0, 40.0)
    ans = agg.answer(votes, 3)
    assert 0 < ans.num_answered < 300
    thr = rdp_threshold_data_independent(150.0, ans.orders)
    gn = rdp_gnmax_data_independent(40.0, ans.orders)
    np.testing.assert_allclose(
        ans.rdp_data_independent[~ans.answered], np.tile(thr, (300 - ans.num_answered, 1))
    )
    np.testing.assert_allclose(
        ans.rdp_data_independent[ans.answered], np.tile(thr + gn, (ans.num_answered, 1))
    )
    total = ans.rdp_data_independent.sum(axis=0)
    np.testing.assert_allclose(total, 300 * thr + ans.num_answered * gn)
    # Data-dependent: unanswered queries pay at most the check; consensual answered ones much less than DI.
    assert np.all(ans.rdp_data_dependent[~ans.answered] <= thr + 1e-15)
    assert np.all(ans.rdp_data_dependent <= ans.rdp_data_independent)
    assert ans.data_dependent_epsilon(1e-5) < ans.epsilon(1e-5)


def test_interactive_asks_teachers_only_where_student_disagrees():
    n = 400
    votes = np.tile([250, 0, 0], (n, 1))
    agree = np.tile([1.0, 0.0, 0.0], (n, 1))  # student agrees: max(n - M p) = 0, far below T
    wrong = np.tile([0.0, 1.0, 0.0], (n, 1))  # student wrong: max(n - M p) = 250
    agg = InteractiveGNMax(200, 50.0, 40.0, student_confidence=0.9)
    a = agg.answer(votes, 1, student_probs=agree)
    b = agg.answer(votes, 1, student_probs=wrong)
    assert a.num_answered == 0 and np.all(a.from_student) and np.all(a.labels == 0)
    assert b.num_answered > 0.75 * n and np.all(b.labels[b.answered] == 0)
    np.testing.assert_array_equal(agg.check_votes(votes[:1], wrong[:1]), [[250.0, -250.0, 0.0]])
    # Labels taken from the student cost no GNMax step: every unanswered query pays only the check.
    thr = rdp_threshold_data_independent(50.0, a.orders)
    np.testing.assert_allclose(a.rdp_data_independent, np.tile(thr, (n, 1)))
    with pytest.raises(ParameterError, match="'student_probs'"):
        agg.answer(votes, 1)


# ---------------------------------------------------------------------------------------------
# budget


def test_budget_refusal_keeps_answers_and_accountant_intact():
    votes = np.tile([240, 10, 0], (640, 1))
    agg = ConfidentGNMax(200, 150.0, 40.0)
    acc = PATEAccountant(1e-5, budget_epsilon=1.0)
    with pytest.raises(PATEBudgetExceededError) as info:
        agg.answer(votes, 4, accountant=acc)
    err = info.value
    assert isinstance(err, BudgetExceededError)
    k = err.query_index
    assert 0 < k < 640 and len(err.answers) == k
    assert acc.num_queries == k and acc.num_answered == err.answers.num_answered
    assert acc.epsilon() <= 1.0 < acc.epsilon_after(agg.worst_case_rdp(acc.orders))
    np.testing.assert_allclose(acc.rdp_data_independent, err.answers.rdp_data_independent.sum(axis=0))
    # Asking again is refused at once and changes nothing.
    state = (acc.epsilon(), acc.num_queries, acc.rdp_data_dependent)
    with pytest.raises(PATEBudgetExceededError) as again:
        agg.answer(votes[:5], 5, accountant=acc)
    assert again.value.query_index == 0 and len(again.value.answers) == 0
    assert (acc.epsilon(), acc.num_queries) == state[:2]
    np.testing.assert_array_equal(acc.rdp_data_dependent, state[2])


def test_accountant_records_every_query_within_budget():
    votes = np.tile([240, 10, 0], (100, 1))
    acc = PATEAccountant(1e-5, budget_epsilon=50.0)
    ans = LNMax(0.05).answer(votes, 9, accountant=acc)
    assert acc.num_queries == 100 == acc.num_answered
    assert acc.epsilon() == pytest.approx(ans.epsilon(1e-5))
    assert acc.data_dependent_epsilon() == pytest.approx(ans.data_dependent_epsilon(1e-5))
    assert acc.data_dependent_epsilon() < acc.epsilon()
    with pytest.raises(ParameterError, match="'orders'"):
        LNMax(0.05).answer(votes, 9, accountant=acc, orders=[2.0])


# ---------------------------------------------------------------------------------------------
# parameters and secure mode


def test_secure_mode_refuses_seeds_and_plain_mode_requires_one():
    votes = np.tile([5, 1], (3, 1))
    with pytest.raises(ParameterError, match="'rng' parameter of GNMax.answer must be None"):
        GNMax(2.0, secure=True).answer(votes, 1)
    with pytest.raises(ParameterError, match="'rng' parameter of GNMax.answer must be an int seed"):
        GNMax(2.0).answer(votes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # secure mode does not warn
        ans = ConfidentGNMax(3, 1.0, 1.0, secure=True).answer(votes)
    assert len(ans) == 3


@pytest.mark.parametrize(
    ("factory", "param"),
    [
        (lambda: GNMax(0.0), "sigma"),
        (lambda: GNMax(math.inf), "sigma"),
        (lambda: LNMax(-1.0), "gamma"),
        (lambda: ConfidentGNMax(200, 0.0, 40.0), "sigma1"),
        (lambda: ConfidentGNMax(math.nan, 150.0, 40.0), "threshold"),
        (lambda: InteractiveGNMax(200, 150.0, 40.0, student_confidence=1.5), "student_confidence"),
    ],
)
def test_invalid_parameters_are_refused(factory, param):
    with pytest.raises(ParameterError, match=f"'{param}' parameter"):
        factory()


def test_answers_are_immutable_and_votes_validated():
    ans = GNMax(10.0).answer(np.array([[3, 1], [0, 4]]), 0)
    with pytest.raises(ValueError):
        ans.labels[0] = 5
    with pytest.raises(ParameterError, match="'votes'"):
        GNMax(10.0).answer(np.array([[3.5, 1.0]]), 0)
    with pytest.raises(ParameterError, match="'votes'"):
        GNMax(10.0).answer(np.array([3, 1]), 0)
