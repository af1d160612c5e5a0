"""Label-only membership inference (Choquette-Choo et al. 2021).

An API that returns only the top-1 label still leaks membership:

* the **gap attack** (the baseline of Choquette-Choo et al., after Yeom et al. 2018): a correctly
  classified record is flagged as a member; its score is 1 or 0;
* the **noise-robustness attack**: training records sit farther from the decision boundary, so
  their label survives perturbation more often. The score is the share of ``n_noise`` copies
  ``x + N(0, sigma^2 I)`` (optionally clipped to the data range) still given the true label, with
  the unperturbed query counted as one more copy.

Choquette-Choo et al. also use data augmentations (translations, flips) for images and calibrate a
threshold on shadow models; here the ranking metrics (AUC, TPR at low FPR) need no threshold, and the
gap attack records its natural one (``score >= 0.5``).

Reference
---------
C. A. Choquette-Choo, F. Tramer, N. Carlini, N. Papernot. Label-only membership inference attacks.
ICML 2021.
"""

from __future__ import annotations

import time

import numpy as np

from .._rng import SeedLike, as_generator
from .._validation import NONNEG_INT, POSITIVE_FLOAT, POSITIVE_INT, check_param
from .base import Access, Attack, AttackResult, ThreatModel
from .membership import TargetQueries

__all__ = ["LabelOnlyAttack"]


class LabelOnlyAttack(Attack):
    """Membership from top-1 labels: the gap attack (``n_noise=0``) or robustness to Gaussian noise.

    Parameters
    ----------
    threat_model : ThreatModel
        Must grant ``Access.LABELS``.
    n_noise : int >= 0
        Noisy copies per candidate; 0 runs the gap attack.
    sigma : float > 0
        Standard deviation of the noise (in the units of the inputs).
    clip : (float, float), optional
        Clip noisy inputs to this range (e.g. ``(0, 1)`` for pixels).
    seed : int, SeedSequence or numpy Generator
        The noise.
    batch_size : int
        Noisy queries per call to the API (memory only).
    """

    requires = (Access.LABELS,)

    def __init__(
        self,
        threat_model: ThreatModel,
        *,
        n_noise: int = 0,
        sigma: float = 0.1,
        clip: tuple[float, float] | None = None,
        seed: SeedLike = None,
        batch_size: int = 8192,
    ) -> None:
        self.name = "label-only-gap" if n_noise == 0 else "label-only-noise"
        super().__init__(threat_model)
        owner = type(self).__name__
        check_param("n_noise", n_noise, owner, NONNEG_INT)
        check_param("sigma", sigma, owner, POSITIVE_FLOAT)
        check_param("batch_size", batch_size, owner, POSITIVE_INT)
        if clip is not None and not (len(clip) == 2 and float(clip[0]) < float(clip[1])):
            raise ValueError(
                f"LabelOnlyAttack: clip must be a pair (low, high) with low < high, got {clip!r}."
            )
        if n_noise > 0 and seed is None:
            as_generator(seed)  # raises the standard "explicit seed" error
        self.n_noise = n_noise
        self.sigma = sigma
        self.clip = clip
        self.seed = seed
        self.batch_size = batch_size

    def run(self, observations: TargetQueries) -> AttackResult:
        """Score each candidate by the share of (noisy) queries answered with its true label."""
        if not isinstance(observations, TargetQueries):
            raise TypeError(
                f"{type(self).__name__}.run expects TargetQueries, got {type(observations).__name__}."
            )
        start = time.perf_counter()
        X, y, api = observations.X, observations.y, observations.api
        correct = (api.labels(X, attack=self.name) == y).astype(np.float64)
        details: dict[str, object] = {"n_targets": len(observations), "accuracy": float(correct.mean())}
        if self.n_noise == 0:
            details["score_threshold"] = 0.5
            scores = correct
        else:
            gen = as_generator(self.seed)
            hits = correct.copy()
            per = max(1, self.batch_size // self.n_noise)
            Xf = np.asarray(X, dtype=np.float32)
            for s in range(0, len(y), per):
                xb = Xf[s : s + per]
                noisy = np.repeat(xb, self.n_noise, axis=0)
                noisy += (self.sigma * gen.standard_normal(noisy.shape)).astype(np.float32)
                if self.clip is not None:
                    np.clip(noisy, self.clip[0], self.clip[1], out=noisy)
                lab = api.labels(noisy, attack=self.name).reshape(len(xb), self.n_noise)
                hits[s : s + per] += (lab == y[s : s + per, None]).sum(axis=1)
            scores = hits / (self.n_noise + 1)
            details.update(n_noise=self.n_noise, sigma=self.sigma, n_queries=int(len(y) * (self.n_noise + 1)))
        return AttackResult(
            attack=self.name,
            threat_model=self.threat_model,
            scores=scores,
            guesses=correct.astype(bool) if self.n_noise == 0 else None,
            details=details,
            seconds=time.perf_counter() - start,
        )
