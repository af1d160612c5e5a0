import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from ppml._validation import ParameterError
from ppml.data.dataset import Dataset
from ppml.data.files import DatasetNotFoundError, locate_files
from ppml.data.registry import DATASET_NAMES, DatasetInfo, DatasetSplits, available_datasets, load_dataset

FILE_SETS = ("mnist", "adult", "att_faces", "olivetti", "movielens_100k", "cifar10_subset")


def write_idx(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    path.write_bytes(gzip.compress(header + arr.tobytes()))


def write_tiny_mnist(root: Path) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 6), ("t10k", 4)):
        write_idx(
            root / "mnist" / f"{prefix}-images-idx3-ubyte.gz",
            rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
        )
        write_idx(root / "mnist" / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n, dtype=np.uint8))


def test_names_and_unknown_name_lists_them():
    assert set(DATASET_NAMES) == {
        "digits", "breast_cancer", "wine", "iris", "adas",
        "mnist", "adult", "att_faces", "olivetti", "movielens_100k", "cifar10_subset",
    }  # fmt: skip
    with pytest.raises(ParameterError) as err:
        load_dataset("fashion_mnist")
    msg = str(err.value)
    assert msg.startswith("The 'name' parameter of load_dataset must be one of {'digits'")
    assert "'cifar10_subset'}. Got 'fashion_mnist' instead." in msg


def test_bundled_without_split_and_with_a_seeded_split():
    splits = load_dataset("iris")
    assert isinstance(splits, DatasetSplits) and splits.test is None and len(splits.train) == 150
    train, test = load_dataset("wine", test_fraction=0.25, seed=3)
    assert len(test) == round(0.25 * 178) and len(train) + len(test) == 178
    train2, test2 = load_dataset("wine", test_fraction=0.25, seed=3)
    np.testing.assert_array_equal(test.X, test2.X)
    _, test3 = load_dataset("wine", test_fraction=0.25, seed=4)
    assert not np.array_equal(test.X, test3.X)
    assert train.meta["split"] == "train" and test.meta["split"] == "test"
    assert load_dataset("digits", as_images=True).train.X.shape == (1797, 1, 8, 8)


def test_parameter_errors():
    with pytest.raises(ParameterError, match="The dataset 'iris' has no option 'n_vehicles'"):
        load_dataset("iris", n_vehicles=3)
    with pytest.raises(
        ParameterError,
        match=r"'test_fraction' parameter of load_dataset must be a float in the range \(0, 1\)",
    ):
        load_dataset("iris", test_fraction=1.5)
    with pytest.raises(ParameterError, match=r"The 'seed' parameter of load_dataset must be an int"):
        load_dataset("iris", seed=-1)
    with pytest.raises(
        ParameterError, match=r"load_dataset\('mnist'\) \(it has a standard test split\) must be None"
    ):
        load_dataset("mnist", test_fraction=0.1)


def test_file_dataset_through_the_registry_and_environment(tmp_path, monkeypatch):
    write_tiny_mnist(tmp_path)
    train, test = load_dataset("mnist", data_dir=tmp_path, strict=False)
    assert isinstance(train, Dataset) and (len(train), len(test)) == (6, 4)
    assert train.meta["split"] == "train" and test.meta["split"] == "test"
    monkeypatch.setenv("PPML_DATA", str(tmp_path))
    assert len(load_dataset("mnist", strict=False).test) == 4
    with pytest.raises(DatasetNotFoundError, match=r"UCI Adult file 'adult.data' not found in .*adult or"):
        load_dataset("adult", data_dir=tmp_path)


