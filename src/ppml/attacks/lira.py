"""The Likelihood Ratio Attack (LiRA) of Carlini et al. (2022), online and offline.

For each candidate record ``(x, y)`` LiRA compares the target's logit-scaled confidence
``phi = log p_y - log sum_{y' != y} p_y'`` (:func:`~ppml.attacks.membership.logit_scaled_confidence`,
computed in float64) with its distribution over shadow models that trained on ``x`` (IN) and that
did not (OUT), each modelled as a Gaussian:

* **online**: ``score = log N(phi; mu_in, s_in^2) - log N(phi; mu_out, s_out^2)``, a log-likelihood
  ratio (the shadows are trained on random halves of a pool that contains the candidates);
* **offline**: only OUT shadows, a one-sided test: ``score = -log P[N(mu_out, s_out^2) >= phi]``
  (minus the log p-value; large when the target is more confident than OUT models ever are).

With few shadows the per-example variances are noisy; ``fixed_variance=True`` uses one pooled
within-example variance for IN and one for OUT (Carlini et al. recommend it below 64 shadows).
Augmented queries (flips and shifts of images) are not implemented.

Reference
---------
N. Carlini, S. Chien, M. Nasr, S. Song, A. Terzis, F. Tramer. Membership inference attacks from first
principles. IEEE S&P 2022.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from scipy import stats
from torch import nn

from .._rng import SeedLike, as_generator, derive_seed
from .._validation import POSITIVE_INT, check_param
from ..train.loop import TrainConfig
from .base import Access, Attack, AttackResult, ThreatModel, ThreatModelError
from .membership import TargetQueries, check_run_inputs, logit_scaled_confidence
from .shadow import ShadowModels

__all__ = ["LiRA", "lira_scores"]

_MIN_STD = 1e-6


def _pooled_std(values: np.ndarray, mask: np.ndarray, mean: np.ndarray) -> float:
    """Pooled within-example standard deviation of ``values[mask]`` around per-example ``mean``."""
    counts = mask.sum(axis=0)
    dof = int(np.sum(np.maximum(counts - 1, 0)))
    if dof == 0:
        raise ValueError(
            "LiRA with fixed_variance needs at least one target with 2 shadow models on the same side "
            "(IN or OUT) to estimate the variance; train more shadow models."
        )
    sq = np.where(mask, (values - mean) ** 2, 0.0).sum()
    return max(float(np.sqrt(sq / dof)), _MIN_STD)


def _side_stats(
    values: np.ndarray, mask: np.ndarray, fixed_variance: bool
) -> tuple[np.ndarray, np.ndarray | float]:
    counts = mask.sum(axis=0)
    mean = np.where(mask, values, 0.0).sum(axis=0) / np.maximum(counts, 1)
    if fixed_variance:
        return mean, _pooled_std(values, mask, mean)
    var = np.where(mask, (values - mean) ** 2, 0.0).sum(axis=0) / np.maximum(counts - 1, 1)
    return mean, np.maximum(np.sqrt(var), _MIN_STD)


def lira_scores(
    target_phi: np.ndarray,
    shadow_phi: np.ndarray,
    shadow_in: np.ndarray,
    *,
    online: bool = True,
    fixed_variance: bool = False,
) -> np.ndarray:
    """LiRA's membership scores from logit-scaled confidences (the statistics part of :class:`LiRA`).

    Parameters
    ----------
    target_phi : ndarray of shape (n,)
        The target model's ``phi`` on each candidate.
    shadow_phi : ndarray of shape (k, n)
        Every shadow model's ``phi`` on each candidate.
    shadow_in : ndarray of shape (k, n) bool
        Whether shadow ``j`` trained on candidate ``i``.
    online, fixed_variance : bool
        See :class:`LiRA`.

    Returns
    -------
    ndarray of shape (n,) float64
        Higher means more likely a member.

    Raises
    ------
    ValueError
        When a candidate has too few IN or OUT shadows for the fit (the message names how many).
    """
    phi = np.asarray(target_phi, dtype=np.float64)
    sp = np.asarray(shadow_phi, dtype=np.float64)
    m_in = np.asarray(shadow_in, dtype=bool)
    if sp.ndim != 2 or sp.shape[1] != phi.shape[0] or m_in.shape != sp.shape:
        raise ValueError(
            f"lira_scores: shadow_phi and shadow_in must have shape (k, {phi.shape[0]}), got {sp.shape} "
            f"and {m_in.shape}."
        )
    m_out = ~m_in
    n_in, n_out = m_in.sum(axis=0), m_out.sum(axis=0)
    need = 1 if fixed_variance else 2
    short_out = int(np.count_nonzero(n_out < need))
    short_in = int(np.count_nonzero(n_in < need)) if online else 0
    if short_in or short_out:
        mode = "online" if online else "offline"
        fit = "a fixed global variance" if fixed_variance else "per-example variances"
        sides = f"{need} IN and {need} OUT" if online else f"{need} OUT"
        fewest = f"fewest IN {int(n_in.min())}, " if online else ""
        raise ValueError(
            f"LiRA {mode} with {fit} needs at least {sides} shadow model(s) per target; "
            f"{max(short_in, short_out)} of {phi.size} targets have fewer ({fewest}fewest OUT "
            f"{int(n_out.min())}, of {sp.shape[0]} shadow models). Train more shadow models"
            + (" on a pool that contains the targets" if online else "")
            + ("" if fixed_variance else ", or set fixed_variance=True")
            + "."
        )
    mu_out, sd_out = _side_stats(sp, m_out, fixed_variance)
    if not online:
        return -stats.norm.logsf(phi, loc=mu_out, scale=sd_out)
    mu_in, sd_in = _side_stats(sp, m_in, fixed_variance)
    return stats.norm.logpdf(phi, loc=mu_in, scale=sd_in) - stats.norm.logpdf(phi, loc=mu_out, scale=sd_out)


class LiRA(Attack):
    """Carlini et al.'s Likelihood Ratio Attack with shadow models trained many at once.

    Parameters
    ----------
    threat_model : ThreatModel
        Must grant ``Access.LOGITS`` or ``Access.CONFIDENCES`` (``phi`` is computed from logits when
        the target exposes them, else from its probability vectors). The adversary knows the
        architecture and training recipe and holds a pool of records from the target's distribution;
        online LiRA needs the candidates in that pool.
    model : nn.Module
        Shadow architecture.
    config : TrainConfig
        Shadow training recipe.
    n_shadows : int
        Number of shadow models (each trains on a random half of the pool; each pool record is IN
        for half of them). Ignored when :meth:`fit` is given trained :class:`ShadowModels`.
    online : bool
        Online (IN and OUT Gaussians, a likelihood ratio) or offline (OUT only, one-sided test).
    fixed_variance : bool
        One pooled variance per side instead of per-example variances; needed with few shadows.
    seed : int, SeedSequence or numpy Generator
    chunk_size : int, optional
        Shadow training in chunks (memory only).

    Raises
    ------
    ThreatModelError
        When the threat model grants neither logits nor confidences.
    ValueError
        When ``n_shadows`` is too small for per-example variances (online needs 2 IN and 2 OUT per
        target, so at least 4 shadows; offline at least 2), and at run time when a target has too
        few IN or OUT shadows.
    """

    requires = ()

    def __init__(
        self,
        threat_model: ThreatModel,
        model: nn.Module,
        config: TrainConfig,
        *,
        n_shadows: int = 16,
        online: bool = True,
        fixed_variance: bool = False,
        seed: SeedLike,
        chunk_size: int | None = None,
    ) -> None:
        self.name = "lira-online" if online else "lira-offline"
        super().__init__(threat_model)
        if not ({Access.LOGITS, Access.CONFIDENCES} & threat_model.access):
            granted = ", ".join(sorted(a.value for a in threat_model.access)) or "nothing"
            raise ThreatModelError(
                f"{self.name} needs logits or confidences but the threat model grants only {granted}."
            )
        owner = type(self).__name__
        check_param("n_shadows", n_shadows, owner, POSITIVE_INT)
        check_param("online", online, owner, bool)
        check_param("fixed_variance", fixed_variance, owner, bool)
        minimum = 2 if fixed_variance else (4 if online else 2)
        if n_shadows < minimum:
            per = "2 IN and 2 OUT" if online else "2 OUT"
            raise ValueError(
                f"{self.name} with {'a fixed variance' if fixed_variance else 'per-example variances'} needs "
                f"at least {minimum} shadow models (per-example fits need {per} per target); got "
                f"n_shadows={n_shadows}."
                + ("" if fixed_variance else " Use more shadows or fixed_variance=True.")
            )
        self.model = model
        self.config = config
        self.n_shadows = n_shadows
        self.online = online
        self.fixed_variance = fixed_variance
        self.seed = seed
        self.chunk_size = chunk_size

    def fit(self, auxiliary: tuple[Any, Any] | ShadowModels | Any) -> LiRA:
        """Train ``n_shadows`` shadow models on random halves of ``auxiliary = (X, y)``, or take trained ones."""
        if isinstance(auxiliary, ShadowModels):
            auxiliary._check_fitted(type(self).__name__)
            self.shadows_ = auxiliary
        else:
            self.shadows_ = ShadowModels(
                self.model,
                self.config,
                self.n_shadows,
                seed=derive_seed(as_generator(self.seed)),
                chunk_size=self.chunk_size,
            ).fit(auxiliary)
        return self

    def run(self, observations: TargetQueries) -> AttackResult:
        """Score each candidate (higher = more likely a member)."""
        check_run_inputs(self, observations, "shadows_")
        start = time.perf_counter()
        X, y = observations.X, observations.y
        shadow_in = self.shadows_.membership(X, y)
        use_logits = Access.LOGITS in self.threat_model.access and Access.LOGITS in observations.api.exposes
        if use_logits:
            target_phi = logit_scaled_confidence(
                observations.api.logits(X, attack=self.name), y, from_logits=True
            )
        else:
            probs = observations.api.confidences(X, attack=self.name)
            target_phi = logit_scaled_confidence(probs, y, from_logits=False)
        shadow_phi = logit_scaled_confidence(self.shadows_.logits(X), y, from_logits=True)
        scores = lira_scores(
            target_phi, shadow_phi, shadow_in, online=self.online, fixed_variance=self.fixed_variance
        )
        return AttackResult(
            attack=self.name,
            threat_model=self.threat_model,
            scores=scores,
            details={
                "n_targets": len(observations),
                "n_shadows": len(self.shadows_),
                "fixed_variance": self.fixed_variance,
                "observed": "logits" if use_logits else "confidences",
                "mean_in_shadows_per_target": round(float(shadow_in.sum(0).mean()), 3),
                "shadow_train_seconds": round(self.shadows_.seconds_, 4),
            },
            seconds=time.perf_counter() - start,
        )
