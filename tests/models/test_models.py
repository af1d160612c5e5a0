import pytest
import torch

from ppml import ParameterError
from ppml.models import build_model, get_flat, num_bytes, num_parameters, set_flat


def test_mcmahan_architectures_have_the_papers_parameter_counts():
    # McMahan et al. 2017: 2NN has 199,210 parameters, the CNN 1,663,370.
    assert num_parameters(build_model("mlp", (1, 28, 28), 10, hidden=(200, 200))) == 199_210
    assert num_parameters(build_model("cnn", (1, 28, 28), 10)) == 1_663_370


def test_seeded_init_is_reproducible_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a = build_model("mlp", (8,), 3, seed=5)
    b = build_model("mlp", (8,), 3, seed=5)
    c = build_model("mlp", (8,), 3, seed=6)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(get_flat(a), get_flat(b))
    assert not torch.equal(get_flat(a), get_flat(c))


def test_flat_roundtrip_and_bytes():
    m = build_model("logistic", (5,), 3)
    v = torch.arange(num_parameters(m), dtype=torch.float32)
    set_flat(m, v)
    assert torch.equal(get_flat(m), v)
    assert num_bytes(m) == 4 * 18
    with pytest.raises(ValueError, match="18 parameters"):
        set_flat(m, torch.zeros(3))


def test_bad_names_and_cnn_on_tabular_are_refused():
    with pytest.raises(ParameterError, match="'name' parameter of build_model must be one of"):
        build_model("resnet", (5,), 3)
    with pytest.raises(ParameterError, match="image input"):
        build_model("cnn", (5,), 3)
