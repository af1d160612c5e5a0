"""PSNR and SSIM: values that follow from their definitions, and the properties SSIM must have."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.datasets import load_digits

from ppml._validation import ParameterError
from ppml.attacks.image_metrics import gaussian_window, mse, psnr, ssim


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """A structured 16x16 image in [0, 1] (a scikit-learn digit upsampled 2x)."""
    d = load_digits().images[3] / 16.0
    return np.kron(d, np.ones((2, 2)))


def test_psnr_known_value_and_identity():
    x = np.zeros((4, 4))
    assert mse(x, x + 0.1) == pytest.approx(0.01)
    assert psnr(x, x + 0.1, data_range=1.0) == pytest.approx(20.0)
    assert psnr(x, x + 25.5, data_range=255.0) == pytest.approx(20.0)
    assert psnr(x, x, data_range=1.0) == math.inf


def test_psnr_refuses_bad_input():
    with pytest.raises(ParameterError, match="'data_range' parameter of psnr"):
        psnr(np.zeros(3), np.ones(3), data_range=0.0)
    with pytest.raises(ValueError, match="different shapes"):
        psnr(np.zeros(3), np.ones(4), data_range=1.0)


def test_window_is_normalised_gaussian():
    w = gaussian_window(11, 1.5)
    assert w.sum() == pytest.approx(1.0)
    assert np.allclose(w, w[::-1]) and int(np.argmax(w)) == 5
    assert w[5] / w[6] == pytest.approx(math.exp(1 / (2 * 1.5**2)))
    with pytest.raises(ParameterError, match="odd int"):
        gaussian_window(10)


def test_ssim_identity_symmetry_and_range(image):
    rng = np.random.default_rng(0)
    noisy = np.clip(image + rng.normal(0, 0.2, image.shape), 0, 1)
    assert ssim(image, image, data_range=1.0) == pytest.approx(1.0, abs=1e-12)
    s = ssim(image, noisy, data_range=1.0)
    assert s == pytest.approx(ssim(noisy, image, data_range=1.0), abs=1e-12)
    assert -1.0 <= s < 0.9
    # The inverted image has anti-correlated structure: negative SSIM.
    assert ssim(image, 1.0 - image, data_range=1.0) < 0


def test_ssim_decreases_with_noise(image):
    rng = np.random.default_rng(1)
    base = rng.normal(size=image.shape)
    values = [ssim(image, image + s * base, data_range=1.0) for s in (0.0, 0.02, 0.05, 0.1, 0.3, 1.0)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))
    assert values[0] == pytest.approx(1.0) and values[-1] < 0.2


def test_ssim_of_constant_images_is_the_luminance_term():
    # No structure: variances and covariance are 0, so SSIM = (2ab + C1) / (a^2 + b^2 + C1).
    a, b, c1 = 0.3, 0.7, (0.01 * 1.0) ** 2
    got = ssim(np.full((12, 12), a), np.full((12, 12), b), data_range=1.0)
    assert got == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-9)


def test_ssim_channels_average_and_shape_checks(image):
    rng = np.random.default_rng(2)
    other = np.clip(image + rng.normal(0, 0.1, image.shape), 0, 1)
    two = np.stack([image, other])
    two_b = np.stack([other, image])
    per_channel = [ssim(image, other, data_range=1.0), ssim(other, image, data_range=1.0)]
    assert ssim(two, two_b, data_range=1.0) == pytest.approx(np.mean(per_channel))
    with pytest.raises(ValueError, match="smaller than the 11 x 11 window"):
        ssim(np.zeros((8, 8)), np.zeros((8, 8)), data_range=1.0)
    assert ssim(np.zeros((8, 8)), np.zeros((8, 8)), data_range=1.0, win_size=7) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"\(H, W\) or \(C, H, W\)"):
        ssim(np.zeros(64), np.zeros(64), data_range=1.0)
    with pytest.raises(ParameterError, match="'data_range' parameter of ssim"):
        ssim(image, image, data_range=-1.0)
