"""Scoring membership inference: ROC, AUC, TPR at low FPR, advantage, and their confidence intervals.

Conventions used throughout
---------------------------
* The positive class is **member**: ``is_member[i]`` is ``True`` (or ``1``) when target ``i`` was in
  the training set.
* **Higher score means "more likely a member"**. An attack flags target ``i`` at threshold ``t`` when
  ``scores[i] >= t``.
* Ground truth enters only here (:func:`score_membership`); attacks never see it.

Everything is vectorised numpy (the bootstrap included); scikit-learn is used only in the tests, as
the reference implementation.

Low-FPR numbers follow Carlini et al. (2022): the TPR reported at a target FPR is the largest TPR
over ROC points whose FPR is at most the target. With ``n`` non-members the smallest non-zero FPR
is ``1 / n``; below that the reported TPR is the TPR at FPR 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from .._rng import SeedLike, as_generator
from .._validation import POSITIVE_INT, UNIT_OPEN, Interval, check_param
from .base import AttackResult

__all__ = [
    "roc_curve",
    "auc",
    "tpr_at_fpr",
    "advantage",
    "balanced_accuracy_best_threshold",
    "balanced_accuracy_at_threshold",
    "clopper_pearson",
    "tpr_at_fpr_ci",
    "auc_bootstrap_ci",
    "auc_delong_ci",
    "fpr_metric_name",
    "score_membership",
    "plot_roc",
]

_FPR_TARGET = Interval(float, 0, 1, "both")
_ROC_POINTS = Interval(int, 0, None, "left")
# Elements per chunk of the vectorised bootstrap (bounds its memory to a few tens of MB).
_BOOTSTRAP_CHUNK_ELEMENTS = 1 << 21


# --------------------------------------------------------------------------- input checks


def _check_scores_labels(scores: Any, is_member: Any, owner: str) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(scores float64, is_member bool)`` or raise a ``ValueError`` naming what is wrong."""
    s = np.asarray(scores, dtype=np.float64)
    m = np.asarray(is_member)
    if s.ndim != 1:
        raise ValueError(f"{owner}: scores must be a 1-D array, got shape {s.shape}.")
    if m.shape != s.shape:
        raise ValueError(f"{owner}: is_member must have the same shape as scores {s.shape}, got {m.shape}.")
    if m.dtype != np.bool_:
        if not (np.issubdtype(m.dtype, np.number) and np.isin(m, (0, 1)).all()):
            raise ValueError(f"{owner}: is_member must be boolean or 0/1 (True / 1 = member).")
        m = m.astype(np.bool_)
    bad = int(np.count_nonzero(~np.isfinite(s)))
    if bad:
        raise ValueError(f"{owner}: scores must be finite; {bad} of {s.size} are NaN or infinite.")
    n_pos = int(np.count_nonzero(m))
    if n_pos == 0 or n_pos == m.size:
        raise ValueError(
            f"{owner} needs at least one member and one non-member; got {n_pos} members and "
            f"{m.size - n_pos} non-members."
        )
    return s, m


def _check_confidence(confidence: float, owner: str) -> float:
    return float(check_param("confidence", confidence, owner, UNIT_OPEN))


# --------------------------------------------------------------------------- ROC


@dataclass(frozen=True)
class _RocCounts:
    """ROC as integer counts: the attack flags ``score >= thresholds[k]`` and gets ``tps[k]``/``fps[k]``."""

    tps: np.ndarray  # int64, non-decreasing, tps[0] == 0
    fps: np.ndarray  # int64, non-decreasing, fps[0] == 0
    thresholds: np.ndarray  # float64, decreasing, thresholds[0] == +inf
    n_pos: int
    n_neg: int

    @property
    def fpr(self) -> np.ndarray:
        return self.fps / self.n_neg

    @property
    def tpr(self) -> np.ndarray:
        return self.tps / self.n_pos


