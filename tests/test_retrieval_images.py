"""End to end on real photos: extraction -> pooling -> retrieval, and extraction caching."""

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline

from skretrieval.datasets import make_copydays
from skretrieval.extraction import CNNFeatureExtractor
from skretrieval.metrics import map_scorer, mean_average_precision
from skretrieval.neighbors import ImageRetriever
from skretrieval.pooling import RMAC, GeMPooling, MaxPooling, SumPooling


@pytest.fixture(scope="module")
def copydays():
    return make_copydays(n_copies_per_image=6, max_size=224, random_state=0)


@pytest.fixture(scope="module")
def pretrained_maps(copydays):
    extractor = CNNFeatureExtractor(weights="imagenet", max_size=224, verbose=False)
    return extractor.fit_transform(copydays.images)


def _leave_one_out_map(vectors, labels):
    retriever = ImageRetriever().fit(vectors, labels)
    distances, indices = retriever.kneighbors(n_neighbors=len(labels) - 1)
    relevant = labels[indices] == labels[:, None]
    return mean_average_precision(relevant, -distances)


@pytest.mark.slow
@pytest.mark.parametrize("pooling", [SumPooling(), MaxPooling(), GeMPooling(), RMAC()])
def test_pretrained_mobilenet_finds_the_copies_of_real_photos(copydays, pretrained_maps, pooling):
    # Every image queries all others; its relevant items are the other versions of its photo
    # (crops, rotations, rescales, JPEG at quality 10-30, colour changes, combined attacks).
    vectors = pooling.fit_transform(pretrained_maps)
    assert _leave_one_out_map(vectors, copydays.target) >= 0.85


@pytest.mark.slow
def test_pretrained_weights_matter(copydays, pretrained_maps):
    random_maps = CNNFeatureExtractor(
        weights=None, max_size=224, verbose=False, random_state=0
    ).fit_transform(copydays.images)
    pretrained = _leave_one_out_map(GeMPooling().fit_transform(pretrained_maps), copydays.target)
    random = _leave_one_out_map(GeMPooling().fit_transform(random_maps), copydays.target)
    assert pretrained > random + 0.1


def test_pipeline_memory_extracts_once_per_training_set(tmp_path, monkeypatch, copydays):
    calls = []
    original = CNNFeatureExtractor.transform

    def counting_transform(self, X):
        calls.append(len(X))
        return original(self, X)

    monkeypatch.setattr(CNNFeatureExtractor, "transform", counting_transform)
    images, labels = copydays.images[:24], copydays.target[:24]

    def grid_search(memory):
        pipeline = Pipeline(
            [
                ("extract", CNNFeatureExtractor(weights=None, max_size=64, verbose=False,
                                                random_state=0)),
                ("pool", GeMPooling()),
                ("search", ImageRetriever()),
            ],
            memory=memory,
        )
        grid = GridSearchCV(
            pipeline, {"pool__p": [1.0, 3.0, 6.0]}, scoring=map_scorer,
            cv=KFold(2, shuffle=True, random_state=0), error_score="raise",
        )
        return grid.fit(images, labels)

    uncached = grid_search(None)
    n_uncached = len(calls)
    calls.clear()
    grid_search(str(tmp_path / "cache"))
    n_first = len(calls)
    calls.clear()
    cached = grid_search(str(tmp_path / "cache"))
    # Training folds are extracted once per fold (then reused for every p); test folds are
    # extracted at scoring time. A second identical search finds all training folds cached.
    assert n_first < n_uncached
    assert len(calls) < n_first
    np.testing.assert_allclose(
        cached.cv_results_["mean_test_score"], uncached.cv_results_["mean_test_score"]
    )


@pytest.mark.slow
@pytest.mark.parametrize("metric", ["affine_invariant", "log_euclidean", "jeffreys"])
def test_covariance_descriptors_find_the_copies_of_real_photos(copydays, pretrained_maps, metric):
    # Qian et al. 2017: each image is the covariance of its PCA-reduced local deep features.
    from skretrieval.descriptors import LocalPCA, SparseCovariance

    covariances = make_pipeline(
        LocalPCA(n_components=16, random_state=0), SparseCovariance(estimator="oas")
    ).fit_transform(pretrained_maps)
    labels = copydays.target
    retriever = ImageRetriever(metric=metric).fit(covariances, labels)
    distances, indices = retriever.kneighbors(n_neighbors=len(labels) - 1)
    assert mean_average_precision(labels[indices] == labels[:, None], -distances) >= 0.9


@pytest.mark.slow
def test_grid_search_over_local_dimension_and_riemannian_metric(copydays, pretrained_maps):
    from skretrieval.descriptors import LocalPCA, SparseCovariance

    pipeline = Pipeline(
        [
            ("local", LocalPCA(random_state=0)),
            ("covariance", SparseCovariance(estimator="oas")),
            ("search", ImageRetriever()),
        ]
    )
    grid = GridSearchCV(
        pipeline,
        {"local__n_components": [2, 12], "search__metric": ["affine_invariant", "log_euclidean"]},
        scoring=map_scorer,
        cv=StratifiedKFold(3, shuffle=True, random_state=0),
        error_score="raise",
    )
    grid.fit(pretrained_maps, copydays.target)
    scores = grid.cv_results_["mean_test_score"]
    assert np.isfinite(scores).all()
    assert grid.best_params_["local__n_components"] == 12


@pytest.mark.slow
def test_mixture_descriptors_in_grid_search_over_components_and_metric(copydays, pretrained_maps):
    # CNN -> LocalPCA -> a Gaussian mixture per image -> MW2 or mixture KL (Qian et al. 2017).
    from skretrieval.descriptors import GMMDescriptor, LocalPCA

    pipeline = Pipeline(
        [
            ("local", LocalPCA(n_components=8, random_state=0)),
            ("gmm", GMMDescriptor(covariance_type="diag", reg_covar=1e-3, random_state=0)),
            ("search", ImageRetriever()),
        ]
    )
    grid = GridSearchCV(
        pipeline,
        {"gmm__n_components": [1, 2], "search__metric": ["wasserstein", "kl"]},
        scoring=map_scorer,
        cv=StratifiedKFold(3, shuffle=True, random_state=0),
        error_score="raise",
    )
    grid.fit(pretrained_maps, copydays.target)
    assert np.isfinite(grid.cv_results_["mean_test_score"]).all()
    assert grid.best_score_ >= 0.8
    # Leave-one-out with the chosen pipeline on all photos.
    mixtures = grid.best_estimator_[:-1].transform(pretrained_maps)
    labels = copydays.target
    retriever = ImageRetriever(metric=grid.best_params_["search__metric"]).fit(mixtures, labels)
    distances, indices = retriever.kneighbors(n_neighbors=len(labels) - 1)
    assert mean_average_precision(labels[indices] == labels[:, None], -distances) >= 0.85
