from pathlib import Path

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from skretrieval.datasets import (
    COPYDAYS_TRANSFORMS,
    MissingDatasetFilesError,
    crop_queries,
    ground_truth_masks,
    list_images,
    load_holidays,
    load_image_folder,
    load_oxford_paris,
    load_revisited,
    load_ukbench,
    make_copydays,
)
from skretrieval.metrics import evaluate_revisited

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


# ---------------------------------------------------------------------------------------------
# Benchmark loaders: fixture trees in the published layouts, tiny JPEGs, no download
# ---------------------------------------------------------------------------------------------


def _write_jpeg(path, size=(16, 12), seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG", quality=95)


def _write_revisited(root, name="roxford5k", skip=()):
    """Five database images a..e and two queries q1, q2 in the published gnd_*.pkl format."""
    import pickle

    folder = root / name
    imlist = ["a", "b", "c", "d", "e"]
    qimlist = ["q1", "q2"]
    for i, image in enumerate(imlist + qimlist):
        if image not in skip:
            _write_jpeg(folder / "jpg" / f"{image}.jpg", size=(40, 30), seed=i)
    gnd = [
        {"easy": [1, 3], "hard": [4], "junk": [0], "bbx": [5.2, 4.0, 25.0, 100.0]},
        {"easy": [2], "hard": [], "junk": [3], "bbx": [0.0, 0.0, 10.0, 10.0]},
    ]
    with open(folder / f"gnd_{name}.pkl", "wb") as file:
        pickle.dump({"imlist": imlist, "qimlist": qimlist, "gnd": gnd}, file)
    return folder


def _names(paths):
    return [Path(path).stem for path in paths]


@pytest.mark.parametrize("name", ["roxford5k", "rparis6k"])
def test_load_revisited(tmp_path, name):
    folder = _write_revisited(tmp_path, name)
    data = load_revisited(tmp_path, name)
    assert data.name == name
    assert data.images == [str(folder / "jpg" / f"{im}.jpg") for im in "abcde"]
    assert data.queries == [str(folder / "jpg" / "q1.jpg"), str(folder / "jpg" / "q2.jpg")]
    assert data.query_boxes.dtype == np.float64
    assert data.query_boxes.tolist() == [[5.2, 4.0, 25.0, 100.0], [0.0, 0.0, 10.0, 10.0]]
    assert data.gnd[0]["easy"].tolist() == [1, 3] and data.gnd[0]["hard"].tolist() == [4]
    assert data.gnd[1]["junk"].tolist() == [3] and data.gnd[1]["hard"].dtype == np.int64
    assert data.positive_keys == ("easy", "hard")
    assert data.n_missing_images == 0 and data.n_missing_queries == 0
    assert data.queries_without_positives.tolist() == []
    # The ground truth goes straight into evaluate_revisited: a perfect ranking scores 1.
    ranks = np.array([[1, 3, 4, 0, 2], [2, 0, 1, 3, 4]])
    results = evaluate_revisited(ranks, data.gnd)
    assert results["medium"]["map"] == 1.0 and results["easy"]["map"] == 1.0
    assert results["hard"]["n_queries"] == 1


def test_load_revisited_missing_files_say_what_goes_where(tmp_path):
    with pytest.raises(MissingDatasetFilesError) as error:
        load_revisited(tmp_path, "roxford5k")
    message = str(error.value)
    assert str(tmp_path / "roxford5k" / "gnd_roxford5k.pkl") in message
    assert "cmp.felk.cvut.cz/revisitop/data/datasets/roxford5k/gnd_roxford5k.pkl" in message
    assert str(tmp_path / "roxford5k" / "jpg") in message and "oxbuild_images" in message
    assert isinstance(error.value, FileNotFoundError)

    _write_revisited(tmp_path, skip=("b", "d", "q2"))
    with pytest.raises(MissingDatasetFilesError) as error:
        load_revisited(tmp_path, "roxford5k")
    message = str(error.value)
    assert "3 images missing" in message and "first: 'b.jpg'" in message
    assert "allow_missing=True" in message


def test_load_revisited_allow_missing_remaps_the_ground_truth(tmp_path):
    _write_revisited(tmp_path, skip=("b", "q2"))
    with pytest.warns(UserWarning, match="1 database images and 1 query images are missing"):
        data = load_revisited(tmp_path, "roxford5k", allow_missing=True)
    # Database a, c, d, e: old index 0 -> 0, 2 -> 1, 3 -> 2, 4 -> 3; b (old 1) is gone.
    assert _names(data.images) == ["a", "c", "d", "e"]
    assert _names(data.queries) == ["q1"]
    assert data.gnd[0]["easy"].tolist() == [2]
    assert data.gnd[0]["hard"].tolist() == [3]
    assert data.gnd[0]["junk"].tolist() == [0]
    assert data.query_boxes.tolist() == [[5.2, 4.0, 25.0, 100.0]]
    assert data.n_missing_images == 1 and data.n_missing_queries == 1


def test_load_revisited_allow_missing_reports_queries_without_positives(tmp_path):
    _write_revisited(tmp_path, skip=("c",))
    with pytest.warns(UserWarning, match=r"1 of the remaining queries have no positive.*\[1\]"):
        data = load_revisited(tmp_path, "roxford5k", allow_missing=True)
    assert data.gnd[1]["easy"].tolist() == [] and data.gnd[1]["junk"].tolist() == [2]
    assert data.queries_without_positives.tolist() == [1]
    assert len(data.queries) == 2


def test_load_revisited_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="Unknown dataset name 'oxford5k'"):
        load_revisited(tmp_path, "oxford5k")
    folder = tmp_path / "rparis6k"
    folder.mkdir()
    import pickle

    (folder / "gnd_rparis6k.pkl").write_bytes(pickle.dumps({"imlist": []}))
    with pytest.raises(ValueError, match="keys 'imlist', 'qimlist' and 'gnd'"):
        load_revisited(tmp_path, "rparis6k")
    (folder / "gnd_rparis6k.pkl").write_bytes(
        pickle.dumps({"imlist": [], "qimlist": ["q"], "gnd": [{"easy": []}]})
    )
    with pytest.raises(ValueError, match=r"gnd\[0\] has no key"):
        load_revisited(tmp_path, "rparis6k")


