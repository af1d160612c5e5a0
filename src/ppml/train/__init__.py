"""Training and evaluation loops, and many models of one architecture trained at once."""

from .ensemble import EnsembleParams, predict_ensemble, train_ensemble, train_ensemble_sequential
from .loop import TrainConfig, as_tensor, evaluate, predict_logits, train_epochs

__all__ = [
    "EnsembleParams",
    "TrainConfig",
    "as_tensor",
    "evaluate",
    "predict_ensemble",
    "predict_logits",
    "train_ensemble",
    "train_ensemble_sequential",
    "train_epochs",
]
