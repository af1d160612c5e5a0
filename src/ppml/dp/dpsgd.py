"""DP-SGD (Abadi et al. 2016): Poisson-sampled batches, per-example clipping, Gaussian noise on the sum.

One step of :class:`DPSGD` on ``N`` training examples:

1. **Poisson sampling**: every example joins the batch independently with probability ``q``
   (``sampling_rate``), so the realised batch size varies around ``q * N``; this is exactly the
   sampling that :class:`dp_accounting.PoissonSampledDpEvent` describes.
2. **Per-example clipping**: each example's gradient (of its own loss, over all trainable
   parameters at once) is scaled by ``min(1, C / ||g_i||)`` so that its L2 norm is at most ``C``
   (``clip_norm``), and the clipped gradients are summed.
3. **Noise**: :class:`~ppml.dp.mechanisms.GaussianMechanism` with sensitivity ``C`` and noise
   multiplier ``z`` adds ``N(0, (z C)^2)`` to every coordinate of the *sum*.
4. The noisy sum is divided by the **expected** batch size ``q * N`` (never the realised one, which
   would itself depend on the data) and an SGD (optionally heavy-ball momentum) update is taken.

Before each step one ``PoissonSampledDpEvent(q, GaussianDpEvent(z))`` is spent on the
:class:`~ppml.dp.accounting.PrivacyAccountant`; a :class:`~ppml.dp.accounting.BudgetExceededError`
is raised before anything is sampled or changed.

Two ways to get the clipped sum (``clipping=``), which do not change the guarantee:

``"flat"``
    Per-example gradients with :func:`torch.func.vmap` over :func:`torch.func.grad` of the model
    called through :func:`torch.func.functional_call`. Works for any model without cross-example
    layers; memory and time grow with ``batch * parameters`` (every per-example gradient is
    materialised).
``"ghost"``
    Book-keeping ("ghost") clipping for models whose trainable parameters all live in
    :class:`torch.nn.Linear` layers applied to 2-D input (elementwise activations, ``Flatten``,
    dropout-free). For a linear layer the per-example weight gradient is the outer product
    ``g_i a_i^T`` of the layer's output gradient and input, so its norm is ``||a_i|| ||g_i||`` and
    the bias gradient's is ``||g_i||``; the clipped sum is ``G^T diag(c) A`` (one matmul per layer).
    One forward and one backward to the layer outputs, no per-example gradient stored.
    Other layers with parameters (Conv2d, Embedding, LayerNorm, ...) are refused with a message
    pointing to ``clipping="flat"``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import dp_accounting
import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from .._rng import as_generator, secure_generator
from .._validation import (
    NONNEG_FLOAT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    UNIT_LEFT_OPEN,
    Interval,
    Options,
    ParameterError,
    check_param,
)
from .accounting import PrivacyAccountant
from .mechanisms import GaussianMechanism

__all__ = [
    "CLIPPING_METHODS",
    "DPSGD",
    "ClippedSum",
    "check_dp_model",
    "clipped_gradient_sum",
    "per_sample_gradients",
]

CLIPPING_METHODS: tuple[str, ...] = ("flat", "ghost")
"""Ways to compute the clipped per-example gradient sum; both give the same sum (up to rounding)."""

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss_fn(outputs, targets) -> per-example losses`` of shape ``(batch,)`` (no reduction)."""

_CROSS_EXAMPLE_HINT = (
    "it mixes examples of a batch (batch statistics), so per-example gradients and per-example "
    "clipping are undefined and its running statistics are not protected by DP-SGD's noise. "
    "Replace it with nn.GroupNorm or nn.LayerNorm."
)


def _default_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs, targets, reduction="none")


