"""PATE's noisy aggregators: teacher votes in, labels (or no answer) out, with what each query cost.

* :func:`votes_from_predictions`: teacher predictions ``(T, n)`` to vote counts ``(n, C)``.
* :class:`LNMax` (Papernot et al. 2017): ``argmax_j n_j + Lap(1 / gamma)``.
* :class:`GNMax` (Papernot et al. 2018): ``argmax_j n_j + N(0, sigma**2)``.
* :class:`ConfidentGNMax` (2018, Algorithm 1): answer only if ``max_j n_j + N(0, sigma1**2) >= T``,
  then with GNMax at ``sigma2``.
* :class:`InteractiveGNMax` (2018, Algorithm 2, Section 4.2): answer only if
  ``max_j (n_j - M p_j) + N(0, sigma1**2) >= T``, where ``p`` is the student's predicted class
  probabilities and ``M`` the number of teachers, i.e. only where teachers and student disagree
  enough; optionally take the student's own label where it is confident.

Aggregators are frozen: ``answer(votes, rng, ...)`` returns an :class:`Answers` holding the labels
(``-1`` where unanswered) and, per query, the data-independent and data-dependent RDP curves spent
(:mod:`ppml.dp.pate.analysis`). Given a :class:`~ppml.dp.pate.analysis.PATEAccountant`, queries are
recorded one by one and the first one whose worst-case data-independent cost would exceed its budget
is refused with :class:`PATEBudgetExceededError` (a :class:`~ppml.dp.accounting.BudgetExceededError`)
carrying the answers so far; the accountant then holds exactly those answers.

Noise is drawn as in :mod:`ppml.dp.mechanisms` (which draws it): with ``secure=False`` from the given
seeded generator (a :class:`~ppml.dp.mechanisms.PrivacyWarning` says so once per process); with
``secure=True`` from :func:`ppml._rng.secure_generator` as discrete noise on a power-of-two grid
(integer vote counts lie on it exactly), and an ``rng`` is refused. The data-dependent bounds assume
continuous noise; the secure grid noise matches it to about 1e-12 (relative), far below the bounds'
slack.

Privacy unit: one teacher's vote. If each individual's records all lie in one teacher's partition
(the partitioner's job), the guarantees hold per individual.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..._rng import SeedLike, as_generator
from ..._validation import Interval, ParameterError, check_param
from ..accounting import BudgetExceededError
from ..mechanisms import GaussianMechanism, LaplaceMechanism
from . import analysis as _an
from .analysis import PATEAccountant

__all__ = [
    "Answers",
    "ConfidentGNMax",
    "GNMax",
    "InteractiveGNMax",
    "LNMax",
    "PATEBudgetExceededError",
    "votes_from_predictions",
]

_FINITE_POSITIVE = Interval(float, 0, None, "neither")


def votes_from_predictions(predictions: Any, num_classes: int) -> np.ndarray:
    """Count the teachers' votes: ``(T, n)`` integer predictions to ``(n, num_classes)`` int64 counts.

    Parameters
    ----------
    predictions : int array of shape (T, n)
        Teacher ``t``'s predicted class for query ``i`` at ``[t, i]``.
    num_classes : int >= 2

    Raises
    ------
    ParameterError
        Fewer than two teachers, non-integer predictions, or a class outside ``[0, num_classes)``.

    Examples
    --------
    >>> votes_from_predictions([[0, 1], [0, 2], [1, 2]], 3).tolist()
    [[2, 1, 0], [0, 1, 2]]
    """
    owner = "votes_from_predictions"
    check_param("num_classes", num_classes, owner, Interval(int, 2, None, "left"))
    p = np.asarray(predictions)
    if p.ndim != 2 or p.dtype.kind not in "iu":
        raise ParameterError(
            f"The 'predictions' parameter of {owner} must be an integer array of shape (num_teachers, "
            f"num_queries). Got {p.dtype} of shape {p.shape} instead.",
            param="predictions",
        )
    if p.shape[0] < 2:
        raise ParameterError(
            f"The 'predictions' parameter of {owner} must come from at least 2 teachers (PATE's privacy "
            f"rests on no single teacher deciding a label). Got {p.shape[0]} instead.",
            param="predictions",
        )
    if p.size and (p.min() < 0 or p.max() >= num_classes):
        raise ParameterError(
            f"The 'predictions' parameter of {owner} must hold classes in [0, {num_classes}). "
            f"Got values in [{p.min()}, {p.max()}] instead.",
            param="predictions",
        )
    n = p.shape[1]
    flat = p.astype(np.int64) + num_classes * np.arange(n, dtype=np.int64)[None, :]
    return np.bincount(flat.ravel(), minlength=n * num_classes).reshape(n, num_classes)


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class Answers:
    """What an aggregator answered and what it spent, per query.

    Attributes
    ----------
    labels : int64 array (n,)
        The released label of each query; ``-1`` where no label was released.
    answered : bool array (n,)
        Whether the teachers answered (paid the noisy argmax). For :class:`InteractiveGNMax` with
        ``student_confidence`` set, ``labels`` may hold the student's own label where ``answered`` is
        False (see ``from_student``).
    from_student : bool array (n,)
        Labels taken from the student's own prediction (Interactive-GNMax only; no privacy cost).
    rdp_data_independent : float array (n, K)
        Each query's data-independent RDP over ``orders``.
    rdp_data_dependent : float array (n, K)
        Each query's data-dependent RDP (at most the data-independent one). Derived from the votes: as
        sensitive as they are, never to be published.
    orders : float array (K,)
    """

    labels: np.ndarray
    answered: np.ndarray
    rdp_data_independent: np.ndarray
    rdp_data_dependent: np.ndarray
    orders: np.ndarray
    from_student: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def __post_init__(self) -> None:
        n = np.shape(self.labels)[0]
        fs = self.from_student if np.size(self.from_student) else np.zeros(n, dtype=bool)
        for name, value in [
            ("labels", np.asarray(self.labels, dtype=np.int64)),
            ("answered", np.asarray(self.answered, dtype=bool)),
            ("rdp_data_independent", np.asarray(self.rdp_data_independent, dtype=np.float64)),
            ("rdp_data_dependent", np.asarray(self.rdp_data_dependent, dtype=np.float64)),
            ("orders", np.asarray(self.orders, dtype=np.float64)),
            ("from_student", np.asarray(fs, dtype=bool)),
        ]:
            object.__setattr__(self, name, _readonly(value))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_answered(self) -> int:
        """How many queries the teachers answered."""
        return int(self.answered.sum())

    def epsilon(self, delta: float, *, conversion: str = "dp_accounting") -> float:
        """Data-independent epsilon at ``delta`` of all these queries (composed)."""
        return _an.epsilon_from_rdp(
            self.rdp_data_independent.sum(axis=0), delta, self.orders, conversion=conversion
        )

    def data_dependent_epsilon(self, delta: float, *, conversion: str = "dp_accounting") -> float:
        """Data-dependent epsilon (sensitive: publish only via
        :func:`~ppml.dp.pate.analysis.release_data_dependent_epsilon`)."""
        return _an.epsilon_from_rdp(
            self.rdp_data_dependent.sum(axis=0), delta, self.orders, conversion=conversion
        )

    def _head(self, k: int) -> Answers:
        return Answers(
            self.labels[:k],
            self.answered[:k],
            self.rdp_data_independent[:k],
            self.rdp_data_dependent[:k],
            self.orders,
            self.from_student[:k],
        )


class PATEBudgetExceededError(BudgetExceededError):
    """A PATE query was refused because it could take the data-independent epsilon over budget.

    Attributes
    ----------
    answers : Answers
        The queries answered before the refused one (recorded in the accountant).
    query_index : int
        Index of the refused query in the batch.
    """

    def __init__(self, message: str, answers: Answers, query_index: int) -> None:
        super().__init__(message)
        self.answers = answers
        self.query_index = query_index


def _check_finite(name: str, value: Any, owner: str) -> None:
    check_param(name, value, owner, _FINITE_POSITIVE)
    if not math.isfinite(value):
        raise ParameterError(
            f"The '{name}' parameter of {owner} must be a finite float in the range (0, inf). Got {value!r} instead.",
            param=name,
        )


class _Aggregator:
    """Shared ``answer`` loop; subclasses draw noise (``_release``) and price queries (``_costs``)."""

    secure: bool
    needs_student: ClassVar[bool] = False

    # -- subclass hooks ----------------------------------------------------------------------
    def _release(
        self, votes: np.ndarray, rng: np.random.Generator | None, student: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _costs(
        self, votes: np.ndarray, answered: np.ndarray, orders: np.ndarray, student: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def worst_case_rdp(self, orders: Sequence[float] | None = None) -> np.ndarray:  # pragma: no cover
        """Largest data-independent RDP one query can cost (what the budget check uses)."""
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------
    def _rng(self, rng: SeedLike) -> np.random.Generator | None:
        owner = f"{type(self).__name__}.answer"
        if self.secure:
            if rng is not None:
                raise ParameterError(
                    f"The 'rng' parameter of {owner} must be None in secure mode: secure mode draws from the "
                    f"OS CSPRNG and refuses seeds (anyone holding the seed can subtract the noise). "
                    f"Got {rng!r} instead.",
                    param="rng",
                )
            return None
        if rng is None:
            raise ParameterError(
                f"The 'rng' parameter of {owner} must be an int seed, a SeedSequence or a numpy Generator "
                f"when secure=False (pass secure=True for non-reproducible deployment noise). Got None instead.",
                param="rng",
            )
        return as_generator(rng)

    def answer(
        self,
        votes: Any,
        rng: SeedLike = None,
        *,
        accountant: PATEAccountant | None = None,
        orders: Sequence[float] | None = None,
        student_probs: Any = None,
    ) -> Answers:
        """Answer every query (row of ``votes``), in order.

        Parameters
        ----------
        votes : int array (n, C)
            Vote counts (:func:`votes_from_predictions`).
        rng : int, SeedSequence or Generator
            Required when ``secure=False``; must be None when ``secure=True``.
        accountant : PATEAccountant, optional
            Records each answered query's cost, in order; the first query whose worst-case
            data-independent cost (:meth:`worst_case_rdp`) would exceed its budget is refused with
            :class:`PATEBudgetExceededError` (carrying the answers so far), before anything of it is
            recorded or released.
        orders : sequence of float > 1, optional
            RDP orders of the returned costs; the accountant's orders when one is given (then this must
            be None), else :data:`ppml.dp.accounting.RDP_ORDERS`.
        student_probs : float array (n, C)
            The student's predicted class probabilities (:class:`InteractiveGNMax` only).

        Returns
        -------
        Answers
        """
        owner = f"{type(self).__name__}.answer"
        v, single = _an._votes_2d(votes, owner)
        if single:
            raise ParameterError(
                f"The 'votes' parameter of {owner} must have shape (num_queries, num_classes). "
                f"Got shape {np.shape(votes)} instead.",
                param="votes",
            )
        if accountant is not None:
            check_param("accountant", accountant, owner, PATEAccountant)
            if orders is not None:
                raise ParameterError(
                    f"The 'orders' parameter of {owner} must be None when an accountant is given (its orders "
                    f"are used). Got {orders!r} instead.",
                    param="orders",
                )
            o = np.asarray(accountant.orders)
        else:
            o = _an._orders(orders, owner)
        student = self._student(student_probs, v, owner)
        gen = self._rng(rng)
        labels, answered, from_student = self._release(v, gen, student)
        di, dd = self._costs(v, answered, o, student)
        dd = np.minimum(dd, di)
        answers = Answers(labels, answered, di, dd, o, from_student)
        if accountant is None:
            return answers
        worst = self.worst_case_rdp(o)
        for i in range(v.shape[0]):
            if accountant.would_exceed(worst):
                raise PATEBudgetExceededError(
                    f"{type(self).__name__} refused query {i} of {v.shape[0]}: its worst-case cost would take "
                    f"the data-independent epsilon from {accountant.epsilon():.4g} to "
                    f"{accountant.epsilon_after(worst):.4g} at delta={accountant.delta:g}, above the budget "
                    f"{accountant.budget_epsilon:g}. The {i} queries before it were answered and recorded; "
                    f"they are in this error's 'answers'.",
                    answers._head(i),
                    i,
                )
            accountant.spend(di[i], dd[i], answered=bool(answered[i]))
        return answers

    def _student(self, student_probs: Any, votes: np.ndarray, owner: str) -> np.ndarray | None:
        if not self.needs_student:
            if student_probs is not None:
                raise ParameterError(
                    f"The 'student_probs' parameter of {owner} must be None ({type(self).__name__} does not "
                    f"use the student). Got an array instead.",
                    param="student_probs",
                )
            return None
        p = np.asarray(student_probs, dtype=np.float64) if student_probs is not None else None
        if (
            p is None
            or p.shape != votes.shape
            or not np.all(np.isfinite(p))
            or np.any(p < 0)
            or not np.allclose(p.sum(axis=1), 1.0, atol=1e-6)
        ):
            raise ParameterError(
                f"The 'student_probs' parameter of {owner} must be the student's class probabilities, "
                f"shape {votes.shape} with rows summing to 1. Got "
                f"{'None' if p is None else f'shape {p.shape}'} instead.",
                param="student_probs",
            )
        return p


def _argmax(noisy: np.ndarray) -> np.ndarray:
    return np.argmax(noisy, axis=1).astype(np.int64)


def _gaussian(x: np.ndarray, sensitivity: float, std: float, secure: bool, gen: np.random.Generator | None):
    mech = GaussianMechanism(sensitivity=sensitivity, noise_multiplier=std / sensitivity, secure=secure)
    return np.asarray(mech(x, gen), dtype=np.float64)


@dataclass(frozen=True)
class LNMax(_Aggregator):
    """Laplace noisy max: ``argmax_j n_j + Lap(1 / gamma)`` (Papernot et al. 2017, Section 2.1).

    Parameters
    ----------
    gamma : float > 0
        Inverse noise scale; the 2017 MNIST setting is ``gamma = 0.05`` (scale 20).
    secure : bool, default False
        Draw the noise with :class:`~ppml.dp.mechanisms.LaplaceMechanism` in secure mode.

    Privacy guarantee
    -----------------
    Each query is pure ``2 gamma``-DP with respect to one teacher's vote (two counts move by 1 each):
    data-independent RDP :func:`~ppml.dp.pate.analysis.rdp_lnmax_data_independent`; data-dependent RDP
    from the 2017 paper's Theorem 3 and Lemma 4 (:func:`~ppml.dp.pate.analysis.rdp_lnmax_data_dependent`).
    """

    gamma: float
    secure: bool = False

    def __post_init__(self) -> None:
        owner = type(self).__name__
        _check_finite("gamma", self.gamma, owner)
        check_param("secure", self.secure, owner, bool)

    @property
    def pure_epsilon(self) -> float:
        """``2 gamma``: each query's pure-DP epsilon."""
        return 2.0 * float(self.gamma)

    def noisy_votes(self, votes: Any, rng: SeedLike = None) -> np.ndarray:
        """``votes + Lap(1 / gamma)`` per count (the histogram is also ``2 gamma``-DP per query)."""
        v, _ = _an._votes_2d(votes, f"{type(self).__name__}.noisy_votes")
        return self._noisy(v, self._rng(rng))

    def _noisy(self, votes: np.ndarray, gen: np.random.Generator | None) -> np.ndarray:
        mech = LaplaceMechanism(sensitivity=2.0, scale=1.0 / float(self.gamma), secure=self.secure)
        return np.asarray(mech(votes, gen), dtype=np.float64)

    def _release(self, votes, rng, student):
        labels = _argmax(self._noisy(votes, rng))
        n = votes.shape[0]
        return labels, np.ones(n, dtype=bool), np.zeros(n, dtype=bool)

    def _costs(self, votes, answered, orders, student):
        g = float(self.gamma)
        di = np.broadcast_to(_an.rdp_lnmax_data_independent(g, orders), (votes.shape[0], orders.size))
        dd = _an._lnmax_dd(_an._log_q_lnmax(votes, g), g, orders)
        return np.array(di), dd

    def worst_case_rdp(self, orders: Sequence[float] | None = None) -> np.ndarray:
        return _an.rdp_lnmax_data_independent(float(self.gamma), orders)


