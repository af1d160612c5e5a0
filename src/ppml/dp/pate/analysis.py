"""Privacy analysis of PATE's noisy aggregators: data-independent and data-dependent Renyi DP.

Every cost here is a Renyi-DP curve over a grid of orders (default :data:`ppml.dp.accounting.RDP_ORDERS`),
per query, for the neighbouring relation of PATE: **one teacher changes its vote** (which is what one
record, or one individual whose records all sit in one teacher's partition, can cause). Under that
relation the vote histogram ``n`` moves by ``-1`` in one class and ``+1`` in another (L1 distance 2,
L2 distance ``sqrt(2)``), and its maximum moves by at most 1.

Per-query costs
---------------
GNMax, ``argmax_j n_j + N(0, sigma**2)`` (Papernot et al. 2018, "Scalable private learning with PATE")
    data-independent: ``alpha / sigma**2`` (Proposition 8), :func:`rdp_gnmax_data_independent`;
    data-dependent: Theorem 6 with ``q`` the union bound of Proposition 7 on
    ``Pr[answer != argmax]`` (:func:`log_q_gnmax`) and the two higher orders of Proposition 10,
    :func:`rdp_gnmax_data_dependent`.
Threshold check of Confident-/Interactive-GNMax, ``max_j n_j + N(0, sigma1**2) >= T``
    the input has sensitivity 1 (not ``sqrt(2)``), so the curves are GNMax's at ``sqrt(2) * sigma1``:
    data-independent ``alpha / (2 sigma1**2)`` (:func:`rdp_threshold_data_independent`); data-dependent
    Theorem 6 with ``q = min(Pr[answered], Pr[not answered])`` (:func:`log_pr_answered`,
    :func:`rdp_threshold_data_dependent`).
LNMax, ``argmax_j n_j + Lap(1 / gamma)`` (Papernot et al. 2017, "Semi-supervised knowledge transfer
for deep learning from private training data")
    each query is pure ``2 gamma``-DP (one vote moves two counts by 1 each: L1 sensitivity 2); the
    data-independent curve is ``min(2 gamma, alpha (2 gamma)**2 / 2)`` (Theorem 2 of the 2017 paper
    in Renyi form; Bun and Steinke 2016), :func:`rdp_lnmax_data_independent`; the data-dependent one
    is the 2017 paper's Theorem 3 with ``q`` from its Lemma 4 (:func:`log_q_lnmax`,
    :func:`rdp_lnmax_data_dependent`).

Every data-dependent curve returned here is the minimum of the bound and the data-independent curve,
so the data-dependent epsilon can never exceed the data-independent one.

Moments accountant and RDP: the 2017 paper's log-moment ``alpha(l)`` is ``l * D_{l+1}``, i.e. Renyi DP
of order ``l + 1`` times ``l``; its epsilon ``min_l (alpha(l) + log(1/delta)) / l`` is the classic
conversion below at order ``l + 1``.

RDP to (epsilon, delta)
-----------------------
:func:`epsilon_from_rdp` offers two conversions (:data:`CONVERSIONS`): ``"dp_accounting"`` (the
default, the one :class:`ppml.dp.accounting.PrivacyAccountant` uses: ``min_a rdp(a) + log1p(-1/a) -
log(delta a) / (a - 1)``, Balle et al. 2020) and ``"classic"`` (``min_a rdp(a) + log(1/delta) / (a -
1)``, Mironov 2017, Proposition 3), with which both PATE papers published their numbers. The classic
one is never smaller.

Data-dependent epsilon and smooth sensitivity
---------------------------------------------
The data-dependent epsilon is a function of the votes and therefore itself private. The 2018 paper
publishes it through the Gaussian mechanism scaled to its beta-smooth sensitivity (Nissim, Raskhodnikova
and Smith 2007; Papernot et al. 2018, Section 4 and Appendix B-C): at one order ``lambda``,
``f(votes) = sum_i rdp_i(lambda)``; :func:`local_sensitivity_gnmax` and
:func:`local_sensitivity_threshold` bound, for every distance ``k`` (teachers changing their votes),
the largest local sensitivity of one query's term over vote vectors within distance ``k`` (Algorithms
3 to 5 and Proposition 13 of the 2018 paper); the sum over queries bounds that of ``f``;
:func:`smooth_sensitivity` is ``max_k exp(-beta k) A(k)``; :func:`release_data_dependent_epsilon`
releases ``f + SS * N(0, sigma_ss**2)`` and adds the release's own RDP cost
(:func:`rdp_smooth_sensitivity_release`, Theorem 23 of the 2018 paper). The MNIST release parameters of
the 2018 paper (Table 2) are order 14, beta 0.0329 and sigma 6.23.

The formulas follow the papers and the authors' analysis code (``tensorflow/privacy``,
``research/pate_2017/analysis.py``, ``research/pate_2018/core.py`` and ``smooth_sensitivity.py``);
the implementation here is ppml's own (vectorised over queries and orders).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.optimize
import scipy.special
from dp_accounting.rdp import compute_epsilon as _dp_accounting_epsilon

from ..._rng import SeedLike
from ..._validation import (
    POSITIVE_FLOAT,
    POSITIVE_INT,
    UNIT_OPEN,
    Interval,
    Options,
    ParameterError,
    check_param,
)
from ..accounting import RDP_ORDERS, BudgetExceededError

__all__ = [
    "CONVERSIONS",
    "PATEAccountant",
    "SmoothSensitivityRelease",
    "best_order",
    "epsilon_from_rdp",
    "local_sensitivity_gnmax",
    "local_sensitivity_threshold",
    "log_pr_answered",
    "log_q0_gnmax",
    "log_q_gnmax",
    "log_q_lnmax",
    "rdp_gnmax_data_dependent",
    "rdp_gnmax_data_independent",
    "rdp_lnmax_data_dependent",
    "rdp_lnmax_data_independent",
    "rdp_smooth_sensitivity_release",
    "rdp_threshold_data_dependent",
    "rdp_threshold_data_independent",
    "release_data_dependent_epsilon",
    "smooth_sensitivity",
]

_AT_LEAST_TWO = Interval(int, 2, None, "left")

CONVERSIONS: tuple[str, ...] = ("dp_accounting", "classic")
"""RDP-to-(epsilon, delta) conversions accepted by :func:`epsilon_from_rdp` (see the module docstring)."""


# ---------------------------------------------------------------------------------------------
# helpers


def _orders(orders: Sequence[float] | np.ndarray | None, owner: str) -> np.ndarray:
    if orders is None:
        return np.asarray(RDP_ORDERS, dtype=np.float64)
    arr = np.atleast_1d(np.asarray(orders, dtype=np.float64))
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr <= 1):
        raise ParameterError(
            f"The 'orders' parameter of {owner} must be a non-empty 1-d sequence of finite floats above 1. "
            f"Got {orders!r} instead.",
            param="orders",
        )
    return arr


def _check_log_probabilities(name: str, value: Any, owner: str) -> np.ndarray:
    """``value`` as a 1-d float64 array of log-probabilities (each in [-inf, 0]), or ParameterError."""
    arr = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if arr.ndim != 1 or np.any(np.isnan(arr)) or np.any(arr > 0):
        raise ParameterError(
            f"The '{name}' parameter of {owner} must be a float or 1-d array of floats in the range "
            f"[-inf, 0]. Got {value!r} instead.",
            param=name,
        )
    return arr


def _check_sigma(name: str, value: Any, owner: str) -> float:
    check_param(name, value, owner, POSITIVE_FLOAT)
    if not math.isfinite(value):
        raise ParameterError(
            f"The '{name}' parameter of {owner} must be a finite float in the range (0, inf). Got {value!r} instead.",
            param=name,
        )
    return float(value)


def _votes_2d(votes: Any, owner: str, *, integer: bool = True) -> tuple[np.ndarray, bool]:
    """``votes`` as a float64 ``(n, C)`` array and whether it was one vector ``(C,)``."""
    arr = np.asarray(votes)
    single = arr.ndim == 1
    if single:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] < 2 or arr.dtype.kind not in "iuf":
        raise ParameterError(
            f"The 'votes' parameter of {owner} must be an array of shape (num_classes,) or (num_queries, "
            f"num_classes) of vote counts, with at least 2 classes. Got shape {np.shape(votes)} instead.",
            param="votes",
        )
    out = arr.astype(np.float64)
    if not np.all(np.isfinite(out)) or (integer and (np.any(out < 0) or np.any(out != np.round(out)))):
        what = "non-negative integer counts" if integer else "finite numbers"
        raise ParameterError(
            f"The 'votes' parameter of {owner} must hold {what}. Got other values instead.", param="votes"
        )
    return out, single


def _log1mexp(x: np.ndarray | float) -> np.ndarray:
    """``log(1 - exp(x))`` for ``x <= 0``, accurate near 0 and for very negative ``x``."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x < -math.log(2.0), np.log1p(-np.exp(x)), np.log(-np.expm1(x)))


