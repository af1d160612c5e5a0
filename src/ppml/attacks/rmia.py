"""RMIA, the relative membership inference attack of Zarifzadeh et al. (2024).

RMIA compares the likelihood ratio of a candidate ``x`` under the target model with that of
population records ``z`` the target did not train on:

``LR_theta(x, z) = (Pr(x | theta) / Pr(x)) / (Pr(z | theta) / Pr(z))``,

where ``Pr(. | theta)`` is the target's probability of the true label and ``Pr(.)`` its average over
reference models. The score of ``x`` is the share of population records ``z`` with
``LR_theta(x, z) >= gamma``. It works with very few reference models (1 or 2).

* **online**: ``Pr(x)`` is the mean over all reference models, IN and OUT (the references are trained
  on random halves of a pool that contains the candidates);
* **offline**: only OUT reference models, with the paper's linear approximation of the missing IN
  models, ``Pr(x) = ((1 + a) * mean_OUT Pr(x | theta') + (1 - a)) / 2`` (``a`` tuned per setting; the
  same approximation is applied to each ``z``).

The share is a non-decreasing function of ``Pr(x | theta) / Pr(x)``, so records beyond every ``z``
tie at 1; with ``break_ties`` (default) ties are ordered by that ratio, which changes a score by less
than ``1 / len(z)``.

Reference
---------
S. Zarifzadeh, P. Liu, J. Wei, R. Shokri. Low-cost high-power membership inference attacks. ICML 2024.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn

from .._rng import SeedLike, as_generator, derive_seed
from .._validation import POSITIVE_FLOAT, POSITIVE_INT, Interval, check_param
from ..train.loop import TrainConfig
from .base import Access, Attack, AttackResult, ThreatModel
from .membership import TargetQueries, _check_xy, check_run_inputs
from .shadow import ShadowModels

__all__ = ["RMIA", "rmia_scores"]

_A = Interval(float, 0, 1, "both")
_TINY = np.finfo(np.float64).tiny


def _true_label_probability(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``p[..., i, y_i]`` of probability arrays of shape ``(..., n, classes)``."""
    idx = np.broadcast_to(y.reshape(*([1] * (probs.ndim - 2)), -1, 1), (*probs.shape[:-1], 1))
    return np.take_along_axis(probs, idx, axis=-1)[..., 0]


def _marginal(p_ref: np.ndarray, ref_in: np.ndarray, online: bool, a: float, what: str) -> np.ndarray:
    """``Pr(u)`` from reference probabilities ``(k, n)`` and their IN/OUT matrix."""
    if online:
        return p_ref.mean(axis=0)
    out = ~ref_in
    n_out = out.sum(axis=0)
    missing = int(np.count_nonzero(n_out == 0))
    if missing:
        raise ValueError(
            f"RMIA offline needs at least one OUT reference model per record; {missing} of {n_out.size} "
            f"{what} were in the training set of every reference model. Train more reference models."
        )
    mean_out = np.where(out, p_ref, 0.0).sum(axis=0) / n_out
    return ((1.0 + a) * mean_out + (1.0 - a)) / 2.0


