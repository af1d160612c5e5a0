"""Train many models of one architecture at once: shadow models, reference models, PATE teachers.

Membership attacks (Shokri et al. 2017; Carlini et al. 2022; Zarifzadeh et al. 2024) and PATE
(Papernot et al. 2017, 2018) train tens to hundreds of small models that differ only in their data,
initialisation and batch order. Trained one after another, small models spend most of their time in
per-operation overhead. :func:`train_ensemble` stacks the members' parameters along a leading axis
(``torch.func.stack_module_state``) and takes one ``vmap(grad(loss))`` step for all of them together
(``torch.func.functional_call``), with the semantics of :func:`ppml.train.train_epochs` per member:

* member ``i`` trains on ``X[subsets[i]]`` for ``config.epochs`` epochs of mini-batches of
  ``min(config.batch_size, len(subsets[i]))`` examples, a fresh permutation per epoch drawn from the
  member's own generator; the loss is the mean cross-entropy over the batch;
* the update is torch's SGD (momentum and weight decay as ``torch.optim.SGD`` with dampening 0),
  with a stacked momentum buffer;
* subsets of unequal size are padded: padded slots of a batch carry weight 0, and a member with fewer
  steps than others in its chunk takes no-op steps in which neither its parameters nor its momentum
  buffer move (the update is masked, so momentum and weight decay stay exact).

:func:`train_ensemble_sequential` trains the same members one after another with
:func:`~ppml.train.train_epochs` from the same initialisations and batch orders; both agree within
float32 tolerance (the tests check this), so the sequential function is the reference and the
baseline of the speed benchmark.

Seeds: ``seed`` gives one child generator per member (:func:`ppml._rng.spawn`); member ``i`` draws
its initialisation seed from its child first and its epoch permutations from it afterwards.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap
from torch.nn import functional as F

from .._progress import progress_bar
from .._rng import SeedLike, as_generator, derive_seed, spawn
from .._validation import POSITIVE_INT, Interval, Options, ParameterError, check_param
from ..models.dense import activation_forward, backward_chain, dense_layers
from ..models.zoo import reset_parameters
from .loop import TrainConfig, as_tensor, train_epochs

__all__ = [
    "EnsembleParams",
    "train_ensemble",
    "train_ensemble_sequential",
    "predict_ensemble",
    "check_ensemble_model",
]

_CROSS_EXAMPLE = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
_INIT = Options(("independent", "same"))


# --------------------------------------------------------------------------- stacked parameters


@dataclass(frozen=True, eq=False)
class EnsembleParams:
    """The parameters of ``M`` models of one architecture, stacked along a leading axis.

    Parameters
    ----------
    template : nn.Module
        A private copy of the architecture (its own parameter values are not used); buffers
        (non-trainable state) are shared by all members and taken from it.
    params : dict of str to Tensor
        Parameter name (as in ``template.named_parameters()``) -> tensor of shape ``(M, *shape)``.
    """

    template: nn.Module
    params: dict[str, Tensor]

    def __post_init__(self) -> None:
        names = [n for n, _ in self.template.named_parameters()]
        if sorted(names) != sorted(self.params):
            raise ValueError(
                f"EnsembleParams: params must hold exactly the template's parameters {names}, "
                f"got {sorted(self.params)}."
            )
        sizes = {int(t.shape[0]) for t in self.params.values()}
        if len(sizes) != 1:
            raise ValueError(f"EnsembleParams: every stacked parameter needs the same length, got {sizes}.")

    def __len__(self) -> int:
        return int(next(iter(self.params.values())).shape[0])

    @property
    def buffers(self) -> dict[str, Tensor]:
        """The template's buffers, shared by every member."""
        return dict(self.template.named_buffers())

    @classmethod
    def from_modules(cls, modules: Sequence[nn.Module]) -> EnsembleParams:
        """Stack the parameters of trained modules of one architecture (copies, detached)."""
        if len(modules) == 0:
            raise ValueError("EnsembleParams.from_modules needs at least one module.")
        params, _ = stack_module_state(list(modules))
        return cls(copy.deepcopy(modules[0]), {n: p.detach().clone() for n, p in params.items()})

    def member(self, i: int) -> nn.Module:
        """A fresh ``nn.Module`` (a copy of the template) holding member ``i``'s parameters."""
        m = len(self)
        if not -m <= int(i) < m:
            raise IndexError(f"member index {i} out of range for an ensemble of {m} models.")
        module = copy.deepcopy(self.template)
        with torch.no_grad():
            for name, p in module.named_parameters():
                p.copy_(self.params[name][int(i)])
        return module

    def select(self, indices: Sequence[int] | np.ndarray) -> EnsembleParams:
        """The sub-ensemble of the given members, in the given order."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return EnsembleParams(self.template, {n: p[idx.to(p.device)] for n, p in self.params.items()})

    def to_flat(self) -> Tensor:
        """All parameters as one ``(M, num_parameters)`` tensor, in ``named_parameters`` order.

        Row ``i`` equals :func:`ppml.models.get_flat` of :meth:`member` ``(i)``.
        """
        names = [n for n, _ in self.template.named_parameters()]
        m = len(self)
        return torch.cat([self.params[n].detach().reshape(m, -1) for n in names], dim=1)


# --------------------------------------------------------------------------- checks and plans


def check_ensemble_model(model: nn.Module) -> None:
    """Raise ``ValueError`` naming what prevents training ``model`` as a vectorized ensemble.

    Layers that mix examples in a batch (BatchNorm) have no per-member meaning under ``vmap``;
    dropout would draw from torch's global random state, which ppml never uses.
    """
    for name, module in model.named_modules():
        if isinstance(module, _CROSS_EXAMPLE):
            raise ValueError(
                f"train_ensemble cannot train layer {name!r} ({type(module).__name__}): it mixes examples "
                "in a batch; use GroupNorm or LayerNorm instead."
            )
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0:
            raise ValueError(
                f"train_ensemble cannot train layer {name!r} ({type(module).__name__}, p={module.p}): "
                "dropout draws from torch's global random state; remove it or set p=0."
            )
    if next(model.parameters(), None) is None:
        raise ValueError("train_ensemble: the model has no trainable parameters.")


def _check_inputs(
    X: Any, y: Any, subsets: Sequence[Any], owner: str
) -> tuple[Tensor, Tensor, list[np.ndarray]]:
    Xt = as_tensor(X)
    yt = as_tensor(y)
    if Xt.ndim == 0 or yt.ndim != 1 or yt.shape[0] != Xt.shape[0]:
        raise ValueError(
            f"{owner}: X must have shape (n, ...) and y shape (n,); got {tuple(Xt.shape)} and {tuple(yt.shape)}."
        )
    if not isinstance(subsets, Sequence) or isinstance(subsets, (str, bytes)):
        raise TypeError(f"{owner}: subsets must be a sequence of index arrays, got {type(subsets).__name__}.")
    if len(subsets) == 0:
        raise ValueError(f"{owner}: subsets is empty; give one index array per model.")
    n = int(Xt.shape[0])
    out = []
    for i, s in enumerate(subsets):
        a = np.asarray(s.cpu() if isinstance(s, Tensor) else s)
        if a.size == 0:
            a = a.astype(np.int64)
        if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
            raise ValueError(
                f"{owner}: subsets[{i}] must be a 1-D array of integer indices, got dtype {a.dtype} "
                f"and shape {a.shape}."
            )
        if a.size and (a.min() < 0 or a.max() >= n):
            raise ValueError(f"{owner}: subsets[{i}] holds indices outside [0, {n - 1}] (X has {n} rows).")
        out.append(a.astype(np.int64))
    return Xt, yt, out


def _member_rngs(seed: SeedLike, m: int) -> tuple[list[np.random.Generator], list[int]]:
    """One child generator per member and the member's initialisation seed (drawn from the child first)."""
    children = spawn(as_generator(seed), m)
    return children, [derive_seed(c) for c in children]


