"""Tests of skretrieval.pooling: SPoC, MAC, GeM and R-MAC, pure functions and transformers."""

import math
import pickle

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

from skretrieval.pooling import (
    RMAC,
    GeMPooling,
    MaxPooling,
    SumPooling,
    center_prior_weights,
    gem,
    mac,
    rmac,
    rmac_regions,
    spoc,
)

ESTIMATORS = [SumPooling(), MaxPooling(), GeMPooling(), RMAC()]


@parametrize_with_checks(
    [*ESTIMATORS, SumPooling(center_prior=False, normalize=False), RMAC(levels=1, overlap=0.0)]
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


def _l2(X):
    return X / np.linalg.norm(X, axis=-1, keepdims=True)


@pytest.fixture
def ragged_maps():
    """Non-negative float64 maps of 3 channels and mixed spatial sizes (post-ReLU-like)."""
    rng = np.random.default_rng(0)
    shapes = [(5, 7), (4, 4), (5, 7), (1, 1), (2, 3), (9, 6)]
    return [np.maximum(rng.normal(size=(3, h, w)), 0) + 0.01 for h, w in shapes]


# --------------------------------------------------------------------------------------------
# SPoC
# --------------------------------------------------------------------------------------------


def test_center_prior_weights_hand_values():
    # 3x3: centre (1, 1), sigma = min(3, 3) / 2 / 3 = 1/2, so weight = exp(-2 * d^2).
    d2 = np.array([[2, 1, 2], [1, 0, 1], [2, 1, 2]])
    assert_allclose(center_prior_weights(3, 3), np.exp(-2 * d2))
    # 3 rows x 4 columns: centre (1, 1.5), sigma = 1/2.
    dy2 = np.array([1, 0, 1])[:, None]
    dx2 = np.array([2.25, 0.25, 0.25, 2.25])[None, :]
    assert_allclose(center_prior_weights(3, 4), np.exp(-2 * (dy2 + dx2)))
    # 4 x 6: sigma = 4 / 6, 2 sigma^2 = 8/9; corner offset (-1.5, -2.5).
    weights = center_prior_weights(4, 6)
    assert weights.shape == (4, 6)
    assert math.isclose(weights[0, 0], math.exp(-(1.5**2 + 2.5**2) * 9 / 8))
    assert math.isclose(weights[3, 5], weights[0, 0])
    assert_array_equal(center_prior_weights(1, 1), [[1.0]])


def test_center_prior_weights_rejects_bad_size():
    with pytest.raises(ValueError, match="height"):
        center_prior_weights(0, 3)


def test_spoc_hand_values():
    fmap = np.stack([np.arange(9.0).reshape(3, 3), np.ones((3, 3))])
    a, b = math.exp(-2), math.exp(-4)  # edge-adjacent and corner weights of a 3x3 map
    # Channel 0: centre 4; edge neighbours 1 + 3 + 5 + 7; corners 0 + 2 + 6 + 8.
    expected = [4 + 16 * a + 16 * b, 1 + 4 * a + 4 * b]
    assert_allclose(spoc(fmap), expected)
    assert_allclose(spoc(fmap, center_prior=False), [36.0, 9.0])
    pooled = SumPooling().fit_transform([fmap])
    assert_allclose(pooled, _l2(np.array([expected])))
    assert_allclose(SumPooling(normalize=False).fit_transform([fmap]), [expected])


def test_spoc_rectangular_map():
    rng = np.random.default_rng(1)
    fmap = rng.uniform(size=(2, 3, 4))
    weights = center_prior_weights(3, 4)
    assert_allclose(spoc(fmap), (fmap * weights).sum(axis=(1, 2)))


# --------------------------------------------------------------------------------------------
# MAC and GeM
# --------------------------------------------------------------------------------------------


def test_mac_hand_values():
    fmap = np.array([[[1.0, -2.0, 0.5], [3.0, 0.0, 2.0]], [[-1.0, -2.0, -0.5], [-3.0, -4, -2]]])
    assert_allclose(mac(fmap), [3.0, -0.5])
    assert_allclose(MaxPooling(normalize=False).fit_transform([fmap]), [[3.0, -0.5]])
    assert_allclose(MaxPooling().fit_transform([fmap]), _l2(np.array([[3.0, -0.5]])))


def test_gem_hand_values():
    fmap = np.array([[[1.0, 2.0], [2.0, 3.0]], [[-1.0, 0.0], [0.0, 2.0]]])
    # Channel 0: (1 + 8 + 8 + 27) / 4 = 11. Channel 1: negatives and zeros clamp to 1e-6.
    expected = [11 ** (1 / 3), ((3e-18 + 8) / 4) ** (1 / 3)]
    assert_allclose(gem(fmap), expected, rtol=1e-12)
    assert_allclose(GeMPooling(normalize=False).fit_transform([fmap]), [expected], rtol=1e-12)
    assert_allclose(gem(fmap, p=2, eps=0.5), [math.sqrt(18 / 4), math.sqrt((3 * 0.25 + 4) / 4)])


def test_gem_p1_is_mean_of_clamped_map(ragged_maps):
    for fmap in ragged_maps:
        assert_allclose(gem(fmap, p=1), fmap.mean(axis=(1, 2)))
    fmap = np.array([[[-5.0, 1.0], [3.0, 0.0]]])
    assert_allclose(gem(fmap, p=1, eps=1e-3), [(1e-3 + 1 + 3 + 1e-3) / 4])


@pytest.mark.parametrize("p", [2.5, 3.0, 7.0, 12.0, 0.5])
def test_gem_matches_direct_formula(ragged_maps, p):
    for fmap in ragged_maps:
        direct = np.mean(np.maximum(fmap, 1e-6) ** p, axis=(1, 2)) ** (1 / p)
        assert_allclose(gem(fmap, p=p), direct, rtol=1e-10)


def test_gem_large_p_tends_to_mac(ragged_maps):
    for fmap in ragged_maps:
        peak = mac(fmap)
        # The mean of N terms in [max^p / N, max^p] bounds the error by a factor N^(1/p).
        n_positions = fmap.shape[1] * fmap.shape[2]
        for p in (50.0, 500.0):
            pooled = gem(fmap, p=p)
            assert np.all(pooled <= peak * (1 + 1e-12))
            assert np.all(pooled >= peak * n_positions ** (-1 / p) * (1 - 1e-12))
        assert_allclose(gem(fmap, p=np.inf), peak)
        assert_allclose(GeMPooling(p=np.inf).fit_transform([fmap]), _l2(peak[None]))


def test_gem_is_stable_for_large_values_and_p():
    # A naive mean(x**p) overflows float64 (1e3**200 = 1e600) and float32 much earlier.
    fmap = np.array([[[1000.0, 999.0], [10.0, 1.0]]])
    for dtype in (np.float64, np.float32):
        pooled = gem(fmap.astype(dtype), p=200.0)
        assert pooled.dtype == dtype
        assert np.isfinite(pooled).all()
        # Factored by hand: 1000 * mean(1, 0.999**200, 0.01**200, 0.001**200) ** (1/200).
        expected = 1000 * ((1 + 0.999**200) / 4) ** (1 / 200)
        assert_allclose(pooled, [expected], rtol=1e-5 if dtype == np.float32 else 1e-12)


def test_gem_rejects_nonpositive_p():
    with pytest.raises(ValueError, match="p must be > 0"):
        gem(np.ones((1, 2, 2)), p=0)
    with pytest.raises(InvalidParameterError, match="'p' parameter"):
        GeMPooling(p=-1.0).fit([np.ones((1, 2, 2))])
    with pytest.raises(InvalidParameterError, match="'eps' parameter"):
        GeMPooling(eps=0.0).fit([np.ones((1, 2, 2))])


# --------------------------------------------------------------------------------------------
# R-MAC regions
# --------------------------------------------------------------------------------------------


def _square_level(side, offsets):
    return [(y, x, side, side) for y in offsets for x in offsets]


def test_rmac_regions_square_maps():
    expected_7 = [(0, 0, 7, 7)] + _square_level(4, [0, 3]) + _square_level(3, [0, 2, 4])
    assert_array_equal(rmac_regions(7, 7), expected_7)
    expected_10 = [(0, 0, 10, 10)] + _square_level(6, [0, 4]) + _square_level(5, [0, 2, 5])
    assert_array_equal(rmac_regions(10, 10), expected_10)
    assert_array_equal(rmac_regions(10, 10, levels=1), [(0, 0, 10, 10)])


def test_rmac_regions_landscape_and_portrait():
    # H=10, W=15: side s = 10. One extra column position gives level-1 overlap 1 - 5/10 = 0.5,
    # the closest to 0.4 among 0.5, 0.75, 0.83, ... So level l has l x (l + 1) regions.
    expected = (
        [(0, x, 10, 10) for x in (0, 5)]
        + [(y, x, 6, 6) for y in (0, 4) for x in (0, 4, 9)]  # offsets k * 9 // 2, k * 4 // 1
        + [(y, x, 5, 5) for y in (0, 2, 5) for x in (0, 3, 6, 10)]  # k * 5 // 2, k * 10 // 3
    )
    landscape = rmac_regions(10, 15)
    assert_array_equal(landscape, expected)
    # The transposed map gets the transposed grid (extra positions on the rows).
    portrait = rmac_regions(15, 10)
    assert sorted(map(tuple, portrait)) == sorted((x, y, h, w) for y, x, h, w in expected)
    assert len(portrait) == 2 + 6 + 12


def test_rmac_regions_several_extra_steps():
    # H=10, W=30: strides 20/e give overlaps -1, 0, 0.33, 0.5, 0.6, 0.67: e = 3 is closest.
    regions = rmac_regions(10, 30, levels=1)
    assert_array_equal(regions, [(0, x, 10, 10) for x in (0, 6, 13, 20)])
    # With overlap 0.6 the choice becomes e = 5 (stride 4): 6 positions.
    regions = rmac_regions(10, 30, levels=1, overlap=0.6)
    assert_array_equal(regions[:, 1], [0, 4, 8, 12, 16, 20])


def test_rmac_regions_tiny_maps():
    assert_array_equal(rmac_regions(1, 1), [(0, 0, 1, 1)])  # levels 2 and 3 have side 0
    # H=2, W=3: one extra column (overlap 0.5). Level 1: two 2x2 squares; level 2: every pixel;
    # level 3: 1x1 squares at rows (0, 0, 1) x columns (0, 0, 1, 2), repeats kept as in the
    # reference code.
    expected = (
        [(0, 0, 2, 2), (0, 1, 2, 2)]
        + [(y, x, 1, 1) for y in (0, 1) for x in (0, 1, 2)]
        + [(y, x, 1, 1) for y in (0, 0, 1) for x in (0, 0, 1, 2)]
    )
    assert_array_equal(rmac_regions(2, 3), expected)
    # A 1-pixel-high strip: only level 1 exists, squares of side 1.
    regions = rmac_regions(1, 5)
    assert np.all(regions[:, 2:] == 1)
    assert regions[0, 1] == 0 and regions[-1, 1] == 4


def _reference_rmac_regions(H, W, L, ovr):
    """Float transcription of the published reference grid (Tolias et al., MATLAB/Python)."""
    steps = np.array([2, 3, 4, 5, 6, 7])
    w = min(W, H)
    b = (max(H, W) - w) / (steps - 1)
    idx = np.argmin(np.abs(((w**2 - w * b) / w**2) - ovr))
    Wd = Hd = 0
    if H < W:
        Wd = idx + 1
    elif H > W:
        Hd = idx + 1
    regions = []
    for l in range(1, L + 1):  # noqa: E741
        wl = math.floor(2 * w / (l + 1))
        wl2 = math.floor(wl / 2 - 1)
        b = 0 if l + Wd == 1 else (W - wl) / (l + Wd - 1)
        cenW = [math.floor(wl2 + k * b) - wl2 for k in range(l + Wd)]
        b = 0 if l + Hd == 1 else (H - wl) / (l + Hd - 1)
        cenH = [math.floor(wl2 + k * b) - wl2 for k in range(l + Hd)]
        for i in cenH:
            for j in cenW:
                if wl > 0:
                    regions.append((i, j, wl, wl))
    return regions


@pytest.mark.parametrize("overlap", [0.4, 0.0, 0.7])
def test_rmac_regions_match_reference_formula(overlap):
    for height in range(1, 26):
        for width in range(1, 26):
            for levels in (1, 3, 5):
                ours = rmac_regions(height, width, levels=levels, overlap=overlap)
                reference = _reference_rmac_regions(height, width, levels, overlap)
                assert_array_equal(ours, reference, err_msg=f"{height}x{width}, L={levels}")
                # Inside the map, square, non-empty.
                assert ours.dtype.kind == "i"
                assert np.all(ours[:, :2] >= 0) and np.all(ours[:, 2:] >= 1)
                assert np.all(ours[:, 0] + ours[:, 2] <= height)
                assert np.all(ours[:, 1] + ours[:, 3] <= width)
                assert_array_equal(ours[:, 2], ours[:, 3])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"height": 0, "width": 3}, "height"),
        ({"height": 3, "width": 2.5}, "width"),
        ({"height": 3, "width": 3, "levels": 0}, "levels"),
        ({"height": 3, "width": 3, "overlap": 1.5}, "overlap"),
    ],
)
def test_rmac_regions_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        rmac_regions(**kwargs)


