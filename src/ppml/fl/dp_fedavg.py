"""User-level DP-FedAvg (McMahan, Ramage, Talwar, Zhang, ICLR 2018: Learning Differentially Private
Recurrent Language Models).

Each round every client is included independently with probability ``q`` (Poisson sampling: the
sampling the accountant assumes). Each included client's update is clipped to L2 norm ``S``; the
server sums the clipped updates, adds Gaussian noise of standard deviation ``z * S`` to the *sum*,
and divides by the *expected* number of participants ``q * K`` (a fixed denominator, so one
client's presence changes the sum by at most ``S``). The accountant composes one
``PoissonSampled(q, Gaussian(z))`` event per round that ran.

Clients unavailable at a round's training time are dropped after sampling; a client's inclusion
probability is then at most ``q``, and accounting with ``q`` stays valid (conservative).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .._validation import NONNEG_FLOAT, POSITIVE_FLOAT, ParameterError, check_param
from ..dp.accounting import PrivacyAccountant, poisson_gaussian_event
from ..dp.mechanisms import GaussianMechanism
from ..train.loop import TrainConfig
from .fedavg import FedAvg
from .strategy import ClientResult

__all__ = ["DPFedAvg", "clip_update"]


def clip_update(update: torch.Tensor, clip_norm: float) -> tuple[torch.Tensor, float]:
    """Scale ``update`` to L2 norm at most ``clip_norm``; return it and its norm before clipping."""
    norm = float(torch.linalg.vector_norm(update.to(torch.float64)))
    scale = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    return update * scale, norm


class DPFedAvg:
    """User-level differentially private FedAvg with fixed clipping and central Gaussian noise.

    Parameters
    ----------
    base : FedAvg
        The wrapped strategy; its ``fraction_fit`` is the Poisson sampling rate ``q`` and its local
        training config is what clients run.
    clip_norm : float > 0
        ``S``, the L2 bound on each client's update (the user-level sensitivity of the sum).
    noise_multiplier : float >= 0
        ``z``; the noise on the sum has standard deviation ``z * S``.
    accountant : PrivacyAccountant
        Receives one event per round; its budget (if any) is checked *before* a round starts.
    secure : bool
        Draw the noise in the mechanism's secure mode (OS randomness; not reproducible).

    Privacy guarantee
    -----------------
    User-level (add/remove one client's whole dataset) (epsilon, delta)-DP for the sequence of
    global models, with epsilon computed by ``accountant`` from (q, z, rounds that ran). The
    guarantee assumes the server runs this code honestly (central DP).
    """

    name = "DP-FedAvg"

    def __init__(
        self,
        base: FedAvg,
        clip_norm: float,
        noise_multiplier: float,
        accountant: PrivacyAccountant,
        *,
        secure: bool = False,
    ) -> None:
        owner = type(self).__name__
        check_param("clip_norm", clip_norm, owner, POSITIVE_FLOAT)
        check_param("noise_multiplier", noise_multiplier, owner, NONNEG_FLOAT)
        if hasattr(base, "client_corrections"):
            raise ParameterError(
                f"The 'base' parameter of {owner} must be a strategy without per-client state; "
                f"{type(base).__name__} keeps control variates derived from each client's unclipped "
                "updates, which the user-level DP analysis does not cover. Got it instead.",
                param="base",
            )
        self.base = base
        self.clip_norm = float(clip_norm)
        self.noise_multiplier = float(noise_multiplier)
        self.accountant = accountant
        self.secure = secure
        self._mechanism = GaussianMechanism(
            sensitivity=self.clip_norm, noise_multiplier=self.noise_multiplier, secure=secure
        )

    @property
    def sampling_rate(self) -> float:
        return float(self.base.fraction_fit)

    @property
    def train_config(self) -> TrainConfig:
        return self.base.train_config

    @property
    def mu(self) -> float:
        """The wrapped strategy's proximal coefficient (FedProx), 0 for FedAvg."""
        return float(getattr(self.base, "mu", 0.0))

    def local_train_kwargs(self, global_params: list[torch.Tensor]) -> dict[str, Any]:
        """Local training is the wrapped strategy's (e.g. FedProx's proximal term)."""
        hook = getattr(self.base, "local_train_kwargs", None)
        return hook(global_params) if hook is not None else {}

    def round_event(self):  # -> dp_accounting.DpEvent
        """One round's event: Poisson sampling at rate q of the mechanism's own Gaussian event.

        The mechanism's event is used (not ``noise_multiplier`` as given) because secure mode's
        grid rounding can grow the sensitivity by a tiny factor that the mechanism accounts for.
        """
        return poisson_gaussian_event(self._mechanism.event.noise_multiplier, self.sampling_rate, 1)

    def _event_params(self, num_clients: int) -> dict[str, Any]:
        return {
            "mechanism": "Gaussian",
            "unit": "user (client)",
            "sampling": "poisson",
            "sampling_rate": self.sampling_rate,
            "noise_multiplier": self.noise_multiplier,
            "clip_norm": self.clip_norm,
            "num_clients": num_clients,
        }

    def configure_round(
        self, server_round: int, num_clients: int, available: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        from ..dp.accounting import BudgetExceededError

        if self.accountant.would_exceed(self.round_event()):
            raise BudgetExceededError(
                f"DP-FedAvg round {server_round} would exceed the privacy budget "
                f"(epsilon {self.accountant.budget_epsilon}); stopping before it starts."
            )
        self.num_clients_ = int(num_clients)
        included = rng.random(num_clients) < self.sampling_rate
        selected = np.flatnonzero(included)
        return selected[np.isin(selected, available)].astype(np.int64)

    def aggregate(
        self,
        server_round: int,
        global_params: torch.Tensor,
        results: Sequence[ClientResult],
        rng: np.random.Generator,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        total = torch.zeros_like(global_params, dtype=torch.float64)
        norms = []
        for r in results:
            clipped, norm = clip_update(r.update, self.clip_norm)
            total += clipped.to(torch.float64)
            norms.append(norm)
        noisy_sum = self._mechanism(total, rng=None if self.secure else rng)
        num_clients = getattr(self, "num_clients_", 0)
        if num_clients <= 0:
            raise RuntimeError("DPFedAvg.aggregate called before configure_round")
        expected = self.sampling_rate * num_clients
        new = global_params + (self.base.server_lr * noisy_sum / expected).to(global_params.dtype)
        eps = self.accountant.spend(
            self.round_event(),
            label="DP-FedAvg round",
            params=self._event_params(num_clients),
        )
        metrics: dict[str, Any] = {
            "clients": len(results),
            "clipped_fraction": float(np.mean([n > self.clip_norm for n in norms])) if norms else 0.0,
            "median_update_norm": float(np.median(norms)) if norms else 0.0,
            "epsilon": eps,
        }
        return new, metrics

    def config_dict(self) -> dict[str, Any]:
        return {
            **self.base.config_dict(),
            "strategy": self.name,
            "clip_norm": self.clip_norm,
            "noise_multiplier": self.noise_multiplier,
            "sampling": "poisson",
            "secure": self.secure,
        }
