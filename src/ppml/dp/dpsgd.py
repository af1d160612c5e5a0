"""DP-SGD (Abadi et al. 2016): Poisson-sampled batches, per-example clipping, Gaussian noise on the sum.

One step of :class:`DPSGD` on ``N`` training examples:

1. **Poisson sampling**: every example joins the batch independently with probability ``q``
   (``sampling_rate``), so the realised batch size varies around ``q * N``; this is exactly the
   sampling that :class:`dp_accounting.PoissonSampledDpEvent` describes.
2. **Per-example clipping**: each example's gradient (of its own loss, over all trainable
   parameters at once) is scaled by ``min(1, C / ||g_i||)`` so that its L2 norm is at most ``C``
   (``clip_norm``), and the clipped gradients are summed. With **per-layer clipping** (McMahan,
   Ramage, Talwar and Zhang 2018, "Learning differentially private recurrent language models")
   every trainable parameter tensor ``l`` of every example is clipped to its own bound ``C_l`` with
   ``sqrt(sum_l C_l^2) = C``, so the example's whole gradient still has norm at most ``C``.
3. **Noise**: :class:`~ppml.dp.mechanisms.GaussianMechanism` with sensitivity ``C`` and noise
   multiplier ``z`` adds ``N(0, (z C)^2)`` to every coordinate of the *sum*.
4. The noisy sum is divided by the **expected** batch size ``q * N`` (never the realised one, which
   would itself depend on the data) and an SGD (optionally heavy-ball momentum) update is taken.

Before each step one ``PoissonSampledDpEvent(q, GaussianDpEvent(z))`` is spent on the
:class:`~ppml.dp.accounting.PrivacyAccountant`; a :class:`~ppml.dp.accounting.BudgetExceededError`
is raised before anything is sampled or changed.

Performance settings, which do not change the guarantee:

``clipping="flat"``
    Per-example gradients with :func:`torch.func.vmap` over :func:`torch.func.grad` of the model
    called through :func:`torch.func.functional_call`. Works for any model without cross-example
    layers; memory and time grow with ``batch * parameters`` (every per-example gradient is
    materialised).
``clipping="ghost"``
    Book-keeping ("ghost") clipping (:mod:`ppml.dp.ghost`; Li et al. 2022, Bu et al. 2023) for models
    whose trainable parameters live in ``nn.Linear``, ``nn.Conv2d``, ``nn.Embedding``, ``nn.LayerNorm``
    and ``nn.GroupNorm`` layers: one forward, one backward to the layer outputs, per-example norms
    from each layer's input and output gradient, and the clipped sum formed from the same tensors with
    the clipping factors folded in. No per-example gradient of the model is stored. Other layers with
    parameters are refused with a message pointing to ``clipping="flat"``.
``max_physical_batch_size``
    Virtual steps: a logical (Poisson) batch is processed in chunks of at most this many examples whose
    clipped sums are added up; the noise is added once to the total, so a step is the same mechanism
    whatever the chunking (and the same numbers up to floating-point summation order).

Shuffled fixed-size batches (``sampling="shuffle"``, the way most data loaders batch) are available
only on request: each epoch is a random permutation cut into batches of ``B = round(q N)`` examples.
The accountant is then charged Poisson sampling at rate ``B / N``, which is **not** what ran: no formal
guarantee of that accounting is established for shuffling, and Chua, Ghazi, Kamath, Kumar, Manurangsi,
Sinha and Zhang 2024 ("How private are DP-SGD implementations?") show that shuffled batches can have a
markedly larger privacy loss than the Poisson analysis reports. A
:class:`~ppml.dp.mechanisms.PrivacyWarning` says so and the ledger records ``"sampling": "shuffle"``.
"""

from __future__ import annotations

import math
import os
import threading
import warnings
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple

import dp_accounting
import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from .._rng import as_generator, derive_seed, secure_generator
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
from .ghost import DenseGhost, GhostLayer, ghost_layers, ghost_pass
from .mechanisms import GaussianMechanism, PrivacyWarning, _check_cpu, _warn_insecure, check_noise_sampler

__all__ = [
    "CLIPPING_METHODS",
    "PREFETCH_MIN_COORDINATES",
    "SAMPLING_METHODS",
    "DPSGD",
    "ClippedSum",
    "check_dp_model",
    "clipped_gradient_sum",
    "layer_clip_norms",
    "per_sample_gradients",
]

CLIPPING_METHODS: tuple[str, ...] = ("flat", "ghost")
"""Ways to compute the clipped per-example gradient sum; both give the same sum (up to rounding)."""

