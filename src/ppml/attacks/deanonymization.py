"""De-anonymisation of sparse released data: Scoreboard-RH (Narayanan and Shmatikov 2008).

Removing names from a table of ratings does not anonymise it. Each record holds a few of many possible
items, most of them rare, so a handful of (item, rating, date) facts about a person, learnt from another
source (a public review site in the Netflix case), singles out that person's record. Narayanan and
Shmatikov, "Robust de-anonymization of large sparse datasets" (IEEE S&P 2008), show that 8 ratings of
which 2 may be wrong, with dates known within 14 days, identify 99% of the records of the Netflix Prize
data.

The attack (:class:`Scoreboard`) is their algorithm *Scoreboard-RH*. The score of a released record
``r'`` against the auxiliary record ``aux`` of a target is

.. math::

    S(aux, r') = \\sum_{i \\in supp(aux) \\cap supp(r')} w(i)\\,
        \\left(e^{-|\\rho_i - \\rho'_i| / \\rho_0} + e^{-|d_i - d'_i| / d_0}\\right),
    \\qquad w(i) = \\frac{1}{\\log |supp(i)|},

where ``rho`` are ratings, ``d`` dates in days, ``supp(i)`` the records that rated item ``i``, and the
paper's Netflix settings are ``rho_0 = 1.5`` and ``d_0 = 30`` days (an aux item that the record did not
rate contributes nothing). Rare items weigh more: sharing an obscure film says more than sharing a
blockbuster. The best-scoring record is accepted only if it stands out: its *eccentricity*
``(max - max_2) / std`` over the scores of all records must reach ``phi`` (1.5 in the paper); otherwise
the attack answers "no match" (:data:`NO_MATCH`).

Everything is vectorised. The released table is held as a sparse record x item matrix
(:class:`ReleasedRatings`, scipy CSC); scoring gathers, for every (target, aux item) pair, the column of
that item and accumulates the per-record terms with one ``bincount``, a block of targets at a time; no
Python loop runs over records or targets.

Ground truth (which pseudonym belongs to which target) reaches only :func:`score_reidentification`.
:func:`release_ratings` makes the released table (users replaced by random pseudonyms) and returns the
mapping separately; :func:`make_auxiliary` draws the adversary's auxiliary knowledge;
:func:`make_sparse_ratings` is a synthetic sparse ratings generator (for tests, and where MovieLens is
absent).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from .._rng import SeedLike, as_generator
from .._validation import NONNEG_FLOAT, POSITIVE_FLOAT, POSITIVE_INT, Interval, check_param
from ..data.files import MOVIELENS_GENRES, Ratings
from .base import Access, Attack, AttackResult, ThreatModel

__all__ = [
    "NO_MATCH",
    "ReleasedRatings",
    "AuxiliaryRatings",
    "Scoreboard",
    "score_reidentification",
    "release_ratings",
    "make_auxiliary",
    "make_sparse_ratings",
]

NO_MATCH = -1
"""The guess of an attack that declines to name a record (the eccentricity test failed)."""

_DAY_S = 86_400.0
_MAX_BLOCK = 4_000_000  # targets x records scored at once (32 MB of float64)


def _expand_ranges(start: np.ndarray, length: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate ``arange(start[j], start[j] + length[j])`` for all ``j``; also return ``j`` per entry."""
    length = np.asarray(length, dtype=np.int64)
    total = int(length.sum())
    owner = np.repeat(np.arange(len(length), dtype=np.int64), length)
    if total == 0:
        return np.zeros(0, dtype=np.int64), owner
    first = np.cumsum(length) - length  # position of each range's first entry in the output
    pos = (
        np.arange(total, dtype=np.int64)
        - np.repeat(first, length)
        + np.repeat(start.astype(np.int64), length)
    )
    return pos, owner


# --------------------------------------------------------------------------- the released table