def check_dp_model(model: nn.Module, clipping: str = "flat", owner: str = "DPSGD") -> None:
    """Raise :class:`ParameterError` if ``model`` cannot be trained with DP-SGD by ``clipping``.

    Refused for every method: BatchNorm (1d/2d/3d, lazy and SyncBatchNorm) and InstanceNorm with
    ``track_running_stats=True`` (cross-example layers). Refused for ``"ghost"``: any module that
    holds trainable parameters and is not an :class:`torch.nn.Linear`.
    """
    check_param("clipping", clipping, owner, Options(CLIPPING_METHODS))
    if not isinstance(model, nn.Module):
        raise ParameterError(
            f"The 'model' parameter of {owner} must be an instance of 'torch.nn.Module'. "
            f"Got {type(model).__name__} instead.",
            param="model",
        )
    for name, m in model.named_modules():
        cross = isinstance(m, nn.modules.batchnorm._BatchNorm) or (
            isinstance(m, nn.modules.instancenorm._InstanceNorm) and m.track_running_stats
        )
        if cross:
            raise ParameterError(
                f"The 'model' parameter of {owner} contains {type(m).__name__} layer "
                f"{name or '<root>'!r}: {_CROSS_EXAMPLE_HINT}",
                param="model",
            )
    if clipping == "ghost":
        for name, m in model.named_modules():
            if isinstance(m, nn.Linear):
                continue
            own = [p for p in m.parameters(recurse=False) if p.requires_grad]
            if own:
                raise ParameterError(
                    f"The 'model' parameter of {owner} with clipping='ghost' must hold trainable "
                    f"parameters only in nn.Linear layers; {type(m).__name__} layer {name or '<root>'!r} "
                    "is not supported by ghost clipping. Use clipping='flat'.",
                    param="model",
                )


def _trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: p for k, p in model.named_parameters() if p.requires_grad}


def per_sample_gradients(
    model: nn.Module, X: torch.Tensor, y: torch.Tensor, loss_fn: LossFn | None = None
) -> dict[str, torch.Tensor]:
    """Per-example gradients of ``loss_fn`` for every trainable parameter, via ``vmap(grad(...))``.

    Parameters
    ----------
    model : nn.Module
        Without cross-example layers (checked). Called on one example at a time (with a batch
        dimension of 1), in the mode it is in.
    X, y : torch.Tensor
        A batch of inputs and targets.
    loss_fn : callable, optional
        ``loss_fn(outputs, targets)`` returning per-example losses; default cross-entropy.

    Returns
    -------
    dict of str to torch.Tensor
        ``name -> tensor of shape (batch, *param.shape)``, detached.
    """
    check_dp_model(model, "flat", "per_sample_gradients")
    loss = _default_loss if loss_fn is None else loss_fn
    params = {k: p.detach() for k, p in _trainable(model).items()}
    frozen = {k: p.detach() for k, p in model.named_parameters() if not p.requires_grad}
    buffers = dict(model.named_buffers())

    def one_loss(p: dict[str, torch.Tensor], x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, (p, frozen, buffers), (x.unsqueeze(0),))
        return loss(out, t.unsqueeze(0)).sum()

    if len(X) == 0:
        return {k: p.new_zeros((0, *p.shape)) for k, p in params.items()}
    return dict(vmap(grad(one_loss), in_dims=(None, 0, 0))(params, X, y))


class ClippedSum(NamedTuple):
    """The clipped per-example gradient sum of one batch.

    Attributes
    ----------
    grad_sum : dict of str to torch.Tensor
        ``sum_i c_i g_i`` for every trainable parameter (shape of the parameter).
    norms : torch.Tensor
        ``||g_i||``, each example's gradient norm over all trainable parameters, *before* clipping.
    factors : torch.Tensor
        ``c_i = min(1, C / ||g_i||)`` (1 where the norm is 0); ``c_i ||g_i|| <= C``.
    """

    grad_sum: dict[str, torch.Tensor]
    norms: torch.Tensor
    factors: torch.Tensor


def _clip_factors(norms: torch.Tensor, clip_norm: float) -> torch.Tensor:
    safe = torch.where(norms > 0, norms, torch.ones_like(norms))
    return torch.clamp(clip_norm / safe, max=1.0)


def _flat_clipped_sum(
    model: nn.Module, X: torch.Tensor, y: torch.Tensor, clip_norm: float, loss_fn: LossFn | None
) -> ClippedSum:
    grads = per_sample_gradients(model, X, y, loss_fn)
    if not grads:
        empty = torch.zeros(len(X))
        return ClippedSum({}, empty, torch.ones_like(empty))
    sq = sum(g.reshape(len(X), -1).pow(2).sum(1) for g in grads.values())
    norms = torch.as_tensor(sq).sqrt()
    c = _clip_factors(norms, clip_norm).to(next(iter(grads.values())).dtype)
    total = {k: torch.tensordot(c, g, dims=1) for k, g in grads.items()}
    return ClippedSum(total, norms, c)


