import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ppml._validation import ParameterError
from ppml.data.dataset import ClientData, Dataset
from ppml.data.partition import (
    PARTITIONERS,
    ByOwnerPartitioner,
    DirichletPartitioner,
    IIDPartitioner,
    QuantitySkewPartitioner,
    ShardPartitioner,
    make_partitioner,
)

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def make_dataset(y, owners=None, num_classes=None):
    y = np.asarray(y, dtype=np.int64)
    return Dataset(
        X=np.arange(len(y), dtype=np.float32)[:, None],
        y=y,
        name="toy",
        num_classes=int(num_classes if num_classes is not None else (y.max() + 1 if len(y) else 1)),
        owners=None if owners is None else np.asarray(owners, dtype=np.int64),
    )


def client_of(parts, n):
    """Per-example client id; asserts every example is in exactly one client."""
    idx = np.concatenate([p.indices for p in parts])
    assert np.array_equal(np.sort(idx), np.arange(n)), "an example is missing or duplicated"
    out = np.empty(n, dtype=np.int64)
    for p in parts:
        out[p.indices] = p.client_id
    return out


def check_partition(parts, ds, num_clients):
    assert len(parts) == num_clients
    assert [p.client_id for p in parts] == list(range(num_clients))
    assert all(isinstance(p, ClientData) and p.parent is ds for p in parts)
    assert sum(len(p) for p in parts) == len(ds)
    for p in parts:
        assert p.indices.dtype == np.int64
        assert np.all(np.diff(p.indices) > 0), "indices within a client are sorted and unique"
    return client_of(parts, len(ds))


def mean_tv(parts, ds):
    """Mean total-variation distance between the clients' label distributions and the global one."""
    glob = np.bincount(ds.y, minlength=ds.num_classes) / len(ds)
    return float(np.mean([0.5 * np.abs(p.label_counts() / len(p) - glob).sum() for p in parts if len(p)]))


labels_st = st.integers(1, 6).flatmap(
    lambda c: hnp.arrays(np.int64, st.integers(1, 200), elements=st.integers(0, c - 1))
)


# --- every partitioner: exact cover, sizes, determinism --------------------------------------------


