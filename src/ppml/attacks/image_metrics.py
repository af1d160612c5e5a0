"""Image similarity for scoring reconstructions: PSNR and SSIM.

* :func:`mse` and :func:`psnr`: peak signal-to-noise ratio ``10 log10(data_range**2 / MSE)`` in
  decibels, the headline number of the gradient-inversion papers (Zhu et al. 2019; Geiping et al.
  2020).
* :func:`ssim`: the structural similarity index of Wang, Bovik, Sheikh and Simoncelli, "Image quality
  assessment: from error visibility to structural similarity", IEEE TIP 13(4), 2004, with the paper's
  11 x 11 circular-symmetric Gaussian window (standard deviation 1.5 pixels) and constants
  ``K1 = 0.01``, ``K2 = 0.03``. Local means, variances and the covariance are Gaussian-weighted
  averages (no sample-size correction, as in the paper); the index is the mean of the SSIM map over
  the pixels whose window lies wholly inside the image, and over the channels of a multi-channel
  image.

Everything is computed in float64 with numpy/scipy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.ndimage import correlate1d

from .._validation import POSITIVE_FLOAT, Interval, ParameterError, check_param

__all__ = ["mse", "psnr", "ssim", "gaussian_window"]

_ODD_WIN = Interval(int, 3, None, "left")


def _as_float64(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):  # torch tensor
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def _pair(x: Any, y: Any, owner: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_float64(x), _as_float64(y)
    if a.shape != b.shape:
        raise ValueError(f"{owner}: the two images have different shapes {a.shape} and {b.shape}.")
    if a.size == 0:
        raise ValueError(f"{owner}: the images are empty.")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError(f"{owner}: the images hold NaN or infinite values.")
    return a, b


def mse(x: Any, y: Any) -> float:
    """Mean squared error between two arrays of the same shape (float64)."""
    a, b = _pair(x, y, "mse")
    return float(np.mean((a - b) ** 2))


def psnr(x: Any, y: Any, *, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(data_range**2 / MSE)``.

    Parameters
    ----------
    x, y : array-like of the same shape
        The reference and the reconstruction (any shape: one image, a batch, a feature vector).
    data_range : float > 0
        The range of the pixel values (1 for images in [0, 1], 255 for 8-bit images).

    Returns
    -------
    float
        ``inf`` when the arrays are identical.
    """
    check_param("data_range", data_range, "psnr", POSITIVE_FLOAT)
    err = mse(x, y)
    if err == 0.0:
        return math.inf
    return float(10.0 * math.log10(float(data_range) ** 2 / err))


def gaussian_window(win_size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """The normalised 1-D Gaussian weights of a ``win_size`` window (the 2-D window is their outer product)."""
    check_param("win_size", win_size, "gaussian_window", _ODD_WIN)
    check_param("sigma", sigma, "gaussian_window", POSITIVE_FLOAT)
    if win_size % 2 == 0:
        raise ParameterError(
            f"The 'win_size' parameter of gaussian_window must be an odd int. Got {win_size!r} instead.",
            param="win_size",
        )
    r = np.arange(win_size, dtype=np.float64) - (win_size - 1) / 2.0
    w = np.exp(-(r**2) / (2.0 * float(sigma) ** 2))
    return w / w.sum()


def _filter_valid(img: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Gaussian-weighted local average over the last two axes, keeping only fully covered pixels."""
    out = correlate1d(img, w, axis=-2, mode="reflect")
    out = correlate1d(out, w, axis=-1, mode="reflect")
    pad = (w.size - 1) // 2
    return out[..., pad : img.shape[-2] - pad, pad : img.shape[-1] - pad]


def ssim(
    x: Any,
    y: Any,
    *,
    data_range: float,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> float:
    """Structural similarity index (Wang et al. 2004) with a Gaussian window.

    Parameters
    ----------
    x, y : array-like of shape (H, W) or (C, H, W)
        Two images of the same shape; for several channels the index is averaged over them.
    data_range : float > 0
        The range of the pixel values ``L``; the stabilising constants are ``(k1 L)**2`` and ``(k2 L)**2``.
    win_size : int, odd, default 11
        Side of the Gaussian window; both image sides must be at least this long.
    sigma : float, default 1.5
        Standard deviation of the window in pixels.
    k1, k2 : float
        The constants of the paper.

    Returns
    -------
    float
        In ``[-1, 1]``; 1 exactly when the images are identical.
    """
    owner = "ssim"
    check_param("data_range", data_range, owner, POSITIVE_FLOAT)
    check_param("k1", k1, owner, POSITIVE_FLOAT)
    check_param("k2", k2, owner, POSITIVE_FLOAT)
    a, b = _pair(x, y, owner)
    if a.ndim not in (2, 3):
        raise ValueError(f"{owner}: images must have shape (H, W) or (C, H, W); got {a.shape}.")
    w = gaussian_window(win_size, sigma)
    if min(a.shape[-2:]) < win_size:
        raise ValueError(
            f"{owner}: the images ({a.shape[-2]} x {a.shape[-1]}) are smaller than the {win_size} x "
            f"{win_size} window; pass a smaller odd win_size."
        )
    c1 = (float(k1) * float(data_range)) ** 2
    c2 = (float(k2) * float(data_range)) ** 2
    mu_a, mu_b = _filter_valid(a, w), _filter_valid(b, w)
    var_a = _filter_valid(a * a, w) - mu_a**2
    var_b = _filter_valid(b * b, w) - mu_b**2
    cov = _filter_valid(a * b, w) - mu_a * mu_b
    num = (2.0 * mu_a * mu_b + c1) * (2.0 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float(np.mean(num / den))
