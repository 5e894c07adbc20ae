"""Tests of multi-scale descriptors: CNNFeatureExtractor(pooling=..., scales=...)."""

import gc
import weakref

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import BaseEstimator, TransformerMixin

from skretrieval.extraction import CNNFeatureExtractor
from skretrieval.extraction._scales import ScaleCombination
from skretrieval.pooling import RMAC, GeMPooling, MaxPooling

MAX_SIZE = 96
SCALES = (1, 2**-0.5, 0.5)
SIZES = [96, 68, 48]  # round(96 * scale): the shorter sides stay >= 32, ResNet-18's stride
# Random ResNet-18 weights give informative activations (random MobileNetV2 ones are all 0).
BACKBONE = "resnet18"


def _images(n=5, seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(48, 64), (64, 48), (60, 60), (50, 64), (64, 56)]
    return [rng.integers(0, 256, size=(*shapes[i % 5], 3), dtype=np.uint8) for i in range(n)]


def _extractor(**params):
    defaults = {
        "backbone": BACKBONE,
        "weights": None,
        "random_state": 0,
        "max_size": MAX_SIZE,
        "device": "cpu",
        "verbose": False,
        "n_workers": 0,
    }
    return CNNFeatureExtractor(**{**defaults, **params})


def _l2(X):
    return X / np.linalg.norm(X, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def images():
    return _images()


@pytest.fixture(scope="module")
def fitted():
    """One fitted network; transform reads pooling, scales and max_size when it runs."""
    extractor = _extractor().fit()

    def with_params(**params):
        return extractor.set_params(
            **{"pooling": None, "scales": None, "max_size": MAX_SIZE, "batch_size": 8, **params}
        )

    return with_params


@pytest.mark.parametrize("pooling", [GeMPooling(), RMAC(), MaxPooling()])
def test_one_scale_is_the_single_scale_extractor_bit_for_bit(images, fitted, pooling):
    single = fitted(pooling=pooling).transform(images)
    assert_array_equal(fitted(pooling=pooling, scales=(1,)).transform(images), single)
    assert_array_equal(fitted(pooling=pooling, scales=[1.0]).transform(images), single)


def _per_scale(images, fitted, pooling):
    """The single-scale extractor run by hand at each size."""
    assert [round(MAX_SIZE * s) for s in SCALES] == SIZES
    return [
        fitted(pooling=pooling, max_size=size).transform(images).astype(np.float64)
        for size in SIZES
    ]


@pytest.mark.parametrize("p", [3.0, 1.5])
def test_gem_is_combined_by_the_generalised_mean_over_scales(images, fitted, p):
    per_scale = _per_scale(images, fitted, GeMPooling(p=p))
    expected = _l2(np.mean([v**p for v in per_scale], axis=0) ** (1 / p))
    got = fitted(pooling=GeMPooling(p=p), scales=SCALES).transform(images)
    assert got.shape == (len(images), 512) and got.dtype == np.float32
    assert_allclose(got, expected, rtol=2e-5, atol=1e-7)
    # Not the sum: the rule depends on the pooling.
    assert not np.allclose(got, _l2(np.sum(per_scale, axis=0)), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("pooling", [RMAC(), MaxPooling()])
def test_other_poolings_are_summed_over_scales(images, fitted, pooling):
    expected = _l2(np.sum(_per_scale(images, fitted, pooling), axis=0))
    got = fitted(pooling=pooling, scales=SCALES).transform(images)
    assert_allclose(got, expected, rtol=2e-5, atol=1e-7)


def test_unnormalised_pooling_gives_an_unnormalised_combination(images, fitted):
    pooling = MaxPooling(normalize=False)
    expected = np.sum(_per_scale(images[:2], fitted, pooling), axis=0)
    got = fitted(pooling=pooling, scales=SCALES).transform(images[:2])
    assert_allclose(got, expected, rtol=2e-5)


# Set by _SpyPooling.transform: one weak reference per map, and the call sizes.
SEEN_MAPS = []
CALL_SIZES = []


class _SpyPooling(TransformerMixin, BaseEstimator):
    """Mean pooling that records which maps it was given, without keeping them alive."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        # No map of an earlier batch (of this scale or another) may still be alive.
        gc.collect()
        assert all(ref() is None for ref in SEEN_MAPS), "maps of an earlier batch were kept"
        SEEN_MAPS.extend(weakref.ref(fmap) for fmap in X)
        CALL_SIZES.append(len(X))
        return np.stack([fmap.mean(axis=(1, 2)) for fmap in X])


def test_maps_are_pooled_batch_by_batch_and_never_kept(images, fitted):
    SEEN_MAPS.clear()
    CALL_SIZES.clear()
    descriptors = fitted(pooling=_SpyPooling(), scales=SCALES, batch_size=2).transform(images)
    assert descriptors.shape == (len(images), 512)
    # Every map of every scale went through the pooling, at most a batch at a time...
    assert sum(CALL_SIZES) == len(SCALES) * len(images) and max(CALL_SIZES) <= 2
    # ...and none is alive once the descriptors are returned.
    gc.collect()
    assert all(ref() is None for ref in SEEN_MAPS)
    # Mean pooling has no p: summed over scales, then normalised.
    assert_allclose(np.linalg.norm(descriptors, axis=1), 1.0, rtol=1e-5)


def test_images_given_as_an_iterator_are_read_once(images, fitted):
    expected = fitted(pooling=GeMPooling(), scales=SCALES).transform(images)
    got = fitted(pooling=GeMPooling(), scales=SCALES).transform(iter(images))
    assert_array_equal(got, expected)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"scales": SCALES}, "scales needs a pooling"),
        ({"scales": SCALES, "pooling": GeMPooling(), "max_size": None}, "max_size, which is None"),
        ({"scales": (), "pooling": GeMPooling()}, "non-empty sequence of positive numbers"),
        ({"scales": (1, 0), "pooling": GeMPooling()}, "non-empty sequence of positive numbers"),
        ({"scales": (1, "half"), "pooling": GeMPooling()}, "positive numbers"),
    ],
)
def test_bad_settings_are_named_at_fit(params, match):
    with pytest.raises(ValueError, match=match):
        _extractor(**params).fit()


def test_scales_are_descriptor_settings():
    single = _extractor(pooling=GeMPooling()).descriptor_settings()
    multi = _extractor(pooling=GeMPooling(), scales=SCALES).descriptor_settings()
    assert single["scales"] == "None" and multi["scales"] != single["scales"]


def test_generalised_mean_neither_underflows_nor_overflows():
    rng = np.random.default_rng(1)
    scales = [rng.uniform(1e-9, 1e-3, size=(4, 6)).astype(np.float32) for _ in range(3)]
    scales[1][0, 0] = 0.0  # a zero entry in one scale only
    p = 60.0  # v ** 60 underflows in float32 (and float64) for these values
    combination = ScaleCombination(p)
    for v in scales:
        combination.add(v)
    # By hand, in logarithms: log of the mean of v**p, divided by p.
    with np.errstate(divide="ignore"):
        logs = np.log(np.stack(scales).astype(np.float64))
        expected = np.exp((np.logaddexp.reduce(p * logs, axis=0) - np.log(3)) / p)
    got = combination.result(normalize=False)
    assert got.dtype == np.float32
    assert_allclose(got, expected, rtol=1e-5)
    assert_allclose(combination.result(), _l2(expected), rtol=1e-5)
    # p = inf is the maximum over scales.
    maximum = ScaleCombination(np.inf)
    for v in scales:
        maximum.add(v)
    assert_array_equal(maximum.result(normalize=False), np.max(scales, axis=0))
    with pytest.raises(ValueError, match="non-negative descriptors"):
        ScaleCombination(3.0).add(-np.ones((1, 2)))
