"""Reconstruction of training data from one client's model update.

A federated server (or anyone who reads the traffic) holds the global model it sent and one client's
update: the gradient of the client's loss on a batch, or the model after one local SGD step with a
known learning rate, from which the gradient follows (``g = (w_before - w_after) / lr``). These
attacks turn that update back into the client's examples.

* :class:`AnalyticFCInversion`: a fully connected layer ``z = W x + b`` receives, for one example,
  ``dL/dW = (dL/dz) x^T`` and ``dL/db = dL/dz``; every row ``i`` with ``dL/db_i != 0`` gives
  ``x = (dL/dW)_i / (dL/db)_i`` exactly (Phong et al., "Privacy-preserving deep learning via
  additively homomorphic encryption", IEEE TIFS 2018 / ATIS 2017; Geiping et al., "Inverting
  Gradients - How easy is it to break privacy in federated learning?", NeurIPS 2020, Sec. 4). For a
  batch, each row holds a mixture of the examples weighted by their ``dL/db_i``; only rows that one
  example alone activates (ReLU units) give that example exactly.
* :func:`infer_labels`: the label of a single example is the one class whose entry of the last
  layer's bias gradient is negative, ``softmax(z) - onehot(y)`` (iDLG: Zhao, Mopuri and Bilen,
  "iDLG: Improved Deep Leakage from Gradients", 2020); for a batch a label-count heuristic in the
  spirit of Wainakh et al. (PETS 2022) estimates how many examples of each class it holds.
* :class:`DLG`: "Deep Leakage from Gradients" (Zhu, Liu and Han, NeurIPS 2019): optimise dummy inputs
  and soft labels with L-BFGS so that their gradient matches the observed one in squared L2 distance.
* :class:`InvertingGradients`: Geiping et al. 2020: minimise the cosine distance between gradients
  plus a total-variation image prior, with Adam on the *signed* gradient of the dummy input, a step
  decay of the learning rate, box constraints and several restarts (the best one is kept).

Every attack works for any torch model whose loss is the mean cross-entropy of its logits over the
batch: gradients of gradients come from :func:`torch.func.functional_call` with ``create_graph``
autograd. Randomness (the dummy initialisations) comes only from an explicit ``rng``.

Threat model
------------
``Access.CLIENT_UPDATE``: the adversary holds the global model the client started from and that
client's single update (:class:`ClientUpdate`). Secure aggregation removes this access (the server
sees only a sum); DP-FedAvg's clipping and Gaussian noise (:func:`simulate_client_update` with
``noise_multiplier``) degrade what the update reveals.

Ground truth reaches only :func:`score_reconstruction` and :func:`score_location_recovery`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn
from torch.func import functional_call

from .._rng import SeedLike, as_generator, spawn, torch_generator
from .._validation import (
    NONNEG_FLOAT,
    NONNEG_INT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    Interval,
    ParameterError,
    check_param,
)
from .base import Access, Attack, AttackResult, ThreatModel
from .image_metrics import psnr, ssim

__all__ = [
    "ClientUpdate",
    "simulate_client_update",
    "infer_labels",
    "AnalyticFCInversion",
    "DLG",
    "InvertingGradients",
    "score_reconstruction",
    "score_location_recovery",
]

Bounds = tuple[float, float] | None
_REAL = Interval(float, None, None)


# --------------------------------------------------------------------------- observations


@dataclass(frozen=True, eq=False)
class ClientUpdate:
    """What the adversary observes: the global model and one client's gradient on a batch.

    Parameters
    ----------
    model : nn.Module
        The global model the client started from (the server sent it, so the server knows it). It
        maps a batch of inputs to logits; the client's loss is the mean cross-entropy over the batch.
    gradients : tuple of Tensor
        One gradient per trainable parameter of ``model``, in ``model.named_parameters()`` order.
    batch_size : int
        Number of examples in the client's batch (a server usually knows it: clients report it for
        weighting, and FedSGD fixes it).
    input_shape : tuple of int
        Shape of one example (``(1, 28, 28)``, ``(10,)``).
    labels : ndarray of shape (batch_size,), optional
        Side knowledge: the batch's labels, when the adversary knows them. ``None`` (the default)
        means the attacks infer them.

    Notes
    -----
    Build it with :meth:`from_gradients` (FedSGD: the client uploads its gradient) or
    :meth:`from_models` / :meth:`from_delta` (FedAvg with one local SGD step of known learning rate).
    """

    model: nn.Module
    gradients: tuple[torch.Tensor, ...]
    batch_size: int
    input_shape: tuple[int, ...]
    labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        owner = "ClientUpdate"
        check_param("batch_size", self.batch_size, owner, POSITIVE_INT)
        if not isinstance(self.model, nn.Module):
            raise TypeError(f"{owner}: model must be a torch nn.Module, got {type(self.model).__name__}.")
        params = _trainable(self.model)
        grads = tuple(torch.as_tensor(g).detach() for g in self.gradients)
        if len(grads) != len(params):
            raise ValueError(
                f"{owner}: the model has {len(params)} trainable parameters but {len(grads)} gradients "
                "were given (one per parameter, in named_parameters() order)."
            )
        for (name, p), g in zip(params.items(), grads, strict=True):
            if tuple(g.shape) != tuple(p.shape):
                raise ValueError(
                    f"{owner}: the gradient of {name!r} has shape {tuple(g.shape)}, the parameter "
                    f"{tuple(p.shape)}."
                )
            if not bool(torch.isfinite(g).all()):
                raise ValueError(f"{owner}: the gradient of {name!r} holds NaN or infinite values.")
        object.__setattr__(
            self, "gradients", tuple(g.to(p.dtype) for g, p in zip(grads, params.values(), strict=True))
        )
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        if self.labels is not None:
            lab = np.asarray(self.labels).astype(np.int64).reshape(-1)
            if lab.shape != (self.batch_size,):
                raise ValueError(
                    f"{owner}: labels must have shape ({self.batch_size},) to match batch_size; got {lab.shape}."
                )
            object.__setattr__(self, "labels", lab)

    @classmethod
    def from_gradients(
        cls,
        model: nn.Module,
        gradients: Sequence[torch.Tensor],
        *,
        batch_size: int,
        input_shape: Sequence[int],
        labels: Any = None,
    ) -> ClientUpdate:
        """FedSGD: the client uploads the gradient of its mean loss on one batch."""
        return cls(model, tuple(gradients), batch_size, tuple(input_shape), labels)

    @classmethod
    def from_delta(
        cls,
        model: nn.Module,
        delta: Sequence[torch.Tensor],
        *,
        lr: float,
        batch_size: int,
        input_shape: Sequence[int],
        labels: Any = None,
    ) -> ClientUpdate:
        """FedAvg with one local SGD step: ``delta = w_after - w_before = -lr * g``, so ``g = -delta / lr``.

        Parameters
        ----------
        model : nn.Module
            The global model *before* the step.
        delta : sequence of Tensor
            The client's update, one tensor per trainable parameter.
        lr : float > 0
            The local learning rate (part of the training configuration the server sends).
        """
        check_param("lr", lr, "ClientUpdate.from_delta", POSITIVE_FLOAT)
        grads = tuple(-torch.as_tensor(d).detach() / float(lr) for d in delta)
        return cls(model, grads, batch_size, tuple(input_shape), labels)

    @classmethod
    def from_models(
        cls,
        before: nn.Module,
        after: nn.Module,
        *,
        lr: float,
        batch_size: int,
        input_shape: Sequence[int],
        labels: Any = None,
    ) -> ClientUpdate:
        """FedAvg with one local SGD step, from the global model and the client's returned model."""
        pb, pa = _trainable(before), _trainable(after)
        if list(pb) != list(pa):
            raise ValueError("ClientUpdate.from_models: the two models have different parameters.")
        delta = [pa[n].detach() - pb[n].detach() for n in pb]
        return cls.from_delta(
            before, delta, lr=lr, batch_size=batch_size, input_shape=input_shape, labels=labels
        )

    def flat(self) -> torch.Tensor:
        """All gradients as one vector."""
        return torch.cat([g.reshape(-1) for g in self.gradients])


