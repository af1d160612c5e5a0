"""FedAvg (McMahan et al., AISTATS 2017): Communication-Efficient Learning of Deep Networks from
Decentralized Data.

Each round the server samples ``m = max(round(C * K), 1)`` of the K clients uniformly without
replacement, each runs E epochs of SGD with batch size B from the global model, and the server
replaces the model by the average of the clients' models weighted by their number of examples
``n_k``. FedSGD is the special case E = 1, B = infinity (``batch_size=None``). The client learning rate
may decay geometrically per round (``lr_decay``), a usual schedule for long runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import torch

from .._validation import POSITIVE_FLOAT, POSITIVE_INT, UNIT_LEFT_OPEN, Interval, check_param
from ..train.loop import TrainConfig
from .strategy import ClientResult
from .validation import stack_updates

__all__ = ["FedAvg", "weighted_mean_update"]


def weighted_mean_update(results: Sequence[ClientResult]) -> torch.Tensor | None:
    """The clients' updates averaged with weights ``n_k`` (float64), or ``None`` if there is no weight."""
    if not results:
        return None
    weights = torch.tensor([float(r.num_examples) for r in results], dtype=torch.float64)
    total = float(weights.sum())
    if total <= 0:
        return None
    stacked = stack_updates([r.update for r in results])
    return (weights @ stacked.to(torch.float64)) / total


class FedAvg:
    """Federated averaging.

    Parameters
    ----------
    fraction_fit : float in (0, 1]
        C, the fraction of all K clients asked to train each round.
    local_epochs : int >= 1
        E, local passes over each client's data.
    batch_size : int >= 1 or None
        B, local mini-batch size; ``None`` means the client's whole dataset (FedSGD when E = 1).
    lr : float > 0
        Client learning rate.
    min_clients : int >= 1
        Rounds with fewer available clients than this are skipped (the model is unchanged).
    server_lr : float > 0
        Step size on the averaged update (1.0 is plain FedAvg).
    lr_decay : float in (0, 1]
        The client learning rate of round t (counted from 1) is ``lr * lr_decay ** (t - 1)``; 1.0 (the
        default) keeps it constant. The rate follows from the round number alone, so a resumed run uses
        the same rates as an uninterrupted one.
    """

    name = "FedAvg"

    def __init__(
        self,
        fraction_fit: float = 0.1,
        local_epochs: int = 1,
        batch_size: int | None = 10,
        lr: float = 0.1,
        *,
        min_clients: int = 1,
        server_lr: float = 1.0,
        lr_decay: float = 1.0,
    ) -> None:
        owner = type(self).__name__
        check_param("fraction_fit", fraction_fit, owner, UNIT_LEFT_OPEN)
        check_param("local_epochs", local_epochs, owner, POSITIVE_INT)
        check_param("batch_size", batch_size, owner, POSITIVE_INT, None)
        check_param("lr", lr, owner, POSITIVE_FLOAT)
        check_param("min_clients", min_clients, owner, POSITIVE_INT)
        check_param("server_lr", server_lr, owner, Interval(float, 0, None, "neither"))
        check_param("lr_decay", lr_decay, owner, UNIT_LEFT_OPEN)
        self.fraction_fit = fraction_fit
        self.local_epochs = local_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.min_clients = min_clients
        self.server_lr = server_lr
        self.lr_decay = lr_decay
        self._train_config = TrainConfig(epochs=local_epochs, batch_size=batch_size, lr=lr)

    @property
    def train_config(self) -> TrainConfig:
        """The local training of the first round (epochs, batch size, initial learning rate)."""
        return self._train_config

    def round_lr(self, server_round: int) -> float:
        """The client learning rate of ``server_round`` (counted from 1)."""
        return float(self.lr) * float(self.lr_decay) ** (int(server_round) - 1)

    def round_train_config(self, server_round: int) -> TrainConfig:
        """What each selected client runs in ``server_round``: :attr:`train_config` at :meth:`round_lr`."""
        if self.lr_decay == 1.0:
            return self._train_config
        return replace(self._train_config, lr=self.round_lr(server_round))

    def clients_per_round(self, num_clients: int) -> int:
        """``max(round(C * K), 1)``, as in McMahan et al. 2017."""
        return max(int(round(self.fraction_fit * num_clients)), 1)

    def configure_round(
        self, server_round: int, num_clients: int, available: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        m = min(self.clients_per_round(num_clients), len(available))
        if len(available) < self.min_clients:
            return np.zeros(0, dtype=np.int64)
        return np.sort(rng.choice(np.asarray(available, dtype=np.int64), size=m, replace=False))

    def aggregate(
        self,
        server_round: int,
        global_params: torch.Tensor,
        results: Sequence[ClientResult],
        rng: np.random.Generator,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        mean_update = weighted_mean_update(results)
        if mean_update is None:
            return global_params, {"clients": len(results)}
        new = global_params + self.server_lr * mean_update.to(global_params.dtype)
        return new, {"clients": len(results), "examples": int(sum(r.num_examples for r in results))}

    def config_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.name,
            "fraction_fit": self.fraction_fit,
            "local_epochs": self.local_epochs,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "min_clients": self.min_clients,
            "server_lr": self.server_lr,
            "train": asdict(self._train_config),
            # Only when set: checkpoints fingerprint this dict, and those of runs from before lr_decay existed
            # (a constant rate) must stay resumable.
            **({"lr_decay": self.lr_decay} if self.lr_decay != 1.0 else {}),
        }