def _ret(x: np.ndarray, single: bool) -> Any:
    return x[0] if single else x


# ---------------------------------------------------------------------------------------------
# q: bounds on Pr[answer != argmax]


def log_q_gnmax(votes: Any, sigma: float) -> float | np.ndarray:
    """Upper bound on ``log Pr[GNMax answer != argmax of votes]`` (Papernot et al. 2018, Proposition 7).

    Union bound over the non-winning classes: ``q <= sum_{j != i*} Pr[N(0, 2 sigma**2) >= n_i* - n_j]``,
    capped at ``1 - 1 / C`` (the probability of a non-argmax answer never needs to exceed that).

    Parameters
    ----------
    votes : array of shape (C,) or (n, C)
        Vote counts per class (for one query or ``n`` queries).
    sigma : float > 0
        Standard deviation of GNMax's Gaussian noise.

    Returns
    -------
    float or ndarray of shape (n,)
    """
    owner = "log_q_gnmax"
    v, single = _votes_2d(votes, owner, integer=False)
    sigma = _check_sigma("sigma", sigma, owner)
    return _ret(_log_q_gnmax(v, sigma), single)


def _log_q_gnmax(v: np.ndarray, sigma: float) -> np.ndarray:
    n, c = v.shape
    top = np.argmax(v, axis=1)
    gaps = v[np.arange(n), top][:, None] - v  # >= 0, 0 at the winner
    # log Pr[N(0, 2 sigma^2) >= gap] = log_ndtr(-gap / (sqrt(2) sigma))
    logsf = scipy.special.log_ndtr(-gaps / (math.sqrt(2.0) * sigma))
    logsf[np.arange(n), top] = -np.inf
    logq = scipy.special.logsumexp(logsf, axis=1)
    return np.minimum(logq, math.log1p(-1.0 / c))


def log_q_lnmax(votes: Any, gamma: float) -> float | np.ndarray:
    """Upper bound on ``log Pr[LNMax answer != argmax of votes]`` (Papernot et al. 2017, Lemma 4).

    ``q <= sum_{j != i*} (2 + gamma * gap_j) / (4 exp(gamma * gap_j))`` with ``gap_j = n_i* - n_j``,
    capped at ``1 - 1 / C``.

    Parameters
    ----------
    votes : array of shape (C,) or (n, C)
    gamma : float > 0
        Inverse scale of LNMax's Laplace noise (noise ``Lap(1 / gamma)``).
    """
    owner = "log_q_lnmax"
    v, single = _votes_2d(votes, owner, integer=False)
    gamma = _check_sigma("gamma", gamma, owner)
    return _ret(_log_q_lnmax(v, gamma), single)


def _log_q_lnmax(v: np.ndarray, gamma: float) -> np.ndarray:
    n, c = v.shape
    top = np.argmax(v, axis=1)
    g = gamma * (v[np.arange(n), top][:, None] - v)
    terms = np.log(2.0 + g) - math.log(4.0) - g
    terms[np.arange(n), top] = -np.inf
    logq = scipy.special.logsumexp(terms, axis=1)
    return np.minimum(logq, math.log1p(-1.0 / c))


def log_pr_answered(votes: Any, threshold: float, sigma1: float) -> float | np.ndarray:
    """``log Pr[max_j votes_j + N(0, sigma1**2) >= threshold]``: the threshold check's answer probability.

    ``votes`` may be real-valued (Interactive-GNMax checks ``n - M p``, the votes minus the student's
    confidence-weighted votes).
    """
    owner = "log_pr_answered"
    v, single = _votes_2d(votes, owner, integer=False)
    check_param("threshold", threshold, owner, float, int)
    sigma1 = _check_sigma("sigma1", sigma1, owner)
    return _ret(_log_pr_answered(v.max(axis=1), float(threshold), sigma1), single)


def _log_pr_answered(vmax: np.ndarray, threshold: float, sigma1: float) -> np.ndarray:
    return scipy.special.log_ndtr((np.asarray(vmax, dtype=np.float64) - threshold) / sigma1)


# ---------------------------------------------------------------------------------------------
# per-query RDP curves