def _roc_counts(s: np.ndarray, m: np.ndarray) -> _RocCounts:
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    # One ROC point per distinct score: the last position of each group of tied scores.
    ends = np.flatnonzero(np.r_[s_sorted[1:] != s_sorted[:-1], True])
    tps = np.cumsum(m[order], dtype=np.int64)[ends]
    fps = (ends + 1).astype(np.int64) - tps
    return _RocCounts(
        tps=np.r_[np.int64(0), tps],
        fps=np.r_[np.int64(0), fps],
        thresholds=np.r_[np.inf, s_sorted[ends]],
        n_pos=int(tps[-1]),
        n_neg=int(fps[-1]),
    )


def roc_curve(scores: Any, is_member: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The full ROC curve of a membership score, one point per distinct score.

    Parameters
    ----------
    scores : array-like of shape (n,)
        Finite scores; higher means "more likely a member".
    is_member : array-like of shape (n,), bool or 0/1
        Ground truth; needs at least one member and one non-member.

    Returns
    -------
    fpr, tpr : ndarray of shape (k + 1,)
        False and true positive rates when flagging ``scores >= thresholds``; both start at 0 and end at 1.
    thresholds : ndarray of shape (k + 1,)
        Decreasing; ``thresholds[0]`` is ``+inf`` (flag nothing), then each distinct score. Tied scores
        are one threshold, so ties give one diagonal step, never an optimistic staircase.

    Notes
    -----
    Equal to ``sklearn.metrics.roc_curve(is_member, scores, drop_intermediate=False)``.
    """
    c = _roc_counts(*_check_scores_labels(scores, is_member, "roc_curve"))
    return c.fpr, c.tpr, c.thresholds


def _auc(c: _RocCounts) -> float:
    # Trapezoidal area in integer counts: equal to the Mann-Whitney U statistic with ties counted 1/2.
    area2 = np.sum(np.diff(c.fps) * (c.tps[1:] + c.tps[:-1]), dtype=np.float64)
    return float(area2 / (2.0 * c.n_pos * c.n_neg))


def auc(scores: Any, is_member: Any) -> float:
    """Area under the ROC curve: the probability that a random member outscores a random non-member.

    Ties count one half (the trapezoidal area of :func:`roc_curve`); equal to
    ``sklearn.metrics.roc_auc_score(is_member, scores)``.
    """
    return _auc(_roc_counts(*_check_scores_labels(scores, is_member, "auc")))


def _tpr_index(c: _RocCounts, fpr: float) -> int:
    # fpr is non-decreasing and fpr[0] == 0 <= target, so the index exists.
    return int(np.searchsorted(c.fpr, fpr, side="right")) - 1


def tpr_at_fpr(scores: Any, is_member: Any, fpr: float) -> float:
    """The largest TPR over ROC points whose FPR is at most ``fpr`` (as Carlini et al. 2022 report it).

    Parameters
    ----------
    scores, is_member
        As in :func:`roc_curve`.
    fpr : float in [0, 1]
        The target false positive rate. With ``n`` non-members, targets below ``1 / n`` give the TPR
        at FPR 0.
    """
    check_param("fpr", fpr, "tpr_at_fpr", _FPR_TARGET)
    c = _roc_counts(*_check_scores_labels(scores, is_member, "tpr_at_fpr"))
    return float(c.tpr[_tpr_index(c, fpr)])


def _advantage_index(c: _RocCounts) -> int:
    # max TPR - FPR, compared exactly in integers: tps / n_pos - fps / n_neg.
    return int(np.argmax(c.tps * c.n_neg - c.fps * c.n_pos))


def advantage(scores: Any, is_member: Any) -> float:
    """Membership advantage (Yeom et al. 2018): ``max_t TPR(t) - FPR(t)`` over all thresholds.

    At least 0 (the "flag nothing" threshold); 1 for perfectly separated scores. Equal to
    ``2 * balanced_accuracy - 1`` at the best threshold.
    """
    c = _roc_counts(*_check_scores_labels(scores, is_member, "advantage"))
    j = _advantage_index(c)
    return float(c.tpr[j] - c.fpr[j])


def balanced_accuracy_best_threshold(scores: Any, is_member: Any) -> tuple[float, float]:
    """The best balanced accuracy ``(TPR + TNR) / 2`` over thresholds, and that threshold.

    Returns
    -------
    balanced_accuracy : float
        In [0.5, 1]. Choosing the threshold with the ground truth makes this an optimistic (oracle)
        number; :func:`balanced_accuracy_at_threshold` scores a threshold the adversary chose itself.
    threshold : float
        Flag ``scores >= threshold``; the highest such threshold when several tie
        (``+inf`` when no threshold beats flagging nothing).
    """
    c = _roc_counts(*_check_scores_labels(scores, is_member, "balanced_accuracy_best_threshold"))
    j = _advantage_index(c)
    return float((c.tpr[j] + 1.0 - c.fpr[j]) / 2.0), float(c.thresholds[j])


def balanced_accuracy_at_threshold(scores: Any, is_member: Any, threshold: float) -> float:
    """Balanced accuracy ``(TPR + TNR) / 2`` when flagging ``scores >= threshold``."""
    s, m = _check_scores_labels(scores, is_member, "balanced_accuracy_at_threshold")
    flagged = s >= float(threshold)
    tpr = np.count_nonzero(flagged & m) / np.count_nonzero(m)
    tnr = np.count_nonzero(~flagged & ~m) / np.count_nonzero(~m)
    return float((tpr + tnr) / 2.0)


# --------------------------------------------------------------------------- confidence intervals


def clopper_pearson(k: int, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided confidence interval of a binomial proportion ``k / n``.

    Parameters
    ----------
    k : int
        Successes (for a TPR: members flagged), ``0 <= k <= n``.
    n : int
        Trials (for a TPR: members), at least 1.
    confidence : float in (0, 1)
        Coverage; each tail gets ``(1 - confidence) / 2``.

    Returns
    -------
    low, high : float
        ``low = 0`` when ``k = 0`` and ``high = 1`` when ``k = n``; always ``low <= k / n <= high``.
    """
    check_param("n", n, "clopper_pearson", POSITIVE_INT)
    check_param("k", k, "clopper_pearson", Interval(int, 0, n, "both"))
    alpha = 1.0 - _check_confidence(confidence, "clopper_pearson")
    k, n = int(k), int(n)
    low = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2.0, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1.0 - alpha / 2.0, k + 1, n - k))
    return low, high