def _trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _as_tensor(a: Any, dtype: torch.dtype) -> torch.Tensor:
    t = a.detach() if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))
    return t.to(dtype)


def simulate_client_update(
    model: nn.Module,
    X: Any,
    y: Any,
    *,
    lr: float | None = None,
    clip_norm: float | None = None,
    noise_multiplier: float = 0.0,
    rng: SeedLike = None,
    reveal_labels: bool = False,
) -> ClientUpdate:
    """What an honest client sends for the batch ``(X, y)``, as the adversary receives it.

    The client computes the gradient of its mean cross-entropy on the batch. With ``lr`` it takes one
    SGD step and sends the model delta ``-lr * g`` (FedAvg, one local step); otherwise it sends ``g``
    (FedSGD). With ``clip_norm`` the sent update is scaled to L2 norm at most ``clip_norm`` and
    Gaussian noise of standard deviation ``noise_multiplier * clip_norm`` is added to every coordinate
    (:class:`ppml.dp.mechanisms.GaussianMechanism` with sensitivity ``clip_norm``), the view an
    observer has of one client's contribution under DP-FedAvg (McMahan et al. 2018) with one client
    per round, or under local noise.

    Parameters
    ----------
    model : nn.Module
        The global model (not modified).
    X : array or Tensor of shape (b, ...)
    y : array or Tensor of shape (b,) int
    lr : float > 0, optional
        The local learning rate of a one-step FedAvg update.
    clip_norm : float > 0, optional
        DP-FedAvg's clipping bound ``S`` on the update.
    noise_multiplier : float >= 0
        ``z``; needs ``clip_norm``.
    rng : int, SeedSequence or numpy Generator
        Noise source; required when ``noise_multiplier > 0``.
    reveal_labels : bool
        Put the true labels into the observation (an adversary that knows them).

    Returns
    -------
    ClientUpdate
    """
    owner = "simulate_client_update"
    if lr is not None:
        check_param("lr", lr, owner, POSITIVE_FLOAT)
    if clip_norm is not None:
        check_param("clip_norm", clip_norm, owner, POSITIVE_FLOAT)
    check_param("noise_multiplier", noise_multiplier, owner, NONNEG_FLOAT)
    check_param("reveal_labels", reveal_labels, owner, bool)
    if noise_multiplier > 0 and clip_norm is None:
        raise ValueError(f"{owner}: noise_multiplier > 0 needs clip_norm (the noise is sized by it).")
    params = _trainable(model)
    dtype = next(iter(params.values())).dtype
    Xt = _as_tensor(X, dtype)
    yt = _as_tensor(y, torch.int64).reshape(-1)
    if Xt.shape[0] != yt.shape[0] or Xt.shape[0] == 0:
        raise ValueError(f"{owner}: X and y must hold the same, non-zero number of examples.")
    detached = {n: p.detach().requires_grad_(True) for n, p in params.items()}
    loss = F.cross_entropy(functional_call(model, detached, (Xt,)), yt)
    grads = [g.detach() for g in torch.autograd.grad(loss, list(detached.values()))]
    sent = [-float(lr) * g for g in grads] if lr is not None else grads
    if clip_norm is not None:
        from ..dp.mechanisms import GaussianMechanism

        flat = torch.cat([s.reshape(-1) for s in sent]).to(torch.float64)
        norm = float(torch.linalg.vector_norm(flat))
        flat = flat * (min(1.0, float(clip_norm) / norm) if norm > 0 else 1.0)
        if noise_multiplier > 0:
            mech = GaussianMechanism(sensitivity=float(clip_norm), noise_multiplier=float(noise_multiplier))
            flat = mech(flat, as_generator(rng))
        sent, start = [], 0
        for g in grads:
            sent.append(flat[start : start + g.numel()].reshape(g.shape).to(dtype))
            start += g.numel()
    labels = yt.numpy() if reveal_labels else None
    shape = tuple(Xt.shape[1:])
    if lr is not None:
        return ClientUpdate.from_delta(
            model, sent, lr=lr, batch_size=int(Xt.shape[0]), input_shape=shape, labels=labels
        )
    return ClientUpdate.from_gradients(
        model, sent, batch_size=int(Xt.shape[0]), input_shape=shape, labels=labels
    )