def rdp_gnmax_data_independent(sigma: float, orders: Sequence[float] | None = None) -> np.ndarray:
    """``alpha / sigma**2``: GNMax's RDP at every order (Papernot et al. 2018, Proposition 8).

    The Gaussian mechanism on the vote histogram (L2 sensitivity ``sqrt(2)``), of which the argmax is
    post-processing; equal to dp-accounting's ``GaussianDpEvent(sigma / sqrt(2))``.
    """
    owner = "rdp_gnmax_data_independent"
    sigma = _check_sigma("sigma", sigma, owner)
    return _orders(orders, owner) / sigma**2


def rdp_threshold_data_independent(sigma1: float, orders: Sequence[float] | None = None) -> np.ndarray:
    """``alpha / (2 sigma1**2)``: the threshold check's RDP (its input, the top vote, has sensitivity 1)."""
    owner = "rdp_threshold_data_independent"
    sigma1 = _check_sigma("sigma1", sigma1, owner)
    return _orders(orders, owner) / (2.0 * sigma1**2)


def rdp_lnmax_data_independent(gamma: float, orders: Sequence[float] | None = None) -> np.ndarray:
    """``min(2 gamma, alpha (2 gamma)**2 / 2)``: LNMax's RDP from its pure ``2 gamma``-DP.

    Papernot et al. 2017, Theorem 2 (``alpha(l) <= 2 gamma**2 l (l + 1)``) in Renyi form at order
    ``l + 1``; the ``alpha eps**2 / 2`` term is Bun and Steinke 2016 (pure DP implies zCDP).
    """
    owner = "rdp_lnmax_data_independent"
    gamma = _check_sigma("gamma", gamma, owner)
    eps = 2.0 * gamma
    return np.minimum(eps, 0.5 * eps**2 * _orders(orders, owner))


def _theorem6(logq: np.ndarray, sigma: float, orders: np.ndarray) -> np.ndarray:
    """Papernot et al. 2018, Theorem 6 with Proposition 10's orders, min'ed with ``alpha / sigma**2``.

    ``logq`` of shape (n,) -> (n, K). Where the theorem's conditions fail, the data-independent value.
    """
    logq = np.asarray(logq, dtype=np.float64)
    var = sigma**2
    di = np.broadcast_to(orders / var, (logq.size, orders.size)).copy()
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        mu2 = sigma * np.sqrt(-logq)  # Proposition 10
        mu1 = mu2 + 1.0
        eps1 = mu1 / var
        eps2 = mu2 / var
        # Conditions of Theorem 6 / Lemma 9: q in the range where the bound increases with q, A > 0.
        cond = (
            (mu2 > 1.0)
            & (logq <= (mu2 - 1.0) * eps2 - mu2 * (np.log1p(1.0 / (mu1 - 1.0)) + np.log1p(1.0 / (mu2 - 1.0))))
            & (-logq > eps2)
        )
        mask = cond[:, None] & (mu1[:, None] > orders[None, :])
        log1q = _log1mexp(logq)[:, None]  # log(1 - q)
        lam1 = orders[None, :] - 1.0
        # log A = log(1 - q) - log(1 - (q e^eps2)^(1 - 1/mu2));  log B = eps1 - log(q) / (mu1 - 1)
        log_a = log1q - _log1mexp((logq + eps2) * (1.0 - 1.0 / mu2))[:, None]
        log_b = (eps1 - logq / (mu1 - 1.0))[:, None]
        log_s = np.logaddexp(log1q + lam1 * log_a, logq[:, None] + lam1 * log_b)
        dd = log_s / lam1
    out = np.where(mask & np.isfinite(dd), np.minimum(di, dd), di)
    out[np.isneginf(logq)] = 0.0  # the answer is fixed: no privacy loss at these votes
    return np.maximum(out, 0.0)


def rdp_gnmax_data_dependent(
    log_q: float | Sequence[float] | np.ndarray, sigma: float, orders: Sequence[float] | None = None
) -> np.ndarray:
    """Data-dependent RDP of GNMax given ``log q``, ``q >= Pr[answer != argmax]`` (2018, Theorem 6).

    With ``mu2 = sigma sqrt(log(1/q))``, ``mu1 = mu2 + 1`` and ``eps_i = mu_i / sigma**2``
    (Proposition 10), for every order ``lambda < mu1`` where the theorem's conditions hold::

        rdp(lambda) = log((1 - q) A**(lambda - 1) + q B**(lambda - 1)) / (lambda - 1),
        A = (1 - q) / (1 - (q e^eps2)**((mu2 - 1) / mu2)),   B = e^eps1 / q**(1 / (mu1 - 1)),

    and ``alpha / sigma**2`` elsewhere; the result is never above ``alpha / sigma**2``.

    Parameters
    ----------
    log_q : float or array of shape (n,)
        From :func:`log_q_gnmax` (any valid upper bound on ``log q`` works; ``-inf`` gives 0).
    sigma : float > 0
    orders : sequence of float > 1, optional
        Default :data:`ppml.dp.accounting.RDP_ORDERS`.

    Returns
    -------
    ndarray of shape (K,) for a scalar ``log_q``, else (n, K)
    """
    owner = "rdp_gnmax_data_dependent"
    sigma = _check_sigma("sigma", sigma, owner)
    lq = _check_log_probabilities("log_q", log_q, owner)
    out = _theorem6(lq, sigma, _orders(orders, owner))
    return out[0] if np.ndim(log_q) == 0 else out


def rdp_threshold_data_dependent(
    log_pr_answered: float | Sequence[float] | np.ndarray,
    sigma1: float,
    orders: Sequence[float] | None = None,
) -> np.ndarray:
    """Data-dependent RDP of the threshold check (2018, Theorem 6 applied to a two-outcome mechanism).

    ``q = min(Pr[answered], Pr[not answered])`` bounds the probability of the less likely outcome; the
    check's data-independent curve is GNMax's at ``sqrt(2) sigma1``, so Theorem 6 is applied with that
    noise. Never above ``alpha / (2 sigma1**2)``.
    """
    owner = "rdp_threshold_data_dependent"
    sigma1 = _check_sigma("sigma1", sigma1, owner)
    lp = _check_log_probabilities("log_pr_answered", log_pr_answered, owner)
    out = _threshold_dd(lp, sigma1, _orders(orders, owner))
    return out[0] if np.ndim(log_pr_answered) == 0 else out


def _threshold_dd(lp: np.ndarray, sigma1: float, orders: np.ndarray) -> np.ndarray:
    logq = np.minimum(lp, _log1mexp(lp))
    return _theorem6(logq, math.sqrt(2.0) * sigma1, orders)


