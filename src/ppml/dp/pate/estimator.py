"""``PATE``: private aggregation of teacher ensembles as one scikit-learn-shaped estimator.

``PATE(...).fit(private_X, private_y, owners=..., public_X=...)`` partitions the private data by
owner, trains the teachers (vectorized torch or parallel scikit-learn), asks them about the first
``n_queries`` public rows through a noisy aggregator with a budget, releases the data-dependent
epsilon through smooth sensitivity, trains the student on the answers (and, optionally, self-trains
on the rest of the public data), and then forgets the teachers and their votes. ``predict`` and
``predict_proba`` are the student's; :meth:`PATE.privacy_report` says what was spent.

References: Papernot et al. 2017, "Semi-supervised knowledge transfer for deep learning from private
training data" (ICLR); Papernot et al. 2018, "Scalable private learning with PATE" (ICLR).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from torch import nn

from ..._rng import SeedLike, as_generator, spawn
from ..._validation import (
    POSITIVE_FLOAT,
    POSITIVE_INT,
    UNIT_OPEN,
    Interval,
    Options,
    ParameterError,
    check_param,
)
from ...models.zoo import MODEL_NAMES, build_model
from ...train.loop import TrainConfig
from .aggregators import (
    Answers,
    ConfidentGNMax,
    GNMax,
    InteractiveGNMax,
    LNMax,
    PATEBudgetExceededError,
)
from .analysis import CONVERSIONS, PATEAccountant, release_data_dependent_epsilon
from .student import PATEStudent
from .teachers import (
    TeacherEnsemble,
    check_no_overlap,
    check_partitions,
    partition_by_owner,
    train_teachers,
)

__all__ = ["PATE", "DEFAULT_RELEASE"]

DEFAULT_RELEASE: tuple[float, float, float] = (14.0, 0.0329, 6.23)
"""(order, beta, sigma) of the smooth-sensitivity release: Papernot et al. 2018's MNIST parameters."""

_AGGREGATORS = (LNMax, GNMax, ConfidentGNMax, InteractiveGNMax)
_PRIVATE_ATTRS = ("teachers_", "votes_")


