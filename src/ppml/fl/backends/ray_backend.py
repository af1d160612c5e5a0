"""Client training on Ray: a round's clients train in parallel on a pool of Ray actors.

Semantics are exactly those of the sequential backend: each client starts from the global
parameters, runs :func:`~ppml.train.loop.train_epochs` with its own generator (and FedProx's
proximal term when ``mu > 0``), and uploads ``local - global``. Only the place where this happens
changes:

* a pool of actors (one per CPU by default), each with one torch thread and its own copy of the
  model architecture, sent once through the object store and kept while the model object is the
  same (the round loop reuses one worker model for all rounds);
* the parent dataset's arrays are put into the object store once and cached while the arrays are
  the same objects; clients travel as index arrays;
* generators travel pickled (their full state), and the caller's generators are advanced to the
  state they would have after sequential training, so later draws do not depend on the backend.

``ray`` is an optional dependency (``pip install 'ppml[ray]'``); it is imported only when this
backend is used.
"""

from __future__ import annotations

import math
import os
import uuid
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ...data.dataset import ClientData
from ...train.loop import TrainConfig
from ..strategy import ClientResult

__all__ = ["train_clients_ray", "shutdown_ray"]

_MISSING = "the 'ray' backend needs Ray: pip install 'ppml[ray]'"
_MAX_CACHED_DATASETS = 4


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ImportError(_MISSING) from None
    return ray


class _ClientTrainer:
    """One Ray actor: trains clients one after another on its own copy of the model."""

    def __init__(self) -> None:
        torch.set_num_threads(1)
        self._models: dict[str, nn.Module] = {}
        self._data: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def train(
        self,
        model_key: str,
        model_box: list[Any],
        data_boxes: dict[str, list[Any]],
        global_params: torch.Tensor,
        config: TrainConfig,
        mu: float,
        tasks: list[tuple[int, str, np.ndarray, np.random.Generator, torch.Tensor | None]],
    ) -> list[tuple[int, torch.Tensor, float, dict[str, Any]]]:
        import ray

        from ...models.params import get_flat, set_flat
        from ...train.loop import train_epochs

        # Object refs arrive inside lists so that Ray does not fetch them when they are cached.
        if model_key not in self._models:
            self._models = {model_key: ray.get(model_box[0])}
        for key, box in data_boxes.items():
            if key not in self._data:
                self._data[key] = ray.get(box[0])
        self._data = {k: v for k, v in self._data.items() if k in data_boxes}
        model = self._models[model_key]
        out = []
        for pos, data_key, indices, rng, correction in tasks:
            X, y = self._data[data_key]
            set_flat(model, global_params)
            extra: dict[str, Any] = {}
            if mu > 0:
                extra = {"proximal_to": [p.detach().clone() for p in model.parameters()], "mu": mu}
            if correction is not None:
                extra["gradient_correction"] = correction
            local = train_epochs(model, X[indices], y[indices], config, rng, **extra)
            out.append((pos, get_flat(model) - global_params, float(local["loss"]), rng.bit_generator.state))
        return out


class _Session:
    """What this process keeps between calls: the actor pool, the model and the dataset refs."""

    def __init__(self) -> None:
        self.actors: list[Any] = []
        self.model_ref: weakref.ref[nn.Module] | None = None
        self.model_key = ""
        self.model_obj_ref: Any = None
        # key -> (X, y, object ref); the arrays are held so that their ids stay theirs.
        self.data: dict[str, tuple[np.ndarray, np.ndarray, Any]] = {}
        self.job_id = ""


_session = _Session()


def _ensure_ray(ray: Any, address: str | None, num_workers: int | None) -> None:
    global _session
    if not ray.is_initialized():
        _start_ray(ray, address, num_workers)
    job_id = str(ray.get_runtime_context().get_job_id())
    if job_id != _session.job_id:  # Ray was restarted behind our back: the cached refs are stale
        _session = _Session()
        _session.job_id = job_id


def _start_ray(ray: Any, address: str | None, num_workers: int | None) -> None:
    if address is None:
        ray.init(
            num_cpus=num_workers or os.cpu_count() or 1,
            include_dashboard=False,
            log_to_driver=False,
            ignore_reinit_error=True,
        )
    else:
        ray.init(address=address, log_to_driver=False, ignore_reinit_error=True)


def _pool(ray: Any, num_workers: int | None) -> list[Any]:
    cpus = max(1.0, float(ray.cluster_resources().get("CPU", 1)))
    if num_workers is None:
        num_workers = int(cpus)
    if num_workers < 1:
        raise ValueError(f"num_workers must be at least 1, got {num_workers}")
    if len(_session.actors) != num_workers:
        for actor in _session.actors:
            ray.kill(actor)
        # More actors than CPUs share them instead of waiting forever for a free one.
        share = math.floor(min(1.0, cpus / num_workers) * 1e4) / 1e4  # Ray keeps 4 decimals
        actor_cls = ray.remote(num_cpus=share)(_ClientTrainer)
        _session.actors = [actor_cls.remote() for _ in range(num_workers)]
    return _session.actors


