import math

import numpy as np
import pytest
import torch
from scipy import stats

import ppml._rng as rng_module
from ppml._rng import as_generator, fill_gaussian_, secure_generator, spawn, torch_generator


def test_same_seed_same_stream_and_spawned_children_differ():
    a, b = as_generator(7), as_generator(7)
    assert np.array_equal(a.random(5), b.random(5))
    kids = spawn(as_generator(1), 3)
    draws = [k.random() for k in kids]
    assert len(set(draws)) == 3
    again = [k.random() for k in spawn(as_generator(1), 3)]
    assert np.allclose(draws, again)


def test_none_seed_refused_and_generator_passthrough():
    with pytest.raises(ValueError, match="explicit seed"):
        as_generator(None)
    g = np.random.default_rng(0)
    assert as_generator(g) is g


def test_torch_generator_is_seeded_from_numpy():
    t1 = torch.randn(4, generator=torch_generator(as_generator(3)))
    t2 = torch.randn(4, generator=torch_generator(as_generator(3)))
    assert torch.equal(t1, t2)


def test_secure_generator_is_not_reproducible():
    assert secure_generator().integers(0, 2**62) != secure_generator().integers(0, 2**62)


# -- fill_gaussian_ (plain-mode DP noise) -----------------------------------------------------------


def test_fill_gaussian_same_seed_same_values_and_seeds_differ():
    a = fill_gaussian_(torch.empty(10_001), 1.0, 7)
    b = fill_gaussian_(torch.empty(10_001), 1.0, 7)
    c = fill_gaussian_(torch.empty(10_001), 1.0, 8)
    assert torch.equal(a, b)
    assert not torch.isclose(a, c).any()  # unrelated streams: no coordinate agrees
    assert torch.allclose(fill_gaussian_(torch.empty(10_001), 2.5, 7), a * 2.5, rtol=1e-6, atol=1e-6)


def test_fill_gaussian_known_values_pin_the_stream():
    """The stream is part of the output's definition (experiments rerun with the same seed must match)."""
    x = fill_gaussian_(torch.empty(5), 1.0, 0)
    assert x.tolist() == pytest.approx(
        [1.4431660175, -1.0706444979, 0.0916490033, 0.2766945064, -0.8438631296], rel=1e-5, abs=1e-6
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fill_gaussian_does_not_depend_on_chunking_or_threads(monkeypatch, dtype):
    n = 3 * 1000 + 1
    ref = fill_gaussian_(torch.empty(n, dtype=dtype), 1.0, 3)
    for chunk in (4, 64, 1 << 10):
        monkeypatch.setattr(rng_module, "GAUSSIAN_CHUNK", chunk)
        assert torch.equal(fill_gaussian_(torch.empty(n, dtype=dtype), 1.0, 3), ref)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert torch.equal(fill_gaussian_(torch.empty(n, dtype=dtype), 1.0, 3), ref)
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fill_gaussian_ks_accepts_the_scale_and_rejects_two_thirds_and_three_halves(dtype):
    sd = 0.7
    x = fill_gaussian_(torch.empty(40_001, dtype=dtype), sd, 11).numpy()
    assert stats.kstest(x, "norm", args=(0, sd)).pvalue > 1e-3
    assert stats.kstest(x, "norm", args=(0, sd * 2 / 3)).pvalue < 1e-6
    assert stats.kstest(x, "norm", args=(0, sd * 3 / 2)).pvalue < 1e-6


def test_fill_gaussian_pairs_are_independent_normals():
    """Box-Muller pairs (out[j], out[p + j]) share one radius: their squared norm must be chi-square with
    2 degrees of freedom, and the two halves and neighbours must be uncorrelated."""
    n = 60_000
    p = n // 2
    x = fill_gaussian_(torch.empty(n, dtype=torch.float64), 1.0, 5).numpy()
    r2 = x[:p] ** 2 + x[p:] ** 2
    assert stats.kstest(r2, "chi2", args=(2,)).pvalue > 1e-3
    assert stats.kstest(r2 * 1.2, "chi2", args=(2,)).pvalue < 1e-6  # a wrong radius scale is caught
    bound = 4.5 / math.sqrt(p)  # about 4.5 standard errors of a correlation
    assert abs(np.corrcoef(x[:p], x[p:])[0, 1]) < bound
    assert abs(np.corrcoef(x[:-1], x[1:])[0, 1]) < bound
    # The angle is uniform: the sign pattern of the pair is balanced over the four quadrants.
    quad = (x[:p] > 0).astype(int) * 2 + (x[p:] > 0)
    assert stats.chisquare(np.bincount(quad, minlength=4)).pvalue > 1e-3


def test_fill_gaussian_tails_end_where_the_uniforms_resolution_ends():
    x = fill_gaussian_(torch.empty(400_000), 1.0, 2)
    assert x.abs().max() <= math.sqrt(-2 * math.log(2.0**-24)) + 1e-4
    frac = float((x.abs() > 3).double().mean())
    assert abs(frac - 2 * stats.norm.sf(3)) < 5 * math.sqrt(2 * stats.norm.sf(3) / len(x))


@pytest.mark.parametrize("n", [0, 1, 2, 3, 17])
def test_fill_gaussian_small_and_odd_sizes(n):
    x = fill_gaussian_(torch.full((n,), float("nan")), 1.0, 1)
    assert x.shape == (n,) and torch.isfinite(x).all()
    if n >= 3:  # the prefix is not the same draw as a shorter tensor's: sizes define the pairing
        assert len(set(x.tolist())) == n


def test_fill_gaussian_other_layouts_and_dtypes_fill_in_place():
    base = torch.zeros(6, 8)
    view = base.t()  # not contiguous
    out = fill_gaussian_(view, 1.0, 4)
    assert out is view and torch.isfinite(base).all() and (base != 0).all()
    half = fill_gaussian_(torch.zeros(100, dtype=torch.bfloat16), 1.0, 4)
    assert half.dtype == torch.bfloat16 and (half != 0).sum() > 90
    assert torch.equal(fill_gaussian_(torch.empty(3, 4), 0.0, 4), torch.zeros(3, 4))