class PATE:
    """Private aggregation of teacher ensembles: teachers on private data, a student on public data.

    Parameters
    ----------
    n_teachers : int >= 2, default 250
        Teachers, each trained on a disjoint partition of whole owners.
    aggregator : LNMax, GNMax, ConfidentGNMax or InteractiveGNMax, optional
        Default ``ConfidentGNMax(threshold=200, sigma1=150, sigma2=40)`` (Papernot et al. 2018, MNIST,
        250 teachers). With ``secure=True`` on the aggregator the noise comes from the OS CSPRNG.
    teacher : {"logistic", "mlp", "cnn"}, nn.Module, callable returning one, or scikit-learn estimator
        The teachers' model (names build :func:`ppml.models.build_model` for the data's shape).
    student : PATEStudent, {"logistic", "mlp", "cnn"}, nn.Module, callable, scikit-learn classifier, optional
        Default: a :class:`PATEStudent` (self-training) of the teacher's architecture when that is torch
        or a name, else ``"mlp"``. Anything but a PATEStudent is wrapped in one with its defaults.
    teacher_config : TrainConfig, optional
        Torch teachers' SGD settings (:func:`~ppml.dp.pate.teachers.train_teachers` default).
    epsilon_budget : float > 0, optional
        Data-independent epsilon at ``delta`` that the answers may spend; queries past it are refused
        (counted in :meth:`privacy_report`) and the student learns from those answered before.
    delta : float in (0, 1), default 1e-5
    conversion : {"dp_accounting", "classic"}, default "dp_accounting"
        RDP to (epsilon, delta); the papers used "classic" (:func:`~ppml.dp.pate.analysis.epsilon_from_rdp`).
    release : (order, beta, sigma) or None, default :data:`DEFAULT_RELEASE`
        Smooth-sensitivity release of the data-dependent epsilon (GNMax-family aggregators only; LNMax
        has no such analysis here). ``None`` skips it.
    interactive_rounds : int >= 1, default 2
        InteractiveGNMax only: the queries are asked in this many batches; before each, the student is
        trained on the answers so far (before the first, its probabilities are uniform).
    n_jobs : int, optional
        scikit-learn teachers: joblib processes.
    chunk_size : int, optional
        Torch teachers per vectorized call (memory bound).
    keep_teachers : bool, default False
        Keep ``teachers_`` and ``votes_`` after fit, for analysis. They are private: never pickled
        (``__getstate__`` drops them) and never in :meth:`privacy_report`.
    seed : int, SeedSequence or Generator, default 0
        Partition, teacher initialisation and batch order, aggregator noise (unless secure), release
        noise and student.

    Attributes
    ----------
    student_ : PATEStudent
        The deployable model.
    query_labels_ : int array (n_queries,)
        The released label of each query asked (``-1``: not answered or refused).
    n_answered_, n_refused_ : int
    epsilon_ : float
        Data-independent epsilon at ``delta`` (the guarantee; the budget is enforced on it).
    epsilon_data_dependent_ : float
        Data-dependent epsilon: a function of the votes, hence sensitive; publish
        ``epsilon_data_dependent_released_`` instead.
    epsilon_data_dependent_released_ : float or None
        Published through smooth sensitivity (covers the answers and the release).
    num_classes_ : int

    Privacy guarantee
    -----------------
    Each teacher sees a disjoint partition of whole owners, so one owner changes at most one vote per
    query; the answers are ``(epsilon_, delta)``-DP per owner (the aggregator's analysis), and the
    student, trained only on public inputs and the answers, is post-processing. The teachers, the
    votes and the data-dependent epsilon are not released.
    """

    def __init__(
        self,
        n_teachers: int = 250,
        aggregator: LNMax | GNMax | ConfidentGNMax | InteractiveGNMax | None = None,
        teacher: str | nn.Module | Callable[[], nn.Module] | Any = "mlp",
        student: PATEStudent | str | nn.Module | Callable[[], nn.Module] | Any | None = None,
        *,
        teacher_config: TrainConfig | None = None,
        epsilon_budget: float | None = None,
        delta: float = 1e-5,
        conversion: str = "dp_accounting",
        release: tuple[float, float, float] | None = DEFAULT_RELEASE,
        interactive_rounds: int = 2,
        n_jobs: int | None = None,
        chunk_size: int | None = None,
        keep_teachers: bool = False,
        seed: SeedLike = 0,
    ) -> None:
        self.n_teachers = n_teachers
        self.aggregator = aggregator
        self.teacher = teacher
        self.student = student
        self.teacher_config = teacher_config
        self.epsilon_budget = epsilon_budget
        self.delta = delta
        self.conversion = conversion
        self.release = release
        self.interactive_rounds = interactive_rounds
        self.n_jobs = n_jobs
        self.chunk_size = chunk_size
        self.keep_teachers = keep_teachers
        self.seed = seed

    # ------------------------------------------------------------------ helpers
    def _aggregator(self) -> Any:
        agg = self.aggregator if self.aggregator is not None else ConfidentGNMax(200.0, 150.0, 40.0)
        if not isinstance(agg, _AGGREGATORS):
            raise ParameterError(
                "The 'aggregator' parameter of PATE must be an instance of LNMax, GNMax, ConfidentGNMax or "
                f"InteractiveGNMax. Got {agg!r} instead.",
                param="aggregator",
            )
        return agg

    def _validate(self) -> None:
        owner = "PATE"
        check_param("n_teachers", self.n_teachers, owner, Interval(int, 2, None, "left"))
        check_param("epsilon_budget", self.epsilon_budget, owner, POSITIVE_FLOAT, None)
        check_param("delta", self.delta, owner, UNIT_OPEN)
        check_param("conversion", self.conversion, owner, Options(CONVERSIONS))
        check_param("interactive_rounds", self.interactive_rounds, owner, POSITIVE_INT)
        check_param("keep_teachers", self.keep_teachers, owner, bool)
        check_param("teacher_config", self.teacher_config, owner, TrainConfig, None)
        if self.release is not None:
            r = tuple(self.release) if isinstance(self.release, (tuple, list)) else ()
            if len(r) != 3 or not all(isinstance(v, (int, float)) and v > 0 for v in r):
                raise ParameterError(
                    "The 'release' parameter of PATE must be None or a tuple (order, beta, sigma) of positive "
                    f"numbers. Got {self.release!r} instead.",
                    param="release",
                )
        if isinstance(self.teacher, str):
            check_param("teacher", self.teacher, owner, Options(MODEL_NAMES))

    @staticmethod
    def _model(spec: Any, input_shape: tuple[int, ...], num_classes: int, seed: int) -> Any:
        if isinstance(spec, str):
            return build_model(spec, input_shape, num_classes, seed=seed)
        return spec

    def _student(self, input_shape: tuple[int, ...], num_classes: int, seed: SeedLike) -> PATEStudent:
        spec = self.student
        if isinstance(spec, PATEStudent):
            st = copy.deepcopy(spec)
            st.seed = seed
            return st
        if spec is None:
            is_torch = isinstance(self.teacher, (str, nn.Module)) or (
                callable(self.teacher) and not hasattr(self.teacher, "get_params")
            )
            spec = copy.deepcopy(self.teacher) if is_torch else "mlp"
        if isinstance(spec, str):
            check_param("student", spec, "PATE", Options(MODEL_NAMES), PATEStudent, nn.Module)
            spec = build_model(spec, input_shape, num_classes, seed=0)
        return PATEStudent(spec, seed=seed)

    # ------------------------------------------------------------------ fit
    def fit(
        self,
        private_X: Any,
        private_y: Any,
        *,
        public_X: Any,
        owners: Any = None,
        partitions: Sequence[Any] | None = None,
        n_queries: int | None = None,
        num_classes: int | None = None,
        progress: bool = False,
    ) -> PATE:
        """Train teachers on the private data, answer queries, train the student.

        Parameters
        ----------
        private_X, private_y : arrays
            The sensitive training data (labels ``0 .. num_classes - 1``).
        public_X : array
            Unlabelled public inputs: the first ``n_queries`` rows are the queries; the rest (and the
            unanswered queries) are the student's unlabelled data. Must share no row with ``private_X``.
        owners : array (n,), optional
            Who each private record belongs to; default: each record is its own owner.
        partitions : sequence of index arrays, optional
            Explicit teacher partitions instead of :func:`~ppml.dp.pate.teachers.partition_by_owner`
            (then ``n_teachers`` must equal their number; an owner split across partitions is refused).
        n_queries : int, optional
            Default: every public row.
        num_classes : int, optional
            Default ``max(private_y) + 1``.
        progress : bool

        Raises
        ------
        ParameterError
            Bad parameters, fewer than two teachers, overlapping public data, a partition splitting an
            owner, or no query answered at all.
        """
        self._validate()
        agg = self._aggregator()
        owner = "PATE.fit"
        X = np.asarray(private_X, dtype=np.float32)
        y = np.asarray(private_y)
        if y.ndim != 1 or y.dtype.kind not in "iu" or len(y) != len(X):
            raise ParameterError(
                f"The 'private_y' parameter of {owner} must be integer labels, one per row of private_X "
                f"({len(X)}). Got {y.dtype} of shape {y.shape} instead.",
                param="private_y",
            )
        if public_X is None:
            raise ParameterError(f"The 'public_X' parameter of {owner} must be an array. Got None instead.")
        P = np.asarray(public_X, dtype=np.float32)
        if P.ndim != X.ndim or P.shape[1:] != X.shape[1:] or len(P) == 0:
            raise ParameterError(
                f"The 'public_X' parameter of {owner} must be a non-empty array with rows shaped like "
                f"private_X's {X.shape[1:]}. Got shape {P.shape} instead.",
                param="public_X",
            )
        c = int(y.max()) + 1 if num_classes is None else num_classes
        check_param("num_classes", c, owner, Interval(int, 2, None, "left"))
        nq = len(P) if n_queries is None else n_queries
        check_param("n_queries", nq, owner, Interval(int, 1, len(P), "both"))
        check_no_overlap(X, P)

        rng = as_generator(self.seed)
        r_part, r_teach, r_noise, r_release, r_student = spawn(rng, 5)
        if partitions is not None:
            parts = check_partitions(partitions, len(X), owners)
            if len(parts) != self.n_teachers:
                raise ParameterError(
                    f"The 'n_teachers' parameter of PATE must equal the number of partitions given "
                    f"({len(parts)}). Got {self.n_teachers} instead.",
                    param="n_teachers",
                )
        else:
            own = np.arange(len(X)) if owners is None else np.asarray(owners)
            if own.shape != (len(X),):
                raise ParameterError(
                    f"The 'owners' parameter of {owner} must have one entry per private record ({len(X)}). "
                    f"Got shape {own.shape} instead.",
                    param="owners",
                )
            parts = partition_by_owner(own, self.n_teachers, r_part)

        input_shape = tuple(int(s) for s in X.shape[1:])
        teacher = self._model(self.teacher, input_shape, c, seed=0)
        teachers = train_teachers(
            teacher,
            X,
            y,
            parts,
            seed=r_teach,
            num_classes=c,
            config=self.teacher_config,
            n_jobs=self.n_jobs,
            chunk_size=self.chunk_size,
            progress=progress,
        )
        queries = P[:nq]
        votes = teachers.votes(queries)
        accountant = PATEAccountant(self.delta, self.epsilon_budget, conversion=self.conversion)
        noise_rng = None if agg.secure else r_noise
        student = self._student(input_shape, c, r_student)
        rest = P[nq:]

        if isinstance(agg, InteractiveGNMax):
            answers, check_votes = self._interactive(
                agg, votes, queries, rest, accountant, noise_rng, student, c
            )
        else:
            answers, check_votes = self._answer(agg, votes, accountant, noise_rng), None
        k = len(answers)
        labels = np.full(nq, -1, dtype=np.int64)
        labels[:k] = answers.labels
        labeled = labels >= 0
        self.num_classes_ = c
        self.n_teachers_ = len(teachers)
        self.n_queries_ = nq
        self.n_asked_ = k
        self.n_refused_ = nq - k
        self.n_answered_ = answers.num_answered
        self.n_from_student_ = int(answers.from_student.sum())
        self.query_labels_ = labels
        self.epsilon_ = accountant.epsilon()
        self.epsilon_data_dependent_ = accountant.data_dependent_epsilon()
        self.rdp_orders_ = np.asarray(accountant.orders)
        self.rdp_data_independent_ = accountant.rdp_data_independent
        self.release_ = None
        if self.release is not None and not isinstance(agg, LNMax) and k > 0:
            order, beta, sigma = (float(v) for v in self.release)
            thr = getattr(agg, "threshold", None)
            rel = release_data_dependent_epsilon(
                votes[:k],
                np.asarray(answers.answered, dtype=bool),
                sigma2=float(getattr(agg, "sigma2", getattr(agg, "sigma", 1.0))),
                order=order,
                beta=beta,
                sigma=sigma,
                delta=self.delta,
                threshold=None if thr is None else float(thr),
                sigma1=None if thr is None else float(agg.sigma1),
                check_votes=None if check_votes is None else check_votes[:k],
                num_teachers=len(teachers),
                rng=None if agg.secure else r_release,
                secure=bool(agg.secure),
                conversion=self.conversion,
            )
            self.release_ = rel.public()
        self.epsilon_data_dependent_released_ = (
            None if self.release_ is None else float(self.release_["epsilon"])
        )
        if not labeled.any():
            raise ParameterError(
                f"PATE answered none of the {nq} queries (data-independent epsilon {self.epsilon_:.3g}; "
                f"{self.n_refused_} refused by the budget): raise 'epsilon_budget' or lower the aggregator's "
                "threshold.",
                param="epsilon_budget" if self.n_refused_ == nq else "aggregator",
            )
        if self.n_refused_:
            warnings.warn(
                f"PATE: the epsilon budget {self.epsilon_budget:g} stopped the queries after {k} of {nq}; "
                f"the student learns from the {int(labeled.sum())} labels released before.",
                RuntimeWarning,
                stacklevel=2,
            )
        unl = np.concatenate([queries[~labeled], rest]) if len(rest) or (~labeled).any() else None
        student.fit(queries[labeled], labels[labeled], unl, num_classes=c)
        self.student_ = student
        if self.keep_teachers:
            self.teachers_: TeacherEnsemble = teachers
            self.votes_: np.ndarray = votes
        return self

    def _answer(self, agg: Any, votes: np.ndarray, accountant: PATEAccountant, rng: Any) -> Answers:
        try:
            return agg.answer(votes, rng, accountant=accountant)
        except PATEBudgetExceededError as err:
            return err.answers

    def _interactive(
        self,
        agg: InteractiveGNMax,
        votes: np.ndarray,
        queries: np.ndarray,
        rest: np.ndarray,
        accountant: PATEAccountant,
        rng: Any,
        student: PATEStudent,
        c: int,
    ) -> tuple[Answers, np.ndarray]:
        """Ask the queries in batches; the student is retrained on the answers before each batch."""
        nq = len(votes)
        bounds = np.linspace(0, nq, self.interactive_rounds + 1).round().astype(int)
        parts: list[Answers] = []
        checks: list[np.ndarray] = []
        labels_so_far = np.zeros(0, dtype=np.int64)
        for b in range(self.interactive_rounds):
            lo, hi = int(bounds[b]), int(bounds[b + 1])
            if hi <= lo:
                continue
            have = labels_so_far >= 0
            if have.any():
                unl = np.concatenate([queries[: len(labels_so_far)][~have], queries[hi:], rest])
                student.fit(queries[: len(labels_so_far)][have], labels_so_far[have], unl, num_classes=c)
                probs = student.predict_proba(queries[lo:hi])
            else:
                probs = np.full((hi - lo, c), 1.0 / c)
            checks.append(agg.check_votes(votes[lo:hi], probs))
            try:
                ans = agg.answer(votes[lo:hi], rng, accountant=accountant, student_probs=probs)
            except PATEBudgetExceededError as err:
                parts.append(err.answers)
                break
            parts.append(ans)
            labels_so_far = np.concatenate([labels_so_far, ans.labels])
        answers = Answers(
            np.concatenate([a.labels for a in parts]),
            np.concatenate([a.answered for a in parts]),
            np.concatenate([a.rdp_data_independent for a in parts]),
            np.concatenate([a.rdp_data_dependent for a in parts]),
            parts[0].orders,
            np.concatenate([a.from_student for a in parts]),
        )
        return answers, np.concatenate(checks)

    # ------------------------------------------------------------------ student API
    def _check_fitted(self) -> None:
        if not hasattr(self, "student_"):
            raise AttributeError("This PATE is not fitted yet; call fit first.")

    def predict(self, X: Any) -> np.ndarray:
        """The student's predicted classes."""
        self._check_fitted()
        return self.student_.predict(X)

    def predict_proba(self, X: Any) -> np.ndarray:
        """The student's class probabilities, shape (n, num_classes)."""
        self._check_fitted()
        return self.student_.predict_proba(X)

    def score(self, X: Any, y: Any) -> float:
        """The student's accuracy on ``(X, y)``."""
        self._check_fitted()
        return self.student_.score(X, y)

    # ------------------------------------------------------------------ reporting
    def privacy_report(self) -> dict[str, Any]:
        """What the answers cost, in publishable numbers (no votes, no teachers).

        Returns
        -------
        dict
            ``aggregator`` (name and parameters), ``n_teachers``, ``queries`` (asked), ``answered``,
            ``refused`` (past the budget), ``labels_from_student`` (Interactive-GNMax),
            ``epsilon_budget``, ``delta``, ``conversion``, ``epsilon`` (= ``epsilon_data_independent``,
            the guarantee), ``epsilon_data_dependent`` (sensitive: for analysis, with a note),
            ``epsilon_data_dependent_released`` (smooth sensitivity; ``None`` for LNMax or without a
            release) and ``release`` (its public parameters).
        """
        self._check_fitted()
        agg = self._aggregator()
        params = {k: v for k, v in vars(agg).items() if isinstance(v, (int, float, bool)) or v is None}
        return {
            "mechanism": "PATE",
            "unit": "owner (one teacher's vote)",
            "aggregator": {"name": type(agg).__name__, **params},
            "n_teachers": int(self.n_teachers_),
            "queries": int(self.n_asked_),
            "queries_requested": int(self.n_queries_),
            "answered": int(self.n_answered_),
            "refused": int(self.n_refused_),
            "labels_from_student": int(self.n_from_student_),
            "epsilon_budget": self.epsilon_budget,
            "delta": float(self.delta),
            "conversion": self.conversion,
            "epsilon": float(self.epsilon_),
            "epsilon_data_independent": float(self.epsilon_),
            "epsilon_data_dependent": float(self.epsilon_data_dependent_),
            "epsilon_data_dependent_note": (
                "computed from the private data (sensitive); publish epsilon_data_dependent_released"
            ),
            "epsilon_data_dependent_released": self.epsilon_data_dependent_released_,
            "release": None if self.release_ is None else dict(self.release_),
        }

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for name in _PRIVATE_ATTRS:
            state.pop(name, None)
        return state

    def __repr__(self) -> str:
        agg = (
            self._aggregator()
            if self.aggregator is None or isinstance(self.aggregator, _AGGREGATORS)
            else None
        )
        budget = "" if self.epsilon_budget is None else f", epsilon_budget={self.epsilon_budget:g}"
        return f"PATE(n_teachers={self.n_teachers}, aggregator={agg!r}{budget}, delta={self.delta:g})"
