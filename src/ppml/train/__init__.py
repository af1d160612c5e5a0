"""Training and evaluation loops."""

from .loop import TrainConfig, as_tensor, evaluate, predict_logits, train_epochs

__all__ = ["TrainConfig", "as_tensor", "evaluate", "predict_logits", "train_epochs"]
