"""Whole chains: pooling -> whitening -> retrieval inside Pipeline and GridSearchCV."""

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline

from skretrieval.metrics import map_scorer, precision_at_1_scorer
from skretrieval.neighbors import ImageRetriever
from skretrieval.pooling import GeMPooling, MaxPooling, SumPooling
from skretrieval.whitening import PCAWhitening


def _peaky_feature_maps(n_per_class=8, n_classes=4, n_channels=12, seed=0):
    """Maps whose class shows only as one strong spatial peak in two class-specific channels.

    Every channel also carries a background whose strength varies from image to image; summed
    over the map it swamps the peak, while the maximum keeps it. So MAC must beat SPoC here.
    """
    rng = np.random.default_rng(seed)
    maps, labels = [], []
    for label in range(n_classes):
        for _ in range(n_per_class):
            h, w = rng.integers(5, 9, size=2)
            background = rng.uniform(0, 1, size=(n_channels, h, w))
            background *= rng.uniform(0, 1, size=(n_channels, 1, 1))
            y, x = rng.integers(0, h), rng.integers(0, w)
            background[[2 * label, 2 * label + 1], y, x] += 4.0
            maps.append(background.astype(np.float32))
            labels.append(label)
    return maps, np.array(labels)


def test_grid_search_picks_the_pooling_with_the_best_map():
    maps, labels = _peaky_feature_maps()
    pipeline = Pipeline([("pool", SumPooling()), ("search", ImageRetriever())])
    grid = GridSearchCV(
        pipeline,
        {"pool": [SumPooling(center_prior=False), MaxPooling(), GeMPooling(p=1.0)]},
        scoring=map_scorer,
        cv=StratifiedKFold(3, shuffle=True, random_state=0),
    )
    grid.fit(maps, labels)
    scores = dict(
        zip(
            [type(p).__name__ for p in grid.cv_results_["param_pool"]],
            grid.cv_results_["mean_test_score"],
            strict=True,
        )
    )
    assert isinstance(grid.best_estimator_.named_steps["pool"], MaxPooling)
    assert scores["MaxPooling"] > 0.95
    assert scores["MaxPooling"] > scores["SumPooling"] + 0.3
    # The refitted pipeline scores new queries against the whole fitted database.
    assert grid.score(maps[:4], labels[:4]) > 0.95


def test_grid_search_over_whitening_and_gem_power_runs_end_to_end():
    maps, labels = _peaky_feature_maps(n_per_class=10)
    pipeline = Pipeline(
        [("pool", GeMPooling()), ("whiten", PCAWhitening()), ("search", ImageRetriever())]
    )
    grid = GridSearchCV(
        pipeline,
        {"pool__p": [1.0, 8.0], "whiten__n_components": [4, 8]},
        scoring={"map": map_scorer, "p@1": precision_at_1_scorer},
        refit="map",
        cv=StratifiedKFold(2, shuffle=True, random_state=0),
    )
    grid.fit(maps, labels)
    assert grid.best_params_["pool__p"] == 8.0
    assert np.isfinite(grid.cv_results_["mean_test_p@1"]).all()


def test_cross_val_score_and_pipeline_score_agree_with_the_scorer():
    maps, labels = _peaky_feature_maps()
    pipeline = Pipeline([("pool", MaxPooling()), ("search", ImageRetriever())])
    cv = StratifiedKFold(4, shuffle=True, random_state=0)
    by_scorer = cross_val_score(pipeline, maps, labels, scoring=map_scorer, cv=cv)
    by_score_method = cross_val_score(pipeline, maps, labels, cv=cv)
    np.testing.assert_allclose(by_scorer, by_score_method)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_leave_one_out_search_on_pooled_maps(metric):
    maps, labels = _peaky_feature_maps()
    vectors = MaxPooling().fit_transform(maps)
    _, indices = ImageRetriever(n_neighbors=3, metric=metric).fit(vectors).kneighbors()
    assert (indices != np.arange(len(maps))[:, None]).all()
    assert np.mean(labels[indices] == labels[:, None]) > 0.9