def test_crop_queries_crops_to_the_box(tmp_path):
    _write_revisited(tmp_path)
    data = load_revisited(tmp_path, "roxford5k")
    crops = crop_queries(data)
    assert all(crop.mode == "RGB" for crop in crops)
    # Box [5.2, 4, 25, 100] on a 40 x 30 image: x 5..25, y 4..30 (clipped at the bottom).
    full = np.asarray(Image.open(data.queries[0]).convert("RGB"))
    assert crops[0].size == (20, 26)
    assert np.array_equal(np.asarray(crops[0]), full[4:30, 5:25])
    assert crops[1].size == (10, 10)
    # Without boxes the whole images come back.
    data.query_boxes = None
    assert [crop.size for crop in crop_queries(data)] == [(40, 30), (40, 30)]
    data.query_boxes = np.array([[50.0, 0, 60, 10], [0, 0, 10, 10]])
    with pytest.raises(ValueError, match="query 0.*is empty"):
        crop_queries(data)


def _write_oxford(root, skip=()):
    folder = root / "oxford5k"
    images = [f"all_souls_00000{i}" for i in range(1, 5)] + [
        f"radcliffe_00000{i}" for i in (1, 2, 3)
    ]
    for i, image in enumerate(images):
        if image not in skip:
            _write_jpeg(folder / "jpg" / f"{image}.jpg", seed=i)
    gt = folder / "gt"
    gt.mkdir()
    files = {
        # The published format: "oxc1_<image> x1 y1 x2 y2".
        "all_souls_1_query.txt": "oxc1_all_souls_000001 1.5 2.0 10.0 8.0\n",
        "all_souls_1_good.txt": "all_souls_000001\nall_souls_000002\n",
        "all_souls_1_ok.txt": "all_souls_000003\n",
        "all_souls_1_junk.txt": "all_souls_000004\n",
        # A leading query id is accepted too.
        "radcliffe_1_query.txt": "radcliffe_1 radcliffe_000001 0 0 5 5\n",
        "radcliffe_1_good.txt": "radcliffe_000002\n",
        "radcliffe_1_ok.txt": "",
        "radcliffe_1_junk.txt": "radcliffe_000003\n",
    }
    for file, text in files.items():
        (gt / file).write_text(text)
    return folder


