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


@pytest.fixture(scope="module")
def digit_images():
    d = load_digits()
    X = (d.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(y))
    lab, unl, test = perm[:40], perm[40:1300], perm[1300:]
    return X[lab], y[lab], X[unl], X[test], y[test]


def _tiny_cnn() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(512, 10)
    )


FIXMATCH_KW = dict(epochs=40, batch_size=32, lr=0.05, shift=1, strong_shift=1, rotate=10.0, cutout=3)


def test_fixmatch_beats_supervised_on_few_labels(digit_images):
    torch.set_num_threads(1)
    Xl, yl, Xu, Xt, yt = digit_images
    net = _tiny_cnn()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    sup = PATEStudent(net, semi_supervised="none", seed=1, **FIXMATCH_KW).fit(Xl, yl, Xu)
    fm = PATEStudent(
        net, semi_supervised="fixmatch", consistency_epochs=20, confidence=0.8, seed=1, **FIXMATCH_KW
    ).fit(Xl, yl, Xu)
    # one entry per pass over the unlabelled rows; confident rows grow as the student learns
    assert len(fm.pseudo_labeled_) == 20 and all(0 <= k <= len(Xu) for k in fm.pseudo_labeled_)
    assert fm.pseudo_labeled_[-1] > fm.pseudo_labeled_[0] + 100
    acc_sup, acc_fm = sup.score(Xt, yt), fm.score(Xt, yt)
    assert acc_sup > 0.6  # 40 labels, chance 0.1
    assert acc_fm > acc_sup + 0.03  # consistency on 1,260 unlabelled images pays (about +6 points here)
    # the template is copied, never trained in place
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert not torch.equal(fm.model_[0].weight, net[0].weight)


def test_fixmatch_seeded_and_ema_changes_the_student(digit_images):
    Xl, yl, Xu, Xt, _ = digit_images
    net = _tiny_cnn()
    kw = dict(FIXMATCH_KW, epochs=5, min_steps=10, consistency_epochs=2)
    a = PATEStudent(net, semi_supervised="fixmatch", seed=3, **kw).fit(Xl, yl, Xu).predict_proba(Xt)
    b = PATEStudent(net, semi_supervised="fixmatch", seed=3, **kw).fit(Xl, yl, Xu).predict_proba(Xt)
    c = PATEStudent(net, semi_supervised="fixmatch", seed=3, ema=0.9, **kw).fit(Xl, yl, Xu).predict_proba(Xt)
    assert np.array_equal(a, b) and not np.allclose(a, c)
    # without unlabelled rows, fixmatch falls back to the supervised round
    s = PATEStudent(net, semi_supervised="fixmatch", seed=3, **kw).fit(Xl, yl)
    assert s.pseudo_labeled_ == []


def test_fixmatch_on_tabular_rows_and_refusals(digits):
    Xl, yl, Xu, Xt, yt = digits
    model = build_model("logistic", (64,), 10, seed=0)
    st = PATEStudent(
        model, semi_supervised="fixmatch", epochs=20, consistency_epochs=3, lr=0.1, confidence=0.9, seed=0
    ).fit(Xl, yl, Xu)
    assert len(st.pseudo_labeled_) == 3 and st.score(Xt, yt) > 0.6
    with pytest.raises(ParameterError, match="must not be 'fixmatch' for a scikit-learn student"):
        PATEStudent(LogisticRegression(), semi_supervised="fixmatch").fit(Xl, yl, Xu)
    with pytest.raises(ParameterError, match="'unlabeled_ratio' parameter of PATEStudent"):
        PATEStudent(model, semi_supervised="fixmatch", unlabeled_ratio=0).fit(Xl, yl, Xu)
    with pytest.raises(ParameterError, match="'ema' parameter of PATEStudent"):
        PATEStudent(model, semi_supervised="fixmatch", ema=1.0).fit(Xl, yl, Xu)
    with pytest.raises(ParameterError, match="'rotate' parameter of PATEStudent"):
        PATEStudent(model, semi_supervised="fixmatch", rotate=-1.0).fit(Xl, yl, Xu)


