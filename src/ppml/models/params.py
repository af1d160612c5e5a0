"""Flat parameter vectors: what federated clients upload and servers average."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["get_flat", "set_flat", "num_parameters", "num_bytes"]


def get_flat(model: nn.Module) -> torch.Tensor:
    """All trainable parameters concatenated into one detached float32 vector (a copy)."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()


@torch.no_grad()
def set_flat(model: nn.Module, flat: torch.Tensor) -> None:
    """Write a flat vector back into the model's parameters (in place)."""
    n = num_parameters(model)
    if flat.numel() != n:
        raise ValueError(f"flat vector has {flat.numel()} entries, the model has {n} parameters")
    offset = 0
    for p in model.parameters():
        k = p.numel()
        p.copy_(flat[offset : offset + k].view_as(p))
        offset += k


def num_parameters(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def num_bytes(model: nn.Module) -> int:
    """Bytes of one float32 copy of the parameters (one upload or download)."""
    return int(sum(p.numel() * p.element_size() for p in model.parameters()))