# --------------------------------------------------------------------------------------------
# R-MAC pooling
# --------------------------------------------------------------------------------------------


def test_rmac_hand_values():
    # 3x3 map, 2 levels: the whole map, then four 2x2 squares at (0,0), (0,1), (1,0), (1,1).
    fmap = np.zeros((2, 3, 3))
    fmap[0, 0, 0] = 1.0  # only in the whole map and the top-left square
    fmap[1, 2, 2] = 2.0  # only in the whole map and the bottom-right square
    # Whole map: (1, 2) / sqrt(5). Top-left: (1, 0). Bottom-right: (0, 1). Two all-zero
    # squares contribute nothing (not NaN).
    expected = np.array([1 / math.sqrt(5) + 1, 2 / math.sqrt(5) + 1])
    assert_allclose(rmac(fmap, levels=2), expected)
    assert_allclose(RMAC(levels=2, normalize=False).fit_transform([fmap]), [expected])
    assert_allclose(RMAC(levels=2).fit_transform([fmap]), [expected / np.linalg.norm(expected)])


def _naive_rmac(fmap, levels, overlap):
    total = np.zeros(fmap.shape[0])
    for y0, x0, h, w in rmac_regions(fmap.shape[1], fmap.shape[2], levels, overlap):
        region = fmap[:, y0 : y0 + h, x0 : x0 + w].max(axis=(1, 2))
        norm = np.linalg.norm(region)
        if norm > 0:
            total += region / norm
    return total


