"""PATE's teachers: disjoint partitions by individual, many teachers trained at once, their votes.

PATE (Papernot et al. 2017, "Semi-supervised knowledge transfer for deep learning from private
training data"; Papernot et al. 2018, "Scalable private learning with PATE") trains one teacher per
disjoint partition of the private data. Its guarantee is stated for **one teacher's vote changing**
(:mod:`ppml.dp.pate.aggregators`); it protects an *individual* only if all of that individual's
records lie in one partition. Hence:

* :func:`partition_by_owner` assigns whole owners (a vehicle, a patient; for MNIST or Adult each
  record is its own owner) to teachers, balancing the number of records per teacher;
* :func:`check_partitions` refuses explicit partitions that split an owner, share a record, or give
  fewer than two teachers;
* :func:`check_no_overlap` refuses public (student) data that holds rows of the private data (the
  student would then be trained on private records through the back door); :func:`overlap_mask`
  finds those rows so a caller can drop them explicitly;
* :func:`train_teachers` trains every teacher: torch models all at once with
  :func:`ppml.train.ensemble.train_ensemble` (one ``vmap`` step for all teachers), scikit-learn
  estimators in parallel processes with joblib;
* :func:`shifted_copies` enlarges every image partition with randomly shifted copies of its own
  images (data augmentation that stays inside the partition, so each owner still reaches one
  teacher only);
* :class:`TeacherEnsemble` predicts and counts votes (:func:`~ppml.dp.pate.aggregators.votes_from_predictions`).

Teachers and their votes are private: they are never part of what PATE releases (only the noisy
answers and the student trained on them are).
"""

from __future__ import annotations

import hashlib
import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..._rng import SeedLike, as_generator, derive_seed, spawn
from ..._validation import POSITIVE_INT, Interval, ParameterError, check_param
from ...train.ensemble import EnsembleParams, predict_ensemble, train_ensemble, train_ensemble_sequential
from ...train.loop import TrainConfig
from .aggregators import votes_from_predictions

__all__ = [
    "TeacherEnsemble",
    "check_no_overlap",
    "check_partitions",
    "overlap_mask",
    "partition_by_owner",
    "row_hashes",
    "shifted_copies",
    "train_teachers",
]

_AT_LEAST_TWO = Interval(int, 2, None, "left")


# --------------------------------------------------------------------------- partitions


def _owners_array(owners: Any, n: int | None, owner: str) -> np.ndarray:
    o = np.asarray(owners)
    if o.ndim != 1 or (n is not None and o.shape[0] != n):
        want = "shape (n,)" if n is None else f"shape ({n},), one owner per record"
        raise ParameterError(
            f"The 'owners' parameter of {owner} must be a 1-d array of {want}. Got shape {o.shape} instead.",
            param="owners",
        )
    return o


def partition_by_owner(owners: Any, n_teachers: int, seed: SeedLike) -> list[np.ndarray]:
    """Split records into ``n_teachers`` disjoint partitions, never splitting an owner.

    Owners are dealt largest first (ties in random order) to the partition holding the fewest records
    so far (the longest-processing-time rule), so partition sizes differ by at most the largest
    owner's record count. With one record per owner every partition gets ``n // n_teachers`` or one
    more records.

    Parameters
    ----------
    owners : array of shape (n,)
        Who each record belongs to (any hashable values: ints, strings).
    n_teachers : int >= 2
        Number of partitions. Must not exceed the number of distinct owners.
    seed : int, SeedSequence or Generator
        Order of owners with equal record counts (which teacher gets whom).

    Returns
    -------
    list of int64 arrays
        Record indices of each partition, sorted.

    Raises
    ------
    ParameterError
        Fewer than two teachers, or more teachers than owners (some teacher would get no data).

    Examples
    --------
    >>> parts = partition_by_owner([0, 0, 1, 2, 2, 2], 2, seed=0)
    >>> sorted(len(p) for p in parts)
    [3, 3]
    """
    owner = "partition_by_owner"
    check_param("n_teachers", n_teachers, owner, _AT_LEAST_TWO)
    o = _owners_array(owners, None, owner)
    uniq, inv, counts = np.unique(o, return_inverse=True, return_counts=True)
    if uniq.size < n_teachers:
        raise ParameterError(
            f"The 'n_teachers' parameter of {owner} must be at most the number of distinct owners "
            f"({uniq.size}): every teacher needs at least one owner's records. Got {n_teachers} instead.",
            param="n_teachers",
        )
    rng = as_generator(seed)
    tie = rng.permutation(uniq.size)
    order = np.lexsort((tie, -counts))  # largest owners first, ties in random order
    if np.all(counts == 1):
        # One record per owner: dealing in turn is exactly the greedy rule (and fast for 60,000 owners).
        assignment = np.empty(uniq.size, dtype=np.int64)
        assignment[order] = np.arange(uniq.size) % n_teachers
    else:
        heap = [(0, t) for t in range(n_teachers)]
        assignment = np.empty(uniq.size, dtype=np.int64)
        for u in order:
            size, t = heapq.heappop(heap)
            assignment[u] = t
            heapq.heappush(heap, (size + int(counts[u]), t))
    record_teacher = assignment[inv]
    sort = np.argsort(record_teacher, kind="stable")
    bounds = np.searchsorted(record_teacher[sort], np.arange(n_teachers + 1))
    return [np.sort(sort[bounds[t] : bounds[t + 1]]).astype(np.int64) for t in range(n_teachers)]