def test_load_oxford_paris(tmp_path):
    folder = _write_oxford(tmp_path)
    data = load_oxford_paris(tmp_path, "oxford5k")
    assert data.name == "oxford5k" and data.query_ids == ["all_souls_1", "radcliffe_1"]
    assert _names(data.images) == [f"all_souls_00000{i}" for i in range(1, 5)] + [
        f"radcliffe_00000{i}" for i in (1, 2, 3)
    ]
    assert data.queries == [
        str(folder / "jpg" / "all_souls_000001.jpg"),
        str(folder / "jpg" / "radcliffe_000001.jpg"),
    ]
    assert data.query_boxes.tolist() == [[1.5, 2.0, 10.0, 8.0], [0.0, 0.0, 5.0, 5.0]]
    # Positives are good + ok.
    assert data.gnd[0]["ok"].tolist() == [0, 1, 2] and data.gnd[0]["junk"].tolist() == [3]
    assert data.gnd[1]["ok"].tolist() == [5] and data.gnd[1]["junk"].tolist() == [6]
    assert data.positive_keys == ("ok",) and data.n_missing_images == 0
    relevant, junk = ground_truth_masks(data.gnd, len(data.images))
    assert relevant.astype(int).tolist() == [[1, 1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1, 0]]
    assert junk.astype(int).tolist() == [[0, 0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0, 1]]
    assert [crop.size for crop in crop_queries(data)] == [(8, 6), (5, 5)]


def test_load_oxford_paris_missing_files(tmp_path):
    with pytest.raises(MissingDatasetFilesError) as error:
        load_oxford_paris(tmp_path, "paris6k")
    message = str(error.value)
    assert str(tmp_path / "paris6k" / "gt") in message and "paris_120310.tgz" in message
    assert str(tmp_path / "paris6k" / "jpg") in message

    _write_oxford(tmp_path, skip=("all_souls_000002", "radcliffe_000001"))
    with pytest.raises(MissingDatasetFilesError, match=r"2 ground-truth images missing.*first"):
        load_oxford_paris(tmp_path, "oxford5k")
    with pytest.warns(UserWarning, match="2 database images and 1 query images are missing"):
        data = load_oxford_paris(tmp_path, "oxford5k", allow_missing=True)
    # Database: all_souls 1, 3, 4 -> 0, 1, 2; radcliffe 2, 3 -> 3, 4. The radcliffe query is
    # dropped (its image is missing).
    assert data.query_ids == ["all_souls_1"]
    assert data.gnd[0]["ok"].tolist() == [0, 1] and data.gnd[0]["junk"].tolist() == [2]
    assert data.n_missing_images == 2 and data.n_missing_queries == 1

    (tmp_path / "oxford5k" / "gt" / "all_souls_1_ok.txt").unlink()
    with pytest.raises(MissingDatasetFilesError, match="all_souls_1_ok.txt"):
        load_oxford_paris(tmp_path, "oxford5k")


def test_load_oxford_paris_rejects_a_malformed_query_file(tmp_path):
    folder = _write_oxford(tmp_path)
    (folder / "gt" / "all_souls_1_query.txt").write_text("all_souls_000001 1 2 3\n")
    with pytest.raises(ValueError, match="one line '<image> x1 y1 x2 y2'"):
        load_oxford_paris(tmp_path, "oxford5k")


