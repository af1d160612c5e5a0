"""Noise mechanisms: Gaussian, Laplace and discrete Gaussian, each with its sensitivity and its DP event.

A mechanism is a frozen dataclass that knows the sensitivity it was built for. ``mech(x, rng)``
returns ``x`` plus noise whose scale is fixed by that sensitivity (``std = noise_multiplier *
sensitivity`` for the Gaussian), and ``mech.event`` is the :class:`dp_accounting.DpEvent` to hand to
a :class:`~ppml.dp.accounting.PrivacyAccountant`. Sensitivities are *add-or-remove* sensitivities
(how far one record's presence can move the query); the accountant derives replace-one guarantees
from them.

Secure mode (``secure=True``) is for deployment:

* randomness comes from :func:`ppml._rng.secure_generator` (keyed from the OS CSPRNG on every call);
  an ``rng`` argument is refused, because a seed makes the noise reproducible by whoever knows it;
* no continuous noise is sampled in floating point. Textbook samplers leak the input through which
  doubles the noisy output can take (Mironov 2012). Instead the input is rounded to a power-of-two
  grid ``g`` and integer noise from an exact discrete Gaussian or discrete Laplace sampler
  (Canonne, Kamath and Steinke 2020, Algorithms 2 and 3) is added on that grid, so every output
  is an exact multiple of ``g`` whatever the input. The grid is fine enough that rounding changes
  the sensitivity by at most a factor ``1 + 2**-20``, which ``.event`` accounts for.

With ``secure=False`` (the default, for reproducible experiments) noise comes from the given seeded
generator and continuous noise is sampled in floating point; a :class:`PrivacyWarning` says so once
per process.

The discrete samplers are exact: every Bernoulli(exp(-gamma)) draw compares a uniform number against
``exp(-gamma)``, first with 53 random bits and float64 bounds that provably enclose the true value,
and, in the rare case (probability below 1e-11) that those cannot decide, with more random bits and
``exp(-gamma)`` enclosed to as many digits as needed by :mod:`decimal` (correctly rounded) and
:class:`fractions.Fraction`.
"""

from __future__ import annotations

import decimal
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar, Protocol, runtime_checkable

import dp_accounting
import numpy as np
import torch

from .._rng import SeedLike, as_generator, derive_seed, secure_generator, torch_generator
from .._validation import NONNEG_FLOAT, POSITIVE_FLOAT, POSITIVE_INT, Options, ParameterError, check_param
from . import _vsl
from .accounting import PrivacyAccountant

__all__ = [
    "SECURE_GRID_MARGIN",
    "DiscreteGaussianMechanism",
    "GaussianMechanism",
    "LaplaceMechanism",
    "Mechanism",
    "PrivacyWarning",
    "sample_discrete_gaussian",
    "sample_discrete_laplace",
]

SECURE_GRID_MARGIN = 2.0**-20
"""Secure mode rounds inputs to a grid fine enough that the sensitivity grows by at most this factor
(relative); ``.event`` divides the noise multiplier by ``1 + SECURE_GRID_MARGIN``."""

_MAX_EXACT = 2.0**53  # integers below this are exact in float64
_U53 = 2.0**-53
_P_MARGIN = 2.0**-40  # relative slack on float64 exp(); its true error is below 1e-15


class PrivacyWarning(UserWarning):
    """Noise is generated in a way that is fine for experiments but not for deployment."""


_insecure_warned = False


def _warn_insecure(owner: str) -> None:
    global _insecure_warned
    if _insecure_warned:
        return
    _insecure_warned = True
    warnings.warn(
        f"{owner} runs with secure=False: noise comes from a seeded, reproducible generator and "
        "continuous noise is sampled in floating point, which is not safe against floating-point "
        "attacks (Mironov 2012). Use secure=True for a deployment (shown once per process).",
        PrivacyWarning,
        stacklevel=4,
    )


@runtime_checkable
class Mechanism(Protocol):
    """What ppml expects of a noise mechanism."""

    sensitivity: float
    secure: bool

    @property
    def event(self) -> dp_accounting.DpEvent: ...

    def __call__(self, x: Any, rng: SeedLike = None) -> Any: ...


# ---------------------------------------------------------------------------------------------
# exact samplers


