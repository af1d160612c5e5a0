"""Backends that train a round's clients: sequential (reference) and vectorized (torch.func)."""

from .vectorized import check_vectorizable, train_clients_vectorized

__all__ = ["check_vectorizable", "train_clients_vectorized"]