@dataclass(frozen=True)
class GNMax(_Aggregator):
    """Gaussian noisy max: ``argmax_j n_j + N(0, sigma**2)`` (Papernot et al. 2018, Section 4.1).

    Parameters
    ----------
    sigma : float > 0
        Standard deviation of the noise on each vote count.
    secure : bool, default False
        Draw the noise with :class:`~ppml.dp.mechanisms.GaussianMechanism` in secure mode.

    Privacy guarantee
    -----------------
    Each query is ``(alpha, alpha / sigma**2)``-RDP (Proposition 8; the Gaussian mechanism on the
    histogram, L2 sensitivity ``sqrt(2)``); data-dependent RDP by Theorem 6 with Proposition 7's ``q``.
    """

    sigma: float
    secure: bool = False

    def __post_init__(self) -> None:
        owner = type(self).__name__
        _check_finite("sigma", self.sigma, owner)
        check_param("secure", self.secure, owner, bool)

    def noisy_votes(self, votes: Any, rng: SeedLike = None) -> np.ndarray:
        """``votes + N(0, sigma**2)`` per count (the histogram is ``alpha / sigma**2``-RDP too)."""
        v, _ = _an._votes_2d(votes, f"{type(self).__name__}.noisy_votes")
        return _gaussian(v, math.sqrt(2.0), float(self.sigma), self.secure, self._rng(rng))

    def _release(self, votes, rng, student):
        noisy = _gaussian(votes, math.sqrt(2.0), float(self.sigma), self.secure, rng)
        n = votes.shape[0]
        return _argmax(noisy), np.ones(n, dtype=bool), np.zeros(n, dtype=bool)

    def _costs(self, votes, answered, orders, student):
        s = float(self.sigma)
        di = np.broadcast_to(orders / s**2, (votes.shape[0], orders.size))
        dd = _an._theorem6(_an._log_q_gnmax(votes, s), s, orders)
        return np.array(di), dd

    def worst_case_rdp(self, orders: Sequence[float] | None = None) -> np.ndarray:
        return _an.rdp_gnmax_data_independent(float(self.sigma), orders)


