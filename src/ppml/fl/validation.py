"""Server-side checks of client updates: a malformed update is rejected and logged, the round goes on."""

from __future__ import annotations

import logging
import math

import torch

from .strategy import ClientResult

__all__ = ["validate_update", "logger"]

logger = logging.getLogger("ppml.fl")


def validate_update(
    result: ClientResult, expected: torch.Tensor, max_update_norm: float | None = None
) -> str | None:
    """Why ``result`` must be rejected (``None`` when it is acceptable).

    Checks, in order: the update is a tensor of the global parameters' shape and dtype, every entry
    is finite (no NaN or Inf), ``num_examples`` is a positive integer, and (when
    ``max_update_norm`` is given) the update's L2 norm is within the bound.
    """
    u = result.update
    if not isinstance(u, torch.Tensor):
        return f"update is a {type(u).__name__}, not a tensor"
    if tuple(u.shape) != tuple(expected.shape):
        return f"update has shape {tuple(u.shape)}, expected {tuple(expected.shape)}"
    if u.dtype != expected.dtype:
        return f"update has dtype {u.dtype}, expected {expected.dtype}"
    if not bool(torch.isfinite(u).all()):
        bad = int((~torch.isfinite(u)).sum())
        return f"update has {bad} non-finite entries (NaN or Inf)"
    n = result.num_examples
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        return f"num_examples must be a positive int, got {n!r}"
    if max_update_norm is not None:
        norm = float(torch.linalg.vector_norm(u.double()))
        if not math.isfinite(norm) or norm > max_update_norm:
            return f"update norm {norm:.4g} exceeds the bound {max_update_norm:g}"
    return None
