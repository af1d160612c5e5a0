"""Gaussian noise from Intel oneMKL's Vector Statistics (VS) random number generators.

The optional fast sampler of :class:`~ppml.dp.mechanisms.GaussianMechanism` (``sampler="mkl"``) and
:class:`~ppml.dp.dpsgd.DPSGD` (``noise_sampler="mkl"``). torch's CPU ``normal_`` runs a serial Mersenne
Twister and spends about 3.5-6 ns per coordinate on it (0.9-1.6 ms for the 269,322 coordinates of a
784-256-256-10 MLP here, up to half of a two-thread training step). oneMKL's VS library fills the
same buffer in a fifth to a half of that time (0.23-0.5 ms): ``vsRngGaussian`` / ``vdRngGaussian``
with the counter-based ARS-5 generator (five AES rounds on a counter, Salmon et al. 2011; it passes
TestU01's BigCrush) and the Box-Muller transform (``BOXMULLER2``), written straight into the tensor's
memory in its own precision.
ARS-5 runs on the CPU's AES instructions (AES-NI, in x86-64 processors since about 2010); it was 20-30%
faster here than oneMKL's Philox4x32-10, which made the DP-SGD step of the benchmark MLP 4% faster. A
CPU without AES-NI gets a clear error (use the native sampler there).

oneMKL ships as the ``mkl`` wheel (``pip install 'ppml[mkl]'``), which puts ``libmkl_rt`` under the
environment's ``lib`` folder; this module calls its documented C API through :mod:`ctypes`
(``vslNewStreamEx``, ``v[sd]RngGaussian``, ``vslDeleteStream``): no sampler is written here. The
library is the one ``$PPML_MKL_RT`` names (a path to ``libmkl_rt``; when set, no other is tried), else
the first found in the environment's ``lib`` folder, then on the system's library path.

A draw is a pure function of ``(seed, size, dtype)``: every call opens a fresh stream keyed by the
64-bit seed (the low 64 bits of ARS-5's key; its counter starts at zero) and closes it, so draws in two
threads share nothing and the same seed gives the same bits in any thread. Bits may differ between
CPUs with different instruction sets (oneMKL picks the vector code path at run time) and between
oneMKL releases.

Floating point: like torch's sampler this is a plain floating-point sampler for experiments, not secure
mode (Mironov 2012; see :mod:`ppml.dp.mechanisms`). Its float32 tails reach at least as far as torch's
(largest magnitude in 6e8 draws: 5.88 standard deviations, torch's Box-Muller on 24-bit uniforms stops
at 5.77). The inverse-CDF method was 15% faster but stops at 5.42 in float32, which widens the
worst-case gap between floating-point and ideal Gaussian noise, so it is not used.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["MISSING", "NO_AES", "available", "gaussian_fill", "library_path", "unavailable_reason"]

MISSING = (
    "needs Intel oneMKL's runtime library (libmkl_rt), which was not found: pip install 'ppml[mkl]' "
    "(the 'mkl' wheel, x86-64 only), or set PPML_MKL_RT to the path of libmkl_rt"
)
NO_AES = (
    "needs a CPU with AES instructions (AES-NI) for oneMKL's ARS-5 generator, and this one has none: use "
    "the 'native' sampler"
)

# oneMKL's mkl_vsl_defines.h: VSL_BRNG_ARS5, VSL_RNG_METHOD_GAUSSIAN_BOXMULLER2 and
# VSL_RNG_ERROR_ARS5_NOT_SUPPORTED.
_BRNG_ARS5 = 15 << 20
_ARS5_NOT_SUPPORTED = -1140
_METHOD_GAUSSIAN_BOXMULLER2 = 1
# The LP64 interface takes the count as a 32-bit int: larger buffers are filled a chunk at a time from
# the same stream. Box-Muller makes values in pairs; with an even chunk the sequence does not depend on
# the chunking.
_MAX_CHUNK = 2**31 - 2

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_path: str | None = None
_reason: str | None = MISSING  # why the sampler cannot be used (None: it can)
_tried = False


def _candidates() -> list[str]:
    found: list[str] = []
    explicit = os.environ.get("PPML_MKL_RT")
    if explicit:
        return [explicit]
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        lib_dir = Path(prefix) / "lib"
        for name in (
            "libmkl_rt.so.3",
            "libmkl_rt.so.2",
            "libmkl_rt.so",
            "libmkl_rt.2.dylib",
            "libmkl_rt.dylib",
        ):
            if (lib_dir / name).exists():
                found.append(str(lib_dir / name))
        for name in ("mkl_rt.2.dll", "mkl_rt.dll"):
            if (Path(prefix) / "Library" / "bin" / name).exists():
                found.append(str(Path(prefix) / "Library" / "bin" / name))
    system = ctypes.util.find_library("mkl_rt")
    if system:
        found.append(system)
    return found


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    stream_p = ctypes.POINTER(ctypes.c_void_p)
    lib.vslNewStreamEx.argtypes = [stream_p, ctypes.c_int, ctypes.c_int, ctypes.POINTER(ctypes.c_uint32)]
    lib.vslNewStreamEx.restype = ctypes.c_int
    lib.vslDeleteStream.argtypes = [stream_p]
    lib.vslDeleteStream.restype = ctypes.c_int
    for name, real in (("vsRngGaussian", ctypes.c_float), ("vdRngGaussian", ctypes.c_double)):
        fn = getattr(lib, name)
        fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, real, real]
        fn.restype = ctypes.c_int
    return lib


def _ars5_supported(lib: ctypes.CDLL) -> bool:
    stream = ctypes.c_void_p()
    key = (ctypes.c_uint32 * 2)(0, 0)
    status = lib.vslNewStreamEx(ctypes.byref(stream), _BRNG_ARS5, 2, key)
    if status == _ARS5_NOT_SUPPORTED:
        return False
    _check(status, "vslNewStreamEx")
    _check(lib.vslDeleteStream(ctypes.byref(stream)), "vslDeleteStream")
    return True


def _open(path: str) -> Any:
    """Load a shared library (a seam for tests)."""
    return ctypes.CDLL(path)


def _load() -> ctypes.CDLL | None:
    global _lib, _path, _reason, _tried
    with _lock:
        if not _tried:
            _tried = True
            _lib, _path, _reason = None, None, MISSING
            for candidate in _candidates():
                try:
                    lib = _open(candidate)
                    getattr(lib, "vsRngGaussian")  # noqa: B009 - a libmkl_rt without VS is not usable
                except (OSError, AttributeError):
                    continue
                _path = candidate
                lib = _bind(lib)
                try:
                    supported = _ars5_supported(lib)
                except RuntimeError as err:
                    _reason = f"could not open a stream of oneMKL's ARS-5 generator ({err}) in {candidate}"
                    break
                if supported:
                    _lib, _reason = lib, None
                else:
                    _reason = NO_AES
                break
        return _lib


def available() -> bool:
    """Whether the sampler can run here: oneMKL's runtime was found (it is loaded on the first call) and
    the CPU has the AES instructions its ARS-5 generator needs."""
    return _load() is not None


def unavailable_reason() -> str | None:
    """Why the sampler cannot run here (what it needs, and how to get it), or None when it can."""
    _load()
    return _reason


def library_path() -> str | None:
    """The path of the ``libmkl_rt`` found, or None."""
    _load()
    return _path


def _check(status: int, call: str) -> None:
    if status != 0:
        raise RuntimeError(f"oneMKL {call} returned error status {status}")


def _fill_pointer(lib: ctypes.CDLL, address: int, n: int, double: bool, std: float, seed: int) -> None:
    seed = int(seed) & (2**64 - 1)
    key = (ctypes.c_uint32 * 2)(seed & 0xFFFFFFFF, seed >> 32)
    stream = ctypes.c_void_p()
    status = lib.vslNewStreamEx(ctypes.byref(stream), _BRNG_ARS5, 2, key)
    if status == _ARS5_NOT_SUPPORTED:
        raise RuntimeError(f"the 'mkl' noise sampler {NO_AES}")
    _check(status, "vslNewStreamEx")
    filled = False
    try:
        fill = lib.vdRngGaussian if double else lib.vsRngGaussian
        size = 8 if double else 4
        for start in range(0, n, _MAX_CHUNK):
            count = min(_MAX_CHUNK, n - start)
            _check(
                fill(
                    _METHOD_GAUSSIAN_BOXMULLER2,
                    stream,
                    count,
                    ctypes.c_void_p(address + start * size),
                    0.0,
                    std,
                ),
                "vsRngGaussian" if not double else "vdRngGaussian",
            )
        filled = True
    finally:
        status = lib.vslDeleteStream(ctypes.byref(stream))
        if filled:  # after a failed fill, its own error is the one to report
            _check(status, "vslDeleteStream")


def gaussian_fill(out: Any, std: float, seed: int) -> Any:
    """Overwrite ``out`` (a CPU float torch tensor or a C-contiguous float32 / float64 numpy array) with
    ``N(0, std**2)`` noise keyed by ``seed``. Non-contiguous tensors are drawn in their own precision
    (float32 for half precisions) in their shape's order and copied in.

    Raises ``ImportError`` (with the install command) when oneMKL's runtime is not found.
    """
    lib = _load()
    if lib is None:
        raise ImportError(f"the 'mkl' noise sampler {_reason}")
    std = float(std)
    if not (std > 0 and math.isfinite(std)):
        raise ValueError(f"gaussian_fill needs a finite std > 0, got {std!r}")
    if isinstance(out, np.ndarray):
        if out.dtype not in (np.float32, np.float64) or not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError("gaussian_fill needs a writable, C-contiguous float32 or float64 array")
        if out.size:
            _fill_pointer(lib, out.ctypes.data, out.size, out.dtype == np.float64, std, seed)
        return out
    if out.device.type != "cpu":
        raise ValueError(f"the 'mkl' noise sampler draws on the CPU; the tensor is on {out.device}")
    if out.dtype in (torch.float32, torch.float64) and out.is_contiguous():  # else: drawn apart and copied
        if out.numel():
            _fill_pointer(lib, out.data_ptr(), out.numel(), out.dtype == torch.float64, std, seed)
        return out
    if not out.is_floating_point():
        raise ValueError(f"gaussian_fill needs a floating-point tensor, got {out.dtype}")
    tmp = torch.empty(out.shape, dtype=torch.float64 if out.dtype == torch.float64 else torch.float32)
    gaussian_fill(tmp, std, seed)
    return out.copy_(tmp)
