"""Byzantine-robust aggregation: coordinate-wise median and trimmed mean (Yin, Chen, Ramchandran,
Bartlett, ICML 2018: Byzantine-Robust Distributed Learning: Towards Optimal Statistical Rates).

Clients train as in FedAvg; the server replaces the size-weighted mean of the updates by a
statistic that a minority of arbitrary (poisoned) updates cannot move far:

* **coordinate-wise median**: for each coordinate, the median of the clients' values (the mean of
  the two middle values when the number of clients is even). It tolerates fewer than half of the
  clients being malicious.
* **coordinate-wise beta-trimmed mean**: for each coordinate, drop the ``floor(beta * m)``
  largest and smallest of the ``m`` values and average the rest. It tolerates a fraction of
  malicious clients below ``beta``.

Both are unweighted (every client counts once, whatever its ``n_k``), as in the paper: weighting
by a self-reported size would let one attacker claim a huge weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .._validation import Interval, check_param
from .fedavg import FedAvg
from .strategy import ClientResult

__all__ = ["FedMedian", "FedTrimmedAvg", "coordinate_median", "trimmed_mean"]


def coordinate_median(updates: torch.Tensor) -> torch.Tensor:
    """Coordinate-wise median of the rows of ``updates`` (shape ``(m, d)``), in float64."""
    u = updates.to(torch.float64)
    m = u.shape[0]
    s = torch.sort(u, dim=0).values
    if m % 2 == 1:
        return s[m // 2]
    return 0.5 * (s[m // 2 - 1] + s[m // 2])


def trimmed_mean(updates: torch.Tensor, beta: float) -> torch.Tensor:
    """Coordinate-wise mean after dropping the ``floor(beta * m)`` smallest and largest values.

    ``beta`` must be in ``[0, 0.5)`` so that at least one value per coordinate remains.
    """
    u = updates.to(torch.float64)
    m = u.shape[0]
    k = int(np.floor(beta * m))
    if m - 2 * k < 1:
        raise ValueError(f"trimming {k} values from each end of {m} leaves nothing")
    s = torch.sort(u, dim=0).values
    return s[k : m - k].mean(0)


class _RobustFedAvg(FedAvg):
    """FedAvg with the mean of the updates replaced by a robust statistic."""

    def _robust_update(self, updates: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def aggregate(
        self,
        server_round: int,
        global_params: torch.Tensor,
        results: Sequence[ClientResult],
        rng: np.random.Generator,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        if not results:
            return global_params, {"clients": 0}
        stacked = torch.stack([r.update.to(torch.float64) for r in results])
        agg = self._robust_update(stacked)
        new = (global_params.to(torch.float64) + float(self.server_lr) * agg).to(global_params.dtype)
        return new, {"clients": len(results), "examples": int(sum(r.num_examples for r in results))}


class FedMedian(_RobustFedAvg):
    """FedAvg with the coordinate-wise median of the client updates (Yin et al. 2018).

    Parameters are those of :class:`~ppml.fl.fedavg.FedAvg`.
    """

    name = "FedMedian"

    def _robust_update(self, updates: torch.Tensor) -> torch.Tensor:
        return coordinate_median(updates)


class FedTrimmedAvg(_RobustFedAvg):
    """FedAvg with the coordinate-wise beta-trimmed mean of the client updates (Yin et al. 2018).

    Parameters
    ----------
    fraction_fit, local_epochs, batch_size, lr, min_clients, server_lr, lr_decay
        As in :class:`~ppml.fl.fedavg.FedAvg`.
    beta : float in [0, 0.5)
        Fraction of the values dropped at *each* end of every coordinate; ``0`` is the unweighted
        mean.
    """

    name = "FedTrimmedAvg"

    def __init__(
        self,
        fraction_fit: float = 0.1,
        local_epochs: int = 1,
        batch_size: int | None = 10,
        lr: float = 0.1,
        *,
        beta: float = 0.1,
        min_clients: int = 1,
        server_lr: float = 1.0,
        lr_decay: float = 1.0,
    ) -> None:
        check_param("beta", beta, type(self).__name__, Interval(float, 0, 0.5, "left"))
        shared = {"min_clients": min_clients, "server_lr": server_lr, "lr_decay": lr_decay}
        super().__init__(fraction_fit, local_epochs, batch_size, lr, **shared)
        self.beta = beta

    def _robust_update(self, updates: torch.Tensor) -> torch.Tensor:
        return trimmed_mean(updates, float(self.beta))

    def config_dict(self) -> dict[str, Any]:
        return {**super().config_dict(), "strategy": self.name, "beta": self.beta}
