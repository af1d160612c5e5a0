"""The federated round loop, simulated on one machine (sequential backend).

Reproducibility: every random choice of round ``r`` comes from generators keyed by
``(seed, r, purpose[, client])``, so a round's outcome does not depend on the order in which
clients were trained nor on how many rounds ran before it in this process.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from .._validation import POSITIVE_INT, Options, ParameterError, check_param
from ..data.dataset import ClientData
from ..models.params import get_flat, num_bytes, set_flat
from ..train.loop import evaluate, train_epochs
from .strategy import ClientResult, Strategy

__all__ = ["FederatedResult", "run_federated", "round_rng"]

# Purposes of the per-round generators.
_SELECT, _CLIENT, _AGGREGATE = 0, 1, 2


def round_rng(seed: int, server_round: int, purpose: int, client: int | None = None) -> np.random.Generator:
    """The generator for one purpose of one round (and one client)."""
    key = [int(seed), int(server_round), int(purpose)] + ([] if client is None else [int(client)])
    return np.random.default_rng(key)


@dataclass
class FederatedResult:
    """What a federated run produced.

    ``history`` has one dict per round (round, clients, seconds, train_loss and, on evaluation
    rounds, test accuracy/loss, plus whatever the strategy reported, e.g. epsilon).
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
        Called with each round's history entry (progress display).
    backend : {"sequential", "vectorized"}
        ``"sequential"`` trains selected clients one after another (the reference);
        ``"vectorized"`` trains them all at once with ``torch.func`` (same batches, same result
        within float tolerance, several times faster for small models).
    """
    owner = "run_federated"
    check_param("rounds", rounds, owner, POSITIVE_INT)
    check_param("eval_every", eval_every, owner, POSITIVE_INT)
    check_param("backend", backend, owner, Options(("sequential", "vectorized")))
    if backend == "vectorized":
        from .backends.vectorized import check_vectorizable, train_clients_vectorized

        try:
            check_vectorizable(model, strategy.train_config)
        except ValueError as err:
            raise ParameterError(f"The 'backend' parameter of {owner} is 'vectorized', but {err}.") from None
    k = len(clients)
    if k == 0:
        raise ValueError("run_federated needs at least one client")
    worker = copy.deepcopy(model)
    params = get_flat(model)
    model_bytes = num_bytes(model)
    bytes_up = np.zeros(k, dtype=np.int64)
    bytes_down = np.zeros(k, dtype=np.int64)
    participation = np.zeros(k, dtype=np.int64)
    history: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    all_ids = np.arange(k, dtype=np.int64)
    for r in range(1, rounds + 1):
        t0 = time.perf_counter()
        available = all_ids if availability is None else all_ids[np.asarray(availability(r), dtype=bool)]
        selected = strategy.configure_round(r, k, available, round_rng(seed, r, _SELECT))
        results: list[ClientResult] = []
        losses = []
        if backend == "vectorized":
            chosen = [clients[int(cid)] for cid in selected]
            rngs = [round_rng(seed, r, _CLIENT, int(cid)) for cid in selected]
            results = train_clients_vectorized(
                worker, chosen, params, strategy.train_config, rngs, mu=float(getattr(strategy, "mu", 0.0))
            )
        else:
            hook = getattr(strategy, "local_train_kwargs", None)
            for cid in selected:
                c = clients[int(cid)]
                set_flat(worker, params)
                extra = hook([p.detach().clone() for p in worker.parameters()]) if hook else {}
                local = train_epochs(
                    worker, c.X, c.y, strategy.train_config, round_rng(seed, r, _CLIENT, int(cid)), **extra
                )
                results.append(
                    ClientResult(int(cid), len(c), get_flat(worker) - params, {"loss": local["loss"]})
                )
                losses.append(local["loss"])
        for cid in selected:
            bytes_down[cid] += model_bytes
            bytes_up[cid] += model_bytes
            participation[cid] += 1
        params, agg_metrics = strategy.aggregate(r, params, results, round_rng(seed, r, _AGGREGATE))
        entry: dict[str, Any] = {
            "round": r,
            "available": int(len(available)),
            "selected": int(len(selected)),
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            **agg_metrics,
        }
        if test is not None and (r % eval_every == 0 or r == rounds):
            set_flat(model, params)
            ev = evaluate(model, *test)
            entry["test_accuracy"] = ev["accuracy"]
            entry["test_loss"] = ev["loss"]
        entry["seconds"] = time.perf_counter() - t0
        history.append(entry)
        if on_round is not None:
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
