"""Tests of R-MAC with regional whitening: RMAC(region_whitening=...)."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from skretrieval.neighbors import ImageRetriever
from skretrieval.persistence import load, save
from skretrieval.pooling import RMAC, rmac, rmac_region_vectors, rmac_regions
from skretrieval.whitening import PCAWhitening


@parametrize_with_checks([RMAC(region_whitening=PCAWhitening(n_components=1))])
def test_sklearn_compatible(estimator, check):
    check(estimator)


def _maps(n, seed, shapes=((6, 8), (7, 7), (5, 9)), channels=12):
    rng = np.random.default_rng(seed)
    return [
        np.maximum(rng.normal(size=(channels, *shapes[i % len(shapes)])), 0.0) for i in range(n)
    ]


def _l2(X):
    return X / np.linalg.norm(X, axis=-1, keepdims=True)


def _regions_by_hand(fmap, levels=3, overlap=0.4):
    """MAC of each region of the pure grid, by slicing: one row per region."""
    return np.array(
        [
            fmap[:, y0 : y0 + h, x0 : x0 + w].max(axis=(1, 2))
            for y0, x0, h, w in rmac_regions(*fmap.shape[1:], levels=levels, overlap=overlap)
        ]
    )


def test_region_vectors_match_the_grid():
    for fmap in _maps(3, seed=0):
        assert_array_equal(rmac_region_vectors(fmap), _regions_by_hand(fmap))
    batch = np.stack(_maps(4, seed=1, shapes=((5, 6),)))
    assert rmac_region_vectors(batch, levels=2).shape == (4, len(rmac_regions(5, 6, 2)), 12)
    # rmac is their normalised sum.
    assert_allclose(rmac(batch), _l2(rmac_region_vectors(batch)).sum(axis=1), rtol=1e-12)


def test_regional_whitening_against_a_hand_computation():
    train, test = _maps(9, seed=2), _maps(5, seed=3)
    rmac_whitened = RMAC(region_whitening=PCAWhitening(n_components=6)).fit(train)

    regions = np.concatenate([_l2(_regions_by_hand(fmap)) for fmap in train])
    whitening = PCAWhitening(n_components=6).fit(regions)
    assert rmac_whitened.n_regions_fit_ == len(regions)
    # Fitted on the same region vectors (in another order): the same whitening.
    fitted = rmac_whitened.region_whitening_
    assert_allclose(fitted.mean_, whitening.mean_, atol=1e-12)
    assert_allclose(fitted.components_, whitening.components_, atol=1e-9)

    expected = np.array(
        [whitening.transform(_l2(_regions_by_hand(fmap))).sum(axis=0) for fmap in test]
    )
    got = rmac_whitened.transform(test)
    assert got.shape == (5, 6)
    assert_allclose(got, _l2(expected), atol=1e-9)
    unnormalised = rmac_whitened.set_params(normalize=False).transform(test)
    assert_allclose(unnormalised, expected, atol=1e-9)
    # The whitening is learned in fit only: describing other maps does not change it.
    assert_array_equal(rmac_whitened.region_whitening_.mean_, fitted.mean_)


def test_without_region_whitening_nothing_changes():
    maps = _maps(6, seed=4)
    plain = RMAC().fit(maps)
    assert not hasattr(plain, "region_whitening_")
    assert_allclose(plain.transform(maps), _l2(np.array([rmac(fmap) for fmap in maps])), rtol=1e-12)
    # Refitting without the whitening forgets the one learned before.
    model = RMAC(region_whitening=PCAWhitening(n_components=3)).fit(maps)
    model.set_params(region_whitening=None).fit(maps)
    assert not hasattr(model, "region_whitening_") and not hasattr(model, "n_regions_fit_")
    assert_array_equal(model.transform(maps), plain.transform(maps))


def test_dtype_shape_and_feature_names():
    maps32 = [fmap.astype(np.float32) for fmap in _maps(6, seed=5)]
    model = RMAC(region_whitening=PCAWhitening(n_components=4)).fit(maps32)
    out = model.transform(maps32)
    assert out.dtype == np.float32 and out.shape == (6, 4)
    assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    assert list(model.get_feature_names_out()) == [f"rmac{i}" for i in range(4)]
    # An (n, C, h, w) batch gives what the list of its maps gives.
    batch = np.stack(_maps(4, seed=6, shapes=((6, 6),)))
    model = RMAC(region_whitening=PCAWhitening(n_components=4)).fit(list(batch))
    assert_allclose(model.transform(batch), model.transform(list(batch)), atol=1e-12)


def test_in_a_pipeline_tuned_and_saved(tmp_path):
    rng = np.random.default_rng(7)
    maps = _maps(24, seed=8)
    labels = np.repeat(np.arange(6), 4)
    # Copies of a few maps with noise: each label is one "object" seen four times.
    maps = [maps[label] + 0.05 * rng.uniform(size=maps[label].shape) for label in labels]
    pipeline = make_pipeline(
        RMAC(region_whitening=PCAWhitening(n_components=4)), ImageRetriever(n_neighbors=3)
    )
    search = GridSearchCV(
        pipeline,
        {"rmac__region_whitening__n_components": [2, 4]},
        cv=StratifiedKFold(n_splits=2, shuffle=True, random_state=0),
        error_score="raise",
    )
    search.fit(maps, labels)
    assert search.best_params_["rmac__region_whitening__n_components"] in (2, 4)

    model = RMAC(region_whitening=PCAWhitening(n_components=5, shrinkage=0.1)).fit(maps[:12])
    restored = load(save(model, tmp_path / "rmac.skr"))
    assert_array_equal(restored.transform(maps[12:]), model.transform(maps[12:]))


def test_bad_region_whitening():
    with pytest.raises(ValueError, match="region_whitening"):
        RMAC(region_whitening="pca").fit(_maps(3, seed=9))
