"""Loaders for public datasets kept as files in a data directory.

Nothing here downloads: every loader reads files that someone placed in a *data directory*
beforehand, checks their shapes and counts, and says precisely what is missing when they are not
there. The data directory is, in this order of precedence, the ``data_dir`` argument (the CLI's
``--data-dir``), or the ``PPML_DATA`` environment variable; with neither, loading fails with a
message saying so.

Each dataset's files are looked up first in its own subfolder of the data directory and then in
the data directory itself, so both layouts work::

    DATA/mnist/train-images-idx3-ubyte.gz          DATA/train-images-idx3-ubyte.gz
    DATA/adult/adult.data                          DATA/adult.data
    DATA/att_faces/s1/1.pgm                        DATA/s1/1.pgm
    DATA/olivetti/olivettifaces.mat                DATA/olivettifaces.mat
    DATA/movielens-100k/u.data                     DATA/u.data
    DATA/cifar10_subset/cifar10_subset.npz         DATA/cifar10_subset.npz

Every loader takes ``strict=True``: the canonical counts (MNIST 60,000/10,000 images, Adult
32,561/16,281 raw rows, 400 faces, 100,000 ratings of 943 users on 1,682 items, ...) are then
enforced. ``strict=False`` keeps every structural check (magic numbers, image sizes, label
ranges, field counts) but accepts any number of records, for small test files.

Missing files raise :class:`DatasetNotFoundError` (a :class:`FileNotFoundError`); files that
exist but are truncated, corrupt or of the wrong shape raise :class:`DatasetFormatError`.
"""

from __future__ import annotations

import gzip
import os
import re
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._validation import Options, check_param
from .dataset import Dataset

__all__ = [
    "DatasetNotFoundError",
    "DatasetFormatError",
    "FileSource",
    "FILE_SOURCES",
    "resolve_data_dir",
    "locate_files",
    "read_idx",
    "read_pgm",
    "load_mnist",
    "load_adult",
    "load_att_faces",
    "load_olivetti",
    "load_cifar10_subset",
    "MovieLensUsers",
    "Ratings",
    "load_movielens100k",
    "ADULT_COLUMNS",
    "ADULT_CATEGORIES",
    "MOVIELENS_GENRES",
    "MOVIELENS_SPLITS",
]

ENV_VAR = "PPML_DATA"
_SPLITS = Options(("train", "test"))


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's file (or the data directory itself) is not where it was looked for.

    The message is one line naming the missing file, the folders searched and where the dataset
    comes from. ``dataset``, ``filename`` and ``searched`` hold the same facts for programs.
    """

    def __init__(
        self,
        message: str,
        *,
        dataset: str | None = None,
        filename: str | None = None,
        searched: tuple[Path, ...] = (),
    ) -> None:
        super().__init__(message)
        self.dataset = dataset
        self.filename = filename
        self.searched = searched

    def __str__(self) -> str:
        return str(self.args[0])


class DatasetFormatError(ValueError):
    """A dataset's file exists but is corrupt, truncated, or has unexpected shapes or counts."""


@dataclass(frozen=True)
class FileSource:
    """Where a file-based dataset lives and where it comes from.

    Parameters
    ----------
    name : str
        Registry name (``"mnist"``).
    label : str
        Human name used in messages (``"MNIST"``).
    subdir : str
        The dataset's usual subfolder of the data directory.
    holding : str
        What the folder should hold, for error messages (``"the MNIST IDX files"``).
    origin : str
        Where the files come from (a URL).
    citation : str
        What to cite, and the terms of use where they matter.
    """

    name: str
    label: str
    subdir: str
    holding: str
    origin: str
    citation: str

    def hint(self) -> str:
        return f"set --data-dir or {ENV_VAR} to a folder holding {self.holding} from {self.origin}"


FILE_SOURCES: dict[str, FileSource] = {
    s.name: s
    for s in (
        FileSource(
            "mnist",
            "MNIST",
            "mnist",
            "the MNIST IDX files",
            "http://yann.lecun.com/exdb/mnist/",
            "LeCun, Bottou, Bengio & Haffner 1998; CC BY-SA 3.0",
        ),
        FileSource(
            "adult",
            "UCI Adult",
            "adult",
            "adult.data and adult.test",
            "https://archive.ics.uci.edu/dataset/2/adult",
            "Becker & Kohavi 1996, doi:10.24432/C5XW20; CC BY 4.0",
        ),
        FileSource(
            "att_faces",
            "AT&T faces",
            "att_faces",
            "the AT&T (ORL) face images s1/1.pgm .. s40/10.pgm",
            "https://www.cl.cam.ac.uk/research/dtg/attarchive/facedatabase.html",
            "Samaria & Harter 1994; credit Olivetti Research Laboratory; research use",
        ),
        FileSource(
            "olivetti",
            "Olivetti faces",
            "olivetti",
            "olivettifaces.mat",
            "https://cs.nyu.edu/~roweis/data.html",
            "Samaria & Harter 1994 (64x64 version by S. Roweis); research use",
        ),
        FileSource(
            "movielens_100k",
            "MovieLens 100K",
            "movielens-100k",
            "u.data and u.item of MovieLens 100K",
            "https://grouplens.org/datasets/movielens/100k/",
            "Harper & Konstan 2015; GroupLens terms: research use, no redistribution without permission",
        ),
        FileSource(
            "cifar10_subset",
            "CIFAR-10 subset",
            "cifar10_subset",
            "cifar10_subset.npz, a subset of CIFAR-10",
            "https://www.cs.toronto.edu/~kriz/cifar.html",
            "Krizhevsky 2009, 'Learning Multiple Layers of Features from Tiny Images'",
        ),
    )
}


