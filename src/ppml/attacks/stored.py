"""Reconstruction from models that store training vectors: support vectors, neighbours, kernel samples.

Some models *are* part of their training set. A kernel SVM keeps its support vectors
(``support_vectors_``) and needs them to predict (Cortes and Vapnik 1995); a k-nearest-neighbour
model keeps every training row (``_fit_X`` in scikit-learn); a kernel density estimate keeps its whole
sample in its search tree. Whoever holds the fitted model (a white box) therefore holds those records
verbatim: the "attack" is reading attributes. Shokri et al. (2017) and the seeds' threat list name
this leak; Veale, Binns and Edwards ("Algorithms that remember", 2018) argue that such models are
personal data themselves.

:class:`StoredVectorExtraction` reads the stored rows (with their labels where the model keeps
them) of scikit-learn estimators, and of a :class:`~sklearn.pipeline.Pipeline` whose earlier steps it
undoes with their ``inverse_transform``. A parametric model (logistic regression, a linear SVM, a neural
network) stores no training rows and yields nothing here; training with differential privacy bounds
what any released model, stored vectors or not, reveals about one record.

Ground truth reaches only :func:`score_extraction`, which counts training rows recovered *exactly*
(rows compared by hashing their float64 bytes).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from .._validation import Interval, check_param
from .base import Access, Attack, AttackResult, ThreatModelError

__all__ = [
    "StoredVectors",
    "StoredVectorExtraction",
    "register_extractor",
    "score_extraction",
    "row_hashes",
]

StoredVectors = tuple[np.ndarray, np.ndarray | None, str]
"""What an extractor returns: ``(rows, labels or None, where they were stored)``."""

_EXTRACTORS: list[tuple[type, Callable[[Any], StoredVectors]]] = []


def register_extractor(estimator_type: type, extractor: Callable[[Any], StoredVectors]) -> None:
    """Teach :class:`StoredVectorExtraction` to read another estimator type.

    ``extractor(fitted_estimator)`` returns ``(rows, labels or None, source)``; rows of shape
    ``(m, d)``. Later registrations take precedence; subclasses match.
    """
    if not isinstance(estimator_type, type) or not callable(extractor):
        raise TypeError("register_extractor needs a class and a callable.")
    _EXTRACTORS.insert(0, (estimator_type, extractor))


def _svm(est: Any) -> StoredVectors:
    sv = np.asarray(est.support_vectors_)
    labels = None
    if hasattr(est, "classes_") and hasattr(est, "n_support_") and sv.shape[0] == int(np.sum(est.n_support_)):
        # libsvm groups the support vectors by class, in the order of classes_.
        labels = np.repeat(np.asarray(est.classes_), np.asarray(est.n_support_, dtype=np.int64))
    return sv, labels, "support_vectors_"


def _neighbors(est: Any) -> StoredVectors:
    rows = np.asarray(est._fit_X)
    labels = None
    y = getattr(est, "_y", None)
    if y is not None:
        y = np.asarray(y)
        classes = getattr(est, "classes_", None)
        if classes is None:
            labels = y  # regressors store the targets themselves
        elif y.ndim == 1:
            labels = np.asarray(classes)[y]  # classifiers store class indices
        else:
            labels = np.stack([np.asarray(c)[y[:, j]] for j, c in enumerate(classes)], axis=1)
    return rows, labels, "_fit_X"


def _kernel_density(est: Any) -> StoredVectors:
    return np.asarray(est.tree_.data), None, "tree_.data"


def _default_extractors() -> None:
    from sklearn.neighbors import KernelDensity, NearestNeighbors
    from sklearn.neighbors._base import KNeighborsMixin, RadiusNeighborsMixin
    from sklearn.svm._base import BaseLibSVM

    for t, f in (
        (BaseLibSVM, _svm),
        (KNeighborsMixin, _neighbors),
        (RadiusNeighborsMixin, _neighbors),
        (NearestNeighbors, _neighbors),
        (KernelDensity, _kernel_density),
    ):
        _EXTRACTORS.append((t, f))


def _extract(est: Any) -> StoredVectors | None:
    if not _EXTRACTORS:
        _default_extractors()
    for t, f in _EXTRACTORS:
        if isinstance(est, t):
            return f(est)
    return None


class StoredVectorExtraction(Attack):
    """Read the training vectors a fitted model keeps (white-box access to the estimator object).

    Parameters
    ----------
    threat_model : ThreatModel
        Must grant ``parameters``: the adversary holds the fitted estimator (a stolen or published
        model file). A prediction API (labels, confidences) is refused with
        :class:`~ppml.attacks.base.ThreatModelError`.

    Notes
    -----
    Supported out of the box: scikit-learn SVMs (``SVC``, ``NuSVC``, ``SVR``, ``NuSVR``,
    ``OneClassSVM``: ``support_vectors_``, with labels for classifiers from ``n_support_``), every
    neighbours estimator (``KNeighborsClassifier``/``Regressor``, ``RadiusNeighbors*``,
    ``NearestNeighbors``: ``_fit_X`` and, for classifiers and regressors, the stored ``_y``) and
    ``KernelDensity`` (``tree_.data``). A ``Pipeline`` is read at its last step and the rows are mapped
    back through the earlier steps' ``inverse_transform`` (e.g. a ``StandardScaler``). Other types
    can be taught with :func:`register_extractor`. An estimator of any other type is reported as
    storing no training vectors.
    """

    name = "stored vector extraction"
    requires = (Access.PARAMETERS,)

    def run(self, observations: Any) -> AttackResult:
        """Extract the stored rows of a fitted estimator.

        Parameters
        ----------
        observations : fitted scikit-learn estimator or Pipeline
            The model object itself.

        Returns
        -------
        AttackResult
            ``guesses``: ``{"rows": ndarray (m, d), "labels": ndarray (m,) or None}``; ``details``:
            ``estimator``, ``source`` (the attribute read, or ``"nothing stored"``), ``n_extracted``,
            ``stores_training_vectors``.
        """
        t0 = time.perf_counter()
        est = observations
        from sklearn.pipeline import Pipeline

        if hasattr(est, "exposes") and Access.PARAMETERS not in getattr(est, "exposes", ()):
            raise ThreatModelError(
                f"{self.name} needs parameters (the fitted estimator) but the target is a black box "
                f"exposing only {', '.join(sorted(a.value for a in est.exposes))}."
            )
        if hasattr(est, "exposes") and hasattr(est, "model"):
            est = est.model
        pre: list[Any] = []
        if isinstance(est, Pipeline):
            pre = [step for _, step in est.steps[:-1] if step not in (None, "passthrough")]
            est = est.steps[-1][1]
        found = _extract(est)
        if found is None:
            rows, labels, source = np.zeros((0, 0)), None, "nothing stored"
        else:
            rows, labels, source = found
            rows = np.asarray(rows)
            if rows.ndim != 2:
                rows = rows.reshape(len(rows), -1)
            for step in reversed(pre):
                if not hasattr(step, "inverse_transform"):
                    raise ValueError(
                        f"{self.name}: pipeline step {type(step).__name__} has no inverse_transform, so the "
                        "stored rows cannot be mapped back to the input space."
                    )
                rows = np.asarray(step.inverse_transform(rows))
        return AttackResult(
            attack=self.name,
            threat_model=self.threat_model,
            guesses={"rows": rows, "labels": labels},
            details={
                "estimator": type(est).__name__,
                "source": source,
                "n_extracted": int(rows.shape[0]),
                "stores_training_vectors": found is not None,
                "pipeline_steps_inverted": [type(s).__name__ for s in pre],
            },
            seconds=time.perf_counter() - t0,
        )


def row_hashes(rows: Any, *, decimals: int | None = None) -> list[bytes]:
    """One digest per row of its float64 bytes (``-0.0`` read as ``0.0``), optionally after rounding.

    Two rows get the same digest exactly when their float64 values are equal (BLAKE2b, 16 bytes).
    """
    a = np.asarray(rows, dtype=np.float64)
    a = a.reshape(len(a), -1)
    if decimals is not None:
        a = np.round(a, decimals)
    a = np.ascontiguousarray(a + 0.0)
    return [hashlib.blake2b(r.tobytes(), digest_size=16).digest() for r in a]


def score_extraction(
    result: AttackResult, X_train: Any, y_train: Any = None, *, decimals: int | None = None
) -> AttackResult:
    """Score an extraction against the training set; return a copy of the result with metrics.

    Parameters
    ----------
    result : AttackResult
        From :class:`StoredVectorExtraction`.
    X_train : array-like of shape (n, d)
        The training records (ground truth, used here only).
    y_train : array-like of shape (n,), optional
        Their labels, to check the extracted labels.
    decimals : int >= 0, optional
        Compare rows after rounding to this many decimals (for rows mapped back through a
        pipeline's ``inverse_transform``, which can differ in the last bits); None compares exactly.

    Returns
    -------
    AttackResult
        Metrics ``recovered_share`` (training records whose exact row is among the extracted ones),
        ``extracted_precision`` (extracted rows that are training rows; 0 when nothing was extracted),
        ``n_train``, ``n_extracted`` and, when labels are available on both sides,
        ``label_accuracy`` (extracted rows that are training rows and carry a label of that row).
    """
    check_param("decimals", decimals, "score_extraction", Interval(int, 0, None, "left"), None)
    if not isinstance(result, AttackResult) or not isinstance(result.guesses, dict):
        raise ValueError("score_extraction expects the AttackResult of StoredVectorExtraction.")
    X = np.asarray(X_train)
    n = len(X)
    if n == 0:
        raise ValueError("score_extraction: X_train holds no records.")
    rows = np.asarray(result.guesses["rows"])
    labels = result.guesses.get("labels")
    train_h = row_hashes(X, decimals=decimals)
    metrics: dict[str, float] = {"n_train": float(n), "n_extracted": float(len(rows))}
    if len(rows) == 0:
        metrics.update(recovered_share=0.0, extracted_precision=0.0)
        return result.with_metrics(**metrics)
    if rows.reshape(len(rows), -1).shape[1] != X.reshape(n, -1).shape[1]:
        raise ValueError(
            f"score_extraction: extracted rows have {rows.reshape(len(rows), -1).shape[1]} columns, "
            f"the training records {X.reshape(n, -1).shape[1]}."
        )
    ext_h = row_hashes(rows, decimals=decimals)
    ext_set = set(ext_h)
    train_labels: dict[bytes, set[Any]] = {}
    y = None if y_train is None else np.asarray(y_train)
    for i, h in enumerate(train_h):
        train_labels.setdefault(h, set())
        if y is not None:
            train_labels[h].add(y[i].item())
    metrics["recovered_share"] = float(np.mean([h in ext_set for h in train_h]))
    in_train = [h in train_labels for h in ext_h]
    metrics["extracted_precision"] = float(np.mean(in_train))
    if labels is not None and y is not None and np.asarray(labels).ndim == 1:
        lab = np.asarray(labels)
        ok = [
            t and lab[i].item() in train_labels[h]
            for i, (h, t) in enumerate(zip(ext_h, in_train, strict=True))
        ]
        metrics["label_accuracy"] = float(np.mean(ok))
    return result.with_metrics(**metrics)
