"""Seeds to generators. All randomness in ppml flows through these helpers.

* ``as_generator(seed)`` turns an int / SeedSequence / Generator into a ``numpy.random.Generator``.
* ``spawn(rng, n)`` derives ``n`` independent child generators (for clients, shadow models, ...).
* ``torch_generator(rng)`` derives a seeded ``torch.Generator`` from a numpy generator.
* ``secure_generator()`` returns a numpy Generator fed by the OS's CSPRNG, for DP noise in secure mode.

Nothing in ppml touches the global ``numpy.random`` or ``torch`` random state.
"""

from __future__ import annotations

import secrets
from typing import TypeAlias

import numpy as np
import torch

SeedLike: TypeAlias = int | np.random.SeedSequence | np.random.Generator | None

__all__ = ["SeedLike", "as_generator", "spawn", "torch_generator", "secure_generator", "derive_seed"]


def as_generator(seed: SeedLike) -> np.random.Generator:
    """Return a numpy Generator for ``seed`` (a Generator is returned as is)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        raise ValueError(
            "ppml needs an explicit seed for reproducible experiments; pass an int, a SeedSequence "
            "or a numpy Generator (use ppml._rng.secure_generator() for non-reproducible secure noise)."
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer, np.random.SeedSequence)):
        raise TypeError(f"seed must be an int, SeedSequence or numpy Generator, got {type(seed).__name__}")
    return np.random.default_rng(seed)


def derive_seed(rng: np.random.Generator) -> int:
    """Draw a 63-bit integer seed from ``rng`` (for libraries that take integer seeds)."""
    return int(rng.integers(0, 2**63 - 1, dtype=np.int64))


def spawn(rng: np.random.Generator, n: int) -> list[np.random.Generator]:
    """``n`` independent child generators of ``rng`` (advances ``rng``)."""
    return [np.random.default_rng(s) for s in np.random.SeedSequence(derive_seed(rng)).spawn(n)]


def torch_generator(rng: np.random.Generator, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` seeded from ``rng``."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(rng))
    return g


def secure_generator() -> np.random.Generator:
    """A Generator driven by ChaCha20 keyed with 256 bits from the OS CSPRNG, for DP noise in secure mode.

    ChaCha20 (``randomgen.ChaCha`` with 20 rounds) is a cryptographically secure stream cipher, so
    outputs reveal neither the key nor other outputs; a fresh key is drawn on every call, so the noise
    is not reproducible. Floating-point attacks on noise samplers (Mironov 2012) are handled by the
    mechanisms themselves (exact discrete sampling), not by the bit source.
    """
    from randomgen import ChaCha

    key = int.from_bytes(secrets.token_bytes(32), "little")
    return np.random.Generator(ChaCha(key=key, counter=0, rounds=20))
