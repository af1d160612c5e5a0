"""Adaptive server optimisers: FedAdagrad, FedAdam and FedYogi (Reddi, Charles, Zaheer, Garrett,
Rush, Konecny, Kumar, McMahan, ICLR 2021: Adaptive Federated Optimization).

Clients train as in FedAvg. The server treats the averaged client update ``Delta_t`` (local model
minus global model, so it points *downhill*) as a pseudo-gradient and applies an adaptive
optimiser to it, following Algorithm 2 of the paper (element-wise operations)::

    m_t = beta1 * m_{t-1} + (1 - beta1) * Delta_t
    v_t = v_{t-1} + Delta_t^2                                                (FedAdagrad)
    v_t = v_{t-1} - (1 - beta2) * Delta_t^2 * sign(v_{t-1} - Delta_t^2)      (FedYogi)
    v_t = beta2 * v_{t-1} + (1 - beta2) * Delta_t^2                          (FedAdam)
    x_{t+1} = x_t + eta * m_t / (sqrt(v_t) + tau)

with ``m_{-1} = 0`` and ``v_{-1} = tau^2`` (the algorithm requires ``v_{-1} >= tau^2``). As in the
paper there is no bias correction; ``tau`` sets the degree of adaptivity.

``Delta_t`` is the mean of the clients' updates weighted by their number of examples (FedAvg's
weights); with equal client sizes this is the paper's unweighted ``1/|S| sum Delta_i``.
The optimiser state (``m_``, ``v_``) lives on the strategy and carries across rounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .._validation import POSITIVE_FLOAT, Interval, check_param
from .fedavg import FedAvg, weighted_mean_update
from .strategy import ClientResult

__all__ = ["FedOpt", "FedAdagrad", "FedAdam", "FedYogi", "weighted_mean_update"]

_BETA = Interval(float, 0, 1, "left")


class FedOpt(FedAvg):
    """Base of the adaptive server optimisers (Algorithm 2 of Reddi et al. 2021).

    Subclasses define the second-moment update :meth:`_second_moment`.

    Parameters
    ----------
    fraction_fit, local_epochs, batch_size, lr, min_clients, lr_decay
        As in :class:`~ppml.fl.fedavg.FedAvg` (``lr`` is the client learning rate eta_l).
    server_lr : float > 0
        eta, the server learning rate.
    beta1 : float in [0, 1), optional
        Momentum of the first moment ``m``; default 0.9 (0 for FedAdagrad).
    tau : float > 0
        Adaptivity (the epsilon of Adam); also sets ``v_{-1} = tau^2``.

    Attributes
    ----------
    m_, v_ : torch.Tensor (float64)
        Server optimiser state after the last aggregated round (absent before the first).
    """

    name = "FedOpt"
    default_beta1 = 0.9  # momentum used when ``beta1`` is not given

    def __init__(
        self,
        fraction_fit: float = 0.1,
        local_epochs: int = 1,
        batch_size: int | None = 10,
        lr: float = 0.1,
        *,
        server_lr: float = 0.1,
        lr_decay: float = 1.0,
        beta1: float | None = None,
        tau: float = 1e-3,
        min_clients: int = 1,
    ) -> None:
        owner = type(self).__name__
        beta1 = self.default_beta1 if beta1 is None else beta1
        check_param("beta1", beta1, owner, _BETA)
        check_param("tau", tau, owner, POSITIVE_FLOAT)
        shared = {"min_clients": min_clients, "server_lr": server_lr, "lr_decay": lr_decay}
        super().__init__(fraction_fit, local_epochs, batch_size, lr, **shared)
        self.beta1 = beta1
        self.tau = tau

    def reset(self) -> None:
        """Forget the optimiser state (``m_``, ``v_``)."""
        for attr in ("m_", "v_"):
            if hasattr(self, attr):
                delattr(self, attr)

    def _second_moment(self, v: torch.Tensor, delta_sq: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def aggregate(
        self,
        server_round: int,
        global_params: torch.Tensor,
        results: Sequence[ClientResult],
        rng: np.random.Generator,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        delta = weighted_mean_update(results)
        if delta is None:
            return global_params, {"clients": len(results)}
        tau = float(self.tau)
        m = getattr(self, "m_", None)
        v = getattr(self, "v_", None)
        if m is None or v is None or m.shape != delta.shape:
            m = torch.zeros_like(delta)
            v = torch.full_like(delta, tau**2)
        beta1 = float(self.beta1)
        m = beta1 * m + (1.0 - beta1) * delta
        v = self._second_moment(v, delta * delta)
        step = float(self.server_lr) * m / (torch.sqrt(v) + tau)
        self.m_, self.v_ = m, v
        new = (global_params.to(torch.float64) + step).to(global_params.dtype)
        metrics = {
            "clients": len(results),
            "examples": int(sum(r.num_examples for r in results)),
            "pseudo_grad_norm": float(torch.linalg.vector_norm(delta)),
            "server_step_norm": float(torch.linalg.vector_norm(step)),
        }
        return new, metrics

    def config_dict(self) -> dict[str, Any]:
        return {**super().config_dict(), "strategy": self.name, "beta1": self.beta1, "tau": self.tau}


class FedAdagrad(FedOpt):
    """FedAdagrad: ``v_t = v_{t-1} + Delta_t^2`` (Reddi et al. 2021, Algorithm 2).

    Parameters are those of :class:`FedOpt`; ``beta1`` defaults to 0 (no momentum).
    """

    name = "FedAdagrad"
    default_beta1 = 0.0

    def _second_moment(self, v: torch.Tensor, delta_sq: torch.Tensor) -> torch.Tensor:
        return v + delta_sq


class _WithBeta2(FedOpt):
    """A FedOpt whose second moment has a decay ``beta2`` (FedAdam, FedYogi)."""

    def __init__(
        self,
        fraction_fit: float = 0.1,
        local_epochs: int = 1,
        batch_size: int | None = 10,
        lr: float = 0.1,
        *,
        server_lr: float = 0.1,
        lr_decay: float = 1.0,
        beta1: float | None = None,
        beta2: float = 0.99,
        tau: float = 1e-3,
        min_clients: int = 1,
    ) -> None:
        check_param("beta2", beta2, type(self).__name__, _BETA)
        super().__init__(
            fraction_fit,
            local_epochs,
            batch_size,
            lr,
            server_lr=server_lr,
            lr_decay=lr_decay,
            beta1=beta1,
            tau=tau,
            min_clients=min_clients,
        )
        self.beta2 = beta2

    def config_dict(self) -> dict[str, Any]:
        return {**super().config_dict(), "beta2": self.beta2}


class FedAdam(_WithBeta2):
    """FedAdam: ``v_t = beta2 v_{t-1} + (1 - beta2) Delta_t^2`` (Reddi et al. 2021, Algorithm 2).

    Parameters are those of :class:`FedOpt` plus ``beta2`` : float in [0, 1), the decay of ``v``.
    """

    name = "FedAdam"

    def _second_moment(self, v: torch.Tensor, delta_sq: torch.Tensor) -> torch.Tensor:
        beta2 = float(self.beta2)
        return beta2 * v + (1.0 - beta2) * delta_sq


class FedYogi(_WithBeta2):
    """FedYogi: ``v_t = v_{t-1} - (1 - beta2) Delta_t^2 sign(v_{t-1} - Delta_t^2)`` (Reddi et al.
    2021, Algorithm 2; Zaheer et al. 2018).

    Parameters are those of :class:`FedOpt` plus ``beta2`` : float in [0, 1).
    """

    name = "FedYogi"

    def _second_moment(self, v: torch.Tensor, delta_sq: torch.Tensor) -> torch.Tensor:
        return v - (1.0 - float(self.beta2)) * delta_sq * torch.sign(v - delta_sq)
