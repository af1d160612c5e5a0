"""Federated learning: strategies (FedAvg and successors, user-level DP-FedAvg, robust
aggregation) and the simulated round loop with sequential and vectorized backends."""

from .dp_fedavg import DPFedAvg, clip_update
from .fedavg import FedAvg
from .fedopt import FedAdagrad, FedAdam, FedOpt, FedYogi
from .fedprox import FedProx
from .robust import FedMedian, FedTrimmedAvg
from .scaffold import Scaffold
from .simulation import FederatedResult, run_federated
from .strategy import ClientResult, Strategy

__all__ = [
    "ClientResult",
    "DPFedAvg",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedMedian",
    "FedOpt",
    "FedProx",
    "FedTrimmedAvg",
    "FedYogi",
    "FederatedResult",
    "Scaffold",
    "Strategy",
    "clip_update",
    "run_federated",
]