def test_available_datasets_says_why_not(tmp_path, monkeypatch):
    monkeypatch.delenv("PPML_DATA", raising=False)
    infos = {i.name: i for i in available_datasets()}
    assert list(infos) == list(DATASET_NAMES)
    assert all(isinstance(i, DatasetInfo) for i in infos.values())
    for name in ("digits", "breast_cancer", "wine", "iris"):
        assert infos[name].available and infos[name].kind == "bundled" and infos[name].reason == ""
    assert infos["digits"].input_shape == (64,) and infos["digits"].num_classes == 10
    for name in FILE_SETS:
        assert infos[name].kind == "file" and not infos[name].available
        assert "PPML_DATA" in infos[name].reason
    assert infos["mnist"].n_train == 60000 and infos["mnist"].n_test == 10000
    assert "yann.lecun.com" in infos["mnist"].origin

    write_tiny_mnist(tmp_path)
    infos = {i.name: i for i in available_datasets(tmp_path)}
    assert infos["mnist"].available
    assert not infos["adult"].available
    assert infos["adult"].reason.startswith("UCI Adult file 'adult.data' not found in")
    assert str(tmp_path) in infos["adult"].reason


def test_adas_is_registered_lazily_and_split_by_vehicle():
    pytest.importorskip("ppml.data.adas")
    info = {i.name: i for i in available_datasets()}["adas"]
    assert info.kind == "synthetic" and info.available and "n_vehicles" in info.params
    splits = load_dataset("adas", n_vehicles=30, seed=1)
    assert splits.test is None and splits.train.owners is not None
    assert len(np.unique(splits.train.owners)) <= 30
    train, test = load_dataset("adas", n_vehicles=30, seed=1, test_fraction=0.2)
    assert not set(np.unique(train.owners)) & set(np.unique(test.owners))
    assert len(train) + len(test) == len(splits.train)
    again = load_dataset("adas", n_vehicles=30, seed=1)
    np.testing.assert_array_equal(again.train.X, splits.train.X)


def test_movielens_split_option(tmp_path):
    d = tmp_path / "movielens-100k"
    d.mkdir()
    rows = [
        (u, i, 1 + (u + i) % 5, 880000000 + 10 * k)
        for k, (u, i) in enumerate((u, i) for u in (1, 2) for i in range(1, 16))
    ]
    (d / "u.data").write_text("".join("\t".join(map(str, r)) + "\n" for r in rows))
    (d / "u.item").write_text(
        "".join(f"{i}|Movie {i}|||x|" + "|".join(["0"] * 19) + "\n" for i in range(1, 16))
    )
    whole = load_dataset("movielens_100k", data_dir=tmp_path, strict=False)
    assert whole.test is None and len(whole.train) == 30 and whole.train.owners is not None
    train, test = load_dataset("movielens_100k", data_dir=tmp_path, strict=False, split="ua")
    assert (len(train), len(test)) == (10, 20) and test.meta["split"] == "ua.test"
    with pytest.raises(ParameterError, match="The 'split' parameter of load_dataset\\('movielens_100k'\\)"):
        load_dataset("movielens_100k", data_dir=tmp_path, split="u9")
    with pytest.raises(ParameterError, match="standard test split"):
        load_dataset("movielens_100k", data_dir=tmp_path, split="ua", test_fraction=0.2)
    train, test = load_dataset("movielens_100k", data_dir=tmp_path, strict=False, test_fraction=0.5)
    assert set(np.unique(train.owners)) ^ set(np.unique(test.owners)) == {1, 2}  # split by user


def _real_dir() -> Path | None:
    candidates = [Path(os.environ["PPML_DATA"])] if os.environ.get("PPML_DATA") else []
    candidates.append(Path(__file__).resolve().parents[2] / ".." / "shared" / "data")
    for c in candidates:
        try:
            for name in FILE_SETS:
                locate_files(name, c)
            return c
        except DatasetNotFoundError:
            continue
    return None


@pytest.mark.realdata
def test_real_data_all_available_and_loadable():
    root = _real_dir()
    if root is None:
        pytest.skip("the real datasets are not in PPML_DATA or ../shared/data")
    infos = available_datasets(root)
    assert all(i.available for i in infos if i.kind == "file"), [i.reason for i in infos if not i.available]
    for name in ("adult", "cifar10_subset", "att_faces"):
        info = next(i for i in infos if i.name == name)
        splits = load_dataset(name, data_dir=root)
        assert splits.train.input_shape == info.input_shape
        assert len(splits.train) == info.n_train
        assert (splits.test is None and info.n_test is None) or len(splits.test) == info.n_test
