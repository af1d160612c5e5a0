"""Server-side checks of client updates: a malformed update is rejected and logged, the round goes on."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch

from .strategy import ClientResult

__all__ = ["validate_update", "validate_updates", "stack_updates", "logger"]

logger = logging.getLogger("ppml.fl")


def stack_updates(updates: Sequence[torch.Tensor]) -> torch.Tensor:
    """The updates as the rows of one ``(k, num_parameters)`` tensor, without a copy when they already are.

    The vectorized backend returns every client's update as a row of one tensor; stacking them again
    would copy all of them once more per round (and once per consumer: the checks, the aggregate).
    """
    if not updates:
        raise ValueError("stack_updates needs at least one update.")
    base = updates[0]._base
    if (
        base is not None
        and base.dim() == 2
        and base.shape[0] == len(updates)
        and base.is_contiguous()
        and all(
            u._base is base
            and u.dim() == 1
            and u.storage_offset() == base.storage_offset() + i * base.stride(0)
            for i, u in enumerate(updates)
        )
    ):
        return base
    return torch.stack(list(updates))


def _shape_reason(result: ClientResult, expected: torch.Tensor) -> str | None:
    u = result.update
    if not isinstance(u, torch.Tensor):
        return f"update is a {type(u).__name__}, not a tensor"
    if tuple(u.shape) != tuple(expected.shape):
        return f"update has shape {tuple(u.shape)}, expected {tuple(expected.shape)}"
    if u.dtype != expected.dtype:
        return f"update has dtype {u.dtype}, expected {expected.dtype}"
    return None


def _count_reason(result: ClientResult) -> str | None:
    n = result.num_examples
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        return f"num_examples must be a positive int, got {n!r}"
    return None


def validate_updates(
    results: Sequence[ClientResult], expected: torch.Tensor, max_update_norm: float | None = None
) -> list[str | None]:
    """:func:`validate_update` for every result of a round, the tensor checks done once for all of them.

    Returns one entry per result: why it must be rejected, or ``None``. The same checks, in the same
    order and with the same messages, as :func:`validate_update`.
    """
    reasons: list[str | None] = [_shape_reason(r, expected) for r in results]
    ok = [i for i, reason in enumerate(reasons) if reason is None]
    if ok:
        rows = stack_updates([results[i].update for i in ok])
        # A row's norm is finite only if every entry is (NaN and Inf propagate): one fast reduction
        # instead of an elementwise test of every entry; a row whose norm is not finite (a bad entry,
        # or finite entries so large that the sum of squares overflows) is examined entry by entry.
        quick = torch.linalg.vector_norm(rows, dim=1).tolist()
        norms = (
            torch.linalg.vector_norm(rows, dim=1, dtype=torch.float64).tolist()
            if max_update_norm is not None
            else None
        )
        for j, i in enumerate(ok):
            if not math.isfinite(quick[j]):
                bad = int((~torch.isfinite(rows[j])).sum())
                if bad:
                    reasons[i] = f"update has {bad} non-finite entries (NaN or Inf)"
                    continue
            reasons[i] = _count_reason(results[i])
            if reasons[i] is None and norms is not None:
                norm = norms[j]
                if not math.isfinite(norm) or norm > max_update_norm:  # type: ignore[operator]
                    reasons[i] = f"update norm {norm:.4g} exceeds the bound {max_update_norm:g}"
    return reasons


def validate_update(
    result: ClientResult, expected: torch.Tensor, max_update_norm: float | None = None
) -> str | None:
    """Why ``result`` must be rejected (``None`` when it is acceptable).

    Checks, in order: the update is a tensor of the global parameters' shape and dtype, every entry
    is finite (no NaN or Inf), ``num_examples`` is a positive integer, and (when
    ``max_update_norm`` is given) the update's L2 norm is within the bound.
    """
    return validate_updates([result], expected, max_update_norm)[0]
