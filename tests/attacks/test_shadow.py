import numpy as np
import pytest
import torch
from sklearn.tree import DecisionTreeClassifier

from ppml.attacks.base import Access, ThreatModel, ThreatModelError
from ppml.attacks.membership import ModelAPI, TargetQueries, membership_audit, run_membership_audit
from ppml.attacks.shadow import ShadowModelAttack, ShadowModels
from ppml.models import get_flat
from ppml.train.ensemble import train_ensemble

TM = ThreatModel.of(
    Access.CONFIDENCES, adversary="API client", auxiliary="records from the same distribution"
)


@pytest.fixture(scope="module")
def world(overfit_target):
    torch.set_num_threads(1)
    X, y, is_member, cfg, arch, target = overfit_target()
    Xa, ya, _, _, _, _ = overfit_target(n_pool=800)  # same class centres; rows 400: are fresh draws
    aux = (Xa[400:], ya[400:])
    shadows = ShadowModels(arch, cfg, 4, seed=2).fit(aux)
    return X, y, is_member, cfg, arch, target, shadows


def test_shadow_models_balanced_and_reproducible(world):
    X, y, _, cfg, arch, _, shadows = world
    assert shadows.keep_.shape == (4, 400)
    assert (shadows.keep_.sum(axis=0) == 2).all()  # every pool record IN for exactly half the models
    # model j really trained on its subset: same parameters as train_ensemble on those rows
    again = ShadowModels(arch, cfg, 4, seed=2).fit((shadows.X_, shadows.y_))
    assert np.array_equal(again.keep_, shadows.keep_)
    assert torch.equal(again.params_.to_flat(), shadows.params_.to_flat())
    assert not torch.equal(shadows.params_.to_flat()[0], shadows.params_.to_flat()[1])
    # membership of queries by value: pool rows as kept, rows outside the pool OUT everywhere
    q = np.concatenate([shadows.X_[[5, 17]], X[:3]])
    qy = np.concatenate([shadows.y_[[5, 17]], y[:3]])
    mem = shadows.membership(q, qy)
    assert np.array_equal(mem[:, :2], shadows.keep_[:, [5, 17]])
    assert not mem[:, 2:].any()
    # same features, other label: not the same record
    assert not shadows.membership(shadows.X_[[5]], (shadows.y_[[5]] + 1) % 5).any()
    sub = shadows.select([3, 1])
    assert len(sub) == 2 and np.array_equal(sub.keep_, shadows.keep_[[3, 1]])
    logits = shadows.logits(X[:7])
    assert logits.shape == (4, 7, 5) and logits.dtype == np.float64


@pytest.fixture(scope="module")
def shokri(world):
    _, _, _, cfg, arch, _, shadows = world
    return ShadowModelAttack(TM, arch, cfg, seed=0).fit(shadows)


def test_shokri_attack_beats_chance(world, shokri):
    X, y, m, cfg, arch, target, shadows = world
    attack = shokri
    assert set(attack.classifiers_) == {-1, 0, 1, 2, 3, 4}
    r = run_membership_audit(attack, target, (X[m], y[m]), (X[~m], y[~m]), rng=0)
    loss = membership_audit(target, (X[m], y[m]), (X[~m], y[~m]), rng=0)
    assert r.metrics["auc"] > 0.62 and r.metrics["auc"] > loss.metrics["auc"] - 0.05
    assert ((r.scores >= 0) & (r.scores <= 1)).all()
    assert "balanced_accuracy_at_threshold" in r.metrics  # the classifiers' own 0.5 decision


def test_shokri_with_own_shadows_and_custom_classifier(world):
    X, y, m, cfg, arch, target, shadows = world
    attack = ShadowModelAttack(
        TM,
        arch,
        cfg,
        n_shadows=2,
        seed=1,
        attack_model=DecisionTreeClassifier(max_depth=4),
        sort_features=True,
    ).fit((shadows.X_, shadows.y_))
    assert len(attack.shadows_) == 2
    r = attack.run(TargetQueries(ModelAPI(target, "confidences"), X, y))
    assert r.scores.shape == (400,) and r.details["n_shadows"] == 2
    assert isinstance(attack.classifiers_[0], DecisionTreeClassifier)


def test_shokri_refusals(world, shokri):
    X, y, _, cfg, arch, target, shadows = world
    with pytest.raises(ThreatModelError, match="shadow-models needs confidences"):
        ShadowModelAttack(ThreatModel.of(Access.LABELS), arch, cfg, seed=0)
    attack = ShadowModelAttack(TM, arch, cfg, seed=0)
    with pytest.raises(RuntimeError, match="call fit"):
        attack.run(TargetQueries(ModelAPI(target, "confidences"), X, y))
    with pytest.raises(ThreatModelError, match="target exposes only labels"):
        shokri.run(TargetQueries(ModelAPI(target, "labels"), X, y))
    with pytest.raises(ValueError, match="keep must have shape"):
        ShadowModels.from_trained(shadows.params_, shadows.keep_[:, :5], (shadows.X_, shadows.y_), cfg)


def test_from_trained_wraps_an_ensemble(world):
    X, y, _, cfg, arch, _, _ = world
    keep = np.zeros((2, 400), bool)
    keep[0, :200], keep[1, 200:] = True, True
    params = train_ensemble(arch, X, y, [np.arange(200), np.arange(200, 400)], cfg, seed=0)
    sm = ShadowModels.from_trained(params, keep, (X, y), cfg)
    assert np.array_equal(sm.membership(X[[0, 399]], y[[0, 399]]), [[True, False], [False, True]])
    assert torch.equal(get_flat(sm.params_.member(1)), params.to_flat()[1])