# --------------------------------------------------------------------------- labels


def _last_layer_grad(update: ClientUpdate) -> tuple[torch.Tensor, bool]:
    """The last layer's bias gradient ``(C,)`` (or its weight gradient's row sums); whether it is a bias."""
    names = list(_trainable(update.model))
    grads = update.gradients
    # The last 1-D parameter preceded by a 2-D one of matching rows is the output layer's bias.
    for i in range(len(grads) - 1, 0, -1):
        g, w = grads[i], grads[i - 1]
        if g.ndim == 1 and w.ndim >= 2 and w.shape[0] == g.shape[0]:
            return g, True
        if g.ndim >= 2:
            break
    last_w = [g for g in grads if g.ndim >= 2]
    if not last_w:
        raise ValueError(f"infer_labels: no output layer found among the parameters {names}.")
    # Without a bias: dL/dW_c = sum_b (p_bc - y_bc) h_b with h >= 0 after ReLU/sigmoid.
    return last_w[-1].reshape(last_w[-1].shape[0], -1).sum(dim=1), False


def infer_labels(update: ClientUpdate) -> np.ndarray:
    """Labels of the client's batch from the output layer's gradient.

    For one example the gradient of the mean cross-entropy with respect to the output bias is
    ``softmax(z) - onehot(y)``: only the true class is negative (iDLG, Zhao et al. 2020). Without a
    bias, the rows of the output weight gradient are ``(p_c - y_c) h`` with non-negative ``h`` (ReLU
    or sigmoid features), so their sums carry the same signs.

    For a batch of ``b`` examples the bias gradient is ``mean_b(p_b) - n / b`` for class counts ``n``;
    the heuristic here assumes the mean prediction is uniform (``1 / C``, fair for an untrained
    model), estimates ``n_c = b (1 / C - g_c)`` and rounds to ``b`` labels by largest remainders. It is
    a heuristic (compare Wainakh et al., "User-level label leakage from gradients in federated
    learning", PETS 2022), not exact.

    Returns
    -------
    ndarray of shape (batch_size,) int64
        The guessed labels, sorted (a batch's order cannot be recovered from its gradient).
    """
    g, _ = _last_layer_grad(update)
    g = g.detach().to(torch.float64).numpy()
    b, c = update.batch_size, g.shape[0]
    if b == 1:
        return np.array([int(np.argmin(g))], dtype=np.int64)
    est = np.clip(b * (1.0 / c - g), 0.0, None)
    if est.sum() <= 0:
        est = np.clip(-g, 0.0, None) + 1e-12
    est = est * (b / est.sum())
    counts = np.floor(est).astype(np.int64)
    rest = b - int(counts.sum())
    if rest > 0:
        counts[np.argsort(-(est - counts), kind="stable")[:rest]] += 1
    return np.repeat(np.arange(c, dtype=np.int64), counts)


def _labels_for(update: ClientUpdate) -> tuple[np.ndarray, str]:
    if update.labels is not None:
        return update.labels, "given"
    return infer_labels(update), ("iDLG" if update.batch_size == 1 else "count heuristic")


# --------------------------------------------------------------------------- analytic


def _first_fc_layer(update: ClientUpdate, layer: str | None) -> tuple[str, torch.Tensor, torch.Tensor]:
    names = list(_trainable(update.model))
    grads = dict(zip(names, update.gradients, strict=True))
    if layer is not None:
        w, b = f"{layer}.weight", f"{layer}.bias"
        if w not in grads or b not in grads:
            raise ValueError(
                f"AnalyticFCInversion: the model has no trainable parameters {w!r} and {b!r} "
                f"(its parameters are {names})."
            )
        if grads[w].ndim != 2:
            raise ValueError(f"AnalyticFCInversion: {w!r} is not the weight of a fully connected layer.")
        return layer, grads[w], grads[b]
    for mod_name, mod in update.model.named_modules():
        if isinstance(mod, nn.Linear) and mod.bias is not None:
            w, b = f"{mod_name}.weight", f"{mod_name}.bias"
            if w in grads and b in grads:
                return mod_name, grads[w], grads[b]
    raise ValueError(
        "AnalyticFCInversion needs a fully connected layer with a trainable bias (nn.Linear(bias=True)); "
        "the model has none."
    )


