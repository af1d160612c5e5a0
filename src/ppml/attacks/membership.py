"""Membership inference by thresholding the loss (Yeom et al. 2018), and a one-call audit.

A model fits its training examples better than fresh ones, so a low loss on a labelled record is
evidence that the record was a training member. The LOSS attack scores each target by its negative
loss (higher = more likely a member) and, optionally, flags targets whose loss is below a threshold
such as the average training loss (Yeom et al.'s choice).

Threat model
------------
The attack needs :attr:`~ppml.attacks.base.Access.LOSS`: the per-example loss of the target model on
a *labelled* query. That is what the classic attack observes. An adversary that sees the predicted
probability vector (``Access.CONFIDENCES``) and knows the true label of its own query can compute the
cross-entropy loss itself (:meth:`LossObservations.from_confidences`); grant both ``CONFIDENCES`` and
``LOSS`` in the threat model to say so. A label-only adversary (``Access.LABELS``) cannot run it.

Shadow-model attacks (Shokri et al. 2017) and LiRA (Carlini et al. 2022) build on the same
observations and metrics (:mod:`ppml.attacks.metrics`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._rng import SeedLike, as_generator
from .._validation import POSITIVE_INT, Interval, Options, check_param
from .base import Access, Attack, AttackResult, ThreatModel, ThreatModelError
from .metrics import score_membership

__all__ = [
    "LossObservations",
    "LossThresholdAttack",
    "per_example_loss",
    "membership_audit",
    "ModelAPI",
    "TargetQueries",
    "logit_scaled_confidence",
    "count_overlap",
    "run_membership_audit",
    "aggregate_by_owner",
    "owner_membership",
]

_REAL = Interval(float, None, None)


def _to_numpy(a: Any) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


# --------------------------------------------------------------------------- observations


@dataclass(frozen=True, eq=False)
class LossObservations:
    """Per-example losses of the target model on the adversary's labelled queries.

    Parameters
    ----------
    losses : ndarray of shape (n,)
        Finite losses (stored as float64), one per target.
    """

    losses: np.ndarray

    def __post_init__(self) -> None:
        losses = np.asarray(_to_numpy(self.losses), dtype=np.float64)
        if losses.ndim != 1 or losses.size == 0:
            raise ValueError(
                f"LossObservations needs a non-empty 1-D array of losses, got shape {losses.shape}."
            )
        bad = int(np.count_nonzero(~np.isfinite(losses)))
        if bad:
            raise ValueError(f"LossObservations: {bad} of {losses.size} losses are NaN or infinite.")
        object.__setattr__(self, "losses", losses)

    def __len__(self) -> int:
        return int(self.losses.size)

    @classmethod
    def from_confidences(cls, probabilities: Any, labels: Any) -> LossObservations:
        """Cross-entropy losses ``-log p[y]`` from predicted probability vectors and the queries' labels.

        Probabilities are clipped below at the smallest positive float64, so a confident mistake
        gives a large but finite loss.

        Parameters
        ----------
        probabilities : array-like of shape (n, num_classes)
            The model's output probabilities.
        labels : array-like of shape (n,) int
            The true label of each query (the adversary's own candidate records).
        """
        p = np.asarray(_to_numpy(probabilities), dtype=np.float64)
        y = np.asarray(_to_numpy(labels))
        if p.ndim != 2 or y.shape != (p.shape[0],):
            raise ValueError(
                f"from_confidences needs probabilities of shape (n, num_classes) and labels of shape (n,); "
                f"got {p.shape} and {y.shape}."
            )
        _check_labels(y, p.shape[1], "LossObservations.from_confidences")
        if not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()):
            raise ValueError("from_confidences: probabilities must lie in [0, 1].")
        picked = p[np.arange(p.shape[0]), y.astype(np.int64)]
        return cls(-np.log(np.maximum(picked, np.finfo(np.float64).tiny)))

    @classmethod
    def from_model(cls, model: nn.Module, X: Any, y: Any, *, batch_size: int = 4096) -> LossObservations:
        """Query ``model`` on ``(X, y)``; see :func:`per_example_loss`."""
        return cls(per_example_loss(model, X, y, batch_size=batch_size))


def _check_labels(y: np.ndarray, num_classes: int | None, owner: str) -> None:
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not (np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y))):
            raise ValueError(f"{owner}: labels must be integers, got dtype {y.dtype}.")
    if y.size and num_classes is None and y.min() < 0:
        raise ValueError(f"{owner}: labels must be non-negative class indices; got {y.min()}.")
    if y.size and num_classes is not None and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"{owner}: labels must lie in [0, {num_classes - 1}] for {num_classes} classes; "
            f"got values from {y.min()} to {y.max()}."
        )


# --------------------------------------------------------------------------- per-example loss


def per_example_loss(model: nn.Module, X: Any, y: Any, batch_size: int = 4096) -> np.ndarray:
    """Per-example cross-entropy of a torch classifier, in float64.

    The model runs in eval mode (dropout off) under ``torch.inference_mode``, in batches; its
    training/eval mode is restored afterwards. Logits are cast to float64 before the log-softmax, so
    tiny losses of memorised examples (which carry the membership signal) are not rounded to 0.

    Parameters
    ----------
    model : nn.Module
        Maps a batch to logits of shape ``(b, num_classes)``; a single output column (or a 1-D
        output) is read as the logit of class 1 of a binary classifier (binary cross-entropy).
    X : ndarray or Tensor of shape (n, ...)
        Inputs; floating inputs are cast to the dtype of the model's parameters and moved to their device.
    y : ndarray or Tensor of shape (n,) int
        True labels.
    batch_size : int
        Examples per forward pass (does not change the result).

    Returns
    -------
    ndarray of shape (n,) float64
    """
    owner = "per_example_loss"
    check_param("batch_size", batch_size, owner, POSITIVE_INT)
    if not isinstance(X, torch.Tensor):
        X = np.asarray(X)
    y_np = _to_numpy(y)
    if X.ndim == 0 or y_np.ndim != 1 or y_np.shape[0] != X.shape[0]:
        raise ValueError(
            f"{owner}: y must have shape ({X.shape[0] if X.ndim else 0},) to match X, got {y_np.shape}."
        )
    n = int(X.shape[0])
    if n == 0:
        raise ValueError(f"{owner}: X holds no examples.")
    _check_labels(y_np, None, owner)
    y_t = torch.from_numpy(y_np.astype(np.int64))

    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    float_dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32

    out = np.empty(n, dtype=np.float64)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, n, batch_size):
                xb = X[start : start + batch_size]
                # numpy batches are copied (cheap next to the forward pass; read-only arrays are fine)
                xb = xb if isinstance(xb, torch.Tensor) else torch.tensor(xb)
                xb = xb.to(device=device, dtype=float_dtype) if xb.is_floating_point() else xb.to(device)
                yb = y_t[start : start + batch_size].to(device)
                logits = model(xb).to(torch.float64)
                out[start : start + batch_size] = _cross_entropy(logits, yb, owner).cpu().numpy()
    finally:
        model.train(was_training)
    return out


def _cross_entropy(logits: torch.Tensor, y: torch.Tensor, owner: str) -> torch.Tensor:
    if logits.ndim == 2 and logits.shape[1] == 1:
        logits = logits[:, 0]
    if logits.ndim == 1:
        if bool(((y != 0) & (y != 1)).any()):
            raise ValueError(f"{owner}: a model with one output column needs labels 0 or 1.")
        # Binary cross-entropy with logits: softplus(-z) for label 1, softplus(z) for label 0.
        return F.softplus(torch.where(y == 1, -logits, logits))
    if logits.ndim != 2:
        raise ValueError(
            f"{owner}: the model must return logits of shape (b, num_classes), got {tuple(logits.shape)}."
        )
    num_classes = logits.shape[1]
    if bool((y >= num_classes).any()):
        raise ValueError(
            f"{owner}: labels must lie in [0, {num_classes - 1}] for a model with {num_classes} outputs."
        )
    return F.cross_entropy(logits, y, reduction="none")


# --------------------------------------------------------------------------- the attack


class LossThresholdAttack(Attack):
    """The LOSS membership attack of Yeom et al. (2018): score = -loss, higher means member.

    Parameters
    ----------
    threat_model : ThreatModel
        Must grant ``Access.LOSS`` (see the module notes); otherwise :class:`ThreatModelError`.
    threshold : float, optional
        A loss threshold known in advance (for instance the published average training loss); targets
        with ``loss <= threshold`` are flagged as members. :meth:`fit` learns one instead.

    Attributes
    ----------
    threshold_ : float or None
        The loss threshold in use after :meth:`fit`.
    n_auxiliary_ : int
        Number of auxiliary losses the threshold was calibrated on (0 when given, not learned).

    Notes
    -----
    The ranking metrics (AUC, TPR at low FPR) do not depend on the threshold; it only decides the
    attack's own yes/no guesses, scored as ``balanced_accuracy_at_threshold``.
    """

    name = "loss-threshold"  # the result's key in reports, and the subject of threat-model errors
    requires = (Access.LOSS,)

    def __init__(self, threat_model: ThreatModel, *, threshold: float | None = None) -> None:
        super().__init__(threat_model)
        self.threshold = threshold

    def fit(self, auxiliary: LossObservations | None = None) -> LossThresholdAttack:
        """Calibrate the loss threshold as the mean of ``auxiliary`` losses (Yeom et al.'s rule).

        Yeom et al. assume the adversary knows the average training loss; pass losses on training
        data for that. Losses on population data give a higher threshold (more targets flagged, more
        false positives). With ``auxiliary=None`` the constructor's ``threshold`` is used as is.
        """
        if auxiliary is None:
            if self.threshold is not None:
                check_param("threshold", self.threshold, type(self).__name__, _REAL)
            self.threshold_ = None if self.threshold is None else float(self.threshold)
            self.n_auxiliary_ = 0
            return self
        if not isinstance(auxiliary, LossObservations):
            raise TypeError(
                f"{type(self).__name__}.fit expects LossObservations, got {type(auxiliary).__name__}."
            )
        self.threshold_ = float(auxiliary.losses.mean())
        self.n_auxiliary_ = len(auxiliary)
        return self

    def run(self, observations: LossObservations) -> AttackResult:
        """Score each target by its negative loss.

        Parameters
        ----------
        observations : LossObservations
            The losses of the targets (no ground truth).

        Returns
        -------
        AttackResult
            ``scores = -losses``; when a threshold is set, ``guesses`` is the boolean array
            ``loss <= threshold`` and ``details`` records ``loss_threshold`` and ``score_threshold``
            (``= -loss_threshold``, read by :func:`~ppml.attacks.metrics.score_membership`).
        """
        if not isinstance(observations, LossObservations):
            raise TypeError(
                f"{type(self).__name__}.run expects LossObservations (see LossObservations.from_model), "
                f"got {type(observations).__name__}."
            )
        start = time.perf_counter()
        if hasattr(self, "threshold_"):
            threshold, n_auxiliary = self.threshold_, self.n_auxiliary_
        else:  # not fitted: the constructor's threshold, if any
            if self.threshold is not None:
                check_param("threshold", self.threshold, type(self).__name__, _REAL)
            threshold, n_auxiliary = (None if self.threshold is None else float(self.threshold)), 0
        losses = observations.losses
        scores = -losses
        details: dict[str, Any] = {"n_targets": len(observations)}
        guesses = None
        if threshold is not None:
            guesses = losses <= threshold
            details["loss_threshold"] = threshold
            details["score_threshold"] = -threshold
            details["n_auxiliary"] = n_auxiliary
        return AttackResult(
            attack=self.name,
            threat_model=self.threat_model,
            scores=scores,
            guesses=guesses,
            details=details,
            seconds=time.perf_counter() - start,
        )


# --------------------------------------------------------------------------- the audit


def _check_xy(pair: Any, which: str) -> tuple[np.ndarray, np.ndarray]:
    owner = "membership_audit"
    if hasattr(pair, "X") and hasattr(pair, "y"):  # a ppml Dataset
        pair = (pair.X, pair.y)
    if not (isinstance(pair, Sequence) and len(pair) == 2):
        raise TypeError(f"{owner}: {which} must be a pair (X, y) or a Dataset, got {type(pair).__name__}.")
    X, y = _to_numpy(pair[0]), _to_numpy(pair[1])
    if X.ndim == 0 or y.ndim != 1 or X.shape[0] != y.shape[0]:
        raise ValueError(
            f"{owner}: {which} must be (X of shape (n, ...), y of shape (n,)); got {X.shape} and {y.shape}."
        )
    if y.size == 0:
        raise ValueError(f"{owner}: {which} is empty; it needs at least one example.")
    return X, y


def _row_keys(X: np.ndarray, y: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """One fixed-width byte string per example: its features (in a common dtype) and its label."""
    feats = np.ascontiguousarray(X.reshape(X.shape[0], -1), dtype=dtype)
    if np.issubdtype(dtype, np.floating):
        feats = feats + dtype.type(0)  # -0.0 -> 0.0, so equal values have equal bytes
    labels = np.ascontiguousarray(y.astype(np.int64).reshape(-1, 1))
    rows = np.ascontiguousarray(
        np.concatenate([feats.view(np.uint8).reshape(X.shape[0], -1), labels.view(np.uint8)], axis=1)
    )
    return rows.view(np.dtype((np.void, rows.shape[1]))).ravel()


def _check_disjoint(Xm: np.ndarray, ym: np.ndarray, Xn: np.ndarray, yn: np.ndarray) -> None:
    """Refuse member and non-member sets that share an identical example (features and label)."""
    if Xm.shape[1:] != Xn.shape[1:]:
        raise ValueError(
            f"membership_audit: members and non_members have different example shapes "
            f"{Xm.shape[1:]} and {Xn.shape[1:]}."
        )
    dtype = np.result_type(Xm.dtype, Xn.dtype)
    km, kn = _row_keys(Xm, ym, dtype), _row_keys(Xn, yn, dtype)
    shared = np.intersect1d(km, kn)
    if shared.size:
        i = int(np.flatnonzero(np.isin(km, shared))[0])
        j = int(np.flatnonzero(kn == km[i])[0])
        raise ValueError(
            f"membership_audit: members and non_members share {shared.size} identical example(s) "
            f"(same features and label), e.g. member {i} and non-member {j}; an example cannot be both. "
            "Remove the duplicates before auditing."
        )


def membership_audit(
    model: nn.Module,
    members: tuple[Any, Any] | Any,
    non_members: tuple[Any, Any] | Any,
    *,
    rng: SeedLike,
    threat_model: ThreatModel | None = None,
    yeom_threshold: bool = True,
    fprs: Sequence[float] = (0.01, 0.001),
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    roc_points: int = 100,
    batch_size: int = 4096,
) -> AttackResult:
    """Run the LOSS attack on a trained model and score it: one call from a model to audited numbers.

    Parameters
    ----------
    model : nn.Module
        The target classifier.
    members : (X, y) or Dataset
        Examples that were in the training set.
    non_members : (X, y) or Dataset
        Examples from the same distribution that were not; must share no identical example
        (features and label) with ``members``.
    rng : int, SeedSequence or numpy Generator
        Subsamples the larger set to the size of the smaller (so that both classes weigh the same)
        and seeds the bootstrap interval of the AUC.
    threat_model : ThreatModel, optional
        Defaults to an API client that queries labelled records and sees their loss, knowing the
        average training loss. Must grant ``Access.LOSS``.
    yeom_threshold : bool
        Calibrate the attack's threshold on the members' average loss (Yeom et al.'s adversary knows
        it) and report ``balanced_accuracy_at_threshold``. The ranking metrics do not depend on it.
    fprs, n_bootstrap, confidence, roc_points
        Passed to :func:`~ppml.attacks.metrics.score_membership`.
    batch_size : int
        Forward-pass batch size (does not change the result).

    Returns
    -------
    AttackResult
        Scored (see :func:`~ppml.attacks.metrics.score_membership`); ``details`` also records
        ``n_members_given``, ``n_non_members_given`` and ``query_seconds``; ``seconds`` covers querying
        the model and running the attack.
    """
    gen = as_generator(rng)
    Xm, ym = _check_xy(members, "members")
    Xn, yn = _check_xy(non_members, "non_members")
    _check_disjoint(Xm, ym, Xn, yn)
    if threat_model is None:
        threat_model = ThreatModel.of(
            Access.LOSS,
            adversary="API client querying labelled records",
            auxiliary="the average training loss (Yeom et al. 2018)" if yeom_threshold else "",
        )
    attack = LossThresholdAttack(threat_model)  # refuses a threat model without LOSS

    n = min(len(ym), len(yn))
    idx_m = np.sort(gen.choice(len(ym), size=n, replace=False)) if len(ym) > n else np.arange(n)
    idx_n = np.sort(gen.choice(len(yn), size=n, replace=False)) if len(yn) > n else np.arange(n)

    start = time.perf_counter()
    if yeom_threshold:
        losses_m_all = per_example_loss(model, Xm, ym, batch_size=batch_size)
        losses_m = losses_m_all[idx_m]
        attack.fit(LossObservations(losses_m_all))
    else:
        losses_m = per_example_loss(model, Xm[idx_m], ym[idx_m], batch_size=batch_size)
        attack.fit(None)
    losses_n = per_example_loss(model, Xn[idx_n], yn[idx_n], batch_size=batch_size)
    query_seconds = time.perf_counter() - start

    result = attack.run(LossObservations(np.concatenate([losses_m, losses_n])))
    is_member = np.r_[np.ones(n, dtype=bool), np.zeros(n, dtype=bool)]
    scored = score_membership(
        result,
        is_member,
        fprs=fprs,
        rng=gen,
        n_bootstrap=n_bootstrap,
        confidence=confidence,
        roc_points=roc_points,
    )
    details = dict(scored.details)
    details.update(
        n_members_given=int(len(ym)),
        n_non_members_given=int(len(yn)),
        query_seconds=round(query_seconds, 4),
    )
    return replace(scored, details=details, seconds=query_seconds + result.seconds)


# --------------------------------------------------------------------------- black-box queries


class ModelAPI:
    """A deployed model as an adversary reaches it: only the outputs it ``exposes`` come back.

    The attacks in :mod:`ppml.attacks.shadow`, :mod:`~ppml.attacks.lira`, :mod:`~ppml.attacks.rmia`
    and :mod:`~ppml.attacks.label_only` query the target through this object, so that an attack
    needing confidences from a label-only API is refused (:class:`ThreatModelError`) instead of
    silently reading the model.

    Parameters
    ----------
    model : nn.Module or callable
        The target; a callable maps a float32 batch (Tensor) to logits.
    exposes : Access or iterable of Access
        What the API returns: ``LABELS`` (top-1), ``CONFIDENCES`` (probability vectors), ``LOGITS``,
        ``LOSS`` (on labelled queries). Exposing logits implies confidences and labels; exposing
        confidences implies labels and loss.
    batch_size : int
        Examples per forward pass (does not change the result).

    Attributes
    ----------
    n_queries_ : int
        Examples queried so far.
    """

    def __init__(
        self,
        model: nn.Module | Any,
        exposes: Access | str | Sequence[Access | str],
        *,
        batch_size: int = 4096,
    ) -> None:
        check_param("batch_size", batch_size, "ModelAPI", POSITIVE_INT)
        items = [exposes] if isinstance(exposes, (Access, str)) else list(exposes)
        granted = {Access(a) for a in items}
        if Access.LOGITS in granted:
            granted |= {Access.CONFIDENCES, Access.LABELS, Access.LOSS}
        if Access.CONFIDENCES in granted:
            granted |= {Access.LABELS, Access.LOSS}
        self.model = model
        self.exposes = frozenset(granted)
        self.batch_size = batch_size
        self.n_queries_ = 0

    def _require(self, attack: str, needed: Access) -> None:
        if needed not in self.exposes:
            granted = ", ".join(sorted(a.value for a in self.exposes)) or "nothing"
            raise ThreatModelError(f"{attack} needs {needed.value} but the target exposes only {granted}.")

    @torch.no_grad()
    def _logits64(self, X: Any) -> np.ndarray:
        Xt = X if isinstance(X, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(X))
        if Xt.ndim == 0 or Xt.shape[0] == 0:
            raise ValueError(
                f"ModelAPI: queries must hold at least one example, got shape {tuple(Xt.shape)}."
            )
        module = self.model if isinstance(self.model, nn.Module) else None
        param = next(module.parameters(), None) if module is not None else None
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        was_training = module.training if module is not None else False
        if module is not None:
            module.eval()
        try:
            outs = []
            for start in range(0, Xt.shape[0], self.batch_size):
                xb = Xt[start : start + self.batch_size].to(device=device, dtype=dtype)
                outs.append(torch.as_tensor(self.model(xb)).to(torch.float64).cpu())
        finally:
            if module is not None:
                module.train(was_training)
        self.n_queries_ += int(Xt.shape[0])
        out = torch.cat(outs).numpy()
        if out.ndim != 2:
            raise ValueError(
                f"ModelAPI: the model must return logits of shape (b, classes), got {out.shape}."
            )
        return out

    def logits(self, X: Any, *, attack: str = "this attack") -> np.ndarray:
        """Logits, float64, shape ``(n, classes)``; needs ``LOGITS``."""
        self._require(attack, Access.LOGITS)
        return self._logits64(X)

    def confidences(self, X: Any, *, attack: str = "this attack") -> np.ndarray:
        """Probability vectors (softmax computed in float64), shape ``(n, classes)``; needs ``CONFIDENCES``."""
        self._require(attack, Access.CONFIDENCES)
        z = torch.from_numpy(self._logits64(X))
        return torch.softmax(z, dim=1).numpy()

    def labels(self, X: Any, *, attack: str = "this attack") -> np.ndarray:
        """Top-1 predicted labels, shape ``(n,)``; needs ``LABELS``."""
        self._require(attack, Access.LABELS)
        return self._logits64(X).argmax(axis=1)

    def loss(self, X: Any, y: Any, *, attack: str = "this attack") -> np.ndarray:
        """Per-example cross-entropy (float64) on labelled queries; needs ``LOSS``."""
        self._require(attack, Access.LOSS)
        z = torch.from_numpy(self._logits64(X))
        t = torch.from_numpy(np.asarray(_to_numpy(y)).astype(np.int64))
        return F.cross_entropy(z, t, reduction="none").numpy()

    def scaled_confidence(self, X: Any, y: Any, *, attack: str = "this attack") -> np.ndarray:
        """LiRA's logit-scaled confidence of the true label, from logits when exposed, else confidences."""
        if Access.LOGITS in self.exposes:
            return logit_scaled_confidence(self.logits(X, attack=attack), y, from_logits=True)
        self._require(attack, Access.CONFIDENCES)
        return logit_scaled_confidence(self.confidences(X, attack=attack), y, from_logits=False)


@dataclass(frozen=True, eq=False)
class TargetQueries:
    """The observations of a black-box membership attack: the target's API and the candidate records.

    Parameters
    ----------
    api : ModelAPI
        The target model as the adversary reaches it.
    X : ndarray of shape (n, ...)
        The candidate records (the adversary's own data).
    y : ndarray of shape (n,) int
        Their true labels (the adversary knows its records).
    """

    api: ModelAPI
    X: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if not isinstance(self.api, ModelAPI):
            raise TypeError(f"TargetQueries: api must be a ModelAPI, got {type(self.api).__name__}.")
        X, y = _to_numpy(self.X), _to_numpy(self.y)
        if X.ndim == 0 or y.ndim != 1 or X.shape[0] != y.shape[0] or y.size == 0:
            raise ValueError(
                f"TargetQueries needs X of shape (n, ...) and y of shape (n,) with n >= 1; got {X.shape} "
                f"and {y.shape}."
            )
        _check_labels(y, None, "TargetQueries")
        object.__setattr__(self, "X", X)
        object.__setattr__(self, "y", y.astype(np.int64))

    def __len__(self) -> int:
        return int(self.y.size)


def logit_scaled_confidence(outputs: Any, labels: Any, *, from_logits: bool) -> np.ndarray:
    """LiRA's statistic ``phi = log p_y - log sum_{y' != y} p_y'`` (Carlini et al. 2022), in float64.

    Parameters
    ----------
    outputs : array-like of shape (..., n, classes)
        Logits (``from_logits=True``) or probability vectors; leading axes (shadow models) allowed.
    labels : array-like of shape (n,) int
        The true label of each example.
    from_logits : bool
        From logits, ``phi = z_y - logsumexp_{y' != y} z_y'``: exact for confident examples, where
        ``log(p / (1 - p))`` from rounded probabilities would be infinite. From probabilities, the
        sum of the other classes is summed directly (no ``1 - p`` cancellation) and clipped below at
        the smallest positive float64.

    Returns
    -------
    ndarray of shape (..., n) float64
    """
    o = torch.as_tensor(np.asarray(_to_numpy(outputs), dtype=np.float64))
    y = np.asarray(_to_numpy(labels)).astype(np.int64)
    if o.ndim < 2 or o.shape[-2] != y.shape[0] or y.ndim != 1:
        raise ValueError(
            f"logit_scaled_confidence: outputs must have shape (..., n, classes) with n = len(labels) = "
            f"{y.shape[0]}, got {tuple(o.shape)}."
        )
    classes = o.shape[-1]
    if y.size and (y.min() < 0 or y.max() >= classes):
        raise ValueError(f"logit_scaled_confidence: labels must lie in [0, {classes - 1}].")
    yt = torch.from_numpy(y)
    onehot = F.one_hot(yt, classes).to(torch.bool).expand(o.shape)
    picked = o.gather(-1, yt.view(*([1] * (o.ndim - 2)), -1, 1).expand(*o.shape[:-1], 1)).squeeze(-1)
    if from_logits:
        others = torch.logsumexp(o.masked_fill(onehot, float("-inf")), dim=-1)
        return (picked - others).numpy()
    tiny = np.finfo(np.float64).tiny
    rest = o.masked_fill(onehot, 0.0).sum(-1)
    return (torch.log(picked.clamp_min(tiny)) - torch.log(rest.clamp_min(tiny))).numpy()


# --------------------------------------------------------------------------- auditing any attack


def count_overlap(members: Any, non_members: Any) -> int:
    """How many member rows also appear, identical in features and label, among the non-members."""
    Xm, ym = _check_xy(members, "members")
    Xn, yn = _check_xy(non_members, "non_members")
    if Xm.shape[1:] != Xn.shape[1:]:
        raise ValueError(
            f"members and non_members have different example shapes {Xm.shape[1:]} and {Xn.shape[1:]}."
        )
    dtype = np.result_type(Xm.dtype, Xn.dtype)
    return int(np.count_nonzero(np.isin(_row_keys(Xm, ym, dtype), _row_keys(Xn, yn, dtype))))


def run_membership_audit(
    attack: Attack,
    target: nn.Module | ModelAPI,
    members: tuple[Any, Any] | Any,
    non_members: tuple[Any, Any] | Any,
    *,
    rng: SeedLike = None,
    fprs: Sequence[float] = (0.01, 0.001),
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    roc_points: int = 100,
) -> AttackResult:
    """Query ``target`` with members and non-members, run a fitted ``attack`` and score it.

    The generalisation of :func:`membership_audit` to any black-box membership attack
    (:class:`~ppml.attacks.shadow.ShadowModelAttack`, :class:`~ppml.attacks.lira.LiRA`,
    :class:`~ppml.attacks.rmia.RMIA`, :class:`~ppml.attacks.label_only.LabelOnlyAttack`). The attack
    sees only :class:`TargetQueries` (the candidate records, members first, and the API); the
    ground truth goes to :func:`~ppml.attacks.metrics.score_membership` alone.

    Parameters
    ----------
    attack : Attack
        Fitted (shadow or reference models trained); its ``run`` takes :class:`TargetQueries`.
    target : nn.Module or ModelAPI
        A module is wrapped in a :class:`ModelAPI` exposing exactly the attack's threat model.
    members, non_members : (X, y) or Dataset
        Must share no identical example; an overlap raises ``ValueError`` with its count.
    rng : seed, optional
        Seeds the AUC bootstrap (``None``: DeLong interval).
    fprs, n_bootstrap, confidence, roc_points
        Passed to :func:`~ppml.attacks.metrics.score_membership`.
    """
    Xm, ym = _check_xy(members, "members")
    Xn, yn = _check_xy(non_members, "non_members")
    overlap = count_overlap((Xm, ym), (Xn, yn))
    if overlap:
        raise ValueError(
            f"run_membership_audit: {overlap} member example(s) also appear among the non_members (same "
            "features and label); an example cannot be both. Remove the duplicates before auditing."
        )
    api = target if isinstance(target, ModelAPI) else ModelAPI(target, attack.threat_model.access)
    queries = TargetQueries(api, np.concatenate([Xm, Xn]), np.concatenate([ym, yn]))
    result = attack.run(queries)
    is_member = np.r_[np.ones(len(ym), dtype=bool), np.zeros(len(yn), dtype=bool)]
    return score_membership(
        result,
        is_member,
        fprs=fprs,
        rng=None if rng is None else as_generator(rng),
        n_bootstrap=n_bootstrap,
        confidence=confidence,
        roc_points=roc_points,
    )


# --------------------------------------------------------------------------- user-level membership


def aggregate_by_owner(result: AttackResult, owners: Any, *, how: str = "mean") -> AttackResult:
    """User-level membership ("was this vehicle in training?") from per-record scores.

    Parameters
    ----------
    result : AttackResult
        Per-record membership scores (higher = member), e.g. from LiRA or the LOSS attack.
    owners : array-like of shape (n,)
        The owner (user, vehicle, client) of each record.
    how : {"mean", "sum", "max"}
        ``"mean"``: the average record score. ``"sum"``: for LiRA's online score (a log-likelihood
        ratio per record) the sum is the log-likelihood ratio of all the owner's records together
        under independence, i.e. LiRA per user. ``"max"``: the owner's most exposed record.

    Returns
    -------
    AttackResult
        One score per distinct owner, in ``np.unique(owners)`` order (the owners are in ``guesses``);
        score it with :func:`~ppml.attacks.metrics.score_membership` and :func:`owner_membership`.
    """
    check_param("how", how, "aggregate_by_owner", Options(("mean", "sum", "max")))
    if result.scores is None:
        raise ValueError(f"aggregate_by_owner: the result of {result.attack!r} holds no scores.")
    s = np.asarray(result.scores, dtype=np.float64)
    o = np.asarray(_to_numpy(owners))
    if o.shape != s.shape:
        raise ValueError(
            f"aggregate_by_owner: owners must have shape {s.shape} like the scores, got {o.shape}."
        )
    uniq, inv = np.unique(o, return_inverse=True)
    counts = np.bincount(inv, minlength=uniq.size)
    if how == "max":
        agg = np.full(uniq.size, -np.inf)
        np.maximum.at(agg, inv, s)
    else:
        agg = np.bincount(inv, weights=s, minlength=uniq.size)
        if how == "mean":
            agg = agg / counts
    details = {k: v for k, v in result.details.items() if k not in ("roc", "score_threshold")}
    details.update(level="owner", aggregation=how, n_owners=int(uniq.size), n_records=int(s.size))
    return AttackResult(
        attack=f"{result.attack} (per owner, {how})",
        threat_model=result.threat_model,
        scores=agg,
        guesses=uniq,
        details=details,
        seconds=result.seconds,
    )


def owner_membership(is_member: Any, owners: Any) -> np.ndarray:
    """Ground truth per owner, in ``np.unique(owners)`` order: an owner is a member if any record is.

    For the scorer only (the attack never sees it).
    """
    m = np.asarray(_to_numpy(is_member)).astype(bool)
    o = np.asarray(_to_numpy(owners))
    if o.shape != m.shape:
        raise ValueError(f"owner_membership: owners must have shape {m.shape}, got {o.shape}.")
    _, inv = np.unique(o, return_inverse=True)
    return np.bincount(inv, weights=m.astype(np.float64)) > 0


def check_run_inputs(attack: Any, observations: Any, fitted: str) -> None:
    """Refuse ``run`` on anything but :class:`TargetQueries`, or before ``fit`` set ``fitted``."""
    if not isinstance(observations, TargetQueries):
        raise TypeError(
            f"{type(attack).__name__}.run expects TargetQueries, got {type(observations).__name__}."
        )
    if not hasattr(attack, fitted):
        raise RuntimeError(f"{type(attack).__name__}: call fit(auxiliary) before run.")
