"""Teacher partitions by owner, refusals, vectorized and scikit-learn teachers, votes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from ppml._validation import ParameterError
from ppml.dp.pate.teachers import (
    TeacherEnsemble,
    check_no_overlap,
    check_partitions,
    overlap_mask,
    partition_by_owner,
    train_teachers,
)
from ppml.models import build_model
from ppml.train.loop import TrainConfig


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(1, 6), min_size=2, max_size=60),
    n_teachers=st.integers(2, 12),
    seed=st.integers(0, 2**31),
)
def test_partition_by_owner_keeps_owners_whole_and_balances(counts, n_teachers, seed):
    owners = np.repeat(np.arange(len(counts)) * 7 + 3, counts)  # non-contiguous owner ids
    owners = owners[np.random.default_rng(seed).permutation(len(owners))]
    if n_teachers > len(counts):
        with pytest.raises(ParameterError, match="distinct owners"):
            partition_by_owner(owners, n_teachers, seed)
        return
    parts = partition_by_owner(owners, n_teachers, seed)
    assert len(parts) == n_teachers
    flat = np.concatenate(parts)
    assert np.array_equal(np.sort(flat), np.arange(len(owners)))  # every record exactly once
    teacher_of = {}
    for t, p in enumerate(parts):
        for o in np.unique(owners[p]):
            assert teacher_of.setdefault(int(o), t) == t  # every owner in exactly one teacher
    sizes = np.array([len(p) for p in parts])
    assert sizes.min() >= 1
    assert sizes.max() - sizes.min() <= max(counts)  # greedy balance bound


def test_one_record_per_owner_gives_equal_partitions():
    parts = partition_by_owner(np.arange(60_000), 250, seed=0)
    assert {len(p) for p in parts} == {240}
    again = partition_by_owner(np.arange(60_000), 250, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = partition_by_owner(np.arange(60_000), 250, seed=1)
    assert not np.array_equal(parts[0], other[0])


def test_fewer_than_two_teachers_refused():
    with pytest.raises(ParameterError, match="'n_teachers' parameter of partition_by_owner"):
        partition_by_owner(np.arange(10), 1, seed=0)
    with pytest.raises(ParameterError, match="at least 2 partitions"):
        check_partitions([np.arange(10)], 10)


def test_partition_splitting_an_owner_refused():
    owners = np.array([0, 0, 1, 1, 2, 2])
    check_partitions([np.array([0, 1, 4]), np.array([2, 3, 5])], 6)  # fine without owners
    with pytest.raises(ParameterError, match=r"owner 2 split across partitions \[0, 1\]"):
        check_partitions([np.array([0, 1, 4]), np.array([2, 3, 5])], 6, owners)
    ok = check_partitions([np.array([0, 1]), np.array([2, 3, 4, 5])], 6, owners)
    assert [len(p) for p in ok] == [2, 4]


def test_overlapping_partitions_and_bad_indices_refused():
    with pytest.raises(ParameterError, match="record 2 in partitions \\[0, 1\\]"):
        check_partitions([np.array([0, 2]), np.array([2, 3])], 4)
    with pytest.raises(ParameterError, match=r"\[0, 4\)"):
        check_partitions([np.array([0, 1]), np.array([2, 4])], 4)
    with pytest.raises(ParameterError, match="non-empty"):
        check_partitions([np.array([0, 1]), np.array([], dtype=np.int64)], 4)


def test_public_overlap_counted_and_refused():
    rng = np.random.default_rng(0)
    private = rng.normal(size=(50, 4)).astype(np.float32)
    public = rng.normal(size=(20, 4))
    check_no_overlap(private, public)  # disjoint: fine
    public[[3, 7, 11]] = private[[0, 5, 9]]  # float32 rows copied into a float64 array
    mask = overlap_mask(private, public)
    assert np.flatnonzero(mask).tolist() == [3, 7, 11]
    with pytest.raises(ParameterError, match="Got 3 of 20 public rows equal to private rows"):
        check_no_overlap(private, public)
    check_no_overlap(private, public[~mask])


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    X = (d.data / 16.0).astype(np.float32)
    return X[:900], d.target[:900].astype(np.int64), X[900:1200], d.target[900:1200].astype(np.int64)


def test_torch_teachers_vectorized_votes(digits):
    X, y, Xq, yq = digits
    torch.set_num_threads(1)
    parts = partition_by_owner(np.arange(len(y)), 6, seed=0)
    model = build_model("logistic", (64,), 10, seed=0)
    cfg = TrainConfig(epochs=15, batch_size=16, lr=0.1, momentum=0.9)
    teachers = train_teachers(model, X, y, parts, seed=1, config=cfg)
    assert isinstance(teachers, TeacherEnsemble) and teachers.kind == "torch" and len(teachers) == 6
    pred = teachers.predict(Xq)
    assert pred.shape == (6, len(yq)) and pred.dtype == np.int64
    assert (pred == yq).mean() > 0.8  # each teacher learned (chance is 0.1)
    votes = teachers.votes(Xq)
    assert votes.shape == (len(yq), 10) and np.all(votes.sum(axis=1) == 6)
    assert (votes.argmax(1) == yq).mean() > 0.85
    # teacher t saw only its partition: vectorized == one after another
    seq = train_teachers(model, X, y, parts, seed=1, config=cfg, sequential=True)
    assert (seq.predict(Xq) == pred).mean() > 0.99
    # split over two worker processes: the same teachers
    two = train_teachers(model, X, y, parts, seed=1, config=cfg, n_jobs=2)
    torch.testing.assert_close(two.params.to_flat(), teachers.params.to_flat(), atol=1e-6, rtol=1e-5)


def test_sklearn_teachers_parallel_match_serial(digits):
    X, y, Xq, yq = digits
    parts = partition_by_owner(np.arange(len(y)), 4, seed=0)
    est = LogisticRegression(max_iter=300)
    one = train_teachers(est, X, y, parts, seed=0, n_jobs=1)
    two = train_teachers(est, X, y, parts, seed=0, n_jobs=2)
    assert one.kind == "sklearn" and len(one) == 4
    assert np.array_equal(one.predict(Xq), two.predict(Xq))
    assert (one.votes(Xq).argmax(1) == yq).mean() > 0.85
    assert one.votes(Xq).sum(axis=1).tolist() == [4] * len(yq)


def test_single_class_partition_gives_constant_teacher():
    X = np.arange(20, dtype=np.float32).reshape(10, 2)
    y = np.array([0, 0, 0, 0, 0, 1, 0, 1, 0, 1])
    teachers = train_teachers(LogisticRegression(), X, y, [np.arange(5), np.arange(5, 10)], seed=0)
    assert teachers.predict(X)[0].tolist() == [0] * 10


def test_bad_teacher_and_labels_refused(digits):
    X, y, _, _ = digits
    parts = partition_by_owner(np.arange(len(y)), 3, seed=0)
    with pytest.raises(ParameterError, match="'teacher' parameter of train_teachers"):
        train_teachers(object(), X, y, parts, seed=0)
    with pytest.raises(ParameterError, match="'y' parameter"):
        train_teachers(LogisticRegression(), X, y.astype(float), parts, seed=0)
    with pytest.raises(ParameterError, match="below num_classes=5"):
        train_teachers(LogisticRegression(), X, y, parts, seed=0, num_classes=5)


def test_shifted_copies_stay_in_their_partition():
    from ppml.dp.pate.teachers import shifted_copies

    n = 30
    X = np.zeros((n, 1, 12, 12), dtype=np.float32)
    X[np.arange(n), 0, 6, 6] = np.arange(1, n + 1)  # one lit pixel; its value names the record
    y = np.arange(n) % 3
    parts = [np.arange(0, 10), np.arange(10, 25)]  # records 25..29 belong to no teacher
    Xa, ya, pa = shifted_copies(X, y, parts, 4, max_shift=2, seed=0)
    assert Xa.shape == (4 * n, 1, 12, 12) and np.array_equal(ya, np.tile(y, 4))
    assert np.array_equal(Xa[:n], X)
    for t, p in enumerate(parts):
        assert np.array_equal(pa[t], np.sort(np.concatenate([p + j * n for j in range(4)])))
    # copies keep the owner: partitions stay disjoint and keep each original record's copies together
    owners = np.tile(np.arange(n), 4)
    check_partitions(pa, len(Xa), owners=owners)
    moves = []
    for i in range(4 * n):
        r, c = np.argwhere(Xa[i, 0])[0]
        assert Xa[i, 0, r, c] == i % n + 1 and (Xa[i] != 0).sum() == 1  # the record's pixel, moved
        assert abs(r - 6) <= 2 and abs(c - 6) <= 2
        if i % n >= 25:
            assert (r, c) == (6, 6)  # rows of no partition are not shifted
        moves.append((r, c))
    assert len(set(moves[n:])) > 10  # shifts differ between copies
    again = shifted_copies(X, y, parts, 4, max_shift=2, seed=0)[0]
    other = shifted_copies(X, y, parts, 4, max_shift=2, seed=1)[0]
    assert np.array_equal(Xa, again) and not np.array_equal(Xa, other)


def test_shifted_copies_refusals():
    from ppml.dp.pate.teachers import shifted_copies

    X = np.zeros((6, 1, 4, 4), dtype=np.float32)
    parts = [np.arange(3), np.arange(3, 6)]
    one = shifted_copies(X, np.zeros(6, dtype=np.int64), parts, 1, seed=0)
    assert one[0].shape == X.shape and [p.tolist() for p in one[2]] == [p.tolist() for p in parts]
    with pytest.raises(ParameterError, match="'X' parameter of shifted_copies"):
        shifted_copies(X.reshape(6, 16), np.zeros(6, dtype=np.int64), parts, 2, seed=0)
    with pytest.raises(ParameterError, match="'max_shift' parameter of shifted_copies"):
        shifted_copies(X, np.zeros(6, dtype=np.int64), parts, 2, max_shift=4, seed=0)
    with pytest.raises(ParameterError, match="'copies' parameter of shifted_copies"):
        shifted_copies(X, np.zeros(6, dtype=np.int64), parts, 0, seed=0)
    with pytest.raises(ParameterError, match="disjoint"):
        shifted_copies(X, np.zeros(6, dtype=np.int64), [np.arange(4), np.arange(3, 6)], 2, seed=0)
