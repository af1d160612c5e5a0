"""Seeds to generators. All randomness in ppml flows through these helpers.

* ``as_generator(seed)`` turns an int / SeedSequence / Generator into a ``numpy.random.Generator``.
* ``spawn(rng, n)`` derives ``n`` independent child generators (for clients, shadow models, ...).
* ``torch_generator(rng)`` derives a seeded ``torch.Generator`` from a numpy generator.
* ``secure_generator()`` returns a numpy Generator fed by the OS's CSPRNG, for DP noise in secure mode.
* ``fill_gaussian_(out, std, seed)`` overwrites a float tensor with seeded Gaussian noise (AES-256-CTR
  keystream, Box-Muller): DP noise in plain mode, several times faster than ``Tensor.normal_``.

Nothing in ppml touches the global ``numpy.random`` or ``torch`` random state.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from typing import TypeAlias

import numpy as np
import torch

SeedLike: TypeAlias = int | np.random.SeedSequence | np.random.Generator | None

__all__ = [
    "SeedLike",
    "as_generator",
    "spawn",
    "torch_generator",
    "secure_generator",
    "derive_seed",
    "fill_gaussian_",
]


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


_FLOAT_BITS = {torch.float32: (torch.int32, 24), torch.float64: (torch.int64, 53)}
GAUSSIAN_CHUNK = 1 << 16
"""Pairs per chunk of :func:`fill_gaussian_` (its working set stays in cache); a multiple of 4, and not part
of the output's definition: the chunks read the keystream at fixed offsets."""
_ZEROS = bytes(GAUSSIAN_CHUNK * 8)


def _noise_key(seed: int) -> bytes:
    """The AES-256 key of :func:`fill_gaussian_` for ``seed`` (SHA-256 of a domain tag and the seed)."""
    return hashlib.sha256(b"ppml.fill_gaussian_/v1" + int(seed).to_bytes(16, "little", signed=True)).digest()


def fill_gaussian_(out: torch.Tensor, std: float, seed: int) -> torch.Tensor:
    """Overwrite the float tensor ``out`` with independent ``N(0, std**2)`` samples; return ``out``.

    The bits come from AES-256 in counter mode (the ``cryptography`` package; hardware AES where the CPU
    has it) keyed by a hash of ``seed``. For ``n`` values, ``p = ceil(n / 2)`` pairs of uniforms (24 bits
    each for float32, 53 for float64: the first ``p`` keystream words give the radii, the next ``p`` the
    angles) become ``2p`` normals by the Box-Muller transform, computed with torch's vectorised
    ``log``/``sqrt``/``cos``/``sin`` (cosines fill ``out[:p]``, sines the rest). The same ``seed``, size and
    dtype give the same values on any thread; different seeds give unrelated streams. It is faster than
    ``Tensor.normal_``, whose Mersenne Twister runs on one thread (and slower with two torch threads than
    with one here); like it, it truncates the tails where the uniform's resolution ends (|z| <= 5.77 std in
    float32, 8.6 std in float64) and is *not* protected against floating-point attacks on noise (Mironov
    2012): DP mechanisms use it only with ``secure=False``.

    Parameters
    ----------
    out : torch.Tensor
        float32 or float64; other dtypes and non-CPU or non-contiguous tensors are filled through a
        contiguous float32/float64 CPU copy.
    std : float >= 0
    seed : int
    """
    n = out.numel()
    if n == 0:
        return out
    if out.device.type != "cpu" or not out.is_contiguous() or out.dtype not in _FLOAT_BITS:
        dtype = torch.float64 if out.dtype == torch.float64 else torch.float32
        tmp = fill_gaussian_(torch.empty(out.shape, dtype=dtype), std, seed)
        return out.copy_(tmp)
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    flat = out.view(-1)
    itype, bits = _FLOAT_BITS[out.dtype]
    width = torch.finfo(out.dtype).bits // 8  # bytes per uniform
    p = (n + 1) // 2
    a0 = -(-p * width // 16) * 16  # byte offset of the angles' words in the keystream (AES-block aligned)
    key = _noise_key(seed)
    m = min(GAUSSIAN_CHUNK, p)
    words = torch.empty(2 * m, dtype=itype)
    raw = words.view(torch.uint8).numpy()  # the keystream is written straight into ``words``
    half = m * width
    scale = math.ldexp(1.0, -bits)
    var2 = -2.0 * float(std) * float(std)
    for s in range(0, p, m):
        k = min(m, p - s)
        for off, dst in ((s * width, raw[: k * width]), (a0 + s * width, raw[half : half + k * width])):
            ctr = Cipher(algorithms.AES(key), modes.CTR((off // 16).to_bytes(16, "big"))).encryptor()
            ctr.update_into(_ZEROS[: k * width], dst)
        u = torch.cat([words[:k], words[m : m + k]]) if k < m else words
        u = u.bitwise_and_((1 << bits) - 1).to(out.dtype)
        # r = std * sqrt(-2 log u1) with u1 = (j + 1) 2^-bits in (0, 1]; theta = 2 pi u2 with u2 in [0, 1).
        r = u[:k].add_(1.0).mul_(scale).log_().mul_(var2).sqrt_()
        theta = u[k:].mul_(2.0 * math.pi * scale)
        torch.cos(theta, out=flat[s : s + k]).mul_(r)
        j = min(k, n - p - s)  # the last pair's sine is dropped when n is odd
        if j > 0:
            torch.sin(theta[:j], out=flat[p + s : p + s + j]).mul_(r[:j])
    return out