def rdp_lnmax_data_dependent(
    log_q: float | Sequence[float] | np.ndarray, gamma: float, orders: Sequence[float] | None = None
) -> np.ndarray:
    """Data-dependent RDP of LNMax given ``log q`` (Papernot et al. 2017, Theorem 3, in Renyi form).

    With ``eps = 2 gamma`` and ``q <= 1 / (e^eps + 1)``, at order ``a = l + 1``::

        rdp(a) = log((1 - q) ((1 - q) / (1 - e^eps q))**l + q e^(eps l)) / l,

    and always at most ``min(eps, a eps**2 / 2)`` (:func:`rdp_lnmax_data_independent`).
    """
    owner = "rdp_lnmax_data_dependent"
    gamma = _check_sigma("gamma", gamma, owner)
    lq = _check_log_probabilities("log_q", log_q, owner)
    out = _lnmax_dd(lq, gamma, _orders(orders, owner))
    return out[0] if np.ndim(log_q) == 0 else out


def _lnmax_dd(lq: np.ndarray, gamma: float, orders: np.ndarray) -> np.ndarray:
    eps = 2.0 * gamma
    di = np.broadcast_to(np.minimum(eps, 0.5 * eps**2 * orders), (lq.size, orders.size))
    l_ = orders[None, :] - 1.0
    ok = lq <= -math.log(math.exp(eps) + 1.0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log1q = _log1mexp(lq)[:, None]
        log_t1 = log1q + l_ * (log1q - _log1mexp(eps + lq)[:, None])
        log_t2 = lq[:, None] + eps * l_
        dd = np.logaddexp(log_t1, log_t2) / l_
    out = np.where(ok[:, None] & np.isfinite(dd), np.minimum(di, dd), di)
    out[np.isneginf(lq)] = 0.0
    return np.maximum(out, 0.0)


# ---------------------------------------------------------------------------------------------
# conversion


def epsilon_from_rdp(
    rdp: Sequence[float] | np.ndarray,
    delta: float,
    orders: Sequence[float] | None = None,
    *,
    conversion: str = "dp_accounting",
) -> float:
    """Epsilon at ``delta`` of an RDP curve (see the module docstring for the two conversions).

    Parameters
    ----------
    rdp : sequence of float, one per order
    delta : float in (0, 1)
    orders : sequence of float > 1, optional
        Default :data:`ppml.dp.accounting.RDP_ORDERS`.
    conversion : {"dp_accounting", "classic"}, default "dp_accounting"
        ``"dp_accounting"``: dp-accounting's ``rdp.compute_epsilon`` (as :class:`ppml.dp.accounting.
        PrivacyAccountant`); ``"classic"``: ``min_a rdp(a) + log(1/delta)/(a-1)``, as the PATE papers.
    """
    owner = "epsilon_from_rdp"
    check_param("delta", delta, owner, UNIT_OPEN)
    check_param("conversion", conversion, owner, Options(CONVERSIONS))
    o = _orders(orders, owner)
    r = np.asarray(rdp, dtype=np.float64)
    if r.shape != o.shape:
        raise ParameterError(
            f"The 'rdp' parameter of {owner} must have one value per order ({o.size}). "
            f"Got shape {r.shape} instead.",
            param="rdp",
        )
    return _epsilon(r, float(delta), o, conversion)[0]


def best_order(
    rdp: Sequence[float] | np.ndarray,
    delta: float,
    orders: Sequence[float] | None = None,
    *,
    conversion: str = "dp_accounting",
) -> float:
    """The order at which :func:`epsilon_from_rdp` attains its minimum."""
    owner = "best_order"
    check_param("delta", delta, owner, UNIT_OPEN)
    check_param("conversion", conversion, owner, Options(CONVERSIONS))
    o = _orders(orders, owner)
    return _epsilon(np.asarray(rdp, dtype=np.float64), float(delta), o, conversion)[1]


def _epsilon(rdp: np.ndarray, delta: float, orders: np.ndarray, conversion: str) -> tuple[float, float]:
    if np.any(np.isnan(rdp)):
        return math.inf, float("nan")
    if conversion == "classic":
        eps = rdp + math.log(1.0 / delta) / (orders - 1.0)
        i = int(np.argmin(eps))
        return max(float(eps[i]), 0.0), float(orders[i])
    eps, order = _dp_accounting_epsilon(orders, rdp, delta)
    return max(float(eps), 0.0), float(order)


# ---------------------------------------------------------------------------------------------
# accountant


class PATEAccountant:
    """Accumulate PATE's per-query RDP (data-independent and data-dependent) and enforce a budget.

    Parameters
    ----------
    delta : float in (0, 1), default 1e-5
    budget_epsilon : float > 0 or None, default None
        If given, :meth:`spend` raises :class:`~ppml.dp.accounting.BudgetExceededError` before
        recording a query whose *data-independent* cost would take the data-independent epsilon above
        it, and leaves the accountant unchanged.
    orders : sequence of float > 1, optional
        RDP orders; default :data:`ppml.dp.accounting.RDP_ORDERS`. The smooth-sensitivity release uses
        one order of its own (:func:`release_data_dependent_epsilon`).
    conversion : {"dp_accounting", "classic"}, default "dp_accounting"
        RDP-to-(epsilon, delta) conversion (:func:`epsilon_from_rdp`).

    Privacy guarantee
    -----------------
    :meth:`epsilon` (data-independent) is a guarantee for every dataset: if every query answered from
    the teachers was recorded here, the answers are (``epsilon()``, ``delta``)-DP with respect to one
    teacher's vote changing. The budget is enforced on it alone: the data-dependent epsilon
    (:meth:`data_dependent_epsilon`) is a function of the votes, so stopping when *it* reaches a budget
    would leak the votes through the number of answers. The data-dependent epsilon is never above the
    data-independent one (each query's data-dependent curve is capped by its data-independent curve),
    is as sensitive as the votes, and may be published only through
    :func:`release_data_dependent_epsilon`.

    Examples
    --------
    >>> acc = PATEAccountant(delta=1e-5, budget_epsilon=2.0)
    >>> di = rdp_gnmax_data_independent(40.0, acc.orders)
    >>> round(acc.spend(di), 3)  # one GNMax query at sigma = 40
    0.122
    """

    def __init__(
        self,
        delta: float = 1e-5,
        budget_epsilon: float | None = None,
        *,
        orders: Sequence[float] | None = None,
        conversion: str = "dp_accounting",
    ) -> None:
        owner = type(self).__name__
        check_param("delta", delta, owner, UNIT_OPEN)
        check_param("budget_epsilon", budget_epsilon, owner, POSITIVE_FLOAT, None)
        check_param("conversion", conversion, owner, Options(CONVERSIONS))
        self.delta = float(delta)
        self.budget_epsilon = None if budget_epsilon is None else float(budget_epsilon)
        self.conversion = conversion
        o = _orders(orders, owner).copy()
        o.setflags(write=False)
        self.orders = o
        self._rdp_di = np.zeros(o.size)
        self._rdp_dd = np.zeros(o.size)
        self._num_queries = 0
        self._num_answered = 0
        self._epsilon = 0.0

    # -- state -------------------------------------------------------------------------------
    @property
    def rdp_data_independent(self) -> np.ndarray:
        """Total data-independent RDP per order (a copy)."""
        return self._rdp_di.copy()

    @property
    def rdp_data_dependent(self) -> np.ndarray:
        """Total data-dependent RDP per order (a copy; as sensitive as the votes)."""
        return self._rdp_dd.copy()

    @property
    def num_queries(self) -> int:
        """Queries recorded (answered or not)."""
        return self._num_queries

    @property
    def num_answered(self) -> int:
        """Recorded queries that the teachers answered."""
        return self._num_answered

    def _curve(self, rdp: Any, name: str) -> np.ndarray:
        r = np.asarray(rdp, dtype=np.float64)
        if r.shape != self.orders.shape or np.any(np.isnan(r)) or np.any(r < 0):
            raise ParameterError(
                f"The '{name}' parameter of {type(self).__name__}.spend must be a non-negative RDP curve "
                f"with one value per order ({self.orders.size}). Got shape {r.shape} instead.",
                param=name,
            )
        return r

    # -- spending ----------------------------------------------------------------------------
    def epsilon_after(self, rdp_data_independent: Any) -> float:
        """Data-independent epsilon (at ``delta``) if a query costing ``rdp_data_independent`` were added."""
        r = self._curve(rdp_data_independent, "rdp_data_independent")
        return _epsilon(self._rdp_di + r, self.delta, self.orders, self.conversion)[0]

    def would_exceed(self, rdp_data_independent: Any) -> bool:
        """Whether adding ``rdp_data_independent`` would take the data-independent epsilon over budget.

        Always False without a budget. Nothing is recorded.
        """
        if self.budget_epsilon is None:
            self._curve(rdp_data_independent, "rdp_data_independent")
            return False
        return self.epsilon_after(rdp_data_independent) > self.budget_epsilon

    def spend(
        self, rdp_data_independent: Any, rdp_data_dependent: Any = None, *, answered: bool = True
    ) -> float:
        """Record one query's cost; return the new data-independent epsilon.

        Parameters
        ----------
        rdp_data_independent : array of shape (K,)
        rdp_data_dependent : array of shape (K,), optional
            Defaults to the data-independent curve; recorded as ``min(data-independent, given)``.
        answered : bool, default True
            Whether the teachers answered (for :attr:`num_answered`).

        Raises
        ------
        BudgetExceededError
            Before recording anything, if the data-independent epsilon would exceed ``budget_epsilon``.
        """
        di = self._curve(rdp_data_independent, "rdp_data_independent")
        dd = di if rdp_data_dependent is None else self._curve(rdp_data_dependent, "rdp_data_dependent")
        new_di = self._rdp_di + di
        eps = _epsilon(new_di, self.delta, self.orders, self.conversion)[0]
        if self.budget_epsilon is not None and eps > self.budget_epsilon:
            raise BudgetExceededError(
                f"Answering PATE query {self._num_queries + 1} would take the data-independent epsilon "
                f"from {self._epsilon:.4g} to {eps:.4g} at delta={self.delta:g}, above the budget "
                f"{self.budget_epsilon:g}. The query was refused; nothing was recorded."
            )
        self._rdp_di = new_di
        self._rdp_dd = self._rdp_dd + np.minimum(di, dd)
        self._num_queries += 1
        self._num_answered += int(bool(answered))
        self._epsilon = eps
        return eps

    # -- reporting ---------------------------------------------------------------------------
    def epsilon(self, delta: float | None = None) -> float:
        """Data-independent epsilon (the guarantee; the budget is enforced on it)."""
        if delta is None:
            return self._epsilon
        check_param("delta", delta, f"{type(self).__name__}.epsilon", UNIT_OPEN)
        return _epsilon(self._rdp_di, float(delta), self.orders, self.conversion)[0]

    def data_dependent_epsilon(self, delta: float | None = None) -> float:
        """Data-dependent epsilon (never above :meth:`epsilon`; sensitive: publish only via smooth sensitivity)."""
        d = self.delta if delta is None else delta
        check_param("delta", d, f"{type(self).__name__}.data_dependent_epsilon", UNIT_OPEN)
        eps = _epsilon(self._rdp_dd, float(d), self.orders, self.conversion)[0]
        return min(eps, self.epsilon(float(d)))

    def __repr__(self) -> str:
        budget = "" if self.budget_epsilon is None else f", budget_epsilon={self.budget_epsilon:g}"
        return (
            f"PATEAccountant(delta={self.delta:g}{budget}; {self._num_queries} queries, "
            f"{self._num_answered} answered, data-independent epsilon={self._epsilon:.4g})"
        )


# ---------------------------------------------------------------------------------------------
# smooth sensitivity (Papernot et al. 2018, Appendix B and C)


def log_q0_gnmax(sigma: float, order: float) -> float:
    """``log q0``: below it, GNMax's data-dependent RDP at ``order`` beats the data-independent one.

    Found by root finding on Theorem 6's bound minus ``order / sigma**2``, starting from the natural
    upper bound ``min(-(1 + 1/sigma)**2, -((order - 0.99)/sigma)**2, -1/sigma**2)`` where the theorem's
    conditions hold.
    """
    owner = "log_q0_gnmax"
    sigma = _check_sigma("sigma", sigma, owner)
    check_param("order", order, owner, POSITIVE_FLOAT)
    return _log_q0(sigma, float(order))


_LOGQ0_CACHE: dict[tuple[float, float], float] = {}


def _dd_bound(logq: float, sigma: float, order: float) -> float:
    """Theorem 6 at one order without the validity checks (the caller keeps ``logq`` below ``log q0``)."""
    var = sigma**2
    mu2 = sigma * math.sqrt(-logq)
    mu1 = mu2 + 1.0
    eps1, eps2 = mu1 / var, mu2 / var
    log1q = math.log1p(-math.exp(logq))
    log_a = log1q - float(_log1mexp((logq + eps2) * (1.0 - 1.0 / mu2)))
    log_b = eps1 - logq / (mu1 - 1.0)
    return float(np.logaddexp(log1q + (order - 1) * log_a, logq + (order - 1) * log_b)) / (order - 1)


def _log_q0(sigma: float, order: float) -> float:
    key = (sigma, order)
    if key in _LOGQ0_CACHE:
        return _LOGQ0_CACHE[key]
    di = order / sigma**2

    def gap(lq: float) -> float:
        return _dd_bound(lq, sigma, order) - di

    ub = min(-((1.0 + 1.0 / sigma) ** 2), -(((order - 0.99) / sigma) ** 2), -1.0 / sigma**2)
    if gap(ub) < 0:
        out = ub
    else:
        lb = 2.0 * ub
        while gap(lb) > 0:
            if lb < -1e5:  # pragma: no cover - unreachable for sane sigma, order
                raise ParameterError(
                    f"log_q0_gnmax found no crossing for sigma={sigma!r}, order={order!r}.", param="order"
                )
            lb *= 1.5
        out = float(scipy.optimize.brentq(gap, lb, ub))
    _LOGQ0_CACHE[key] = out
    return out


def _rdp_gnmax_one_order(logq: np.ndarray, sigma: float, order: float) -> np.ndarray:
    """GNMax's RDP at one order as a function of ``log q``: Theorem 6 below ``log q0``, ``order/sigma^2`` above."""
    logq = np.asarray(logq, dtype=np.float64)
    logq0 = _log_q0(sigma, order)
    out = np.full(logq.shape, order / sigma**2)
    low = logq < logq0
    for i in np.flatnonzero(low & np.isfinite(logq)):
        out.flat[i] = min(_dd_bound(float(logq.flat[i]), sigma, order), order / sigma**2)
    out[np.isneginf(logq)] = 0.0
    return out


def _bl_bu(q: np.ndarray, sigma: float, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Proposition 13: the union-bound q of a vote vector at distance 1 lies in ``[bl(q), bu(q)]``."""
    m1 = num_classes - 1
    z = scipy.special.erfcinv(np.minimum(2.0 * q / m1, 2.0))
    bl = m1 / 2.0 * scipy.special.erfc(z + 1.0 / sigma)
    bu = np.minimum(1.0, m1 / 2.0 * scipy.special.erfc(z - 1.0 / sigma))
    return bl, bu


def _ls_gnmax_at(logq: np.ndarray, sigma: float, num_classes: int, order: float) -> np.ndarray:
    """Algorithm 3: upper bound on GNMax's local sensitivity (of its RDP at ``order``) at each ``log q``."""
    logq = np.asarray(logq, dtype=np.float64).copy()
    logq0 = _log_q0(sigma, order)
    logq1 = math.log(float(_bl_bu(np.array([math.exp(logq0)]), sigma, num_classes)[0][0]))
    plateau = (logq >= logq1) & (logq <= logq0)
    logq[plateau] = logq1  # the largest local sensitivity on [q1, q0] is attained at q1
    q = np.exp(logq)
    bl, bu = _bl_bu(q, sigma, num_classes)
    with np.errstate(divide="ignore"):
        beta = _rdp_gnmax_one_order(logq, sigma, order)
        beta_u = _rdp_gnmax_one_order(np.log(bu), sigma, order)
        beta_l = _rdp_gnmax_one_order(np.log(bl), sigma, order)
    return np.maximum(beta_u - beta, beta - beta_l)


def local_sensitivity_gnmax(votes: Any, num_teachers: int, sigma: float, order: float) -> np.ndarray:
    """``A(k)``, ``k = 0..num_teachers-1``: the largest local sensitivity of GNMax's data-dependent RDP
    (at ``order``) over vote vectors within distance ``k`` of ``votes`` (2018, Algorithms 3 to 5).

    One step of distance moves one teacher's vote. The data-dependent RDP depends on the votes only
    through the union-bound ``q`` (:func:`log_q_gnmax`); the local sensitivity is largest on the
    plateau ``[q1, q0]`` just below the point ``q0`` where the data-independent bound takes over
    (:func:`log_q0_gnmax`), so the walk moves votes towards it: from consensual votes (``q < q1``) one
    teacher at a time leaves the winner for the runner-up; from split votes (``q > q0``) the strongest
    rival loses a vote to the winner. Distances past the plateau get the plateau's value. The result
    is non-decreasing in ``k``.

    Parameters
    ----------
    votes : array of shape (C,)
        One query's vote counts.
    num_teachers : int >= 2
    sigma : float > 0
        GNMax's noise.
    order : float > 1
        The Renyi order of the released data-dependent RDP.
    """
    owner = "local_sensitivity_gnmax"
    v, single = _votes_2d(votes, owner)
    if not single:
        raise ParameterError(
            f"The 'votes' parameter of {owner} must be one vote vector of shape (C,). "
            f"Got shape {np.shape(votes)} instead.",
            param="votes",
        )
    check_param("num_teachers", num_teachers, owner, POSITIVE_INT)
    sigma = _check_sigma("sigma", sigma, owner)
    check_param("order", order, owner, POSITIVE_FLOAT)
    return _ls_gnmax(v[0], int(num_teachers), sigma, float(order))


def _ls_gnmax(votes: np.ndarray, num_teachers: int, sigma: float, order: float) -> np.ndarray:
    c = votes.size
    logq0 = _log_q0(sigma, order)
    logq1 = math.log(float(_bl_bu(np.array([math.exp(logq0)]), sigma, c)[0][0]))
    plateau = float(_ls_gnmax_at(np.array([logq1]), sigma, c, order)[0])
    res = np.full(num_teachers, plateau)
    logq = float(_log_q_gnmax(votes[None, :], sigma)[0])
    if logq1 <= logq <= logq0:
        return res
    v = np.sort(votes)[::-1].copy()
    path = [v.copy()]
    if logq > logq0:  # split votes: widen the winner's lead one vote at a time
        while len(path) < num_teachers and v[1] > 0:
            v[0] += 1
            v[1] -= 1
            v[1:] = np.sort(v[1:])[::-1]
            path.append(v.copy())
    else:  # consensual votes: narrow the lead
        while len(path) < num_teachers and v[0] > v[1]:
            v[0] -= 1
            v[1] += 1
            path.append(v.copy())
    lq = _log_q_gnmax(np.array(path), sigma)
    ls = _ls_gnmax_at(lq, sigma, c, order)
    reached = lq <= logq0 if logq > logq0 else lq >= logq1
    stop = int(np.argmax(reached)) if reached.any() else len(path)
    res[:stop] = ls[:stop]
    return np.maximum.accumulate(res)


def local_sensitivity_threshold(
    votes: Any, num_teachers: int, threshold: float, sigma1: float, order: float
) -> np.ndarray:
    """``A(k)``, ``k = 0..num_teachers-1``, for the threshold check's data-dependent RDP at ``order``.

    The check's cost depends on the votes only through ``v = max_j votes_j``, which one teacher moves
    by at most 1 and which stays in ``[0, num_teachers]``. The local sensitivity at ``v`` is
    ``max |rdp(v +- 1) - rdp(v)|``; ``A(k)`` is its maximum over ``v - k .. v + k``. ``votes`` may be
    real-valued (Interactive-GNMax checks the votes minus the student's weighted votes).
    """
    owner = "local_sensitivity_threshold"
    v, single = _votes_2d(votes, owner, integer=False)
    if not single:
        raise ParameterError(
            f"The 'votes' parameter of {owner} must be one vote vector of shape (C,). "
            f"Got shape {np.shape(votes)} instead.",
            param="votes",
        )
    check_param("num_teachers", num_teachers, owner, POSITIVE_INT)
    check_param("threshold", threshold, owner, float, int)
    sigma1 = _check_sigma("sigma1", sigma1, owner)
    check_param("order", order, owner, POSITIVE_FLOAT)
    return _ls_threshold(float(v.max()), int(num_teachers), float(threshold), sigma1, float(order))


def _ls_threshold(
    vmax: float, num_teachers: int, threshold: float, sigma1: float, order: float
) -> np.ndarray:
    n = num_teachers
    vmax = min(max(vmax, 0.0), float(n))
    offsets = np.arange(-n - 1, n + 2, dtype=np.float64)
    grid = vmax + offsets  # index n + 1 is vmax itself
    orders = np.array([order])
    rdp = _threshold_dd(_log_pr_answered(grid, threshold, sigma1), sigma1, orders)[:, 0]
    valid = (grid >= 0) & (grid <= n)
    up = np.where(valid[2:], np.abs(rdp[2:] - rdp[1:-1]), 0.0)
    down = np.where(valid[:-2], np.abs(rdp[:-2] - rdp[1:-1]), 0.0)
    ls = np.where(valid[1:-1], np.maximum(up, down), 0.0)  # LS at grid[1:-1]; vmax at index n
    centre = n
    k = np.arange(n)
    a = np.maximum(ls[centre + k], ls[centre - k])
    return np.maximum.accumulate(a)


def smooth_sensitivity(local_sensitivities: Any, beta: float) -> float:
    """``max_k exp(-beta k) A(k)``: the beta-smooth sensitivity from the bounds ``A(k)`` at distances ``k``.

    Nissim, Raskhodnikova and Smith 2007, Definition 2.1 / Proposition 3.1; the ``A(k)`` of a sum of
    per-query terms is bounded by the sum of the per-query ``A(k)`` (Papernot et al. 2018, Appendix C).
    """
    owner = "smooth_sensitivity"
    check_param("beta", beta, owner, POSITIVE_FLOAT)
    a = np.asarray(local_sensitivities, dtype=np.float64)
    if a.ndim != 1 or a.size == 0 or np.any(a < 0) or not np.all(np.isfinite(a)):
        raise ParameterError(
            f"The 'local_sensitivities' parameter of {owner} must be a non-empty 1-d array of non-negative "
            f"finite floats. Got shape {a.shape} instead.",
            param="local_sensitivities",
        )
    return float(np.max(a * np.exp(-float(beta) * np.arange(a.size))))


def rdp_smooth_sensitivity_release(beta: float, sigma: float, order: float) -> float:
    """RDP at ``order`` of releasing ``f(D) + SS_beta(D) * N(0, sigma**2)`` (2018, Theorem 23).

    ``order * exp(2 beta) / sigma**2 + (beta * order - log(1 - 2 beta order) / 2) / (order - 1)``,
    valid for ``1 < order < 1 / (2 beta)``.
    """
    owner = "rdp_smooth_sensitivity_release"
    check_param("beta", beta, owner, POSITIVE_FLOAT)
    sigma = _check_sigma("sigma", sigma, owner)
    check_param("order", order, owner, POSITIVE_FLOAT)
    if not 1.0 < order < 1.0 / (2.0 * beta):
        raise ParameterError(
            f"The 'order' parameter of {owner} must be a float in the range (1, 1 / (2 beta)) = "
            f"(1, {1.0 / (2.0 * beta):.4g}). Got {order!r} instead.",
            param="order",
        )
    return order * math.exp(2.0 * beta) / sigma**2 + (
        beta * order - 0.5 * math.log1p(-2.0 * order * beta)
    ) / (order - 1.0)


@dataclass(frozen=True)
class SmoothSensitivityRelease:
    """The data-dependent epsilon published through smooth sensitivity (2018, Section 4).

    Attributes
    ----------
    epsilon : float
        The published data-dependent epsilon: ``noisy_rdp + release_rdp`` converted at ``order`` and
        ``delta`` (floored at 0). Covers the answers *and* this release.
    epsilon_expected : float
        The same with the exact (private) ``rdp_data_dependent`` in place of ``noisy_rdp``: what the
        release would publish without its noise. Not private.
    noisy_rdp : float
        ``rdp_data_dependent + smooth_sensitivity * N(0, sigma**2)``: the released value.
    rdp_data_dependent : float
        Sum over queries of the data-dependent RDP at ``order`` (not private).
    smooth_sensitivity : float
        Its beta-smooth sensitivity (not private).
    release_rdp : float
        RDP of the release itself at ``order`` (Theorem 23), added to the total.
    order, beta, sigma, delta : float
        The release parameters.
    conversion : str
        RDP-to-(epsilon, delta) conversion used at ``order``.
    """

    epsilon: float
    epsilon_expected: float
    noisy_rdp: float
    rdp_data_dependent: float
    smooth_sensitivity: float
    release_rdp: float
    order: float
    beta: float
    sigma: float
    delta: float
    conversion: str

    def public(self) -> dict[str, float | str]:
        """The fields that may be published: epsilon, noisy RDP, release cost and parameters."""
        return {
            "epsilon": self.epsilon,
            "noisy_rdp": self.noisy_rdp,
            "release_rdp": self.release_rdp,
            "order": self.order,
            "beta": self.beta,
            "sigma": self.sigma,
            "delta": self.delta,
            "conversion": self.conversion,
        }


def release_data_dependent_epsilon(
    votes: Any,
    answered: Any,
    *,
    sigma2: float,
    order: float,
    beta: float,
    sigma: float,
    delta: float = 1e-5,
    threshold: float | None = None,
    sigma1: float | None = None,
    check_votes: Any = None,
    num_teachers: int | None = None,
    rng: SeedLike = None,
    secure: bool = False,
    conversion: str = "dp_accounting",
) -> SmoothSensitivityRelease:
    """Publish GNMax / Confident-GNMax / Interactive-GNMax's data-dependent epsilon via smooth sensitivity.

    ``f = sum over answered queries of GNMax's data-dependent RDP at order`` plus, when ``threshold``
    is given, ``sum over all queries of the threshold check's`` (Confident-GNMax pays the check on every
    query). ``f + SS_beta(f) * N(0, sigma**2)`` is released and the release's own RDP
    (:func:`rdp_smooth_sensitivity_release`) is added before converting to epsilon.

    Parameters
    ----------
    votes : array (n, C)
        The teachers' vote counts for every query (answered or not).
    answered : bool array (n,)
        Which queries the teachers answered (the GNMax step ran on these).
    sigma2 : float > 0
        GNMax's noise (``sigma`` of :class:`~ppml.dp.pate.aggregators.GNMax`, ``sigma2`` of the
        confident and interactive aggregators).
    order : float > 1
        The single Renyi order of the release; below ``1 / (2 beta)``.
    beta : float > 0
        Smoothness parameter.
    sigma : float > 0
        Noise multiplier of the release (its noise has standard deviation ``sigma * SS``).
    delta : float in (0, 1), default 1e-5
    threshold, sigma1 : float, optional
        The threshold check's parameters (Confident- and Interactive-GNMax); omit both for GNMax.
    check_votes : array (n, C), optional
        What the check compared to the threshold, if not ``votes`` (Interactive-GNMax: ``votes - M p``).
    num_teachers : int, optional
        Default: the votes' row sums' maximum.
    rng : seed or Generator, optional
        Required unless ``secure=True`` (then refused, as in :mod:`ppml.dp.mechanisms`).
    secure : bool, default False
        Draw the release noise with :class:`~ppml.dp.mechanisms.GaussianMechanism` in secure mode.
    conversion : {"dp_accounting", "classic"}, default "dp_accounting"
        The 2018 paper's numbers use ``"classic"``.

    Privacy guarantee
    -----------------
    ``epsilon`` bounds the privacy loss of the answers together with this release (Theorem 23 of the
    2018 paper composed with the answers' data-dependent RDP); the order, beta and sigma must be chosen
    without looking at the votes (a choice that minimises the published epsilon on these votes leaks
    them).
    """
    from ..mechanisms import GaussianMechanism

    owner = "release_data_dependent_epsilon"
    v, _ = _votes_2d(votes, owner)
    ans = np.asarray(answered)
    if ans.shape != (v.shape[0],) or ans.dtype != np.bool_:
        raise ParameterError(
            f"The 'answered' parameter of {owner} must be a boolean array with one entry per query "
            f"({v.shape[0]}). Got {ans.dtype} of shape {ans.shape} instead.",
            param="answered",
        )
    sigma2 = _check_sigma("sigma2", sigma2, owner)
    check_param("beta", beta, owner, POSITIVE_FLOAT)
    sigma = _check_sigma("sigma", sigma, owner)
    check_param("delta", delta, owner, UNIT_OPEN)
    check_param("conversion", conversion, owner, Options(CONVERSIONS))
    check_param("secure", secure, owner, bool)
    release_rdp = rdp_smooth_sensitivity_release(beta, sigma, order)  # validates order vs beta
    if secure and rng is not None:
        raise ParameterError(
            f"The 'rng' parameter of {owner} must be None in secure mode (secure mode draws from the OS "
            f"CSPRNG and refuses seeds). Got {rng!r} instead.",
            param="rng",
        )
    if not secure and rng is None:
        raise ParameterError(
            f"The 'rng' parameter of {owner} must be an int seed, a SeedSequence or a numpy Generator "
            f"when secure=False. Got None instead.",
            param="rng",
        )
    if (threshold is None) != (sigma1 is None):
        raise ParameterError(
            f"The 'threshold' and 'sigma1' parameters of {owner} must be given together. "
            f"Got threshold={threshold!r}, sigma1={sigma1!r} instead.",
            param="threshold",
        )
    if num_teachers is None:
        num_teachers = int(v.sum(axis=1).max()) if v.size else 2
    check_param("num_teachers", num_teachers, owner, _AT_LEAST_TWO)
    order = float(order)

    f = 0.0
    ls_total = np.zeros(int(num_teachers))
    for row in v[ans]:
        lq = _log_q_gnmax(row[None, :], sigma2)
        f += float(_rdp_gnmax_one_order(lq, sigma2, order)[0])
        ls_total += _ls_gnmax(row, int(num_teachers), sigma2, order)
    if threshold is not None:
        assert sigma1 is not None
        s1 = _check_sigma("sigma1", sigma1, owner)
        cv = v if check_votes is None else _votes_2d(check_votes, owner, integer=False)[0]
        if cv.shape != v.shape:
            raise ParameterError(
                f"The 'check_votes' parameter of {owner} must have the votes' shape {v.shape}. "
                f"Got {cv.shape} instead.",
                param="check_votes",
            )
        vmax = cv.max(axis=1)
        lp = _log_pr_answered(vmax, float(threshold), s1)
        f += float(_threshold_dd(lp, s1, np.array([order]))[:, 0].sum())
        for m in vmax:
            ls_total += _ls_threshold(float(m), int(num_teachers), float(threshold), s1, order)
    ss = smooth_sensitivity(ls_total, beta)
    if ss > 0:
        mech = GaussianMechanism(sensitivity=ss, noise_multiplier=sigma, secure=secure)
        noisy = float(mech(np.array([f]), None if secure else rng)[0])
    else:
        noisy = f
    o = np.array([order])
    eps = _epsilon(np.array([max(noisy, 0.0) + release_rdp]), float(delta), o, conversion)[0]
    eps_exp = _epsilon(np.array([f + release_rdp]), float(delta), o, conversion)[0]
    return SmoothSensitivityRelease(
        epsilon=eps,
        epsilon_expected=eps_exp,
        noisy_rdp=noisy,
        rdp_data_dependent=f,
        smooth_sensitivity=ss,
        release_rdp=release_rdp,
        order=order,
        beta=float(beta),
        sigma=sigma,
        delta=float(delta),
        conversion=conversion,
    )
