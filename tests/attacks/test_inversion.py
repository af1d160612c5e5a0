"""MI-Face model inversion on small synthetic prototype images; threat-model refusals; the scorer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ppml._validation import ParameterError
from ppml.attacks.base import Access, AttackResult, ThreatModel, ThreatModelError
from ppml.attacks.inversion import (
    DenoiseSharpen,
    IdentityEvaluator,
    ModelInversion,
    PredictionAPI,
    normalized_cross_correlation,
    score_inversion,
    zscore_images,
)
from ppml.models.zoo import build_model
from ppml.train.loop import TrainConfig, train_epochs

SHAPE = (1, 8, 8)
K = 3
WHITE_BOX = ThreatModel.of(Access.PARAMETERS, adversary="holder of the model file")
BLACK_BOX = ThreatModel.of(Access.CONFIDENCES, adversary="API client")


def _prototypes() -> np.ndarray:
    """Three well-separated 8x8 'faces': a bright left half, a bright top half, a bright centre square."""
    p = np.zeros((K, *SHAPE), dtype=np.float32)
    p[0, 0, :, :4] = 1.0
    p[1, 0, :4, :] = 1.0
    p[2, 0, 2:6, 2:6] = 1.0
    return p


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    protos = _prototypes()
    y = np.repeat(np.arange(K), 40)
    X = np.clip(protos[y] + rng.normal(0, 0.25, size=(len(y), *SHAPE)), 0, 1).astype(np.float32)
    return X, y, protos


@pytest.fixture(scope="module")
def model(data):
    torch.set_num_threads(1)
    X, y, _ = data
    m = build_model("logistic", SHAPE, K, seed=0)
    train_epochs(m, X, y, TrainConfig(epochs=60, batch_size=20, lr=0.5), np.random.default_rng(0))
    return m


def test_white_box_recovers_each_prototype(data, model):
    _, _, protos = data
    api = PredictionAPI(model, SHAPE, exposes=("confidences", "parameters"))
    res = ModelInversion(WHITE_BOX, alpha=2000, beta=50, gamma=0.99, lr=0.1).run(api)
    assert res.guesses.shape == (K, *SHAPE)
    assert res.details["classes"] == [0, 1, 2]
    assert (res.scores >= 0.99).all() and res.details["stopped"] == ["gamma"] * K
    ncc = normalized_cross_correlation(res.guesses, protos)
    # each reconstruction is closest to its own class's prototype, clearly
    assert (ncc.argmax(axis=1) == np.arange(K)).all()
    assert (np.diag(ncc) > 0.5).all()
    assert res.details["queries"] == 0  # the white box never queried the API


def test_stops_after_beta_steps_without_improvement(data, model):
    api = PredictionAPI(model, SHAPE, exposes=("parameters",))
    # bounds that pin every pixel at 0: no step can change the cost
    res = ModelInversion(WHITE_BOX, alpha=500, beta=5, gamma=0.999, bounds=(0.0, 1e-9)).run(api, classes=[1])
    assert res.details["stopped"] == ["beta"]
    assert res.details["steps"][0] <= 6


def test_estimated_gradient_black_box_recovers_and_rounding_defeats_it(data, model):
    _, _, protos = data
    kwargs = dict(
        gradient="estimated", alpha=300, beta=40, gamma=0.9, lr=0.5, directions=20, sigma=1e-4, seed=3
    )
    api = PredictionAPI(model, SHAPE)  # confidences only
    res = ModelInversion(BLACK_BOX, **kwargs).run(api)
    assert res.details["queries"] > 0
    ncc = normalized_cross_correlation(res.guesses, protos)
    assert (ncc.argmax(axis=1) == np.arange(K)).all()
    assert res.scores.mean() > 0.8

    rounded = PredictionAPI(model, SHAPE, decimals=2)
    res_r = ModelInversion(BLACK_BOX, **kwargs).run(rounded)
    # probes 1e-4 apart change no rounded confidence: the estimate is zero and the image never moves
    assert np.allclose(res_r.guesses, 0.0)
    assert res_r.details["stopped"] == ["beta"] * K
    assert res_r.scores.max() < 0.5


def test_white_box_is_unaffected_by_rounded_confidences(data, model):
    kwargs = dict(alpha=300, beta=50, gamma=0.95, lr=0.1)
    plain = ModelInversion(WHITE_BOX, **kwargs).run(PredictionAPI(model, SHAPE, exposes=("parameters",)))
    rounded_api = PredictionAPI(model, SHAPE, exposes=("parameters", "confidences"), decimals=1)
    rounded = ModelInversion(WHITE_BOX, **kwargs).run(rounded_api)
    np.testing.assert_array_equal(plain.guesses, rounded.guesses)


def test_threat_model_refusals(model):
    with pytest.raises(
        ThreatModelError, match="needs parameters but the threat model grants only confidences"
    ):
        ModelInversion(BLACK_BOX)  # white box by default
    with pytest.raises(ThreatModelError, match="needs confidences but the threat model grants only labels"):
        ModelInversion(ThreatModel.of(Access.LABELS), gradient="estimated")
    label_api = PredictionAPI.label_only(model, SHAPE)
    assert label_api.labels(np.zeros((2, *SHAPE), dtype=np.float32)).shape == (2,)
    with pytest.raises(ThreatModelError, match="needs confidences but the target exposes only labels"):
        ModelInversion(BLACK_BOX, gradient="estimated").run(label_api)
    with pytest.raises(ThreatModelError, match="needs parameters but the target exposes only confidences"):
        ModelInversion(WHITE_BOX).run(PredictionAPI(model, SHAPE))
    with pytest.raises(ThreatModelError):
        label_api.confidences(np.zeros((1, *SHAPE), dtype=np.float32))


def test_start_from_mean_needs_auxiliary_images(data, model):
    X, _, _ = data
    atk = ModelInversion(WHITE_BOX, start="mean", alpha=1)
    api = PredictionAPI(model, SHAPE, exposes=("parameters",))
    with pytest.raises(ValueError, match="must be fit"):
        atk.run(api)
    with pytest.raises(ValueError, match="needs auxiliary images"):
        atk.fit(None)
    res = atk.fit(X).run(api, classes=[0])
    # one step from the mean image, not from zeros
    assert abs(res.guesses.mean() - X.mean()) < 0.05


def test_parameter_validation_messages():
    with pytest.raises(ParameterError, match="The 'gradient' parameter of ModelInversion must be one of"):
        ModelInversion(WHITE_BOX, gradient="numeric")
    with pytest.raises(
        ParameterError, match=r"The 'gamma' parameter of ModelInversion must be a float in the range \[0, 1\]"
    ):
        ModelInversion(WHITE_BOX, gamma=1.5)
    with pytest.raises(ParameterError, match="'decimals' parameter of PredictionAPI"):
        PredictionAPI(torch.nn.Linear(2, 2), (2,), decimals=-1)


def test_denoise_sharpen_keeps_constants_and_smooths_noise():
    proc = DenoiseSharpen(sigma=1.0, amount=0.5)
    const = torch.full((2, 1, 10, 10), 0.3)
    torch.testing.assert_close(proc(const), const)
    noise = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 1, 32, 32)).astype(np.float32))
    assert float(proc(noise).std()) < 0.7 * float(noise.std())


def test_scorer_is_invariant_to_brightness_and_scale(data, model):
    X, y, _ = data
    api = PredictionAPI(model, SHAPE, exposes=("parameters",))
    res = ModelInversion(WHITE_BOX, alpha=500, beta=50, gamma=0.99).run(api)
    ev = IdentityEvaluator(n_components=10).fit(X, y)
    scored = score_inversion(res, X, y, evaluator=ev)
    assert scored.metrics["identification_rate"] == 1.0
    assert scored.metrics["pixel_identification_rate"] == 1.0
    assert scored.metrics["ncc_mean_face"] > scored.metrics["ncc_other_mean_faces"] + 0.5
    brighter = AttackResult(
        res.attack, res.threat_model, res.scores, 7.0 * res.guesses + 0.4, {}, dict(res.details)
    )
    scored_b = score_inversion(brighter, X, y, evaluator=ev)
    for key in (
        "identification_rate",
        "identification_top5",
        "ncc_mean_face",
        "ncc_other_mean_faces",
        "pixel_identification_rate",
        "ncc_nearest_train",
    ):
        assert scored_b.metrics[key] == pytest.approx(scored.metrics[key], abs=1e-6), key
    np.testing.assert_allclose(zscore_images(brighter.guesses), zscore_images(res.guesses), atol=1e-5)


def test_scorer_gives_chance_for_unrelated_images(data):
    X, y, _ = data
    rng = np.random.default_rng(1)
    noise = rng.normal(size=(K, *SHAPE))
    res = AttackResult("noise", WHITE_BOX, None, noise, {}, {"classes": [0, 1, 2]})
    scored = score_inversion(res, X, y, evaluator=IdentityEvaluator(n_components=10).fit(X, y))
    assert scored.metrics["ncc_mean_face"] < 0.4
    assert scored.metrics["chance"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="do not match"):
        score_inversion(res, X[:, :, :4], y)