# --------------------------------------------------------------------------------------------
# Locating files
# --------------------------------------------------------------------------------------------


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None, *, dataset: str | None = None) -> Path:
    """The data directory: ``data_dir`` if given, else ``$PPML_DATA``; it must exist.

    Parameters
    ----------
    data_dir : str or path-like, optional
        An explicit folder. Takes precedence over the environment.
    dataset : str, optional
        Registry name of the dataset being loaded, to make error messages specific.

    Returns
    -------
    Path
        The folder, with ``~`` expanded.

    Raises
    ------
    DatasetNotFoundError
        When neither was given, or the folder does not exist.
    """
    src = FILE_SOURCES.get(dataset) if dataset else None
    what = f"{src.holding} from {src.origin}" if src else "the datasets"
    label = src.label if src else "dataset"
    if data_dir is None or str(data_dir) == "":
        env = os.environ.get(ENV_VAR, "")
        if not env:
            raise DatasetNotFoundError(
                f"No data directory for {label}: neither data_dir (--data-dir) nor the {ENV_VAR} "
                f"environment variable was given (point one of them at a folder holding {what})",
                dataset=dataset,
            )
        path, via = Path(env).expanduser(), f"{ENV_VAR}={env}"
    else:
        path, via = Path(data_dir).expanduser(), "data_dir"
    if not path.is_dir():
        raise DatasetNotFoundError(
            f"Data directory {path} (from {via}) does not exist or is not a folder (it should hold {what})",
            dataset=dataset,
            searched=(path,),
        )
    return path


def _search_dirs(root: Path, subdir: str) -> tuple[Path, ...]:
    return (root / subdir, root) if subdir else (root,)


def _find(root: Path, src: FileSource, names: Sequence[str]) -> Path:
    """First existing file among ``names`` (alternatives for one file) in the dataset's folders."""
    dirs = _search_dirs(root, src.subdir)
    for d in dirs:
        for n in names:
            p = d / n
            if p.is_file():
                return p
    raise _not_found(src, names[0], dirs)


_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_ATT_SHAPE = (112, 92)


def _alternatives(name: str) -> tuple[str, ...]:
    return (name + ".gz", name) if name.endswith("ubyte") else (name,)


def _required_files(name: str) -> list[tuple[str, ...]]:
    """The files (each a tuple of accepted names) that dataset ``name`` needs."""
    if name == "mnist":
        return [_alternatives(f) for split in ("train", "test") for f in _MNIST_FILES[split]]
    if name == "adult":
        return [("adult.data",), ("adult.test",)]
    if name == "att_faces":
        return [(f"s{s}/{i}.pgm",) for s in range(1, 41) for i in range(1, 11)]
    if name == "olivetti":
        return [("olivettifaces.mat",)]
    if name == "movielens_100k":
        return [("u.data",), ("u.item",)]
    if name == "cifar10_subset":
        return [("cifar10_subset.npz",)]
    raise KeyError(name)


