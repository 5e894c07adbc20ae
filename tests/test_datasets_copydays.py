"""Tests of make_copydays, the Copydays-style benchmark generated from offline photographs."""

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from skretrieval.datasets import COPYDAYS_TRANSFORMS, make_copydays

SMALL = dict(sources=["coffee", "camera", "china"], max_size=64)


@pytest.fixture(scope="module")
def small_copydays():
    return make_copydays(n_copies_per_image=8, **SMALL)


def test_make_copydays_layout(small_copydays):
    data = small_copydays
    n_groups, n_copies = 3, 8
    assert len(data.images) == n_groups * (1 + n_copies)
    assert data.target_names.tolist() == ["coffee", "camera", "china"]
    # Originals first, then the copies grouped by source photo.
    expected_target = list(range(n_groups)) + [g for g in range(n_groups) for _ in range(n_copies)]
    assert data.target.tolist() == expected_target
    assert data.target.dtype == np.int64
    assert data.is_original.tolist() == [True] * n_groups + [False] * (n_groups * n_copies)
    assert np.all(data.transform[data.is_original] == "original")
    assert np.all(data.transform_family[data.is_original] == "original")
    # Each original has one copy per default transform, in order.
    for group in range(n_groups):
        families = data.transform_family[(data.target == group) & ~data.is_original]
        assert families.tolist() == list(COPYDAYS_TRANSFORMS[:8])
    assert len(data.credits) == n_groups
    assert "coffee" in data.DESCR and "CC BY 2.0" in data.DESCR


def test_make_copydays_images_are_rgb_uint8(small_copydays):
    for image in small_copydays.images:
        assert isinstance(image, np.ndarray)
        assert image.dtype == np.uint8
        assert image.ndim == 3 and image.shape[2] == 3
        assert max(image.shape[:2]) <= 64
    # Originals are downscaled with their aspect ratio: coffee is 400 x 600.
    assert small_copydays.images[0].shape == (43, 64, 3)
    # The gray photo is returned as three equal channels.
    camera = small_copydays.images[1]
    assert np.array_equal(camera[..., 0], camera[..., 1])
    assert np.array_equal(camera[..., 0], camera[..., 2])


def test_make_copydays_is_deterministic():
    first = make_copydays(n_copies_per_image=8, random_state=3, **SMALL)
    second = make_copydays(n_copies_per_image=8, random_state=3, **SMALL)
    other = make_copydays(n_copies_per_image=8, random_state=4, **SMALL)
    assert first.transform.tolist() == second.transform.tolist()
    for a, b in zip(first.images, second.images, strict=True):
        assert np.array_equal(a, b)
    assert first.transform.tolist() != other.transform.tolist()
    # The originals do not depend on the random state.
    for a, b in zip(first.images[:3], other.images[:3], strict=True):
        assert np.array_equal(a, b)


def _copy_of(data, group, family):
    (position,) = np.flatnonzero((data.target == group) & (data.transform_family == family))
    return data.images[position], data.transform[position]