def _tpr_at_fpr_ci(c: _RocCounts, fpr: float, confidence: float) -> tuple[float, float, float]:
    j = _tpr_index(c, fpr)
    k = int(c.tps[j])
    low, high = clopper_pearson(k, c.n_pos, confidence=confidence)
    return k / c.n_pos, low, high


def tpr_at_fpr_ci(
    scores: Any, is_member: Any, fpr: float, *, confidence: float = 0.95
) -> tuple[float, float, float]:
    """TPR at a target FPR (as :func:`tpr_at_fpr`) with a Clopper-Pearson interval.

    The interval treats the threshold (chosen for FPR <= ``fpr``) as fixed and covers the binomial
    sampling of the members it flags; it does not account for the threshold's own variability.

    Returns
    -------
    tpr, low, high : float
    """
    check_param("fpr", fpr, "tpr_at_fpr_ci", _FPR_TARGET)
    _check_confidence(confidence, "tpr_at_fpr_ci")
    c = _roc_counts(*_check_scores_labels(scores, is_member, "tpr_at_fpr_ci"))
    return _tpr_at_fpr_ci(c, fpr, confidence)


def _bootstrap_aucs_from_counts(
    pos: np.ndarray, neg: np.ndarray, w_pos: np.ndarray, w_neg: np.ndarray
) -> np.ndarray:
    """AUC of each bootstrap resample given as multiplicities.

    ``w_pos[b, i]`` is how often member ``i`` appears in resample ``b`` (rows sum to ``len(pos)``);
    likewise ``w_neg``. The AUC of resample ``b`` is
    ``sum_i w_pos[b, i] * (#neg below pos_i + #neg tied / 2) / (n_pos * n_neg)``, where the counts of
    non-members are weighted by ``w_neg[b]``; with the non-members sorted once, those counts are
    cumulative sums of ``w_neg`` read at fixed positions, so no resample is ever sorted.
    """
    order = np.argsort(neg, kind="stable")
    neg_sorted = neg[order]
    lo = np.searchsorted(neg_sorted, pos, side="left")
    hi = np.searchsorted(neg_sorted, pos, side="right")
    cum = np.zeros((w_neg.shape[0], neg.size + 1), dtype=np.float64)
    np.cumsum(w_neg[:, order], axis=1, out=cum[:, 1:])
    below = cum[:, lo]
    tied = cum[:, hi] - below
    return np.einsum("bi,bi->b", w_pos, below + 0.5 * tied) / (pos.size * neg.size)