def _ghost_clipped_sum(
    model: nn.Module, X: torch.Tensor, y: torch.Tensor, clip_norm: float, loss_fn: LossFn | None
) -> ClippedSum:
    loss = _default_loss if loss_fn is None else loss_fn
    names = {m: n for n, m in model.named_modules()}
    layers = [
        m
        for m in model.modules()
        if isinstance(m, nn.Linear) and any(p.requires_grad for p in m.parameters())
    ]
    records: dict[nn.Linear, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(m: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if m in records:
            raise ParameterError(
                f"The 'model' parameter of DPSGD with clipping='ghost' calls nn.Linear layer "
                f"{names[m]!r} more than once per forward pass (shared weights); use clipping='flat'.",
                param="model",
            )
        a = inputs[0]
        if a.dim() != 2:
            raise ParameterError(
                f"The 'model' parameter of DPSGD with clipping='ghost' feeds nn.Linear layer {names[m]!r} "
                f"input of shape {tuple(a.shape)}; ghost clipping supports only (batch, features) input. "
                "Use clipping='flat'.",
                param="model",
            )
        records[m] = (a.detach(), output)  # type: ignore[index]

    handles = [m.register_forward_hook(hook) for m in layers]
    try:
        with torch.enable_grad():
            per_example = loss(model(X), y)
            outs = [records[m][1] for m in layers if m in records]
            gs = torch.autograd.grad(per_example.sum(), outs, allow_unused=True) if outs else ()
    finally:
        for h in handles:
            h.remove()
    g_of = dict(zip([m for m in layers if m in records], gs, strict=True))
    dtype = next((p.dtype for p in _trainable(model).values()), torch.float32)
    sq = torch.zeros(len(X), dtype=dtype)
    parts: list[tuple[nn.Linear, torch.Tensor, torch.Tensor]] = []
    for m in layers:
        g = g_of.get(m)
        if g is None:  # layer unused or does not reach the loss: zero gradient
            g = torch.zeros(len(X), m.out_features, dtype=dtype)
            a = torch.zeros(len(X), m.in_features, dtype=dtype)
        else:
            a = records[m][0]
        g_sq = g.pow(2).sum(1)
        if m.weight.requires_grad:
            sq = sq + a.pow(2).sum(1) * g_sq
        if m.bias is not None and m.bias.requires_grad:
            sq = sq + g_sq
        parts.append((m, a, g))
    norms = sq.sqrt()
    c = _clip_factors(norms, clip_norm).to(dtype)
    total: dict[str, torch.Tensor] = {}
    for m, a, g in parts:
        gc = g * c[:, None]
        if m.weight.requires_grad:
            total[f"{names[m]}.weight" if names[m] else "weight"] = gc.T @ a
        if m.bias is not None and m.bias.requires_grad:
            total[f"{names[m]}.bias" if names[m] else "bias"] = gc.sum(0)
    order = list(_trainable(model))
    return ClippedSum({k: total[k] for k in order}, norms, c)


def clipped_gradient_sum(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    clip_norm: float,
    *,
    clipping: str = "flat",
    loss_fn: LossFn | None = None,
) -> ClippedSum:
    """The sum over the batch of per-example gradients, each clipped to L2 norm ``clip_norm``.

    Parameters
    ----------
    model : nn.Module
    X, y : torch.Tensor
        A batch (may be empty).
    clip_norm : float > 0
        ``C``.
    clipping : {"flat", "ghost"}, default "flat"
        How the sum is computed (see the module docstring); same result, different speed.
    loss_fn : callable, optional
        Per-example loss ``loss_fn(outputs, targets) -> (batch,)``; default cross-entropy.

    Returns
    -------
    ClippedSum
        The same type whatever ``clipping`` is.
    """
    owner = "clipped_gradient_sum"
    check_param("clip_norm", clip_norm, owner, POSITIVE_FLOAT)
    check_dp_model(model, clipping, owner)
    if clipping == "ghost":
        return _ghost_clipped_sum(model, X, y, float(clip_norm), loss_fn)
    return _flat_clipped_sum(model, X, y, float(clip_norm), loss_fn)


def _as_tensor(a: Any, dtype: torch.dtype | None) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a))
    return t if dtype is None else t.to(dtype)