def rmia_scores(
    p_target_x: np.ndarray,
    p_ref_x: np.ndarray,
    ref_in_x: np.ndarray,
    p_target_z: np.ndarray,
    p_ref_z: np.ndarray,
    ref_in_z: np.ndarray,
    *,
    online: bool = False,
    a: float = 0.3,
    gamma: float = 1.0,
    break_ties: bool = True,
) -> np.ndarray:
    """RMIA scores from true-label probabilities (the statistics part of :class:`RMIA`).

    Parameters
    ----------
    p_target_x : ndarray (n,)
        ``Pr(x | theta)`` of each candidate under the target.
    p_ref_x, ref_in_x : ndarray (k, n)
        The reference models' probabilities of the candidates, and whether each trained on each.
    p_target_z : ndarray (m,)
        ``Pr(z | theta)`` of the population records.
    p_ref_z, ref_in_z : ndarray (k, m)
    online, a, gamma, break_ties
        See :class:`RMIA`.

    Returns
    -------
    ndarray (n,) float64
        The share of ``z`` with ``LR(x, z) >= gamma`` (plus a tie-break below ``1 / m``).
    """
    px = np.asarray(p_target_x, dtype=np.float64)
    pz = np.asarray(p_target_z, dtype=np.float64)
    marg_x = _marginal(np.asarray(p_ref_x, np.float64), np.asarray(ref_in_x, bool), online, a, "candidates")
    marg_z = _marginal(np.asarray(p_ref_z, np.float64), np.asarray(ref_in_z, bool), online, a, "population")
    log_rx = np.log(np.maximum(px, _TINY)) - np.log(np.maximum(marg_x, _TINY))
    log_rz = np.log(np.maximum(pz, _TINY)) - np.log(np.maximum(marg_z, _TINY))
    # LR(x, z) >= gamma  <=>  log r_z <= log r_x - log gamma
    m = log_rz.size
    share = np.searchsorted(np.sort(log_rz), log_rx - np.log(gamma), side="right") / m
    if not break_ties:
        return share
    ranks = np.argsort(np.argsort(log_rx, kind="stable"), kind="stable")
    return share + ranks / (len(log_rx) * (m + 1.0))


