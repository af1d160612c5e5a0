"""ScatteringFeatures: shapes, reference values, a direct computation, invariances, validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from ppml._validation import ParameterError
from ppml.features import ScatteringFeatures, n_scattering_channels
from ppml.features.scattering import _filter_bank, _padded_size


def _pattern(h: int = 28, w: int = 28) -> np.ndarray:
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return (np.sin(0.3 * i) * np.cos(0.2 * j) + ((i * j) % 7) / 7.0).astype(np.float32)


@pytest.fixture(scope="module")
def digits28() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits blown up 3x and padded to 28x28 (first 40)."""
    d = load_digits()
    X = np.kron(d.images[:40] / 16.0, np.ones((3, 3)))
    return np.pad(X, ((0, 0), (2, 2), (2, 2))).astype(np.float32), d.target[:40]


@pytest.fixture(scope="module")
def mnist_sf() -> ScatteringFeatures:
    return ScatteringFeatures().fit()


def test_channel_count_formula() -> None:
    assert n_scattering_channels(2, 8) == 81
    assert n_scattering_channels(3, 4) == 1 + 12 + 16 * 3
    assert n_scattering_channels(1, 8) == 9


@pytest.mark.parametrize("as_torch", [False, True])
@pytest.mark.parametrize("with_channel", [False, True])
def test_output_shape_and_dtype(mnist_sf: ScatteringFeatures, as_torch: bool, with_channel: bool) -> None:
    X = np.stack([_pattern(), _pattern().T, np.zeros((28, 28), np.float32)])
    if with_channel:
        X = X[:, None]
    out = mnist_sf.transform(torch.from_numpy(X) if as_torch else X)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    assert out.shape == (3, 81, 7, 7) == (3, *mnist_sf.output_shape_)
    assert mnist_sf.n_channels_ == 81


def test_other_sizes_and_scales() -> None:
    X = np.random.default_rng(0).random((2, 20, 26)).astype(np.float32)
    out = ScatteringFeatures(J=3, L=4, shape=(20, 26)).fit_transform(X)
    assert out.shape == (2, 1 + 12 + 48, 2, 3)
    out = ScatteringFeatures(J=1, L=6, shape=(9, 11)).fit_transform(X[:, :9, :11])
    assert out.shape == (2, 7, 4, 5)


def test_matches_kymatio_reference_values(mnist_sf: ScatteringFeatures) -> None:
    # Kymatio 0.3.0 (ScatteringTorch2D(J=2, shape=(28, 28), L=8)) on _pattern(): spatial means of
    # channels [0, 1, 4, 8, 12, 15, 16, 17, 30, 47, 63, 80] and coefficients [c, 3, 2] of channels
    # [0, 9, 40, 80]. Kymatio normalises its Gabor filters with 3.1415 for pi; the cascade of up to
    # three filters leaves a relative difference of about 9e-5.
    means = [0.355011, 0.064644, 0.0789093, 0.0746548, 0.0819761, 0.0533317, 0.0689042]
    means += [0.00896768, 0.00697782, 0.00383715, 0.00489755, 0.0310249]
    points = [0.371319, 0.0651861, 0.0108774, 0.0346048]
    out = mnist_sf.transform(_pattern()[None])[0]
    ch = [0, 1, 4, 8, 12, 15, 16, 17, 30, 47, 63, 80]
    np.testing.assert_allclose(out[ch].mean(axis=(1, 2)), means, rtol=2e-4)
    np.testing.assert_allclose(out[[0, 9, 40, 80], 3, 2], points, rtol=2e-4)


def _circular_conv(x: np.ndarray, f: np.ndarray) -> np.ndarray:
    """``y[u] = sum_v x[v] f[u - v]`` (indices mod the size), one shift at a time."""
    y = np.zeros(x.shape, dtype=np.complex128)
    for a in range(x.shape[0]):
        for b in range(x.shape[1]):
            y += x[a, b] * np.roll(f, (a, b), axis=(0, 1))
    return y


def test_agrees_with_direct_spatial_convolution() -> None:
    # J = 2 on a 10x10 image: order 0 and the order-1 channels of scale j1 = 0 need no intermediate
    # subsampling, so they are (|x_pad * psi| * phi)[::4, ::4] with the border cropped.
    J, L, H = 2, 4, 10
    x = _pattern(H, H) - 0.3
    M = _padded_size(H, J)
    p = (M - H) // 2
    xp = np.pad(x.astype(np.float64), ((p, M - H - p), (p, M - H - p)), mode="reflect")
    psi, phi = _filter_bank(M, M, J, L)
    phi_space = np.fft.ifft2(phi[0].double().numpy())
    expected = [np.real(_circular_conv(xp, phi_space))]
    for t in range(L):
        u1 = np.abs(_circular_conv(xp, np.fft.ifft2(psi[t][0].double().numpy())))
        expected.append(np.real(_circular_conv(u1, phi_space)))
    direct = np.stack(expected)[:, :: 2**J, :: 2**J][:, 1:-1, 1:-1]
    out = ScatteringFeatures(J=J, L=L, shape=(H, H)).fit_transform(x[None])[0]
    np.testing.assert_allclose(out[: 1 + L], direct, rtol=1e-4, atol=1e-5)