@dataclass(frozen=True)
class _Thresholded(_Aggregator):
    threshold: float
    sigma1: float
    sigma2: float
    secure: bool = False

    def __post_init__(self) -> None:
        owner = type(self).__name__
        check_param("threshold", self.threshold, owner, Interval(float, None, None))
        if not math.isfinite(self.threshold):
            raise ParameterError(
                f"The 'threshold' parameter of {owner} must be finite. Got {self.threshold!r} instead.",
                param="threshold",
            )
        _check_finite("sigma1", self.sigma1, owner)
        _check_finite("sigma2", self.sigma2, owner)
        check_param("secure", self.secure, owner, bool)

    def _check_input(self, votes: np.ndarray, student: np.ndarray | None) -> np.ndarray:
        """What the threshold check compares with the threshold, per query and class."""
        return votes

    def _release(self, votes, rng, student):
        check = self._check_input(votes, student).max(axis=1)
        noisy_check = _gaussian(check, 1.0, float(self.sigma1), self.secure, rng)
        answered = noisy_check >= float(self.threshold)
        noisy = _gaussian(votes, math.sqrt(2.0), float(self.sigma2), self.secure, rng)
        labels = np.where(answered, _argmax(noisy), -1)
        return labels, answered, np.zeros(votes.shape[0], dtype=bool)

    def _costs(self, votes, answered, orders, student):
        s1, s2 = float(self.sigma1), float(self.sigma2)
        n = votes.shape[0]
        thr_di = orders / (2.0 * s1**2)
        gn_di = orders / s2**2
        check = self._check_input(votes, student).max(axis=1)
        thr_dd = _an._threshold_dd(_an._log_pr_answered(check, float(self.threshold), s1), s1, orders)
        gn_dd = np.zeros((n, orders.size))
        if answered.any():
            gn_dd[answered] = _an._theorem6(_an._log_q_gnmax(votes[answered], s2), s2, orders)
        a = answered[:, None]
        di = thr_di[None, :] + np.where(a, gn_di[None, :], 0.0)
        dd = np.minimum(thr_dd, thr_di[None, :]) + np.minimum(gn_dd, np.where(a, gn_di[None, :], 0.0))
        return di, dd

    def worst_case_rdp(self, orders: Sequence[float] | None = None) -> np.ndarray:
        """Threshold check plus the noisy argmax (an answered query), data-independent."""
        return _an.rdp_threshold_data_independent(
            float(self.sigma1), orders
        ) + _an.rdp_gnmax_data_independent(float(self.sigma2), orders)


