"""Extracting the training vectors that SVMs, neighbour models and kernel densities keep."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KernelDensity, KNeighborsClassifier, KNeighborsRegressor, NearestNeighbors
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from ppml.attacks.base import Access, ThreatModel, ThreatModelError
from ppml.attacks.inversion import PredictionAPI
from ppml.attacks.stored import StoredVectorExtraction, row_hashes, score_extraction

WHITE_BOX = ThreatModel.of(Access.PARAMETERS, adversary="holder of the model file")


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    X = rng.normal(size=(300, 6))
    y = (X[:, 0] + 0.8 * rng.normal(size=300) > 0).astype(np.int64)  # overlapping classes: many SVs
    return X, y


def test_svc_recovers_exactly_its_support_vectors(data):
    X, y = data
    svc = SVC(kernel="rbf", C=1.0).fit(X, y)
    res = StoredVectorExtraction(WHITE_BOX).run(svc)
    share = len(svc.support_) / len(X)
    assert 0.1 < share < 0.95  # a meaningful check: neither none nor all are support vectors
    scored = score_extraction(res, X, y)
    assert scored.metrics["recovered_share"] == pytest.approx(share)
    assert scored.metrics["extracted_precision"] == 1.0
    assert scored.metrics["label_accuracy"] == 1.0
    assert res.details["source"] == "support_vectors_"
    np.testing.assert_array_equal(np.sort(res.guesses["labels"]), np.sort(y[svc.support_]))


def test_knn_stores_every_row_with_its_label(data):
    X, y = data
    names = np.array(["low", "high"])[y]  # string labels are mapped back from the stored indices
    knn = KNeighborsClassifier(5).fit(X.astype(np.float32), names)
    res = StoredVectorExtraction(WHITE_BOX).run(knn)
    scored = score_extraction(res, X.astype(np.float32), names)
    assert scored.metrics["recovered_share"] == 1.0
    assert scored.metrics["extracted_precision"] == 1.0
    assert scored.metrics["label_accuracy"] == 1.0
    reg = KNeighborsRegressor(3).fit(X, X[:, 1])
    res_r = StoredVectorExtraction(WHITE_BOX).run(reg)
    np.testing.assert_array_equal(res_r.guesses["labels"], X[:, 1])


def test_kernel_density_and_nearest_neighbors_store_their_sample(data):
    X, _ = data
    for est in (KernelDensity(bandwidth=0.5).fit(X), NearestNeighbors().fit(X)):
        res = StoredVectorExtraction(WHITE_BOX).run(est)
        assert score_extraction(res, X).metrics["recovered_share"] == 1.0
        assert res.guesses["labels"] is None


def test_pipeline_rows_are_mapped_back_through_the_scaler(data):
    X, y = data
    X = np.round(X * 100)  # integer-valued features, like ages or counts
    pipe = make_pipeline(StandardScaler(), SVC()).fit(X, y)
    res = StoredVectorExtraction(WHITE_BOX).run(pipe)
    assert res.details["pipeline_steps_inverted"] == ["StandardScaler"]
    share = len(pipe[-1].support_) / len(X)
    assert score_extraction(res, X, y, decimals=6).metrics["recovered_share"] == pytest.approx(share)


def test_parametric_model_stores_nothing(data):
    X, y = data
    res = StoredVectorExtraction(WHITE_BOX).run(LogisticRegression().fit(X, y))
    assert res.details["stores_training_vectors"] is False
    scored = score_extraction(res, X, y)
    assert scored.metrics["recovered_share"] == 0.0 and scored.metrics["n_extracted"] == 0.0


def test_black_box_is_refused(data):
    with pytest.raises(
        ThreatModelError, match="needs parameters but the threat model grants only confidences"
    ):
        StoredVectorExtraction(ThreatModel.of(Access.CONFIDENCES))
    import torch

    api = PredictionAPI(torch.nn.Linear(6, 2), (6,), exposes=("labels", "confidences"))
    with pytest.raises(ThreatModelError, match="black box exposing only confidences, labels"):
        StoredVectorExtraction(WHITE_BOX).run(api)


def test_scoring_is_exact_row_matching(data):
    X, y = data
    knn = KNeighborsClassifier().fit(X, y)
    res = StoredVectorExtraction(WHITE_BOX).run(knn)
    nudged = X.copy()
    nudged[:30, 0] += 1e-12  # 10% of the records differ in one value by a rounding error
    assert score_extraction(res, nudged).metrics["recovered_share"] == pytest.approx(0.9)
    assert score_extraction(res, nudged, decimals=6).metrics["recovered_share"] == 1.0
    assert row_hashes(np.array([[0.0, 1.0]])) == row_hashes(np.array([[-0.0, 1.0]]))
    assert row_hashes(np.array([[0.0, 1.0]])) != row_hashes(np.array([[1.0, 0.0]]))
