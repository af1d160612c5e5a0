"""The federated round loop, simulated on one machine.

Reproducibility: every random choice of round ``r`` comes from generators keyed by
``(seed, r, purpose[, client])``, so a round's outcome does not depend on the order in which
clients were trained nor on how many rounds ran before it in this process. Together with
checkpoints of the parameters, the strategy's state (server optimiser moments, the privacy
accountant) and the counters, this makes a resumed run end with the same model as an uninterrupted
one.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._validation import POSITIVE_FLOAT, POSITIVE_INT, Interval, Options, ParameterError, check_param
from ..data.dataset import ClientData
from ..models.params import get_flat, num_bytes, set_flat
from ..train.loop import evaluate, train_epochs
from .strategy import ClientResult, Strategy
from .validation import logger, validate_updates

__all__ = ["FederatedResult", "client_accuracy_spread", "run_federated", "round_rng"]

# Purposes of the per-round generators (append new ones; renumbering would change past results).
_SELECT, _CLIENT, _AGGREGATE, _DROPOUT, _STRAGGLE = 0, 1, 2, 3, 4

# Spread (sigma of the log) of the per-round, per-client lognormal factor on a client's round time.
_STRAGGLE_SIGMA = 0.25


def round_rng(seed: int, server_round: int, purpose: int, client: int | None = None) -> np.random.Generator:
    """The generator for one purpose of one round (and one client)."""
    key = [int(seed), int(server_round), int(purpose)] + ([] if client is None else [int(client)])
    return np.random.default_rng(key)


@dataclass
class FederatedResult:
    """What a federated run produced.

    ``history`` has one dict per round (round, clients, dropped, stragglers, round_time_s, seconds,
    train_loss and, on evaluation rounds, test accuracy/loss, plus whatever the strategy reported,
    e.g. epsilon). ``seconds`` is wall-clock time; ``round_time_s`` is simulated time.
    ``bytes_up``/``bytes_down`` count, per client, the bytes of parameters sent over the run.
    """

    model: nn.Module
    history: list[dict[str, Any]]
    bytes_up: np.ndarray
    bytes_down: np.ndarray
    participation: np.ndarray
    seconds: float
    config: dict[str, Any] = field(default_factory=dict)


def run_federated(
    model: nn.Module,
    clients: Sequence[ClientData],
    strategy: Strategy,
    *,
    rounds: int,
    seed: int,
    test: tuple[np.ndarray, np.ndarray] | None = None,
    eval_every: int = 1,
    availability: Callable[[int], np.ndarray] | None = None,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    backend: str = "sequential",
    max_update_norm: float | None = None,
    update_transform: Callable[[int, ClientResult], ClientResult] | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    dropout: float = 0.0,
    min_results: int = 1,
    client_eval: bool = False,
    ray_address: str | None = None,
    client_speed: np.ndarray | None = None,
    round_deadline: float | None = None,
) -> FederatedResult:
    """Run ``rounds`` rounds of ``strategy`` over ``clients``, training them one after another.

    Parameters
    ----------
    model : nn.Module
        The initial global model (modified in place and returned in the result).
    clients : sequence of ClientData
        Client ``k`` is ``clients[k]``.
    strategy : Strategy
        FedAvg, DP-FedAvg, ...
    rounds : int
    seed : int
        Root seed of all per-round randomness (client sampling, batch order, noise).
    test : (X, y), optional
        Central test set, evaluated every ``eval_every`` rounds and after the last round.
    availability : callable, optional
        ``availability(round) -> bool mask of length K``: which clients can train in that round
        (e.g. parked and charging at the training hour). All clients when omitted.
    on_round : callable, optional
        Called with each round's history entry (progress display), after the round's checkpoint; ``model``
        then holds that round's global parameters (a callback may evaluate it; changing it has no effect on
        the run). An exception it raises stops the run there (after the round's checkpoint, if the round was
        one of ``checkpoint_every``).
    backend : {"sequential", "vectorized", "ray"}
        ``"sequential"`` trains selected clients one after another (the reference);
        ``"vectorized"`` trains them all at once with ``torch.func`` (same batches, same result
        within float tolerance, several times faster for small models); ``"ray"`` trains them on a
        pool of Ray actors (local, or a cluster given by ``ray_address``), with the sequential result.
    max_update_norm : float, optional
        Updates with a larger L2 norm are rejected (besides NaN/Inf, wrong shape or dtype, which
        are always rejected). Rejections are logged on the ``ppml.fl`` logger and counted in the
        round's history entry; the round goes on with the remaining updates.
    update_transform : callable, optional
        ``update_transform(round, result) -> result`` applied to each client's result before the
        server sees it: simulates faulty or malicious clients (poisoning, corrupted uploads).
    checkpoint_dir : path, optional
        Write ``checkpoint.pt`` there every ``checkpoint_every`` rounds (atomically).
    dropout : float in [0, 1)
        Probability that a selected client drops out after downloading the model and before
        uploading (network loss, car switched off); drawn per client and round from the round's
        generator. Its upload is not counted.
    min_results : int
        If fewer accepted updates than this arrive, the round changes nothing (the strategy does
        not aggregate and, for DP-FedAvg, nothing is released).
    client_eval : bool
        On evaluation rounds, also evaluate the global model on every client's own data and record
        the spread of client accuracies (mean, min, 10th/50th/90th percentiles), for fairness.
    resume : bool
        Continue from ``checkpoint_dir/checkpoint.pt`` (same seed, clients and settings required):
        the final model equals that of an uninterrupted run.
    client_speed : array of K floats > 0, optional
        Examples each client processes per simulated second. All clients equally fast (1.0) when
        omitted. A client that did not drop out finishes the round after
        ``local_epochs * len(client) / client_speed[c]`` simulated seconds times a lognormal factor
        (sigma 0.25, median 1) drawn per client and round from the round's own generator.
    round_deadline : float > 0, optional
        Simulated seconds the server waits for uploads. Clients that would finish later are
        stragglers: they download the model but are not trained (their result would arrive too
        late, so it costs no compute), their uploads are not counted in ``bytes_up`` and the round
        does not count as their participation. The server aggregates what arrived by the deadline:
        FedAvg's weights are the sizes of the arrived clients only, normalised over them (a
        straggler gets no weight, and no phantom weight is reserved for it), so the average is the
        usual unbiased size-weighted mean *of the clients that arrived*. Dropping slow clients
        still biases the model towards fast clients and clients with little data (small clients
        finish first); a client whose time always exceeds the deadline never contributes. No
        deadline (the default) waits for everyone. Each history entry records ``stragglers`` (0
        without a deadline) and ``round_time_s``, the round's simulated time: the latest arrival
        among the clients that made it, or the deadline when there were stragglers.
    """
    owner = "run_federated"
    check_param("rounds", rounds, owner, POSITIVE_INT)
    check_param("eval_every", eval_every, owner, POSITIVE_INT)
    check_param("backend", backend, owner, Options(("sequential", "vectorized", "ray")))
    if backend == "vectorized":
        from .backends.vectorized import check_vectorizable, train_clients_vectorized

        try:
            check_vectorizable(model, strategy.train_config)
        except ValueError as err:
            raise ParameterError(f"The 'backend' parameter of {owner} is 'vectorized', but {err}.") from None
    check_param("checkpoint_every", checkpoint_every, owner, POSITIVE_INT)
    if backend == "ray":
        from .backends.ray_backend import train_clients_ray

        def _train_ray(*args: Any, **kwargs: Any) -> list[ClientResult]:
            return train_clients_ray(*args, address=ray_address, **kwargs)

        try:
            import ray  # noqa: F401
        except ImportError:
            raise ParameterError(
                "The 'backend' parameter of run_federated is 'ray', but Ray is not installed: "
                "pip install 'ppml[ray]'.",
                param="backend",
            ) from None
    check_param("dropout", dropout, owner, Interval(float, 0, 1, "left"))
    check_param("min_results", min_results, owner, POSITIVE_INT)
    check_param("round_deadline", round_deadline, owner, POSITIVE_FLOAT, None)
    if resume and checkpoint_dir is None:
        raise ParameterError(
            "The 'resume' parameter of run_federated needs 'checkpoint_dir'.", param="resume"
        )
    k = len(clients)
    if k == 0:
        raise ValueError("run_federated needs at least one client")
    speed = _check_client_speed(client_speed, k, owner)
    # Simulated seconds of one client's round at median jitter: E passes over its examples.
    base_time = (
        np.array([len(c) for c in clients], dtype=np.float64) * float(strategy.train_config.epochs) / speed
    )
    worker = copy.deepcopy(model)
    params = get_flat(model)
    model_bytes = num_bytes(model)
    bytes_up = np.zeros(k, dtype=np.int64)
    bytes_down = np.zeros(k, dtype=np.int64)
    participation = np.zeros(k, dtype=np.int64)
    history: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    all_ids = np.arange(k, dtype=np.int64)
    population = {
        "dropout": dropout,
        "min_results": min_results,
        "max_update_norm": max_update_norm,
        "round_deadline": round_deadline,
        "client_speed": None if client_speed is None else np.asarray(client_speed, dtype=float).tolist(),
    }
    fingerprint = _fingerprint(seed, clients, params, strategy, population)
    first_round = 1
    ckpt_path = None if checkpoint_dir is None else Path(checkpoint_dir) / "checkpoint.pt"
    if resume:
        assert ckpt_path is not None
        state = _load_checkpoint(ckpt_path, fingerprint)
        params = state["params"]
        strategy.__dict__.update(state["strategy"].__dict__)
        bytes_up, bytes_down, participation = state["bytes_up"], state["bytes_down"], state["participation"]
        history = state["history"]
        first_round = state["round"] + 1
    for r in range(first_round, rounds + 1):
        t0 = time.perf_counter()
        available = all_ids if availability is None else all_ids[np.asarray(availability(r), dtype=bool)]
        select_rng = round_rng(seed, r, _SELECT)
        selected = strategy.configure_round(r, k, available, select_rng)
        if dropout > 0 and len(selected):
            survived = selected[round_rng(seed, r, _DROPOUT).random(len(selected)) >= dropout]
        else:
            survived = selected
        # Decided before training, so that stragglers cost no compute: they are simply not trained.
        jitter = round_rng(seed, r, _STRAGGLE).lognormal(0.0, _STRAGGLE_SIGMA, len(selected))
        finish = base_time[selected] * jitter
        finish = finish[np.isin(selected, survived)]
        if round_deadline is not None:
            on_time = finish <= round_deadline
            stragglers = int(len(survived) - on_time.sum())
            survived, finish = survived[on_time], finish[on_time]
        else:
            stragglers = 0
        if stragglers:
            round_time = float(round_deadline)  # type: ignore[arg-type]
        else:
            round_time = float(finish.max()) if len(finish) else 0.0
        for cid in selected:
            bytes_down[cid] += model_bytes
        results: list[ClientResult] = []
        losses = []
        corrections_of = getattr(strategy, "client_corrections", None)
        config_of = getattr(strategy, "round_train_config", None)
        round_config = config_of(r) if config_of is not None else strategy.train_config
        corrections = corrections_of(survived, params) if corrections_of is not None else None
        if backend in ("vectorized", "ray"):
            chosen = [clients[int(cid)] for cid in survived]
            rngs = [round_rng(seed, r, _CLIENT, int(cid)) for cid in survived]
            train_many = train_clients_vectorized if backend == "vectorized" else _train_ray
            results = train_many(
                worker,
                chosen,
                params,
                round_config,
                rngs,
                mu=float(getattr(strategy, "mu", 0.0)),
                corrections=corrections,
            )
            losses = [float(res.metrics["loss"]) for res in results if "loss" in res.metrics]
        else:
            hook = getattr(strategy, "local_train_kwargs", None)
            for j, cid in enumerate(survived):
                c = clients[int(cid)]
                set_flat(worker, params)
                extra = hook([p.detach().clone() for p in worker.parameters()]) if hook else {}
                if corrections is not None:
                    extra["gradient_correction"] = corrections[j]
                local = train_epochs(
                    worker, c.X, c.y, round_config, round_rng(seed, r, _CLIENT, int(cid)), **extra
                )
                results.append(
                    ClientResult(int(cid), len(c), get_flat(worker) - params, {"loss": local["loss"]})
                )
                losses.append(local["loss"])
        for cid in survived:
            bytes_up[cid] += model_bytes
            participation[cid] += 1
        if update_transform is not None:
            results = [update_transform(r, res) for res in results]
        accepted = []
        rejected: dict[str, str] = {}
        for res, reason in zip(results, validate_updates(results, params, max_update_norm), strict=True):
            if reason is None:
                accepted.append(res)
            else:
                rejected[str(res.client_id)] = reason
                logger.warning("round %d: rejected the update of client %s: %s", r, res.client_id, reason)
        if len(accepted) >= min_results:
            params, agg_metrics = strategy.aggregate(r, params, accepted, round_rng(seed, r, _AGGREGATE))
        else:
            agg_metrics = {"clients": len(accepted), "skipped": f"fewer than {min_results} updates arrived"}
        entry: dict[str, Any] = {
            "round": r,
            "available": int(len(available)),
            "selected": int(len(selected)),
            "dropped": int(len(selected) - len(survived) - stragglers),
            "stragglers": stragglers,
            "round_time_s": round_time,
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "rejected": len(rejected),
            **agg_metrics,
        }
        if rejected:
            entry["rejections"] = rejected
        if test is not None and (r % eval_every == 0 or r == rounds):
            set_flat(model, params)
            ev = evaluate(model, *test)
            entry["test_accuracy"] = ev["accuracy"]
            entry["test_loss"] = ev["loss"]
        if client_eval and (r % eval_every == 0 or r == rounds):
            set_flat(model, params)
            entry.update(client_accuracy_spread(model, clients))
        entry["seconds"] = time.perf_counter() - t0
        history.append(entry)
        if ckpt_path is not None and (r % checkpoint_every == 0 or r == rounds):
            _save_checkpoint(
                ckpt_path,
                {
                    "round": r,
                    "fingerprint": fingerprint,
                    "params": params,
                    "strategy": strategy,
                    "bytes_up": bytes_up,
                    "bytes_down": bytes_down,
                    "participation": participation,
                    "history": history,
                },
            )
        if on_round is not None:
            set_flat(model, params)  # the callback may look at (evaluate) this round's global model
            on_round(entry)
    set_flat(model, params)
    return FederatedResult(
        model=model,
        history=history,
        bytes_up=bytes_up,
        bytes_down=bytes_down,
        participation=participation,
        seconds=time.perf_counter() - t_start,
        config={"rounds": rounds, "seed": seed, "num_clients": k, **strategy.config_dict()},
    )


def _check_client_speed(client_speed: Any, k: int, owner: str) -> np.ndarray:
    """``client_speed`` as K positive finite floats (all 1.0 when None), or a ParameterError."""
    if client_speed is None:
        return np.ones(k, dtype=np.float64)
    try:
        speed = np.asarray(client_speed)
    except (TypeError, ValueError):
        speed = np.asarray(None)
    if speed.shape != (k,) or speed.dtype.kind not in "iuf":
        raise ParameterError(
            f"The 'client_speed' parameter of {owner} must be an array of {k} floats in the range "
            f"(0, inf), one per client. Got {client_speed!r} instead.",
            param="client_speed",
        )
    speed = speed.astype(np.float64)
    bad = np.flatnonzero(~(np.isfinite(speed) & (speed > 0)))
    if len(bad):
        check_param("client_speed", float(speed[bad[0]]), owner, Interval(float, 0, math.inf, "neither"))
    return speed


def _fingerprint(
    seed: int,
    clients: Sequence[ClientData],
    params: torch.Tensor,
    strategy: Strategy,
    population: dict[str, Any],
) -> str:
    """What must be equal for a checkpoint to be resumed: seed, clients, model size, strategy and
    population settings (dropout, deadline, ...)."""
    h = hashlib.sha256()
    h.update(json.dumps(population, sort_keys=True, default=str).encode())
    h.update(json.dumps([int(seed), len(clients), int(params.numel())]).encode())
    h.update(json.dumps(strategy.config_dict(), sort_keys=True, default=str).encode())
    for c in clients:
        h.update(np.ascontiguousarray(c.indices).tobytes())
    return h.hexdigest()[:16]


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".checkpoint.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)  # a crash mid-write never replaces a good checkpoint with a broken one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_checkpoint(path: Path, fingerprint: str) -> dict[str, Any]:
    if not path.is_file():
        raise ParameterError(f"--resume: no checkpoint at {path}.", param="resume")
    # The checkpoint holds the strategy object (its optimiser state and privacy accountant); it is a
    # file this process or an earlier run of the same user wrote, so full unpickling is acceptable.
    state = torch.load(path, weights_only=False)
    if state.get("fingerprint") != fingerprint:
        raise ParameterError(
            f"--resume: the checkpoint at {path} belongs to a different run (seed, clients, model or "
            "strategy settings differ); start a new run or use the original settings.",
            param="resume",
        )
    return state


@torch.no_grad()
def client_accuracy_spread(model: nn.Module, clients: Sequence[ClientData]) -> dict[str, float]:
    """Accuracy of ``model`` on each client's own data, summarised (one forward pass per parent dataset)."""
    from ..train.loop import predict_logits

    accs = np.empty(len(clients))
    by_parent: dict[int, np.ndarray] = {}
    for i, c in enumerate(clients):
        key = id(c.parent)
        if key not in by_parent:
            by_parent[key] = predict_logits(model, c.parent.X).argmax(1).numpy() == c.parent.y
        accs[i] = by_parent[key][c.indices].mean() if len(c) else np.nan
    accs = accs[~np.isnan(accs)]
    p10, p50, p90 = np.percentile(accs, [10, 50, 90])
    return {
        "client_accuracy_mean": float(accs.mean()),
        "client_accuracy_min": float(accs.min()),
        "client_accuracy_p10": float(p10),
        "client_accuracy_p50": float(p50),
        "client_accuracy_p90": float(p90),
    }
