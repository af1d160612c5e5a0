"""The 2D scattering transform (ScatterNet) as fixed, data-independent image features.

The scattering transform of Mallat (2012, "Group invariant scattering") with the Morlet filter bank
of Bruna and Mallat (2013, "Invariant scattering convolution networks") and Oyallon and Mallat (2015,
"Deep roto-translation scattering for object classification") cascades wavelet convolutions and
complex moduli, then averages with a Gaussian low-pass filter ``phi_J`` and subsamples by ``2^J``:

* order 0: ``x * phi_J``                                            (1 channel)
* order 1: ``|x * psi_{j1,t1}| * phi_J``                            (``J L`` channels)
* order 2: ``||x * psi_{j1,t1}| * psi_{j2,t2}| * phi_J``, ``j2 > j1`` (``L^2 J (J - 1) / 2`` channels)

for scales ``j < J`` and ``L`` angles ``t``: ``1 + J L + L^2 J (J - 1) / 2`` channels in all, 81 for
``J = 2, L = 8``, each of size ``floor(H / 2^J) x floor(W / 2^J)`` (7 x 7 for MNIST's 28 x 28).
Tramer and Boneh 2021 ("Differentially private learning needs better features (or much more data)",
ICLR 2021) train linear models and small CNNs on these features with DP-SGD; because the transform
is fixed, computing it costs no privacy.

Implementation
--------------
This module computes the transform in torch with FFT convolutions, following the algorithm and the
filter design of Kymatio 0.3 (Andreux et al. 2020, "Kymatio: scattering transforms in Python",
JMLR 21(60)), so that the features are those Tramer and Boneh used: the input is reflection-padded
to a multiple of ``2^J`` (``((H + 2^J) // 2^J + 1) 2^J`` rows), Morlet wavelets ``psi_{j,t}`` with
Gaussian width ``0.8 * 2^j``, central frequency ``3 pi / 4 / 2^j``, slant ``4 / L`` and angle
``(L/2 - 1 - t) pi / L`` and a Gaussian ``phi`` of width ``0.8 * 2^(J-1)`` are built in space
(periodised over 5 x 5 tiles) and taken to Fourier; each modulus is subsampled by the scale it has
reached (``2^j1``, then ``2^(j2 - j1)``), the filters used at a coarser resolution are periodised
in Fourier, and one border row and column is cropped at the end. Agreement with Kymatio 0.3.0 is
tested on reference values: the relative difference is about 3e-5 per filter, because Kymatio
divides its Gabor filters by ``2 * 3.1415 * sigma^2`` where this module uses ``2 pi sigma^2``.

Kymatio itself is not used: its documented entry point ``kymatio.torch`` imports its 3D harmonic
scattering, which needs ``scipy.special.sph_harm``, removed in SciPy 1.17 (ppml's environment), so
``from kymatio.torch import Scattering2D`` fails there; the transform is also small enough that
owning it costs less than a dependency pinned to an old SciPy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .._validation import POSITIVE_INT, Interval, ParameterError, check_param

__all__ = ["ScatteringFeatures", "n_scattering_channels"]


def n_scattering_channels(J: int, L: int) -> int:
    """Number of channels of the order-2 scattering transform: ``1 + J L + L^2 J (J - 1) / 2``."""
    return 1 + J * L + L * L * J * (J - 1) // 2


def _padded_size(n: int, J: int) -> int:
    return ((n + 2**J) // 2**J + 1) * 2**J


def _gabor(M: int, N: int, sigma: float, theta: float, xi: float, slant: float = 1.0) -> np.ndarray:
    """Gabor filter ``g_sigma(u) exp(i xi <u, e_theta>)`` on an ``M x N`` grid, periodised over 5 x 5
    tiles, divided by ``2 pi sigma^2 / slant`` (complex128)."""
    c, s = math.cos(theta), math.sin(theta)
    R = np.array([[c, -s], [s, c]])
    curv = R @ np.diag([1.0, slant * slant]) @ R.T / (2 * sigma * sigma)
    out = np.zeros((M, N), dtype=np.complex128)
    for ex in range(-2, 3):
        for ey in range(-2, 3):
            xx, yy = np.meshgrid(
                np.arange(ex * M, ex * M + M, dtype=np.float64),
                np.arange(ey * N, ey * N + N, dtype=np.float64),
                indexing="ij",
            )
            quad = curv[0, 0] * xx * xx + (curv[0, 1] + curv[1, 0]) * xx * yy + curv[1, 1] * yy * yy
            out += np.exp(-quad + 1j * xi * (xx * c + yy * s))
    return out / (2 * math.pi * sigma * sigma / slant)


def _morlet(M: int, N: int, sigma: float, theta: float, xi: float, slant: float) -> np.ndarray:
    """Morlet wavelet: a Gabor filter minus the Gaussian envelope times the constant that makes the
    sum over the grid zero."""
    wave = _gabor(M, N, sigma, theta, xi, slant)
    envelope = _gabor(M, N, sigma, theta, 0.0, slant)
    return wave - (wave.sum() / envelope.sum()) * envelope


def _periodize(filt: np.ndarray, res: int) -> np.ndarray:
    """A Fourier-domain filter for a signal subsampled by ``2^res``: the band above the new Nyquist
    frequency is dropped, then the spectrum is folded onto ``(M / 2^res, N / 2^res)``."""
    if res == 0:
        return filt
    M, N = filt.shape
    k = 2**res
    kept = filt.copy()
    lo, hi = M // (2 * k), M // (2 * k) + int(M * (1 - 1 / k))
    kept[lo:hi, :] = 0
    lo, hi = N // (2 * k), N // (2 * k) + int(N * (1 - 1 / k))
    kept[:, lo:hi] = 0
    return kept.reshape(k, M // k, k, N // k).sum(axis=(0, 2))


def _filter_bank(M: int, N: int, J: int, L: int) -> tuple[list[list[torch.Tensor]], list[torch.Tensor]]:
    """Fourier transforms (real parts; the imaginary parts vanish by symmetry) of the wavelets and
    of the low-pass filter, at every resolution the algorithm needs.

    Returns ``psi[n][res]`` for wavelet ``n = j L + t`` and ``phi[res]`` (float32 tensors).
    """
    psi: list[list[torch.Tensor]] = []
    for j in range(J):
        for t in range(L):
            theta = (int(L - L / 2 - 1) - t) * math.pi / L
            hat = np.real(np.fft.fft2(_morlet(M, N, 0.8 * 2**j, theta, 0.75 * math.pi / 2**j, 4.0 / L)))
            psi.append(
                [
                    torch.from_numpy(_periodize(hat, r).astype(np.float32))
                    for r in range(min(j + 1, max(J - 1, 1)))
                ]
            )
    hat = np.real(np.fft.fft2(_gabor(M, N, 0.8 * 2 ** (J - 1), 0.0, 0.0)))
    phi = [torch.from_numpy(_periodize(hat, r).astype(np.float32)) for r in range(J)]
    return psi, phi


def _filter_subsample(x: torch.Tensor, filt: torch.Tensor, k: int) -> torch.Tensor:
    """Fourier coefficients of ``(x * f)[::k, ::k]`` (spatial convolution, then subsampling) from the
    spectra ``x`` (..., M, N) and ``filt`` (M, N) or (L, M, N): the product folded onto
    ``(M / k, N / k)`` and averaged (subsampling in space is periodisation in Fourier), one block
    at a time so the full-size product is never stored."""
    M, N = x.shape[-2:]
    m, n = M // k, N // k
    scaled = filt / (k * k) if k > 1 else filt
    out: torch.Tensor | None = None
    for a in range(k):
        for b in range(k):
            rows, cols = slice(a * m, (a + 1) * m), slice(b * n, (b + 1) * n)
            block = x[..., rows, cols] * scaled[..., rows, cols]
            out = block if out is None else out.add_(block)
    assert out is not None
    return out


def _scatter(
    x: torch.Tensor,
    J: int,
    L: int,
    pads: tuple[int, int, int, int],
    psi: list[list[torch.Tensor]],
    phi: list[torch.Tensor],
) -> torch.Tensor:
    """Scattering coefficients of ``x`` (B, H, W) -> (B, C, H', W'): order 0, order 1 in
    ``(j1, t1)`` order, then order 2 in ``(j1, t1, j2, t2)`` order (Kymatio's channel order).

    The ``L`` angles of one scale are filtered in one broadcast product."""
    B = len(x)
    padded = torch.nn.functional.pad(x.unsqueeze(1), pads, mode="reflect").squeeze(1)
    X = torch.fft.fft2(padded)
    first = [torch.fft.ifft2(_filter_subsample(X, phi[0], 2**J)).real.unsqueeze(1)]
    second: list[torch.Tensor] = []
    for j1 in range(J):
        bank1 = torch.stack([psi[j1 * L + t][0] for t in range(L)])  # (L, M, N)
        U1 = torch.fft.fft2(
            torch.fft.ifft2(_filter_subsample(X.unsqueeze(1), bank1, 2**j1)).abs()
        )  # (B, L, m, n)
        first.append(torch.fft.ifft2(_filter_subsample(U1, phi[j1], 2 ** (J - j1))).real)
        per_j2: list[torch.Tensor] = []
        for j2 in range(j1 + 1, J):
            bank2 = torch.stack([psi[j2 * L + t][j1] for t in range(L)])  # (L, m, n)
            U2 = torch.fft.ifft2(
                _filter_subsample(U1.unsqueeze(2), bank2, 2 ** (j2 - j1))
            ).abs()  # (B, L, L, .)
            per_j2.append(torch.fft.ifft2(_filter_subsample(torch.fft.fft2(U2), phi[j2], 2 ** (J - j2))).real)
        if per_j2:
            block = torch.cat(per_j2, dim=2)  # (B, L_t1, (J - j1 - 1) L, h, w)
            second.append(block.reshape(B, -1, *block.shape[-2:]))
    return torch.cat(first + second, dim=1)[..., 1:-1, 1:-1]


class ScatteringFeatures:
    """Order-2 2D scattering transform of images (ScatterNet features), a fixed feature map.

    Parameters
    ----------
    J : int in [1, 8], default 2
        Number of scales; the output is subsampled by ``2^J``.
    L : int in [1, 32], default 8
        Number of wavelet angles in ``[0, pi)``.
    shape : tuple of two ints, default (28, 28)
        Height and width of the images, each larger than ``2^J``.
    batch_size : int >= 1, default 256
        Images transformed at once (memory, not results: a performance setting).

    Attributes
    ----------
    n_channels_ : int
        ``1 + J L + L^2 J (J - 1) / 2`` (81 for ``J = 2, L = 8``).
    output_shape_ : tuple of int
        ``(n_channels_, H // 2^J, W // 2^J)``, the shape of one image's features.

    Privacy guarantee
    -----------------
    None is needed: the filters depend only on ``J``, ``L`` and ``shape``, and each image's features
    depend on that image alone, so the transform is a fixed per-example map. Training on its output
    with DP-SGD has the guarantee of the DP-SGD run on the raw images; :meth:`fit` reads no data
    beyond the shape.

    Notes
    -----
    The filter bank and algorithm follow Kymatio 0.3 (see :mod:`ppml.features.scattering`), the
    implementation Tramer and Boneh 2021 used; channel order is Kymatio's.

    Examples
    --------
    >>> import numpy as np
    >>> sf = ScatteringFeatures(J=2, L=8, shape=(28, 28)).fit(np.zeros((1, 28, 28)))
    >>> sf.transform(np.zeros((3, 1, 28, 28), dtype=np.float32)).shape
    (3, 81, 7, 7)
    """

    def __init__(
        self, J: int = 2, L: int = 8, shape: tuple[int, int] = (28, 28), batch_size: int = 256
    ) -> None:
        self.J = J
        self.L = L
        self.shape = shape
        self.batch_size = batch_size

    def _validate(self) -> tuple[int, int]:
        owner = type(self).__name__
        check_param("J", self.J, owner, Interval(int, 1, 8, "both"))
        check_param("L", self.L, owner, Interval(int, 1, 32, "both"))
        check_param("batch_size", self.batch_size, owner, POSITIVE_INT)
        shape = self.shape
        minimum = 2**self.J + 1
        if (
            not isinstance(shape, (tuple, list))
            or len(shape) != 2
            or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in shape)
            or min(shape) < minimum
        ):
            raise ParameterError(
                f"The 'shape' parameter of {owner} must be a pair of ints (height, width), each at least "
                f"2**J + 1 = {minimum}. Got {shape!r} instead.",
                param="shape",
            )
        return int(shape[0]), int(shape[1])

    def fit(self, X: Any = None, y: Any = None) -> ScatteringFeatures:
        """Build the filter bank; ``X``, if given, is only checked for its image shape. Return self."""
        H, W = self._validate()
        if X is not None:
            self._as_images(X, (H, W))
        M, N = _padded_size(H, self.J), _padded_size(W, self.J)
        top, left = (M - H) // 2, (N - W) // 2
        self._pads = (left, N - W - left, top, M - H - top)
        self._psi, self._phi = _filter_bank(M, N, self.J, self.L)
        self._fitted_params = (self.J, self.L, (H, W))
        self.n_channels_ = n_scattering_channels(self.J, self.L)
        self.output_shape_ = (self.n_channels_, H // 2**self.J, W // 2**self.J)
        return self

    def _as_images(self, X: Any, hw: tuple[int, int]) -> torch.Tensor:
        owner = type(self).__name__
        t = X.detach().cpu() if isinstance(X, torch.Tensor) else torch.from_numpy(np.asarray(X))
        if t.ndim == 4 and t.shape[1] == 1:
            t = t[:, 0]
        if t.ndim != 3 or tuple(t.shape[1:]) != hw:
            raise ParameterError(
                f"The 'X' parameter of {owner} must be an array of images of shape (N, {hw[0]}, {hw[1]}) or "
                f"(N, 1, {hw[0]}, {hw[1]}). Got shape {tuple(t.shape)} instead.",
                param="X",
            )
        if not (t.is_floating_point() or t.dtype in (torch.uint8, torch.int16, torch.int32, torch.int64)):
            raise ParameterError(
                f"The 'X' parameter of {owner} must hold real numbers. Got dtype {t.dtype} instead.",
                param="X",
            )
        return t.to(torch.float32)

    def transform(self, X: Any) -> np.ndarray:
        """Scattering features of images ``X`` (numpy array or tensor, ``(N, H, W)`` or ``(N, 1, H, W)``).

        Returns
        -------
        numpy.ndarray of float32, shape ``(N, n_channels_, H // 2^J, W // 2^J)``
        """
        if not hasattr(self, "_fitted_params"):
            raise AttributeError(f"This {type(self).__name__} is not fitted yet; call fit first.")
        hw = self._validate()
        if self._fitted_params != (self.J, self.L, hw):
            raise AttributeError(
                f"The parameters of this {type(self).__name__} changed after fit; call fit again."
            )
        images = self._as_images(X, hw)
        out = np.empty((len(images), *self.output_shape_), dtype=np.float32)
        with torch.no_grad():
            for start in range(0, len(images), int(self.batch_size)):
                chunk = images[start : start + int(self.batch_size)]
                out[start : start + len(chunk)] = _scatter(
                    chunk, self.J, self.L, self._pads, self._psi, self._phi
                ).numpy()
        return out

    def fit_transform(self, X: Any, y: Any = None) -> np.ndarray:
        """``fit(X).transform(X)``."""
        return self.fit(X).transform(X)

    def __repr__(self) -> str:
        return f"ScatteringFeatures(J={self.J!r}, L={self.L!r}, shape={self.shape!r}, batch_size={self.batch_size!r})"
