"""Tests of the benchmark loaders on fixture trees in the published layouts, and of the one
dataset schema that every loader returns."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skretrieval.datasets import (
    MissingDatasetFilesError,
    crop_queries,
    ground_truth_masks,
    load_holidays,
    load_image_folder,
    load_oxford_paris,
    load_revisited,
    load_ukbench,
    make_copydays,
)
from skretrieval.metrics import evaluate_revisited

# Tiny JPEGs in the published layouts, no download.


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
    assert data.filenames == [str(folder / "jpg" / f"{im}.jpg") for im in "abcde"]
    assert data.query_filenames == [str(folder / "jpg" / "q1.jpg"), str(folder / "jpg" / "q2.jpg")]
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
    assert _names(data.filenames) == ["a", "c", "d", "e"]
    assert _names(data.query_filenames) == ["q1"]
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
    assert len(data.query_filenames) == 2


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
    full = np.asarray(Image.open(data.query_filenames[0]).convert("RGB"))
    assert crops[0].size == (20, 26)
    assert np.array_equal(np.asarray(crops[0]), full[4:30, 5:25])
    assert crops[1].size == (10, 10)
    # Without boxes the whole images come back.
    data.query_boxes = None
    assert [crop.size for crop in crop_queries(data)] == [(40, 30), (40, 30)]
    data.query_boxes = np.array([[50.0, 0, 60, 10], [0, 0, 10, 10]])
    with pytest.raises(ValueError, match="query 0.*is empty"):
        crop_queries(data)


def test_crop_queries_needs_query_files(tmp_path):
    _write_jpeg(tmp_path / "tree" / "cats" / "1.jpg")
    # An image folder's queries are its database images: there is no query file to crop.
    with pytest.raises(ValueError, match="query_filenames is None"):
        crop_queries(load_image_folder(tmp_path / "tree"))


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
    assert _names(data.filenames) == [f"all_souls_00000{i}" for i in range(1, 5)] + [
        f"radcliffe_00000{i}" for i in (1, 2, 3)
    ]
    assert data.query_filenames == [
        str(folder / "jpg" / "all_souls_000001.jpg"),
        str(folder / "jpg" / "radcliffe_000001.jpg"),
    ]
    assert data.query_boxes.tolist() == [[1.5, 2.0, 10.0, 8.0], [0.0, 0.0, 5.0, 5.0]]
    # Positives are good + ok.
    assert data.gnd[0]["ok"].tolist() == [0, 1, 2] and data.gnd[0]["junk"].tolist() == [3]
    assert data.gnd[1]["ok"].tolist() == [5] and data.gnd[1]["junk"].tolist() == [6]
    assert data.positive_keys == ("ok",) and data.n_missing_images == 0
    relevant, junk = ground_truth_masks(data.gnd, len(data.filenames))
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
    assert _names(data.query_filenames) == ["100000", "100100", "100200"]
    # The queries are not in the database.
    assert _names(data.filenames) == ["100001", "100002", "100101"]
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
    assert _names(data.filenames) == [f"ukbench{n:05d}" for n in (0, 1, 2, 3, 4, 6, 7)]
    assert data.query_filenames == data.filenames and data.query_boxes is None
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


# ---------------------------------------------------------------------------------------------
# One schema for every loader
# ---------------------------------------------------------------------------------------------

SCHEMA_KEYS = (
    "name",
    "filenames",
    "images",
    "target",
    "target_names",
    "query_filenames",
    "query_target",
    "query_boxes",
    "gnd",
    "positive_keys",
    "queries_without_positives",
    "n_missing_images",
    "n_missing_queries",
    "DESCR",
)
# Relevance from `target`, each item querying the others: no query or ground-truth fields.
LEAVE_ONE_OUT_NONE = {
    "query_filenames",
    "query_target",
    "query_boxes",
    "gnd",
    "positive_keys",
    "queries_without_positives",
    "n_missing_images",
    "n_missing_queries",
}


def _copydays(root):
    return make_copydays(n_copies_per_image=2, sources=["coffee", "chelsea"], max_size=32)


def _folder(root):
    for name in ["cats/1.jpg", "cats/2.jpg", "dogs/1.jpg"]:
        _write_jpeg(root / "tree" / name)
    return load_image_folder(root / "tree")


def _revisited(name):
    def load(root):
        _write_revisited(root, name)
        return load_revisited(root, name)

    return load


def _oxford(root):
    _write_oxford(root)
    return load_oxford_paris(root, "oxford5k")


def _holidays(root):
    for number in HOLIDAYS:
        _write_jpeg(root / f"{number}.jpg", seed=number)
    with pytest.warns(UserWarning):
        return load_holidays(root, allow_missing=True)


def _ukbench(root):
    for number in range(8):
        _write_jpeg(root / f"ukbench{number:05d}.jpg", seed=number)
    with pytest.warns(UserWarning):
        return load_ukbench(root, allow_missing=True)


# name -> (load on a fixture tree under a folder, keys that are None, the loader's extra keys)
LOADERS = {
    "copydays": (
        _copydays,
        {"filenames"} | LEAVE_ONE_OUT_NONE,
        ("is_original", "transform_family", "transform", "credits"),
    ),
    "folder": (_folder, {"images"} | LEAVE_ONE_OUT_NONE, ()),
    "roxford5k": (
        _revisited("roxford5k"),
        {"images", "target", "target_names", "query_target"},
        (),
    ),
    "rparis6k": (_revisited("rparis6k"), {"images", "target", "target_names", "query_target"}, ()),
    "oxford5k": (_oxford, {"images", "target", "target_names", "query_target"}, ("query_ids",)),
    "holidays": (_holidays, {"images", "target_names", "query_boxes"}, ()),
    "ukbench": (_ukbench, {"images", "target_names", "query_boxes"}, ()),
}


def _check_files(paths):
    assert isinstance(paths, list) and paths
    assert all(isinstance(path, str) and Path(path).is_file() for path in paths)


def _check_labels(labels, n):
    assert isinstance(labels, np.ndarray) and labels.dtype == np.int64 and labels.shape == (n,)


@pytest.mark.parametrize("name", list(LOADERS))
def test_every_loader_returns_the_schema(tmp_path, name):
    load, none_keys, extras = LOADERS[name]
    data = load(tmp_path)
    # The schema keys in order, then only the loader's documented extras.
    assert list(data) == list(SCHEMA_KEYS) + list(extras)
    assert data.name == name
    assert {key for key in SCHEMA_KEYS if data[key] is None} == none_keys
    assert isinstance(data.DESCR, str) and data.DESCR

    # The database: file paths or pixels, never both and never neither.
    assert (data.filenames is None) != (data.images is None)
    if data.filenames is not None:
        _check_files(data.filenames)
        n_images = len(data.filenames)
    else:
        assert isinstance(data.images, list) and data.images
        for image in data.images:
            assert isinstance(image, np.ndarray) and image.dtype == np.uint8
            assert image.ndim == 3 and image.shape[2] == 3
        n_images = len(data.images)
    if data.target is not None:
        _check_labels(data.target, n_images)
    if data.target_names is not None:
        assert data.target_names.dtype == object
        assert data.target.max() < len(data.target_names)

    if data.query_filenames is None:
        # Each database item queries the others: relevance comes from `target`.
        assert data.target is not None
        return
    _check_files(data.query_filenames)
    n_queries = len(data.query_filenames)
    if data.query_target is not None:
        _check_labels(data.query_target, n_queries)
    if data.query_boxes is not None:
        assert data.query_boxes.dtype == np.float64 and data.query_boxes.shape == (n_queries, 4)
    assert isinstance(data.gnd, list) and len(data.gnd) == n_queries
    assert isinstance(data.positive_keys, tuple) and data.positive_keys
    for entry in data.gnd:
        for key in data.positive_keys + ("junk",):
            indices = entry[key]
            assert indices.dtype == np.int64 and indices.ndim == 1
            assert np.all((indices >= 0) & (indices < n_images))
    assert isinstance(data.queries_without_positives, np.ndarray)
    assert np.issubdtype(data.queries_without_positives.dtype, np.integer)
    assert isinstance(data.n_missing_images, int) and isinstance(data.n_missing_queries, int)


def test_load_revisited_reads_a_benchmark_of_your_own(tmp_path):
    import pickle

    from skretrieval.datasets import MissingDatasetFilesError

    with pytest.raises(MissingDatasetFilesError, match="gnd_mybench.pkl.*imlist, qimlist") as info:
        load_revisited(tmp_path, "mybench")
    assert "http" not in str(info.value)  # nothing to download for a benchmark of your own
    folder = tmp_path / "mybench"
    (folder / "jpg").mkdir(parents=True)
    for name in ("a", "b", "c"):
        Image.new("RGB", (8, 8)).save(folder / "jpg" / f"{name}.jpg")
    gnd = [{"bbx": [0, 0, 4, 4], "easy": [1], "hard": [], "junk": [2]}]
    content = {"imlist": ["a", "b", "c", "d"], "qimlist": ["a"], "gnd": gnd}
    (folder / "gnd_mybench.pkl").write_bytes(pickle.dumps(content))
    with pytest.raises(MissingDatasetFilesError, match=r"'d.jpg'\); put them there"):
        load_revisited(tmp_path, "mybench")
    content["imlist"] = ["a", "b", "c"]
    (folder / "gnd_mybench.pkl").write_bytes(pickle.dumps(content))
    data = load_revisited(tmp_path, "mybench")
    assert data.name == "mybench" and tuple(data.positive_keys) == ("easy", "hard")
    assert [Path(path).name for path in data.filenames] == ["a.jpg", "b.jpg", "c.jpg"]


@pytest.mark.parametrize("name", ["", "..", "a/b", "../roxford5k", 5])
def test_load_revisited_name_is_one_folder(tmp_path, name):
    with pytest.raises(ValueError, match="one folder name, not a path"):
        load_revisited(tmp_path, name)


def test_load_revisited_points_the_original_benchmarks_to_their_loader(tmp_path):
    with pytest.raises(ValueError, match=r"load_oxford_paris\(root, 'paris6k'\).*'rparis6k'"):
        load_revisited(tmp_path, "paris6k")
