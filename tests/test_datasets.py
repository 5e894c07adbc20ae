from pathlib import Path

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from skretrieval.datasets import (
    COPYDAYS_TRANSFORMS,
    list_images,
    load_image_folder,
    make_copydays,
)

# ---------------------------------------------------------------------------------------------
# make_copydays
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# Image folders
# ---------------------------------------------------------------------------------------------


def _write_image(path, fmt=None):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    color = (len(path.name) * 20 % 256, 40, 90)
    Image.new("RGB", (4, 3), color).save(path, format=fmt)


@pytest.fixture
def image_tree(tmp_path):
    root = tmp_path / "tree"
    _write_image(root / "dogs" / "b.png")
    _write_image(root / "dogs" / "a.JPG", fmt="JPEG")
    _write_image(root / "dogs" / "puppies" / "c.jpeg", fmt="JPEG")
    _write_image(root / "cats" / "z.png")
    _write_image(root / "cats" / ".hidden.png")
    _write_image(root / "cats" / ".thumbnails" / "t.png")
    (root / "cats" / "notes.txt").write_text("not an image")
    (root / "README.md").write_text("a non-image file at the root is fine")
    _write_image(root / ".git" / "x.png")
    return root


def _relative(paths, root):
    return [Path(p).relative_to(root).as_posix() for p in paths]


def test_load_image_folder(image_tree):
    data = load_image_folder(image_tree)
    assert data.target_names.tolist() == ["cats", "dogs"]
    assert _relative(data.filenames, image_tree) == [
        "cats/z.png",
        "dogs/a.JPG",
        "dogs/b.png",
        "dogs/puppies/c.jpeg",
    ]
    assert data.target.tolist() == [0, 1, 1, 1]
    assert data.target.dtype == np.int64
    assert all(isinstance(f, str) for f in data.filenames)
    assert "4 images in 2 classes" in data.DESCR
    # The listed files are readable images.
    for filename in data.filenames:
        with Image.open(filename) as image:
            assert image.size == (4, 3)


def test_load_image_folder_extensions(image_tree):
    data = load_image_folder(image_tree, extensions="png")
    assert _relative(data.filenames, image_tree) == ["cats/z.png", "dogs/b.png"]
    data = load_image_folder(image_tree, extensions=[".JPEG", ".jpg"], allow_empty=True)
    assert data.target.tolist() == [1, 1]
    assert _relative(data.filenames, image_tree) == ["dogs/a.JPG", "dogs/puppies/c.jpeg"]
    with pytest.raises(FileNotFoundError, match=r"cats.*\['\.jpg'\]"):
        load_image_folder(image_tree, extensions=".jpg")
    with pytest.raises(ValueError, match="Invalid file extension"):
        load_image_folder(image_tree, extensions=[".png", ""])
    with pytest.raises(ValueError, match="extensions is empty"):
        load_image_folder(image_tree, extensions=[])
    with pytest.raises(TypeError, match="extensions"):
        load_image_folder(image_tree, extensions=3)


def test_load_image_folder_allow_empty(image_tree):
    (image_tree / "birds").mkdir()
    with pytest.raises(FileNotFoundError, match="birds.*allow_empty=True"):
        load_image_folder(image_tree)
    data = load_image_folder(image_tree, allow_empty=True)
    assert data.target_names.tolist() == ["birds", "cats", "dogs"]
    assert data.target.tolist() == [1, 2, 2, 2]


def test_load_image_folder_errors(tmp_path):
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError, match="missing.*does not exist"):
        load_image_folder(missing)
    a_file = tmp_path / "file.png"
    _write_image(a_file)
    with pytest.raises(NotADirectoryError, match="not a directory"):
        load_image_folder(a_file)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty.*no class sub-folders.*\.png"):
        load_image_folder(empty)
    # Class folders exist but none holds an image, even with allow_empty=True.
    (empty / "a").mkdir()
    (empty / "a" / "notes.txt").write_text("text")
    with pytest.raises(FileNotFoundError, match=r"no image file with extensions"):
        load_image_folder(empty, allow_empty=True)
    with pytest.raises(TypeError, match="root must be a path"):
        load_image_folder(3)


def test_load_image_folder_rejects_unlabelled_images(image_tree):
    _write_image(image_tree / "stray.png")
    with pytest.raises(ValueError, match="outside any class sub-folder.*stray.png"):
        load_image_folder(image_tree)


def test_list_images_recursive_and_sorted(image_tree):
    _write_image(image_tree / "a-b.png")
    _write_image(image_tree / "a" / "b.png")
    files = list_images(image_tree)
    assert _relative(files, image_tree) == [
        "a/b.png",
        "a-b.png",
        "cats/z.png",
        "dogs/a.JPG",
        "dogs/b.png",
        "dogs/puppies/c.jpeg",
    ]
    assert list_images(image_tree / "dogs" / "puppies") == [
        str(image_tree / "dogs" / "puppies" / "c.jpeg")
    ]
    assert list_images(str(image_tree), extensions=(".gif",)) == []


def test_list_images_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_images(tmp_path / "nope")
    _write_image(tmp_path / "x.png")
    with pytest.raises(NotADirectoryError):
        list_images(tmp_path / "x.png")