class AnalyticFCInversion(Attack):
    """Exact recovery of a fully connected layer's input from its weight and bias gradients.

    For one example, every row ``i`` of the layer satisfies ``(dL/dW)_i = (dL/db)_i x``; the attack
    returns the least-squares solution over all rows, ``x = sum_i (dL/db)_i (dL/dW)_i / sum_i
    (dL/db)_i**2``, which is exact without noise and averages the noise out over rows with it
    (Phong et al. 2017; Geiping et al. 2020, Sec. 4). The layer must see the model's input
    (flattened), as the first layer of an MLP does.

    For a batch of ``b > 1`` examples each row's ratio is a mixture ``sum_b (dL/db)_{b,i} x_b /
    sum_b (dL/db)_{b,i}``. A row is one example exactly when that example alone reaches unit ``i``
    (a ReLU unit inactive for the others); such rows agree with each other, so the attack groups row
    ratios that coincide (relative distance below ``match_tol``) and returns one group per guess,
    largest first, filling the remaining guesses with the row ratios farthest from those chosen (among
    the rows whose ``|dL/db_i|`` is at least the median, which carry the most signal under noise).
    ``details["exact_groups"]`` says how many guesses came from coinciding rows; the others are
    mixtures. With sigmoid units every row mixes all examples.

    Parameters
    ----------
    threat_model : ThreatModel
        Must grant ``Access.CLIENT_UPDATE``.
    layer : str, optional
        Module name of the fully connected layer (``"net.0"``); default the first ``nn.Linear`` with
        a bias.
    bounds : (float, float), optional
        The valid input range; guesses are clipped to it (changes nothing without noise).
    min_bias_grad : float
        Rows with ``|dL/db_i|`` at or below this share of the largest one are ignored (batch > 1).
    match_tol : float
        Relative distance below which two row ratios count as the same example (batch > 1).

    Privacy guarantee
    -----------------
    None: an attack. Under DP-FedAvg noise the guess degrades (see :func:`simulate_client_update`).
    """

    name = "analytic-fc-inversion"
    requires = (Access.CLIENT_UPDATE,)

    def __init__(
        self,
        threat_model: ThreatModel,
        *,
        layer: str | None = None,
        bounds: Bounds = None,
        min_bias_grad: float = 1e-6,
        match_tol: float = 1e-3,
    ) -> None:
        super().__init__(threat_model)
        self.layer = layer
        self.bounds = bounds
        self.min_bias_grad = min_bias_grad
        self.match_tol = match_tol

    def run(self, observations: ClientUpdate) -> AttackResult:
        """Recover the batch; ``guesses`` has shape ``(batch_size, *input_shape)`` (float32)."""
        owner = type(self).__name__
        _check_obs(observations, owner)
        check_param("min_bias_grad", self.min_bias_grad, owner, NONNEG_FLOAT)
        check_param("match_tol", self.match_tol, owner, POSITIVE_FLOAT)
        _check_bounds(self.bounds, owner)
        start = time.perf_counter()
        layer, gw, gb = _first_fc_layer(observations, self.layer)
        gw, gb = gw.to(torch.float64), gb.to(torch.float64)
        d = int(math.prod(observations.input_shape))
        if gw.shape[1] != d:
            raise ValueError(
                f"{owner}: layer {layer!r} takes {gw.shape[1]} inputs but one example has {d} values; the "
                "analytic inversion recovers the layer's input, which here is not the model's input "
                "(use DLG or InvertingGradients, or name an input layer)."
            )
        b = observations.batch_size
        labels, label_source = _labels_for(observations)
        exact_groups = 0
        if b == 1:
            denom = float((gb * gb).sum())
            if denom == 0.0:
                raise ValueError(f"{owner}: the bias gradient of {layer!r} is zero; nothing to invert.")
            guesses = ((gb @ gw) / denom).reshape(1, -1)
            rows_used = int((gb != 0).sum())
        else:
            guesses, exact_groups, rows_used = self._batch(gw, gb, b)
        if self.bounds is not None:
            guesses = guesses.clamp(float(self.bounds[0]), float(self.bounds[1]))
        out = guesses.to(torch.float32).reshape(b, *observations.input_shape).numpy()
        return AttackResult(
            attack=self.name,
            threat_model=self.threat_model,
            guesses=out,
            details={
                "layer": layer,
                "batch_size": b,
                "rows_used": rows_used,
                "exact_groups": exact_groups if b > 1 else 1,
                "labels": [int(v) for v in labels],
                "label_source": label_source,
                "bounds": None if self.bounds is None else [float(v) for v in self.bounds],
            },
            seconds=time.perf_counter() - start,
        )

    def _batch(self, gw: torch.Tensor, gb: torch.Tensor, b: int) -> tuple[torch.Tensor, int, int]:
        scale = float(gb.abs().max())
        if scale == 0.0:
            raise ValueError(f"{type(self).__name__}: the bias gradient is zero; nothing to invert.")
        rows = torch.nonzero(gb.abs() > self.min_bias_grad * scale).reshape(-1)
        cand = gw[rows] / gb[rows, None]
        norms = torch.linalg.vector_norm(cand, dim=1).clamp_min(1e-12)
        dist = torch.cdist(cand, cand)
        rel = dist / torch.minimum(norms[:, None], norms[None, :])
        same = rel < float(self.match_tol)
        # Greedy grouping: the candidate with most coinciding rows first, its group removed, repeat.
        free = torch.ones(len(rows), dtype=torch.bool)
        chosen: list[torch.Tensor] = []
        exact = 0
        while len(chosen) < b and bool(free.any()):
            sizes = (same & free[None, :]).sum(dim=1) * free
            i = int(torch.argmax(sizes))
            if int(sizes[i]) < 2:
                break
            members = same[i] & free
            chosen.append(cand[members].mean(dim=0))
            free &= ~members
            exact += 1
        # The rest: among the rows with the larger |dL/db| (the best signal-to-noise ratio when the
        # update is noisy), the ones farthest from the guesses chosen so far.
        strong = gb[rows].abs() >= gb[rows].abs().median()
        if bool((free & strong).any()):
            free &= strong
        while len(chosen) < b and bool(free.any()):
            idx = torch.nonzero(free).reshape(-1)
            if chosen:
                far = torch.cdist(cand[idx], torch.stack(chosen)).min(dim=1).values
            else:  # no coinciding rows: start with the row of largest |dL/db|
                far = gb[rows][idx].abs()
            j = int(idx[int(torch.argmax(far))])
            chosen.append(cand[j])
            free[j] = False
        while len(chosen) < b:  # fewer usable rows than examples
            chosen.append(chosen[-1] if chosen else torch.zeros(gw.shape[1], dtype=gw.dtype))
        return torch.stack(chosen), exact, int(len(rows))


