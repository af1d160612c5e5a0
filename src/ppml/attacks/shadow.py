"""Shadow models, and the shadow-model membership attack of Shokri et al. (2017).

:class:`ShadowModels` is the population of models an adversary trains to imitate the target: ``k``
models of the target's architecture and training recipe, each on a random half of a data pool, all
trained at once with :func:`ppml.train.ensemble.train_ensemble`. It records which pool examples each
model saw (``keep_``), so that LiRA (:mod:`ppml.attacks.lira`) and RMIA (:mod:`ppml.attacks.rmia`)
can read IN and OUT statistics of any candidate record that lies in the pool.

:class:`ShadowModelAttack` is Shokri et al.'s attack: the shadow models' outputs on their own
training half (label "in") and on the other half (label "out") train one attack classifier per
class; the classifier's probability of "in" on the target's output is the membership score.

References
----------
R. Shokri, M. Stronati, C. Song, V. Shmatikov. Membership inference attacks against machine
learning models. IEEE S&P 2017.
N. Carlini, S. Chien, M. Nasr, S. Song, A. Terzis, F. Tramer. Membership inference attacks from
first principles. IEEE S&P 2022 (balanced random halves of one pool).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .._rng import SeedLike, as_generator, derive_seed
from .._validation import POSITIVE_INT, Interval, check_param
from ..train.ensemble import EnsembleParams, predict_ensemble, train_ensemble
from ..train.loop import TrainConfig
from .base import Access, Attack, AttackResult, ThreatModel
from .membership import TargetQueries, _check_xy, _row_keys, check_run_inputs

__all__ = ["ShadowModels", "ShadowModelAttack"]

_FRACTION = Interval(float, 0, 1, "neither")


class ShadowModels:
    """``n_models`` models trained on balanced random subsets of a data pool, many at once.

    Parameters
    ----------
    model : nn.Module
        The architecture (the adversary's guess of the target's); never modified.
    config : TrainConfig
        The training recipe (the adversary's guess of the target's).
    n_models : int
        How many shadow models.
    seed : int, SeedSequence or numpy Generator
        Draws the subsets and, through :func:`train_ensemble`, every model's initialisation and
        batch order.
    fraction : float in (0, 1)
        Share of models that train on each pool example. Every example is IN for exactly
        ``round(fraction * n_models)`` models (Carlini et al.'s balanced assignment), so the models'
        training sets have about ``fraction * len(pool)`` examples each.
    chunk_size : int, optional
        Passed to :func:`train_ensemble` (memory only).

    Attributes
    ----------
    params_ : EnsembleParams
        The trained models.
    keep_ : ndarray of shape (n_models, n_pool) bool
        ``keep_[j, i]``: pool example ``i`` was in model ``j``'s training set.
    X_, y_ : ndarray
        The pool.
    seconds_ : float
        Training wall time.
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        n_models: int,
        *,
        seed: SeedLike,
        fraction: float = 0.5,
        chunk_size: int | None = None,
    ) -> None:
        owner = "ShadowModels"
        check_param("n_models", n_models, owner, POSITIVE_INT)
        check_param("fraction", fraction, owner, _FRACTION)
        check_param("chunk_size", chunk_size, owner, POSITIVE_INT, None)
        if not isinstance(config, TrainConfig):
            raise TypeError(f"{owner}: config must be a TrainConfig, got {type(config).__name__}.")
        self.model = model
        self.config = config
        self.n_models = n_models
        self.seed = seed
        self.fraction = fraction
        self.chunk_size = chunk_size

    def fit(self, pool: tuple[Any, Any] | Any) -> ShadowModels:
        """Draw the balanced subsets of ``pool = (X, y)`` and train the models on them."""
        X, y = _check_xy(pool, "pool")
        gen = as_generator(self.seed)
        k, n = self.n_models, len(y)
        n_in = int(round(self.fraction * k))
        if k > 1 and not 0 < n_in < k:
            n_in = min(max(n_in, 1), k - 1)
        # For each example an independent random ranking of the models; the first n_in take it.
        ranks = np.argsort(gen.random((k, n)), axis=0)
        keep = ranks < n_in
        subsets = [np.flatnonzero(keep[j]) for j in range(k)]
        start = time.perf_counter()
        self.params_ = train_ensemble(
            self.model, X, y, subsets, self.config, derive_seed(gen), chunk_size=self.chunk_size
        )
        self.seconds_ = time.perf_counter() - start
        self.keep_ = keep
        self.X_, self.y_ = X, y.astype(np.int64)
        return self

    @classmethod
    def from_trained(
        cls, params: EnsembleParams, keep: np.ndarray, pool: tuple[Any, Any], config: TrainConfig
    ) -> ShadowModels:
        """Wrap models trained elsewhere: ``keep[j, i]`` says whether model ``j`` trained on pool row ``i``."""
        X, y = _check_xy(pool, "pool")
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != (len(params), len(y)):
            raise ValueError(
                f"ShadowModels.from_trained: keep must have shape ({len(params)}, {len(y)}), got {keep.shape}."
            )
        out = cls(params.template, config, len(params), seed=0)
        out.params_, out.keep_, out.X_, out.y_, out.seconds_ = params, keep, X, y.astype(np.int64), 0.0
        return out

    def __len__(self) -> int:
        return int(self.keep_.shape[0]) if hasattr(self, "keep_") else int(self.n_models)

    def _check_fitted(self, owner: str) -> None:
        if not hasattr(self, "params_"):
            raise RuntimeError(f"{owner}: the shadow models are not trained yet; call fit(pool) first.")

    def select(self, indices: Sequence[int] | np.ndarray) -> ShadowModels:
        """The sub-population of the given models (e.g. the first 16 of 64)."""
        self._check_fitted("ShadowModels.select")
        idx = np.asarray(indices, dtype=np.int64)
        out = ShadowModels.from_trained(
            self.params_.select(idx), self.keep_[idx], (self.X_, self.y_), self.config
        )
        out.seconds_ = self.seconds_ * len(idx) / max(len(self), 1)
        return out

    def logits(self, X: Any, *, batch_size: int = 4096) -> np.ndarray:
        """Every model's logits on ``X``, float64, shape ``(n_models, n, classes)``."""
        self._check_fitted("ShadowModels.logits")
        Xt = X if isinstance(X, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(X))
        out = predict_ensemble(None, self.params_, Xt, batch_size=batch_size, chunk_size=self.chunk_size)
        return out.to(torch.float64).cpu().numpy()

    def membership(self, X: Any, y: Any) -> np.ndarray:
        """``(n_models, n)`` bool: whether each model trained on each query (matched to the pool by value).

        A query equal (features and label) to a pool row is IN for the models that kept that row;
        a query not in the pool is OUT for every model.
        """
        self._check_fitted("ShadowModels.membership")
        Xq = np.asarray(X.cpu() if isinstance(X, torch.Tensor) else X)
        yq = np.asarray(y)
        if Xq.shape[1:] != self.X_.shape[1:]:
            raise ValueError(
                f"ShadowModels.membership: queries have example shape {Xq.shape[1:]}, the pool "
                f"{self.X_.shape[1:]}."
            )
        dtype = np.result_type(Xq.dtype, self.X_.dtype)
        pool_keys = _row_keys(self.X_, self.y_, dtype)
        query_keys = _row_keys(Xq, yq, dtype)
        order = np.argsort(pool_keys)
        pos = np.searchsorted(pool_keys[order], query_keys)
        pos = np.minimum(pos, len(order) - 1)
        found = pool_keys[order][pos] == query_keys
        out = np.zeros((len(self), len(yq)), dtype=bool)
        out[:, found] = self.keep_[:, order[pos[found]]]
        return out


