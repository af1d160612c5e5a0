"""Defences seen from the adversary's side: what a defended target still lets an attack observe.

Two output-side defences of a deployed classifier, and the observation secure aggregation leaves a
federated server. Each is a *view* that the attacks of this package query unchanged, so that a
defence is measured by the same attacks as the undefended target.

* **Top-1 labels only** needs no wrapper: ``ModelAPI(model, Access.LABELS)`` answers
  :meth:`~ppml.attacks.membership.ModelAPI.labels` and refuses confidences, logits and losses with
  :class:`~ppml.attacks.base.ThreatModelError` (label-only attacks still run; Choquette-Choo et al.
  2021 show they recover much of the membership signal).
* **Rounded confidences** (:class:`RoundedConfidences`): the API returns the probability vector
  rounded to a few decimals and never the logits, the "confidence masking" evaluated by Shokri et al.
  (2017, Sec. VI) and shown by Choquette-Choo et al. (2021) to leave label-only attacks untouched.
* **Secure aggregation** (:func:`secure_aggregate_view`): the server learns only the sum of the
  round's (clipped) client updates (Bonawitz et al. 2017). The function computes that sum in the
  clear; it is the *observation* a correct secure aggregation protocol leaves, not a cryptographic
  implementation (for the protocols see :mod:`ppml.secure`).

References
----------
R. Shokri, M. Stronati, C. Song, V. Shmatikov. Membership inference attacks against machine learning
models. IEEE S&P 2017.
C. A. Choquette-Choo, F. Tramer, N. Carlini, N. Papernot. Label-only membership inference attacks.
ICML 2021.
K. Bonawitz, V. Ivanov, B. Kreuter, A. Marcedone, H. B. McMahan, S. Patel, D. Ramage, A. Segal,
K. Seth. Practical secure aggregation for privacy-preserving machine learning. ACM CCS 2017.
H. B. McMahan, D. Ramage, K. Talwar, L. Zhang. Learning differentially private recurrent language
models. ICLR 2018 (clipped updates, Gaussian noise on their sum).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .._rng import SeedLike, as_generator
from .._validation import NONNEG_FLOAT, POSITIVE_FLOAT, Interval, check_param
from .base import Access
from .gradients import ClientUpdate
from .membership import ModelAPI, _to_numpy

__all__ = ["RoundedConfidences", "secure_aggregate_view"]

_DECIMALS = Interval(int, 0, None, "left")


class RoundedConfidences(ModelAPI):
    """A deployed model that answers with its probability vector rounded to ``decimals`` decimals.

    The API exposes ``CONFIDENCES`` (rounded), ``LABELS`` (the model's top-1 class, computed before
    rounding, as a deployment that reports its prediction beside the scores would) and ``LOSS``
    (``-log`` of the rounded probability of the query's label, clipped below at the smallest positive
    float64: what an adversary computes from the rounded vector). It never exposes ``LOGITS``: an
    attack that asks for them gets :class:`~ppml.attacks.base.ThreatModelError`, and LiRA falls back to
    the rounded confidences. Rounded vectors are returned as the API would send them, not
    renormalised (a row may not sum to 1, and small probabilities become 0).

    Parameters
    ----------
    model : nn.Module, callable, or ModelAPI
        The target (a callable maps a float32 batch to logits). A :class:`ModelAPI` must expose
        confidences; its model is wrapped.
    decimals : int >= 0
        Decimal places kept (``2``: ``0.97``; ``0``: every probability becomes 0 or 1).
    batch_size : int
        Examples per forward pass (does not change the result).

    Attributes
    ----------
    n_queries_ : int
        Examples queried so far.

    Privacy guarantee
    -----------------
    None formal: rounding is post-processing that hides small differences in confidence but keeps
    the label and (for confident predictions) most of the membership signal.
    """

    def __init__(self, model: nn.Module | ModelAPI | Any, decimals: int, *, batch_size: int = 4096) -> None:
        owner = type(self).__name__
        check_param("decimals", decimals, owner, _DECIMALS)
        if isinstance(model, ModelAPI):
            model._require(owner, Access.CONFIDENCES)
            model = model.model
        super().__init__(model, (Access.CONFIDENCES,), batch_size=batch_size)
        self.decimals = decimals

    def confidences(self, X: Any, *, attack: str = "this attack") -> np.ndarray:
        """The probability vectors rounded to ``decimals`` places, shape ``(n, classes)``."""
        self._require(attack, Access.CONFIDENCES)
        z = torch.from_numpy(self._logits64(X))
        return np.round(torch.softmax(z, dim=1).numpy(), self.decimals)

    def loss(self, X: Any, y: Any, *, attack: str = "this attack") -> np.ndarray:
        """``-log`` of the rounded probability of the true label (float64, finite)."""
        self._require(attack, Access.LOSS)
        probs = self.confidences(X, attack=attack)
        t = np.asarray(_to_numpy(y)).astype(np.int64)
        if t.shape != (probs.shape[0],):
            raise ValueError(
                f"{type(self).__name__}.loss: y must have shape ({probs.shape[0]},), got {t.shape}."
            )
        picked = probs[np.arange(t.size), t]
        return -np.log(np.maximum(picked, np.finfo(np.float64).tiny))


def secure_aggregate_view(
    updates: Sequence[ClientUpdate],
    *,
    clip_norm: float | None = None,
    noise_multiplier: float = 0.0,
    rng: SeedLike = None,
) -> ClientUpdate:
    """What the server sees of a round under secure aggregation: the sum of the clients' updates.

    Secure aggregation (Bonawitz et al. 2017) reveals to the server only ``sum_k g_k`` over the
    round's surviving clients, never a single ``g_k``. This function computes that sum in the clear,
    so that reconstruction attacks (:class:`~ppml.attacks.gradients.AnalyticFCInversion`,
    :class:`~ppml.attacks.gradients.InvertingGradients`, ...) can be run against it; it is the
    observation the protocol leaves, not an implementation of the protocol.

    With ``clip_norm`` each update is first scaled to L2 norm at most ``clip_norm`` (DP-FedAvg clips
    before aggregating); with ``noise_multiplier`` Gaussian noise of standard deviation
    ``noise_multiplier * clip_norm`` is added to the sum (DP-FedAvg's central noise, McMahan et al.
    2018, drawn with :class:`~ppml.dp.mechanisms.GaussianMechanism`).

    Parameters
    ----------
    updates : sequence of ClientUpdate
        The round's updates, all computed from the same global model (same parameter shapes and
        input shape). Gradients are summed as stored (a FedAvg delta is ``-lr`` times them).
    clip_norm : float > 0, optional
        Per-client L2 clipping bound applied before the sum.
    noise_multiplier : float >= 0
        ``z``; needs ``clip_norm``.
    rng : int, SeedSequence or numpy Generator
        Noise source; required when ``noise_multiplier > 0``.

    Returns
    -------
    ClientUpdate
        The first update's global model, the summed gradients, ``batch_size`` the total number of
        examples (clients report their counts for weighting) and no labels (a sum carries none).
        Attacks that read it as one client's batch recover mixtures of the clients' examples.
    """
    owner = "secure_aggregate_view"
    if clip_norm is not None:
        check_param("clip_norm", clip_norm, owner, POSITIVE_FLOAT)
    check_param("noise_multiplier", noise_multiplier, owner, NONNEG_FLOAT)
    if noise_multiplier > 0 and clip_norm is None:
        raise ValueError(f"{owner}: noise_multiplier > 0 needs clip_norm (the noise is sized by it).")
    ups = list(updates)
    if not ups:
        raise ValueError(f"{owner}: updates is empty; a round needs at least one client update.")
    for i, u in enumerate(ups):
        if not isinstance(u, ClientUpdate):
            raise TypeError(f"{owner}: update {i} is a {type(u).__name__}, not a ClientUpdate.")
    first = ups[0]
    shapes = [tuple(g.shape) for g in first.gradients]
    for i, u in enumerate(ups[1:], start=1):
        if [tuple(g.shape) for g in u.gradients] != shapes or u.input_shape != first.input_shape:
            raise ValueError(
                f"{owner}: update {i} has other parameter or input shapes than update 0; the updates of "
                "one round all come from the same global model."
            )
    flats = torch.stack([u.flat().to(torch.float64) for u in ups])
    if clip_norm is not None:
        norms = torch.linalg.vector_norm(flats, dim=1, keepdim=True)
        flats = flats * torch.clamp(float(clip_norm) / norms.clamp_min(1e-300), max=1.0)
    total = flats.sum(dim=0)
    if noise_multiplier > 0:
        from ..dp.mechanisms import GaussianMechanism

        mech = GaussianMechanism(sensitivity=float(clip_norm), noise_multiplier=float(noise_multiplier))  # type: ignore[arg-type]
        total = torch.as_tensor(mech(total, as_generator(rng)), dtype=torch.float64)
    grads, start = [], 0
    for g in first.gradients:
        grads.append(total[start : start + g.numel()].reshape(g.shape).to(g.dtype))
        start += g.numel()
    return ClientUpdate.from_gradients(
        first.model,
        grads,
        batch_size=int(sum(u.batch_size for u in ups)),
        input_shape=first.input_shape,
    )