def _multiplicities(rng: np.random.Generator, n_resamples: int, n: int) -> np.ndarray:
    """``(n_resamples, n)`` counts of a resample of size ``n`` with replacement, per row."""
    idx = rng.integers(0, n, size=(n_resamples, n))
    idx += (np.arange(n_resamples) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=n_resamples * n).reshape(n_resamples, n).astype(np.float64)


def auc_bootstrap_ci(
    scores: Any,
    is_member: Any,
    *,
    rng: SeedLike,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
) -> tuple[float, float]:
    """Percentile confidence interval of the AUC from a stratified bootstrap.

    Members and non-members are resampled separately (with replacement, keeping both counts), so
    every resample has both classes. Vectorised: resamples are represented by multiplicities and
    scored without sorting (see ``_bootstrap_aucs_from_counts``), in chunks of bounded memory.

    Parameters
    ----------
    scores, is_member
        As in :func:`roc_curve`.
    rng : int, SeedSequence or numpy Generator
        Source of the resampling; the same seed gives the same interval.
    n_bootstrap : int
        Number of resamples.
    confidence : float in (0, 1)

    Returns
    -------
    low, high : float
    """
    check_param("n_bootstrap", n_bootstrap, "auc_bootstrap_ci", POSITIVE_INT)
    alpha = 1.0 - _check_confidence(confidence, "auc_bootstrap_ci")
    s, m = _check_scores_labels(scores, is_member, "auc_bootstrap_ci")
    gen = as_generator(rng)
    pos, neg = s[m], s[~m]
    chunk = max(1, _BOOTSTRAP_CHUNK_ELEMENTS // s.size)
    aucs = np.empty(n_bootstrap, dtype=np.float64)
    for start in range(0, n_bootstrap, chunk):
        b = min(chunk, n_bootstrap - start)
        w_pos = _multiplicities(gen, b, pos.size)
        w_neg = _multiplicities(gen, b, neg.size)
        aucs[start : start + b] = _bootstrap_aucs_from_counts(pos, neg, w_pos, w_neg)
    low, high = np.quantile(aucs, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


def auc_delong_ci(scores: Any, is_member: Any, *, confidence: float = 0.95) -> tuple[float, float]:
    """Normal-approximation confidence interval of the AUC with DeLong et al.'s (1988) variance.

    Deterministic (no resampling); used by :func:`score_membership` when no ``rng`` is given.
    Clipped to [0, 1]; it collapses to a point for perfectly separated scores.
    """
    alpha = 1.0 - _check_confidence(confidence, "auc_delong_ci")
    s, m = _check_scores_labels(scores, is_member, "auc_delong_ci")
    pos, neg = s[m], s[~m]
    r_all = stats.rankdata(s)
    # Structural components: for each member, the share of non-members it beats (ties 1/2), and
    # for each non-member the share of members that beat it.
    v_pos = (r_all[m] - stats.rankdata(pos)) / neg.size
    v_neg = 1.0 - (r_all[~m] - stats.rankdata(neg)) / pos.size
    a = float(v_pos.mean())
    var = 0.0
    if pos.size > 1:
        var += float(v_pos.var(ddof=1)) / pos.size
    if neg.size > 1:
        var += float(v_neg.var(ddof=1)) / neg.size
    half = float(stats.norm.ppf(1.0 - alpha / 2.0)) * math.sqrt(var)
    return max(0.0, a - half), min(1.0, a + half)


# --------------------------------------------------------------------------- scoring an AttackResult


def fpr_metric_name(fpr: float) -> str:
    """The metric key for the TPR at a target FPR: ``0.01 -> "tpr_at_1pct_fpr"``, ``0.001 -> "tpr_at_0.1pct_fpr"``."""
    return f"tpr_at_{fpr * 100:g}pct_fpr"


def _roc_subset(c: _RocCounts, max_points: int) -> dict[str, list[float]]:
    """At most ``max_points`` actual ROC points, spaced evenly in log FPR (dense where low-FPR plots look)."""
    fpr, tpr = c.fpr, c.tpr
    if fpr.size <= max_points:
        idx = np.arange(fpr.size)
    else:
        grid = np.logspace(math.log10(1.0 / c.n_neg), 0.0, max(1, max_points - 2))
        # For each grid FPR the ROC point with the largest TPR at FPR <= grid value.
        idx = np.searchsorted(fpr, grid, side="right") - 1
        idx = np.unique(np.r_[0, idx, fpr.size - 1])
    return {
        "fpr": [float(f"{x:.6g}") for x in fpr[idx]],
        "tpr": [float(f"{x:.6g}") for x in tpr[idx]],
    }


def score_membership(
    result: AttackResult,
    is_member: Any,
    *,
    fprs: Sequence[float] = (0.01, 0.001),
    rng: SeedLike = None,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    roc_points: int = 100,
) -> AttackResult:
    """Score a membership attack against the ground truth; return a copy with metrics filled in.

    Parameters
    ----------
    result : AttackResult
        The attack's output; ``result.scores[i]`` is the score of target ``i`` (higher = member).
    is_member : array-like of shape (n,), bool or 0/1
        Ground truth, aligned with ``result.scores``. Used here only, for analysis.
    fprs : sequence of float in [0, 1]
        Target FPRs at which the TPR is reported (``tpr_at_1pct_fpr``, ``tpr_at_0.1pct_fpr``, ...).
    rng : int, SeedSequence, numpy Generator or None
        Seeds the stratified bootstrap of the AUC interval. ``None`` uses DeLong's deterministic
        interval instead; ``details["auc_ci_method"]`` says which.
    n_bootstrap : int
        Bootstrap resamples (when ``rng`` is given).
    confidence : float in (0, 1)
        Coverage of every interval.
    roc_points : int
        Keep at most this many ROC points in ``details["roc"]`` (lists, for :func:`plot_roc` and the
        report); 0 keeps none.

    Returns
    -------
    AttackResult
        With metrics ``auc``, ``auc_ci_low``, ``auc_ci_high``, ``advantage`` (max TPR - FPR),
        ``balanced_accuracy`` (at the best threshold, an oracle choice), and per target FPR
        ``tpr_at_{p}pct_fpr`` with ``_ci_low`` / ``_ci_high`` (Clopper-Pearson). When the attack recorded
        its own decision threshold in ``details["score_threshold"]``, also
        ``balanced_accuracy_at_threshold``, ``tpr_at_threshold`` and ``fpr_at_threshold``.
        ``details`` gains ``n_members``, ``n_non_members``, ``confidence``, ``auc_ci_method`` and ``roc``.
    """
    owner = "score_membership"
    if not isinstance(result, AttackResult):
        raise TypeError(f"{owner} expects an AttackResult, got {type(result).__name__}.")
    if result.scores is None:
        raise ValueError(f"{owner}: the result of {result.attack!r} holds no scores to score.")
    for f in fprs:
        check_param("fprs", f, owner, _FPR_TARGET)
    check_param("roc_points", roc_points, owner, _ROC_POINTS)
    _check_confidence(confidence, owner)
    s, m = _check_scores_labels(result.scores, is_member, owner)
    c = _roc_counts(s, m)

    metrics: dict[str, float] = {"auc": _auc(c)}
    if rng is None:
        metrics["auc_ci_low"], metrics["auc_ci_high"] = auc_delong_ci(s, m, confidence=confidence)
        method = "DeLong"
    else:
        metrics["auc_ci_low"], metrics["auc_ci_high"] = auc_bootstrap_ci(
            s, m, rng=rng, n_bootstrap=n_bootstrap, confidence=confidence
        )
        method = f"stratified bootstrap, {n_bootstrap} resamples, percentile"
    j = _advantage_index(c)
    metrics["advantage"] = float(c.tpr[j] - c.fpr[j])
    metrics["balanced_accuracy"] = float((c.tpr[j] + 1.0 - c.fpr[j]) / 2.0)
    for f in fprs:
        key = fpr_metric_name(f)
        metrics[key], metrics[f"{key}_ci_low"], metrics[f"{key}_ci_high"] = _tpr_at_fpr_ci(c, f, confidence)

    threshold = result.details.get("score_threshold")
    if threshold is not None:
        flagged = s >= float(threshold)
        tpr_t = np.count_nonzero(flagged & m) / c.n_pos
        fpr_t = np.count_nonzero(flagged & ~m) / c.n_neg
        metrics["tpr_at_threshold"] = float(tpr_t)
        metrics["fpr_at_threshold"] = float(fpr_t)
        metrics["balanced_accuracy_at_threshold"] = float((tpr_t + 1.0 - fpr_t) / 2.0)

    details = dict(result.details)
    details.update(
        n_members=c.n_pos,
        n_non_members=c.n_neg,
        confidence=float(confidence),
        auc_ci_method=method,
    )
    if roc_points:
        details["roc"] = _roc_subset(c, roc_points)
    return replace(result, details=details).with_metrics(**metrics)


# --------------------------------------------------------------------------- plotting


def plot_roc(
    results: Mapping[str, AttackResult],
    path: str | PathLike[str],
    *,
    title: str = "Membership inference ROC",
) -> Path:
    """Draw the log-log ROC curves of scored results (Carlini et al.'s view) and save them.

    Parameters
    ----------
    results : mapping of str to AttackResult
        Legend label -> a result scored by :func:`score_membership` with ``roc_points > 0``.
    path : str or path-like
        Output file; the format follows the suffix (``.png``, ``.pdf``, ``.svg``).
    title : str

    Returns
    -------
    Path
        The written file.

    Notes
    -----
    Uses matplotlib's object API with the Agg canvas, never ``pyplot``, so it changes no global
    backend or state. Points with FPR or TPR 0 cannot be drawn on log axes and are left out.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not results:
        raise ValueError("plot_roc needs at least one result.")
    fig = Figure(figsize=(5.0, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    lowest = 1.0
    for label, res in results.items():
        roc = res.details.get("roc")
        if roc is None:
            raise ValueError(
                f"plot_roc: result {label!r} has no ROC in details; score it with "
                "score_membership(..., roc_points > 0) first."
            )
        fpr = np.asarray(roc["fpr"], dtype=np.float64)
        tpr = np.asarray(roc["tpr"], dtype=np.float64)
        keep = (fpr > 0) & (tpr > 0)
        if keep.any():
            lowest = min(lowest, float(fpr[keep].min()), float(tpr[keep].min()))
        text = str(label)
        if "auc" in res.metrics:
            text += f" (AUC {res.metrics['auc']:.3f}"
            low_key = fpr_metric_name(0.001)
            if low_key in res.metrics:
                text += f", TPR@0.1% {res.metrics[low_key]:.1%}"
            text += ")"
        ax.plot(fpr[keep], tpr[keep], label=text, linewidth=1.5)
    lowest = min(lowest, 1e-3)
    ax.plot([lowest, 1.0], [lowest, 1.0], color="grey", linestyle="--", linewidth=1.0, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lowest, 1.0)
    ax.set_ylim(lowest, 1.0)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize="small")
    out = Path(path)
    fig.savefig(out, dpi=120)
    return out
