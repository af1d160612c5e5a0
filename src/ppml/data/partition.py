"""Partitioners: how a dataset is divided among federated clients.

Every partitioner is a small object whose constructor stores its parameters as given; the work
happens in ``partition(dataset, num_clients, rng)``, which returns one :class:`ClientData` (an
index view, no copy) per client, numbered ``0 .. num_clients - 1``. Every example lands in exactly
one client, each client's indices are sorted, and the result depends only on the parameters, the
dataset and ``rng``. The assignment is vectorised (no Python loop over examples or owners beyond
building the views), so 100,000 owners partition in a fraction of a second.

====================  ===========================================  =====================================
name                  partitioner                                  heterogeneity
====================  ===========================================  =====================================
``"iid"``             :class:`IIDPartitioner`                      none: equal-size random shares
``"dirichlet"``       :class:`DirichletPartitioner` (alpha)        label skew (Hsu et al. 2019)
``"shards"``          :class:`ShardPartitioner`                    pathological label skew (McMahan 2017)
``"by_owner"``        :class:`ByOwnerPartitioner`                  natural: one client per owner
``"quantity_skew"``   :class:`QuantitySkewPartitioner` (alpha)     unequal sizes, IID labels
====================  ===========================================  =====================================

:func:`make_partitioner` builds one from its name and parameters (for configuration files).
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from .._rng import as_generator
from .._validation import (
    NONNEG_INT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    Interval,
    Options,
    ParameterError,
    check_param,
)
from .dataset import ClientData, Dataset

__all__ = [
    "Partitioner",
    "IIDPartitioner",
    "DirichletPartitioner",
    "ShardPartitioner",
    "ByOwnerPartitioner",
    "QuantitySkewPartitioner",
    "PARTITIONERS",
    "make_partitioner",
]


class Partitioner(ABC):
    """Base class: divides a :class:`Dataset` among ``num_clients`` clients.

    Subclasses store their constructor parameters as attributes of the same name, check them in
    :meth:`_validate_params`, and implement :meth:`_assign`, which returns the client of every
    example.
    """

    #: Registry name, set by each subclass.
    name: ClassVar[str] = ""

    # -- sklearn-like parameter handling ------------------------------------------------------

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p for p in sig.parameters if p != "self"]

    def get_params(self) -> dict[str, Any]:
        """The constructor parameters, as given."""
        return {k: getattr(self, k) for k in self._param_names()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def _validate_params(self) -> None:
        """Raise :class:`ParameterError` if a constructor parameter is out of range (none by default)."""
        return None

    # -- the work ------------------------------------------------------------------------------

    def _max_clients(self, dataset: Dataset) -> int:
        """The largest ``num_clients`` this partitioner can serve for ``dataset``."""
        return len(dataset)

    def _check_call(self, dataset: Dataset, num_clients: Any, rng: Any) -> tuple[int, np.random.Generator]:
        owner = f"{type(self).__name__}.partition"
        self._validate_params()
        check_param("dataset", dataset, owner, Dataset)
        if len(dataset) == 0:
            raise ParameterError(
                f"The 'dataset' parameter of {owner} must be a non-empty Dataset. Got {dataset.name!r} "
                "with 0 examples instead.",
                param="dataset",
            )
        check_param("num_clients", num_clients, owner, Interval(int, 1, self._max_clients(dataset)))
        check_param("rng", rng, owner, np.random.Generator, Interval(int, 0, None))
        return int(num_clients), as_generator(rng)

    def partition(
        self, dataset: Dataset, num_clients: int, rng: np.random.Generator | int
    ) -> list[ClientData]:
        """Divide ``dataset`` among ``num_clients`` clients.

        Parameters
        ----------
        dataset : Dataset
            The examples to divide.
        num_clients : int
            Number of clients, in ``[1, n]`` (narrower where the partitioner needs it).
        rng : numpy.random.Generator or int
            Source of randomness (an int seeds a fresh Generator).

        Returns
        -------
        list of ClientData
            ``num_clients`` index views whose indices together cover every example exactly once.
        """
        k, gen = self._check_call(dataset, num_clients, rng)
        client_of = self._assign(dataset, k, gen)
        return _group(dataset, client_of, k)

    @abstractmethod
    def _assign(self, dataset: Dataset, num_clients: int, rng: np.random.Generator) -> np.ndarray:
        """The client (``0 .. num_clients - 1``) of every example, shape (n,) int64."""


def _group(
    dataset: Dataset, client_of: np.ndarray, num_clients: int, owners: list[int | None] | None = None
) -> list[ClientData]:
    """Turn per-example client ids into sorted index views, one per client."""
    order = np.argsort(client_of, kind="stable").astype(np.int64, copy=False)
    order.flags.writeable = False
    counts = np.bincount(client_of, minlength=num_clients)
    parts = np.split(order, np.cumsum(counts)[:-1])
    if owners is None:
        return [ClientData(client_id=i, indices=p, parent=dataset) for i, p in enumerate(parts)]
    return [
        ClientData(client_id=i, indices=p, parent=dataset, owner=o)
        for i, (p, o) in enumerate(zip(parts, owners, strict=True))
    ]


def _per_client_floor(partitioner: Partitioner, param: str, dataset: Dataset) -> int:
    """``n // value`` of a per-client minimum; raises when a single client could not be served."""
    value, n = int(getattr(partitioner, param)), len(dataset)
    if value > n:
        raise ParameterError(
            f"The '{param}' parameter of {type(partitioner).__name__} must be at most the number of "
            f"examples ({n}). Got {value!r} instead.",
            param=param,
        )
    return n // max(1, value)


