import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from ppml._validation import ParameterError
from ppml.data.files import (
    DatasetFormatError,
    DatasetNotFoundError,
    load_adult,
    load_att_faces,
    load_cifar10_subset,
    load_mnist,
    load_movielens100k,
    load_olivetti,
    locate_files,
    read_idx,
    read_pgm,
    resolve_data_dir,
)

# --------------------------------------------------------------------------------------------------
# writers for tiny synthetic files
# --------------------------------------------------------------------------------------------------


def write_idx(path: Path, arr: np.ndarray, *, gz: bool = True, code: int = 0x08) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, code, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    data = header + arr.astype(arr.dtype.newbyteorder(">") if arr.dtype.itemsize > 1 else arr.dtype).tobytes()
    if gz:
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def write_mnist(
    root: Path, n_train: int = 5, n_test: int = 3, *, gz: bool = True, sub: str = "mnist"
) -> dict:
    rng = np.random.default_rng(0)
    out = {}
    for split, n, prefix in [("train", n_train, "train"), ("test", n_test, "t10k")]:
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        ext = ".gz" if gz else ""
        write_idx(root / sub / f"{prefix}-images-idx3-ubyte{ext}", images, gz=gz)
        write_idx(root / sub / f"{prefix}-labels-idx1-ubyte{ext}", labels, gz=gz)
        out[split] = (images, labels)
    return out


ADULT_ROWS = [
    "39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, Male, 2174, 0, 40, United-States, <=50K",
    "50, Self-emp-not-inc, 83311, Bachelors, 13, Married-civ-spouse, Exec-managerial, Husband, White, Male, 0, 0, 13, United-States, >50K",
    "38, ?, 215646, HS-grad, 9, Divorced, ?, Not-in-family, Black, Female, 0, 0, 40, ?, <=50K",
]


def write_adult(root: Path, sub: str = "adult") -> None:
    d = root / sub
    d.mkdir(parents=True, exist_ok=True)
    (d / "adult.data").write_text("\n".join(ADULT_ROWS) + "\n\n")
    (d / "adult.test").write_text(
        "|1x3 Cross validator\n" + "\n".join(r + "." for r in ADULT_ROWS[:2]) + "\n"
    )


