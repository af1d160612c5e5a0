import math
import re
import warnings

import numpy as np
import pytest
import torch

from ppml import ParameterError
from ppml.attacks.base import Access, ThreatModel, ThreatModelError
from ppml.attacks.defences import RoundedConfidences, secure_aggregate_view
from ppml.attacks.gradients import AnalyticFCInversion, ClientUpdate, simulate_client_update
from ppml.attacks.image_metrics import psnr
from ppml.attacks.label_only import LabelOnlyAttack
from ppml.attacks.lira import LiRA
from ppml.attacks.membership import (
    LossObservations,
    LossThresholdAttack,
    ModelAPI,
    membership_audit,
    run_membership_audit,
)
from ppml.attacks.shadow import ShadowModels
from ppml.dp.accounting import PrivacyAccountant, calibrate_noise_multiplier
from ppml.dp.dpsgd import DPSGD
from ppml.models import build_model
from ppml.train import TrainConfig, train_epochs

CONF = ThreatModel.of(Access.CONFIDENCES, Access.LOGITS, adversary="API client")
LABELS = ThreatModel.of(Access.LABELS, adversary="client of a top-1 label API")


def _blobs(n: int, seed: int, d: int = 20, classes: int = 4, noise: float = 0.25):
    """Noisy Gaussian blobs with label noise (memorised by an overfit model: the membership signal)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, d))
    y = rng.integers(0, classes, n)
    X = (centres[y] + 1.5 * rng.normal(size=(n, d))).astype(np.float32)
    flip = rng.random(n) < noise
    y = np.where(flip, rng.integers(0, classes, n), y).astype(np.int64)
    return X, y


@pytest.fixture(scope="module")
def world():
    torch.set_num_threads(1)
    X, y = _blobs(300, 0)
    is_member = np.zeros(len(y), bool)
    is_member[np.random.default_rng(1).choice(len(y), len(y) // 2, replace=False)] = True
    cfg = TrainConfig(epochs=40, batch_size=16, lr=0.05, momentum=0.5)
    target = build_model("mlp", (20,), 4, hidden=(64,), seed=7)
    train_epochs(target, X[is_member], y[is_member], cfg, np.random.default_rng(2))
    return X, y, is_member, cfg, target


# --------------------------------------------------------------------------- rounded confidences


def test_rounded_confidences_expose_exactly_rounded_vectors(world):
    X, y, _, _, target = world
    full = ModelAPI(target, Access.LOGITS)
    exact = full.confidences(X)
    for d in (0, 1, 2):
        api = RoundedConfidences(target, d)
        p = api.confidences(X)
        assert np.array_equal(p, np.round(exact, d))
        assert np.allclose(p * 10**d, np.round(p * 10**d))  # no more than d decimals
        assert np.abs(p - exact).max() <= 0.5 * 10**-d + 1e-12
        # the label is the model's top-1 (before rounding); the loss is what the rounded vector gives
        assert np.array_equal(api.labels(X), exact.argmax(1))
        expected = -np.log(np.maximum(p[np.arange(len(y)), y], np.finfo(np.float64).tiny))
        assert np.array_equal(api.loss(X, y), expected)
        assert api.exposes == frozenset({Access.CONFIDENCES, Access.LABELS, Access.LOSS})
    # 2 decimals really lose information: some distinct probability vectors become equal
    assert len(np.unique(RoundedConfidences(target, 1).confidences(X), axis=0)) < len(
        np.unique(exact, axis=0)
    )


def test_rounded_confidences_refuse_logits_and_bad_parameters(world):
    X, y, _, _, target = world
    api = RoundedConfidences(ModelAPI(target, Access.CONFIDENCES), 2)
    with pytest.raises(ThreatModelError, match="lira-online needs logits but the target exposes only"):
        api.logits(X, attack="lira-online")
    with pytest.raises(ParameterError, match="The 'decimals' parameter of RoundedConfidences must be"):
        RoundedConfidences(target, -1)
    with pytest.raises(ThreatModelError, match="RoundedConfidences needs confidences"):
        RoundedConfidences(ModelAPI(target, Access.LABELS), 2)


def test_lira_reads_rounded_confidences_and_loses_signal(world):
    X, y, m, cfg, target = world
    arch = build_model("mlp", (20,), 4, hidden=(64,), seed=0)
    shadows = ShadowModels(arch, cfg, 8, seed=3).fit((X, y))
    attack = LiRA(CONF, arch, cfg, n_shadows=8, fixed_variance=True, seed=0).fit(shadows)
    members, non = (X[m], y[m]), (X[~m], y[~m])
    exact = run_membership_audit(attack, target, members, non)
    api = RoundedConfidences(target, 0)
    rounded = run_membership_audit(attack, api, members, non)
    assert exact.details["observed"] == "logits" and rounded.details["observed"] == "confidences"
    assert api.n_queries_ == len(y)  # the attack queried the rounded API, not the model
    # with 0 decimals every probability is 0 or 1: much of LiRA's signal is gone
    assert exact.metrics["auc"] > 0.6
    assert rounded.metrics["auc"] < exact.metrics["auc"] - 0.03


# --------------------------------------------------------------------------- top-1 labels only


def test_label_only_api_refuses_confidence_attacks_and_runs_label_only(world):
    X, y, m, cfg, target = world
    api = ModelAPI(target, Access.LABELS)
    for method in (api.confidences, api.logits):
        with pytest.raises(ThreatModelError, match="needs .* but the target exposes only labels"):
            method(X)
    with pytest.raises(ThreatModelError, match=re.escape("loss-threshold needs loss but the target exposes")):
        api.loss(X, y, attack="loss-threshold")
    arch = build_model("mlp", (20,), 4, hidden=(64,), seed=0)
    lira = LiRA(CONF, arch, cfg, n_shadows=4, fixed_variance=True, seed=0).fit(
        ShadowModels(arch, TrainConfig(epochs=2, batch_size=64), 4, seed=0).fit((X, y))
    )
    with pytest.raises(
        ThreatModelError, match="lira-online needs confidences but the target exposes only labels"
    ):
        run_membership_audit(lira, api, (X[m], y[m]), (X[~m], y[~m]))
    scored = run_membership_audit(LabelOnlyAttack(LABELS), api, (X[m], y[m]), (X[~m], y[~m]))
    assert scored.metrics["auc"] > 0.55  # the overfit target still leaks through its labels


# --------------------------------------------------------------------------- secure aggregation


def _updates(n: int, seed: int):
    rng = np.random.default_rng(seed)
    model = build_model("mlp", (8, 8), 10, hidden=(32,), seed=seed)
    X = rng.random((n, 8, 8), dtype=np.float32)
    y = rng.integers(0, 10, n)
    ups = [simulate_client_update(model, X[i : i + 1], y[i : i + 1], reveal_labels=True) for i in range(n)]
    return model, X, y, ups


def test_secure_aggregate_view_is_the_sum_and_nothing_else():
    _, X, y, ups = _updates(5, 0)
    view = secure_aggregate_view(ups)
    assert isinstance(view, ClientUpdate)
    assert torch.allclose(view.flat(), torch.stack([u.flat() for u in ups]).sum(0), atol=1e-6)
    assert view.batch_size == 5 and view.labels is None and view.input_shape == (8, 8)
    # the view is the same whatever the clients' order: it cannot tell who sent what
    again = secure_aggregate_view(ups[::-1])
    assert torch.allclose(again.flat(), view.flat(), atol=1e-6)
    # clipping: each update scaled to norm <= S before summing
    clipped = secure_aggregate_view(ups, clip_norm=0.01)
    expected = sum(u.flat().double() * min(1.0, 0.01 / float(u.flat().double().norm())) for u in ups)
    assert torch.allclose(clipped.flat().double(), expected, atol=1e-6)
    assert float(clipped.flat().norm()) <= 5 * 0.01 + 1e-6


def test_secure_aggregate_view_noise_and_validation():
    _, _, _, ups = _updates(3, 1)
    warnings.filterwarnings("ignore", message="GaussianMechanism runs with secure=False")
    a = secure_aggregate_view(ups, clip_norm=1.0, noise_multiplier=0.5, rng=3)
    b = secure_aggregate_view(ups, clip_norm=1.0, noise_multiplier=0.5, rng=3)
    clean = secure_aggregate_view(ups, clip_norm=1.0)
    assert torch.equal(a.flat(), b.flat())
    diff = (a.flat() - clean.flat()).double()
    assert abs(float(diff.std()) - 0.5) < 0.05  # std z * S
    with pytest.raises(ValueError, match="noise_multiplier > 0 needs clip_norm"):
        secure_aggregate_view(ups, noise_multiplier=1.0, rng=0)
    with pytest.raises(ValueError, match="updates is empty"):
        secure_aggregate_view([])
    with pytest.raises(TypeError, match="not a ClientUpdate"):
        secure_aggregate_view([ups[0], "update"])
    other = simulate_client_update(
        build_model("mlp", (8, 8), 10, hidden=(16,), seed=0), np.zeros((1, 8, 8)), [1]
    )
    with pytest.raises(ValueError, match="same global model"):
        secure_aggregate_view([ups[0], other])


def _best_psnr(guess: np.ndarray, truth: np.ndarray) -> float:
    return max(psnr(guess, t, data_range=1.0) for t in truth)


def test_attack_on_the_secure_sum_gets_far_lower_psnr_than_on_one_update():
    _, X, y, ups = _updates(10, 2)
    attack = AnalyticFCInversion(ThreatModel.of(Access.CLIENT_UPDATE), bounds=(0.0, 1.0))
    single = attack.run(ups[0]).guesses[0]
    assert _best_psnr(single, X[:1]) > 60  # one client's update gives its image (exact up to float32)
    view = secure_aggregate_view(ups)
    # read as one example: a mixture of the ten images
    mixed = attack.run(
        ClientUpdate.from_gradients(view.model, view.gradients, batch_size=1, input_shape=(8, 8))
    )
    best = _best_psnr(mixed.guesses[0], X)
    assert best < 20 and best < _best_psnr(single, X[:1]) - 40


# --------------------------------------------------------------------------- DP-SGD


def test_dpsgd_at_epsilon_one_lowers_loss_auc():
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message="GaussianMechanism runs with secure=False")
    X, y = _blobs(400, 5, noise=0.3)
    m = np.zeros(len(y), bool)
    m[np.random.default_rng(6).choice(len(y), 200, replace=False)] = True
    members, non = (X[m], y[m]), (X[~m], y[~m])
    plain = build_model("mlp", (20,), 4, hidden=(64,), seed=0)
    train_epochs(
        plain,
        *members,
        TrainConfig(epochs=60, batch_size=16, lr=0.05, momentum=0.5),
        np.random.default_rng(0),
    )
    q, epochs, delta = 50 / 200, 20, 1e-3
    steps = math.ceil(epochs / q)
    z = calibrate_noise_multiplier(1.0, delta, q, steps)
    private = build_model("mlp", (20,), 4, hidden=(64,), seed=0)
    opt = DPSGD(z, 1.0, q, lr=0.5).fit(
        private, *members, accountant=PrivacyAccountant("rdp", delta), rng=0, steps=steps
    )
    assert opt.epsilon_ == pytest.approx(1.0, abs=0.05)
    auc_plain = membership_audit(plain, members, non, rng=0, n_bootstrap=100).metrics["auc"]
    auc_dp = membership_audit(private, members, non, rng=0, n_bootstrap=100).metrics["auc"]
    assert auc_plain > 0.7
    assert auc_dp < 0.6 and auc_dp < auc_plain - 0.15
    # the same through the API path the benchmark uses (LOSS from the exposed loss)
    api = ModelAPI(private, Access.LOSS)
    obs = LossObservations(api.loss(X, y, attack="loss-threshold"))
    r = LossThresholdAttack(ThreatModel.of(Access.LOSS)).run(obs)
    assert np.allclose(-r.scores, obs.losses)