def check_partitions(partitions: Sequence[Any], n_records: int, owners: Any = None) -> list[np.ndarray]:
    """Validate explicit teacher partitions; return them as int64 arrays.

    Refuses fewer than two partitions, an empty partition, indices outside ``[0, n_records)``, a
    record in two partitions, and (given ``owners``) an owner whose records lie in more than one
    partition: PATE's per-teacher guarantee would then not cover that owner. Records in no partition
    are allowed (they are not used).

    Raises
    ------
    ParameterError
        With a message naming the first offending partition, record or owner.
    """
    owner = "check_partitions"
    if not isinstance(partitions, Sequence) or isinstance(partitions, (str, bytes)):
        raise ParameterError(
            f"The 'partitions' parameter of {owner} must be a sequence of index arrays, one per teacher. "
            f"Got {type(partitions).__name__} instead.",
            param="partitions",
        )
    if len(partitions) < 2:
        raise ParameterError(
            f"The 'partitions' parameter of {owner} must hold at least 2 partitions (PATE's privacy rests on "
            f"no single teacher deciding a label). Got {len(partitions)} instead.",
            param="partitions",
        )
    out: list[np.ndarray] = []
    for i, p in enumerate(partitions):
        a = np.asarray(p)
        if a.ndim != 1 or a.size == 0 or a.dtype.kind not in "iu":
            raise ParameterError(
                f"The 'partitions' parameter of {owner} must hold non-empty 1-d integer index arrays. "
                f"Got partition {i} of dtype {a.dtype} and shape {a.shape} instead.",
                param="partitions",
            )
        if a.min() < 0 or a.max() >= n_records:
            raise ParameterError(
                f"The 'partitions' parameter of {owner} must index records in [0, {n_records}). Got partition "
                f"{i} with indices in [{a.min()}, {a.max()}] instead.",
                param="partitions",
            )
        out.append(a.astype(np.int64))
    flat = np.concatenate(out)
    which = np.repeat(np.arange(len(out)), [a.size for a in out])
    uniq, counts = np.unique(flat, return_counts=True)
    if np.any(counts > 1):
        rec = int(uniq[np.argmax(counts > 1)])
        parts = sorted(set(which[flat == rec].tolist()))
        raise ParameterError(
            f"The 'partitions' parameter of {owner} must be disjoint. Got record {rec} in partitions {parts} "
            f"({int(np.sum(counts > 1))} records in more than one partition) instead.",
            param="partitions",
        )
    if owners is not None:
        o = _owners_array(owners, n_records, owner)[flat]
        ou, oinv = np.unique(o, return_inverse=True)
        pairs = np.unique(np.stack([oinv, which]), axis=1)
        per_owner = np.bincount(pairs[0], minlength=ou.size)
        if np.any(per_owner > 1):
            k = int(np.argmax(per_owner > 1))
            parts = sorted(pairs[1][pairs[0] == k].tolist())
            raise ParameterError(
                f"The 'partitions' parameter of {owner} must keep each owner's records in one partition "
                f"(PATE's guarantee is per teacher). Got owner {ou[k].item()!r} split across partitions {parts} "
                f"({int(np.sum(per_owner > 1))} owners split) instead.",
                param="partitions",
            )
    return out