def test_strong_view_cuts_out_a_square_and_moves_pixels():
    x = torch.ones(32, 1, 16, 16)
    st = PATEStudent(torch.nn.Identity(), rotate=0.0, strong_shift=0, cutout=4, noise=0.0)
    g = torch.Generator().manual_seed(0)
    out = st._strong(x, torch.ones(256), g)
    assert out.shape == x.shape
    zeros = (out == 0).sum(dim=(1, 2, 3))
    assert zeros.max() <= 25 and zeros.min() >= 9  # a 5x5 square (side 2 * (4 // 2) + 1), clipped at edges
    assert torch.all((out == 0) | (out == 1))
    # no cutout, only shifts: a single lit pixel moves by whole steps of at most strong_shift
    st2 = PATEStudent(torch.nn.Identity(), rotate=0.0, strong_shift=3, cutout=0, noise=0.0)
    y = torch.zeros(64, 1, 16, 16)
    y[:, 0, 8, 8] = 1.0
    moved = st2._strong(y, torch.ones(256), g)
    pos = moved[:, 0].reshape(64, -1).argmax(1)
    # bilinear sampling at whole-pixel offsets keeps the pixel intact (up to float rounding)
    assert torch.allclose(moved.sum(dim=(1, 2, 3)), torch.ones(64), atol=1e-4)
    assert torch.allclose(moved.amax(dim=(1, 2, 3)), torch.ones(64), atol=1e-4)
    rows, cols = pos // 16, pos % 16
    assert rows.min() >= 5 and rows.max() <= 11 and len(set(cols.tolist())) > 3


def test_strong_view_zoom_scales_the_digit_both_ways():
    x = torch.zeros(64, 1, 16, 16)
    x[:, 0, 5:11, 5:11] = 1.0  # a 6x6 square in the middle
    g = torch.Generator().manual_seed(0)
    plain = PATEStudent(torch.nn.Identity(), rotate=0.0, strong_shift=0, cutout=0, noise=0.0, zoom=0.0)
    assert torch.allclose(plain._strong(x, torch.ones(256), g), x, atol=1e-5)  # identity map without zoom
    st = PATEStudent(torch.nn.Identity(), rotate=0.0, strong_shift=0, cutout=0, noise=0.0, zoom=0.4)
    mass = st._strong(x, torch.ones(256), g).sum(dim=(1, 2, 3))
    # the square's area scales with s^2 for s in [0.6, 1.4]: 36 * 0.36 ~ 13 up to 36 * 1.96 ~ 71
    assert mass.min() < 30 and mass.max() > 42
    assert mass.min() > 36 * 0.6**2 * 0.7 and mass.max() < 36 * 1.4**2 * 1.3


def test_label_smoothing_softens_the_answered_labels(digits):
    Xl, yl, _, Xt, yt = digits
    model = build_model("logistic", (64,), 10, seed=0)
    kw = dict(semi_supervised="none", epochs=60, batch_size=32, lr=0.2, seed=0)
    hard = PATEStudent(model, **kw).fit(Xl, yl)
    soft = PATEStudent(model, label_smoothing=0.3, **kw).fit(Xl, yl)
    p_hard, p_soft = hard.predict_proba(Xl).max(axis=1), soft.predict_proba(Xl).max(axis=1)
    # smoothing 0.3 over 10 classes makes 0.73 the target for the answered class: no more near-certainty
    assert p_hard.mean() > 0.9 and p_soft.mean() < 0.8
    assert soft.score(Xt, yt) > 0.6  # it still learns the task
    for name, bad in [("zoom", 1.0), ("label_smoothing", 1.0), ("label_smoothing", -0.1)]:
        with pytest.raises(ParameterError, match=f"'{name}' parameter of PATEStudent"):
            PATEStudent(model, **{name: bad}).fit(Xl, yl)
