"""SCAFFOLD (Karimireddy, Kale, Mohri, Reddi, Stich, Suresh, ICML 2020): Stochastic Controlled
Averaging for Federated Learning.

With many local steps on non-IID data, each FedAvg client walks towards its *own* optimum, and the
average of those walks does not stop at the optimum of the global objective ("client drift").
SCAFFOLD corrects every local gradient with control variates that estimate the difference between
the global and the client's gradient::

    local step:     y <- y - lr * (g_i(y) - c_i + c)
    after K steps:  c_i+ = c_i - c + (x - y) / (K * lr)                  (the paper's option II)
    client sends:   dy_i = y - x,   dc_i = c_i+ - c_i
    server:         x <- x + server_lr * mean_i dy_i,   c <- c + (|S| / N) * mean_i dc_i

At a fixed point the corrections make every client's stationary point the global one, so SCAFFOLD
converges to the optimum of ``(1/N) sum_i f_i`` where FedAvg stops short of it.

Where the state lives
---------------------
In a deployment each client keeps its own ``c_i``. In ppml's simulation this strategy keeps all of
them (``client_controls_``), which is what makes SCAFFOLD's memory cost visible: one model-sized
vector per client that has ever trained. ``dc_i`` is a deterministic function of what the client
sends anyway (``dy_i``, its number of local steps ``K_i = E * ceil(n_i / B)`` and the learning rate),
so the server computes it from ``dy_i``: the bytes counted per upload are then one model, whereas a
deployment sends two (``dy_i`` and ``dc_i``), as the paper notes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .._validation import ParameterError
from .fedavg import FedAvg, weighted_mean_update
from .strategy import ClientResult

__all__ = ["Scaffold"]


class Scaffold(FedAvg):
    """SCAFFOLD: FedAvg with control variates that cancel client drift.

    Parameters
    ----------
    fraction_fit, local_epochs, batch_size, lr, min_clients, server_lr, lr_decay
        As in :class:`~ppml.fl.fedavg.FedAvg` (``server_lr`` is the paper's global step size eta_g).
    weighted : bool, default False
        Average the model updates with weights ``n_i`` (FedAvg's choice) instead of uniformly over
        the sampled clients (the paper's algorithm, which minimises ``(1/N) sum_i f_i``).

    Attributes
    ----------
    server_control_ : Tensor or None
        The server's control variate ``c`` (flat, float64), created on first use.
    client_controls_ : dict of int to Tensor
        Each client's ``c_i`` (flat, float64); a client that never trained has ``c_i = 0``.

    Notes
    -----
    Local training must be plain SGD over the same mini-batches the step count assumes
    (``K_i = E * ceil(n_i / B)``, ``B = n_i`` when ``batch_size`` is ``None``); the round loop passes
    ``c - c_i`` to every backend as the gradient correction.
    """

    name = "SCAFFOLD"

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
        weighted: bool = False,
    ) -> None:
        shared = {"min_clients": min_clients, "server_lr": server_lr, "lr_decay": lr_decay}
        super().__init__(fraction_fit, local_epochs, batch_size, lr, **shared)
        if not isinstance(weighted, bool):
            raise ParameterError(
                f"The 'weighted' parameter of Scaffold must be a bool. Got {weighted!r} instead.",
                param="weighted",
            )
        self.weighted = weighted
        self.server_control_: torch.Tensor | None = None
        self.client_controls_: dict[int, torch.Tensor] = {}
        self.num_clients_: int | None = None

    def configure_round(
        self, server_round: int, num_clients: int, available: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        self.num_clients_ = int(num_clients)
        return super().configure_round(server_round, num_clients, available, rng)

    def _control(self, size: int) -> torch.Tensor:
        if self.server_control_ is None:
            self.server_control_ = torch.zeros(size, dtype=torch.float64)
        elif self.server_control_.numel() != size:
            raise ValueError(
                f"SCAFFOLD's control variate has {self.server_control_.numel()} entries but the model has {size}"
            )
        return self.server_control_

    def client_corrections(self, client_ids: Sequence[int], global_params: torch.Tensor) -> torch.Tensor:
        """``c - c_i`` for each client in ``client_ids``: what its local steps add to the gradient.

        Returns a float32 tensor of shape ``(len(client_ids), num_parameters)``.
        """
        c = self._control(global_params.numel())
        rows = [c - self.client_controls_.get(int(i), torch.zeros_like(c)) for i in client_ids]
        if not rows:
            return torch.zeros(0, global_params.numel(), dtype=torch.float32)
        return torch.stack(rows).to(torch.float32)

    def local_steps(self, num_examples: int) -> int:
        """``K_i``: the local SGD steps a client with ``num_examples`` examples takes in a round."""
        b = num_examples if self.batch_size is None else min(int(self.batch_size), num_examples)
        return int(self.local_epochs) * math.ceil(num_examples / max(b, 1))

    def aggregate(
        self,
        server_round: int,
        global_params: torch.Tensor,
        results: Sequence[ClientResult],
        rng: np.random.Generator,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        results = [r for r in results if r.num_examples > 0]
        if not results:
            return global_params, {"clients": 0}
        c = self._control(global_params.numel())
        if self.weighted:
            mean_update = weighted_mean_update(results)
            assert mean_update is not None
        else:
            mean_update = torch.stack([r.update.to(torch.float64) for r in results]).mean(0)
        delta_c = torch.zeros_like(c)
        lr = self.round_train_config(server_round).lr  # the rate the clients ran this round
        for r in results:
            cid = int(r.client_id)
            old = self.client_controls_.get(cid, torch.zeros_like(c))
            steps = self.local_steps(r.num_examples)
            new = old - c - r.update.to(torch.float64) / (steps * lr)
            self.client_controls_[cid] = new
            delta_c += new - old
        total = self.num_clients_ if self.num_clients_ is not None else len(results)
        self.server_control_ = c + delta_c / max(total, 1)
        new_params = global_params + self.server_lr * mean_update.to(global_params.dtype)
        return new_params, {
            "clients": len(results),
            "examples": int(sum(r.num_examples for r in results)),
            "control_norm": float(self.server_control_.norm()),
        }

    def config_dict(self) -> dict[str, Any]:
        return {**super().config_dict(), "strategy": self.name, "weighted": self.weighted}