@SETTINGS
@given(
    y=labels_st,
    data=st.data(),
    which=st.sampled_from(["iid", "dirichlet", "shards", "quantity_skew"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_every_example_lands_in_exactly_one_client(y, data, which, seed):
    ds = make_dataset(y)
    params = {
        "iid": {},
        "dirichlet": {"alpha": data.draw(st.floats(0.05, 100.0)), "min_size": 0},
        "shards": {"shards_per_client": data.draw(st.integers(1, 3))},
        "quantity_skew": {"alpha": data.draw(st.floats(0.05, 100.0)), "min_size": 0},
    }[which]
    part = make_partitioner(which, **params)
    cap = len(ds) // params.get("shards_per_client", 1)
    assume(cap >= 1)
    k = data.draw(st.integers(1, min(cap, 30)))
    parts = part.partition(ds, k, np.random.default_rng(seed))
    assign = check_partition(parts, ds, k)
    again = client_of(part.partition(ds, k, np.random.default_rng(seed)), len(ds))
    assert np.array_equal(assign, again), "same rng seed, same partition"


@SETTINGS
@given(
    owners=hnp.arrays(np.int64, st.integers(1, 300), elements=st.integers(-5, 60)),
    data=st.data(),
    seed=st.integers(0, 2**32 - 1),
)
def test_by_owner_never_splits_an_owner(owners, data, seed):
    rng = np.random.default_rng(seed)
    ds = make_dataset(rng.integers(0, 3, len(owners)), owners=owners, num_classes=3)
    uniq = np.unique(owners)
    k = data.draw(st.none() | st.integers(1, len(uniq)))
    parts = ByOwnerPartitioner().partition(ds, k, rng)
    assign = check_partition(parts, ds, len(uniq) if k is None else k)
    # one client per owner: the (owner, client) pairs are as many as the owners
    pairs = np.unique(np.stack([owners, assign]), axis=1)
    assert pairs.shape[1] == len(uniq)
    for p in parts:
        held = np.unique(owners[p.indices])
        if k is None:
            assert p.owner == held[0] and len(held) == 1
        else:
            assert len(p) > 0
            assert p.owner == (int(held[0]) if len(held) == 1 else None)
    if k is None:
        assert [p.owner for p in parts] == [int(u) for u in uniq]


def test_by_owner_groups_are_balanced_in_owners_and_seeded():
    owners = np.repeat(np.arange(1000), 3)
    ds = make_dataset(np.zeros(len(owners), dtype=np.int64), owners=owners, num_classes=1)
    a = ByOwnerPartitioner().partition(ds, 7, np.random.default_rng(3))
    b = ByOwnerPartitioner().partition(ds, 7, np.random.default_rng(3))
    c = ByOwnerPartitioner().partition(ds, 7, np.random.default_rng(4))
    n_owners = [len(np.unique(owners[p.indices])) for p in a]
    assert max(n_owners) - min(n_owners) <= 1 and sum(n_owners) == 1000
    assert all(np.array_equal(p.indices, q.indices) for p, q in zip(a, b, strict=True))
    assert not all(np.array_equal(p.indices, q.indices) for p, q in zip(a, c, strict=True))


# --- IID ------------------------------------------------------------------------------------------


def test_iid_sizes_differ_by_at_most_one_and_match_mcmahan():
    ds = make_dataset(np.repeat(np.arange(10), 6000))
    parts = IIDPartitioner().partition(ds, 100, np.random.default_rng(0))
    assert {len(p) for p in parts} == {600}
    parts = IIDPartitioner().partition(make_dataset(np.zeros(103, dtype=np.int64)), 10, 0)
    assert sorted({len(p) for p in parts}) == [10, 11]


# --- shards (McMahan et al. 2017) -----------------------------------------------------------------


@SETTINGS
@given(
    num_clients=st.integers(1, 25),
    shard_size=st.integers(1, 12),
    num_classes=st.integers(1, 8),
    seed=st.integers(0, 2**32 - 1),
)
def test_shards_give_each_client_at_most_two_labels(num_clients, shard_size, num_classes, seed):
    # A label-sorted dataset whose classes are whole numbers of shards (as MNIST's 6000-per-class
    # idealisation with 300-example shards): each shard holds one label, so each client <= 2 labels.
    rng = np.random.default_rng(seed)
    shard_labels = np.sort(rng.integers(0, num_classes, 2 * num_clients))
    y = np.repeat(shard_labels, shard_size)
    ds = make_dataset(y, num_classes=num_classes)
    parts = ShardPartitioner(shards_per_client=2).partition(ds, num_clients, rng)
    check_partition(parts, ds, num_clients)
    for p in parts:
        assert len(p) == 2 * shard_size
        assert np.count_nonzero(p.label_counts()) <= 2


def test_shards_mnist_setting_200_shards_of_300():
    y = np.random.default_rng(0).permutation(np.repeat(np.arange(10), 6000))
    ds = make_dataset(y)
    parts = ShardPartitioner().partition(ds, 100, np.random.default_rng(1))
    assert {len(p) for p in parts} == {600}
    n_labels = np.array([np.count_nonzero(p.label_counts()) for p in parts])
    assert n_labels.max() <= 2 and (n_labels == 2).mean() > 0.7


# --- Dirichlet label skew (Hsu et al. 2019) --------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), num_clients=st.integers(5, 20), skew=st.floats(0.0, 0.5))
def test_dirichlet_large_alpha_approaches_iid_small_alpha_is_skewed(seed, num_clients, skew):
    rng = np.random.default_rng(seed)
    prior = np.exp(-skew * np.arange(10))  # global label distribution, from uniform to imbalanced (p0 = 0.39)
    y = rng.choice(10, size=4000, p=prior / prior.sum())
    ds = make_dataset(y, num_classes=10)
    tvs = [
        mean_tv(DirichletPartitioner(alpha, min_size=0).partition(ds, num_clients, rng), ds)
        for alpha in (0.05, 1.0, 10.0, 1000.0)
    ]
    assert all(a > b for a, b in zip(tvs, tvs[1:], strict=False)), tvs
    assert tvs[-1] < 0.05, tvs
    assert tvs[0] > 0.3, tvs


def test_dirichlet_min_size_is_respected_and_too_hard_fails_clearly():
    y = np.random.default_rng(0).integers(0, 10, 2000)
    ds = make_dataset(y)
    parts = DirichletPartitioner(0.3, min_size=20).partition(ds, 20, np.random.default_rng(0))
    assert min(len(p) for p in parts) >= 20
    with pytest.raises(ParameterError, match="min_size=190"):
        DirichletPartitioner(0.01, min_size=190, max_attempts=5).partition(ds, 10, np.random.default_rng(0))


def test_dirichlet_default_min_size_bounds_num_clients():
    ds = make_dataset(np.zeros(50, dtype=np.int64))
    msg = (
        r"The 'num_clients' parameter of DirichletPartitioner.partition must be an int in the range \[1, 5\]"
    )
    with pytest.raises(ParameterError, match=msg):
        DirichletPartitioner(1.0).partition(ds, 6, 0)
    with pytest.raises(ParameterError, match="'min_size' parameter of DirichletPartitioner must be at most"):
        DirichletPartitioner(1.0, min_size=51).partition(ds, 1, 0)


# --- quantity skew --------------------------------------------------------------------------------


@SETTINGS
@given(seed=st.integers(0, 2**32 - 1), num_clients=st.integers(1, 40), min_size=st.integers(0, 20))
def test_quantity_skew_sizes_add_up_and_respect_min_size(seed, num_clients, min_size):
    ds = make_dataset(np.random.default_rng(seed).integers(0, 4, 1000), num_classes=4)
    parts = QuantitySkewPartitioner(0.3, min_size=min_size).partition(ds, num_clients, seed)
    check_partition(parts, ds, num_clients)
    assert min(len(p) for p in parts) >= min_size


def test_quantity_skew_small_alpha_unbalances_sizes_but_not_labels():
    ds = make_dataset(np.random.default_rng(0).integers(0, 5, 20000), num_classes=5)
    skewed = QuantitySkewPartitioner(0.2).partition(ds, 20, 1)
    even = QuantitySkewPartitioner(1000.0).partition(ds, 20, 1)
    cv = lambda parts: np.std([len(p) for p in parts]) / np.mean([len(p) for p in parts])  # noqa: E731
    assert cv(skewed) > 1.0 > 0.1 > cv(even)
    big = [p for p in skewed if len(p) >= 2000]
    assert big and mean_tv(big, ds) < 0.05  # labels are an IID sample of the global ones


# --- parameters, registry, speed -------------------------------------------------------------------


def test_constructors_store_parameters_as_given_and_validate_on_use():
    p = DirichletPartitioner(-1, min_size=3)
    assert p.alpha == -1 and p.get_params() == {"alpha": -1, "min_size": 3, "max_attempts": 1000}
    assert repr(p) == "DirichletPartitioner(alpha=-1, min_size=3, max_attempts=1000)"
    ds = make_dataset(np.zeros(100, dtype=np.int64))
    msg = r"The 'alpha' parameter of DirichletPartitioner must be a float in the range \(0, inf\). Got -1 instead."
    with pytest.raises(ParameterError, match=msg):
        p.partition(ds, 2, 0)
    with pytest.raises(ParameterError, match="'shards_per_client' parameter of ShardPartitioner"):
        ShardPartitioner(0).partition(ds, 2, 0)
    with pytest.raises(ParameterError, match=r"'num_clients' .* range \[1, 50\]. Got 51 instead"):
        ShardPartitioner().partition(ds, 51, 0)
    with pytest.raises(ParameterError, match="'num_clients' parameter of IIDPartitioner.partition"):
        IIDPartitioner().partition(ds, 0, 0)
    with pytest.raises(ParameterError, match="'rng' parameter"):
        IIDPartitioner().partition(ds, 2, None)
    with pytest.raises(ParameterError, match="with owners"):
        ByOwnerPartitioner().partition(ds, None, 0)


def test_make_partitioner_registry():
    assert set(PARTITIONERS) == {"iid", "dirichlet", "shards", "by_owner", "quantity_skew"}
    assert isinstance(make_partitioner("dirichlet", alpha=0.5), DirichletPartitioner)
    assert make_partitioner("shards").shards_per_client == 2
    with pytest.raises(ParameterError, match="The 'name' parameter of make_partitioner must be one of"):
        make_partitioner("label_skew")
    with pytest.raises(ParameterError, match="no parameter 'beta'"):
        make_partitioner("dirichlet", alpha=1.0, beta=2)
    with pytest.raises(ParameterError, match="needs the 'alpha' parameter"):
        make_partitioner("quantity_skew")
    with pytest.raises(ParameterError, match="'alpha' parameter of QuantitySkewPartitioner"):
        make_partitioner("quantity_skew", alpha=0)


def test_one_hundred_thousand_owners_partition_at_scale():
    """Correct at fleet scale (timings are in the benchmarks; tests never assert times)."""
    rng = np.random.default_rng(0)
    owners = rng.integers(0, 100_000, 400_000)
    ds = make_dataset(rng.integers(0, 4, len(owners)), owners=owners, num_classes=4)
    n_owners = len(np.unique(owners))
    for part, k in [
        (ByOwnerPartitioner(), None),
        (ByOwnerPartitioner(), 1000),
        (IIDPartitioner(), 100_000),
        (DirichletPartitioner(0.5, min_size=1), 10_000),
        (ShardPartitioner(), 100_000),
        (QuantitySkewPartitioner(0.5, min_size=1), 100_000),
    ]:
        parts = part.partition(ds, k, rng)
        assert len(parts) == (n_owners if k is None else k)
        counts = np.bincount(np.concatenate([p.indices for p in parts]), minlength=len(ds))
        assert (counts == 1).all()