def test_constant_image_energy_goes_to_the_low_pass(mnist_sf: ScatteringFeatures) -> None:
    # phi has unit mass and every Morlet wavelet has zero mean: a constant image keeps its value in
    # channel 0 and has (almost) nothing in the wavelet channels.
    out = mnist_sf.transform(np.full((1, 28, 28), 0.7, np.float32))[0]
    np.testing.assert_allclose(out[0], 0.7, rtol=1e-3)
    assert np.abs(out[1:]).max() < 1e-3
    textured = mnist_sf.transform(_pattern()[None])[0]
    assert np.abs(textured[1:]).max() > 100 * np.abs(out[1:]).max()


def test_deterministic_and_batch_size_free(digits28: tuple[np.ndarray, np.ndarray]) -> None:
    X = digits28[0][:10]
    a = ScatteringFeatures(batch_size=3).fit().transform(X)
    b = ScatteringFeatures(batch_size=3).fit().transform(X)
    c = ScatteringFeatures(batch_size=10).fit().transform(X)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-7)
    # one image's features do not depend on the other images of its batch (a per-example map)
    np.testing.assert_allclose(ScatteringFeatures().fit().transform(X[4:5])[0], a[4], rtol=1e-5, atol=1e-7)


def test_small_translation_stability(
    mnist_sf: ScatteringFeatures, digits28: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = digits28
    scat, pixel = [], []
    for axis in (1, 2):  # one pixel down, one pixel right (the borders are zero)
        shifted = np.roll(X, 1, axis=axis)
        S, S_shift = mnist_sf.transform(X), mnist_sf.transform(shifted)
        for i in range(10):
            j = int(np.flatnonzero(y != y[i])[0])  # an image of another digit
            scat.append(np.linalg.norm(S[i] - S_shift[i]) / np.linalg.norm(S[i] - S[j]))
            pixel.append(np.linalg.norm(X[i] - shifted[i]) / np.linalg.norm(X[i] - X[j]))
    scat_r, pixel_r = np.array(scat), np.array(pixel)
    # the shifted image is much closer than another digit (measured: 0.20-0.45)...
    assert scat_r.max() < 0.5
    # ...and closer, relative to another digit, than in pixel space (measured: 0.55 x on average)
    assert np.all(scat_r < 0.8 * pixel_r)
    assert scat_r.mean() < 0.65 * pixel_r.mean()


@pytest.mark.parametrize(
    ("kwargs", "param", "text"),
    [
        ({"J": 0}, "J", "an int in the range [1, 8]. Got 0 instead."),
        ({"J": 2.0}, "J", "an int in the range [1, 8]. Got 2.0 instead."),
        ({"L": 0}, "L", "an int in the range [1, 32]. Got 0 instead."),
        ({"batch_size": 0}, "batch_size", "an int in the range [1, inf). Got 0 instead."),
        ({"shape": (4, 28)}, "shape", "each at least 2**J + 1 = 5. Got (4, 28) instead."),
        ({"shape": 28}, "shape", "a pair of ints (height, width)"),
    ],
)
def test_bad_parameters_raise_parameter_error(kwargs: dict, param: str, text: str) -> None:
    sf = ScatteringFeatures(**kwargs)  # the constructor only stores
    with pytest.raises(ParameterError, match=f"The '{param}' parameter of ScatteringFeatures must be") as err:
        sf.fit()
    assert text in str(err.value)
    assert err.value.param == param


def test_bad_inputs(mnist_sf: ScatteringFeatures) -> None:
    with pytest.raises(
        ParameterError, match=r"The 'X' parameter of ScatteringFeatures must be .* Got shape \(2, 27, 28\)"
    ):
        mnist_sf.transform(np.zeros((2, 27, 28), np.float32))
    with pytest.raises(ParameterError, match="Got shape"):
        mnist_sf.transform(np.zeros((2, 3, 28, 28), np.float32))
    with pytest.raises(AttributeError, match="not fitted yet"):
        ScatteringFeatures().transform(np.zeros((1, 28, 28)))
    sf = ScatteringFeatures().fit()
    sf.J = 3
    with pytest.raises(AttributeError, match="call fit again"):
        sf.transform(np.zeros((1, 28, 28)))


def test_agrees_with_kymatio_when_installed() -> None:
    # kymatio.torch (its documented entry point) needs scipy.special.sph_harm, gone in SciPy 1.17;
    # the 2D frontend module imports without it.
    frontend = pytest.importorskip("kymatio.scattering2d.frontend.torch_frontend")
    X = np.random.default_rng(1).random((4, 20, 24)).astype(np.float32)
    ref = frontend.ScatteringTorch2D(J=2, shape=(20, 24), L=6)(torch.from_numpy(X)).numpy()
    out = ScatteringFeatures(J=2, L=6, shape=(20, 24)).fit_transform(X)
    np.testing.assert_allclose(out, ref, rtol=2e-4, atol=2e-4 * np.abs(ref).max())