@pytest.mark.parametrize("levels, overlap", [(3, 0.4), (1, 0.4), (4, 0.2)])
def test_rmac_matches_naive_region_loop(ragged_maps, levels, overlap):
    for fmap in ragged_maps:
        assert_allclose(
            rmac(fmap, levels=levels, overlap=overlap), _naive_rmac(fmap, levels, overlap)
        )


def test_rmac_single_level_square_map_is_mac():
    rng = np.random.default_rng(2)
    fmaps = rng.uniform(size=(4, 5, 6, 6))
    assert_allclose(rmac(fmaps, levels=1), _l2(mac(fmaps)))


# --------------------------------------------------------------------------------------------
# Transformers: input forms, dtypes, normalisation, errors
# --------------------------------------------------------------------------------------------

POOLING_FUNCTIONS = [
    (SumPooling, spoc),
    (MaxPooling, mac),
    (GeMPooling, gem),
    (RMAC, rmac),
]


@pytest.mark.parametrize("estimator_class, function", POOLING_FUNCTIONS)
def test_list_of_mixed_sizes_equals_per_map_results(ragged_maps, estimator_class, function):
    pooled = estimator_class(normalize=False).fit(ragged_maps).transform(ragged_maps)
    expected = np.array([function(fmap) for fmap in ragged_maps])
    assert pooled.shape == (len(ragged_maps), 3)
    assert pooled.dtype == np.float64
    assert_allclose(pooled, expected)
    normalised = estimator_class().fit_transform(ragged_maps)
    assert_allclose(normalised, _l2(expected))
    assert_allclose(np.linalg.norm(normalised, axis=1), 1.0)


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_4d_array_equals_list_and_preserves_float32(estimator):
    rng = np.random.default_rng(3)
    batch = rng.uniform(size=(5, 4, 6, 8)).astype(np.float32)
    from_array = clone(estimator).fit_transform(batch)
    from_list = clone(estimator).fit_transform(list(batch))
    assert from_array.dtype == np.float32 and from_list.dtype == np.float32
    assert_array_equal(from_array, from_list)
    from_float64 = clone(estimator).fit_transform(batch.astype(np.float64))
    assert from_float64.dtype == np.float64
    assert_allclose(from_array, from_float64, rtol=1e-5)


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_object_array_and_tuple_of_maps_equal_list(estimator, ragged_maps):
    as_objects = np.empty(len(ragged_maps), dtype=object)
    as_objects[:] = ragged_maps
    expected = clone(estimator).fit_transform(ragged_maps)
    assert_array_equal(clone(estimator).fit_transform(as_objects), expected)
    assert_array_equal(clone(estimator).fit_transform(tuple(ragged_maps)), expected)


