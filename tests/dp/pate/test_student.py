"""The PATE student: supervised on answered labels, self-training on the unlabelled rest."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC

from ppml._validation import ParameterError
from ppml.dp.pate.student import PATEStudent, _augment
from ppml.models import build_model


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    X = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(y))
    lab, unl, test = perm[:60], perm[60:1300], perm[1300:]
    return X[lab], y[lab], X[unl], X[test], y[test]


def test_self_training_uses_unlabelled_rows(digits):
    torch.set_num_threads(1)
    Xl, yl, Xu, Xt, yt = digits
    model = build_model("logistic", (64,), 10, seed=0)
    kw = dict(epochs=40, round_epochs=8, batch_size=32, lr=0.1, seed=0)
    sup = PATEStudent(model, semi_supervised="none", **kw).fit(Xl, yl, Xu)
    semi = PATEStudent(model, semi_supervised="self_training", rounds=2, confidence=0.9, **kw).fit(Xl, yl, Xu)
    assert sup.pseudo_labeled_ == [] and len(semi.pseudo_labeled_) == 2
    assert semi.pseudo_labeled_[-1] > 200  # it pseudo-labelled a good share of the 1,240 rows
    acc_sup, acc_semi = sup.score(Xt, yt), semi.score(Xt, yt)
    assert acc_sup > 0.6  # 60 labels, chance 0.1
    assert acc_semi > 0.75  # pseudo-labels did not derail it
    p = semi.predict_proba(Xt)
    assert p.shape == (len(yt), 10) and np.allclose(p.sum(axis=1), 1.0)
    assert np.array_equal(p.argmax(axis=1), semi.predict(Xt))
    # the template model is copied, never trained in place
    assert torch.equal(model.linear.weight, build_model("logistic", (64,), 10, seed=0).linear.weight)


def test_seeded_student_is_reproducible(digits):
    Xl, yl, Xu, Xt, _ = digits
    model = build_model("logistic", (64,), 10, seed=0)
    a = PATEStudent(model, epochs=5, round_epochs=2, rounds=1, seed=3).fit(Xl, yl, Xu).predict_proba(Xt)
    b = PATEStudent(model, epochs=5, round_epochs=2, rounds=1, seed=3).fit(Xl, yl, Xu).predict_proba(Xt)
    c = PATEStudent(model, epochs=5, round_epochs=2, rounds=1, seed=4).fit(Xl, yl, Xu).predict_proba(Xt)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_sklearn_student_self_training(digits):
    Xl, yl, Xu, Xt, yt = digits
    st = PATEStudent(LogisticRegression(max_iter=500), rounds=1, confidence=0.8, seed=0).fit(Xl, yl, Xu)
    assert st.pseudo_labeled_[0] > 100
    assert st.score(Xt, yt) > 0.75
    assert st.predict_proba(Xt).shape == (len(yt), 10)
    with pytest.raises(ParameterError, match="without predict_proba"):
        PATEStudent(LinearSVC(), rounds=1).fit(Xl, yl, Xu)


def test_shift_augmentation_moves_pixels_by_whole_steps():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(64, 1, 8, 8)
    x[:, 0, 4, 4] = 1.0
    out = _augment(x, "shift", 2, 0.0, torch.ones(64), g)
    assert torch.all(out.sum(dim=(1, 2, 3)) == 1.0)  # the single lit pixel survives, moved
    pos = out[:, 0].reshape(64, -1).argmax(1)
    rows, cols = pos // 8, pos % 8
    assert rows.min() >= 2 and rows.max() <= 6 and cols.min() >= 2 and cols.max() <= 6
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) > 5  # shifts differ per example


def test_bad_parameters_refused(digits):
    Xl, yl, Xu, _, _ = digits
    model = build_model("logistic", (64,), 10, seed=0)
    with pytest.raises(ParameterError, match="'semi_supervised' parameter of PATEStudent"):
        PATEStudent(model, semi_supervised="gan").fit(Xl, yl)
    with pytest.raises(ParameterError, match="'augment' parameter"):
        PATEStudent(model, augment="shift").fit(Xl, yl)
    with pytest.raises(ParameterError, match="'confidence' parameter"):
        PATEStudent(model, confidence=1.5).fit(Xl, yl)
    with pytest.raises(ParameterError, match="'y' parameter"):
        PATEStudent(model).fit(Xl, yl[:-1])
    with pytest.raises(AttributeError, match="not fitted"):
        PATEStudent(model).predict(Xl)
