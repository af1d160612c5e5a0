"""Small torch models and flat-parameter helpers."""

from .params import get_flat, num_bytes, num_parameters, set_flat
from .zoo import CNN, MLP, MODEL_NAMES, LogisticRegression, build_model

__all__ = [
    "CNN",
    "MLP",
    "MODEL_NAMES",
    "LogisticRegression",
    "build_model",
    "get_flat",
    "set_flat",
    "num_parameters",
    "num_bytes",
]