class RMIA(Attack):
    """Zarifzadeh et al.'s RMIA with reference models trained many at once.

    Parameters
    ----------
    threat_model : ThreatModel
        Must grant ``Access.CONFIDENCES``. The adversary holds population records from the
        target's distribution (the reference pool and the ``z`` samples) and knows the architecture
        and training recipe.
    model : nn.Module
        Reference architecture.
    config : TrainConfig
        Reference training recipe.
    n_references : int
        Reference models, each on a random half of the pool (ignored when :meth:`fit` is given
        trained :class:`ShadowModels`). The paper's offline attack works with 1 or 2.
    online : bool
        Use IN and OUT references (the pool must contain the candidates) or OUT only (offline).
    a : float in [0, 1]
        Offline approximation parameter (the paper tunes it per dataset; 0.3 is a common choice).
    gamma : float > 0
        Likelihood-ratio threshold of the pairwise test.
    n_population : int, optional
        Use at most this many population records ``z`` (a random subset); default all.
    break_ties : bool
        Order records with equal shares by their likelihood ratio (see the module notes).
    seed : int, SeedSequence or numpy Generator
    chunk_size : int, optional
        Reference training in chunks (memory only).
    """

    requires = (Access.CONFIDENCES,)

    def __init__(
        self,
        threat_model: ThreatModel,
        model: nn.Module,
        config: TrainConfig,
        *,
        n_references: int = 2,
        online: bool = False,
        a: float = 0.3,
        gamma: float = 1.0,
        n_population: int | None = None,
        break_ties: bool = True,
        seed: SeedLike,
        chunk_size: int | None = None,
    ) -> None:
        self.name = "rmia-online" if online else "rmia-offline"
        super().__init__(threat_model)
        owner = type(self).__name__
        check_param("n_references", n_references, owner, POSITIVE_INT)
        check_param("online", online, owner, bool)
        check_param("a", a, owner, _A)
        check_param("gamma", gamma, owner, POSITIVE_FLOAT)
        check_param("n_population", n_population, owner, POSITIVE_INT, None)
        check_param("break_ties", break_ties, owner, bool)
        if online and n_references < 2:
            raise ValueError(
                f"rmia-online needs IN and OUT reference models for every candidate, so at least 2; got "
                f"n_references={n_references}. Use online=False for a single reference model."
            )
        self.model = model
        self.config = config
        self.n_references = n_references
        self.online = online
        self.a = a
        self.gamma = gamma
        self.n_population = n_population
        self.break_ties = break_ties
        self.seed = seed
        self.chunk_size = chunk_size

    def fit(
        self, auxiliary: tuple[Any, Any] | ShadowModels | Any, population: tuple[Any, Any] | Any = None
    ) -> RMIA:
        """Train the reference models on random halves of ``auxiliary`` (or take trained ones) and keep
        the population records ``z``.

        Parameters
        ----------
        auxiliary : (X, y), Dataset or ShadowModels
            The reference pool; with ``fraction`` other than 1/2 in a custom :class:`ShadowModels`
            the offline approximation still applies.
        population : (X, y) or Dataset, optional
            The ``z`` records; they must not be the target's training records. Default: the pool.
            Offline, records that every reference model trained on are dropped (``Pr(z)`` needs an
            OUT reference).
        """
        gen = as_generator(self.seed)
        if isinstance(auxiliary, ShadowModels):
            auxiliary._check_fitted(type(self).__name__)
            refs = auxiliary
        else:
            refs = ShadowModels(
                self.model,
                self.config,
                self.n_references,
                seed=derive_seed(gen),
                chunk_size=self.chunk_size,
            ).fit(auxiliary)
        Xz, yz = (refs.X_, refs.y_) if population is None else _check_xy(population, "population")
        if self.n_population is not None and self.n_population < len(yz):
            pick = np.sort(gen.choice(len(yz), size=self.n_population, replace=False))
            Xz, yz = Xz[pick], yz[pick]
        start = time.perf_counter()
        ref_in_z = refs.membership(Xz, yz)
        if not self.online:
            # offline: Pr(z) needs an OUT reference; drop the z that every reference trained on
            usable = ~ref_in_z.all(axis=0)
            if not usable.any():
                raise ValueError(
                    "RMIA offline needs population records z that some reference model did not train on; "
                    f"all {len(yz)} were in every reference model's training set. Pass other population "
                    "records or train more reference models."
                )
            Xz, yz, ref_in_z = Xz[usable], yz[usable], ref_in_z[:, usable]
        probs_z = torch.softmax(torch.from_numpy(refs.logits(Xz)), dim=-1).numpy()
        self.p_ref_z_ = _true_label_probability(probs_z, yz.astype(np.int64))
        self.ref_in_z_ = ref_in_z
        self.Xz_, self.yz_ = Xz, yz.astype(np.int64)
        self.references_ = refs
        self.fit_seconds_ = refs.seconds_ + time.perf_counter() - start
        return self

    def run(self, observations: TargetQueries) -> AttackResult:
        """Score each candidate (higher = more likely a member); queries the target on ``x`` and ``z``."""
        check_run_inputs(self, observations, "references_")
        start = time.perf_counter()
        X, y = observations.X, observations.y
        api = observations.api
        p_target_x = _true_label_probability(api.confidences(X, attack=self.name), y)
        p_target_z = _true_label_probability(api.confidences(self.Xz_, attack=self.name), self.yz_)
        probs_x = torch.softmax(torch.from_numpy(self.references_.logits(X)), dim=-1).numpy()
        p_ref_x = _true_label_probability(probs_x, y)
        ref_in_x = self.references_.membership(X, y)
        if self.online:
            short = int(np.count_nonzero(ref_in_x.sum(0) == 0))
            if short:
                raise ValueError(
                    f"rmia-online needs every candidate in the reference pool (IN for some reference "
                    f"model); {short} of {len(y)} candidates are IN for none. Use online=False or add the "
                    "candidates to the pool."
                )
        scores = rmia_scores(
            p_target_x,
            p_ref_x,
            ref_in_x,
            p_target_z,
            self.p_ref_z_,
            self.ref_in_z_,
            online=self.online,
            a=self.a,
            gamma=self.gamma,
            break_ties=self.break_ties,
        )
        return AttackResult(
            attack=self.name,
            threat_model=self.threat_model,
            scores=scores,
            details={
                "n_targets": len(observations),
                "n_references": len(self.references_),
                "n_population": int(len(self.yz_)),
                "a": self.a,
                "gamma": self.gamma,
                "reference_train_seconds": round(self.references_.seconds_, 4),
            },
            seconds=time.perf_counter() - start,
        )