SAMPLING_METHODS: tuple[str, ...] = ("poisson", "shuffle")
"""Batch sampling of :class:`DPSGD`; the accountant's Poisson analysis matches only ``"poisson"``."""

PREFETCH_MIN_COORDINATES = 1 << 15
"""With ``noise_prefetch="auto"``, :class:`DPSGD` draws the noise in the background thread only for models
with at least this many trainable coordinates (below it, handing the draw to a thread costs more than
the draw)."""

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss_fn(outputs, targets) -> per-example losses`` of shape ``(batch,)`` (no reduction)."""

_CROSS_EXAMPLE_HINT = (
    "it mixes examples of a batch (batch statistics), so per-example gradients and per-example "
    "clipping are undefined and its running statistics are not protected by DP-SGD's noise. "
    "Replace it with nn.GroupNorm or nn.LayerNorm."
)

_SHUFFLE_ASSUMPTION = (
    "the accountant assumes Poisson sampling at rate batch_size/dataset_size, which is not what ran "
    "(shuffled fixed-size batches): the reported epsilon is not a proven guarantee for this sampling "
    "(Chua et al. 2024, 'How private are DP-SGD implementations?')"
)


def _default_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(outputs, targets, reduction="none")


def _check_model_type(model: Any, owner: str) -> None:
    if not isinstance(model, nn.Module):
        raise ParameterError(
            f"The 'model' parameter of {owner} must be an instance of 'torch.nn.Module'. "
            f"Got {type(model).__name__} instead.",
            param="model",
        )


def check_dp_model(model: nn.Module, clipping: str = "flat", owner: str = "DPSGD") -> None:
    """Raise :class:`ParameterError` if ``model`` cannot be trained with DP-SGD by ``clipping``.

    Refused for every method: BatchNorm (1d/2d/3d, lazy and SyncBatchNorm) and InstanceNorm with
    ``track_running_stats=True`` (cross-example layers). Refused for ``"ghost"``: trainable
    parameters outside the layers of :data:`ppml.dp.ghost.GHOST_LAYERS`, parameters shared between
    layers, and ``nn.Embedding`` with ``max_norm`` or ``scale_grad_by_freq``.
    """
    check_param("clipping", clipping, owner, Options(CLIPPING_METHODS))
    _check_model_type(model, owner)
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
        ghost_layers(model, owner)


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
    return _vmap_gradients(model, X, y, _default_loss if loss_fn is None else loss_fn)


def _vmap_gradients(
    model: nn.Module, X: torch.Tensor, y: torch.Tensor, loss: LossFn
) -> dict[str, torch.Tensor]:
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
        ``sum_i clip(g_i)`` for every trainable parameter (shape of the parameter).
    norms : torch.Tensor
        ``||g_i||``, each example's gradient norm over all trainable parameters, *before* clipping.
    factors : torch.Tensor
        ``||clip(g_i)|| / ||g_i||`` (1 where the norm is 0). With all-layer clipping this is the factor
        ``c_i = min(1, C / ||g_i||)`` that scales the whole gradient; in every case
        ``factors * norms <= C``.
    layer_norms : dict of str to torch.Tensor
        ``||g_il||`` per trainable parameter ``l``, before clipping (shape ``(batch,)`` each).
    layer_factors : dict of str to torch.Tensor
        The factor applied to each parameter's per-example gradient (all equal to ``factors`` under
        all-layer clipping; ``min(1, C_l / ||g_il||)`` under per-layer clipping).
    """

    grad_sum: dict[str, torch.Tensor]
    norms: torch.Tensor
    factors: torch.Tensor
    layer_norms: dict[str, torch.Tensor]
    layer_factors: dict[str, torch.Tensor]


def _clip_factors(norms: torch.Tensor, clip_norm: float | torch.Tensor) -> torch.Tensor:
    """``min(1, C / norm)``, 1 where the norm is 0 (``C / tiny`` is clamped to 1)."""
    return torch.clamp(clip_norm / norms.clamp(min=torch.finfo(norms.dtype).tiny), max=1.0)