@dataclass(frozen=True, eq=False)
class ReleasedRatings:
    """A released ("anonymised") ratings table, indexed as a sparse record x item matrix.

    Build it with :meth:`from_arrays` (or :func:`release_ratings`). Row ``j`` of :attr:`matrix` is the
    record of pseudonym ``pseudonyms[j]``; column ``c`` is item ``items[c]``.

    Attributes
    ----------
    matrix : scipy.sparse.csc_matrix of shape (n_records, n_items) float64
        The ratings; explicit entries are the rated items (a rating of 0 is kept as an entry).
    day : ndarray of shape (nnz,) float64 or None
        The date of each entry of ``matrix.data`` in days (aligned with it), or None when the table has
        no dates.
    pseudonyms : ndarray of shape (n_records,) int64
        The pseudonymous id of each record, as released.
    items : ndarray of shape (n_items,) int64
        The item id of each column, sorted.
    """

    matrix: sp.csc_matrix
    day: np.ndarray | None
    pseudonyms: np.ndarray
    items: np.ndarray

    @classmethod
    def from_arrays(
        cls,
        pseudonym: Any,
        item: Any,
        rating: Any,
        timestamp: Any = None,
        *,
        time_unit_s: float = 1.0,
    ) -> ReleasedRatings:
        """Index a table of ``(pseudonym, item, rating[, timestamp])`` rows.

        Parameters
        ----------
        pseudonym, item : array-like of shape (n,) int
            The record (pseudonymous user) and item of each row; each pair may appear once.
        rating : array-like of shape (n,)
            The rating of each row.
        timestamp : array-like of shape (n,), optional
            The time of each row in units of ``time_unit_s`` seconds (default: Unix seconds); stored in
            days. Without it, Scoreboard scores ratings only.
        time_unit_s : float, default 1.0
            Seconds per unit of ``timestamp`` (86400 for timestamps already in days).
        """
        check_param("time_unit_s", time_unit_s, "ReleasedRatings.from_arrays", POSITIVE_FLOAT)
        pid = np.asarray(pseudonym)
        itm = np.asarray(item)
        val = np.asarray(rating, dtype=np.float64)
        for name, a in (("pseudonym", pid), ("item", itm)):
            if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
                raise ValueError(f"{name} must be a 1-d integer array")
        if itm.shape != pid.shape or val.shape != pid.shape:
            raise ValueError(
                f"pseudonym, item and rating must have the same shape; got {pid.shape}, {itm.shape}, "
                f"{val.shape}"
            )
        if not np.all(np.isfinite(val)):
            raise ValueError("ratings must be finite")
        days = None
        if timestamp is not None:
            days = np.asarray(timestamp, dtype=np.float64) * (float(time_unit_s) / _DAY_S)
            if days.shape != pid.shape or not np.all(np.isfinite(days)):
                raise ValueError("timestamp must be finite and of the same shape as pseudonym")
        labels, row = np.unique(pid, return_inverse=True)
        items, col = np.unique(itm, return_inverse=True)
        row, col = row.ravel().astype(np.int64), col.ravel().astype(np.int64)
        order = np.lexsort((row, col))  # column-major: CSC order
        row_s, col_s = row[order], col[order]
        if len(order) > 1 and np.any((row_s[1:] == row_s[:-1]) & (col_s[1:] == col_s[:-1])):
            raise ValueError("each (pseudonym, item) pair may appear only once in a released table")
        indptr = np.zeros(len(items) + 1, dtype=np.int64)
        np.cumsum(np.bincount(col_s, minlength=len(items)), out=indptr[1:])
        matrix = sp.csc_matrix((val[order], row_s, indptr), shape=(len(labels), len(items)))
        return cls(
            matrix=matrix,
            day=None if days is None else days[order],
            pseudonyms=labels.astype(np.int64),
            items=items.astype(np.int64),
        )

    @property
    def n_records(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.matrix.shape[1])

    def support(self) -> np.ndarray:
        """Number of records that rated each item, shape ``(n_items,)`` int64."""
        return np.diff(self.matrix.indptr).astype(np.int64)


# --------------------------------------------------------------------------- auxiliary knowledge


