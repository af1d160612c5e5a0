"""Federated learning: strategies (FedAvg, user-level DP-FedAvg) and the simulated round loop."""

from .dp_fedavg import DPFedAvg, clip_update
from .fedavg import FedAvg
from .simulation import FederatedResult, run_federated
from .strategy import ClientResult, Strategy

__all__ = [
    "ClientResult",
    "DPFedAvg",
    "FedAvg",
    "FederatedResult",
    "Strategy",
    "clip_update",
    "run_federated",
]
