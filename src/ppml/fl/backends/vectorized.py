"""Vectorized client training: all of a round's clients train at once with ``torch.func``.

The sequential backend trains client after client, each with its own optimiser loop; on small
models that loop is dominated by per-operation overhead. This backend stacks the clients'
parameters along a leading axis and takes each local step for all clients together (one vmapped
forward of every client's loss, one backward of their sum), with exactly the sequential semantics:

* each client draws its epoch permutations from its own generator (the same generator the
  sequential backend would use), so both backends visit the same mini-batches;
* a client's last mini-batch of an epoch may be smaller than ``B``: padded slots carry weight 0 and
  the loss is the mean over the real examples, as in the sequential loop;
* clients with fewer local steps than others in their group are padded with steps whose weights are
  all zero, which leave their parameters unchanged (plain SGD without momentum or weight decay);
* clients are grouped into buckets of similar step counts so that padding wastes little compute.

The result matches the sequential backend within float32 tolerance (tests check this).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.nn import functional as F

from ...data.dataset import ClientData
from ...models.params import set_flat
from ...train.loop import TrainConfig
from ..strategy import ClientResult

__all__ = ["train_clients_vectorized", "check_vectorizable"]

_CROSS_EXAMPLE = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def check_vectorizable(model: nn.Module, config: TrainConfig) -> None:
    """Raise ``ValueError`` naming what prevents vectorized training of ``model`` with ``config``."""
    for name, module in model.named_modules():
        if isinstance(module, _CROSS_EXAMPLE):
            raise ValueError(
                f"the vectorized backend cannot train layer {name!r} ({type(module).__name__}): it mixes "
                "examples in a batch; use GroupNorm or LayerNorm, or backend='sequential'"
            )
    if config.momentum != 0.0 or config.weight_decay != 0.0:
        raise ValueError(
            "the vectorized backend runs plain local SGD; momentum and weight decay need backend='sequential'"
        )


def _batches(n: int, config: TrainConfig, rng: np.random.Generator) -> list[np.ndarray]:
    """The mini-batches (index arrays) the sequential loop would visit, in order."""
    bs = n if config.batch_size is None else min(config.batch_size, n)
    out = []
    for _ in range(config.epochs):
        perm = rng.permutation(n)
        out += [perm[s : s + bs] for s in range(0, n, bs)]
    return out


def _buckets(steps: np.ndarray, max_buckets: int) -> list[np.ndarray]:
    """Group client positions by step count (sorted), at most ``max_buckets`` groups."""
    order = np.argsort(steps, kind="stable")
    # Each bucket costs a few torch.func calls per step whatever its size, so small rounds use fewer
    # buckets, and so do rounds whose clients take about the same number of steps: padding them to the
    # longest wastes less than the extra calls would cost.
    total = float(steps.sum())
    padded_waste = (float(steps.max()) * len(steps) - total) / max(total, 1.0) if len(steps) else 0.0
    n = 1 if padded_waste < 0.25 else min(max_buckets, max(1, len(order) // 32))
    return [g for g in np.array_split(order, n) if len(g)]


def train_clients_vectorized(
    model: nn.Module,
    clients: Sequence[ClientData],
    global_params: torch.Tensor,
    config: TrainConfig,
    rngs: Sequence[np.random.Generator],
    *,
    mu: float = 0.0,
    corrections: torch.Tensor | None = None,
    max_buckets: int = 4,
) -> list[ClientResult]:
    """Train ``clients`` from ``global_params`` with local SGD, all at once; return their updates.

    Parameters
    ----------
    model : nn.Module
        Architecture (its current parameters are not used).
    clients : sequence of ClientData
    global_params : Tensor
        Flat starting parameters.
    config : TrainConfig
        Local epochs E, batch size B (None = full batch), learning rate.
    rngs : sequence of numpy Generators
        One per client: the batch order, as in the sequential backend.
    mu : float
        FedProx proximal coefficient (0 = plain local SGD).
    corrections : Tensor of shape (len(clients), num_parameters), optional
        Per-client vectors added to every local gradient (SCAFFOLD's ``c - c_i``), as in
        :func:`~ppml.train.loop.train_epochs`'s ``gradient_correction``.
    max_buckets : int
        Clients are grouped by number of local steps into at most this many vmap calls per step.
    """
    check_vectorizable(model, config)
    if len(clients) == 0:
        return []
    work = model
    set_flat(work, global_params)
    names = [n for n, _ in work.named_parameters()]
    base = {n: p.detach() for n, p in work.named_parameters()}
    buffers = {n: b for n, b in work.named_buffers()}
    plans = [_batches(len(c), config, rng) for c, rng in zip(clients, rngs, strict=True)]
    steps = np.array([len(p) for p in plans])
    results: list[ClientResult | None] = [None] * len(clients)

    sizes = [base[n].numel() for n in names]
    if corrections is not None and tuple(corrections.shape) != (len(clients), sum(sizes)):
        raise ValueError(
            f"corrections must have shape ({len(clients)}, {sum(sizes)}), got {tuple(corrections.shape)}"
        )

    def loss_fn(
        params: dict[str, torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
        w: torch.Tensor,
        corr: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        logits = functional_call(work, (params, buffers), (x,))
        per = F.cross_entropy(logits, y, reduction="none")
        loss = (per * w).sum() / w.sum().clamp_min(1.0)
        if mu > 0:
            prox = sum(((params[n] - base[n]) ** 2).sum() for n in names)
            loss = loss + 0.5 * mu * prox * (w.sum() > 0)
        if corr:
            linear = sum((params[n] * corr[n]).sum() for n in names)
            loss = loss + linear * (w.sum() > 0)
        return loss

    batched_loss = vmap(loss_fn, in_dims=(0, 0, 0, 0, 0))

    def step_grad(
        params: dict[str, torch.Tensor],
        x: torch.Tensor,
        y: torch.Tensor,
        w: torch.Tensor,
        corr: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        # Clients are independent, so the gradient of the sum of their losses with respect to the
        # stacked parameters holds each client's own gradient in its slice: what vmap(grad(loss))
        # gives, with one vmapped forward and one ordinary backward (less overhead per step, and no
        # torch.func.grad, whose first call imports torch._dynamo for about a second).
        total = batched_loss(params, x, y, w, corr).sum()
        grads = torch.autograd.grad(total, [params[n] for n in names])
        return dict(zip(names, grads, strict=True))

    work.train()
    for group in _buckets(steps, max_buckets):
        k = len(group)
        params = {
            n: base[n].unsqueeze(0).repeat(k, *([1] * base[n].dim())).clone().requires_grad_(True)
            for n in names
        }
        corr: dict[str, torch.Tensor] = {}
        if corrections is not None:
            rows = corrections[torch.from_numpy(np.asarray(group))].to(torch.float32)
            for n, part in zip(names, torch.split(rows, sizes, dim=1), strict=True):
                corr[n] = part.reshape(k, *base[n].shape)
        group_steps = int(steps[group].max())
        width = max(max((len(b) for b in plans[i]), default=1) for i in group)
        # Index and weight tensors for every (step, client, slot), built once per group.
        idx = np.zeros((group_steps, k, width), dtype=np.int64)
        wts = np.zeros((group_steps, k, width), dtype=np.float32)
        for j, i in enumerate(group):
            parent_idx = clients[i].indices
            for s, batch in enumerate(plans[i]):
                idx[s, j, : len(batch)] = parent_idx[batch]
                wts[s, j, : len(batch)] = 1.0
        parent = clients[group[0]].parent
        X = torch.from_numpy(np.ascontiguousarray(parent.X))
        Y = torch.from_numpy(np.ascontiguousarray(parent.y))
        idx_t, w_t = torch.from_numpy(idx), torch.from_numpy(wts)
        for s in range(group_steps):
            flat_idx = idx_t[s].reshape(-1)
            xb = X[flat_idx].reshape(k, width, *X.shape[1:]).float()
            yb = Y[flat_idx].reshape(k, width).long()
            grads = step_grad(params, xb, yb, w_t[s], corr)
            with torch.no_grad():
                torch._foreach_add_([params[n] for n in names], [grads[n] for n in names], alpha=-config.lr)
        with torch.no_grad():
            # One (k, P) tensor of updates; each client's update is a row of it (no copy per client).
            updates = torch.cat([params[n].reshape(k, -1) for n in names], dim=1).sub_(global_params)
        for j, i in enumerate(group):
            results[i] = ClientResult(int(clients[i].client_id), len(clients[i]), updates[j], {})
    return [r for r in results if r is not None]