def test_make_copydays_geometric_transforms_match_numpy(small_copydays):
    data = small_copydays
    for group in range(3):
        original = data.images[group]
        rotated, description = _copy_of(data, group, "rotate")
        angle = int(description[len("rotate(") : -1])
        # PIL's ROTATE_90 is counter-clockwise, as np.rot90.
        assert np.array_equal(rotated, np.rot90(original, k=angle // 90))

        cropped, description = _copy_of(data, group, "crop")
        h, w = cropped.shape[:2]
        area = h * w / (original.shape[0] * original.shape[1])
        assert 0.45 <= area <= 0.85
        assert description == f"crop(area={area:.2f})"
        # The crop is an exact sub-array of the original.
        windows = sliding_window_view(original, cropped.shape)[..., 0, :, :, :]
        assert np.all(windows == cropped, axis=(-3, -2, -1)).any()

        scaled, description = _copy_of(data, group, "scale")
        factor = float(description[len("scale(") : -1])
        assert 0.25 <= factor <= 0.5
        np.testing.assert_allclose(
            np.array(scaled.shape[:2]), np.array(original.shape[:2]) * factor, atol=1
        )

        tilted, _ = _copy_of(data, group, "tilt")
        assert tilted.shape == original.shape


def test_make_copydays_photometric_transforms(small_copydays):
    data = small_copydays
    for group in range(3):
        original = data.images[group].astype(float)
        gray, _ = _copy_of(data, group, "grayscale")
        assert np.array_equal(gray[..., 0], gray[..., 1])
        assert np.array_equal(gray[..., 1], gray[..., 2])

        jpeg, description = _copy_of(data, group, "jpeg")
        quality = int(description[len("jpeg(quality=") : -1])
        assert 10 <= quality <= 30
        assert jpeg.shape == original.shape
        # A low-quality re-encoding changes pixels but keeps the picture.
        difference = np.abs(jpeg - original).mean()
        assert 0 < difference < 20

        colored, description = _copy_of(data, group, "color")
        assert colored.shape == original.shape
        assert description.startswith("color(brightness=")

        strong, description = _copy_of(data, group, "strong")
        assert description.startswith("strong: crop(")
        assert strong.shape[0] * strong.shape[1] < original.shape[0] * original.shape[1]


def test_make_copydays_flip_and_blur():
    data = make_copydays(n_copies_per_image=2, transforms=["flip", "blur"], **SMALL)
    for group in range(3):
        original = data.images[group]
        flipped, description = _copy_of(data, group, "flip")
        assert description == "flip"
        assert np.array_equal(flipped, original[:, ::-1])
        blurred, _ = _copy_of(data, group, "blur")
        # Blurring lowers the energy of horizontal differences.
        assert (
            np.abs(np.diff(blurred.astype(float), axis=1)).mean()
            < np.abs(np.diff(original.astype(float), axis=1)).mean()
        )


def test_make_copydays_occlude_and_extreme():
    data = make_copydays(n_copies_per_image=2, transforms=["occlude", "extreme"], **SMALL)
    for group in range(3):
        original = data.images[group]
        occluded, description = _copy_of(data, group, "occlude")
        area = float(description[len("occlude(area=") : -1])
        assert occluded.shape == original.shape
        # Only the pasted rectangle changes, and it is one colour.
        changed = np.any(occluded != original, axis=2)
        rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
        box = occluded[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].reshape(-1, 3)
        assert len(np.unique(box, axis=0)) == 1
        assert box.shape[0] / changed.size == pytest.approx(area, abs=0.01)
        assert 0.2 <= area <= 0.45
        extreme, description = _copy_of(data, group, "extreme")
        steps = description[len("extreme: ") :].split(" + ")
        assert [step.split("(")[0] for step in steps] == [
            "crop",
            "tilt",
            "color",
            "occlude",
            "scale",
            "jpeg",
        ]
        assert 5 <= int(steps[-1][len("jpeg(quality=") : -1]) <= 12
        # A 20-40% crop downscaled by at most a half keeps at most a tenth of the pixels.
        assert extreme.shape[0] * extreme.shape[1] <= 0.1 * original.shape[0] * original.shape[1]


def test_make_copydays_cycles_transforms_and_accepts_callables():
    def negative(image, random_state):
        assert isinstance(random_state, np.random.RandomState)
        return 255 - np.asarray(image)

    data = make_copydays(
        n_copies_per_image=5, transforms=["rotate", negative], sources=["chelsea"], max_size=32
    )
    assert data.transform_family.tolist() == [
        "original",
        "rotate",
        "negative",
        "rotate",
        "negative",
        "rotate",
    ]
    assert np.array_equal(data.images[2], 255 - data.images[0])
    assert data.transform[2] == "negative"


def test_make_copydays_no_copies_and_return_X_y():
    images, target = make_copydays(n_copies_per_image=0, return_X_y=True, **SMALL)
    assert len(images) == 3
    assert target.tolist() == [0, 1, 2]


def test_make_copydays_all_sources_load_offline():
    data = make_copydays(n_copies_per_image=0, sources="all", max_size=32)
    assert len(data.images) == len(data.target_names) == 11
    default = make_copydays(n_copies_per_image=0, max_size=32)
    assert len(default.images) == 10
    assert set(default.target_names) < set(data.target_names)


def test_make_copydays_max_size_none_keeps_native_size():
    data = make_copydays(n_copies_per_image=0, sources=["coffee"], max_size=None)
    assert data.images[0].shape == (400, 600, 3)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(n_copies_per_image=-1), ValueError, "n_copies_per_image"),
        (dict(n_copies_per_image=2.5), ValueError, "n_copies_per_image"),
        (dict(max_size=4), ValueError, "max_size"),
        (dict(sources=["lena"]), ValueError, "Unknown photo"),
        (dict(sources=[]), ValueError, "sources is empty"),
        (dict(sources=["coffee", "coffee"]), ValueError, "duplicates"),
        (dict(transforms=["shear"]), ValueError, "Unknown transform 'shear'"),
        (dict(transforms=[]), ValueError, "transforms is empty"),
        (dict(transforms=[3]), TypeError, "transform names or callables"),
    ],
)
def test_make_copydays_rejects_bad_parameters(kwargs, error, match):
    params = dict(sources=["coffee"], max_size=32)
    params.update(kwargs)
    with pytest.raises(error, match=match):
        make_copydays(**params)


def test_make_copydays_rejects_bad_callable_output():
    def broken(image, random_state):
        return np.zeros((4, 4, 3), dtype=np.float64)

    with pytest.raises(ValueError, match="output of transform 'broken'"):
        make_copydays(n_copies_per_image=1, transforms=[broken], sources=["coffee"], max_size=32)
