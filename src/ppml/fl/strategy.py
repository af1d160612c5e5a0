"""The Strategy protocol: which clients train in a round, and how their results become a model.

A round of federated training, as ppml runs it::

    selected = strategy.configure_round(round, available, rng)      # server picks clients
    results  = [client trains on its data -> ClientResult(update)]  # backend
    params, metrics = strategy.aggregate(round, params, results, rng)

Wrappers (user-level DP, secure aggregation) are strategies that hold another strategy and change
one step, so any combination composes without special cases.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from ..train.loop import TrainConfig

__all__ = ["ClientResult", "Strategy"]


@dataclass(frozen=True, eq=False)
class ClientResult:
    """What one client sends back after local training.

    ``update`` is the flat difference ``local_params - global_params`` (float32); ``num_examples``
    is the size of the client's training set (the FedAvg weight).
    """

    client_id: int
    num_examples: int
    update: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class Strategy(Protocol):
    """A federated optimisation algorithm (FedAvg and successors) or a wrapper around one.

    Optional hooks the round loop uses when a strategy has them: ``round_train_config(server_round)``
    (the local training of that round, e.g. a decayed learning rate; default :attr:`train_config`),
    ``local_train_kwargs(global_params)`` (extra arguments of local training, e.g. FedProx's proximal term)
    and ``client_corrections(client_ids, params)`` (SCAFFOLD's gradient corrections).
    """

    name: str

    @property
    def train_config(self) -> TrainConfig:
        """What each selected client runs locally."""
        ...

    def configure_round(
        self, server_round: int, num_clients: int, available: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Ids of the clients that train in ``server_round`` (a subset of ``available``)."""
        ...

    def aggregate(
        self,
        server_round: int,
        global_params: torch.Tensor,
        results: Sequence[ClientResult],
        rng: np.random.Generator,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """New global parameters from the clients' results, and round metrics."""
        ...

    def config_dict(self) -> dict[str, Any]:
        """Parameters as given, for the report."""
        ...
