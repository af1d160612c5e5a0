import numpy as np
import pytest
import torch

from ppml import ParameterError
from ppml.attacks.base import Access, ThreatModel, ThreatModelError
from ppml.attacks.label_only import LabelOnlyAttack
from ppml.attacks.membership import ModelAPI, TargetQueries, run_membership_audit

TM = ThreatModel.of(Access.LABELS, adversary="client of a top-1 label API")


@pytest.fixture(scope="module")
def world(overfit_target):
    torch.set_num_threads(1)
    return overfit_target()


def test_gap_attack_is_correctness(world):
    X, y, m, _, _, target = world
    api = ModelAPI(target, "labels")
    r = LabelOnlyAttack(TM).run(TargetQueries(api, X, y))
    with torch.no_grad():
        correct = target(torch.from_numpy(X)).argmax(1).numpy() == y
    assert np.array_equal(r.scores, correct.astype(float)) and np.array_equal(r.guesses, correct)
    assert r.attack == "label-only-gap" and api.n_queries_ == len(y)
    scored = run_membership_audit(LabelOnlyAttack(TM), target, (X[m], y[m]), (X[~m], y[~m]))
    # members are all classified correctly, non-members at test accuracy: balanced accuracy above chance
    assert scored.metrics["balanced_accuracy_at_threshold"] > 0.6


def test_noise_robustness(world):
    X, y, m, _, _, target = world
    attack = LabelOnlyAttack(TM, n_noise=20, sigma=1.0, seed=0)
    api = ModelAPI(target, "labels", batch_size=1000)
    r = attack.run(TargetQueries(api, X, y))
    assert api.n_queries_ == len(y) * 21 and r.details["n_queries"] == len(y) * 21
    assert np.allclose(r.scores * 21, np.round(r.scores * 21)) and r.scores.min() >= 0 and r.scores.max() <= 1
    again = LabelOnlyAttack(TM, n_noise=20, sigma=1.0, seed=0, batch_size=100).run(TargetQueries(api, X, y))
    assert np.array_equal(again.scores, r.scores)  # seeded, batching does not change the noise
    scored = run_membership_audit(attack, target, (X[m], y[m]), (X[~m], y[~m]))
    gap = run_membership_audit(LabelOnlyAttack(TM), target, (X[m], y[m]), (X[~m], y[~m]))
    assert scored.metrics["auc"] > gap.metrics["auc"]  # finer than correct / incorrect
    clipped = LabelOnlyAttack(TM, n_noise=3, sigma=5.0, clip=(-1.0, 1.0), seed=0).run(
        TargetQueries(api, X, y)
    )
    assert clipped.details["sigma"] == 5.0


def test_label_only_refusals(world):
    X, y, _, _, _, target = world
    with pytest.raises(ThreatModelError, match="needs labels"):
        LabelOnlyAttack(ThreatModel.of(Access.PARAMETERS))
    with pytest.raises(ValueError, match="explicit seed"):
        LabelOnlyAttack(TM, n_noise=5)
    with pytest.raises(ParameterError, match="'sigma' parameter of LabelOnlyAttack"):
        LabelOnlyAttack(TM, n_noise=5, sigma=0.0, seed=0)
    with pytest.raises(ValueError, match="clip must be a pair"):
        LabelOnlyAttack(TM, n_noise=5, clip=(1.0, 0.0), seed=0)
    with pytest.raises(TypeError, match="expects TargetQueries"):
        LabelOnlyAttack(TM).run((X, y))
    api = ModelAPI(target, "labels")
    with pytest.raises(ThreatModelError, match="needs confidences but the target exposes only labels"):
        api.confidences(X, attack="an attack")