# --------------------------------------------------------------------------- optimisation attacks


def _check_obs(observations: Any, owner: str) -> None:
    if not isinstance(observations, ClientUpdate):
        raise TypeError(
            f"{owner}.run expects a ClientUpdate (see simulate_client_update), got {type(observations).__name__}."
        )


def _check_bounds(bounds: Bounds, owner: str) -> None:
    if bounds is None:
        return
    ok = (
        isinstance(bounds, (tuple, list))
        and len(bounds) == 2
        and all(isinstance(v, (int, float)) and math.isfinite(v) for v in bounds)
        and bounds[0] < bounds[1]
    )
    if not ok:
        raise ParameterError(
            f"The 'bounds' parameter of {owner} must be None or a pair (low, high) of finite floats with "
            f"low < high. Got {bounds!r} instead.",
            param="bounds",
        )


class _GradientMatcher:
    """The observed update and a differentiable map from dummy data to the gradient it would produce."""

    def __init__(self, update: ClientUpdate) -> None:
        self.update = update
        self.model = update.model
        params = _trainable(update.model)
        self.dtype = next(iter(params.values())).dtype
        self.params = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
        self.target = [g.to(self.dtype) for g in update.gradients]
        self.target_norm = torch.sqrt(sum((t * t).sum() for t in self.target))

    def gradients(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = functional_call(self.model, self.params, (x,))
        if labels.dtype == torch.int64:
            loss = F.cross_entropy(logits, labels)
        else:  # soft labels (probabilities), as DLG optimises them
            loss = -(labels * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()
        return torch.autograd.grad(loss, list(self.params.values()), create_graph=True)

    def l2(self, grads: Sequence[torch.Tensor]) -> torch.Tensor:
        return sum(((g - t) ** 2).sum() for g, t in zip(grads, self.target, strict=True))  # type: ignore[return-value]

    def cosine(self, grads: Sequence[torch.Tensor]) -> torch.Tensor:
        dot = sum((g * t).sum() for g, t in zip(grads, self.target, strict=True))
        norm = torch.sqrt(sum((g * g).sum() for g in grads))
        return 1.0 - dot / (norm * self.target_norm).clamp_min(1e-30)  # type: ignore[operator]


def _total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation (mean absolute neighbour difference) of images ``(b, c, h, w)``."""
    if x.ndim < 4:
        return x.new_zeros(())
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


class DLG(Attack):
    """Deep Leakage from Gradients (Zhu, Liu and Han, NeurIPS 2019).

    Dummy inputs ``x'`` (standard normal) and dummy label logits are optimised with L-BFGS so that
    the gradient of the model's loss on ``(x', softmax(labels'))`` matches the observed gradient in
    squared L2 distance. With ``infer_labels=True`` the labels are fixed to :func:`infer_labels`'s
    guess instead (iDLG, Zhao et al. 2020); labels given in the observation are always used as given.

    DLG needs a twice-differentiable model: it recovers inputs of sigmoid MLPs almost exactly but
    stalls on ReLU networks (Geiping et al. 2020), and it needs the gradient's true scale (clipping
    the update breaks the L2 match).

    Parameters
    ----------
    threat_model : ThreatModel
        Must grant ``Access.CLIENT_UPDATE``.
    rng : int, SeedSequence or numpy Generator
        Draws the dummy initialisations.
    iterations : int
        L-BFGS outer steps (each runs up to ``lbfgs_max_iter`` function evaluations).
    lbfgs_max_iter : int
        ``max_iter`` of :class:`torch.optim.LBFGS` per step.
    lr : float
        L-BFGS step size (1 with the strong-Wolfe line search).
    restarts : int
        Independent initialisations; the one with the smallest gradient distance is kept.
    infer_labels : bool
        iDLG: fix the labels from the gradient instead of optimising them.
    tol : float
        Stop early when the squared gradient distance relative to ``||g||**2`` falls below this.
    bounds : (float, float), optional
        The valid input range; the *returned* guesses are clipped to it (the optimisation itself is
        unconstrained, as in the paper).
    """

    name = "dlg"
    requires = (Access.CLIENT_UPDATE,)

    def __init__(
        self,
        threat_model: ThreatModel,
        *,
        rng: SeedLike,
        iterations: int = 30,
        lbfgs_max_iter: int = 20,
        lr: float = 1.0,
        restarts: int = 1,
        infer_labels: bool = False,
        tol: float = 1e-14,
        bounds: Bounds = None,
    ) -> None:
        super().__init__(threat_model)
        self.rng = rng
        self.iterations = iterations
        self.lbfgs_max_iter = lbfgs_max_iter
        self.lr = lr
        self.restarts = restarts
        self.infer_labels = infer_labels
        self.tol = tol
        self.bounds = bounds

    def run(self, observations: ClientUpdate) -> AttackResult:
        """Reconstruct the batch; ``guesses`` has shape ``(batch_size, *input_shape)``."""
        owner = type(self).__name__
        _check_obs(observations, owner)
        check_param("iterations", self.iterations, owner, POSITIVE_INT)
        check_param("lbfgs_max_iter", self.lbfgs_max_iter, owner, POSITIVE_INT)
        check_param("lr", self.lr, owner, POSITIVE_FLOAT)
        check_param("restarts", self.restarts, owner, POSITIVE_INT)
        check_param("infer_labels", self.infer_labels, owner, bool)
        check_param("tol", self.tol, owner, NONNEG_FLOAT)
        _check_bounds(self.bounds, owner)
        start = time.perf_counter()
        rng = as_generator(self.rng)
        m = _GradientMatcher(observations)
        b, shape = observations.batch_size, observations.input_shape
        num_classes = int(_last_layer_grad(observations)[0].shape[0])
        fixed: torch.Tensor | None = None
        label_source = "optimised (DLG)"
        if observations.labels is not None or self.infer_labels:
            lab, label_source = _labels_for(observations)
            fixed = torch.as_tensor(lab, dtype=torch.int64)
        ref = float(m.target_norm) ** 2
        best: tuple[float, torch.Tensor, torch.Tensor] | None = None
        evals = 0
        for child in spawn(rng, self.restarts):
            tg = torch_generator(child)
            x = torch.randn((b, *shape), generator=tg, dtype=m.dtype).requires_grad_(True)
            lab_logits = torch.randn((b, num_classes), generator=tg, dtype=m.dtype).requires_grad_(True)
            opt_vars = [x] if fixed is not None else [x, lab_logits]
            opt = torch.optim.LBFGS(
                opt_vars,
                lr=float(self.lr),
                max_iter=int(self.lbfgs_max_iter),
                history_size=100,
                line_search_fn="strong_wolfe",
                tolerance_grad=1e-12,
                tolerance_change=1e-15,
            )
            state = {"loss": math.inf, "evals": 0}

            def closure(
                x: torch.Tensor = x,
                lab_logits: torch.Tensor = lab_logits,
                opt: torch.optim.Optimizer = opt,
                opt_vars: list[torch.Tensor] = opt_vars,
                state: dict[str, float] = state,
            ) -> torch.Tensor:
                opt.zero_grad()
                target = fixed if fixed is not None else F.softmax(lab_logits, dim=-1)
                loss = m.l2(m.gradients(x, target))
                grads = torch.autograd.grad(loss, opt_vars)
                for v, g in zip(opt_vars, grads, strict=True):
                    v.grad = g
                state["loss"] = float(loss.detach())
                state["evals"] += 1
                return loss.detach()

            final = math.inf
            keep_x, keep_l = x.detach().clone(), lab_logits.detach().clone()
            for _ in range(int(self.iterations)):
                opt.step(closure)
                if not math.isfinite(state["loss"]):
                    break
                final = state["loss"]
                keep_x, keep_l = x.detach().clone(), lab_logits.detach().clone()
                if final <= self.tol * ref:
                    break
            evals += int(state["evals"])
            if best is None or final < best[0]:
                best = (final, keep_x, keep_l)
        assert best is not None
        final, xb, lb = best
        labels = fixed.numpy() if fixed is not None else lb.argmax(dim=1).numpy()
        if self.bounds is not None:
            xb = xb.clamp(float(self.bounds[0]), float(self.bounds[1]))
        return AttackResult(
            attack=self.name,
            threat_model=self.threat_model,
            guesses=xb.to(torch.float32).numpy(),
            details={
                "batch_size": b,
                "gradient_distance": final,
                "relative_gradient_distance": final / ref if ref > 0 else math.nan,
                "function_evaluations": evals,
                "restarts": int(self.restarts),
                "labels": [int(v) for v in labels],
                "label_source": label_source,
                "bounds": None if self.bounds is None else [float(v) for v in self.bounds],
            },
            seconds=time.perf_counter() - start,
        )


class InvertingGradients(Attack):
    """Inverting Gradients (Geiping, Bauermeister, Droge and Moeller, NeurIPS 2020).

    Minimises ``1 - cos(g(x'), g_observed) + tv_weight * TV(x')`` over dummy inputs ``x'``, where the
    cosine is taken over all parameters at once (it ignores the gradient's scale, so clipping alone does
    not stop it) and ``TV`` is the total variation of image inputs (0 for tabular inputs). As in the
    paper: Adam on the *sign* of the input gradient, the learning rate divided by 10 at 3/8, 5/8 and
    7/8 of the iterations, projection onto the box ``bounds`` after every step, and several restarts
    from which the one with the lowest objective is kept. Labels come from the observation when the
    adversary knows them, otherwise from :func:`infer_labels` (exact for a batch of one).

    Parameters
    ----------
    threat_model : ThreatModel
        Must grant ``Access.CLIENT_UPDATE``.
    rng : int, SeedSequence or numpy Generator
        Draws the initialisations (uniform in ``bounds``, standard normal without them).
    iterations : int
        Adam steps per restart (the paper uses 4,800 on CIFAR-10 and 24,000 on ImageNet).
    lr : float
        Adam's initial learning rate (0.1 in the paper).
    tv_weight : float
        Weight of the total-variation prior (images only).
    restarts : int
        Independent initialisations.
    bounds : (float, float), optional
        Box constraint on the input values (``(0, 1)`` for images scaled to [0, 1]).
    """

    name = "inverting-gradients"
    requires = (Access.CLIENT_UPDATE,)

    def __init__(
        self,
        threat_model: ThreatModel,
        *,
        rng: SeedLike,
        iterations: int = 1000,
        lr: float = 0.1,
        tv_weight: float = 1e-4,
        restarts: int = 1,
        bounds: Bounds = None,
    ) -> None:
        super().__init__(threat_model)
        self.rng = rng
        self.iterations = iterations
        self.lr = lr
        self.tv_weight = tv_weight
        self.restarts = restarts
        self.bounds = bounds

    def run(self, observations: ClientUpdate) -> AttackResult:
        """Reconstruct the batch; ``guesses`` has shape ``(batch_size, *input_shape)``."""
        owner = type(self).__name__
        _check_obs(observations, owner)
        check_param("iterations", self.iterations, owner, POSITIVE_INT)
        check_param("lr", self.lr, owner, POSITIVE_FLOAT)
        check_param("tv_weight", self.tv_weight, owner, NONNEG_FLOAT)
        check_param("restarts", self.restarts, owner, POSITIVE_INT)
        _check_bounds(self.bounds, owner)
        start = time.perf_counter()
        rng = as_generator(self.rng)
        m = _GradientMatcher(observations)
        b, shape = observations.batch_size, observations.input_shape
        lab, label_source = _labels_for(observations)
        labels = torch.as_tensor(lab, dtype=torch.int64)
        n = int(self.iterations)
        milestones = sorted({max(1, int(n * f)) for f in (3 / 8, 5 / 8, 7 / 8)})
        best: tuple[float, torch.Tensor] | None = None
        for child in spawn(rng, self.restarts):
            tg = torch_generator(child)
            if self.bounds is not None:
                lo, hi = float(self.bounds[0]), float(self.bounds[1])
                x0 = lo + (hi - lo) * torch.rand((b, *shape), generator=tg, dtype=m.dtype)
            else:
                x0 = torch.randn((b, *shape), generator=tg, dtype=m.dtype)
            x = x0.requires_grad_(True)
            opt = torch.optim.Adam([x], lr=float(self.lr))
            sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
            for _ in range(n):
                opt.zero_grad()
                loss = m.cosine(m.gradients(x, labels)) + float(self.tv_weight) * _total_variation(x)
                (gx,) = torch.autograd.grad(loss, [x])
                x.grad = gx.sign()
                opt.step()
                sched.step()
                if self.bounds is not None:
                    with torch.no_grad():
                        x.clamp_(float(self.bounds[0]), float(self.bounds[1]))
            final_loss = m.cosine(m.gradients(x, labels)) + float(self.tv_weight) * _total_variation(x)
            final = float(final_loss.detach())
            if not math.isfinite(final):
                final = math.inf
            if best is None or final < best[0]:
                best = (final, x.detach().clone())
        assert best is not None
        return AttackResult(
            attack=self.name,
            threat_model=self.threat_model,
            guesses=best[1].to(torch.float32).numpy(),
            details={
                "batch_size": b,
                "objective": best[0],
                "iterations": n,
                "restarts": int(self.restarts),
                "labels": [int(v) for v in lab],
                "label_source": label_source,
                "bounds": None if self.bounds is None else [float(v) for v in self.bounds],
            },
            seconds=time.perf_counter() - start,
        )


# --------------------------------------------------------------------------- scoring


def _is_image(shape: tuple[int, ...], win: int) -> bool:
    if len(shape) == 2:
        return min(shape) >= win
    if len(shape) == 3:
        return min(shape[1:]) >= win
    return False


def score_reconstruction(
    result: AttackResult,
    truth: Any,
    *,
    labels: Any = None,
    data_range: float | None = None,
    ssim_win_size: int = 11,
    max_psnr: float = 200.0,
    recovered_psnr: float = 30.0,
) -> AttackResult:
    """Score reconstructions against the true batch ("for analysis only": the attack never saw it).

    Reconstructions are matched to true examples by the assignment of smallest total MSE
    (:func:`scipy.optimize.linear_sum_assignment`): a gradient does not reveal the batch's order.

    Parameters
    ----------
    result : AttackResult
        Of a reconstruction attack; ``guesses`` of shape ``(k, *input_shape)``.
    truth : array-like of shape (b, *input_shape)
        The client's true examples.
    labels : array-like of shape (b,), optional
        The true labels; ``details["labels"]`` of the result are scored as a multiset (inferred labels
        come without an order), ``label_accuracy = sum_c min(true count, guessed count) / b``.
    data_range : float, optional
        Value range for PSNR and SSIM; default the result's ``bounds`` when it has them, else the
        range of ``truth`` (``max - min``).
    ssim_win_size : int
        SSIM window for image examples (``(H, W)`` or ``(C, H, W)``, both sides at least this long).
    max_psnr : float
        Cap on each pair's PSNR in the *mean* ``psnr`` (an exact recovery has infinite PSNR, which
        would make the mean infinite whatever the other pairs score). ``psnr_median``, ``psnr_min`` and
        ``psnr_max`` are not capped.
    recovered_psnr : float
        A pair with PSNR at or above this counts as recovered (30 dB: visually identical on [0, 1]
        images).

    Returns
    -------
    AttackResult
        A copy with metrics ``mse``, ``psnr`` (mean over matched pairs of the capped PSNR, dB),
        ``psnr_median``, ``psnr_min``, ``psnr_max``, ``share_recovered``, ``ssim`` (images only),
        ``label_accuracy`` (when labels are given and guessed) and ``n_matched``; ``details`` gain
        ``psnr_per_example`` and ``matched_truth`` (the true index of each guess, -1 where unmatched).
    """
    owner = "score_reconstruction"
    if result.guesses is None:
        raise ValueError(f"{owner}: the result holds no reconstructions (guesses is None).")
    guess = np.asarray(result.guesses, dtype=np.float64)
    true = np.asarray(truth.detach().cpu().numpy() if hasattr(truth, "detach") else truth, dtype=np.float64)
    if guess.ndim == true.ndim - 1:
        guess = guess[None]
    if true.ndim < 1 or guess.shape[1:] != true.shape[1:]:
        raise ValueError(
            f"{owner}: guesses of shape {guess.shape} and truth of shape {true.shape} hold examples of "
            "different shapes."
        )
    if data_range is None:
        bounds = result.details.get("bounds")
        if bounds is not None:
            data_range = float(bounds[1]) - float(bounds[0])
        else:
            data_range = float(true.max() - true.min()) or 1.0
    check_param("data_range", data_range, owner, POSITIVE_FLOAT)
    check_param("ssim_win_size", ssim_win_size, owner, POSITIVE_INT)
    check_param("max_psnr", max_psnr, owner, POSITIVE_FLOAT)
    check_param("recovered_psnr", recovered_psnr, owner, _REAL)
    gflat, tflat = guess.reshape(len(guess), -1), true.reshape(len(true), -1)
    cost = ((gflat[:, None, :] - tflat[None, :, :]) ** 2).mean(axis=2)
    if not np.isfinite(cost).all():
        raise ValueError(f"{owner}: the reconstructions hold NaN or infinite values.")
    rows, cols = linear_sum_assignment(cost)
    psnrs = np.array(
        [psnr(guess[i], true[j], data_range=data_range) for i, j in zip(rows, cols, strict=True)]
    )
    mses = cost[rows, cols]
    metrics: dict[str, float] = {
        "mse": float(mses.mean()),
        "psnr": float(np.minimum(psnrs, float(max_psnr)).mean()),
        "psnr_median": float(np.median(psnrs)),
        "psnr_min": float(psnrs.min()),
        "psnr_max": float(psnrs.max()),
        "share_recovered": float(np.mean(psnrs >= float(recovered_psnr))),
        "n_matched": float(len(rows)),
    }
    shape = tuple(true.shape[1:])
    if _is_image(shape, ssim_win_size):
        vals = [
            ssim(guess[i], true[j], data_range=data_range, win_size=ssim_win_size)
            for i, j in zip(rows, cols, strict=True)
        ]
        metrics["ssim"] = float(np.mean(vals))
    guessed = result.details.get("labels")
    if labels is not None and guessed is not None:
        y = np.asarray(labels).reshape(-1)
        g = np.asarray(guessed).reshape(-1)
        if y.shape[0] != true.shape[0]:
            raise ValueError(f"{owner}: labels must have one entry per true example ({true.shape[0]}).")
        if g.shape[0] == guess.shape[0]:
            # Labels as a multiset: the order of inferred labels is not tied to the guesses.
            counts_t = np.bincount(y.astype(np.int64), minlength=int(max(y.max(), g.max()) + 1))
            counts_g = np.bincount(g.astype(np.int64), minlength=counts_t.size)
            metrics["label_accuracy"] = float(np.minimum(counts_t, counts_g).sum() / y.shape[0])
    matched = np.full(len(guess), -1, dtype=np.int64)
    matched[rows] = cols
    details = dict(result.details)
    details["psnr_per_example"] = [float(v) for v in psnrs]
    details["matched_truth"] = [int(v) for v in matched]
    details["data_range"] = float(data_range)
    return replace(result, details=details).with_metrics(**metrics)


def score_location_recovery(
    result: AttackResult,
    truth: Any,
    *,
    xy_columns: tuple[int, int],
    metres_per_unit: float,
    within_m: Sequence[float] = (100.0, 500.0),
) -> AttackResult:
    """How far reconstructed positions lie from the true ones, in metres.

    Reconstructed records are matched to true records by the assignment of smallest total squared
    error over all features (as in :func:`score_reconstruction`); the error of each matched pair is
    the Euclidean distance between the ``(x, y)`` columns, converted to metres.

    Parameters
    ----------
    result : AttackResult
        Reconstructions of tabular records, ``guesses`` of shape ``(k, d)``.
    truth : array-like of shape (b, d)
        The true records (model inputs).
    xy_columns : (int, int)
        The columns of the position.
    metres_per_unit : float
        Metres per unit of the position features (the ADAS dataset maps a city of side ``s`` to
        ``[-1, 1]``: ``s / 2``).
    within_m : sequence of float
        Distances for the ``share_within_<d>m`` metrics.

    Returns
    -------
    AttackResult
        With metrics ``median_location_error_m``, ``mean_location_error_m``, ``max_location_error_m``
        and ``share_within_<d>m``; ``details["location_errors_m"]`` per matched pair.
    """
    owner = "score_location_recovery"
    check_param("metres_per_unit", metres_per_unit, owner, POSITIVE_FLOAT)
    for c in xy_columns:
        check_param("xy_columns", c, owner, NONNEG_INT)
    guess = np.asarray(result.guesses, dtype=np.float64)
    true = np.asarray(truth, dtype=np.float64)
    if guess.ndim == 1:
        guess = guess[None]
    if true.ndim == 1:
        true = true[None]
    if guess.ndim != 2 or true.ndim != 2 or guess.shape[1] != true.shape[1]:
        raise ValueError(f"{owner}: guesses {guess.shape} and truth {true.shape} must be (n, d) tables.")
    if max(xy_columns) >= true.shape[1]:
        raise ValueError(f"{owner}: xy_columns {xy_columns} outside the {true.shape[1]} columns.")
    cost = ((guess[:, None, :] - true[None, :, :]) ** 2).sum(axis=2)
    rows, cols = linear_sum_assignment(cost)
    xy = list(xy_columns)
    err = np.linalg.norm(guess[rows][:, xy] - true[cols][:, xy], axis=1) * float(metres_per_unit)
    metrics = {
        "median_location_error_m": float(np.median(err)),
        "mean_location_error_m": float(err.mean()),
        "max_location_error_m": float(err.max()),
    }
    for d in within_m:
        metrics[f"share_within_{d:g}m"] = float(np.mean(err <= d))
    details = dict(result.details)
    details["location_errors_m"] = [float(v) for v in err]
    return replace(result, details=details).with_metrics(**metrics)