@dataclass(frozen=True)
class ConfidentGNMax(_Thresholded):
    """Confident-GNMax (Papernot et al. 2018, Algorithm 1): answer only where the teachers agree.

    For each query, if ``max_j n_j + N(0, sigma1**2) >= threshold`` answer
    ``argmax_j n_j + N(0, sigma2**2)``, else return no label (``-1``).

    Parameters
    ----------
    threshold : float
        ``T``; the 2018 MNIST setting (250 teachers) is ``T = 200``, ``sigma1 = 150``, ``sigma2 = 40``.
    sigma1 : float > 0
        Noise of the threshold check.
    sigma2 : float > 0
        Noise of the noisy argmax.
    secure : bool, default False

    Privacy guarantee
    -----------------
    Every query pays the threshold check, ``alpha / (2 sigma1**2)`` (its input, the top count, has
    sensitivity 1); only answered queries pay GNMax's ``alpha / sigma2**2``. Which queries were
    answered is released (it is paid for by the check). Data-dependent costs: Theorem 6 for both steps.
    """


@dataclass(frozen=True)
class InteractiveGNMax(_Thresholded):
    """Interactive-GNMax (Papernot et al. 2018, Algorithm 2, Section 4.2): ask the teachers only where
    the student is likely wrong.

    For each query with student probabilities ``p`` and ``M`` teachers (``M = sum_j n_j``), if
    ``max_j (n_j - M p_j) + N(0, sigma1**2) >= threshold`` (the teachers' votes exceed the student's
    confidence-weighted votes in some class by enough), answer ``argmax_j n_j + N(0, sigma2**2)``;
    else, if ``student_confidence`` is set and ``max_j p_j > student_confidence``, return the student's
    own label (no privacy cost: it reads no private data), else no label (``-1``).

    Parameters
    ----------
    threshold, sigma1, sigma2 : float
        As for :class:`ConfidentGNMax`.
    student_confidence : float in (0, 1) or None, default None
        The paper's ``gamma``: above it the student's own prediction is kept as a label.
    secure : bool, default False

    Privacy guarantee
    -----------------
    As Confident-GNMax: the check ``max_j (n_j - M p_j)`` still moves by at most 1 when one teacher
    changes its vote (``p`` is the student's, a function of earlier released answers and public data),
    so every query pays ``alpha / (2 sigma1**2)`` and answered ones ``alpha / sigma2**2``.
    """

    student_confidence: float | None = None
    needs_student: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_param(
            "student_confidence",
            self.student_confidence,
            type(self).__name__,
            Interval(float, 0, 1, "neither"),
            None,
        )

    def _check_input(self, votes: np.ndarray, student: np.ndarray | None) -> np.ndarray:
        assert student is not None
        return votes - votes.sum(axis=1, keepdims=True) * student

    def check_votes(self, votes: Any, student_probs: Any) -> np.ndarray:
        """``n - M p``: what the threshold check compares (for :func:`release_data_dependent_epsilon`)."""
        owner = f"{type(self).__name__}.check_votes"
        v, _ = _an._votes_2d(votes, owner)
        return self._check_input(v, self._student(student_probs, v, owner))

    def _release(self, votes, rng, student):
        labels, answered, _ = super()._release(votes, rng, student)
        from_student = np.zeros(votes.shape[0], dtype=bool)
        if self.student_confidence is not None:
            assert student is not None
            from_student = ~answered & (student.max(axis=1) > float(self.student_confidence))
            labels = np.where(from_student, np.argmax(student, axis=1), labels)
        return labels, answered, from_student