def write_pgm(path: Path, img: np.ndarray, comment: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = img.shape
    head = b"P5\n" + (b"# a comment\n" if comment else b"") + f"{w} {h}\n255\n".encode()
    path.write_bytes(head + img.astype(np.uint8).tobytes())


# --------------------------------------------------------------------------------------------------
# data directory resolution
# --------------------------------------------------------------------------------------------------


def test_explicit_data_dir_beats_environment(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.setenv("PPML_DATA", str(tmp_path / "b"))
    assert resolve_data_dir(tmp_path / "a") == tmp_path / "a"
    assert resolve_data_dir() == tmp_path / "b"
    assert resolve_data_dir(str(tmp_path / "a")) == tmp_path / "a"


def test_no_data_dir_says_neither_was_given(monkeypatch):
    monkeypatch.delenv("PPML_DATA", raising=False)
    with pytest.raises(DatasetNotFoundError) as err:
        load_mnist()
    msg = str(err.value)
    assert "neither data_dir (--data-dir) nor the PPML_DATA" in msg and "yann.lecun.com" in msg
    assert "\n" not in msg
    assert isinstance(err.value, FileNotFoundError)


def test_missing_data_dir_is_named(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=f"Data directory {tmp_path / 'nope'} .* does not exist"):
        load_adult(tmp_path / "nope")


# --------------------------------------------------------------------------------------------------
# MNIST / IDX
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("sub", ["mnist", ""])
def test_mnist_parses_tiny_idx_files_in_either_layout(tmp_path, gz, sub):
    written = write_mnist(tmp_path, gz=gz, sub=sub)
    for split in ("train", "test"):
        ds = load_mnist(tmp_path, split=split, strict=False)
        images, labels = written[split]
        assert ds.X.shape == (len(images), 1, 28, 28) and ds.X.dtype == np.float32
        np.testing.assert_array_equal(ds.X[:, 0], images.astype(np.float32) / 255)
        np.testing.assert_array_equal(ds.y, labels.astype(np.int64))
        assert ds.y.dtype == np.int64 and ds.num_classes == 10 and ds.meta["split"] == split
        assert 0.0 <= ds.X.min() and ds.X.max() <= 1.0


def test_mnist_strict_counts_and_missing_file_message(tmp_path):
    write_mnist(tmp_path)
    with pytest.raises(DatasetFormatError, match="should have 60000 images.*strict=False"):
        load_mnist(tmp_path)
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFoundError) as err:
        load_mnist(tmp_path, split="test", strict=False)
    msg = str(err.value)
    assert "MNIST file 't10k-labels-idx1-ubyte.gz' not found in" in msg
    assert str(tmp_path) in msg and "http://yann.lecun.com/exdb/mnist/" in msg and "PPML_DATA" in msg
    assert err.value.filename == "t10k-labels-idx1-ubyte.gz"
    with pytest.raises(ParameterError, match="The 'split' parameter of load_mnist"):
        load_mnist(tmp_path, split="validation")


def test_mnist_detects_corrupt_and_inconsistent_files(tmp_path):
    d = tmp_path / "mnist"
    write_mnist(tmp_path)
    labels = d / "train-labels-idx1-ubyte.gz"
    write_idx(labels, np.zeros(4, dtype=np.uint8))  # 4 labels for 5 images
    with pytest.raises(DatasetFormatError, match="5 images but .* 4 labels"):
        load_mnist(tmp_path, strict=False)
    write_idx(labels, np.full(5, 11, dtype=np.uint8))
    with pytest.raises(DatasetFormatError, match="label 11"):
        load_mnist(tmp_path, strict=False)
    images = d / "train-images-idx3-ubyte.gz"
    images.write_bytes(gzip.compress(gzip.decompress(images.read_bytes())[:-10]))
    with pytest.raises(DatasetFormatError, match="truncated or corrupt"):
        load_mnist(tmp_path, strict=False)
    images.write_bytes(images.read_bytes()[:40])
    with pytest.raises(DatasetFormatError, match="not a valid gzip file"):
        load_mnist(tmp_path, strict=False)
    write_idx(images, np.zeros((2, 14, 14), dtype=np.uint8))
    with pytest.raises(DatasetFormatError, match=r"shape \(n, 28, 28\)"):
        load_mnist(tmp_path, strict=False)


def test_read_idx_types_and_magic(tmp_path):
    arr = np.arange(12, dtype=np.int32).reshape(3, 4) - 5
    out = read_idx(write_idx(tmp_path / "a.idx", arr, gz=False, code=0x0C))
    np.testing.assert_array_equal(out, arr)
    (tmp_path / "b.idx").write_bytes(b"\x01\x02\x08\x01" + bytes(8))
    with pytest.raises(DatasetFormatError, match="bad magic number"):
        read_idx(tmp_path / "b.idx")


# --------------------------------------------------------------------------------------------------
# UCI Adult
# --------------------------------------------------------------------------------------------------


def test_adult_one_hot_labels_and_missing_values(tmp_path):
    write_adult(tmp_path)
    ds = load_adult(tmp_path, strict=False)
    assert ds.X.shape == (3, 105) and ds.X.dtype == np.float32
    np.testing.assert_array_equal(ds.y, [0, 1, 0])
    names = ds.feature_names
    assert names[:6] == ("age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week")
    np.testing.assert_array_equal(ds.X[:, 0], [39, 50, 38])
    np.testing.assert_array_equal(ds.X[:, 1], [77516, 83311, 215646])
    assert ds.X[0, names.index("workclass=State-gov")] == 1
    assert ds.X[2, names.index("sex=Female")] == 1 and ds.X[2, names.index("race=Black")] == 1
    # '?' keeps the row, with an all-zero block for that column
    for col in ("workclass", "occupation", "native-country"):
        lo, hi = ds.meta["categorical_blocks"][col]
        assert ds.X[2, lo:hi].sum() == 0 and ds.X[0, lo:hi].sum() == 1
    # every row: exactly one 1 per block without '?'
    assert ds.X[0, 6:].sum() == 8 and ds.X[2, 6:].sum() == 5
    assert ds.meta["rows_with_missing"] == 1 and ds.meta["standardize"] is True
    dropped = load_adult(tmp_path, strict=False, missing="drop")
    assert len(dropped) == 2 and dropped.meta["raw_rows"] == 3
    test = load_adult(tmp_path, split="test", strict=False)
    np.testing.assert_array_equal(test.y, [0, 1])  # header line skipped, trailing '.' dropped
    assert test.feature_names == names


def test_adult_errors(tmp_path):
    write_adult(tmp_path)
    with pytest.raises(DatasetFormatError, match="should have 32561 rows"):
        load_adult(tmp_path)
    with pytest.raises(ParameterError, match="The 'missing' parameter of load_adult must be one of"):
        load_adult(tmp_path, missing="impute", strict=False)
    path = tmp_path / "adult" / "adult.data"
    path.write_text(ADULT_ROWS[0] + "\n" + ADULT_ROWS[1].replace(", Husband", "") + "\n")
    with pytest.raises(DatasetFormatError, match="line 2: expected 15"):
        load_adult(tmp_path, strict=False)
    path.write_text(ADULT_ROWS[0].replace("State-gov", "Space-agency") + "\n")
    with pytest.raises(DatasetFormatError, match="unknown workclass 'Space-agency'"):
        load_adult(tmp_path, strict=False)
    path.unlink()
    with pytest.raises(
        DatasetNotFoundError, match="UCI Adult file 'adult.data' not found.*archive.ics.uci.edu"
    ):
        load_adult(tmp_path, strict=False)


# --------------------------------------------------------------------------------------------------
# Faces
# --------------------------------------------------------------------------------------------------


def test_pgm_reader(tmp_path):
    img = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    write_pgm(tmp_path / "a.pgm", img, comment=True)
    np.testing.assert_array_equal(read_pgm(tmp_path / "a.pgm"), img)
    (tmp_path / "b.pgm").write_bytes(b"P5\n4 3\n255\n" + bytes(5))
    with pytest.raises(DatasetFormatError, match="truncated"):
        read_pgm(tmp_path / "b.pgm")
    (tmp_path / "c.pgm").write_bytes(b"P2\n4 3\n255\n0 0 0")
    with pytest.raises(DatasetFormatError, match="not a binary PGM"):
        read_pgm(tmp_path / "c.pgm")


def test_att_faces_tiny_folder(tmp_path):
    rng = np.random.default_rng(0)
    imgs = {(s, i): rng.integers(0, 256, (6, 5), dtype=np.uint8) for s in (1, 2, 10) for i in (1, 2, 3)}
    for (s, i), img in imgs.items():
        write_pgm(tmp_path / "att_faces" / f"s{s}" / f"{i}.pgm", img)
    ds = load_att_faces(tmp_path, strict=False)
    assert ds.X.shape == (9, 1, 6, 5) and ds.X.dtype == np.float32
    assert ds.class_names == ("s1", "s2", "s10")  # numeric, not lexical, order
    np.testing.assert_array_equal(ds.y, np.repeat([0, 1, 2], 3))
    np.testing.assert_array_equal(ds.X[3, 0], imgs[(2, 1)] / np.float32(255))
    with pytest.raises(DatasetNotFoundError, match="AT&T faces file 's1/4.pgm' not found in"):
        load_att_faces(tmp_path)  # strict: s1..s40 x 1..10
    write_pgm(tmp_path / "att_faces" / "s2" / "4.pgm", np.zeros((7, 5), dtype=np.uint8))
    with pytest.raises(DatasetFormatError, match="should all be"):
        load_att_faces(tmp_path, strict=False)


def test_olivetti_mat_orientation_and_counts(tmp_path):
    faces = np.random.default_rng(0).integers(0, 243, (4096, 20), dtype=np.uint8)
    scipy.io.savemat(tmp_path / "olivettifaces.mat", {"faces": faces})
    ds = load_olivetti(tmp_path, strict=False)
    assert ds.X.shape == (20, 1, 64, 64) and ds.num_classes == 2
    np.testing.assert_array_equal(ds.y, np.repeat([0, 1], 10))
    # column j is a 64x64 image stored column-major (MATLAB order)
    np.testing.assert_array_equal(ds.X[7, 0], faces[:, 7].reshape(64, 64, order="F") / np.float32(255))
    with pytest.raises(DatasetFormatError, match="should hold 400 images"):
        load_olivetti(tmp_path)
    scipy.io.savemat(tmp_path / "olivettifaces.mat", {"images": faces})
    with pytest.raises(DatasetFormatError, match="no 'faces' variable"):
        load_olivetti(tmp_path, strict=False)
    (tmp_path / "olivettifaces.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(DatasetFormatError, match="not a readable MATLAB file"):
        load_olivetti(tmp_path, strict=False)


# --------------------------------------------------------------------------------------------------
# CIFAR-10 subset
# --------------------------------------------------------------------------------------------------


def test_cifar_subset_npz(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    y = np.array([0, 1, 2, 9, 3, 3], dtype=np.uint8)
    d = tmp_path / "cifar10_subset"
    d.mkdir()
    np.savez(d / "cifar10_subset.npz", x_train=x, y_train=y, x_test=x[:2], y_test=y[:2])
    ds = load_cifar10_subset(tmp_path, strict=False)
    assert ds.X.shape == (6, 3, 32, 32) and ds.X.flags.c_contiguous
    np.testing.assert_array_equal(ds.X[4, 2, 5, 7], np.float32(x[4, 5, 7, 2]) / 255)
    assert ds.class_names[0] == "airplane" and ds.y.dtype == np.int64
    assert len(load_cifar10_subset(tmp_path, split="test", strict=False)) == 2
    with pytest.raises(DatasetFormatError, match="should have 4000 or 50000 images"):
        load_cifar10_subset(tmp_path)
    np.savez(d / "cifar10_subset.npz", x_train=x)
    with pytest.raises(DatasetFormatError, match="lacks arrays"):
        load_cifar10_subset(tmp_path, strict=False)
    (d / "cifar10_subset.npz").write_bytes(b"garbage")
    with pytest.raises(DatasetFormatError, match="not a readable .npz"):
        load_cifar10_subset(tmp_path, strict=False)


# --------------------------------------------------------------------------------------------------
# MovieLens 100K
# --------------------------------------------------------------------------------------------------


def write_movielens(root: Path) -> np.ndarray:
    d = root / "movielens-100k"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for user in (1, 2, 3):
        for _ in range(25):
            rows.append((user, int(rng.integers(1, 4)), int(rng.integers(1, 6)), int(rng.integers(8e8, 9e8))))
    data = np.array(rows, dtype=np.int64)[rng.permutation(len(rows))]
    (d / "u.data").write_text("".join("\t".join(map(str, r)) + "\n" for r in data))
    flags = "|".join(["0"] * 18)
    items = [
        f"1|Toy Story (1995)|01-Jan-1995||http://x|1|{flags}",
        f"2|Caf\u00e9 Society (1995)|01-Jan-1995||http://x|0|{flags}",
        f"3|L\u00e9on (1994)|01-Jan-1994||http://x|0|{flags}",
    ]
    (d / "u.item").write_bytes(("\n".join(items) + "\n").encode("latin-1"))
    (d / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n3|23|M|writer|32067\n")
    return data


def test_movielens_ratings_titles_users_and_splits(tmp_path):
    data = write_movielens(tmp_path)
    r = load_movielens100k(tmp_path, strict=False)
    np.testing.assert_array_equal(r.data, data)
    assert r.data.dtype == np.int64 and len(r) == 75
    assert (r.num_users, r.num_items) == (3, 3)
    assert r.titles[1] == "Caf\u00e9 Society (1995)"  # latin-1 decoded
    assert r.item_genres.shape == (3, 19) and r.item_genres[0, 0] and not r.item_genres[1].any()
    assert r.users is not None and r.users.gender.tolist() == ["M", "F", "M"]
    train, test = r.split("ua")
    assert len(test) == 30 and len(train) == 45 and not set(train) & set(test)
    for u in (1, 2, 3):  # the user's first 10 ratings in file order
        np.testing.assert_array_equal(np.sort(test[r.user[test] == u]), np.flatnonzero(r.user == u)[:10])
    assert np.all(np.diff(r.user[test]) >= 0)  # ordered by (user, item)
    train, test = r.split("ub")
    assert len(test) == 30
    train, test = r.split("u1")
    assert len(test) == 75 and len(train) == 0  # u1.test is rows 1..20000
    ds = r.to_dataset()
    assert ds.X.shape == (75, 2) and ds.num_classes == 5
    np.testing.assert_array_equal(ds.owners, data[:, 0])
    np.testing.assert_array_equal(ds.y, data[:, 2] - 1)
    np.testing.assert_array_equal(ds.X[:, 1], data[:, 1] - 1)


def test_movielens_errors(tmp_path):
    write_movielens(tmp_path)
    with pytest.raises(DatasetFormatError, match="should have 100000 ratings by 943 users"):
        load_movielens100k(tmp_path)
    d = tmp_path / "movielens-100k"
    (d / "u.item").unlink()
    with pytest.raises(DatasetNotFoundError, match="MovieLens 100K file 'u.item' not found.*grouplens"):
        load_movielens100k(tmp_path, strict=False)
    (d / "u.item").write_text("1|A|x||y|" + "|".join(["0"] * 19) + "\n")
    with pytest.raises(DatasetFormatError, match="rates item 3 but .* lists 1 items"):
        load_movielens100k(tmp_path, strict=False)
    (d / "u.data").write_text("1\t2\t7\t880000000\n")
    with pytest.raises(DatasetFormatError, match="ratings must be 1..5"):
        load_movielens100k(tmp_path, strict=False)


def test_locate_files_names_the_first_missing_file(tmp_path):
    write_mnist(tmp_path, sub="")
    assert len(locate_files("mnist", tmp_path)) == 4
    with pytest.raises(DatasetNotFoundError, match="'olivettifaces.mat' not found"):
        locate_files("olivetti", tmp_path)


# --------------------------------------------------------------------------------------------------
# the real datasets (../shared/data or PPML_DATA)
# --------------------------------------------------------------------------------------------------


def real_data_dir(name: str) -> Path:
    """The folder with the real datasets, or skip the test."""
    candidates = [Path(os.environ["PPML_DATA"])] if os.environ.get("PPML_DATA") else []
    candidates.append(Path(__file__).resolve().parents[2] / ".." / "shared" / "data")
    for c in candidates:
        try:
            locate_files(name, c)
            return c
        except DatasetNotFoundError:
            continue
    pytest.skip(
        f"real {name} files not found in PPML_DATA or ../shared/data: {', '.join(map(str, candidates))}"
    )


@pytest.mark.realdata
def test_real_mnist_has_the_published_counts():
    root = real_data_dir("mnist")
    train = load_mnist(root, split="train")
    test = load_mnist(root, split="test")
    assert train.X.shape == (60000, 1, 28, 28) and test.X.shape == (10000, 1, 28, 28)
    np.testing.assert_array_equal(
        np.bincount(train.y), [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    )
    np.testing.assert_array_equal(
        np.bincount(test.y), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    )
    assert abs(float(train.X.mean()) - 0.1307) < 5e-4 and abs(float(train.X.std()) - 0.3081) < 5e-4


@pytest.mark.realdata
def test_real_adult_counts():
    root = real_data_dir("adult")
    train, test = load_adult(root), load_adult(root, split="test")
    assert train.X.shape == (32561, 105) and test.X.shape == (16281, 105)
    np.testing.assert_array_equal(np.bincount(train.y), [24720, 7841])
    np.testing.assert_array_equal(np.bincount(test.y), [12435, 3846])
    assert train.meta["rows_with_missing"] == 2399 and test.meta["rows_with_missing"] == 1221
    assert len(load_adult(root, missing="drop")) == 30162
    assert len(load_adult(root, split="test", missing="drop")) == 15060


@pytest.mark.realdata
def test_real_faces():
    att = load_att_faces(real_data_dir("att_faces"))
    assert att.X.shape == (400, 1, 112, 92) and att.num_classes == 40
    np.testing.assert_array_equal(np.bincount(att.y), np.full(40, 10))
    oli = load_olivetti(real_data_dir("olivetti"))
    assert oli.X.shape == (400, 1, 64, 64) and oli.num_classes == 40
    assert float(oli.X.max()) == pytest.approx(242 / 255)


@pytest.mark.realdata
def test_real_movielens_counts_and_standard_splits():
    r = load_movielens100k(real_data_dir("movielens_100k"))
    assert (len(r), r.num_users, r.num_items) == (100000, 943, 1682)
    np.testing.assert_array_equal(np.bincount(r.rating)[1:], [6110, 11370, 27145, 34174, 21201])
    assert (int(r.timestamp.min()), int(r.timestamp.max())) == (874724710, 893286638)
    assert r.titles[0] == "Toy Story (1995)" and r.users is not None and len(r.users.age) == 943
    for name, n_test in [("u1", 20000), ("u5", 20000), ("ua", 9430), ("ub", 9430)]:
        train, test = r.split(name)
        assert len(test) == n_test and len(train) + len(test) == 100000


@pytest.mark.realdata
def test_real_cifar10_subset():
    root = real_data_dir("cifar10_subset")
    train, test = load_cifar10_subset(root), load_cifar10_subset(root, split="test")
    assert train.X.shape == (4000, 3, 32, 32) and test.X.shape == (1000, 3, 32, 32)
    assert train.y[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert test.y[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    np.testing.assert_array_equal(
        np.round(train.X[0, 0, 0, :10] * 255).astype(int), [59, 43, 50, 68, 98, 119, 139, 145, 149, 149]
    )