class DPSGD:
    """Differentially private SGD (Abadi et al. 2016) with Poisson sampling, for torch models.

    Parameters
    ----------
    noise_multiplier : float >= 0
        ``z``: the noise on the sum of clipped gradients has standard deviation ``z * clip_norm``.
        0 is allowed (no noise, infinite epsilon) for debugging only.
    clip_norm : float > 0
        ``C``: every example's gradient (all trainable parameters together) is clipped to L2 norm ``C``.
    sampling_rate : float in (0, 1]
        ``q``: each example joins a batch independently with probability ``q``; the expected batch
        size is ``q * N``.
    lr : float > 0, default 0.1
        Learning rate.
    momentum : float in [0, 1), default 0.0
        Heavy-ball momentum on the noisy gradients (post-processing; the buffer is kept between
        :meth:`fit` calls on the same model).
    clipping : {"flat", "ghost"}, default "flat"
        How the clipped sum is computed (see :mod:`ppml.dp.dpsgd`). A performance setting: it does
        not change the guarantee.
    secure : bool, default False
        Deployment mode: batch sampling and noise come from the OS CSPRNG and the noise from
        :class:`GaussianMechanism`'s exact discrete sampler (``rng`` must then be None). Slower.
    loss_fn : callable, optional
        Per-example loss ``loss_fn(outputs, targets) -> (batch,)``; default cross-entropy.

    Attributes
    ----------
    steps_ : int
        Steps taken (and spent on the accountant) so far.
    batch_sizes_ : list of int
        Realised Poisson batch size of every step.
    epsilon_ : float
        The accountant's epsilon after the last step.
    expected_batch_size_ : float
        ``q * N`` of the last training set.

    Privacy guarantee
    -----------------
    Each step is a Poisson-sampled Gaussian mechanism on the sum of clipped per-example gradients,
    with add-or-remove sensitivity ``C``: the accountant is charged
    ``PoissonSampledDpEvent(q, GaussianDpEvent(z))`` per step (``GaussianDpEvent(z)`` when ``q = 1``;
    in secure mode ``z / (1 + 2**-20)``, see :class:`GaussianMechanism`). The guarantee is
    example-level and holds only if the model has no cross-example computation (BatchNorm is
    refused; batch-mixing operations written in ``forward`` cannot be detected) and ``X`` holds one
    record per row.

    Examples
    --------
    >>> from ppml.dp.accounting import PrivacyAccountant
    >>> opt = DPSGD(noise_multiplier=1.1, clip_norm=1.0, sampling_rate=0.01, lr=0.1)
    >>> # opt.fit(model, X, y, steps=1000, rng=0, accountant=PrivacyAccountant("rdp", 1e-5))
    """

    def __init__(
        self,
        noise_multiplier: float,
        clip_norm: float,
        sampling_rate: float,
        *,
        lr: float = 0.1,
        momentum: float = 0.0,
        clipping: str = "flat",
        secure: bool = False,
        loss_fn: LossFn | None = None,
    ) -> None:
        owner = type(self).__name__
        check_param("noise_multiplier", noise_multiplier, owner, NONNEG_FLOAT)
        check_param("clip_norm", clip_norm, owner, POSITIVE_FLOAT)
        check_param("sampling_rate", sampling_rate, owner, UNIT_LEFT_OPEN)
        check_param("lr", lr, owner, POSITIVE_FLOAT)
        check_param("momentum", momentum, owner, Interval(float, 0, 1, "left"))
        check_param("clipping", clipping, owner, Options(CLIPPING_METHODS))
        check_param("secure", secure, owner, bool)
        for name, value in (("noise_multiplier", noise_multiplier), ("clip_norm", clip_norm), ("lr", lr)):
            if not math.isfinite(value):
                raise ParameterError(
                    f"The '{name}' parameter of {owner} must be finite. Got {value!r} instead.", param=name
                )
        if loss_fn is not None and not callable(loss_fn):
            raise ParameterError(
                f"The 'loss_fn' parameter of {owner} must be a callable or None. Got {loss_fn!r} instead.",
                param="loss_fn",
            )
        self.noise_multiplier = noise_multiplier
        self.clip_norm = clip_norm
        self.sampling_rate = sampling_rate
        self.lr = lr
        self.momentum = momentum
        self.clipping = clipping
        self.secure = secure
        self.loss_fn = loss_fn
        self.steps_ = 0
        self.batch_sizes_: list[int] = []
        self.epsilon_ = 0.0
        self.expected_batch_size_ = float("nan")
        self._velocity: dict[str, torch.Tensor] | None = None
        self._velocity_owner: int | None = None

    # -- privacy -----------------------------------------------------------------------------
    @property
    def mechanism(self) -> GaussianMechanism:
        """The Gaussian mechanism applied to each step's clipped sum (sensitivity ``clip_norm``)."""
        return GaussianMechanism(float(self.clip_norm), float(self.noise_multiplier), secure=self.secure)

    @property
    def event(self) -> dp_accounting.DpEvent:
        """The DP event of one step: ``PoissonSampledDpEvent(q, mechanism.event)``."""
        base = self.mechanism.event
        q = float(self.sampling_rate)
        return base if q >= 1.0 else dp_accounting.PoissonSampledDpEvent(q, base)

    def _params(self, n: int) -> dict[str, Any]:
        return {
            "sampling_rate": float(self.sampling_rate),
            "noise_multiplier": float(self.noise_multiplier),
            "clip_norm": float(self.clip_norm),
            "sampling": "poisson",
            "dataset_size": int(n),
        }

    # -- training ----------------------------------------------------------------------------
    def _sampler_and_noise_rng(self, rng: Any, owner: str) -> tuple[np.random.Generator, Any]:
        if self.secure:
            if rng is not None:
                raise ParameterError(
                    f"The 'rng' parameter of {owner} must be None in secure mode: batch sampling and "
                    f"noise come from the OS CSPRNG. Got {rng!r} instead.",
                    param="rng",
                )
            return secure_generator(), None
        if rng is None:
            raise ParameterError(
                f"The 'rng' parameter of {owner} must be an int seed, a SeedSequence or a numpy "
                "Generator when secure=False. Got None instead.",
                param="rng",
            )
        gen = as_generator(rng)
        return gen, gen

    def _check_fit_args(
        self, model: nn.Module, X: Any, y: Any, accountant: Any, owner: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        check_dp_model(model, self.clipping, owner)
        check_param("accountant", accountant, owner, PrivacyAccountant)
        Xt = _as_tensor(X, None)
        if Xt.is_floating_point():
            dtype = next((p.dtype for p in model.parameters()), torch.float32)
            Xt = Xt.to(dtype)
        else:
            Xt = Xt.to(torch.float32)
        yt = _as_tensor(y, None)
        if len(Xt) != len(yt) or len(Xt) == 0:
            raise ParameterError(
                f"The 'X' and 'y' parameters of {owner} must have the same, non-zero number of rows. "
                f"Got {len(Xt)} and {len(yt)} instead.",
                param="X",
            )
        if self.loss_fn is None and not yt.is_floating_point():
            yt = yt.to(torch.int64)
        return Xt, yt

    def _one_step(
        self,
        model: nn.Module,
        Xt: torch.Tensor,
        yt: torch.Tensor,
        sampler: np.random.Generator,
        noise_rng: Any,
        accountant: PrivacyAccountant,
        label: str,
    ) -> None:
        n = len(Xt)
        # Spend first: raises BudgetExceededError before anything is sampled or changed.
        self.epsilon_ = accountant.spend(self.event, label=label, count=1, params=self._params(n))
        mask = sampler.random(n) < float(self.sampling_rate)
        idx = torch.from_numpy(np.flatnonzero(mask))
        clipped = clipped_gradient_sum(
            model, Xt[idx], yt[idx], float(self.clip_norm), clipping=self.clipping, loss_fn=self.loss_fn
        )
        params = _trainable(model)
        flat = torch.cat([clipped.grad_sum[k].reshape(-1) for k in params]) if params else torch.zeros(0)
        noisy = self.mechanism(flat.detach(), noise_rng)
        expected = float(self.sampling_rate) * n
        update = noisy / expected
        if self._velocity_owner != id(model) or self._velocity is None:
            self._velocity = {k: torch.zeros_like(p) for k, p in params.items()}
            self._velocity_owner = id(model)
        with torch.no_grad():
            offset = 0
            for k, p in params.items():
                g = update[offset : offset + p.numel()].view_as(p).to(p.dtype)
                offset += p.numel()
                if self.momentum > 0:
                    v = self._velocity[k]
                    v.mul_(float(self.momentum)).add_(g)
                    g = v
                p.sub_(float(self.lr) * g)
        self.steps_ += 1
        self.batch_sizes_.append(int(mask.sum()))
        self.expected_batch_size_ = expected

    def step(
        self,
        model: nn.Module,
        X: Any,
        y: Any,
        *,
        accountant: PrivacyAccountant,
        rng: Any = None,
        label: str = "DP-SGD",
    ) -> DPSGD:
        """Take one DP-SGD step on ``model`` (in place) with a Poisson batch of ``(X, y)``; return self.

        Same parameters as :meth:`fit` without ``steps``/``epochs``.
        """
        owner = f"{type(self).__name__}.step"
        check_param("label", label, owner, str)
        Xt, yt = self._check_fit_args(model, X, y, accountant, owner)
        sampler, noise_rng = self._sampler_and_noise_rng(rng, owner)
        self._one_step(model, Xt, yt, sampler, noise_rng, accountant, label)
        return self

    def fit(
        self,
        model: nn.Module,
        X: Any,
        y: Any,
        *,
        accountant: PrivacyAccountant,
        rng: Any = None,
        steps: int | None = None,
        epochs: float | None = None,
        label: str = "DP-SGD",
    ) -> DPSGD:
        """Train ``model`` in place with DP-SGD on ``(X, y)``; return self.

        Parameters
        ----------
        model : nn.Module
            No cross-example layers; only Linear layers hold parameters when ``clipping="ghost"``.
        X, y : numpy arrays or tensors
            One record per row. With the default loss, ``y`` holds class indices.
        accountant : PrivacyAccountant
            Charged one Poisson-sampled Gaussian event per step, *before* the step (a
            :class:`~ppml.dp.accounting.BudgetExceededError` leaves the model, this object and the
            accountant as they were after the previous step).
        rng : int, SeedSequence or numpy Generator; None in secure mode
            Source of batch sampling and noise.
        steps : int, optional
            Number of steps.
        epochs : float, optional
            Instead of ``steps``: ``steps = ceil(epochs / sampling_rate)``.
        label : str, default "DP-SGD"
            Ledger label of the steps.
        """
        owner = f"{type(self).__name__}.fit"
        check_param("label", label, owner, str)
        if (steps is None) == (epochs is None):
            raise ParameterError(
                f"Exactly one of the 'steps' and 'epochs' parameters of {owner} must be given. "
                f"Got steps={steps!r} and epochs={epochs!r} instead.",
                param="steps",
            )
        if epochs is not None:
            check_param("epochs", epochs, owner, POSITIVE_FLOAT)
            steps = math.ceil(float(epochs) / float(self.sampling_rate))
        check_param("steps", steps, owner, POSITIVE_INT)
        assert steps is not None
        Xt, yt = self._check_fit_args(model, X, y, accountant, owner)
        sampler, noise_rng = self._sampler_and_noise_rng(rng, owner)
        for _ in range(int(steps)):
            self._one_step(model, Xt, yt, sampler, noise_rng, accountant, label)
        return self

    def __repr__(self) -> str:
        return (
            f"DPSGD(noise_multiplier={self.noise_multiplier!r}, clip_norm={self.clip_norm!r}, "
            f"sampling_rate={self.sampling_rate!r}, lr={self.lr!r}, momentum={self.momentum!r}, "
            f"clipping={self.clipping!r}, secure={self.secure!r})"
        )