def locate_files(name: str, data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Paths of every file that dataset ``name`` needs, without reading them.

    Cheap (only ``stat`` calls); used to tell whether a dataset is available.

    Raises
    ------
    DatasetNotFoundError
        Naming the first file (or the data directory) that is missing.
    """
    check_param("name", name, "locate_files", Options(tuple(FILE_SOURCES)))
    root = resolve_data_dir(data_dir, dataset=name)
    src = FILE_SOURCES[name]
    return [_find(root, src, names) for names in _required_files(name)]


def _read_bytes(path: Path) -> bytes:
    """File content, transparently gunzipped when it starts with the gzip magic number."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise DatasetFormatError(f"{path} is not a valid gzip file ({exc})") from exc
    return raw


# --------------------------------------------------------------------------------------------
# MNIST (IDX files)
# --------------------------------------------------------------------------------------------

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (LeCun's MNIST format), gzipped or not.

    Parameters
    ----------
    path : str or path-like
        The file; gzip is recognised by its magic number, not by the name.

    Returns
    -------
    ndarray
        The array with the shape and element type the header declares (read-only for uint8).

    Raises
    ------
    DatasetFormatError
        Bad magic number, unknown element type, or a size that disagrees with the header.
    """
    p = Path(path)
    b = _read_bytes(p)
    if len(b) < 4 or b[0] != 0 or b[1] != 0 or b[2] not in _IDX_DTYPES or b[3] == 0:
        raise DatasetFormatError(f"{p} is not an IDX file (bad magic number {b[:4].hex() or 'empty'})")
    dtype, ndim = _IDX_DTYPES[b[2]], b[3]
    header = 4 + 4 * ndim
    if len(b) < header:
        raise DatasetFormatError(f"{p} is truncated: {len(b)} bytes, shorter than its {header}-byte header")
    shape = tuple(int.from_bytes(b[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(b) - header != expected:
        raise DatasetFormatError(
            f"{p} holds {len(b) - header} data bytes but its header declares shape {shape} "
            f"({expected} bytes): the file is truncated or corrupt"
        )
    return np.frombuffer(b, dtype=dtype, offset=header).reshape(shape)


def load_mnist(
    data_dir: str | os.PathLike[str] | None = None, *, split: str = "train", strict: bool = True
) -> Dataset:
    """MNIST handwritten digits from the four IDX files.

    Parameters
    ----------
    data_dir : str or path-like, optional
        Folder holding ``mnist/`` or the IDX files themselves (``.gz`` or not); default ``$PPML_DATA``.
    split : {"train", "test"}
        The 60,000 training or 10,000 test images.
    strict : bool
        Require the canonical counts (60,000 / 10,000).

    Returns
    -------
    Dataset
        ``X`` of shape (n, 1, 28, 28) float32, pixels divided by 255 (in [0, 1]); ``y`` int64 digits.
        ``meta["mean"]``/``meta["std"]`` hold the usual normalisation constants 0.1307/0.3081
        (training-set pixel statistics) for models that want them; nothing is applied.
    """
    check_param("split", split, "load_mnist", _SPLITS)
    check_param("strict", strict, "load_mnist", bool)
    src = FILE_SOURCES["mnist"]
    root = resolve_data_dir(data_dir, dataset="mnist")
    img_name, lab_name = _MNIST_FILES[split]
    img_path = _find(root, src, _alternatives(img_name))
    lab_path = _find(root, src, _alternatives(lab_name))
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise DatasetFormatError(
            f"{img_path} should hold uint8 images of shape (n, 28, 28); it holds {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DatasetFormatError(f"{lab_path} should hold uint8 labels of shape (n,); got {labels.shape}")
    if len(labels) != len(images):
        raise DatasetFormatError(f"{img_path} holds {len(images)} images but {lab_path} {len(labels)} labels")
    expected = 60000 if split == "train" else 10000
    if strict and len(images) != expected:
        raise DatasetFormatError(
            f"MNIST {split} should have {expected} images; {img_path} has {len(images)} (strict=False accepts it)"
        )
    if labels.size and labels.max() > 9:
        raise DatasetFormatError(f"{lab_path} holds label {int(labels.max())}; MNIST labels are 0..9")
    X = images.reshape(-1, 1, 28, 28).astype(np.float32)
    X /= np.float32(255)
    return Dataset(
        X=X,
        y=labels.astype(np.int64),
        name="mnist",
        num_classes=10,
        source=str(img_path),
        class_names=tuple(str(d) for d in range(10)),
        meta={
            "split": split,
            "origin": src.origin,
            "citation": src.citation,
            "scaling": "pixels / 255, in [0, 1]",
            "standardize": False,
            "mean": 0.1307,
            "std": 0.3081,
        },
    )


# --------------------------------------------------------------------------------------------
# UCI Adult
# --------------------------------------------------------------------------------------------

ADULT_COLUMNS: tuple[str, ...] = (
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
    "income",
)
_ADULT_NUMERIC = ("age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week")


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


#: The categories of each categorical column, in the order ``adult.names`` lists them. Fixing them
#: here (instead of learning them from the rows) gives train and test the same 105 columns.
ADULT_CATEGORIES: dict[str, tuple[str, ...]] = {
    "workclass": _words(
        "Private Self-emp-not-inc Self-emp-inc Federal-gov Local-gov State-gov Without-pay Never-worked"
    ),
    "education": _words(
        "Bachelors Some-college 11th HS-grad Prof-school Assoc-acdm Assoc-voc 9th 7th-8th 12th Masters "
        "1st-4th 10th Doctorate 5th-6th Preschool"
    ),
    "marital-status": _words(
        "Married-civ-spouse Divorced Never-married Separated Widowed Married-spouse-absent Married-AF-spouse"
    ),
    "occupation": _words(
        "Tech-support Craft-repair Other-service Sales Exec-managerial Prof-specialty Handlers-cleaners "
        "Machine-op-inspct Adm-clerical Farming-fishing Transport-moving Priv-house-serv Protective-serv "
        "Armed-Forces"
    ),
    "relationship": _words("Wife Own-child Husband Not-in-family Other-relative Unmarried"),
    "race": _words("White Asian-Pac-Islander Amer-Indian-Eskimo Other Black"),
    "sex": _words("Female Male"),
    "native-country": _words(
        "United-States Cambodia England Puerto-Rico Canada Germany Outlying-US(Guam-USVI-etc) India Japan "
        "Greece South China Cuba Iran Honduras Philippines Italy Poland Jamaica Vietnam Mexico Portugal "
        "Ireland France Dominican-Republic Laos Ecuador Taiwan Haiti Columbia Hungary Guatemala Nicaragua "
        "Scotland Thailand Yugoslavia El-Salvador Trinadad&Tobago Peru Hong Holand-Netherlands"
    ),
}
_ADULT_ROWS = {"train": 32561, "test": 16281}


def load_adult(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    split: str = "train",
    missing: str = "keep",
    strict: bool = True,
) -> Dataset:
    """UCI Adult (Census Income): predict whether income exceeds $50K.

    Parameters
    ----------
    data_dir : str or path-like, optional
        Folder holding ``adult/`` or ``adult.data``/``adult.test``; default ``$PPML_DATA``.
    split : {"train", "test"}
        ``adult.data`` (32,561 rows) or ``adult.test`` (16,281 rows; its first line
        ``|1x3 Cross validator`` is skipped and the labels' trailing period dropped).
    missing : {"keep", "drop"}
        What to do with ``?`` (unknown workclass, occupation or native-country). ``"keep"`` keeps
        the row and encodes the unknown value as all zeros in that column's one-hot block (an
        implicit "unknown" level); ``"drop"`` removes every row with a ``?`` (leaving the 30,162 /
        15,060 rows most papers report).
    strict : bool
        Require the canonical raw row counts (32,561 / 16,281, counted before dropping).

    Returns
    -------
    Dataset
        ``X`` float32 of shape (n, 105): the six numeric columns (age, fnlwgt, education-num,
        capital-gain, capital-loss, hours-per-week) **raw**, then one-hot blocks for the eight
        categorical columns with the categories of ``adult.names`` (:data:`ADULT_CATEGORIES`), so
        train and test always have the same columns. ``y`` is 1 for ``>50K``. The numeric columns
        span very different ranges (fnlwgt is about 1e5): ``meta["standardize"]`` is True and
        models should standardise with statistics of the training split.
        ``meta["numeric_features"]`` and ``meta["categorical_blocks"]`` (column -> (start, stop))
        locate the columns, e.g. the sensitive ``sex`` and ``race`` blocks.
    """
    owner = "load_adult"
    check_param("split", split, owner, _SPLITS)
    check_param("missing", missing, owner, Options(("keep", "drop")))
    check_param("strict", strict, owner, bool)
    src = FILE_SOURCES["adult"]
    root = resolve_data_dir(data_dir, dataset="adult")
    path = _find(root, src, ("adult.data" if split == "train" else "adult.test",))
    try:
        text = _read_bytes(path).decode("ascii")
    except UnicodeDecodeError as exc:
        raise DatasetFormatError(f"{path} is not an ASCII text file ({exc})") from exc

    lineno: list[int] = []
    rows: list[list[str]] = []
    for i, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s or s.startswith("|"):
            continue
        fields = [f.strip() for f in s.split(",")]
        if len(fields) != len(ADULT_COLUMNS):
            raise DatasetFormatError(
                f"{path}, line {i}: expected {len(ADULT_COLUMNS)} comma-separated fields, got {len(fields)}"
            )
        rows.append(fields)
        lineno.append(i)
    n_raw = len(rows)
    if strict and n_raw != _ADULT_ROWS[split]:
        raise DatasetFormatError(
            f"UCI Adult {split} should have {_ADULT_ROWS[split]} rows; {path} has {n_raw} (strict=False accepts it)"
        )
    if n_raw == 0:
        raise DatasetFormatError(f"{path} holds no records")
    table = np.array(rows, dtype=str)
    col = {c: j for j, c in enumerate(ADULT_COLUMNS)}

    labels = np.char.rstrip(table[:, col["income"]], ".")
    y = np.where(labels == ">50K", 1, 0).astype(np.int64)
    bad = ~np.isin(labels, (">50K", "<=50K"))
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise DatasetFormatError(
            f"{path}, line {lineno[k]}: income {str(labels[k])!r} is neither '>50K' nor '<=50K'"
        )

    numeric = np.empty((n_raw, len(_ADULT_NUMERIC)), dtype=np.float32)
    for j, c in enumerate(_ADULT_NUMERIC):
        try:
            numeric[:, j] = table[:, col[c]].astype(np.float64)
        except ValueError as exc:
            raise DatasetFormatError(f"{path}: column {c!r} holds a non-numeric value ({exc})") from exc

    has_missing = np.zeros(n_raw, dtype=bool)
    blocks: list[np.ndarray] = []
    names: list[str] = list(_ADULT_NUMERIC)
    starts: dict[str, tuple[int, int]] = {}
    pos = len(_ADULT_NUMERIC)
    for c, cats in ADULT_CATEGORIES.items():
        values = table[:, col[c]]
        lookup = {v: k for k, v in enumerate(cats)}
        lookup["?"] = -1
        codes = np.array([lookup.get(v, -2) for v in values], dtype=np.int64)
        if (codes == -2).any():
            k = int(np.flatnonzero(codes == -2)[0])
            raise DatasetFormatError(f"{path}, line {lineno[k]}: unknown {c} {str(values[k])!r}")
        has_missing |= codes == -1
        onehot = np.zeros((n_raw, len(cats)), dtype=np.float32)
        known = codes >= 0
        onehot[np.flatnonzero(known), codes[known]] = 1.0
        blocks.append(onehot)
        names.extend(f"{c}={v}" for v in cats)
        starts[c] = (pos, pos + len(cats))
        pos += len(cats)

    X = np.concatenate([numeric, *blocks], axis=1)
    keep = ~has_missing if missing == "drop" else np.ones(n_raw, dtype=bool)
    return Dataset(
        X=np.ascontiguousarray(X[keep]),
        y=y[keep],
        name="adult",
        num_classes=2,
        feature_names=tuple(names),
        source=str(path),
        class_names=("<=50K", ">50K"),
        meta={
            "split": split,
            "origin": src.origin,
            "citation": src.citation,
            "scaling": "raw numeric columns and 0/1 one-hot columns",
            "standardize": True,
            "numeric_features": tuple(range(len(_ADULT_NUMERIC))),
            "categorical_blocks": starts,
            "missing": missing,
            "raw_rows": n_raw,
            "rows_with_missing": int(has_missing.sum()),
        },
    )


# --------------------------------------------------------------------------------------------
# Faces: AT&T (PGM) and Olivetti (.mat)
# --------------------------------------------------------------------------------------------

_PGM_TOKEN = re.compile(rb"\s*(?:#[^\n]*\n\s*)*(\S+)")


def read_pgm(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a binary (``P5``) PGM image.

    Returns
    -------
    ndarray of shape (height, width)
        uint8 when the header's maximum value is below 256, else uint16 (16-bit PGMs are
        big-endian). The maximum value itself is not returned; AT&T's images use 255.

    Raises
    ------
    DatasetFormatError
        Not a P5 file, a malformed header, or fewer pixel bytes than the header declares.
    """
    p = Path(path)
    b = p.read_bytes()
    if b[:2] != b"P5":
        raise DatasetFormatError(f"{p} is not a binary PGM (P5) image (starts with {b[:2]!r})")
    pos, vals = 2, []
    for _ in range(3):
        m = _PGM_TOKEN.match(b, pos)
        if m is None or not m.group(1).isdigit():
            raise DatasetFormatError(f"{p} has a malformed PGM header")
        vals.append(int(m.group(1)))
        pos = m.end()
    width, height, maxval = vals
    if not 0 < maxval < 65536 or width <= 0 or height <= 0:
        raise DatasetFormatError(f"{p}: invalid PGM header (width {width}, height {height}, maxval {maxval})")
    pos += 1  # exactly one whitespace byte ends the header
    dtype = np.dtype(np.uint8) if maxval < 256 else np.dtype(">u2")
    need = width * height * dtype.itemsize
    if len(b) - pos < need:
        raise DatasetFormatError(f"{p} is truncated: {len(b) - pos} pixel bytes, {need} expected")
    return (
        np.frombuffer(b, dtype=dtype, count=width * height, offset=pos)
        .reshape(height, width)
        .astype(np.uint8 if maxval < 256 else np.uint16)
    )


def _not_found(src: FileSource, filename: str, dirs: tuple[Path, ...]) -> DatasetNotFoundError:
    where = " or ".join(str(d) for d in dirs)
    return DatasetNotFoundError(
        f"{src.label} file '{filename}' not found in {where} ({src.hint()})",
        dataset=src.name,
        filename=filename,
        searched=dirs,
    )


def _att_files(root: Path, src: FileSource, strict: bool) -> tuple[Path, list[tuple[int, list[Path]]]]:
    """The AT&T folder and its (subject number, image files) in subject order."""
    if strict:
        base = _find(root, src, ("s1/1.pgm",)).parent.parent
        subjects = []
        for s in range(1, 41):
            files = [base / f"s{s}" / f"{i}.pgm" for i in range(1, 11)]
            for f in files:
                if not f.is_file():
                    raise _not_found(src, f"s{s}/{f.name}", (base,))
            subjects.append((s, files))
        return base, subjects
    dirs = _search_dirs(root, src.subdir)
    for base in dirs:
        found = []
        for d in base.glob("s*"):
            if d.is_dir() and re.fullmatch(r"s\d+", d.name):
                imgs = sorted((f for f in d.glob("*.pgm") if f.stem.isdigit()), key=lambda f: int(f.stem))
                if imgs:
                    found.append((int(d.name[1:]), imgs))
        if found:
            return base, sorted(found)
    raise _not_found(src, "s1/1.pgm", dirs)


def load_att_faces(data_dir: str | os.PathLike[str] | None = None, *, strict: bool = True) -> Dataset:
    """AT&T (ORL) Database of Faces: 40 subjects, 10 grey images each, 112x92 pixels.

    The faces used by Fredrikson et al. (CCS 2015) for model inversion.

    Parameters
    ----------
    data_dir : str or path-like, optional
        Folder holding ``att_faces/s1/1.pgm`` ... or ``s1/1.pgm`` ...; default ``$PPML_DATA``.
    strict : bool
        Require exactly ``s1..s40`` with images ``1..10`` each, all 112x92. With ``strict=False``
        whatever ``s<k>/<i>.pgm`` files exist are read (all of one size).

    Returns
    -------
    Dataset
        ``X`` of shape (n, 1, 112, 92) float32, pixels divided by the PGM maximum value (255),
        in [0, 1]; ``y`` = subject index in folder order (``s1`` -> 0), ``class_names`` the
        folder names. The label *is* the person, so no ``owners`` are set. Photos of real people:
        research use only.
    """
    check_param("strict", strict, "load_att_faces", bool)
    src = FILE_SOURCES["att_faces"]
    root = resolve_data_dir(data_dir, dataset="att_faces")
    base, subjects = _att_files(root, src, strict)
    images, labels = [], []
    for k, (_, files) in enumerate(subjects):
        for f in files:
            images.append(read_pgm(f))
            labels.append(k)
    shapes = {im.shape for im in images}
    if len(shapes) != 1 or (strict and shapes != {_ATT_SHAPE}):
        raise DatasetFormatError(
            f"AT&T faces in {base} should all be {_ATT_SHAPE[0]}x{_ATT_SHAPE[1]} pixels; found sizes {sorted(shapes)}"
        )
    stack = np.stack(images)
    scale = np.float32(255 if stack.dtype == np.uint8 else 65535)
    X = stack[:, None].astype(np.float32) / scale
    return Dataset(
        X=X,
        y=np.asarray(labels, dtype=np.int64),
        name="att_faces",
        num_classes=len(subjects),
        source=str(base),
        class_names=tuple(f"s{s}" for s, _ in subjects),
        meta={
            "origin": src.origin,
            "citation": src.citation,
            "scaling": "pixels / 255, in [0, 1]",
            "standardize": False,
        },
    )


def load_olivetti(data_dir: str | os.PathLike[str] | None = None, *, strict: bool = True) -> Dataset:
    """Olivetti faces: the AT&T faces cropped and scaled to 64x64 by Sam Roweis.

    Parameters
    ----------
    data_dir : str or path-like, optional
        Folder holding ``olivetti/olivettifaces.mat`` or ``olivettifaces.mat``; default ``$PPML_DATA``.
    strict : bool
        Require the canonical 400 images (a (4096, 400) ``faces`` variable).

    Returns
    -------
    Dataset
        ``X`` of shape (n, 1, 64, 64) float32, pixels divided by 255. (scikit-learn's
        ``fetch_olivetti_faces`` min-max scales instead, which divides this file by its maximum,
        242; multiply by 255/242 to match it.) Images are oriented as scikit-learn's; ``y`` is the
        subject, 10 consecutive images each, in the same order as :func:`load_att_faces`.
    """
    import scipy.io

    check_param("strict", strict, "load_olivetti", bool)
    src = FILE_SOURCES["olivetti"]
    root = resolve_data_dir(data_dir, dataset="olivetti")
    path = _find(root, src, ("olivettifaces.mat",))
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises several types (ValueError, TypeError, MatReadError)
        raise DatasetFormatError(
            f"{path} is not a readable MATLAB file ({type(exc).__name__}: {exc})"
        ) from exc
    if "faces" not in mat:
        raise DatasetFormatError(
            f"{path} has no 'faces' variable (found {sorted(k for k in mat if k[0] != '_')})"
        )
    faces = np.asarray(mat["faces"])
    if faces.ndim != 2 or faces.shape[0] != 64 * 64 or faces.shape[1] % 10 != 0 or faces.shape[1] == 0:
        raise DatasetFormatError(
            f"{path}: 'faces' should have shape (4096, 10 * subjects); it has shape {faces.shape}"
        )
    if strict and faces.shape != (4096, 400):
        raise DatasetFormatError(
            f"Olivetti should hold 400 images; {path} holds {faces.shape[1]} (strict=False accepts it)"
        )
    n = faces.shape[1]
    images = faces.T.reshape(n, 64, 64).transpose(0, 2, 1)
    X = images[:, None].astype(np.float32) / np.float32(255)
    return Dataset(
        X=np.ascontiguousarray(X),
        y=np.repeat(np.arange(n // 10, dtype=np.int64), 10),
        name="olivetti",
        num_classes=n // 10,
        source=str(path),
        class_names=tuple(f"s{s + 1}" for s in range(n // 10)),
        meta={
            "origin": src.origin,
            "citation": src.citation,
            "scaling": "pixels / 255, in [0, 1] (scikit-learn divides by the maximum, 242)",
            "standardize": False,
        },
    )


# --------------------------------------------------------------------------------------------
# CIFAR-10 subset (.npz)
# --------------------------------------------------------------------------------------------

_CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_CIFAR_COUNTS = {"train": (4000, 50000), "test": (1000, 10000)}


def load_cifar10_subset(
    data_dir: str | os.PathLike[str] | None = None, *, split: str = "train", strict: bool = True
) -> Dataset:
    """A subset of CIFAR-10 stored as ``cifar10_subset.npz``.

    Parameters
    ----------
    data_dir : str or path-like, optional
        Folder holding ``cifar10_subset/cifar10_subset.npz`` or the ``.npz`` itself; default ``$PPML_DATA``.
    split : {"train", "test"}
        ``x_train``/``y_train`` or ``x_test``/``y_test``.
    strict : bool
        Require the known sizes: 4,000 train / 1,000 test (the shared subset: the first images of
        ``data_batch_1`` and ``test_batch``), or 50,000 / 10,000 for an ``.npz`` of the full set.

    Returns
    -------
    Dataset
        ``X`` of shape (n, 3, 32, 32) float32 (channels first), pixels divided by 255. The usual
        per-channel constants are in ``meta["mean"]``/``meta["std"]``; nothing is applied.
    """
    check_param("split", split, "load_cifar10_subset", _SPLITS)
    check_param("strict", strict, "load_cifar10_subset", bool)
    src = FILE_SOURCES["cifar10_subset"]
    root = resolve_data_dir(data_dir, dataset="cifar10_subset")
    path = _find(root, src, ("cifar10_subset.npz",))
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            xk, yk = f"x_{split}", f"y_{split}"
            if not {xk, yk} <= keys:
                raise DatasetFormatError(f"{path} lacks arrays {xk!r}/{yk!r} (it has {sorted(keys)})")
            x, y = npz[xk], npz[yk]
            classes = tuple(str(c) for c in npz["classes"]) if "classes" in keys else _CIFAR_CLASSES
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        if isinstance(exc, DatasetFormatError):
            raise
        raise DatasetFormatError(f"{path} is not a readable .npz file ({exc})") from exc
    if x.ndim != 4 or x.shape[1:] != (32, 32, 3) or x.dtype != np.uint8:
        raise DatasetFormatError(f"{path}: {xk} should be uint8 (n, 32, 32, 3); it is {x.dtype} {x.shape}")
    if y.shape != (len(x),):
        raise DatasetFormatError(f"{path}: {yk} has shape {y.shape}, expected ({len(x)},)")
    if len(classes) != 10 or (y.size and (y.min() < 0 or y.max() > 9)):
        raise DatasetFormatError(f"{path}: CIFAR-10 has 10 classes (labels 0..9)")
    if strict and len(x) not in _CIFAR_COUNTS[split]:
        raise DatasetFormatError(
            f"CIFAR-10 subset {split} should have {' or '.join(map(str, _CIFAR_COUNTS[split]))} images; "
            f"{path} has {len(x)} (strict=False accepts it)"
        )
    X = x.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
    return Dataset(
        X=np.ascontiguousarray(X),
        y=y.astype(np.int64),
        name="cifar10_subset",
        num_classes=10,
        source=str(path),
        class_names=classes,
        meta={
            "split": split,
            "origin": src.origin,
            "citation": src.citation,
            "scaling": "pixels / 255, in [0, 1]; channels first",
            "standardize": False,
            "mean": (0.4914, 0.4822, 0.4465),
            "std": (0.2470, 0.2435, 0.2616),
        },
    )


# --------------------------------------------------------------------------------------------
# MovieLens 100K
# --------------------------------------------------------------------------------------------

MOVIELENS_GENRES: tuple[str, ...] = _words(
    "unknown Action Adventure Animation Children's Comedy Crime Documentary Drama Fantasy Film-Noir "
    "Horror Musical Mystery Romance Sci-Fi Thriller War Western"
)
MOVIELENS_SPLITS: tuple[str, ...] = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")


@dataclass(frozen=True, eq=False)
class MovieLensUsers:
    """Demographics from ``u.user``, indexed by ``user id - 1``.

    These are quasi-identifiers (age, gender, occupation, zip code): the auxiliary knowledge of
    linkage and attribute-inference attacks.
    """

    age: np.ndarray
    gender: np.ndarray
    occupation: np.ndarray
    zip_code: np.ndarray


@dataclass(frozen=True, eq=False)
class Ratings:
    """Explicit ratings of items by users (MovieLens 100K).

    Parameters
    ----------
    data : ndarray of shape (n, 4) int64
        Columns ``user, item, rating, timestamp`` in file order; ids count from 1 as in the files,
        ratings are 1..5, timestamps are Unix seconds.
    titles : tuple of str
        ``titles[item - 1]`` is the item's title (``u.item`` is decoded as latin-1).
    num_users, num_items : int
        Number of users and items (943 and 1,682).
    item_genres : ndarray of shape (num_items, 19) bool
        Genre flags of ``u.item``, columns named by ``genre_names``.
    users : MovieLensUsers or None
        Demographics when ``u.user`` is present.
    """

    data: np.ndarray
    titles: tuple[str, ...]
    num_users: int
    num_items: int
    item_genres: np.ndarray
    genre_names: tuple[str, ...] = MOVIELENS_GENRES
    users: MovieLensUsers | None = None
    source: str = ""
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(len(self.data))

    @property
    def user(self) -> np.ndarray:
        return self.data[:, 0]

    @property
    def item(self) -> np.ndarray:
        return self.data[:, 1]

    @property
    def rating(self) -> np.ndarray:
        return self.data[:, 2]

    @property
    def timestamp(self) -> np.ndarray:
        return self.data[:, 3]

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Row indices of one of the standard MovieLens 100K splits, as ``(train, test)``.

        ``"u1"`` .. ``"u5"``: the five-fold splits (``u{i}.test`` is rows ``20000 * (i - 1)`` to
        ``20000 * i - 1`` of ``u.data``; the base is the rest). ``"ua"``/``"ub"``: each user's 1st-10th
        (``ua``) or 11th-20th (``ub``) ratings in file order are the test set. Indices are ordered by
        (user, item) like the published ``.base``/``.test`` files.
        """
        check_param("name", name, "Ratings.split", Options(MOVIELENS_SPLITS))
        n = len(self.data)
        if name.startswith("u") and name[1:].isdigit():
            i = int(name[1:])
            test = np.zeros(n, dtype=bool)
            test[20000 * (i - 1) : 20000 * i] = True
        else:
            order = np.argsort(self.user, kind="stable")
            u_sorted = self.user[order]
            first = np.searchsorted(u_sorted, u_sorted, side="left")
            rank = np.empty(n, dtype=np.int64)
            rank[order] = np.arange(n) - first
            lo = 0 if name == "ua" else 10
            test = (rank >= lo) & (rank < lo + 10)
        by_user_item = np.lexsort((self.item, self.user))
        return by_user_item[~test[by_user_item]], by_user_item[test[by_user_item]]

    def to_dataset(self) -> Dataset:
        """The ratings as a 5-class :class:`Dataset` whose owners are the users.

        ``X`` has shape (n, 2) float32: the zero-based user and item *indices* (exact in float32),
        for embedding lookups rather than scaling. ``y`` is ``rating - 1`` (classes ``"1"``..``"5"``)
        and ``owners`` the user ids as in the file, so a by-owner partition gives one client per user.
        """
        X = np.stack([self.user - 1, self.item - 1], axis=1).astype(np.float32)
        return Dataset(
            X=X,
            y=(self.rating - 1).astype(np.int64),
            name="movielens_100k",
            num_classes=5,
            owners=self.user.astype(np.int64),
            feature_names=("user_index", "item_index"),
            source=self.source,
            class_names=("1", "2", "3", "4", "5"),
            meta={
                **self.meta,
                "scaling": "zero-based integer ids (for embeddings), not scaled",
                "standardize": False,
                "num_users": self.num_users,
                "num_items": self.num_items,
            },
        )


def load_movielens100k(data_dir: str | os.PathLike[str] | None = None, *, strict: bool = True) -> Ratings:
    """MovieLens 100K ratings (``u.data``), titles and genres (``u.item``) and users (``u.user``).

    Parameters
    ----------
    data_dir : str or path-like, optional
        Folder holding ``movielens-100k/u.data`` or ``u.data``; default ``$PPML_DATA``.
    strict : bool
        Require 100,000 ratings by 943 users of 1,682 items.

    Returns
    -------
    Ratings
        Not a :class:`Dataset`; :meth:`Ratings.to_dataset` gives one. ``u.user`` is optional.

    Notes
    -----
    GroupLens' terms allow research use and forbid redistribution without permission; cite
    Harper & Konstan, ACM TiiS 5(4), 2015.
    """
    check_param("strict", strict, "load_movielens100k", bool)
    src = FILE_SOURCES["movielens_100k"]
    root = resolve_data_dir(data_dir, dataset="movielens_100k")
    data_path = _find(root, src, ("u.data",))
    item_path = _find(root, src, ("u.item",))

    text = data_path.read_text(encoding="ascii", errors="replace")
    tokens = text.split()
    if len(tokens) % 4 != 0:
        raise DatasetFormatError(f"{data_path}: expected 4 whitespace-separated fields per line")
    try:
        data = np.array(tokens, dtype=np.int64).reshape(-1, 4)
    except ValueError as exc:
        raise DatasetFormatError(f"{data_path} holds a non-integer field ({exc})") from exc
    if len(data) == 0:
        raise DatasetFormatError(f"{data_path} holds no ratings")

    titles: list[str] = []
    genres: list[list[int]] = []
    for i, line in enumerate(item_path.read_text(encoding="latin-1").splitlines(), start=1):
        if not line.strip():
            continue
        f = line.split("|")
        if len(f) != 5 + len(MOVIELENS_GENRES) or f[0] != str(len(titles) + 1):
            raise DatasetFormatError(
                f"{item_path}, line {i}: expected item {len(titles) + 1} with {5 + len(MOVIELENS_GENRES)} "
                "'|'-separated fields"
            )
        titles.append(f[1])
        genres.append([x == "1" for x in f[5:]])

    users_path = next(
        (d / "u.user" for d in _search_dirs(root, src.subdir) if (d / "u.user").is_file()), None
    )
    users = None
    if users_path is not None:
        rows = [ln.split("|") for ln in users_path.read_text(encoding="latin-1").splitlines() if ln.strip()]
        if any(len(r) != 5 for r in rows) or [r[0] for r in rows] != [
            str(k) for k in range(1, len(rows) + 1)
        ]:
            raise DatasetFormatError(
                f"{users_path}: expected lines 'id|age|gender|occupation|zip' for ids 1..n"
            )
        cols = list(zip(*rows, strict=True)) if rows else [(), (), (), (), ()]
        users = MovieLensUsers(
            age=np.asarray(cols[1], dtype=np.int64),
            gender=np.asarray(cols[2], dtype=str),
            occupation=np.asarray(cols[3], dtype=str),
            zip_code=np.asarray(cols[4], dtype=str),
        )

    num_users = int(data[:, 0].max())
    num_items = max(int(data[:, 1].max()), len(titles))
    if data[:, 0].min() < 1 or data[:, 1].min() < 1:
        raise DatasetFormatError(f"{data_path}: user and item ids start at 1")
    if data[:, 2].min() < 1 or data[:, 2].max() > 5:
        raise DatasetFormatError(f"{data_path}: ratings must be 1..5")
    if num_items > len(titles):
        raise DatasetFormatError(
            f"{data_path} rates item {num_items} but {item_path} lists {len(titles)} items"
        )
    if users is not None and num_users > len(users.age):
        raise DatasetFormatError(
            f"{data_path} has user {num_users} but {users_path} lists {len(users.age)} users"
        )
    counts = (len(data), num_users, num_items, len(np.unique(data[:, 0])))
    if strict and counts != (100000, 943, 1682, 943):
        raise DatasetFormatError(
            "MovieLens 100K should have 100000 ratings by 943 users of 1682 items; "
            f"{data_path} has {counts[0]} ratings by {counts[3]} users (max id {counts[1]}) of "
            f"{counts[2]} items (strict=False accepts it)"
        )
    return Ratings(
        data=data,
        titles=tuple(titles),
        num_users=num_users,
        num_items=num_items,
        item_genres=np.asarray(genres, dtype=bool).reshape(len(titles), len(MOVIELENS_GENRES)),
        users=users,
        source=str(data_path),
        meta={"origin": src.origin, "citation": src.citation},
    )