def _exp_neg_bounds(gamma: Fraction, digits: int) -> tuple[Fraction, Fraction]:
    """Rationals ``lo <= exp(-gamma) <= hi`` with relative width about ``10**-digits``."""
    whole = int(gamma)
    prec = digits + len(str(whole)) + 5
    with decimal.localcontext() as ctx:
        ctx.prec = prec
        ctx.Emin = decimal.MIN_EMIN
        ctx.Emax = decimal.MAX_EMAX
        g = decimal.Decimal(gamma.numerator) / decimal.Decimal(
            gamma.denominator
        )  # rel. error <= 10**(1-prec)
        e = Fraction((-g).exp())  # correctly rounded: rel. error <= 10**(1-prec)
    rel = Fraction(whole + 3, 10 ** (prec - 2))  # covers both errors with room to spare
    return e * (1 - rel), e * (1 + rel)


def _uniform_below_exp_neg(u: int, gamma: Fraction, rng: np.random.Generator) -> bool:
    """Whether ``U < exp(-gamma)`` for ``U`` uniform on ``[u / 2**53, (u + 1) / 2**53)``.

    Draws further bits of ``U`` and tightens the bounds on ``exp(-gamma)`` until the answer is certain.
    """
    num, bits, digits = u, 53, 40
    while True:
        lo, hi = _exp_neg_bounds(gamma, digits)
        if Fraction(num + 1, 1 << bits) <= lo:
            return True
        if Fraction(num, 1 << bits) >= hi:
            return False
        num = (num << 64) | int(rng.integers(0, 2**64, dtype=np.uint64))
        bits += 64
        digits += 25


def _bernoulli_exp_neg(
    gamma: np.ndarray,
    gamma_err: np.ndarray,
    exact_gamma: Callable[[int], Fraction],
    rng: np.random.Generator,
) -> np.ndarray:
    """Exact Bernoulli(exp(-gamma_i)) draws.

    ``gamma`` approximates the true values to within ``gamma_err`` (both float arrays);
    ``exact_gamma(i)`` returns the exact value of element ``i`` for the rare undecided comparisons.
    """
    n = gamma.size
    u = rng.integers(0, 2**53, size=n, dtype=np.int64)
    uf = u.astype(np.float64)
    with np.errstate(over="ignore", under="ignore"):
        p_lo = np.exp(-(gamma + gamma_err)) * (1.0 - _P_MARGIN)
        p_hi = np.exp(-(gamma - gamma_err)) * (1.0 + _P_MARGIN) + 1e-300
    accept = (uf + 1.0) * _U53 <= p_lo
    undecided = ~accept & (uf * _U53 < p_hi)
    for i in np.flatnonzero(undecided):
        accept[i] = _uniform_below_exp_neg(int(u[i]), exact_gamma(int(i)), rng)
    return accept


def _geometric_exp_neg1(n: int, rng: np.random.Generator) -> np.ndarray:
    """Number of successes of Bernoulli(exp(-1)) before the first failure, ``n`` times."""
    v = np.zeros(n, dtype=np.int64)
    active = np.arange(n)
    one = Fraction(1)
    while active.size:
        a = _bernoulli_exp_neg(np.ones(active.size), np.zeros(active.size), lambda i: one, rng)
        active = active[a]
        v[active] += 1
    return v