def test_many_small_maps_are_batched_consistently():
    # More maps of one size than fit in one internal batch, interleaved with another size.
    rng = np.random.default_rng(5)
    maps = [rng.uniform(size=(64, 5, 5 + i % 2)) for i in range(200)]
    for estimator_class, function in POOLING_FUNCTIONS:
        pooled = estimator_class(normalize=False).fit_transform(maps)
        assert_allclose(pooled, [function(fmap) for fmap in maps])


def test_mixed_dtypes_give_float64_and_integers_are_accepted():
    maps = [np.ones((2, 3, 3), dtype=np.float32), np.ones((2, 2, 2), dtype=np.float64)]
    assert MaxPooling().fit_transform(maps).dtype == np.float64
    integer_maps = [np.arange(8).reshape(2, 2, 2)]
    assert_allclose(MaxPooling(normalize=False).fit_transform(integer_maps), [[3.0, 7.0]])


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_2d_input_is_read_as_1x1_maps(estimator):
    rng = np.random.default_rng(4)
    X = rng.uniform(0.1, 1.0, size=(6, 5))
    assert_allclose(clone(estimator).fit_transform(X), _l2(X))
    assert_allclose(
        clone(estimator).fit_transform(X), clone(estimator).fit_transform(X[:, :, None, None])
    )


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_all_zero_map_gives_zero_descriptor_without_nan(estimator):
    maps = [np.zeros((3, 4, 4)), np.ones((3, 4, 4))]
    pooled = clone(estimator).fit_transform(maps)
    assert np.isfinite(pooled).all()
    if not isinstance(estimator, GeMPooling):  # GeM clamps at eps > 0
        assert_array_equal(pooled[0], 0.0)
    assert_allclose(pooled[1], np.full(3, 1 / math.sqrt(3)))


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_channel_mismatch_between_fit_and_transform(estimator):
    fitted = clone(estimator).fit([np.ones((3, 2, 2))])
    with pytest.raises(ValueError, match="X has 4 features.*expecting 3 features"):
        fitted.transform([np.ones((4, 2, 2))])
    with pytest.raises(ValueError, match="X has 4 features, but .* is expecting 3 features"):
        fitted.transform(np.ones((2, 4)))


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize(
    "X, error, match",
    [
        ([], ValueError, "empty"),
        ([np.ones((3, 2, 2)), np.full((3, 2, 2), np.nan)], ValueError, "NaN"),
        (np.full((2, 3, 2, 2), np.inf), ValueError, "infinity"),
        (np.ones((3, 2, 2)), ValueError, "got an array of shape \\(3, 2, 2\\)"),
        (np.ones(3), ValueError, "got a 1-D array"),
        ([np.ones((3, 2))], ValueError, "must be a \\(C, h, w\\) feature map"),
        ([np.ones((3, 2, 2)), np.ones((2, 2, 2))], ValueError, "channels"),
        ("maps", TypeError, "list of \\(C, h, w\\) feature maps"),
    ],
)
def test_bad_input_errors(estimator, X, error, match):
    with pytest.raises(error, match=match):
        clone(estimator).fit(X)
    fitted = clone(estimator).fit([np.ones((3, 2, 2))])
    with pytest.raises(error, match=match):
        fitted.transform(X)


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda e: type(e).__name__)
def test_not_fitted_clone_and_pickle(estimator, ragged_maps):
    with pytest.raises(NotFittedError):
        clone(estimator).transform(ragged_maps)
    fitted = clone(estimator).fit(ragged_maps)
    assert fitted.n_features_in_ == 3
    restored = pickle.loads(pickle.dumps(fitted))
    assert_array_equal(restored.transform(ragged_maps), fitted.transform(ragged_maps))
    name = type(estimator).__name__.lower()
    assert list(fitted.get_feature_names_out()) == [f"{name}{i}" for i in range(3)]


def test_parameter_validation():
    maps = [np.ones((1, 2, 2))]
    with pytest.raises(InvalidParameterError, match="'levels' parameter"):
        RMAC(levels=0).fit(maps)
    with pytest.raises(InvalidParameterError, match="'overlap' parameter"):
        RMAC(overlap=1.5).fit(maps)
    with pytest.raises(InvalidParameterError, match="'normalize' parameter"):
        MaxPooling(normalize="yes").fit(maps)
    with pytest.raises(InvalidParameterError, match="'center_prior' parameter"):
        SumPooling(center_prior=None).fit(maps)
