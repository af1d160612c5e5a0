import numpy as np
import pytest
import torch

from ppml._rng import as_generator, secure_generator, spawn, torch_generator


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