@torch.no_grad()
def _initialise(model: nn.Module, seed: int) -> nn.Module:
    """A copy of ``model`` re-initialised from ``seed``; the global torch random state is left untouched.

    Linear and Conv2d layers use :func:`ppml.models.reset_parameters` (a private generator); any other
    layer with its own parameters and a ``reset_parameters`` method is reset under a forked, seeded
    global generator.
    """
    member = copy.deepcopy(model)
    reset_parameters(member, seed)
    others = [
        m
        for m in member.modules()
        if not isinstance(m, (nn.Linear, nn.Conv2d))
        and hasattr(m, "reset_parameters")
        and any(True for _ in m.parameters(recurse=False))
    ]
    if others:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed % (2**63))
            for m in others:
                m.reset_parameters()
    return member


def _initial_modules(model: nn.Module, init: str, seeds: Sequence[int]) -> list[nn.Module]:
    if init == "same":
        return [copy.deepcopy(model) for _ in seeds]
    return [_initialise(model, s) for s in seeds]


def _plan(n: int, config: TrainConfig, rng: np.random.Generator) -> list[np.ndarray]:
    """The mini-batches (positions into the member's subset) that :func:`train_epochs` would visit."""
    if n == 0:
        return []
    bs = n if config.batch_size is None else min(config.batch_size, n)
    out: list[np.ndarray] = []
    for _ in range(config.epochs):
        perm = rng.permutation(n)
        out += [perm[s : s + bs] for s in range(0, n, bs)]
    return out


# --------------------------------------------------------------------------- training