HOLIDAYS = [100000, 100001, 100002, 100100, 100101, 100200]


@pytest.mark.parametrize("subfolder", ["", "jpg"])
def test_load_holidays(tmp_path, subfolder):
    for number in HOLIDAYS:
        _write_jpeg(tmp_path / subfolder / f"{number}.jpg", seed=number)
    with pytest.warns(UserWarning, match=r"evaluating 3 queries against 3 database images"):
        data = load_holidays(tmp_path, allow_missing=True)
    assert data.name == "holidays" and data.query_boxes is None
    assert _names(data.queries) == ["100000", "100100", "100200"]
    # The queries are not in the database.
    assert _names(data.images) == ["100001", "100002", "100101"]
    assert [entry["ok"].tolist() for entry in data.gnd] == [[0, 1], [2], []]
    assert all(entry["junk"].size == 0 for entry in data.gnd)
    assert data.target.tolist() == [1000, 1000, 1001]
    assert data.query_target.tolist() == [1000, 1001, 1002]
    assert data.queries_without_positives.tolist() == [2]
    assert data.n_missing_queries == 497 and data.n_missing_images == 988


def test_load_holidays_missing_files(tmp_path):
    with pytest.raises(MissingDatasetFilesError) as error:
        load_holidays(tmp_path, allow_missing=True)
    assert "found 0 images" in str(error.value) and "jpg1.tar.gz" in str(error.value)
    for number in HOLIDAYS:
        _write_jpeg(tmp_path / f"{number}.jpg")
    with pytest.raises(MissingDatasetFilesError) as error:
        load_holidays(tmp_path)
    message = str(error.value)
    assert "1491 images" in message and "found 6 images and 3 queries" in message
    assert "allow_missing=True" in message


def test_load_ukbench(tmp_path):
    for number in range(8):
        if number != 5:
            _write_jpeg(tmp_path / "full" / f"ukbench{number:05d}.jpg", seed=number)
    with pytest.raises(MissingDatasetFilesError) as error:
        load_ukbench(tmp_path)
    message = str(error.value)
    assert "10193 images missing" in message and "first: 'ukbench00005.jpg'" in message
    assert str(tmp_path / "full") in message and "archive.org" in message
    with pytest.warns(UserWarning, match="10193 database images"):
        data = load_ukbench(tmp_path, allow_missing=True)
    assert _names(data.images) == [f"ukbench{n:05d}" for n in (0, 1, 2, 3, 4, 6, 7)]
    assert data.queries == data.images and data.query_boxes is None
    assert data.target.tolist() == [0, 0, 0, 0, 1, 1, 1]
    # Query 5 is ukbench00006: its group is images 4, 5, 6; itself (5) is junk.
    assert data.gnd[5]["ok"].tolist() == [4, 6] and data.gnd[5]["junk"].tolist() == [5]
    assert data.gnd[0]["ok"].tolist() == [1, 2, 3] and data.gnd[0]["junk"].tolist() == [0]


def test_load_ukbench_without_any_image(tmp_path):
    with pytest.raises(MissingDatasetFilesError, match="10200 images ukbench00000.jpg"):
        load_ukbench(tmp_path, allow_missing=True)


def test_ground_truth_masks():
    gnd = [{"easy": [0], "hard": [2], "junk": [2, 3]}, {"easy": [], "hard": [1], "junk": []}]
    relevant, junk = ground_truth_masks(gnd, 4, positive_keys=("easy", "hard"), junk_keys=("junk",))
    # An item both positive and junk is junk.
    assert relevant.astype(int).tolist() == [[1, 0, 0, 0], [0, 1, 0, 0]]
    assert junk.astype(int).tolist() == [[0, 0, 1, 1], [0, 0, 0, 0]]
    with pytest.raises(ValueError, match="outside"):
        ground_truth_masks(gnd, 3, positive_keys=("easy",), junk_keys=("junk",))