def row_hashes(X: Any) -> np.ndarray:
    """A 16-byte BLAKE2b digest of each row's values (as contiguous float64), shape (n,) of ``S16``.

    Rows equal as numbers (whatever their dtype) hash equal, so a float32 copy of a float64 row is
    found.
    """
    a = np.ascontiguousarray(np.asarray(X, dtype=np.float64).reshape(len(X), -1))
    a = a + 0.0  # turn -0.0 into 0.0 so equal numbers give equal bytes
    return np.array([hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in a], dtype="S16")


def overlap_mask(private_X: Any, public_X: Any) -> np.ndarray:
    """Boolean mask over ``public_X``: rows that equal some row of ``private_X`` exactly."""
    return np.isin(row_hashes(public_X), row_hashes(private_X))


def check_no_overlap(private_X: Any, public_X: Any) -> None:
    """Refuse public data holding exact copies of private rows (compared by row hashes).

    Raises
    ------
    ParameterError
        Naming how many public rows equal a private row. Drop them first (:func:`overlap_mask`).
    """
    mask = overlap_mask(private_X, public_X)
    k = int(mask.sum())
    if k:
        raise ParameterError(
            f"The 'public_X' parameter of PATE must not overlap the private data: the student would learn "
            f"private records directly. Got {k} of {len(mask)} public rows equal to private rows (exact "
            f"match) instead; drop them first (ppml.dp.pate.teachers.overlap_mask).",
            param="public_X",
        )