def _log_probabilities(outputs: np.ndarray, from_logits: bool) -> np.ndarray:
    """Log-probabilities in float64 (log-softmax of logits, or the log of clipped probabilities)."""
    o = np.asarray(outputs, dtype=np.float64)
    if from_logits:
        return torch.log_softmax(torch.from_numpy(o), dim=-1).numpy()
    return np.log(np.maximum(o, np.finfo(np.float64).tiny))


def _features(log_probs: np.ndarray, sort: bool) -> np.ndarray:
    """Attack features: the log-probability vector (sorted in decreasing order when ``sort``)."""
    return -np.sort(-log_probs, axis=-1) if sort else log_probs


class ShadowModelAttack(Attack):
    """Shokri et al.'s (2017) membership attack: per-class classifiers trained on shadow models' outputs.

    Parameters
    ----------
    threat_model : ThreatModel
        Must grant ``Access.CONFIDENCES``. The adversary also holds auxiliary data from the target's
        distribution and knows (or guesses) its architecture and training recipe.
    model : nn.Module
        Shadow architecture.
    config : TrainConfig
        Shadow training recipe.
    n_shadows : int
        Number of shadow models (ignored when :meth:`fit` is given trained :class:`ShadowModels`).
    seed : int, SeedSequence or numpy Generator
        Shadow subsets, initialisations, batch orders and the attack classifiers' seeds.
    attack_model : scikit-learn classifier, optional
        Cloned once per class; default ``HistGradientBoostingClassifier(max_iter=100)``.
    sort_features : bool
        Sort each probability vector in decreasing order before classifying (label-agnostic
        features, as in Salem et al.'s ML-Leaks); the default keeps Shokri's raw vector, which the
        per-class classifier reads with the true label's position fixed.
    chunk_size : int, optional
        Shadow training in chunks (memory only).

    Attributes
    ----------
    shadows_ : ShadowModels
    classifiers_ : dict of int to classifier
        One per class seen in the shadow data; a class the shadows never saw scores with the
        pooled classifier ``classifiers_[-1]``.
    """

    name = "shadow-models"
    requires = (Access.CONFIDENCES,)

    def __init__(
        self,
        threat_model: ThreatModel,
        model: nn.Module,
        config: TrainConfig,
        *,
        n_shadows: int = 16,
        seed: SeedLike,
        attack_model: Any = None,
        sort_features: bool = False,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__(threat_model)
        check_param("n_shadows", n_shadows, type(self).__name__, POSITIVE_INT)
        self.model = model
        self.config = config
        self.n_shadows = n_shadows
        self.seed = seed
        self.attack_model = attack_model
        self.sort_features = sort_features
        self.chunk_size = chunk_size

    def _new_classifier(self, seed: int) -> Any:
        from sklearn.base import clone
        from sklearn.ensemble import HistGradientBoostingClassifier

        if self.attack_model is None:
            return HistGradientBoostingClassifier(max_iter=100, random_state=seed % (2**32))
        return clone(self.attack_model)

    def fit(self, auxiliary: tuple[Any, Any] | ShadowModels | Any) -> ShadowModelAttack:
        """Train the shadow models on ``auxiliary = (X, y)`` (or take trained ``ShadowModels``), then
        the per-class attack classifiers on their IN/OUT outputs."""
        gen = as_generator(self.seed)
        if isinstance(auxiliary, ShadowModels):
            shadows = auxiliary
            shadows._check_fitted(type(self).__name__)
        else:
            shadows = ShadowModels(
                self.model, self.config, self.n_shadows, seed=derive_seed(gen), chunk_size=self.chunk_size
            ).fit(auxiliary)
        start = time.perf_counter()
        # the same path as the target's confidences: softmax in float64, then the clipped log
        probs = torch.softmax(torch.from_numpy(shadows.logits(shadows.X_)), dim=-1).numpy()
        logp = _log_probabilities(probs, from_logits=False)  # (k, n, C)
        k, n, _ = logp.shape
        feats = _features(logp, self.sort_features).reshape(k * n, -1)
        labels = np.tile(shadows.y_, k)
        inside = shadows.keep_.reshape(-1)
        classifiers: dict[int, Any] = {}
        pooled = self._new_classifier(derive_seed(gen))
        pooled.fit(feats, inside)
        classifiers[-1] = pooled
        for c in np.unique(labels):
            sel = labels == c
            if np.unique(inside[sel]).size < 2:
                continue
            clf = self._new_classifier(derive_seed(gen))
            clf.fit(feats[sel], inside[sel])
            classifiers[int(c)] = clf
        self.shadows_ = shadows
        self.classifiers_ = classifiers
        self.fit_seconds_ = shadows.seconds_ + time.perf_counter() - start
        return self

    def run(self, observations: TargetQueries) -> AttackResult:
        """Score each candidate by the attack classifier's probability that the target trained on it."""
        check_run_inputs(self, observations, "classifiers_")
        start = time.perf_counter()
        probs = observations.api.confidences(observations.X, attack=self.name)
        feats = _features(_log_probabilities(probs, from_logits=False), self.sort_features)
        scores = np.empty(len(observations), dtype=np.float64)
        y = observations.y
        for c in np.unique(y):
            sel = y == c
            clf = self.classifiers_.get(int(c), self.classifiers_[-1])
            col = list(clf.classes_).index(True)
            scores[sel] = clf.predict_proba(feats[sel])[:, col]
        return AttackResult(
            attack=self.name,
            threat_model=self.threat_model,
            scores=scores,
            details={
                "n_targets": len(observations),
                "n_shadows": len(self.shadows_),
                "shadow_train_seconds": round(self.shadows_.seconds_, 4),
                "score_threshold": 0.5,
            },
            seconds=time.perf_counter() - start,
        )