@dataclass(frozen=True, eq=False)
class AuxiliaryRatings:
    """What the adversary knows about each target: a few (item, rating, date) facts, some wrong.

    The facts of target ``t`` are rows ``offsets[t]:offsets[t + 1]``.

    Attributes
    ----------
    target : ndarray of shape (n_targets,) int64
        Who each target is, in the adversary's own terms (a user id of another site; here the user id of
        the original data). It never names a pseudonym.
    offsets : ndarray of shape (n_targets + 1,) int64
    item : ndarray of shape (n_facts,) int64
    rating : ndarray of shape (n_facts,) float64
    day : ndarray of shape (n_facts,) float64
        Date in days (same origin as the released table); NaN where the date is unknown.
    """

    target: np.ndarray
    offsets: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    day: np.ndarray

    @classmethod
    def from_records(
        cls, target: Any, item: Any, rating: Any, day: Any = None, *, order: Any = None
    ) -> AuxiliaryRatings:
        """Group ``(target, item, rating[, day])`` rows by target.

        Parameters
        ----------
        target, item : array-like of shape (n,) int
        rating : array-like of shape (n,)
        day : array-like of shape (n,), optional
            Dates in days (NaN or absent: unknown).
        order : array-like of int, optional
            The targets in the order wanted (default: sorted ids); a target without rows gets none.
        """
        tgt = np.asarray(target, dtype=np.int64).ravel()
        itm = np.asarray(item, dtype=np.int64).ravel()
        val = np.asarray(rating, dtype=np.float64).ravel()
        d = np.full(len(tgt), np.nan) if day is None else np.asarray(day, dtype=np.float64).ravel()
        if not (len(tgt) == len(itm) == len(val) == len(d)):
            raise ValueError("target, item, rating and day must have the same length")
        ids = np.unique(tgt) if order is None else np.asarray(order, dtype=np.int64).ravel()
        if len(np.unique(ids)) != len(ids):
            raise ValueError("order must not repeat a target")
        sorter = np.argsort(ids, kind="stable")
        pos = np.searchsorted(ids, tgt, sorter=sorter) if len(ids) else np.zeros(0, dtype=np.int64)
        pos = np.minimum(pos, max(len(ids) - 1, 0))
        if len(tgt) and (len(ids) == 0 or np.any(ids[sorter[pos]] != tgt)):
            raise ValueError("every target of a row must appear in order")
        slot = sorter[pos] if len(tgt) else np.zeros(0, dtype=np.int64)
        rows = np.argsort(slot, kind="stable")
        offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(np.bincount(slot, minlength=len(ids)), out=offsets[1:])
        return cls(target=ids, offsets=offsets, item=itm[rows], rating=val[rows], day=d[rows])

    @property
    def n_targets(self) -> int:
        return len(self.target)

    def counts(self) -> np.ndarray:
        """Number of facts known about each target."""
        return np.diff(self.offsets)


# --------------------------------------------------------------------------- the attack