def shifted_copies(
    X: Any, y: Any, partitions: Sequence[Any], copies: int, *, max_shift: int = 2, seed: SeedLike
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Augment image partitions with randomly shifted copies of their own images.

    Every record used by some partition gets ``copies - 1`` extra versions, each shifted by a random
    whole number of pixels in ``[-max_shift, max_shift]`` along both axes (vacated pixels are 0), and
    each partition gains its own records' copies. A copy belongs to the partition, hence the owner,
    of its original, so :func:`check_partitions` still holds and PATE's per-teacher guarantee is
    unchanged. Shift augmentation is the usual remedy for tiny image training sets (Simard et al.
    2003, "Best practices for convolutional neural networks applied to visual document analysis").

    Parameters
    ----------
    X : array of shape (n, c, h, w)
        Images.
    y : array of shape (n,)
    partitions : sequence of int arrays
        Record indices of each teacher.
    copies : int >= 1
        Versions of each record afterwards (1 = no augmentation, the inputs are returned as arrays).
    max_shift : int >= 0, default 2
    seed : int, SeedSequence or Generator

    Returns
    -------
    X_aug : float32 array of shape (copies * n, c, h, w)
        ``X`` first, then the ``copies - 1`` shifted versions (rows in no partition are not shifted).
    y_aug : array of shape (copies * n,)
    partitions_aug : list of int64 arrays
        Partition ``t`` holds its records and their copies (``i + j * n`` for copy ``j``).

    Examples
    --------
    >>> X = np.zeros((4, 1, 8, 8), dtype=np.float32)
    >>> Xa, ya, pa = shifted_copies(X, np.arange(4), [np.array([0, 1]), np.array([2, 3])], 3, seed=0)
    >>> Xa.shape, [p.tolist() for p in pa]
    ((12, 1, 8, 8), [[0, 1, 4, 5, 8, 9], [2, 3, 6, 7, 10, 11]])
    """
    owner = "shifted_copies"
    Xa = np.asarray(X, dtype=np.float32)
    ya = np.asarray(y)
    if Xa.ndim != 4 or len(ya) != len(Xa):
        raise ParameterError(
            f"The 'X' parameter of {owner} must be images of shape (n, c, h, w) with one label per image. "
            f"Got X of shape {Xa.shape} and {len(ya)} labels instead.",
            param="X",
        )
    check_param("copies", copies, owner, POSITIVE_INT)
    check_param("max_shift", max_shift, owner, Interval(int, 0, min(Xa.shape[2:]) - 1, "both"))
    parts = check_partitions(partitions, len(Xa))
    n, s = len(Xa), max_shift
    rng = as_generator(seed)
    used = np.unique(np.concatenate(parts))
    padded = np.pad(Xa[used], ((0, 0), (0, 0), (s, s), (s, s)))
    h, w = Xa.shape[2:]
    out = [Xa]
    for _ in range(copies - 1):
        copy_j = Xa.copy()
        d = rng.integers(-s, s + 1, size=(used.size, 2))
        for dy in range(-s, s + 1):
            for dx in range(-s, s + 1):
                sel = np.flatnonzero((d[:, 0] == dy) & (d[:, 1] == dx))
                if sel.size:
                    copy_j[used[sel]] = padded[sel, :, s - dy : s - dy + h, s - dx : s - dx + w]
        out.append(copy_j)
    parts_aug = [np.sort(np.concatenate([p + j * n for j in range(copies)])).astype(np.int64) for p in parts]
    return np.concatenate(out), np.tile(ya, copies), parts_aug


# --------------------------------------------------------------------------- teachers


def _is_sklearn(est: Any) -> bool:
    return hasattr(est, "fit") and hasattr(est, "predict") and hasattr(est, "get_params")


class _ConstantTeacher:
    """A teacher whose partition holds one class only (scikit-learn classifiers refuse to fit it)."""

    def __init__(self, label: int) -> None:
        self.label = int(label)

    def predict(self, X: Any) -> np.ndarray:
        return np.full(len(X), self.label, dtype=np.int64)


def _fit_one(estimator: Any, X: np.ndarray, y: np.ndarray, seed: int) -> Any:
    from sklearn.base import clone

    if np.unique(y).size < 2:
        return _ConstantTeacher(int(y[0]))
    est = clone(estimator)
    if "random_state" in est.get_params():
        est.set_params(random_state=seed % (2**32))
    return est.fit(X, y)


@dataclass(eq=False)
class TeacherEnsemble:
    """The trained teachers: torch models as stacked parameters, or fitted scikit-learn estimators.

    Attributes
    ----------
    num_classes : int
    params : EnsembleParams or None
        Torch teachers (member ``t`` is teacher ``t``).
    estimators : list or None
        Fitted scikit-learn teachers.
    partition_sizes : int array
        Records each teacher was trained on.
    """

    num_classes: int
    partition_sizes: np.ndarray
    params: EnsembleParams | None = None
    estimators: list[Any] | None = None

    def __len__(self) -> int:
        return len(self.params) if self.params is not None else len(self.estimators or [])

    @property
    def kind(self) -> str:
        """``"torch"`` or ``"sklearn"``."""
        return "torch" if self.params is not None else "sklearn"

    def predict(self, X: Any, *, batch_size: int = 4096, chunk_size: int | None = None) -> np.ndarray:
        """Every teacher's predicted class for every row of ``X``: int64 array of shape (T, n)."""
        if self.params is not None:
            with torch.no_grad():
                logits = predict_ensemble(None, self.params, X, batch_size, chunk_size=chunk_size)
            return logits.argmax(dim=2).cpu().numpy().astype(np.int64)
        Xa = np.asarray(X).reshape(len(X), -1)
        return np.stack([np.asarray(e.predict(Xa)).astype(np.int64) for e in self.estimators or []])

    def votes(self, X: Any, **kwargs: Any) -> np.ndarray:
        """Vote counts ``(n, num_classes)``: each row sums to the number of teachers."""
        return votes_from_predictions(self.predict(X, **kwargs), self.num_classes)


def _as_torch_teacher(teacher: Any) -> nn.Module | None:
    if isinstance(teacher, nn.Module):
        return teacher
    if callable(teacher) and not _is_sklearn(teacher) and not isinstance(teacher, type):
        made = teacher()
        if not isinstance(made, nn.Module):
            raise ParameterError(
                "The 'teacher' parameter of train_teachers must be an nn.Module, a callable returning one, or a "
                f"scikit-learn estimator. Got a callable returning {type(made).__name__} instead.",
                param="teacher",
            )
        return made
    return None


def train_teachers(
    teacher: nn.Module | Callable[[], nn.Module] | Any,
    X: Any,
    y: Any,
    partitions: Sequence[np.ndarray],
    *,
    seed: SeedLike,
    num_classes: int | None = None,
    config: TrainConfig | None = None,
    n_jobs: int | None = None,
    chunk_size: int | None = None,
    sequential: bool = False,
    progress: bool = False,
) -> TeacherEnsemble:
    """Train one teacher per partition.

    Parameters
    ----------
    teacher : nn.Module, callable returning an nn.Module, or scikit-learn estimator
        Torch: the architecture; every teacher starts from its own initialisation (drawn from
        ``seed``) and trains on its partition with :func:`~ppml.train.ensemble.train_ensemble`
        (vectorized; no BatchNorm, no active dropout). scikit-learn: cloned per teacher (its
        ``random_state``, if any, set from ``seed``) and fitted in parallel processes; a partition
        with a single class gives a teacher that always predicts it.
    X, y : arrays
        The private data (``y`` int labels ``0 .. num_classes - 1``).
    partitions : sequence of int arrays
        Record indices of each teacher (:func:`partition_by_owner`; checked by :func:`check_partitions`).
    seed : int, SeedSequence or Generator
    num_classes : int, optional
        Default ``max(y) + 1``.
    config : TrainConfig, optional
        Torch teachers' SGD settings; default ``TrainConfig(epochs=40, batch_size=32, lr=0.05,
        momentum=0.9)``.
    n_jobs : int, optional
        Worker processes (``None`` = 1, ``-1`` = all cores): scikit-learn teachers are fitted in
        joblib processes; torch teachers are split over processes, each training its share vectorized
        (``train_ensemble(n_jobs=...)``). Does not change the result.
    chunk_size : int, optional
        Torch teachers trained per vectorized call (bounds memory; does not change the result).
    sequential : bool, default False
        Torch teachers one after another (:func:`~ppml.train.ensemble.train_ensemble_sequential`, the
        same result within float32 tolerance; the speed benchmark's baseline).
    progress : bool

    Returns
    -------
    TeacherEnsemble
    """
    owner = "train_teachers"
    yv = np.asarray(y)
    if yv.ndim != 1 or yv.dtype.kind not in "iu" or len(yv) != len(X):
        raise ParameterError(
            f"The 'y' parameter of {owner} must be integer labels of shape ({len(X)},). "
            f"Got {yv.dtype} of shape {yv.shape} instead.",
            param="y",
        )
    if yv.size and yv.min() < 0:
        raise ParameterError(
            f"The 'y' parameter of {owner} must hold labels >= 0. Got {int(yv.min())} instead.", param="y"
        )
    c = int(yv.max()) + 1 if num_classes is None else num_classes
    check_param("num_classes", c, owner, _AT_LEAST_TWO)
    if yv.size and yv.max() >= c:
        raise ParameterError(
            f"The 'y' parameter of {owner} must hold labels below num_classes={c}. Got {int(yv.max())} instead.",
            param="y",
        )
    check_param("n_jobs", n_jobs, owner, Interval(int, -1, None, "left"), None)
    check_param("chunk_size", chunk_size, owner, POSITIVE_INT, None)
    parts = check_partitions(partitions, len(yv))
    sizes = np.array([p.size for p in parts], dtype=np.int64)
    model = _as_torch_teacher(teacher)
    if model is not None:
        cfg = config or TrainConfig(epochs=40, batch_size=32, lr=0.05, momentum=0.9)
        Xt = X if isinstance(X, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        yt = torch.from_numpy(yv.astype(np.int64))
        if sequential:
            params = train_ensemble_sequential(model, Xt, yt, parts, cfg, seed, progress=progress)
        else:
            params = train_ensemble(
                model,
                Xt,
                yt,
                parts,
                cfg,
                seed,
                chunk_size=chunk_size,
                n_jobs=1 if n_jobs is None else n_jobs,
                progress=progress,
            )
        return TeacherEnsemble(c, sizes, params=params)
    if not _is_sklearn(teacher):
        raise ParameterError(
            f"The 'teacher' parameter of {owner} must be an nn.Module, a callable returning one, or a "
            f"scikit-learn estimator. Got {type(teacher).__name__} instead.",
            param="teacher",
        )
    from joblib import Parallel, delayed

    Xa = np.asarray(X).reshape(len(X), -1)
    seeds = [derive_seed(g) for g in spawn(as_generator(seed), len(parts))]
    fitted = Parallel(n_jobs=n_jobs)(
        delayed(_fit_one)(teacher, Xa[p], yv[p], s) for p, s in zip(parts, seeds, strict=True)
    )
    return TeacherEnsemble(c, sizes, estimators=list(fitted))