def layer_clip_norms(
    model: nn.Module, clip_norm: float, weights: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Per-layer clipping bounds ``C_l`` for every trainable parameter of ``model``, with
    ``sqrt(sum_l C_l^2) = clip_norm`` (McMahan et al. 2018).

    Parameters
    ----------
    model : nn.Module
    clip_norm : float > 0
        ``C``, the bound on each example's whole gradient and so the sensitivity of the clipped sum.
    weights : dict of str to float > 0, optional
        Relative bounds, one per trainable parameter name: ``C_l = C w_l / ||w||``. Default: equal
        split, ``C_l = C / sqrt(L)``.

    Returns
    -------
    dict of str to float
        Parameter name -> ``C_l``, in ``named_parameters`` order.
    """
    owner = "layer_clip_norms"
    _check_model_type(model, owner)
    check_param("clip_norm", clip_norm, owner, POSITIVE_FLOAT)
    names = list(_trainable(model))
    if weights is None:
        w = np.ones(len(names))
    else:
        if not isinstance(weights, Mapping) or set(weights) != set(names):
            raise ParameterError(
                f"The 'weights' parameter of {owner} must map exactly the trainable parameter names "
                f"{names} to positive numbers. Got {weights!r} instead.",
                param="weights",
            )
        w = np.array([float(weights[k]) for k in names])
        if not (np.all(np.isfinite(w)) and np.all(w > 0)):
            raise ParameterError(
                f"The 'weights' parameter of {owner} must hold finite positive numbers. Got {weights!r} instead.",
                param="weights",
            )
    if not names:
        return {}
    bounds = float(clip_norm) * w / np.sqrt(np.sum(w * w))
    return {k: float(b) for k, b in zip(names, bounds, strict=True)}


class _Plan:
    """Where every trainable parameter sits in one flat gradient vector, and the ghost layers."""

    __slots__ = (
        "keys",
        "params",
        "offsets",
        "dtype",
        "total",
        "layers",
        "dense",
        "signature",
        "buffer",
        "buffer_views",
    )

    def __init__(self, model: nn.Module, clipping: str, owner: str) -> None:
        check_dp_model(model, clipping, owner)
        trainable = _trainable(model)
        self.keys = list(trainable)
        self.params = list(trainable.values())
        dtypes = {p.dtype for p in self.params}
        if len(dtypes) > 1:
            raise ParameterError(
                f"The 'model' parameter of {owner} must have trainable parameters of one dtype. "
                f"Got {sorted(str(d) for d in dtypes)} instead.",
                param="model",
            )
        self.dtype = self.params[0].dtype if self.params else torch.get_default_dtype()
        self.offsets: list[tuple[int, int]] = []
        off = 0
        for p in self.params:
            self.offsets.append((off, off + p.numel()))
            off += p.numel()
        self.total = off
        self.layers: list[GhostLayer] | None = ghost_layers(model, owner) if clipping == "ghost" else None
        self.dense = DenseGhost.of(model, self.keys) if self.layers is not None else None
        self.signature = _signature(model)
        self.buffer = torch.empty(self.total, dtype=self.dtype)  # reused by DPSGD's steps
        self.buffer_views = self.update_views(self.buffer)

    def update_views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Views of ``flat`` shaped like the trainable parameters, in order."""
        return [flat[a:b].view(p.shape) for p, (a, b) in zip(self.params, self.offsets, strict=True)]

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        return {
            k: flat[a:b].view(p.shape)
            for k, p, (a, b) in zip(self.keys, self.params, self.offsets, strict=True)
        }


def _signature(model: nn.Module) -> tuple[Any, ...]:
    # Checked before every step: reads each module's parameter dict directly (what
    # ``parameters(recurse=False)`` yields, without its per-call generator machinery).
    return tuple(
        (id(m), id(p), p.requires_grad)
        for m in model.modules()
        for p in m._parameters.values()
        if p is not None
    )


def _clip_into(
    model: nn.Module,
    plan: _Plan,
    X: torch.Tensor,
    y: torch.Tensor,
    clip: float | torch.Tensor,
    loss: LossFn,
    flat: torch.Tensor,
    accumulate: bool,
    owner: str,
    ready: Callable[[], Any] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Write (or add, when ``accumulate``) the clipped sum of ``(X, y)`` into ``flat``.

    ``clip`` is ``C`` (all-layer clipping) or a tensor of ``C_l`` per trainable parameter (per-layer).
    ``ready``, if given, is called before ``flat`` is first touched (it waits for the noise that
    DP-SGD draws into ``flat`` while the gradients are computed).
    Returns the squared per-parameter norms ``(B, L)`` and the applied factors ``(B, L)``.
    """
    B, L = len(X), len(plan.keys)
    if B == 0 or L == 0:
        if ready is not None:
            ready()
        if not accumulate:
            flat.zero_()
        return torch.zeros(B, L, dtype=plan.dtype), torch.ones(B, L, dtype=plan.dtype)
    writers: list[Callable[[torch.Tensor, torch.Tensor, bool], None]]
    if plan.layers is not None:
        entries = plan.dense.entries(X, y) if plan.dense is not None and loss is _default_loss else None
        if entries is None:
            entries = ghost_pass(model, plan.layers, X, y, loss, owner)
        sq = torch.stack([entries[k][0] for k in plan.keys], 1)
        writers = [entries[k][1] for k in plan.keys]
    else:
        grads = _vmap_gradients(model, X, y, loss)
        rows = [grads[k].reshape(B, -1) for k in plan.keys]
        sq = torch.stack([r.pow(2).sum(1) for r in rows], 1)
        writers = [_rows_writer(r) for r in rows]
    if isinstance(clip, torch.Tensor):
        factors = _clip_factors(sq.sqrt(), clip)
        columns = factors.unbind(1)
    else:
        c = _clip_factors(sq.sum(1).sqrt(), clip)
        factors = c[:, None].expand(B, L)
        columns = (c,) * L
    if ready is not None:
        ready()
    with torch.no_grad():
        for write, col, (a, b) in zip(writers, columns, plan.offsets, strict=True):
            write(col, flat[a:b], accumulate)
    return sq, factors


def _rows_writer(rows: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor, bool], None]:
    def write(c: torch.Tensor, out: torch.Tensor, acc: bool) -> None:
        if acc:
            out.addmv_(rows.t(), c)
        else:
            torch.mv(rows.t(), c, out=out)

    return write


def _clip_spec(plan: _Plan, clip_norm: Any, owner: str) -> float | torch.Tensor:
    if isinstance(clip_norm, Mapping):
        if set(clip_norm) != set(plan.keys):
            raise ParameterError(
                f"The 'clip_norm' parameter of {owner} must be a positive float or map exactly the trainable "
                f"parameter names {plan.keys} to positive floats. Got keys {sorted(clip_norm)} instead.",
                param="clip_norm",
            )
        for k, v in clip_norm.items():
            check_param(f"clip_norm[{k!r}]", v, owner, POSITIVE_FLOAT)
        return torch.tensor([float(clip_norm[k]) for k in plan.keys], dtype=plan.dtype)
    check_param("clip_norm", clip_norm, owner, POSITIVE_FLOAT)
    return float(clip_norm)


def clipped_gradient_sum(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    clip_norm: float | Mapping[str, float],
    *,
    clipping: str = "flat",
    loss_fn: LossFn | None = None,
) -> ClippedSum:
    """The sum over the batch of per-example gradients, each clipped.

    Parameters
    ----------
    model : nn.Module
    X, y : torch.Tensor
        A batch (may be empty).
    clip_norm : float > 0 or dict of str to float > 0
        A float ``C``: all-layer clipping, every example's whole gradient to norm ``C``. A dict
        ``{parameter name: C_l}`` covering every trainable parameter: per-layer clipping (see
        :func:`layer_clip_norms`); each example's gradient then has norm at most
        ``sqrt(sum_l C_l^2)``.
    clipping : {"flat", "ghost"}, default "flat"
        How the sum is computed (see the module docstring); same result, different speed.
    loss_fn : callable, optional
        Per-example loss ``loss_fn(outputs, targets) -> (batch,)``; default cross-entropy.

    Returns
    -------
    ClippedSum
        The same type whatever ``clipping`` and ``clip_norm`` are.
    """
    owner = "clipped_gradient_sum"
    check_param("clipping", clipping, owner, Options(CLIPPING_METHODS))
    _check_model_type(model, owner)
    plan = _Plan(model, clipping, owner)
    clip = _clip_spec(plan, clip_norm, owner)
    loss = _default_loss if loss_fn is None else loss_fn
    flat = plan.buffer  # a fresh plan: the returned views own this buffer
    sq, fac = _clip_into(model, plan, X, y, clip, loss, flat, False, owner)
    layer_norms = sq.sqrt()
    norms = sq.sum(1).sqrt()
    clipped = (fac.pow(2) * sq).sum(1).sqrt()
    overall = torch.where(norms > 0, clipped / torch.where(norms > 0, norms, 1.0), torch.ones_like(norms))
    if not isinstance(clip, torch.Tensor) and len(plan.keys):
        overall = fac[:, 0].clone()
    return ClippedSum(
        plan.views(flat),
        norms,
        overall,
        dict(zip(plan.keys, layer_norms.unbind(1), strict=True)),
        dict(zip(plan.keys, fac.unbind(1), strict=True)),
    )


_executor: ThreadPoolExecutor | None = None
_executor_pid = -1
_executor_lock = threading.Lock()


def _noise_executor() -> ThreadPoolExecutor:
    """The one background thread that draws DP-SGD noise (created on first use, again after a fork)."""
    global _executor, _executor_pid
    with _executor_lock:
        if _executor is None or _executor_pid != os.getpid():
            _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ppml-dp-noise")
            _executor_pid = os.getpid()
        return _executor


class _NoiseDraw:
    """One step's noise: ``job()`` run at once (inline) or in the background thread."""

    __slots__ = ("future", "value")

    def __init__(self, job: Callable[[], Any], background: bool) -> None:
        self.future: Future[Any] | None = _noise_executor().submit(job) if background else None
        self.value: Any = None if background else job()

    def result(self) -> Any:
        if self.future is not None:
            future, self.future = self.future, None
            self.value = future.result()
        return self.value

    def settle(self) -> None:
        """Wait for a background draw (after an error too: it must not write into a buffer later)."""
        if self.future is not None:
            self.future, future = None, self.future
            try:
                self.value = future.result()
            except BaseException:  # pragma: no cover - reported by result() where it matters
                pass


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
        ``C``: every example's gradient (all trainable parameters together) is clipped to L2 norm ``C``
        (with ``per_layer``, each parameter to ``C_l``, ``sqrt(sum C_l^2) = C``). The sensitivity.
    sampling_rate : float in (0, 1]
        ``q``: each example joins a batch independently with probability ``q``; the expected batch
        size is ``q * N``. With ``sampling="shuffle"`` the fixed batch size is ``round(q * N)``.
    lr : float > 0, default 0.1
        Learning rate.
    momentum : float in [0, 1), default 0.0
        Heavy-ball momentum on the noisy gradients (post-processing; the buffer is kept between
        :meth:`fit` calls on the same model).
    per_layer : bool or dict of str to float, default False
        Per-layer clipping (McMahan et al. 2018): True splits ``C`` equally over the ``L`` trainable
        parameter tensors (``C_l = C / sqrt(L)``); a dict gives relative weights per parameter name
        (see :func:`layer_clip_norms`). False: all-layer clipping.
    sampling : {"poisson", "shuffle"}, default "poisson"
        ``"shuffle"``: shuffled fixed-size batches, which the accountant does *not* match (it is
        charged Poisson sampling at rate ``B / N``); emits a
        :class:`~ppml.dp.mechanisms.PrivacyWarning` and is recorded in the ledger. See the module
        docstring.
    clipping : {"flat", "ghost"}, default "flat"
        How the clipped sum is computed (see :mod:`ppml.dp.dpsgd`). A performance setting: it does
        not change the guarantee.
    max_physical_batch_size : int >= 1 or None, default None
        Virtual steps: process each logical batch in chunks of at most this many examples (memory);
        the noise is added once per logical step. A performance setting: it does not change the
        guarantee.
    secure : bool, default False
        Deployment mode: batch sampling and noise come from the OS CSPRNG and the noise from
        :class:`GaussianMechanism`'s exact discrete sampler (``rng`` must then be None). Slower.
    loss_fn : callable, optional
        Per-example loss ``loss_fn(outputs, targets) -> (batch,)``; default cross-entropy.
    noise_prefetch : bool or "auto", default "auto"
        Draw each step's Gaussian noise in a background thread while the step computes the clipped
        gradient sum (the noise does not depend on the data). A performance setting: the noise is the
        same draw either way, **bit for bit**: its seed is taken from ``rng`` at the start of the step in
        both cases, it is drawn by the same call (``Tensor.normal_`` from a ``torch.Generator`` seeded with
        it, or oneMKL's generator keyed by it with ``noise_sampler="mkl"``) into the same preallocated
        flat buffer, and the clipped sum is then added onto that buffer. Both release the GIL while they
        draw, so with the step computing on one torch thread the draw runs on a second core; on a
        single core it only interleaves. ``"auto"``: prefetch when the
        machine has more logical CPUs than the step's torch threads (a core is left free: a third
        thread on two cores slowed the step) and the model has at least
        :data:`PREFETCH_MIN_COORDINATES` trainable coordinates. In secure mode the background
        thread draws the integer noise of the exact discrete sampler from its own fresh CSPRNG
        generator (nothing is shared between threads) and the step rounds the clipped sum to the grid
        and adds it, exactly as inline.
    noise_sampler : {"native", "mkl"}, default "native"
        The generator of plain mode's noise (see :class:`GaussianMechanism`'s ``sampler``): ``"native"``
        is torch's ``normal_`` (a serial Mersenne Twister, about 3.5 ns per coordinate here), ``"mkl"``
        Intel oneMKL's ARS-5 with Box-Muller (:mod:`ppml.dp._vsl`, ``pip install 'ppml[mkl]'``),
        two to five times faster, which matters for dense models whose step is short next to their
        parameter count. A performance setting: the same distribution and guarantee, different bits
        for the same seed (each setting is reproducible on its own). CPU models only; not with
        ``secure=True``.

    Attributes
    ----------
    steps_ : int
        Steps taken (and spent on the accountant) so far.
    batch_sizes_ : list of int
        Realised batch size of every step.
    epsilon_ : float
        The accountant's epsilon after the last step.
    expected_batch_size_ : float
        ``q * N`` of the last training set (``B`` with ``sampling="shuffle"``).

    Privacy guarantee
    -----------------
    Each step is a Poisson-sampled Gaussian mechanism on the sum of clipped per-example gradients,
    with add-or-remove sensitivity ``C`` (also under per-layer clipping, whose bounds satisfy
    ``sqrt(sum C_l^2) = C``): the accountant is charged ``PoissonSampledDpEvent(q, GaussianDpEvent(z))``
    per step (``GaussianDpEvent(z)`` when ``q = 1``; in secure mode ``z / (1 + 2**-20)``, see
    :class:`GaussianMechanism`). The guarantee is example-level and holds only if the model has no
    cross-example computation (BatchNorm is refused; batch-mixing operations written in ``forward``
    cannot be detected) and ``X`` holds one record per row. With ``sampling="shuffle"`` the same event
    is charged at rate ``B / N`` but the guarantee is not established (Chua et al. 2024).

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
        per_layer: bool | Mapping[str, float] = False,
        sampling: str = "poisson",
        clipping: str = "flat",
        max_physical_batch_size: int | None = None,
        secure: bool = False,
        loss_fn: LossFn | None = None,
        noise_prefetch: bool | str = "auto",
        noise_sampler: str = "native",
    ) -> None:
        owner = type(self).__name__
        check_param("noise_multiplier", noise_multiplier, owner, NONNEG_FLOAT)
        check_param("clip_norm", clip_norm, owner, POSITIVE_FLOAT)
        check_param("sampling_rate", sampling_rate, owner, UNIT_LEFT_OPEN)
        check_param("lr", lr, owner, POSITIVE_FLOAT)
        check_param("momentum", momentum, owner, Interval(float, 0, 1, "left"))
        check_param("per_layer", per_layer, owner, bool, Mapping)
        check_param("sampling", sampling, owner, Options(SAMPLING_METHODS))
        check_param("clipping", clipping, owner, Options(CLIPPING_METHODS))
        check_param("max_physical_batch_size", max_physical_batch_size, owner, POSITIVE_INT, None)
        check_param("secure", secure, owner, bool)
        check_param("noise_prefetch", noise_prefetch, owner, bool, Options(("auto",)))
        check_noise_sampler("noise_sampler", noise_sampler, owner, secure)
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
        self.per_layer = per_layer
        self.sampling = sampling
        self.clipping = clipping
        self.max_physical_batch_size = max_physical_batch_size
        self.secure = secure
        self.loss_fn = loss_fn
        self.noise_prefetch = noise_prefetch
        self.noise_sampler = noise_sampler
        self.steps_ = 0
        self.batch_sizes_: list[int] = []
        self._epsilon_after: Callable[[], float] | None = None
        self.expected_batch_size_ = float("nan")
        self._velocity: dict[str, torch.Tensor] | None = None
        self._velocity_owner: int | None = None
        self._plan: _Plan | None = None
        self._plan_owner: int | None = None
        self._shuffle: tuple[int, np.ndarray, int] | None = None  # (n, permutation, position)
        self._charge_cache: tuple[Any, ...] | None = None

    # -- privacy -----------------------------------------------------------------------------
    @property
    def epsilon_(self) -> float:
        """Epsilon of the accountant right after this object's last step (0.0 before any), at the
        accountant's delta; computed when first read."""
        return 0.0 if self._epsilon_after is None else self._epsilon_after()

    @property
    def mechanism(self) -> GaussianMechanism:
        """The Gaussian mechanism applied to each step's clipped sum (sensitivity ``clip_norm``)."""
        return GaussianMechanism(
            float(self.clip_norm),
            float(self.noise_multiplier),
            secure=self.secure,
            sampler=self.noise_sampler,
        )

    @property
    def event(self) -> dp_accounting.DpEvent:
        """The DP event of one Poisson step: ``PoissonSampledDpEvent(q, mechanism.event)``."""
        return self._event(float(self.sampling_rate))

    def _event(self, q: float) -> dp_accounting.DpEvent:
        base = self.mechanism.event
        return base if q >= 1.0 else dp_accounting.PoissonSampledDpEvent(q, base)

    def _shuffle_batch_size(self, n: int) -> int:
        return min(n, max(1, round(float(self.sampling_rate) * n)))

    def _accounted_rate(self, n: int) -> float:
        if self.sampling == "shuffle":
            return self._shuffle_batch_size(n) / n
        return float(self.sampling_rate)

    def layer_clip_norms(self, model: nn.Module) -> dict[str, float] | None:
        """The per-layer bounds ``C_l`` used for ``model`` (None under all-layer clipping)."""
        if self.per_layer is False:
            return None
        weights = None if self.per_layer is True else self.per_layer
        return layer_clip_norms(model, float(self.clip_norm), weights)  # type: ignore[arg-type]

    def _params(self, n: int) -> dict[str, Any]:
        params: dict[str, Any] = {
            "sampling_rate": self._accounted_rate(n),
            "noise_multiplier": float(self.noise_multiplier),
            "clip_norm": float(self.clip_norm),
            "clipping_scope": "all_layers" if self.per_layer is False else "per_layer",
            "sampling": self.sampling,
            "dataset_size": int(n),
        }
        if self.sampling == "shuffle":
            params["batch_size"] = self._shuffle_batch_size(n)
            params["accountant_assumes"] = _SHUFFLE_ASSUMPTION
        return params

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

    def _plan_for(self, model: nn.Module, owner: str) -> _Plan:
        plan = self._plan
        if plan is None or self._plan_owner != id(model) or plan.signature != _signature(model):
            plan = _Plan(model, self.clipping, owner)
            if self._plan is not None and self._plan.keys != plan.keys:
                self._velocity = None  # other trainable parameters: momentum starts afresh
            self._plan, self._plan_owner = plan, id(model)
        return plan

    def _check_fit_args(
        self, model: nn.Module, X: Any, y: Any, accountant: Any, owner: str
    ) -> tuple[torch.Tensor, torch.Tensor, _Plan]:
        _check_model_type(model, owner)
        plan = self._plan_for(model, owner)
        check_param("accountant", accountant, owner, PrivacyAccountant)
        Xt = _as_tensor(X, None)
        if Xt.is_floating_point():
            Xt = Xt.to(plan.dtype)
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
        if self.sampling == "shuffle":
            warnings.warn(
                f"{owner} with sampling='shuffle' trains on shuffled fixed-size batches, but {_SHUFFLE_ASSUMPTION}. "
                "Use sampling='poisson' (the default) for a guarantee that matches the accounting.",
                PrivacyWarning,
                stacklevel=3,
            )
        return Xt, yt, plan

    def _draw_batch(self, n: int, sampler: np.random.Generator) -> tuple[np.ndarray, float]:
        """Indices of the next batch and the divisor of its noisy sum."""
        if self.sampling == "poisson":
            mask = sampler.random(n) < float(self.sampling_rate)
            return np.flatnonzero(mask), float(self.sampling_rate) * n
        b = self._shuffle_batch_size(n)
        state = self._shuffle
        if state is None or state[0] != n or state[2] + b > n:
            state = (n, sampler.permutation(n), 0)
        idx = state[1][state[2] : state[2] + b]
        self._shuffle = (n, state[1], state[2] + b)
        return idx, float(b)

    def _charge(self, n: int) -> tuple[dp_accounting.DpEvent, dict[str, Any], GaussianMechanism]:
        """The event, ledger parameters and mechanism of a step on ``n`` rows (cached: they depend only
        on the settings and ``n``)."""
        key = (
            n,
            self.sampling,
            float(self.sampling_rate),
            float(self.noise_multiplier),
            float(self.clip_norm),
            bool(self.secure),
            self.noise_sampler,
            self.per_layer is False,
        )
        cached = self._charge_cache
        if cached is None or cached[0] != key:
            cached = (key, self._event(self._accounted_rate(n)), self._params(n), self.mechanism)
            self._charge_cache = cached
        return cached[1], cached[2], cached[3]

    def _prefetch(self, plan: _Plan) -> bool:
        if self.noise_prefetch == "auto":
            # A background draw needs a core the step's own torch threads leave free.
            free = (os.cpu_count() or 1) > torch.get_num_threads()
            return plan.total >= PREFETCH_MIN_COORDINATES and free
        return bool(self.noise_prefetch)

    def _start_noise(
        self, mech: GaussianMechanism, plan: _Plan, noise_rng: Any, owner: str
    ) -> _NoiseDraw | None:
        """Start drawing this step's noise (None when there is none): its seed is taken from
        ``noise_rng`` now, whether the draw then runs inline or in the background thread."""
        if mech.std == 0.0 or plan.total == 0:
            return None
        if mech.secure:
            total = plan.total
            return _NoiseDraw(lambda: mech._draw_secure_noise(total), self._prefetch(plan))
        _warn_insecure(owner)
        buffer = plan.buffer
        seed = derive_seed(noise_rng)
        return _NoiseDraw(lambda: mech._fill_noise(buffer, seed), self._prefetch(plan))

    def _one_step(
        self,
        model: nn.Module,
        plan: _Plan,
        Xt: torch.Tensor,
        yt: torch.Tensor,
        sampler: np.random.Generator,
        noise_rng: Any,
        accountant: PrivacyAccountant,
        label: str,
        owner: str,
    ) -> None:
        n = len(Xt)
        event, params, mech = self._charge(n)
        if mech.sampler == "mkl" and not mech.secure:
            _check_cpu(plan.buffer, "noise_sampler", owner)  # before anything is spent
        # Spend first: raises BudgetExceededError before anything is sampled or changed.
        self._epsilon_after = accountant.charge(event, label=label, count=1, params=params)
        flat = plan.buffer
        noise = self._start_noise(mech, plan, noise_rng, owner)
        # Plain mode: the noise is drawn into ``flat`` and the clipped sum is added onto it.
        onto_noise = noise is not None and not mech.secure
        try:
            idx_np, divisor = self._draw_batch(n, sampler)
            layer_bounds = self.layer_clip_norms(model)
            clip: float | torch.Tensor = (
                float(self.clip_norm)
                if layer_bounds is None
                else torch.tensor([layer_bounds[k] for k in plan.keys], dtype=plan.dtype)
            )
            loss = _default_loss if self.loss_fn is None else self.loss_fn
            ready = noise.result if onto_noise else None  # type: ignore[union-attr]
            chunk = len(idx_np) if self.max_physical_batch_size is None else int(self.max_physical_batch_size)
            if len(idx_np) == n and self.max_physical_batch_size is None:
                _clip_into(model, plan, Xt, yt, clip, loss, flat, onto_noise, owner, ready)
            elif len(idx_np) == 0:
                if onto_noise:
                    noise.result()  # type: ignore[union-attr]
                else:
                    flat.zero_()
            else:
                idx = torch.from_numpy(idx_np)
                for k, start in enumerate(range(0, len(idx), max(chunk, 1))):
                    part = idx[start : start + chunk]
                    _clip_into(
                        model, plan, Xt[part], yt[part], clip, loss, flat, onto_noise or k > 0, owner,
                        ready if k == 0 else None,
                    )  # fmt: skip
            if noise is not None and mech.secure:
                updates = plan.update_views(mech._add_secure_noise(flat, noise.result()))
            else:
                updates = plan.buffer_views
        finally:
            if noise is not None:
                noise.settle()
        if self._velocity_owner != id(model) or self._velocity is None:
            self._velocity = {k: torch.zeros_like(p) for k, p in zip(plan.keys, plan.params, strict=True)}
            self._velocity_owner = id(model)
        with torch.no_grad():
            if self.momentum > 0:
                velocity = [self._velocity[k] for k in plan.keys]
                torch._foreach_mul_(velocity, float(self.momentum))
                torch._foreach_add_(velocity, updates, alpha=1.0 / divisor)
                torch._foreach_add_(plan.params, velocity, alpha=-float(self.lr))
            else:
                torch._foreach_add_(plan.params, updates, alpha=-float(self.lr) / divisor)
        self.steps_ += 1
        self.batch_sizes_.append(len(idx_np))
        self.expected_batch_size_ = divisor

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
        Xt, yt, plan = self._check_fit_args(model, X, y, accountant, owner)
        sampler, noise_rng = self._sampler_and_noise_rng(rng, owner)
        self._one_step(model, plan, Xt, yt, sampler, noise_rng, accountant, label, owner)
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
            No cross-example layers; with ``clipping="ghost"`` trainable parameters only in the layers
            :mod:`ppml.dp.ghost` supports.
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
        Xt, yt, plan = self._check_fit_args(model, X, y, accountant, owner)
        sampler, noise_rng = self._sampler_and_noise_rng(rng, owner)
        for _ in range(int(steps)):
            self._one_step(model, plan, Xt, yt, sampler, noise_rng, accountant, label, owner)
        return self

    def __repr__(self) -> str:
        return (
            f"DPSGD(noise_multiplier={self.noise_multiplier!r}, clip_norm={self.clip_norm!r}, "
            f"sampling_rate={self.sampling_rate!r}, lr={self.lr!r}, momentum={self.momentum!r}, "
            f"per_layer={self.per_layer!r}, sampling={self.sampling!r}, clipping={self.clipping!r}, "
            f"max_physical_batch_size={self.max_physical_batch_size!r}, secure={self.secure!r}, "
            f"noise_prefetch={self.noise_prefetch!r}, noise_sampler={self.noise_sampler!r})"
        )