class Scoreboard(Attack):
    """Scoreboard-RH (Narayanan and Shmatikov 2008): link targets to records of a released table.

    Parameters
    ----------
    threat_model : ThreatModel
        Must grant ``Access.RELEASED_TABLE`` (the pseudonymised table). The auxiliary knowledge of the
        targets is passed to :meth:`fit`.
    rho0 : float, default 1.5
        Rating scale of the similarity ``exp(-|rating difference| / rho0)`` (the paper's Netflix value).
    d0 : float, default 30.0
        Date scale in days of ``exp(-|date difference| / d0)`` (the paper's Netflix value).
    phi : float, default 1.5
        Eccentricity threshold: the best record is named only if ``(best - second) / std(scores)``
        reaches it (0 names the best record always).
    rarity_weights : bool, default True
        Weight each aux item by ``1 / log |support(i)|`` (an item rated by a single record takes the
        weight of support 2, where the formula is undefined). False weighs all items 1 (for comparison).

    Notes
    -----
    An aux item that no record of the table holds contributes to no score. A fact with an unknown date
    (NaN), or a table without dates, contributes its rating term only.
    """

    name = "Scoreboard-RH"
    requires = (Access.RELEASED_TABLE,)

    def __init__(
        self,
        threat_model: ThreatModel,
        *,
        rho0: float = 1.5,
        d0: float = 30.0,
        phi: float = 1.5,
        rarity_weights: bool = True,
    ) -> None:
        super().__init__(threat_model)
        owner = type(self).__name__
        check_param("rho0", rho0, owner, POSITIVE_FLOAT)
        check_param("d0", d0, owner, POSITIVE_FLOAT)
        check_param("phi", phi, owner, NONNEG_FLOAT)
        check_param("rarity_weights", rarity_weights, owner, bool)
        self.rho0 = rho0
        self.d0 = d0
        self.phi = phi
        self.rarity_weights = rarity_weights

    def fit(self, auxiliary: AuxiliaryRatings | None = None) -> Scoreboard:
        """Take the auxiliary knowledge of the targets.

        Parameters
        ----------
        auxiliary : AuxiliaryRatings
            A few (item, rating, date) facts per target (:func:`make_auxiliary`).
        """
        if not isinstance(auxiliary, AuxiliaryRatings):
            raise TypeError(
                f"{self.name} needs the targets' auxiliary knowledge as AuxiliaryRatings; "
                f"got {type(auxiliary).__name__}"
            )
        self.auxiliary_ = auxiliary
        return self

    def item_weights(self, table: ReleasedRatings) -> np.ndarray:
        """The weight of each item (column) of ``table``: ``1 / log |support|`` or 1."""
        support = table.support()
        if not self.rarity_weights:
            return (support > 0).astype(np.float64)
        w = 1.0 / np.log(np.maximum(support, 2).astype(np.float64))
        return np.where(support > 0, w, 0.0)

    def scores(self, table: ReleasedRatings, targets: slice | None = None) -> np.ndarray:
        """Scores of every record against the fitted targets, shape ``(n_targets, n_records)``.

        Parameters
        ----------
        table : ReleasedRatings
            The released table.
        targets : slice, optional
            A contiguous block of targets (default: all of them).
        """
        aux = self._fitted()
        if not isinstance(table, ReleasedRatings):
            raise TypeError(f"{self.name} needs a ReleasedRatings table; got {type(table).__name__}")
        t0, t1, _ = (targets or slice(None)).indices(aux.n_targets)
        t1 = max(t1, t0)
        n_rec = table.n_records
        lo, hi = int(aux.offsets[t0]), int(aux.offsets[t1])
        a_item, a_rating, a_day = aux.item[lo:hi], aux.rating[lo:hi], aux.day[lo:hi]
        a_target = np.repeat(np.arange(t1 - t0, dtype=np.int64), np.diff(aux.offsets[t0 : t1 + 1]))
        col = np.searchsorted(table.items, a_item)
        known = col < table.n_items
        known[known] = table.items[col[known]] == a_item[known]
        col = np.where(known, col, 0)
        indptr = table.matrix.indptr
        length = np.where(known, indptr[col + 1] - indptr[col], 0)
        pos, fact = _expand_ranges(indptr[col], length)
        record = table.matrix.indices[pos].astype(np.int64)
        term = np.exp(-np.abs(table.matrix.data[pos] - a_rating[fact]) / float(self.rho0))
        if table.day is not None:
            date_term = np.exp(-np.abs(table.day[pos] - a_day[fact]) / float(self.d0))
            term += np.where(np.isnan(date_term), 0.0, date_term)
        term *= self.item_weights(table)[col[fact]]
        flat = np.bincount(a_target[fact] * n_rec + record, weights=term, minlength=(t1 - t0) * n_rec)
        return flat.reshape(t1 - t0, n_rec)

    def run(self, observations: ReleasedRatings) -> AttackResult:
        """Name, for each target, the record of the released table that is theirs, or decline.

        Parameters
        ----------
        observations : ReleasedRatings
            The released table (:func:`release_ratings`, :meth:`ReleasedRatings.from_arrays`).

        Returns
        -------
        AttackResult
            ``guesses``: int64 ``(n_targets,)``, the matched pseudonym or :data:`NO_MATCH`; ``scores``:
            the eccentricity of each target's best record. ``details``: ``best`` (the best record's
            pseudonym even where the test failed), ``best_score``, ``target`` (the aux target ids) and
            the settings.
        """
        aux = self._fitted()
        if not isinstance(observations, ReleasedRatings):
            raise TypeError(f"{self.name} needs a ReleasedRatings table; got {type(observations).__name__}")
        start = time.perf_counter()
        n_t, n_rec = aux.n_targets, observations.n_records
        if n_rec < 2:
            raise ValueError(f"{self.name} needs a released table of at least 2 records; got {n_rec}")
        best = np.zeros(n_t, dtype=np.int64)
        best_score = np.zeros(n_t)
        ecc = np.zeros(n_t)
        block = max(1, _MAX_BLOCK // n_rec)
        for t0 in range(0, n_t, block):
            s = self.scores(observations, slice(t0, t0 + block))
            top2 = np.partition(s, n_rec - 2, axis=1)[:, -2:]
            first, second = top2[:, 1], top2[:, 0]
            sd = s.std(axis=1)
            best[t0 : t0 + len(s)] = np.argmax(s, axis=1)
            best_score[t0 : t0 + len(s)] = first
            with np.errstate(divide="ignore", invalid="ignore"):
                ecc[t0 : t0 + len(s)] = np.where(sd > 0, (first - second) / sd, 0.0)
        accept = (ecc >= float(self.phi)) & (best_score > 0)
        best_id = observations.pseudonyms[best]
        return AttackResult(
            attack=self.name,
            threat_model=self.threat_model,
            scores=ecc,
            guesses=np.where(accept, best_id, NO_MATCH).astype(np.int64),
            details={
                "best": best_id,
                "best_score": best_score,
                "target": aux.target,
                "n_targets": int(n_t),
                "n_records": int(n_rec),
                "rho0": float(self.rho0),
                "d0": float(self.d0),
                "phi": float(self.phi),
                "rarity_weights": bool(self.rarity_weights),
            },
            seconds=time.perf_counter() - start,
        )

    def _fitted(self) -> AuxiliaryRatings:
        aux = getattr(self, "auxiliary_", None)
        if aux is None:
            raise RuntimeError(f"{self.name} has no auxiliary knowledge; call fit(auxiliary) first")
        return aux


# --------------------------------------------------------------------------- scoring (ground truth)


def score_reidentification(result: AttackResult, true_pseudonym: Any) -> AttackResult:
    """Score a linkage attack against the truth (for analysis only): who was named correctly?

    Parameters
    ----------
    result : AttackResult
        From :meth:`Scoreboard.run` or :meth:`ppml.attacks.location.TraceReidentification.run`:
        ``guesses`` holds one pseudonym or :data:`NO_MATCH` per target; ``details["best"]``, when
        present, the best candidate regardless of the acceptance test.
    true_pseudonym : array-like of shape (n_targets,) int
        The pseudonym of each target's record; :data:`NO_MATCH` where the target has no record (then
        declining is right and any name is wrong).

    Returns
    -------
    AttackResult
        A copy with metrics ``share_correct`` (named, and rightly), ``share_wrong`` (named, wrongly),
        ``share_no_match`` (declined), ``precision`` (correct among named; NaN when none named),
        ``share_best_correct`` (the best candidate is right, test or not) and ``n_targets``.
    """
    guess = np.asarray(result.guesses, dtype=np.int64)
    truth = np.asarray(true_pseudonym, dtype=np.int64)
    if guess.ndim != 1 or truth.shape != guess.shape:
        raise ValueError(
            "guesses and true_pseudonym must both have shape (n_targets,); "
            f"got {guess.shape} and {truth.shape}"
        )
    if len(truth) == 0:
        raise ValueError("no targets to score")
    named = guess != NO_MATCH
    correct = named & (guess == truth)
    best = np.asarray(result.details.get("best", guess), dtype=np.int64)
    n_named = int(named.sum())
    return result.with_metrics(
        share_correct=float(correct.mean()),
        share_wrong=float((named & ~correct).mean()),
        share_no_match=float((~named).mean()),
        precision=float(correct.sum() / n_named) if n_named else float("nan"),
        share_best_correct=float(np.mean((best == truth) & (truth != NO_MATCH))),
        n_targets=float(len(truth)),
    )


# --------------------------------------------------------------------------- data: release, aux, synthetic


def release_ratings(ratings: Ratings, *, seed: SeedLike) -> tuple[ReleasedRatings, np.ndarray]:
    """Release a ratings table "anonymised" the Netflix way: user ids replaced by random pseudonyms.

    Parameters
    ----------
    ratings : Ratings
        The original table (:func:`ppml.data.files.load_movielens100k`, :func:`make_sparse_ratings`).
    seed : int, SeedSequence or numpy Generator
        Draws the pseudonyms (a random permutation of ``0 .. n_users - 1``).

    Returns
    -------
    table : ReleasedRatings
        What the adversary observes: pseudonym, item, rating and date of every rating.
    pseudonym_of_user : ndarray of shape (max user id + 1,) int64
        Ground truth, for analysis only: the pseudonym of each user id (:data:`NO_MATCH` for an id
        without ratings).
    """
    rng = as_generator(seed)
    users = np.unique(ratings.user)
    if len(users) == 0:
        raise ValueError("no ratings to release")
    if users[0] < 0:
        raise ValueError("user ids must be non-negative")
    mapping = np.full(int(users[-1]) + 1, NO_MATCH, dtype=np.int64)
    mapping[users] = rng.permutation(len(users))
    table = ReleasedRatings.from_arrays(
        mapping[ratings.user], ratings.item, ratings.rating, ratings.timestamp
    )
    return table, mapping


def make_auxiliary(
    ratings: Ratings,
    targets: Sequence[int] | np.ndarray,
    *,
    k: int,
    n_wrong: int = 0,
    date_error_days: float = 0.0,
    seed: SeedLike,
    rating_levels: Sequence[float] | None = None,
) -> AuxiliaryRatings:
    """The adversary's auxiliary knowledge: ``k`` of each target's true ratings, some wrong, dates noisy.

    Parameters
    ----------
    ratings : Ratings
        The original (identified) ratings; the generator reads the truth, the attack never does.
    targets : sequence of int
        User ids of the targets (distinct).
    k : int
        Facts per target, drawn without replacement from the target's ratings (all of them for a target
        with fewer than ``k``).
    n_wrong : int, default 0
        How many of a target's ``k`` facts carry a wrong rating (a different rating level drawn
        uniformly); at most ``k``.
    date_error_days : float, default 0.0
        Each date is shifted by a uniform draw in ``[-date_error_days, date_error_days]`` days.
    seed : int, SeedSequence or numpy Generator
    rating_levels : sequence of float, optional
        The rating scale that wrong ratings are drawn from (default: the distinct ratings in the data).

    Returns
    -------
    AuxiliaryRatings
        Targets in the order given.
    """
    owner = "make_auxiliary"
    check_param("k", k, owner, POSITIVE_INT)
    check_param("n_wrong", n_wrong, owner, Interval(int, 0, k, "both"))
    check_param("date_error_days", date_error_days, owner, NONNEG_FLOAT)
    rng = as_generator(seed)
    tgt = np.asarray(targets, dtype=np.int64).ravel()
    if len(np.unique(tgt)) != len(tgt):
        raise ValueError("targets must be distinct")
    levels = np.unique(ratings.rating if rating_levels is None else np.asarray(rating_levels)).astype(float)
    if n_wrong and len(levels) < 2:
        raise ValueError("wrong ratings need at least two rating levels")
    order = np.argsort(ratings.user, kind="stable")
    users_sorted = ratings.user[order]
    lo = np.searchsorted(users_sorted, tgt, side="left")
    hi = np.searchsorted(users_sorted, tgt, side="right")
    pos, owner_idx = _expand_ranges(lo, hi - lo)
    key = rng.random(len(pos))
    perm = np.lexsort((key, owner_idx))
    pos, owner_idx = pos[perm], owner_idx[perm]
    first = np.cumsum(hi - lo) - (hi - lo)
    rank = np.arange(len(pos)) - first[owner_idx]
    keep = rank < k
    rows, owner_idx, rank = order[pos[keep]], owner_idx[keep], rank[keep]
    rating = ratings.rating[rows].astype(np.float64)
    wrong = rank < n_wrong  # the ranks are a random order, so the first n_wrong are a random subset
    if np.any(wrong):
        at = np.searchsorted(levels, rating[wrong])
        shift = rng.integers(1, len(levels), size=int(wrong.sum()))
        rating[wrong] = levels[(at + shift) % len(levels)]
    day = ratings.timestamp[rows].astype(np.float64) / _DAY_S
    if date_error_days > 0:
        day = day + rng.uniform(-float(date_error_days), float(date_error_days), size=len(day))
    return AuxiliaryRatings.from_records(tgt[owner_idx], ratings.item[rows], rating, day, order=tgt)


def make_sparse_ratings(
    n_users: int = 2_000,
    n_items: int = 3_000,
    *,
    seed: SeedLike,
    mean_ratings: float = 30.0,
    popularity_exponent: float = 0.9,
    days: int = 1_000,
) -> Ratings:
    """A synthetic sparse ratings table with a long tail of rare items, MovieLens-like in shape.

    Item popularity follows a Zipf law (``p_i ~ rank^-popularity_exponent``); the number of ratings per
    user is log-normal (at least 5); ratings are ``3.6 + item bias + user bias + noise`` rounded to
    1..5; each user rates during an active window of the ``days``-day period.

    Parameters
    ----------
    n_users, n_items : int
    seed : int, SeedSequence or numpy Generator
    mean_ratings : float, default 30.0
        Mean number of ratings per user.
    popularity_exponent : float, default 0.9
    days : int, default 1000
        Length of the period; timestamps are Unix seconds from 0.

    Returns
    -------
    Ratings
        Ids count from 1 as in MovieLens; titles ``"item i"``, no genres, ``source="synthetic"``.
    """
    owner = "make_sparse_ratings"
    check_param("n_users", n_users, owner, Interval(int, 2, None, "left"))
    check_param("n_items", n_items, owner, Interval(int, 5, None, "left"))
    check_param("mean_ratings", mean_ratings, owner, Interval(float, 5.0, None, "left"))
    check_param("popularity_exponent", popularity_exponent, owner, NONNEG_FLOAT)
    check_param("days", days, owner, POSITIVE_INT)
    rng = as_generator(seed)
    sigma = 0.8
    counts = rng.lognormal(math.log(mean_ratings) - sigma**2 / 2, sigma, size=n_users)
    counts = np.clip(np.round(counts), 5, n_items).astype(np.int64)
    logp = -float(popularity_exponent) * np.log(np.arange(1, n_items + 1, dtype=np.float64))
    item_bias = rng.normal(0.0, 0.5, size=n_items)
    user_bias = rng.normal(0.0, 0.4, size=n_users)
    users, items = [], []
    block = max(1, 2_000_000 // n_items)
    for u0 in range(0, n_users, block):  # Gumbel top-k: sampling without replacement, rows at a time
        u1 = min(n_users, u0 + block)
        keys = logp + rng.gumbel(size=(u1 - u0, n_items))
        ranked = np.argsort(-keys, axis=1)
        c = counts[u0:u1]
        take = np.arange(n_items)[None, :] < c[:, None]
        users.append(np.repeat(np.arange(u0, u1), c))
        items.append(ranked[take])
    user = np.concatenate(users)
    item = np.concatenate(items)
    rating = np.clip(np.round(3.6 + item_bias[item] + user_bias[user] + rng.normal(0, 0.9, len(user))), 1, 5)
    span = rng.uniform(7, days, size=n_users)
    begin = rng.uniform(0, days - span)
    t = (begin[user] + rng.uniform(0, 1, len(user)) * span[user]) * _DAY_S
    data = np.stack([user + 1, item + 1, rating.astype(np.int64), t.astype(np.int64)], axis=1)
    return Ratings(
        data=data.astype(np.int64),
        titles=tuple(f"item {i}" for i in range(1, n_items + 1)),
        num_users=int(n_users),
        num_items=int(n_items),
        item_genres=np.zeros((n_items, len(MOVIELENS_GENRES)), dtype=bool),
        source="synthetic",
        meta={"generator": owner, "popularity_exponent": float(popularity_exponent), "days": int(days)},
    )