def _model_key(ray: Any, model: nn.Module) -> str:
    if _session.model_ref is None or _session.model_ref() is not model:
        _session.model_ref = weakref.ref(model)
        _session.model_key = uuid.uuid4().hex
        _session.model_obj_ref = ray.put(model)
    return _session.model_key


def _data_key(ray: Any, client: ClientData) -> str:
    X, y = client.parent.X, client.parent.y
    for key, (cx, cy, _) in _session.data.items():
        if cx is X and cy is y:
            return key
    key = uuid.uuid4().hex
    _session.data[key] = (X, y, ray.put((np.ascontiguousarray(X), np.ascontiguousarray(y))))
    while len(_session.data) > _MAX_CACHED_DATASETS:
        del _session.data[next(iter(_session.data))]
    return key


def _assign(sizes: np.ndarray, workers: int) -> list[list[int]]:
    """Client positions per actor, balanced by size (largest first onto the least loaded actor)."""
    load = np.zeros(workers)
    groups: list[list[int]] = [[] for _ in range(workers)]
    for pos in np.argsort(-sizes, kind="stable"):
        w = int(np.argmin(load))
        groups[w].append(int(pos))
        load[w] += sizes[pos] + 1
    return [g for g in groups if g]


def train_clients_ray(
    model: nn.Module,
    clients: Sequence[ClientData],
    global_params: torch.Tensor,
    config: TrainConfig,
    rngs: Sequence[np.random.Generator],
    *,
    mu: float = 0.0,
    corrections: torch.Tensor | None = None,
    address: str | None = None,
    num_workers: int | None = None,
) -> list[ClientResult]:
    """Train ``clients`` from ``global_params`` on Ray actors; return their updates in order.

    Parameters
    ----------
    model : nn.Module
        Architecture (its current parameters are not used). Sent to the actors once and reused
        while the same object is passed.
    clients : sequence of ClientData
    global_params : Tensor
        Flat starting parameters.
    config : TrainConfig
    rngs : sequence of numpy Generators
        One per client: the batch order, as in the sequential backend. They are advanced as if the
        clients had been trained here.
    mu : float
        FedProx proximal coefficient (0 = plain local SGD).
    corrections : Tensor of shape (len(clients), num_parameters), optional
        Per-client gradient corrections (SCAFFOLD's ``c - c_i``).
    address : str, optional
        ``None`` starts (once per process) or reuses a local Ray; ``"auto"`` or ``"ray://host:port"``
        connects to a cluster. Ignored when Ray is already initialised.
    num_workers : int, optional
        Number of actors (one CPU each); all CPUs of the Ray cluster by default.

    Returns
    -------
    list of ClientResult
        Ordered like ``clients``; ``metrics`` holds the last epoch's mean training loss.
    """
    ray = _import_ray()
    if len(clients) != len(rngs):
        raise ValueError(f"got {len(clients)} clients but {len(rngs)} generators")
    if len(clients) == 0:
        return []
    _ensure_ray(ray, address, num_workers)
    actors = _pool(ray, num_workers)
    model_key = _model_key(ray, model)
    data_keys = [_data_key(ray, c) for c in clients]
    data_boxes = {k: [_session.data[k][2]] for k in set(data_keys)}
    params = global_params.detach().to(torch.float32).clone()
    params_ref = ray.put(params)
    sizes = np.array([len(c) for c in clients], dtype=np.float64)
    futures = []
    for actor, group in zip(actors, _assign(sizes, len(actors)), strict=False):
        tasks = [
            (
                pos,
                data_keys[pos],
                np.asarray(clients[pos].indices),
                rngs[pos],
                None if corrections is None else corrections[pos].clone(),
            )
            for pos in group
        ]
        futures.append(
            actor.train.remote(
                model_key, [_session.model_obj_ref], data_boxes, params_ref, config, float(mu), tasks
            )
        )
    results: list[ClientResult | None] = [None] * len(clients)
    for chunk in ray.get(futures):
        for pos, update, loss, state in chunk:
            rngs[pos].bit_generator.state = state
            c = clients[pos]
            results[pos] = ClientResult(int(c.client_id), len(c), update, {"loss": loss})
    return [r for r in results if r is not None]


def shutdown_ray() -> None:
    """Stop this backend's actors, forget its cached objects and shut Ray down (no-op without Ray)."""
    global _session
    try:
        import ray
    except ImportError:
        _session = _Session()
        return
    if ray.is_initialized():
        for actor in _session.actors:
            try:
                ray.kill(actor)
            except Exception:  # the actor may already be gone with its node
                pass
        ray.shutdown()
    _session = _Session()