def sample_discrete_laplace(scale: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Exact samples of the discrete Laplace distribution, ``P(y) ∝ exp(-|y| / scale)`` on the integers.

    Canonne, Kamath and Steinke 2020, Algorithm 2 (with ``s = 1``), vectorised.

    Parameters
    ----------
    scale : int >= 1
        The integer scale ``t`` (below ``2**52``).
    size : int >= 0
    rng : numpy.random.Generator

    Returns
    -------
    numpy.ndarray of int64, shape ``(size,)``
    """
    t = int(scale)
    if not 1 <= t < 2**52:
        raise ParameterError(
            f"The 'scale' parameter of sample_discrete_laplace must be an int in the range [1, 2**52). "
            f"Got {scale!r} instead.",
            param="scale",
        )
    out = np.empty(int(size), dtype=np.int64)
    filled = 0
    while filled < out.size:
        m = out.size - filled
        k = int(m * 1.7) + 16  # acceptance is about 1 - exp(-1) = 0.63 for large t
        u = rng.integers(0, t, size=k, dtype=np.int64)
        g = u.astype(np.float64) / float(t)  # correctly rounded: relative error <= 2**-53
        keep = _bernoulli_exp_neg(g, g * 2.0**-50, lambda i, u=u: Fraction(int(u[i]), t), rng)
        u = u[keep]
        x = u + t * _geometric_exp_neg1(u.size, rng)
        negative = rng.integers(0, 2, size=x.size).astype(bool)
        ok = ~(negative & (x == 0))
        z = np.where(negative, -x, x)[ok]
        take = min(z.size, m)
        out[filled : filled + take] = z[:take]
        filled += take
    return out


def sample_discrete_gaussian(sigma: float | Fraction, size: int, rng: np.random.Generator) -> np.ndarray:
    """Exact samples of the discrete Gaussian, ``P(y) ∝ exp(-y**2 / (2 sigma**2))`` on the integers.

    Canonne, Kamath and Steinke 2020, Algorithm 3 (rejection from the discrete Laplace with scale
    ``floor(sigma) + 1``), vectorised; ``sigma**2`` is taken exactly as the rational ``sigma``
    represents.

    Parameters
    ----------
    sigma : float or Fraction > 0
        Below ``2**46``.
    size : int >= 0
    rng : numpy.random.Generator

    Returns
    -------
    numpy.ndarray of int64, shape ``(size,)``
    """
    s = Fraction(sigma)
    if not 0 < s < 2**46:
        raise ParameterError(
            f"The 'sigma' parameter of sample_discrete_gaussian must be a float in the range (0, 2**46). "
            f"Got {sigma!r} instead.",
            param="sigma",
        )
    sigma2 = s * s
    t = math.isqrt(sigma2.numerator // sigma2.denominator) + 1
    s2 = float(sigma2)  # correctly rounded
    b = float(sigma2 / t)  # correctly rounded
    out = np.empty(int(size), dtype=np.int64)
    filled = 0
    while filled < out.size:
        m = out.size - filled
        k = int(m * 1.5) + 16
        y = sample_discrete_laplace(t, k, rng)
        a = np.abs(y).astype(np.float64)  # exact: |y| < 2**53
        d = a - b
        gamma = d * d / (2.0 * s2)
        # float64 error of gamma is below 3e-16 * (gamma + (a + b)**2 / s2); allow 300x that.
        err = 1e-13 * (1.0 + gamma + (a + b) ** 2 / s2)

        def exact(i: int, y: np.ndarray = y) -> Fraction:
            return (abs(int(y[i])) - sigma2 / t) ** 2 / (2 * sigma2)

        z = y[_bernoulli_exp_neg(gamma, err, exact, rng)]
        take = min(z.size, m)
        out[filled : filled + take] = z[:take]
        filled += take
    return out


# ---------------------------------------------------------------------------------------------
# helpers shared by the mechanisms


def _resolve_rng(rng: SeedLike, secure: bool, owner: str) -> np.random.Generator:
    if secure:
        if rng is not None:
            raise ParameterError(
                f"The 'rng' parameter of {owner} must be None in secure mode: secure mode refuses seeds "
                f"and seeded generators (anyone holding the seed can subtract the noise) and draws from "
                f"the OS CSPRNG. Got {rng!r} instead.",
                param="rng",
            )
        return secure_generator()
    if rng is None:
        raise ParameterError(
            f"The 'rng' parameter of {owner} must be an int seed, a SeedSequence or a numpy Generator "
            f"when secure=False (pass secure=True for non-reproducible deployment noise). Got None instead.",
            param="rng",
        )
    _warn_insecure(owner)
    return as_generator(rng)


NOISE_SAMPLERS = ("native", "mkl")


def check_noise_sampler(name: str, value: Any, owner: str, secure: bool) -> None:
    """Validate a noise-sampler setting (``"native"`` or ``"mkl"``; ``"mkl"`` needs oneMKL's runtime and
    plain mode)."""
    check_param(name, value, owner, Options(NOISE_SAMPLERS))
    if value != "mkl":
        return
    if secure:
        raise ParameterError(
            f"The '{name}' parameter of {owner} is 'mkl', a seeded floating-point sampler, which secure "
            "mode does not use (it draws exact discrete Gaussian noise from the OS CSPRNG); use "
            f"{name}='native' with secure=True.",
            param=name,
        )
    reason = _vsl.unavailable_reason()
    if reason is not None:
        raise ParameterError(f"The '{name}' parameter of {owner} is 'mkl', which {reason}.", param=name)


def _check_cpu(t: torch.Tensor, name: str, owner: str) -> None:
    if t.device.type != "cpu":
        raise ParameterError(
            f"The '{name}' parameter of {owner} is 'mkl', which draws on the CPU, but the data is on "
            f"{t.device}; use {name}='native' there.",
            param=name,
        )


def _check_finite_positive(name: str, value: Any, owner: str) -> None:
    check_param(name, value, owner, POSITIVE_FLOAT)
    if not math.isfinite(value):
        raise ParameterError(
            f"The '{name}' parameter of {owner} must be a finite float in the range (0, inf). Got {value!r} instead.",
            param=name,
        )


def _float_array(x: Any) -> tuple[np.ndarray, bool]:
    """``x`` as a float ndarray (float32/float64 kept, anything else float64), and whether it was a scalar."""
    arr = np.asarray(x)
    scalar = arr.ndim == 0 and not isinstance(x, np.ndarray)
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    return arr, scalar


def _float_dtype(t: torch.Tensor) -> torch.dtype:
    return t.dtype if t.is_floating_point() else torch.float64


def _secure_grid_noise(
    x: np.ndarray,
    grid_exp: int,
    sample: Callable[[int, np.random.Generator], np.ndarray],
    rng: np.random.Generator,
    owner: str,
) -> np.ndarray:
    """``(round(x / 2**grid_exp) + integer noise) * 2**grid_exp``, every step exact in float64."""
    return _secure_grid_add(x, grid_exp, lambda size: sample(size, rng), owner)


def _secure_grid_add(
    x: np.ndarray, grid_exp: int, noise: np.ndarray | Callable[[int], np.ndarray], owner: str
) -> np.ndarray:
    """``(round(x / 2**grid_exp) + noise) * 2**grid_exp`` with integer ``noise`` of ``x.size`` values,
    given or drawn by ``noise(size)`` (after the input is checked)."""
    x64 = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x64)):
        raise ParameterError(
            f"The input to {owner} must be finite. Got a non-finite value instead.", param="x"
        )
    q = np.rint(np.ldexp(x64, -grid_exp))  # exact power-of-two scaling, then rounding to the grid
    noise = (noise(x64.size) if callable(noise) else np.asarray(noise)).reshape(x64.shape)
    if q.size and float(np.max(np.abs(q))) + float(np.max(np.abs(noise))) >= _MAX_EXACT:
        raise ParameterError(
            f"The input to {owner} is too large for secure mode's grid (2**{grid_exp}): |x| must stay "
            f"below about {2.0 ** (grid_exp + 52):.3g}. Got max |x| = {float(np.max(np.abs(x64))):.3g} instead.",
            param="x",
        )
    return np.ldexp(q + noise.astype(np.float64), grid_exp)


def _apply_numpy_or_torch(
    x: Any,
    numpy_fn: Callable[[np.ndarray], np.ndarray],
    torch_fn: Callable[[torch.Tensor], torch.Tensor] | None,
) -> Any:
    """Run ``numpy_fn`` on numpy data and scalars; tensors go to ``torch_fn`` or through numpy and back."""
    if isinstance(x, torch.Tensor):
        if torch_fn is not None:
            return torch_fn(x)
        dtype = _float_dtype(x)
        out = numpy_fn(x.detach().to("cpu", torch.float64).numpy())
        return torch.from_numpy(out).to(device=x.device, dtype=dtype)
    arr, scalar = _float_array(x)
    out = numpy_fn(arr).astype(arr.dtype, copy=False)
    return float(out) if scalar else out


class _NoiseMechanism:
    """Shared behaviour; subclasses are frozen dataclasses with ``sensitivity`` and ``secure`` fields."""

    sensitivity: float
    secure: bool
    neighbouring: ClassVar[str] = "add_or_remove"

    @property
    def event(self) -> dp_accounting.DpEvent:  # pragma: no cover - overridden
        raise NotImplementedError

    def epsilon(self, delta: float, *, accountant: str = "rdp", count: int = 1) -> float:
        """Epsilon at ``delta`` of ``count`` applications (composed by a fresh :class:`PrivacyAccountant`)."""
        acc = PrivacyAccountant(accountant, delta)
        return acc.spend(self.event, label=type(self).__name__, count=count)


# ---------------------------------------------------------------------------------------------
# mechanisms


@dataclass(frozen=True)
class GaussianMechanism(_NoiseMechanism):
    """Add Gaussian noise of standard deviation ``noise_multiplier * sensitivity``.

    Parameters
    ----------
    sensitivity : float > 0
        L2 sensitivity of the query the mechanism is applied to (add-or-remove one record). The
        noise is sized for *this* query: a mechanism built for a sum (sensitivity ``C``) adds noise
        of std ``z * C`` to whatever it is given, so apply it to the sum and divide afterwards; a
        mean over ``n`` records needs its own mechanism with sensitivity ``C / n``.
    noise_multiplier : float >= 0
        ``z``; 0 adds no noise (and epsilon is infinite).
    secure : bool, default False
        Secure mode (see the module docstring): discrete Gaussian noise on a power-of-two grid of
        spacing ``g <= 2**-20 * sensitivity / sqrt(d)`` for ``d`` coordinates, CSPRNG randomness,
        seeds refused. Slower (about 0.3 s per million coordinates on one core) and not reproducible.
    sampler : {"native", "mkl"}, default "native"
        Where the floating-point noise of plain mode comes from: ``"native"`` draws with the input's own
        library (numpy's ``Generator.standard_normal`` for arrays, torch's ``randn`` / ``normal_`` for
        tensors), seeded from ``rng``; ``"mkl"`` draws with Intel oneMKL's ARS-5 generator and
        Box-Muller transform (:mod:`ppml.dp._vsl`; ``pip install 'ppml[mkl]'``), keyed by a seed taken
        from ``rng``: two to five times faster than torch's on the CPU, CPU tensors and arrays only. A
        performance setting: the noise has the same distribution and the same guarantee, but not the same
        bits for a seed. Not allowed with ``secure=True``, which has its own exact sampler.

    Privacy guarantee
    -----------------
    Each call is the Gaussian mechanism with noise multiplier ``z`` relative to ``sensitivity``:
    ``event`` is ``GaussianDpEvent(z)``. In secure mode rounding to the grid can grow the L2
    sensitivity by up to ``g * sqrt(d) <= 2**-20 * sensitivity``, so ``event`` is
    ``GaussianDpEvent(z / (1 + 2**-20))``; the noise is a discrete Gaussian, whose Renyi divergences
    are at most the continuous one's (Canonne, Kamath and Steinke 2020), and whose privacy profile
    at a shift of at least ``2**20`` grid steps matches the continuous one to about 1e-13 (relative).
    The guarantee holds only if the input's sensitivity really is ``sensitivity`` (e.g. clipped
    contributions summed, not averaged).

    Examples
    --------
    >>> mech = GaussianMechanism(sensitivity=1.0, noise_multiplier=1.1)
    >>> mech.std
    1.1
    """

    sensitivity: float
    noise_multiplier: float
    secure: bool = False
    sampler: str = "native"

    norm: ClassVar[str] = "l2"

    def __post_init__(self) -> None:
        owner = type(self).__name__
        _check_finite_positive("sensitivity", self.sensitivity, owner)
        check_param("noise_multiplier", self.noise_multiplier, owner, NONNEG_FLOAT)
        if not math.isfinite(self.noise_multiplier):
            raise ParameterError(
                f"The 'noise_multiplier' parameter of {owner} must be finite. Got {self.noise_multiplier!r} instead.",
                param="noise_multiplier",
            )
        check_param("secure", self.secure, owner, bool)
        check_noise_sampler("sampler", self.sampler, owner, self.secure)

    @property
    def std(self) -> float:
        """Standard deviation of the noise on each coordinate: ``noise_multiplier * sensitivity``."""
        return float(self.noise_multiplier) * float(self.sensitivity)

    @property
    def event(self) -> dp_accounting.DpEvent:
        z = float(self.noise_multiplier)
        return dp_accounting.GaussianDpEvent(z / (1.0 + SECURE_GRID_MARGIN) if self.secure else z)

    def _grid_exp(self, d: int) -> int:
        bound = SECURE_GRID_MARGIN * float(self.sensitivity) / math.sqrt(max(d, 1))
        g = math.floor(math.log2(bound))
        while math.ldexp(1.0, g) * math.sqrt(max(d, 1)) > SECURE_GRID_MARGIN * float(self.sensitivity):
            g -= 1
        return g

    def __call__(self, x: Any, rng: SeedLike = None) -> Any:
        """Return ``x`` plus noise (a new array/tensor of ``x``'s float dtype, or a float for a scalar).

        Parameters
        ----------
        x : array-like, torch.Tensor or float
        rng : int, SeedSequence, numpy Generator or None
            Required when ``secure=False``; must be None when ``secure=True``.
        """
        owner = type(self).__name__
        gen = _resolve_rng(rng, self.secure, owner)
        std = self.std
        if std == 0.0:
            return _apply_numpy_or_torch(x, lambda a: a.copy(), lambda t: t.to(_float_dtype(t)).clone())
        if self.secure:
            g, sigma_grid = self._secure_grid(int(np.prod(np.shape(x))))

            def secure_numpy(a: np.ndarray) -> np.ndarray:
                return _secure_grid_noise(
                    a, g, lambda n, r: sample_discrete_gaussian(sigma_grid, n, r), gen, owner
                )

            return _apply_numpy_or_torch(x, secure_numpy, None)

        if self.sampler == "mkl":

            def mkl_numpy(a: np.ndarray) -> np.ndarray:
                noise = _vsl.gaussian_fill(np.empty(a.shape, dtype=a.dtype), std, derive_seed(gen))
                return np.add(a, noise, out=noise)

            def mkl_torch(t: torch.Tensor) -> torch.Tensor:
                _check_cpu(t, "sampler", owner)
                noise = torch.empty(t.shape, dtype=_float_dtype(t))
                _vsl.gaussian_fill(noise, std, derive_seed(gen))
                return torch.add(t.to(noise.dtype), noise, out=noise)

            return _apply_numpy_or_torch(x, mkl_numpy, mkl_torch)

        def plain_numpy(a: np.ndarray) -> np.ndarray:
            return a + gen.standard_normal(a.shape, dtype=a.dtype) * a.dtype.type(std)

        def plain_torch(t: torch.Tensor) -> torch.Tensor:
            dtype = _float_dtype(t)
            tg = torch_generator(gen, device=t.device)
            noise = torch.randn(t.shape, generator=tg, dtype=dtype, device=t.device)
            # One pass over memory: the noise buffer becomes the result (t + std * noise).
            return torch.add(t.to(dtype), noise, alpha=std, out=noise)

        return _apply_numpy_or_torch(x, plain_numpy, plain_torch)

    # -- noise drawn apart from the input (DP-SGD draws it while the gradients are computed) ------
    def _secure_grid(self, d: int) -> tuple[int, float]:
        """Secure mode's grid exponent ``g`` for ``d`` coordinates and the noise scale on it."""
        g = self._grid_exp(d)
        sigma_grid = math.ldexp(self.std, -g)  # exact
        if sigma_grid >= 2.0**46:
            raise ParameterError(
                f"{type(self).__name__} in secure mode cannot place {d} coordinates on a grid fine enough "
                f"for noise_multiplier={self.noise_multiplier!r}; reduce the dimension per call.",
                param="noise_multiplier",
            )
        return g, sigma_grid

    def _fill_noise(self, out: torch.Tensor, seed: int) -> torch.Tensor:
        """Overwrite the float tensor ``out`` with ``N(0, std**2)`` noise (one pass, in place) from a torch
        generator seeded with ``seed`` (oneMKL's, keyed by ``seed``, with ``sampler="mkl"``); the same
        ``seed`` gives the same bits in whichever thread."""
        if self.sampler == "mkl":
            _check_cpu(out, "sampler", type(self).__name__)
            return _vsl.gaussian_fill(out, self.std, seed)
        gen = torch.Generator(device=out.device)
        gen.manual_seed(int(seed))
        return out.normal_(0.0, self.std, generator=gen)

    def _draw_secure_noise(self, d: int) -> np.ndarray:
        """Secure mode's integer noise (in grid steps) for ``d`` coordinates, from a fresh CSPRNG generator
        (nothing shared: safe to call from another thread)."""
        _, sigma_grid = self._secure_grid(d)
        return sample_discrete_gaussian(sigma_grid, d, secure_generator())

    def _add_secure_noise(self, x: torch.Tensor, noise: np.ndarray) -> torch.Tensor:
        """Secure mode's output for the tensor ``x`` with ``noise`` from :meth:`_draw_secure_noise`: ``x``
        rounded to the grid plus ``noise`` grid steps (exact in float64), in ``x``'s float dtype."""
        g, _ = self._secure_grid(x.numel())
        a = x.detach().to("cpu", torch.float64).numpy()
        out = _secure_grid_add(a, g, noise, type(self).__name__)
        return torch.from_numpy(out).to(device=x.device, dtype=_float_dtype(x))


@dataclass(frozen=True)
class LaplaceMechanism(_NoiseMechanism):
    """Add Laplace noise of scale ``scale`` (density ``exp(-|y| / scale) / (2 scale)``) to each coordinate.

    Parameters
    ----------
    sensitivity : float > 0
        L1 sensitivity of the query (add-or-remove one record).
    scale : float > 0
        ``b``; the mechanism is ``sensitivity / scale``-DP.
    secure : bool, default False
        Secure mode (see the module docstring): discrete Laplace noise of integer scale
        ``ceil(scale / g) >= 2**20`` on a power-of-two grid of spacing ``g <= 2**-20 * sensitivity / d``
        for ``d`` coordinates, CSPRNG randomness, seeds refused.

    Privacy guarantee
    -----------------
    Pure ``epsilon = sensitivity / scale`` DP per call; ``event`` is
    ``LaplaceDpEvent(scale / sensitivity)``. In secure mode rounding can grow the L1 sensitivity by
    up to ``g * d <= 2**-20 * sensitivity`` and the noise scale is at least ``scale``, so ``event``
    is ``LaplaceDpEvent(scale / (sensitivity * (1 + 2**-20)))``; the discrete Laplace's privacy
    profile at scale ``>= 2**20`` grid steps differs from the continuous one by about 1e-12
    (relative), far inside that ``2**-20`` margin.
    """

    sensitivity: float
    scale: float
    secure: bool = False

    norm: ClassVar[str] = "l1"

    def __post_init__(self) -> None:
        owner = type(self).__name__
        _check_finite_positive("sensitivity", self.sensitivity, owner)
        _check_finite_positive("scale", self.scale, owner)
        check_param("secure", self.secure, owner, bool)

    @property
    def noise_multiplier(self) -> float:
        """``scale / sensitivity``."""
        return float(self.scale) / float(self.sensitivity)

    @property
    def pure_epsilon(self) -> float:
        """``sensitivity / scale``: the pure-DP epsilon of one call."""
        return float(self.sensitivity) / float(self.scale)

    @property
    def event(self) -> dp_accounting.DpEvent:
        z = self.noise_multiplier
        return dp_accounting.LaplaceDpEvent(z / (1.0 + SECURE_GRID_MARGIN) if self.secure else z)

    def epsilon(self, delta: float = 0.0, *, accountant: str = "rdp", count: int = 1) -> float:
        """Epsilon of ``count`` calls: ``count * sensitivity / scale`` for ``delta = 0``, else the accountant's."""
        if delta == 0.0:
            check_param("count", count, f"{type(self).__name__}.epsilon", POSITIVE_INT)
            eps = self.pure_epsilon * (1.0 + SECURE_GRID_MARGIN) if self.secure else self.pure_epsilon
            return int(count) * eps
        return super().epsilon(delta, accountant=accountant, count=count)

    def _grid(self, d: int) -> tuple[int, int]:
        """Grid exponent ``g`` and integer noise scale ``t = ceil(scale / 2**g)``."""
        b = float(self.scale)
        g = min(
            math.floor(math.log2(SECURE_GRID_MARGIN * float(self.sensitivity) / max(d, 1))),
            math.floor(math.log2(b)) - 20,
        )
        while math.ldexp(1.0, g) * max(d, 1) > SECURE_GRID_MARGIN * float(self.sensitivity):
            g -= 1
        return g, math.ceil(Fraction(b) / Fraction(2) ** g)

    def __call__(self, x: Any, rng: SeedLike = None) -> Any:
        """Return ``x`` plus noise (see :meth:`GaussianMechanism.__call__` for types and ``rng``)."""
        owner = type(self).__name__
        gen = _resolve_rng(rng, self.secure, owner)
        if self.secure:
            d = int(np.prod(np.shape(x)))
            g, t = self._grid(d)
            if t >= 2**46:
                raise ParameterError(
                    f"{owner} in secure mode cannot place {d} coordinates on a grid fine enough for "
                    f"scale={self.scale!r}; reduce the dimension per call.",
                    param="scale",
                )

            def secure_numpy(a: np.ndarray) -> np.ndarray:
                return _secure_grid_noise(a, g, lambda n, r: sample_discrete_laplace(t, n, r), gen, owner)

            return _apply_numpy_or_torch(x, secure_numpy, None)
        b = float(self.scale)
        return _apply_numpy_or_torch(x, lambda a: a + gen.laplace(0.0, b, a.shape).astype(a.dtype), None)


@dataclass(frozen=True)
class DiscreteGaussianMechanism(_NoiseMechanism):
    """Add discrete Gaussian noise (``P(y) ∝ exp(-y**2 / (2 sigma**2))`` on the integers) to integer data.

    Parameters
    ----------
    sensitivity : float > 0
        L2 sensitivity of the integer-valued query (add-or-remove one record), e.g. 1 for a count.
    sigma : float > 0
        The discrete Gaussian's scale parameter (its variance is slightly below ``sigma**2``).
    secure : bool, default False
        Draw from the OS CSPRNG and refuse seeds. The sampler is exact in both modes (Canonne,
        Kamath and Steinke 2020), so secure mode only changes the source of randomness.

    Privacy guarantee
    -----------------
    ``rho``-zCDP with ``rho = sensitivity**2 / (2 sigma**2)`` (Canonne, Kamath and Steinke 2020,
    Theorem 14), the same Renyi curve as the continuous Gaussian. ``event`` is
    ``ZCDpEvent(rho)``: the RDP accountant composes it exactly; the PLD accountant and Poisson
    sampling of it are refused (dp-accounting 0.6 has no discrete Gaussian event, and the continuous
    Gaussian's (epsilon, delta) curve is not a valid stand-in at small sigma: at sigma = 1 and
    sensitivity 1 the discrete Gaussian's delta is up to ~20% larger at some epsilons).
    """

    sensitivity: float
    sigma: float
    secure: bool = False

    norm: ClassVar[str] = "l2"

    def __post_init__(self) -> None:
        owner = type(self).__name__
        _check_finite_positive("sensitivity", self.sensitivity, owner)
        _check_finite_positive("sigma", self.sigma, owner)
        if self.sigma >= 2.0**46:
            raise ParameterError(
                f"The 'sigma' parameter of {owner} must be a float in the range (0, 2**46). Got {self.sigma!r} instead.",
                param="sigma",
            )
        check_param("secure", self.secure, owner, bool)

    @property
    def rho(self) -> float:
        """The zCDP parameter ``sensitivity**2 / (2 sigma**2)``."""
        return float(self.sensitivity) ** 2 / (2.0 * float(self.sigma) ** 2)

    @property
    def event(self) -> dp_accounting.DpEvent:
        return dp_accounting.ZCDpEvent(self.rho)

    def __call__(self, x: Any, rng: SeedLike = None) -> Any:
        """Return ``x`` plus integer noise: int64 ndarray, int64 tensor, or int for a scalar.

        ``x`` must have an integer dtype (or be a Python int); floats are refused rather than rounded.
        """
        owner = type(self).__name__
        gen = _resolve_rng(rng, self.secure, owner)
        if isinstance(x, torch.Tensor):
            if x.is_floating_point() or x.is_complex():
                raise ParameterError(
                    f"The input to {owner} must be integer-valued. Got a tensor of dtype {x.dtype} instead.",
                    param="x",
                )
            arr = x.detach().to("cpu", torch.int64).numpy()
            noise = sample_discrete_gaussian(float(self.sigma), arr.size, gen).reshape(arr.shape)
            return torch.from_numpy(arr + noise).to(x.device)
        arr = np.asarray(x)
        if arr.dtype.kind not in "iub" or isinstance(x, (bool, np.bool_)):
            raise ParameterError(
                f"The input to {owner} must be integer-valued. Got dtype {arr.dtype} instead.", param="x"
            )
        arr = arr.astype(np.int64)
        noise = sample_discrete_gaussian(float(self.sigma), arr.size, gen).reshape(arr.shape)
        out = arr + noise
        return int(out) if arr.ndim == 0 and not isinstance(x, np.ndarray) else out