def train_ensemble(
    model: nn.Module,
    X: np.ndarray | Tensor,
    y: np.ndarray | Tensor,
    subsets: Sequence[np.ndarray],
    config: TrainConfig,
    seed: SeedLike,
    *,
    init: Literal["independent", "same"] = "independent",
    chunk_size: int | None = None,
    n_jobs: int = 1,
    progress: bool = False,
) -> EnsembleParams:
    """Train ``len(subsets)`` models of ``model``'s architecture at once, member ``i`` on ``X[subsets[i]]``.

    Parameters
    ----------
    model : nn.Module
        The architecture. With ``init="same"`` its current parameters are every member's start; it is
        never modified. No BatchNorm and no active dropout (see :func:`check_ensemble_model`).
    X : ndarray or Tensor of shape (n, ...)
        The parent dataset; cast to the model's floating dtype and moved to its device.
    y : ndarray or Tensor of shape (n,) int
        Labels.
    subsets : sequence of 1-D integer arrays
        One index array into ``X`` per member (repeats allowed; sizes may differ; an empty subset
        leaves the member at its initialisation).
    config : TrainConfig
        Epochs, batch size (``None`` = full batch), learning rate, momentum and weight decay.
    seed : int, SeedSequence or numpy Generator
        Spawns one generator per member: its initialisation seed, then its batch order.
    init : {"independent", "same"}
        ``"independent"``: member ``i`` is re-initialised from its own seed (Linear and Conv2d as
        :func:`ppml.models.reset_parameters`). ``"same"``: every member starts from ``model``'s
        parameters (only batch order and data differ).
    chunk_size : int, optional
        Train at most this many members per vectorized call (bounds memory), in chunks of equal size
        one after another. ``None`` chooses the fewest chunks whose stacked parameters stay within
        16 MiB each (beyond that the stack outgrows the caches and each step slows down). Members are
        grouped by number of steps first, so chunks waste little on padding. Does not change the
        result.
    n_jobs : int
        Worker processes (joblib), each training its share of the members vectorized with one torch
        thread; ``-1`` uses one per CPU core. Starting the processes costs about a second and each
        receives a copy of ``X``. The vectorized step is a few large batched products, which torch's
        own threads share out well: on 2 cores, 16 shadows of a 784-128-10 MLP took 2.1 s in one
        process with two torch threads, 2.2-2.5 s in two processes and 3.2-3.5 s on one thread; 16
        MNIST CNNs (1.7 M parameters) 6.5 s with two threads, 6.7 s in two processes. Processes help
        where torch's threads do not scale. Does not change the result. Progress is not shown with
        more than one process.
    progress : bool
        Show a progress bar of finished steps.

    Returns
    -------
    EnsembleParams
        Stacked trained parameters, member ``i`` at position ``i``.
    """
    owner = "train_ensemble"
    check_param("init", init, owner, _INIT)
    check_param("chunk_size", chunk_size, owner, POSITIVE_INT, None)
    check_param("n_jobs", n_jobs, owner, Interval(int, -1, None, "left"))
    if n_jobs == 0:
        raise ParameterError(
            "The 'n_jobs' parameter of train_ensemble must be -1 or a positive int. Got 0 instead."
        )
    if not isinstance(config, TrainConfig):
        raise TypeError(f"{owner}: config must be a TrainConfig, got {type(config).__name__}.")
    check_ensemble_model(model)
    Xt, yt, subs = _check_inputs(X, y, subsets, owner)
    m = len(subs)
    rngs, seeds = _member_rngs(seed, m)
    starts = _initial_modules(model, init, seeds)
    plans = [_plan(len(s), config, r) for s, r in zip(subs, rngs, strict=True)]
    steps = np.array([len(p) for p in plans], dtype=np.int64)

    template = copy.deepcopy(model)
    names = [n for n, _ in template.named_parameters()]
    order = np.argsort(steps, kind="stable")
    jobs = _effective_jobs(n_jobs, m)
    # Members are independent: split them (sorted by step count) into one contiguous part per process,
    # each part into chunks of at most chunk_size. Neither split changes the result.
    parts = [p for p in np.array_split(order, jobs) if len(p)]
    size = _auto_chunk_size(model) if chunk_size is None else chunk_size
    work = [list(np.array_split(part, -(-len(part) // size))) for part in parts]
    # Each chunk's batches as two arrays (cheap to hand to a worker process): indices and weights.
    tasks = [
        (
            [[starts[i] for i in g] for g in chunks],
            [_batch_tables([plans[i] for i in g], [subs[i] for i in g]) for g in chunks],
        )
        for chunks in work
    ]
    if len(tasks) == 1:
        with progress_bar("ensemble: steps", float(steps.sum()), enabled=progress) as tick:
            done = [_train_chunks(template, *tasks[0], Xt, yt, config, tick, progress)]
    else:
        from joblib import Parallel, delayed

        Xn, yn = Xt.cpu().numpy(), yt.cpu().numpy()
        done = Parallel(n_jobs=len(tasks), backend="loky")(
            delayed(_train_chunks_in_process)(template, *task, Xn, yn, config) for task in tasks
        )
    positions = [g for chunks in work for g in chunks]
    trained = [chunk for part in done for chunk in part]
    device = next(template.parameters()).device
    inverse = np.empty(m, dtype=np.int64)
    inverse[np.concatenate(positions)] = np.arange(m)
    inv = torch.from_numpy(inverse).to(device)
    final = {n: torch.cat([t[n].to(device) for t in trained])[inv].contiguous() for n in names}
    return EnsembleParams(template, final)


# Stacked parameters per chunk when chunk_size is None. A larger stack no longer fits the caches and every
# step slows down: 64 shadows of a 784-128-10 MLP (26 MB per stacked weight) on one thread took 19.9 s
# in one chunk and 12.9 s in two (16 shadows, 6.5 MB: the same time in one chunk or two).
_CHUNK_BYTES = 16 * 2**20


def _auto_chunk_size(model: nn.Module) -> int:
    """Members per chunk such that a chunk's stacked parameters stay within ``_CHUNK_BYTES``."""
    per_member = sum(p.numel() * p.element_size() for p in model.parameters())
    return max(1, _CHUNK_BYTES // max(per_member, 1))


def _effective_jobs(n_jobs: int, members: int) -> int:
    """Processes to use: ``-1`` means one per CPU core; never more than there are members."""
    if n_jobs == -1:
        import os

        n_jobs = os.cpu_count() or 1
    return max(1, min(int(n_jobs), members))


def _train_chunks_in_process(
    template: nn.Module,
    starts: list[list[nn.Module]],
    tables: list[tuple[np.ndarray, np.ndarray]],
    X: np.ndarray,
    y: np.ndarray,
    config: TrainConfig,
) -> list[dict[str, Tensor]]:
    """One worker process's share of :func:`train_ensemble` (one torch thread: the cores are the processes)."""
    torch.set_num_threads(1)

    # joblib may hand large arrays over as read-only memory maps; torch wants writable memory.
    def own(a: np.ndarray) -> np.ndarray:
        return a if a.flags.writeable else a.copy()

    Xt, yt = torch.from_numpy(own(X)), torch.from_numpy(own(y))
    tables = [(own(idx), own(wts)) for idx, wts in tables]
    return _train_chunks(template, starts, tables, Xt, yt, config, lambda *_: None, False)


def _train_chunks(
    template: nn.Module,
    starts: list[list[nn.Module]],
    tables: list[tuple[np.ndarray, np.ndarray]],
    Xt: Tensor,
    yt: Tensor,
    config: TrainConfig,
    tick: Callable[..., None],
    progress: bool,
) -> list[dict[str, Tensor]]:
    """Train chunks of members one chunk after another, each chunk vectorized; returns their parameters."""
    ref = next(template.parameters())
    device, fdtype = ref.device, ref.dtype
    Xd = Xt.to(device=device, dtype=fdtype)
    yd = yt.to(device=device, dtype=torch.int64)
    buffers = {n: b for n, b in template.named_buffers()}
    names = [n for n, _ in template.named_parameters()]

    def forward(params: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(template, (params, buffers), (x,))

    dense = _DenseChain.of(template)
    if dense is not None and not dense.accepts(Xd):
        dense = None
    batched_forward = vmap(forward)

    def step_grad(
        params: dict[str, Tensor], wrt: list[Tensor], x: Tensor, t: Tensor, w: Tensor
    ) -> tuple[Tensor, ...]:
        # Members are independent, so the gradient of the sum of their mean losses with respect to
        # the stacked parameters is every member's own gradient (as vmap(grad(loss)) would give, with
        # less per-step overhead: one batched forward, one ordinary backward). ``params`` are what the
        # model reads (possibly permuted views), ``wrt`` the leaves they are views of.
        logits = batched_forward(params, x)
        per = F.cross_entropy(logits.flatten(0, 1), t.reshape(-1), reduction="none").view(t.shape)
        loss = ((per * w).sum(1) / w.sum(1).clamp_min(1.0)).sum()
        return torch.autograd.grad(loss, wrt)

    template.train()
    out = []
    for chunk_starts, (idx, wts) in zip(starts, tables, strict=True):
        stacked, _ = stack_module_state(chunk_starts)
        if dense is not None:
            params = {n: stacked[n].detach().to(device) for n in names}
            out.append(dense.train_chunk(params, idx, wts, Xd, yd, config, tick, progress))
            continue
        params = {n: stacked[n].detach().to(device).clone().requires_grad_(True) for n in names}
        out.append(_train_chunk(params, step_grad, idx, wts, Xd, yd, config, tick, progress))
    return out


class _DenseChain:
    """The stacked step of a dense model (Linear layers and elementwise activations), without autograd.

    For a model of Linear layers and elementwise activations the stacked forward is a chain of batched
    matrix products ``baddbmm(b, h, W^T)`` and the backward is written out by hand: the loss gradient
    of the logits is ``w_i / sum(w) * (softmax(z_i) - onehot(y_i))`` per member, a Linear layer passes
    ``g W`` down, and its weight gradient ``h^T g`` goes straight into the optimiser's state with one
    ``baddbmm_``: ``buf <- momentum * buf + h^T g`` (with momentum) or ``W^T <- (1 - lr wd) W^T - lr
    h^T g`` (without), then ``W^T <- W^T - lr buf``. No gradient tensor is written and read back, no
    autograd graph is built, and the weights are kept transposed (``(k, in, out)``, the layout the
    products read fastest). The result equals torch's SGD on each member within float tolerance (the
    tests compare it with the sequential reference); any other model takes the ``vmap`` path.
    """

    def __init__(self, flatten: bool, layers: list[tuple[str, nn.Module]]) -> None:
        self.flatten = flatten
        self.layers = layers
        self.linears = [prefix for prefix, m in layers if type(m) is nn.Linear]
        self.has_bias = {prefix: m.bias is not None for prefix, m in layers if type(m) is nn.Linear}
        # Index of the first Linear: no gradient is passed below it.
        self.first = next(i for i, (_, m) in enumerate(layers) if type(m) is nn.Linear)

    @classmethod
    def of(cls, model: nn.Module) -> _DenseChain | None:
        found = dense_layers(model)
        return None if found is None else cls(*found)

    def accepts(self, X: Tensor) -> bool:
        """Whether inputs shaped like ``X`` (n, ...) reach the first Linear as (k, batch, features)."""
        return X.dtype in (torch.float32, torch.float64) and (self.flatten or X.dim() == 2)

    def forward(
        self, wt: dict[str, Tensor], b: dict[str, Tensor], x: Tensor, saved: list[Any] | None = None
    ) -> Tensor:
        """Logits of every member, ``x`` of shape (k, batch, ...); ``wt`` the transposed weights
        (k, in, out), ``b`` the biases (k, out). With ``saved``, appends what the backward needs."""
        h = x.flatten(2) if self.flatten else x
        for i, (prefix, module) in enumerate(self.layers):
            kind = type(module)
            if kind is nn.Linear:
                if saved is not None:
                    saved.append(h)
                h = (
                    torch.baddbmm(b[prefix].unsqueeze(1), h, wt[prefix])
                    if self.has_bias[prefix]
                    else (torch.bmm(h, wt[prefix]))
                )
            elif kind is not nn.Identity:
                # below the first Linear nothing is passed down: nothing to keep
                h = activation_forward(module, h, saved if i > self.first else None)
        return h

    def train_chunk(
        self,
        params: dict[str, Tensor],
        idx: np.ndarray,
        wts: np.ndarray,
        X: Tensor,
        y: Tensor,
        config: TrainConfig,
        tick: Callable[..., None],
        show: bool,
    ) -> dict[str, Tensor]:
        """Every step of one chunk (as :func:`_train_chunk`); returns the trained parameters."""
        with torch.no_grad():
            wt = {p: params[p + "weight"].detach().transpose(1, 2).contiguous() for p in self.linears}
            b = {p: params[p + "bias"].detach().clone() for p in self.linears if self.has_bias[p]}
            if idx.shape[0] and idx.shape[2]:
                self._steps(wt, b, idx, wts, X, y, config, tick, show)
        out = {}
        for p in self.linears:
            out[p + "weight"] = wt[p].transpose(1, 2).contiguous()
            if self.has_bias[p]:
                out[p + "bias"] = b[p]
        return out

    def _steps(
        self,
        wt: dict[str, Tensor],
        b: dict[str, Tensor],
        idx: np.ndarray,
        wts: np.ndarray,
        X: Tensor,
        y: Tensor,
        config: TrainConfig,
        tick: Callable[..., None],
        show: bool,
    ) -> None:
        """The steps of :meth:`train_chunk` on ``wt`` and ``b`` in place (under ``no_grad``)."""
        n_steps, k, width = idx.shape
        device, dtype = X.device, X.dtype
        lr, mom, wd = config.lr, config.momentum, config.weight_decay
        idx_t = torch.from_numpy(idx).to(device)
        w_t = torch.from_numpy(wts).to(device=device, dtype=dtype)
        # Loss weights: member j's mean over its real examples, w / max(sum w, 1).
        scale_t = w_t / w_t.sum(2, keepdim=True).clamp_min(1.0)
        active = wts.sum(axis=2) > 0  # (steps, k): a real step
        act_t = torch.from_numpy(active).to(device=device, dtype=dtype)
        full = active.all(axis=1).tolist()
        wbuf = {p: torch.zeros_like(t) for p, t in wt.items()} if mom > 0 else {}
        bbuf = {p: torch.zeros_like(t) for p, t in b.items()} if mom > 0 else {}
        xbuf = X.new_empty((k * width, *X.shape[1:]))
        minus_one = torch.full((k, width, 1), -1.0, dtype=dtype, device=device)
        for s in range(n_steps):
            flat = idx_t[s].reshape(-1)
            xb = torch.index_select(X, 0, flat, out=xbuf).view(k, width, *X.shape[1:])
            saved: list[Any] = []
            logits = self.forward(wt, b, xb, saved)
            # d(sum_j mean loss_j) / d logits, per member
            # softmax written out: torch's kernel is slow for a short last axis (10 classes) on a CPU
            g = (logits - logits.amax(2, keepdim=True)).exp_()
            g.div_(g.sum(2, keepdim=True))
            g.scatter_add_(2, y[flat].view(k, width, 1), minus_one)
            g.mul_(scale_t[s].unsqueeze(2))
            if full[s]:
                factors = None
            else:
                # A member past its last step must not move: zero learning rate and weight decay, and a
                # momentum buffer kept as it is (its gradient is exactly 0: all its weights are 0).
                a = act_t[s]
                factors = (a * lr, a * wd, torch.where(a > 0, a.new_tensor(mom), a.new_tensor(1.0)))

            def at_linear(
                i: int, prefix: str, module: nn.Module, h: Tensor, g: Tensor, factors: Any = factors
            ) -> Any:
                g_below = torch.bmm(g, wt[prefix].transpose(1, 2)) if i > self.first else None
                self._update(prefix, h, g, wt, b, wbuf, bbuf, lr, mom, wd, factors)
                return g_below

            backward_chain(self.layers, self.first, saved, g, at_linear)
            if show:
                tick(float(active[s].sum()))

    def _update(
        self,
        prefix: str,
        h: Tensor,
        g: Tensor,
        wt: dict[str, Tensor],
        b: dict[str, Tensor],
        wbuf: dict[str, Tensor],
        bbuf: dict[str, Tensor],
        lr: float,
        mom: float,
        wd: float,
        factors: tuple[Tensor, Tensor, Tensor] | None,
    ) -> None:
        """torch's SGD step (dampening 0) of one Linear layer's stacked weight and bias."""
        w, ht = wt[prefix], h.transpose(1, 2)
        bias = b.get(prefix)
        if factors is not None:
            lr_s, wd_s, mom_s = factors
            gw = torch.bmm(ht, g)
            pairs = [(w, gw, wbuf.get(prefix), (-1, 1, 1))]
            if bias is not None:
                pairs.append((bias, g.sum(1), bbuf.get(prefix), (-1, 1)))
            for p, d, buf, shape in pairs:
                _masked_sgd_(p, d, buf, lr_s, wd_s, mom_s, shape, wd)
            return
        if mom > 0:
            buf = wbuf[prefix]
            buf.baddbmm_(ht, g, beta=mom)  # momentum * buf + h^T g, written once
            if wd > 0:
                buf.add_(w, alpha=wd)
            w.add_(buf, alpha=-lr)
            if bias is not None:
                bb = bbuf[prefix]
                bb.mul_(mom).add_(g.sum(1))
                if wd > 0:
                    bb.add_(bias, alpha=wd)
                bias.add_(bb, alpha=-lr)
        else:
            w.baddbmm_(ht, g, beta=1.0 - lr * wd, alpha=-lr)
            if bias is not None:
                if wd > 0:
                    bias.mul_(1.0 - lr * wd)
                bias.add_(g.sum(1), alpha=-lr)


def _memory_order(t: Tensor) -> tuple[int, ...]:
    """The dimensions of ``t`` from outermost to innermost in memory (its strides, largest first)."""
    return tuple(sorted(range(t.dim()), key=lambda d: (-t.stride(d), -d)))


class _Stacked:
    """Stacked parameters stored in the memory layout of their gradients.

    Autograd returns a Linear layer's weight gradient under ``vmap`` transposed (the stacked weight
    is ``(k, out, in)``, its gradient comes back with strides of ``(k, in, out)``). An update that
    mixes the two layouts walks memory with a large stride and is several times slower than the
    matrix products of the step. After the first step, every parameter whose gradient has another
    layout is stored as a contiguous permutation of itself (``leaf``), and the model reads
    ``leaf.permute(inverse)``, a view with the original shape: the gradients of the leaves are then
    contiguous and the update is a plain pass over memory (the forward product also reads the
    weight in the order the matrix kernel prefers).
    """

    def __init__(self, params: dict[str, Tensor]) -> None:
        self.names = list(params)
        self.leaves = dict(params)
        self.perm: dict[str, tuple[int, ...]] = {n: tuple(range(p.dim())) for n, p in params.items()}

    def views(self) -> dict[str, Tensor]:
        out = {}
        for n, leaf in self.leaves.items():
            perm = self.perm[n]
            out[n] = leaf if perm == tuple(range(leaf.dim())) else leaf.permute(_inverse(perm))
        return out

    def adopt_layouts(self, grads: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """Re-store each leaf in its gradient's layout; returns the gradients as views of that layout."""
        out = []
        for n, g in zip(self.names, grads, strict=True):
            order = _memory_order(g)
            if order != tuple(range(g.dim())):
                with torch.no_grad():
                    leaf = self.leaves[n].detach().permute(order).contiguous()
                self.leaves[n] = leaf.requires_grad_(True)
                self.perm[n] = order
                g = g.permute(order)
            out.append(g)
        return tuple(out)

    def original(self) -> dict[str, Tensor]:
        """Detached parameters in their original shape and a contiguous layout."""
        return {n: v.detach().contiguous() for n, v in self.views().items()}


def _inverse(perm: tuple[int, ...]) -> tuple[int, ...]:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


def _masked_sgd_(
    p: Tensor,
    d: Tensor,
    buf: Tensor | None,
    lr_s: Tensor,
    wd_s: Tensor,
    mom_s: Tensor,
    shape: tuple[int, ...],
    wd: float,
) -> None:
    """torch's SGD step with per-member factors (``(k,)`` tensors viewed as ``shape``): a member past its
    last step has learning rate and weight decay 0 and momentum 1, so neither it nor its buffer moves
    (its gradient ``d`` is exactly 0). ``d`` is overwritten."""
    if wd > 0:
        d.addcmul_(wd_s.view(shape), p)
    if buf is not None:
        d = buf.mul_(mom_s.view(shape)).add_(d)
    p.addcmul_(d, lr_s.view(shape), value=-1.0)


def _fused_sgd_available(X: Tensor) -> bool:
    """Whether torch's fused SGD kernel (one pass over memory per tensor) serves this device and dtype."""
    return (
        hasattr(torch, "_fused_sgd_") and X.device.type == "cpu" and X.dtype in (torch.float32, torch.float64)
    )


def _fused_sgd(
    params: list[Tensor],
    grads: list[Tensor],
    bufs: list[Tensor],
    *,
    lr: float,
    momentum: float,
    weight_decay: float,
) -> None:
    """SGD as ``torch.optim.SGD`` (dampening 0) in torch's fused kernel: weight decay, the momentum
    buffer and the update in one pass per tensor (the buffers start at zero, so no first-step case)."""
    torch._fused_sgd_(
        params,
        grads,
        bufs,
        weight_decay=weight_decay,
        momentum=momentum,
        lr=lr,
        dampening=0.0,
        nesterov=False,
        maximize=False,
        is_first_step=False,
    )


def _batch_tables(plans: list[list[np.ndarray]], subs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Row indices into ``X`` and weights (1 real, 0 padding) of every (step, member, slot) of a chunk."""
    k = len(plans)
    n_steps = max((len(p) for p in plans), default=0)
    width = max((len(b) for p in plans for b in p), default=0)
    idx = np.zeros((n_steps, k, width), dtype=np.int64)
    wts = np.zeros((n_steps, k, width), dtype=np.float32)
    for j, (plan, sub) in enumerate(zip(plans, subs, strict=True)):
        for s, batch in enumerate(plan):
            idx[s, j, : len(batch)] = sub[batch]
            wts[s, j, : len(batch)] = 1.0
    return idx, wts


def _train_chunk(
    params: dict[str, Tensor],
    step_grad: Callable[..., tuple[Tensor, ...]],
    idx: np.ndarray,
    wts: np.ndarray,
    X: Tensor,
    y: Tensor,
    config: TrainConfig,
    tick: Callable[..., None],
    show: bool,
) -> dict[str, Tensor]:
    """Run every step of one chunk on the stacked ``params``; returns the trained parameters."""
    n_steps, k, width = idx.shape
    state = _Stacked(params)
    if n_steps == 0 or width == 0:
        return state.original()
    device = X.device
    idx_t = torch.from_numpy(idx).to(device)
    w_t = torch.from_numpy(wts).to(device=device, dtype=X.dtype)
    active_t = torch.from_numpy(wts.sum(axis=2) > 0).to(device)  # (steps, k): a real step
    lr, mom, wd = config.lr, config.momentum, config.weight_decay
    # Per-member factors, shape (steps, k): an inactive member's step must leave its parameters and its
    # momentum buffer exactly as they are. Its gradient is exactly 0 (all weights 0), so masking the
    # weight-decay term, the buffer's decay and the learning rate suffices.
    act = active_t.to(X.dtype)
    lr_s = act * lr
    wd_s = act * wd
    mom_s = torch.where(active_t, torch.tensor(mom, dtype=X.dtype), torch.tensor(1.0, dtype=X.dtype))
    partial_steps = (~active_t).any(dim=1).tolist()
    fused = _fused_sgd_available(X)
    bufs: dict[str, Tensor] = {}
    xbuf = X.new_empty((k * width, *X.shape[1:]))
    for s in range(n_steps):
        flat = idx_t[s].reshape(-1)
        xb = torch.index_select(X, 0, flat, out=xbuf).view(k, width, *X.shape[1:])
        yb = y[flat].reshape(k, width)
        wrt = [state.leaves[n] for n in state.names]
        grads = step_grad(state.views(), wrt, xb, yb, w_t[s])
        if s == 0:
            grads = state.adopt_layouts(grads)
            if mom > 0:
                bufs = {n: torch.zeros_like(state.leaves[n]) for n in state.names}
        with torch.no_grad():
            for n, d in zip(state.names, grads, strict=True):
                p = state.leaves[n]
                if fused and not partial_steps[s]:
                    break
                if partial_steps[s]:
                    shape = [1] * p.dim()
                    shape[state.perm[n].index(0)] = k  # where the member axis lies in the leaf
                    buf = bufs[n] if mom > 0 else None
                    _masked_sgd_(p, d, buf, lr_s[s], wd_s[s], mom_s[s], tuple(shape), wd)
                elif not fused:
                    if wd > 0:
                        d.add_(p, alpha=wd)
                    if mom > 0:
                        # buf <- mom * buf + d in one pass over memory
                        d = torch.add(d, bufs[n], alpha=mom, out=bufs[n])
                    p.sub_(d, alpha=lr)
            if fused and not partial_steps[s]:
                _fused_sgd(
                    [state.leaves[n] for n in state.names],
                    list(grads),
                    [bufs[n] for n in state.names] if mom > 0 else [],
                    lr=lr,
                    momentum=mom,
                    weight_decay=wd,
                )
        if show:
            tick(float(act[s].sum()))
    return state.original()


def train_ensemble_sequential(
    model: nn.Module,
    X: np.ndarray | Tensor,
    y: np.ndarray | Tensor,
    subsets: Sequence[np.ndarray],
    config: TrainConfig,
    seed: SeedLike,
    *,
    init: Literal["independent", "same"] = "independent",
    progress: bool = False,
) -> EnsembleParams:
    """The reference for :func:`train_ensemble`: the same members trained one after another.

    Same arguments and result (within float32 tolerance); each member is a copy of ``model``
    initialised from the same seed and trained by :func:`ppml.train.train_epochs` with the same
    generator, hence the same batch order.
    """
    owner = "train_ensemble_sequential"
    check_param("init", init, owner, _INIT)
    if not isinstance(config, TrainConfig):
        raise TypeError(f"{owner}: config must be a TrainConfig, got {type(config).__name__}.")
    check_ensemble_model(model)
    Xt, yt, subs = _check_inputs(X, y, subsets, owner)
    rngs, seeds = _member_rngs(seed, len(subs))
    members = _initial_modules(model, init, seeds)
    ref = next(model.parameters())
    with progress_bar("ensemble (sequential): members", len(subs), enabled=progress) as tick:
        for member, sub, rng in zip(members, subs, rngs, strict=True):
            idx = torch.from_numpy(sub)
            xs = Xt[idx].to(device=ref.device, dtype=ref.dtype)
            train_epochs(member, xs, yt[idx].to(ref.device), config, rng)
            tick()
    return EnsembleParams.from_modules(members)


# --------------------------------------------------------------------------- prediction


@torch.no_grad()
def predict_ensemble(
    model: nn.Module | None,
    params: EnsembleParams,
    X: np.ndarray | Tensor,
    batch_size: int = 4096,
    *,
    chunk_size: int | None = None,
) -> Tensor:
    """Logits of every member on every example, in eval mode.

    Parameters
    ----------
    model : nn.Module or None
        The architecture; ``None`` uses ``params.template``.
    params : EnsembleParams
    X : ndarray or Tensor of shape (n, ...)
    batch_size : int
        Examples per forward pass (does not change the result).
    chunk_size : int, optional
        Members per forward pass (bounds memory; does not change the result).

    Returns
    -------
    Tensor of shape (M, n, num_classes)
        On the parameters' device, in their dtype.
    """
    owner = "predict_ensemble"
    check_param("batch_size", batch_size, owner, POSITIVE_INT)
    check_param("chunk_size", chunk_size, owner, POSITIVE_INT, None)
    if not isinstance(params, EnsembleParams):
        raise TypeError(f"{owner}: params must be EnsembleParams, got {type(params).__name__}.")
    net = params.template if model is None else model
    ref = next(iter(params.params.values()))
    Xt = as_tensor(X)
    Xt = Xt.to(device=ref.device, dtype=ref.dtype)
    if Xt.ndim == 0 or Xt.shape[0] == 0:
        raise ValueError(f"{owner}: X must hold at least one example, got shape {tuple(Xt.shape)}.")
    buffers = dict(net.named_buffers())
    m = len(params)
    size = m if chunk_size is None else chunk_size

    def forward(p: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(net, (p, buffers), (x,))

    batched = vmap(forward, in_dims=(0, None))
    was_training = net.training
    net.eval()
    try:
        rows = []
        for c in range(0, m, size):
            p = {n: t[c : c + size] for n, t in params.params.items()}
            cols = [batched(p, Xt[i : i + batch_size]) for i in range(0, Xt.shape[0], batch_size)]
            rows.append(torch.cat(cols, dim=1))
        return torch.cat(rows, dim=0)
    finally:
        net.train(was_training)
