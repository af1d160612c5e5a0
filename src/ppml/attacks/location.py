"""Location privacy: what raw, pseudonymous driving logs reveal about where people live.

Central collection of ADAS logs keeps ``<pseudonym, x, y, timestamp>`` for every record. Removing names
does not anonymise such data: the place where a car spends its nights is, almost always, its owner's
home, and a home address (with a work address even more so) singles out a person (Golle and Partridge,
"On the anonymity of home/work location pairs", 2009; de Montjoye et al., "Unique in the crowd", 2013).

:class:`HomeInference` is that attack. For each pseudonym it finds the *stays* between consecutive
trips, weights each stay by the number of nights it spans (a stay over 03:00 counts one night), and
votes on a grid of ``cell_m`` metres (:func:`top_places`); the best cell, smoothed over its eight
neighbours, is refined to the weighted mean of the nearby stay points. The last end of the log counts one
night (the car stays there after the logging period), the first start half a night (the car was parked
there before, but a logger's first GPS fix may come some way down the road). The confidence of a guess is
the share of the pseudonym's vote weight within ``1.5 * cell_m`` of it.

Ground truth (true homes) reaches only :func:`score_home_inference`.

:class:`TraceReidentification` links a known person to a pseudonym of the pooled logs from a few
sightings (``(x, y, time)`` points, e.g. "seen near home at 8:00"): de Montjoye et al., "Unique in the
crowd: the privacy bounds of human mobility" (Scientific Reports 3, 2013), find that 4 spatio-temporal
points single out 95% of 1.5 million mobile phone traces. :func:`make_sightings` draws such sightings from
the logs (ground truth); :func:`ppml.attacks.deanonymization.score_reidentification` scores the links.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from .._rng import as_generator
from .._validation import Interval, check_param
from .base import Access, Attack, AttackResult, ThreatModel
from .deanonymization import NO_MATCH, _expand_ranges

__all__ = ["HomeInference", "TraceReidentification", "make_sightings", "score_home_inference", "top_places"]

_DAY_S = 86_400.0
_CELL = Interval(float, 1.0, None, "left")
_NONNEG_REAL = Interval(float, 0.0, None, "left")


def top_places(
    pseudonym: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    *,
    weights: np.ndarray | None = None,
    k: int = 2,
    cell_m: float = 200.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` places where each pseudonym's weighted points concentrate most.

    Points are counted on a grid of ``cell_m`` metres; each occupied cell scores the weight in it and
    its eight neighbours (so a place on a cell corner is not split). The best cell of each pseudonym is
    refined to the weighted mean of its points in that 3 x 3 block (within ``2.1 * cell_m`` of its
    centre), then to the mean within ``0.75 * cell_m`` of that mean (robust to stray points). For the next place, cells within ``3 * cell_m`` of the places
    already chosen are left out.

    Parameters
    ----------
    pseudonym : ndarray of shape (p,) int
        Non-negative id of each point's owner.
    x, y : ndarray of shape (p,)
        Point coordinates in metres.
    weights : ndarray of shape (p,), optional
        Non-negative weight of each point (default: 1).
    k : int, default 2
        Number of places per pseudonym (home and work: ``k=2``).
    cell_m : float, default 200.0
        Grid cell size in metres.

    Returns
    -------
    places : ndarray of shape (n_ids, k, 2) float64
        ``n_ids = pseudonym.max() + 1``; NaN where a pseudonym has fewer than ``j + 1`` places.
    support : ndarray of shape (n_ids, k) float64
        Share of the pseudonym's total weight within ``1.5 * cell_m`` of each place (0 where NaN).
    """
    check_param("k", k, "top_places", Interval(int, 1, None, "left"))
    check_param("cell_m", cell_m, "top_places", _CELL)
    pid = np.asarray(pseudonym)
    if pid.ndim != 1 or not np.issubdtype(pid.dtype, np.integer):
        raise ValueError("pseudonym must be a 1-d integer array")
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != pid.shape or y.shape != pid.shape:
        raise ValueError(
            f"pseudonym, x and y must have the same shape; got {pid.shape}, {x.shape}, {y.shape}"
        )
    w = np.ones(len(pid)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != pid.shape or (len(w) and (not np.all(np.isfinite(w)) or w.min() < 0)):
        raise ValueError("weights must be finite, non-negative and of the same shape as pseudonym")
    if len(pid) and pid.min() < 0:
        raise ValueError("pseudonym ids must be non-negative")
    n_ids = int(pid.max()) + 1 if len(pid) else 0
    places = np.full((n_ids, k, 2), np.nan)
    support = np.zeros((n_ids, k))
    keep = w > 0
    pid, x, y, w = pid[keep].astype(np.int64), x[keep], y[keep], w[keep]
    if len(pid) == 0:
        return places, support
    total = np.bincount(pid, weights=w, minlength=n_ids)

    cell = float(cell_m)
    x0, y0 = x.min(), y.min()
    cx = np.floor((x - x0) / cell).astype(np.int64) + 1  # +1: neighbours stay non-negative
    cy = np.floor((y - y0) / cell).astype(np.int64) + 1
    nx, ny = int(cx.max()) + 2, int(cy.max()) + 2
    keys, inverse = np.unique((pid * nx + cx) * ny + cy, return_inverse=True)
    weight = np.bincount(inverse.ravel(), weights=w, minlength=len(keys))
    smooth = np.zeros_like(weight)
    for di in (-1, 0, 1):
        for dj in (-1, 0, 1):
            nb = keys + di * ny + dj
            pos = np.minimum(np.searchsorted(keys, nb), len(keys) - 1)
            found = keys[pos] == nb
            smooth[found] += weight[pos[found]]
    cell_pid = keys // (nx * ny)
    centre_x = x0 + ((keys // ny) % nx - 1 + 0.5) * cell
    centre_y = y0 + (keys % ny - 1 + 0.5) * cell

    alive = np.ones(len(keys), dtype=bool)
    for j in range(k):
        order = np.lexsort((-weight, -smooth, ~alive, cell_pid))  # ties: the fuller cell
        first = np.ones(len(order), dtype=bool)
        first[1:] = cell_pid[order[1:]] != cell_pid[order[:-1]]
        best = order[first]
        best = best[alive[best]]
        ids = cell_pid[best]
        if len(ids) == 0:
            break
        gx = np.full(n_ids, np.nan)
        gy = np.full(n_ids, np.nan)
        gx[ids], gy[ids] = centre_x[best], centre_y[best]
        for radius in (1.5 * np.sqrt(2.0) * cell, 0.75 * cell):  # the 3 x 3 block, then closer
            near = np.hypot(x - gx[pid], y - gy[pid]) <= radius
            sw = np.bincount(pid[near], weights=w[near], minlength=n_ids)
            ok = sw > 0
            gx[ok] = np.bincount(pid[near], weights=(w * x)[near], minlength=n_ids)[ok] / sw[ok]
            gy[ok] = np.bincount(pid[near], weights=(w * y)[near], minlength=n_ids)[ok] / sw[ok]
        near = np.hypot(x - gx[pid], y - gy[pid]) <= 1.5 * cell
        places[ids, j, 0], places[ids, j, 1] = gx[ids], gy[ids]
        support[ids, j] = np.bincount(pid[near], weights=w[near], minlength=n_ids)[ids] / total[ids]
        alive &= ~(np.hypot(centre_x - gx[cell_pid], centre_y - gy[cell_pid]) <= 3.0 * cell)
    return places, support


class HomeInference(Attack):
    """Infer each pseudonymous vehicle's home from raw logs: where does the car spend its nights?

    Parameters
    ----------
    threat_model : ThreatModel
        Must grant ``Access.POOLED_LOGS`` (the raw records that central collection holds).
    cell_m : float, default 200.0
        Grid cell of the place vote, in metres.
    night_hour : int, default 3
        A stay that spans this hour of the night counts one night.
    other_weight : float, default 0.05
        Vote weight of a stay that spans no night (a day at work, an evening out): it only decides
        for a pseudonym with no night at all.
    gap_s : float, default 1800.0
        Without a ``trip`` column, a time gap longer than this between consecutive records of one
        pseudonym starts a new trip.

    Notes
    -----
    The logs' ``timestamp`` is taken as seconds since a local midnight (as in
    :meth:`ppml.data.adas.AdasFleet.pooled_logs`).
    """

    name = "home inference"
    requires = (Access.POOLED_LOGS,)

    def __init__(
        self,
        threat_model: ThreatModel,
        *,
        cell_m: float = 200.0,
        night_hour: int = 3,
        other_weight: float = 0.05,
        gap_s: float = 1_800.0,
    ) -> None:
        super().__init__(threat_model)
        owner = type(self).__name__
        check_param("cell_m", cell_m, owner, _CELL)
        check_param("night_hour", night_hour, owner, Interval(int, 0, 23, "both"))
        check_param("other_weight", other_weight, owner, _NONNEG_REAL)
        check_param("gap_s", gap_s, owner, Interval(float, 0.0, None, "neither"))
        self.cell_m = cell_m
        self.night_hour = night_hour
        self.other_weight = other_weight
        self.gap_s = gap_s

    def stays(self, logs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The stay points of the logs: where each trip ended, and how many nights the car stayed.

        Parameters
        ----------
        logs : mapping of str to ndarray
            At least ``pseudonym``, ``x``, ``y`` and ``timestamp``, one entry per record; ``trip``
            (a trip id) is used when present.

        Returns
        -------
        dict of str to ndarray
            ``pseudonym``, ``x``, ``y``, ``nights`` (float) and ``weight`` per stay point.
        """
        for key in ("pseudonym", "x", "y", "timestamp"):
            if key not in logs:
                raise KeyError(f"{self.name} needs the column {key!r} in the pooled logs")
        pid = np.asarray(logs["pseudonym"])
        t = np.asarray(logs["timestamp"], dtype=np.float64)
        x = np.asarray(logs["x"], dtype=np.float64)
        y = np.asarray(logs["y"], dtype=np.float64)
        trip = np.asarray(logs["trip"]) if "trip" in logs else None
        order = None
        if len(pid) > 1:
            same = pid[1:] == pid[:-1]
            if np.any(pid[1:] < pid[:-1]) or np.any(same & (t[1:] < t[:-1])):
                order = np.lexsort((t, pid))
        if order is not None:
            pid, t, x, y = pid[order], t[order], x[order], y[order]
            trip = None if trip is None else trip[order]

        new = np.ones(len(pid), dtype=bool)
        if len(pid) > 1:
            boundary = pid[1:] != pid[:-1]
            if trip is not None:
                boundary |= trip[1:] != trip[:-1]
            else:
                boundary |= (t[1:] - t[:-1]) > float(self.gap_s)
            new[1:] = boundary
        starts = np.flatnonzero(new)
        ends = np.append(starts[1:] - 1, len(pid) - 1).astype(np.int64)
        trip_pid = pid[starts]
        first_of_id = np.ones(len(starts), dtype=bool)
        first_of_id[1:] = trip_pid[1:] != trip_pid[:-1]
        last_of_id = np.append(first_of_id[1:], True)

        # stay after trip i: from its end to the next trip's start (same pseudonym)
        shift = float(self.night_hour) * 3_600.0
        t_end = t[ends]
        t_next = np.append(t[starts[1:]], np.inf)
        nights = np.floor((t_next - shift) / _DAY_S) - np.floor((t_end - shift) / _DAY_S)
        nights = np.where(last_of_id, 1.0, nights)  # after the last trip: parked for the rest of the period
        w_end = np.where(nights > 0, nights, float(self.other_weight))
        # before the first trip of each pseudonym the car was parked at its start point; a start counts
        # half a night, as the logger's first fix may come some way down the road (GPS cold start)
        return {
            "pseudonym": np.concatenate([trip_pid, trip_pid[first_of_id]]).astype(np.int64),
            "x": np.concatenate([x[ends], x[starts[first_of_id]]]),
            "y": np.concatenate([y[ends], y[starts[first_of_id]]]),
            "nights": np.concatenate([nights, np.ones(int(first_of_id.sum()))]),
            "weight": np.concatenate([w_end, np.full(int(first_of_id.sum()), 0.5)]),
        }

    def run(self, observations: Mapping[str, np.ndarray]) -> AttackResult:
        """Guess the home of every pseudonym in the pooled logs.

        Parameters
        ----------
        observations : mapping of str to ndarray
            The pooled logs (:meth:`ppml.data.adas.AdasFleet.pooled_logs`): ``pseudonym``, ``x``, ``y``,
            ``timestamp`` and optionally ``trip``.

        Returns
        -------
        AttackResult
            ``guesses``: ndarray ``(n_ids, 2)`` of home coordinates, row ``i`` for pseudonym ``i``
            (``n_ids = max pseudonym + 1``; NaN for an id with no records); ``scores``: the confidence
            of each guess in ``[0, 1]`` (share of the night-weighted stays near it).
        """
        start = time.perf_counter()
        stays = self.stays(observations)
        places, support = top_places(
            stays["pseudonym"],
            stays["x"],
            stays["y"],
            weights=stays["weight"],
            k=1,
            cell_m=float(self.cell_m),
        )
        return AttackResult(
            attack=self.name,
            threat_model=self.threat_model,
            scores=support[:, 0],
            guesses=places[:, 0, :],
            details={
                "n_pseudonyms": int(np.count_nonzero(np.isfinite(places[:, 0, 0]))),
                "n_stays": len(stays["pseudonym"]),
                "cell_m": float(self.cell_m),
                "night_hour": int(self.night_hour),
            },
            seconds=time.perf_counter() - start,
        )


def score_home_inference(result: AttackResult, true_home: Any, radius_m: float = 250.0) -> AttackResult:
    """Score home guesses against the true homes (ground truth, for analysis only).

    Parameters
    ----------
    result : AttackResult
        From :meth:`HomeInference.run`; ``guesses`` of shape ``(n, 2)``.
    true_home : array-like of shape (n, 2)
        The true home of each pseudonym, in the same order (``AdasFleet.home``).
    radius_m : float, default 250.0
        A guess within this distance counts as locating the home.

    Returns
    -------
    AttackResult
        A copy with metrics ``share_within_radius`` (a missing guess counts as a miss),
        ``median_error_m``, ``mean_confidence`` and ``radius_m``; ``details["error_m"]`` holds the
        per-pseudonym error (``inf`` where there is no guess).
    """
    check_param("radius_m", radius_m, "score_home_inference", Interval(float, 0.0, None, "neither"))
    guesses = np.asarray(result.guesses, dtype=np.float64)
    truth = np.asarray(true_home, dtype=np.float64)
    if guesses.ndim != 2 or guesses.shape[1] != 2 or truth.shape != guesses.shape:
        raise ValueError(
            f"guesses and true_home must both have shape (n, 2); got {guesses.shape} and {truth.shape}"
        )
    if len(truth) == 0:
        raise ValueError("no homes to score")
    error = np.hypot(guesses[:, 0] - truth[:, 0], guesses[:, 1] - truth[:, 1])
    error = np.where(np.isfinite(error), error, np.inf)
    scored = result.with_metrics(
        share_within_radius=float(np.mean(error <= radius_m)),
        median_error_m=float(np.median(error)),
        mean_confidence=float(np.mean(result.scores)) if result.scores is not None else float("nan"),
        radius_m=float(radius_m),
    )
    return replace(scored, details={**result.details, "error_m": error})


# --------------------------------------------------------------------------- trace re-identification


def _sorted_trace(logs: Mapping[str, np.ndarray], gap_s: float, owner: str) -> dict[str, np.ndarray]:
    """The logs sorted by pseudonym and time, with pseudonym indices and where each moving stretch is.

    ``moving[j]``: record ``j + 1`` continues the trip of record ``j`` (same pseudonym, same trip, or a gap
    of at most ``gap_s`` without a ``trip`` column); otherwise the car is parked at record ``j`` until
    record ``j + 1``.
    """
    for key in ("pseudonym", "x", "y", "timestamp"):
        if key not in logs:
            raise KeyError(f"{owner} needs the column {key!r} in the pooled logs")
    pid = np.asarray(logs["pseudonym"])
    if pid.ndim != 1 or not np.issubdtype(pid.dtype, np.integer):
        raise ValueError("pseudonym must be a 1-d integer array")
    t = np.asarray(logs["timestamp"], dtype=np.float64)
    x = np.asarray(logs["x"], dtype=np.float64)
    y = np.asarray(logs["y"], dtype=np.float64)
    if len(pid) == 0:
        raise ValueError(f"{owner} needs non-empty pooled logs")
    labels, idx = np.unique(pid, return_inverse=True)
    idx = idx.ravel().astype(np.int64)
    order = np.lexsort((t, idx))
    idx, t, x, y = idx[order], t[order], x[order], y[order]
    same = idx[1:] == idx[:-1]
    if "trip" in logs:
        trip = np.asarray(logs["trip"])[order]
        moving = same & (trip[1:] == trip[:-1])
    else:
        moving = same & ((t[1:] - t[:-1]) <= gap_s)
    starts = np.searchsorted(idx, np.arange(len(labels)), side="left")
    ends = np.searchsorted(idx, np.arange(len(labels)), side="right")
    return {
        "labels": labels.astype(np.int64),
        "idx": idx,
        "t": t,
        "x": x,
        "y": y,
        "moving": np.append(moving, False),
        "starts": starts,
        "ends": ends,
    }


def _segment_distance(tr: dict[str, np.ndarray], j: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Distance from points ``(px, py)`` to where the car is between record ``j`` and the next one."""
    x0, y0 = tr["x"][j], tr["y"][j]
    mov = tr["moving"][j]
    j1 = np.where(mov, j + 1, j)
    dx, dy = tr["x"][j1] - x0, tr["y"][j1] - y0
    len2 = dx * dx + dy * dy
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.where(len2 > 0, ((px - x0) * dx + (py - y0) * dy) / len2, 0.0)
    u = np.clip(u, 0.0, 1.0)
    return np.hypot(px - (x0 + u * dx), py - (y0 + u * dy))


def make_sightings(
    logs: Mapping[str, np.ndarray],
    pseudonyms: Any,
    n_sightings: int,
    *,
    spatial_noise_m: float = 0.0,
    time_noise_s: float = 0.0,
    seed: int | np.random.SeedSequence | np.random.Generator,
    gap_s: float = 1_800.0,
) -> dict[str, np.ndarray]:
    """Sightings of known people: where their car truly was at random moments, observed with noise.

    The generator reads the logs as ground truth: at a uniformly drawn time of the logged period, the car
    is where its trace puts it (linear between the fixes of a trip, parked at a trip's end until the next
    trip, at its first fix before the first trip). Most sightings therefore fall where cars spend their
    time: at home, at work.

    Parameters
    ----------
    logs : mapping of str to ndarray
        ``pseudonym``, ``x``, ``y``, ``timestamp`` and optionally ``trip``.
    pseudonyms : array-like of int
        The traces whose owners are seen (distinct); the sightings' ``target`` is the position in this
        array, not the pseudonym.
    n_sightings : int
        Sightings per person.
    spatial_noise_m : float, default 0.0
        Standard deviation of the Gaussian error of each coordinate, in metres.
    time_noise_s : float, default 0.0
        Reported times are off by a uniform draw in ``[-time_noise_s, time_noise_s]``.
    seed : int, SeedSequence or numpy Generator
    gap_s : float, default 1800.0
        Without a ``trip`` column, a gap longer than this ends a trip.

    Returns
    -------
    dict of str to ndarray
        ``target`` (int64, ``0 .. len(pseudonyms) - 1``), ``x``, ``y``, ``timestamp`` (float64), one entry
        per sighting, grouped by target.
    """
    owner = "make_sightings"
    check_param("n_sightings", n_sightings, owner, Interval(int, 1, None, "left"))
    check_param("spatial_noise_m", spatial_noise_m, owner, _NONNEG_REAL)
    check_param("time_noise_s", time_noise_s, owner, _NONNEG_REAL)
    rng = as_generator(seed)
    tr = _sorted_trace(logs, float(gap_s), owner)
    want = np.asarray(pseudonyms, dtype=np.int64).ravel()
    if len(np.unique(want)) != len(want):
        raise ValueError("pseudonyms must be distinct")
    at = np.searchsorted(tr["labels"], want)
    at = np.minimum(at, len(tr["labels"]) - 1)
    if np.any(tr["labels"][at] != want):
        raise ValueError("every pseudonym must have records in the logs")
    n = len(want) * int(n_sightings)
    target = np.repeat(np.arange(len(want), dtype=np.int64), n_sightings)
    who = at[target]
    when = rng.uniform(tr["t"].min(), tr["t"].max(), size=n)
    s, e = tr["starts"][who], tr["ends"][who]
    t0, span = tr["t"].min(), tr["t"].max() - tr["t"].min() + 1.0
    key = tr["idx"] * span + (tr["t"] - t0)
    j = np.searchsorted(key, who * span + (when - t0), side="right") - 1  # the last fix at or before
    j = np.clip(j, s, e - 1)
    before = when < tr["t"][j]  # before the first fix: parked there
    mov = tr["moving"][j] & ~before
    j1 = np.where(mov, j + 1, j)
    dt = tr["t"][j1] - tr["t"][j]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.where(mov & (dt > 0), (when - tr["t"][j]) / dt, 0.0)
    u = np.clip(u, 0.0, 1.0)
    x = tr["x"][j] + u * (tr["x"][j1] - tr["x"][j])
    y = tr["y"][j] + u * (tr["y"][j1] - tr["y"][j])
    if spatial_noise_m > 0:
        x = x + rng.normal(0.0, float(spatial_noise_m), n)
        y = y + rng.normal(0.0, float(spatial_noise_m), n)
    if time_noise_s > 0:
        when = when + rng.uniform(-float(time_noise_s), float(time_noise_s), n)
    return {"target": target, "x": x, "y": y, "timestamp": when}


class TraceReidentification(Attack):
    """Link known people to pseudonymous traces from a few sightings (de Montjoye et al. 2013).

    A pseudonym is *consistent* with a sighting ``(x, y, t)`` when its trace comes within ``radius_m``
    of ``(x, y)`` at some time in ``[t - time_tolerance_s, t + time_tolerance_s]`` (between two fixes of
    a trip the car is taken to move on the straight line; between trips it is parked at the trip's end;
    before its first fix, at that fix). For each person the attack counts the sightings each pseudonym
    is consistent with and names the pseudonym with the most, if it alone has that count and the count
    reaches ``min_matched``; otherwise it declines (:data:`~ppml.attacks.deanonymization.NO_MATCH`).

    Parameters
    ----------
    threat_model : ThreatModel
        Must grant ``Access.POOLED_LOGS`` (the pseudonymised trace table). The sightings are passed to
        :meth:`fit`.
    radius_m : float, default 500.0
        Spatial tolerance of a sighting, in metres (the adversary sets it from its sightings' precision).
    time_tolerance_s : float, default 1800.0
        Temporal tolerance of a sighting, in seconds.
    min_matched : int, default 1
        Fewest consistent sightings for a name.
    gap_s : float, default 1800.0
        Without a ``trip`` column, a gap longer than this between fixes ends a trip.

    Notes
    -----
    The work grows with (sightings) x (pseudonyms) x (fixes per pseudonym in a time window); it runs in
    blocks of sightings, without Python loops over pseudonyms.
    """

    name = "trace re-identification"
    requires = (Access.POOLED_LOGS,)

    def __init__(
        self,
        threat_model: ThreatModel,
        *,
        radius_m: float = 500.0,
        time_tolerance_s: float = 1_800.0,
        min_matched: int = 1,
        gap_s: float = 1_800.0,
    ) -> None:
        super().__init__(threat_model)
        owner = type(self).__name__
        check_param("radius_m", radius_m, owner, Interval(float, 0.0, None, "neither"))
        check_param("time_tolerance_s", time_tolerance_s, owner, _NONNEG_REAL)
        check_param("min_matched", min_matched, owner, Interval(int, 1, None, "left"))
        check_param("gap_s", gap_s, owner, Interval(float, 0.0, None, "neither"))
        self.radius_m = radius_m
        self.time_tolerance_s = time_tolerance_s
        self.min_matched = min_matched
        self.gap_s = gap_s

    def fit(self, auxiliary: Mapping[str, np.ndarray] | None = None) -> TraceReidentification:
        """Take the sightings: a mapping with ``target``, ``x``, ``y`` and ``timestamp`` per sighting
        (:func:`make_sightings`); targets are numbered ``0 .. n_targets - 1``."""
        if auxiliary is None:
            raise TypeError(f"{self.name} needs the sightings of the targets; got None")
        for key in ("target", "x", "y", "timestamp"):
            if key not in auxiliary:
                raise KeyError(f"{self.name} needs the column {key!r} in the sightings")
        tgt = np.asarray(auxiliary["target"], dtype=np.int64)
        if tgt.ndim != 1 or (len(tgt) and tgt.min() < 0):
            raise ValueError("sighting targets must be a 1-d array of non-negative ints")
        cols = {k: np.asarray(auxiliary[k], dtype=np.float64) for k in ("x", "y", "timestamp")}
        if any(v.shape != tgt.shape or not np.all(np.isfinite(v)) for v in cols.values()):
            raise ValueError("sighting x, y and timestamp must be finite and of the same shape as target")
        self.sightings_ = {"target": tgt, **cols}
        self.n_targets_ = int(tgt.max()) + 1 if len(tgt) else 0
        return self

    def consistency(self, logs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Which pseudonyms each sighting is consistent with.

        Returns
        -------
        sighting, pseudonym_index : ndarray of int64
            One entry per consistent pair; ``pseudonym_index`` indexes the sorted distinct pseudonyms.
        """
        sig = getattr(self, "sightings_", None)
        if sig is None:
            raise RuntimeError(f"{self.name} has no sightings; call fit(sightings) first")
        tr = _sorted_trace(logs, float(self.gap_s), self.name)
        n_ids = len(tr["labels"])
        span = tr["t"].max() - tr["t"].min() + 1.0
        key = tr["idx"] * span + (tr["t"] - tr["t"].min())
        tol = float(self.time_tolerance_s)
        n_sig = len(sig["target"])
        out_s, out_p = [], []
        block = max(1, 1_000_000 // max(n_ids, 1))
        for s0 in range(0, n_sig, block):
            s_idx = np.arange(s0, min(n_sig, s0 + block), dtype=np.int64)
            si = np.repeat(s_idx, n_ids)
            pi = np.tile(np.arange(n_ids, dtype=np.int64), len(s_idx))
            a = np.clip(sig["timestamp"][si] - tol - tr["t"].min(), 0.0, span - 1.0)
            b = np.clip(sig["timestamp"][si] + tol - tr["t"].min(), 0.0, span - 1.0)
            lo = np.searchsorted(key, pi * span + a, side="right") - 1
            hi = np.searchsorted(key, pi * span + b, side="right")
            lo = np.maximum(lo, tr["starts"][pi])
            hi = np.maximum(hi, lo + 1)
            pos, pair = _expand_ranges(lo, hi - lo)
            dist = _segment_distance(tr, pos, sig["x"][si[pair]], sig["y"][si[pair]])
            near = np.zeros(len(si), dtype=bool)
            near[pair[dist <= float(self.radius_m)]] = True
            out_s.append(si[near])
            out_p.append(pi[near])
        return np.concatenate(out_s), np.concatenate(out_p)

    def run(self, observations: Mapping[str, np.ndarray]) -> AttackResult:
        """Name the pseudonym of each sighted person, or decline.

        Parameters
        ----------
        observations : mapping of str to ndarray
            The pooled logs: ``pseudonym``, ``x``, ``y``, ``timestamp`` and optionally ``trip``.

        Returns
        -------
        AttackResult
            ``guesses``: int64 ``(n_targets,)`` pseudonym or ``NO_MATCH``; ``scores``: the share of the
            target's sightings that the best pseudonym is consistent with. ``details``: ``best`` (best
            pseudonym, tie or not; ``NO_MATCH`` where none fits any sighting), ``n_tied`` (pseudonyms
            sharing the best count) and ``n_consistent_all`` (pseudonyms consistent with every
            sighting: the anonymity set).
        """
        start = time.perf_counter()
        sig_s, sig_p = self.consistency(observations)
        labels = np.unique(np.asarray(observations["pseudonym"]))
        n_ids, n_t = len(labels), self.n_targets_
        target = self.sightings_["target"]
        n_sight = np.bincount(target, minlength=n_t)
        # sparse counts: how many of a target's sightings each pseudonym is consistent with
        pair_key, count = np.unique(target[sig_s] * n_ids + sig_p, return_counts=True)
        pair_t, pair_p = pair_key // max(n_ids, 1), pair_key % max(n_ids, 1)
        order = np.lexsort((-count, pair_t))  # per target, the largest count first
        first = np.ones(len(order), dtype=bool)
        first[1:] = pair_t[order[1:]] != pair_t[order[:-1]]
        top = np.zeros(n_t, dtype=np.int64)
        best = np.zeros(n_t, dtype=np.int64)
        top[pair_t[order[first]]] = count[order[first]]
        best[pair_t[order[first]]] = pair_p[order[first]]
        n_tied = np.bincount(pair_t[count == top[pair_t]], minlength=n_t)
        n_all = np.bincount(pair_t[count == n_sight[pair_t]], minlength=n_t)
        accept = (n_tied == 1) & (top >= int(self.min_matched))
        best_id = np.where(top > 0, labels[best], NO_MATCH)
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(n_sight > 0, top / n_sight, 0.0)
        return AttackResult(
            attack=self.name,
            threat_model=self.threat_model,
            scores=share,
            guesses=np.where(accept, best_id, NO_MATCH).astype(np.int64),
            details={
                "best": best_id,
                "n_tied": n_tied,
                "n_consistent_all": n_all,
                "n_targets": int(n_t),
                "n_pseudonyms": int(n_ids),
                "radius_m": float(self.radius_m),
                "time_tolerance_s": float(self.time_tolerance_s),
            },
            seconds=time.perf_counter() - start,
        )
