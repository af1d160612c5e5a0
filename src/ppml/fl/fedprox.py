"""FedProx (Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith, MLSys 2020): Federated Optimization in
Heterogeneous Networks.

FedProx is FedAvg whose clients minimise a proximal objective instead of their plain loss::

    h_k(w; w_t) = F_k(w) + (mu / 2) * ||w - w_t||^2

where ``w_t`` is the global model the round started from. The proximal term limits how far a
client drifts from ``w_t`` on non-IID data; ``mu = 0`` is exactly FedAvg. Server-side sampling and
size-weighted averaging are FedAvg's.
"""

from __future__ import annotations

from typing import Any

import torch

from .._validation import NONNEG_FLOAT, check_param
from .fedavg import FedAvg

__all__ = ["FedProx"]


class FedProx(FedAvg):
    """FedAvg with the proximal term ``(mu/2) ||w - w_global||^2`` in every client's loss.

    Parameters
    ----------
    fraction_fit, local_epochs, batch_size, lr, min_clients, server_lr, lr_decay
        As in :class:`~ppml.fl.fedavg.FedAvg`.
    mu : float >= 0
        Weight of the proximal term; ``0`` gives FedAvg's local training exactly.

    Notes
    -----
    The round loop asks for the proximal term through :meth:`local_train_kwargs`; a backend that
    does not call that hook trains the plain FedAvg objective.
    """

    name = "FedProx"

    def __init__(
        self,
        fraction_fit: float = 0.1,
        local_epochs: int = 1,
        batch_size: int | None = 10,
        lr: float = 0.1,
        *,
        mu: float = 0.01,
        min_clients: int = 1,
        server_lr: float = 1.0,
        lr_decay: float = 1.0,
    ) -> None:
        check_param("mu", mu, type(self).__name__, NONNEG_FLOAT)
        shared = {"min_clients": min_clients, "server_lr": server_lr, "lr_decay": lr_decay}
        super().__init__(fraction_fit, local_epochs, batch_size, lr, **shared)
        self.mu = mu

    def local_train_kwargs(self, global_params: list[torch.Tensor]) -> dict[str, Any]:
        """Keyword arguments of :func:`~ppml.train.loop.train_epochs` for one client.

        ``global_params`` are the global model's parameter tensors (detached copies), in the
        order of ``model.parameters()``.
        """
        return {"proximal_to": global_params, "mu": float(self.mu)}

    def config_dict(self) -> dict[str, Any]:
        return {**super().config_dict(), "strategy": self.name, "mu": self.mu}
