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

Adaptive clipping (Andrew, Thakkar, McMahan, Ramaswamy, NeurIPS 2021: Differentially Private
Learning with Adaptive Clipping): a fixed ``S`` must be guessed before training, and a bad guess
either clips away most of the signal or drowns it in noise. With ``target_quantile`` set, each
included client also reports the bit ``b_i = [||update_i|| <= S]``; the server releases the noisy
count ``sum_i (b_i - 1/2) + N(0, sigma_b^2)``, estimates the unclipped fraction
``b = noisy / (q K) + 1/2`` and moves the bound geometrically towards the target quantile:
``S <- S * exp(-eta * (b - gamma))``. The two releases together are one Gaussian mechanism: with the
updates' noise multiplier ``z_delta = (z^-2 - (2 sigma_b)^-2)^(-1/2)``, their combined noise multiplier
is exactly ``z`` (the paper's Theorem 1), so the accountant composes the same
``PoissonSampled(q, Gaussian(z))`` event per round as with fixed clipping.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .._validation import (
    NONNEG_FLOAT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    Interval,
    Options,
    ParameterError,
    check_param,
)
from ..dp.accounting import PrivacyAccountant, poisson_gaussian_event
from ..dp.mechanisms import GaussianMechanism, check_noise_sampler
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
    target_quantile : float in (0, 1), optional
        Turn on adaptive clipping: ``clip_norm`` is the initial bound, which then tracks this quantile
        of the update norms (Andrew et al. 2021; 0.5, the median, is their recommendation).
    clip_learning_rate : float > 0
        ``eta`` of the geometric update of the bound (the paper uses 0.2).
    noise_placement : {"server", "clients"}
        ``"server"`` (central DP): the server adds ``N(0, (z S)^2)`` to the sum. ``"clients"``
        (distributed DP, for use under secure aggregation, where the server sees only the sum): every
        client adds its share ``N(0, (z S)^2 / t)`` to its own clipped update, with
        ``t = min_noisy_clients``; a round with fewer than ``t`` updates is not aggregated (nothing
        released, nothing spent), so every released sum carries noise of at least ``z S``. The
        guarantee then holds against the server too, provided it sees only sums and at most
        ``n - t`` of a round's clients collude with it (their shares are known to them).
    min_noisy_clients : int >= 1, optional
        ``t`` above; required with ``noise_placement="clients"``.
    noise_sampler : {"native", "mkl"}, default "native"
        The generator of the updates' Gaussian noise in plain mode (see
        :class:`~ppml.dp.mechanisms.GaussianMechanism`'s ``sampler``); ``"mkl"`` is oneMKL's, faster on
        large models (``pip install 'ppml[mkl]'``). The same distribution and guarantee.
    clipped_count_stddev : float > 0, optional
        ``sigma_b``, the noise on the count of unclipped updates; default ``q K / 20`` (the paper's
        choice: the expected number of clients over 20). Must exceed ``noise_multiplier / 2``.

    Attributes
    ----------
    clip_norm_ : float
        The current bound (equal to ``clip_norm`` unless clipping is adaptive).
    update_noise_multiplier_ : float
        The noise multiplier of the updates' mechanism (``z`` with fixed clipping, ``z_delta`` with
        adaptive clipping).

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
        target_quantile: float | None = None,
        clip_learning_rate: float = 0.2,
        clipped_count_stddev: float | None = None,
        noise_placement: str = "server",
        min_noisy_clients: int | None = None,
        noise_sampler: str = "native",
    ) -> None:
        owner = type(self).__name__
        check_noise_sampler("noise_sampler", noise_sampler, owner, secure)
        check_param("noise_placement", noise_placement, owner, Options(("server", "clients")))
        check_param("min_noisy_clients", min_noisy_clients, owner, POSITIVE_INT, None)
        if noise_placement == "clients" and min_noisy_clients is None:
            raise ParameterError(
                f"The 'min_noisy_clients' parameter of {owner} must be an int >= 1 when noise_placement is "
                "'clients' (the number of clients whose noise shares must meet for the round's noise to reach "
                "z * clip_norm). Got None instead.",
                param="min_noisy_clients",
            )
        if noise_placement == "clients" and target_quantile is not None:
            raise ParameterError(
                f"The 'target_quantile' parameter of {owner} must be None when noise_placement is 'clients' "
                "(adaptive clipping's noisy count is released by the server). "
                f"Got {target_quantile!r} instead.",
                param="target_quantile",
            )
        check_param("clip_norm", clip_norm, owner, POSITIVE_FLOAT)
        check_param("noise_multiplier", noise_multiplier, owner, NONNEG_FLOAT)
        check_param("target_quantile", target_quantile, owner, Interval(float, 0, 1, "neither"), None)
        check_param("clip_learning_rate", clip_learning_rate, owner, POSITIVE_FLOAT)
        check_param("clipped_count_stddev", clipped_count_stddev, owner, POSITIVE_FLOAT, None)
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
        self.target_quantile = target_quantile
        self.clip_learning_rate = float(clip_learning_rate)
        self.clipped_count_stddev = clipped_count_stddev
        self.noise_placement = noise_placement
        self.min_noisy_clients = min_noisy_clients
        self.noise_sampler = noise_sampler
        self.clip_norm_ = self.clip_norm
        self.update_noise_multiplier_ = self.noise_multiplier
        self._count_mechanism: GaussianMechanism | None = None
        if target_quantile is not None:
            self._setup_adaptive(self.clipped_count_stddev)
        self._mechanism = self._update_mechanism()

    @property
    def adaptive(self) -> bool:
        return self.target_quantile is not None

    def _setup_adaptive(self, count_stddev: float | None) -> None:
        """Split the noise budget ``z`` between the updates and the clipped count (Theorem 1)."""
        if count_stddev is None:
            return  # the default depends on the number of clients: set in configure_round
        z = self.noise_multiplier
        if z == 0:
            self.update_noise_multiplier_ = 0.0
            self._count_mechanism = GaussianMechanism(
                sensitivity=0.5, noise_multiplier=0.0, secure=self.secure
            )
            return
        if 2 * count_stddev <= z:
            raise ParameterError(
                "The 'clipped_count_stddev' parameter of DPFedAvg must be greater than noise_multiplier / 2 "
                f"= {z / 2:.6g} (the updates' share of the noise would be infinite). Got {count_stddev!r} instead.",
                param="clipped_count_stddev",
            )
        self.update_noise_multiplier_ = (z**-2 - (2 * count_stddev) ** -2) ** -0.5
        self._count_mechanism = GaussianMechanism(
            sensitivity=0.5, noise_multiplier=2 * count_stddev, secure=self.secure
        )

    def _update_mechanism(self) -> GaussianMechanism:
        z = self.update_noise_multiplier_
        if self.noise_placement == "clients":
            # Each client's share: t shares sum to noise of std z * S on the sum.
            z = z / float(self.min_noisy_clients) ** 0.5  # type: ignore[arg-type]
        return GaussianMechanism(
            sensitivity=self.clip_norm_, noise_multiplier=z, secure=self.secure, sampler=self.noise_sampler
        )

    @property
    def sampling_rate(self) -> float:
        return float(self.base.fraction_fit)

    @property
    def train_config(self) -> TrainConfig:
        return self.base.train_config

    def round_train_config(self, server_round: int) -> TrainConfig:
        """The wrapped strategy's local training of ``server_round`` (its learning-rate decay included)."""
        of = getattr(self.base, "round_train_config", None)
        return of(server_round) if of is not None else self.base.train_config

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
        z = self._mechanism.event.noise_multiplier
        if self.noise_placement == "clients":
            # At least min_noisy_clients shares are in every released sum (rounds with fewer are not
            # aggregated), so the noise on the sum is at least that of t shares: z * S.
            z = z * float(self.min_noisy_clients) ** 0.5  # type: ignore[arg-type]
        if self._count_mechanism is not None and z > 0:
            # One Gaussian mechanism on the pair (clipped sum, centred count): the noise multipliers
            # combine as 1/z^2 = 1/z_delta^2 + 1/z_count^2 (exactly z when nothing is rounded).
            zc = self._count_mechanism.event.noise_multiplier
            z = (z**-2 + zc**-2) ** -0.5
        return poisson_gaussian_event(z, self.sampling_rate, 1)

    def _event_params(self, num_clients: int) -> dict[str, Any]:
        return {
            "mechanism": "Gaussian",
            "unit": "user (client)",
            "sampling": "poisson",
            "sampling_rate": self.sampling_rate,
            "noise_multiplier": self.noise_multiplier,
            "clip_norm": self.clip_norm if not self.adaptive else "adaptive",
            "noise_placement": self.noise_placement,
            "num_clients": num_clients,
        }

    def configure_round(
        self, server_round: int, num_clients: int, available: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        from ..dp.accounting import BudgetExceededError

        if self.adaptive and self._count_mechanism is None:
            self._setup_adaptive(max(self.sampling_rate * num_clients / 20.0, 1e-12))
            self._mechanism = self._update_mechanism()
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
        num_clients = getattr(self, "num_clients_", 0)
        if num_clients <= 0:
            raise RuntimeError("DPFedAvg.aggregate called before configure_round")
        distributed = self.noise_placement == "clients"
        if distributed and len(results) < int(self.min_noisy_clients):  # type: ignore[arg-type]
            # Fewer noise shares than the analysis assumes: release nothing, spend nothing.
            return global_params, {
                "clients": len(results),
                "skipped": f"fewer than min_noisy_clients={self.min_noisy_clients} noised updates",
                "epsilon": self.accountant.epsilon(),
            }
        total = torch.zeros_like(global_params, dtype=torch.float64)
        norms = []
        bound = self.clip_norm_
        noise_rng = None if self.secure else rng
        for r in results:
            clipped, norm = clip_update(r.update, bound)
            if distributed:
                # What the client itself uploads (to secure aggregation): its clipped update plus its
                # share of the noise. The server only ever uses the sum.
                clipped = self._mechanism(clipped.to(torch.float64), rng=noise_rng)
            total += clipped.to(torch.float64)
            norms.append(norm)
        noisy_sum = total if distributed else self._mechanism(total, rng=noise_rng)
        expected = self.sampling_rate * num_clients
        new = global_params + (self.base.server_lr * noisy_sum / expected).to(global_params.dtype)
        eps = self.accountant.spend(
            self.round_event(),
            label="DP-FedAvg round",
            params=self._event_params(num_clients),
        )
        metrics: dict[str, Any] = {
            "clients": len(results),
            "clip_norm": bound,
            "clipped_fraction": float(np.mean([n > bound for n in norms])) if norms else 0.0,
            "median_update_norm": float(np.median(norms)) if norms else 0.0,
            "epsilon": eps,
        }
        if self._count_mechanism is not None:
            centred = np.array([float(n <= bound) - 0.5 for n in norms], dtype=np.float64)
            noisy_count = self._count_mechanism(np.array([centred.sum()]), rng=None if self.secure else rng)
            unclipped = float(noisy_count[0]) / expected + 0.5
            self.clip_norm_ = bound * float(
                np.exp(-self.clip_learning_rate * (unclipped - self.target_quantile))
            )
            self._mechanism = self._update_mechanism()
            metrics["noisy_unclipped_fraction"] = unclipped
        return new, metrics

    def config_dict(self) -> dict[str, Any]:
        return {
            **self.base.config_dict(),
            "strategy": self.name,
            "clip_norm": self.clip_norm,
            "noise_multiplier": self.noise_multiplier,
            "sampling": "poisson",
            "secure": self.secure,
            "noise_placement": self.noise_placement,
            "min_noisy_clients": self.min_noisy_clients,
            "target_quantile": self.target_quantile,
            "clip_learning_rate": self.clip_learning_rate if self.adaptive else None,
            "clipped_count_stddev": self.clipped_count_stddev,
            # only when set: checkpoints of runs with the default sampler stay resumable
            **({"noise_sampler": self.noise_sampler} if self.noise_sampler != "native" else {}),
        }