def _even_sizes(n: int, k: int) -> np.ndarray:
    """``k`` sizes summing to ``n`` that differ by at most one (larger first)."""
    return n // k + (np.arange(k) < n % k)


def _sizes_from_proportions(p: np.ndarray, total: np.ndarray) -> np.ndarray:
    """Integer sizes along the last axis: floors of the cumulative proportions times ``total``.

    Sizes are non-negative and sum exactly to ``total`` (the last boundary is pinned, so rounding
    error in the cumulative sum can not lose an example).
    """
    bounds = np.floor(np.cumsum(p, axis=-1) * np.asarray(total)[..., None]).astype(np.int64)
    bounds = np.minimum(bounds, np.asarray(total)[..., None])
    bounds[..., -1] = total
    return np.diff(bounds, axis=-1, prepend=0)


def _label_sorted_order(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices sorted by label, in random order within each label."""
    perm = rng.permutation(len(y))
    return perm[np.argsort(y[perm], kind="stable")]


class IIDPartitioner(Partitioner):
    """Random equal shares: a uniform random permutation cut into ``num_clients`` pieces.

    Client sizes differ by at most one (McMahan et al. 2017's IID setting: 100 clients of 600
    MNIST examples).
    """

    name = "iid"

    def __init__(self) -> None:
        pass

    def _assign(self, dataset: Dataset, num_clients: int, rng: np.random.Generator) -> np.ndarray:
        n = len(dataset)
        client_of = np.empty(n, dtype=np.int64)
        client_of[rng.permutation(n)] = np.repeat(np.arange(num_clients), _even_sizes(n, num_clients))
        return client_of


class DirichletPartitioner(Partitioner):
    """Label skew: each class is spread over the clients by Dirichlet proportions.

    For every class ``c`` a vector ``p_c ~ Dir(alpha * 1_K)`` over the ``K`` clients is drawn and the
    class's examples (in random order) are cut at the floors of ``cumsum(p_c) * n_c``. Small
    ``alpha`` gives each client few classes; as ``alpha`` grows every client's label distribution
    approaches the global one. This is the per-class construction of Hsu, Qi & Brown (2019) as
    implemented in NIID-Bench (Li et al. 2022) and Flower: draws are repeated until every client has
    at least ``min_size`` examples.

    Parameters
    ----------
    alpha : float
        Dirichlet concentration, > 0. 0.1 is strongly skewed, 1000 is nearly IID.
    min_size : int, default=10
        Smallest acceptable client size. ``num_clients * min_size`` may not exceed ``n``.
    max_attempts : int, default=1000
        How many draws to try before giving up with a :class:`ParameterError`.
    """

    name = "dirichlet"

    def __init__(self, alpha: float, *, min_size: int = 10, max_attempts: int = 1000) -> None:
        self.alpha = alpha
        self.min_size = min_size
        self.max_attempts = max_attempts

    def _validate_params(self) -> None:
        owner = type(self).__name__
        check_param("alpha", self.alpha, owner, POSITIVE_FLOAT)
        check_param("min_size", self.min_size, owner, NONNEG_INT)
        check_param("max_attempts", self.max_attempts, owner, POSITIVE_INT)

    def _max_clients(self, dataset: Dataset) -> int:
        return _per_client_floor(self, "min_size", dataset)

    def _assign(self, dataset: Dataset, num_clients: int, rng: np.random.Generator) -> np.ndarray:
        y = np.asarray(dataset.y, dtype=np.int64)
        n, k = len(y), num_clients
        num_classes = max(int(dataset.num_classes), int(y.max()) + 1)
        n_c = np.bincount(y, minlength=num_classes)
        conc = np.full(k, float(self.alpha))
        for _ in range(int(self.max_attempts)):
            p = rng.dirichlet(conc, size=num_classes)  # (C, K)
            if not np.isfinite(p).all():
                continue
            counts = _sizes_from_proportions(p, n_c)  # (C, K)
            if counts.sum(axis=0).min() >= self.min_size:
                break
        else:
            raise ParameterError(
                f"DirichletPartitioner could not give each of {k} clients at least min_size={self.min_size} "
                f"examples in {self.max_attempts} draws with alpha={self.alpha}; lower min_size or "
                "num_clients, or raise alpha.",
                param="min_size",
            )
        # Cut each class (random order within the class) at its cumulative counts, all classes at once:
        # client boundaries of class c are offset by c * (n + 1) so that one searchsorted serves all.
        order = _label_sorted_order(y, rng)
        labels = y[order]
        class_start = np.concatenate(([0], np.cumsum(n_c)[:-1]))
        rank = np.arange(n) - class_start[labels]
        bounds = np.cumsum(counts, axis=1) + (np.arange(num_classes) * (n + 1))[:, None]
        client_sorted = np.searchsorted(bounds.ravel(), labels * (n + 1) + rank, side="right") - labels * k
        client_of = np.empty(n, dtype=np.int64)
        client_of[order] = client_sorted
        return client_of


class ShardPartitioner(Partitioner):
    """Pathological non-IID (McMahan et al. 2017): sort by label, deal out equal label-sorted shards.

    The examples are sorted by label (random order within a label), cut into
    ``num_clients * shards_per_client`` contiguous shards of equal size (sizes differ by at most
    one), and each client receives ``shards_per_client`` shards drawn at random. With MNIST and
    100 clients: 200 shards of 300, two per client, so most clients see only two digits.

    Parameters
    ----------
    shards_per_client : int, default=2
        Shards dealt to each client, >= 1.
    """

    name = "shards"

    def __init__(self, shards_per_client: int = 2) -> None:
        self.shards_per_client = shards_per_client

    def _validate_params(self) -> None:
        check_param("shards_per_client", self.shards_per_client, type(self).__name__, POSITIVE_INT)

    def _max_clients(self, dataset: Dataset) -> int:
        return _per_client_floor(self, "shards_per_client", dataset)

    def _assign(self, dataset: Dataset, num_clients: int, rng: np.random.Generator) -> np.ndarray:
        y = np.asarray(dataset.y, dtype=np.int64)
        n = len(y)
        num_shards = num_clients * int(self.shards_per_client)
        order = _label_sorted_order(y, rng)
        shard_of_position = (np.arange(n, dtype=np.int64) * num_shards) // n
        client_of_shard = np.empty(num_shards, dtype=np.int64)
        client_of_shard[rng.permutation(num_shards)] = np.arange(num_shards) // int(self.shards_per_client)
        client_of = np.empty(n, dtype=np.int64)
        client_of[order] = client_of_shard[shard_of_position]
        return client_of


class ByOwnerPartitioner(Partitioner):
    """The natural partition: each owner's examples (a vehicle's, a user's) stay on one client.

    With ``num_clients=None`` there is one client per owner, in increasing owner id, and
    ``ClientData.owner`` is that id. With an int, owners are shuffled and dealt into
    ``num_clients`` groups of (nearly) equal numbers of owners; ``ClientData.owner`` is set only
    for a group that holds a single owner. An owner is never split across clients.
    """

    name = "by_owner"

    def __init__(self) -> None:
        pass

    def partition(
        self, dataset: Dataset, num_clients: int | None, rng: np.random.Generator | int
    ) -> list[ClientData]:
        """Divide ``dataset`` by owner.

        Parameters
        ----------
        dataset : Dataset
            Must have ``owners``.
        num_clients : int or None
            ``None`` for one client per owner, else the number of owner groups, in ``[1, n_owners]``.
        rng : numpy.random.Generator or int
            Shuffles owners into groups (unused when ``num_clients`` is None).

        Returns
        -------
        list of ClientData
        """
        owner = f"{type(self).__name__}.partition"
        check_param("dataset", dataset, owner, Dataset)
        if dataset.owners is None or len(dataset) == 0:
            raise ParameterError(
                f"The 'dataset' parameter of {owner} must be a non-empty Dataset with owners. "
                f"Got {dataset.name!r} ({'no owners' if dataset.owners is None else '0 examples'}) instead.",
                param="dataset",
            )
        uniq, inv = np.unique(np.asarray(dataset.owners), return_inverse=True)
        inv = inv.reshape(-1).astype(np.int64, copy=False)
        n_owners = len(uniq)
        if num_clients is None:
            return _group(dataset, inv, n_owners, [int(u) for u in uniq])
        check_param("num_clients", num_clients, owner, Interval(int, 1, n_owners), None)
        check_param("rng", rng, owner, np.random.Generator, Interval(int, 0, None))
        gen = as_generator(rng)
        k = int(num_clients)
        group_of_owner = np.empty(n_owners, dtype=np.int64)
        group_of_owner[gen.permutation(n_owners)] = np.repeat(np.arange(k), _even_sizes(n_owners, k))
        owner_count = np.bincount(group_of_owner, minlength=k)
        single = np.full(k, -1, dtype=np.int64)
        single[group_of_owner] = np.arange(n_owners)  # the (only) owner of one-owner groups
        owners = [int(uniq[single[g]]) if owner_count[g] == 1 else None for g in range(k)]
        return _group(dataset, group_of_owner[inv], k, owners)

    def _assign(self, dataset: Dataset, num_clients: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError  # partition() is overridden


class QuantitySkewPartitioner(Partitioner):
    """Quantity skew: client sizes follow Dirichlet proportions, labels stay IID.

    Each client first gets ``min_size`` examples; the remaining ``n - num_clients * min_size`` are
    shared in proportions ``p ~ Dir(alpha * 1_K)`` (floors of the cumulative proportions), and the
    examples are dealt in uniformly random order, so each client's labels are a random sample of
    the global ones. Small ``alpha`` gives a few large clients and many small ones (as in
    NIID-Bench's quantity-based skew, Li et al. 2022, without its rejection loop).

    Parameters
    ----------
    alpha : float
        Dirichlet concentration, > 0.
    min_size : int, default=10
        Size every client gets before the proportional share. ``num_clients * min_size <= n``.
    """

    name = "quantity_skew"

    def __init__(self, alpha: float, *, min_size: int = 10) -> None:
        self.alpha = alpha
        self.min_size = min_size

    def _validate_params(self) -> None:
        owner = type(self).__name__
        check_param("alpha", self.alpha, owner, POSITIVE_FLOAT)
        check_param("min_size", self.min_size, owner, NONNEG_INT)

    def _max_clients(self, dataset: Dataset) -> int:
        return _per_client_floor(self, "min_size", dataset)

    def _assign(self, dataset: Dataset, num_clients: int, rng: np.random.Generator) -> np.ndarray:
        n, k = len(dataset), num_clients
        rest = n - k * int(self.min_size)
        p = rng.dirichlet(np.full(k, float(self.alpha)))
        if not np.isfinite(p).all():  # pragma: no cover - numpy's sampler is stable for tiny alpha
            p = np.full(k, 1.0 / k)
        sizes = _sizes_from_proportions(p, np.int64(rest)) + int(self.min_size)
        client_of = np.empty(n, dtype=np.int64)
        client_of[rng.permutation(n)] = np.repeat(np.arange(k), sizes)
        return client_of


#: Partitioner classes by registry name.
PARTITIONERS: dict[str, type[Partitioner]] = {
    cls.name: cls
    for cls in (
        IIDPartitioner,
        DirichletPartitioner,
        ShardPartitioner,
        ByOwnerPartitioner,
        QuantitySkewPartitioner,
    )
}


def make_partitioner(name: str, **params: Any) -> Partitioner:
    """Build the partitioner registered as ``name`` and check its parameters now.

    Parameters
    ----------
    name : str
        One of ``"iid"``, ``"dirichlet"``, ``"shards"``, ``"by_owner"``, ``"quantity_skew"``.
    **params
        The partitioner's constructor parameters (``alpha=0.5``, ``shards_per_client=2``, ...).

    Raises
    ------
    ParameterError
        Unknown name, unknown or missing parameter, or a parameter out of range.
    """
    check_param("name", name, "make_partitioner", Options(tuple(PARTITIONERS)))
    cls = PARTITIONERS[name]
    sig = inspect.signature(cls.__init__)
    accepted = [p for p in sig.parameters.values() if p.name != "self"]
    names = [p.name for p in accepted]
    for key in params:
        if key not in names:
            takes = ", ".join(repr(k) for k in names) or "no parameters"
            raise ParameterError(
                f"{cls.__name__} ({name!r}) has no parameter {key!r}; it takes {takes}.", param=key
            )
    for p in accepted:
        if p.default is inspect.Parameter.empty and p.name not in params:
            raise ParameterError(f"{cls.__name__} ({name!r}) needs the {p.name!r} parameter.", param=p.name)
    partitioner = cls(**params)
    partitioner._validate_params()
    return partitioner
