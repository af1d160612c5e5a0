import numpy as np
import pytest
from sklearn import datasets as skd

from ppml._validation import ParameterError
from ppml.data.bundled import (
    BUNDLED_DATASETS,
    load_breast_cancer,
    load_bundled,
    load_digits,
    load_iris,
    load_wine,
)

EXPECTED = {
    "digits": ((1797, 64), 10),
    "breast_cancer": ((569, 30), 2),
    "wine": ((178, 13), 3),
    "iris": ((150, 4), 3),
}


@pytest.mark.parametrize("name", BUNDLED_DATASETS)
def test_bundled_shapes_types_and_metadata(name):
    ds = load_bundled(name)
    shape, k = EXPECTED[name]
    assert ds.name == name
    assert ds.X.shape == shape and ds.X.dtype == np.float32 and ds.X.flags.c_contiguous
    assert ds.y.shape == (shape[0],) and ds.y.dtype == np.int64
    assert ds.num_classes == k and len(ds.class_names) == k
    assert set(np.unique(ds.y)) == set(range(k))
    assert len(ds.feature_names) == shape[1]
    assert ds.owners is None
    assert "scikit-learn" in ds.source and ds.meta["origin"]
    assert isinstance(ds.meta["standardize"], bool) and ds.meta["scaling"]


def test_digits_divided_by_16_and_as_images():
    ds = load_digits()
    raw = skd.load_digits()
    np.testing.assert_array_equal(ds.X, (raw.data / 16).astype(np.float32))
    assert ds.X.min() == 0.0 and ds.X.max() == 1.0
    assert ds.meta["standardize"] is False
    img = load_digits(as_images=True)
    assert img.X.shape == (1797, 1, 8, 8) and img.input_shape == (1, 8, 8)
    np.testing.assert_array_equal(img.X.reshape(1797, 64), ds.X)
    with pytest.raises(ParameterError, match="The 'as_images' parameter of load_digits"):
        load_digits(as_images="yes")


@pytest.mark.parametrize(
    ("loader", "sk"),
    [(load_breast_cancer, skd.load_breast_cancer), (load_wine, skd.load_wine), (load_iris, skd.load_iris)],
)
def test_tabular_sets_stay_raw_and_ask_for_standardisation(loader, sk):
    ds, raw = loader(), sk()
    np.testing.assert_array_equal(ds.X, raw.data.astype(np.float32))
    np.testing.assert_array_equal(ds.y, raw.target)
    assert ds.meta["standardize"] is True and ds.meta["scaling"] == "raw"


def test_unknown_bundled_name_lists_the_known_ones():
    with pytest.raises(
        ParameterError, match=r"The 'name' parameter of load_bundled must be one of \{'digits'"
    ):
        load_bundled("mnist")
