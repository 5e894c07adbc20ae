"""Evaluation of a pipeline on a dataset bunch: describe, rank, score."""

import pickle
from pathlib import Path

import numpy as np
import pytest
from payloads import CreatesFolder
from PIL import Image
from sklearn.base import BaseEstimator, TransformerMixin

from skretrieval import evaluation
from skretrieval.datasets import ground_truth_masks
from skretrieval.datasets._base import dataset_bunch
from skretrieval.evaluation import describe_benchmark, evaluate_benchmark, score_benchmark
from skretrieval.metrics import mean_average_precision, precision_at_k, ukbench_score
from skretrieval.neighbors import ImageRetriever


def _dataset(name="toy", **fields):
    """A dataset bunch of the loaders' schema, fields not given being None."""
    return dataset_bunch(name, descr="", **fields)


def _grouped_descriptors(n_groups=5, per_group=4, seed=0):
    rng = np.random.default_rng(seed)
    target = np.repeat(np.arange(n_groups), per_group)
    descriptors = rng.normal(size=(len(target), 6)) + 2 * rng.normal(size=(n_groups, 6))[target]
    return target, descriptors


def test_blocked_scoring_matches_scoring_all_queries_at_once(monkeypatch):
    target, descriptors = _grouped_descriptors()
    gnd = [
        {"ok": np.flatnonzero((target == t) & (np.arange(20) != i)), "junk": np.array([i])}
        for i, t in enumerate(target)
    ]
    files = [f"{i}.jpg" for i in range(20)]
    data = _dataset(
        name="ukbench",
        filenames=files,
        query_filenames=files,
        gnd=gnd,
        positive_keys=("ok",),
        target=target,
        query_target=target,
    )
    (whole,) = score_benchmark(data, descriptors, descriptors)
    monkeypatch.setattr(evaluation, "_BLOCK_ELEMENTS", 3 * 20)  # blocks of 3 queries
    (blocked,) = score_benchmark(data, descriptors, descriptors)
    assert blocked.keys() == whole.keys()
    for key in ("map", "mp@1", "mp@5", "mp@10", "ns_score"):
        assert blocked[key] == pytest.approx(whole[key])
    # Against the metrics on the full score matrix.
    retriever = ImageRetriever(metric="cosine").fit(descriptors)
    distances, indices = retriever.kneighbors(descriptors, n_neighbors=20)
    scores = np.empty((20, 20))
    np.put_along_axis(scores, indices, -distances, axis=1)
    relevant, junk = ground_truth_masks(gnd, 20)
    expected = mean_average_precision(relevant, scores, junk=junk, interpolation="trapezoid")
    assert whole["map"] == pytest.approx(expected)
    assert whole["mp@5"] == pytest.approx(precision_at_k(relevant, scores, 5, junk=junk))
    same_group = target[:, None] == target[None, :]
    assert whole["ns_score"] == pytest.approx(ukbench_score(same_group, scores))
    assert whole["n_queries"] == 20


def test_leave_one_out_by_labels_equals_its_ground_truth(monkeypatch):
    """Without queries, each item queries the others: as the ground truth "same label, not
    itself" scores it, also when scored in blocks."""
    target, descriptors = _grouped_descriptors(seed=1)
    by_labels = _dataset(target=target)
    gnd = [
        {"ok": np.flatnonzero((target == t) & (np.arange(20) != i)), "junk": np.array([i])}
        for i, t in enumerate(target)
    ]
    files = [f"{i}.jpg" for i in range(20)]
    by_gnd = _dataset(filenames=files, query_filenames=files, gnd=gnd, positive_keys=("ok",))
    (expected,) = score_benchmark(by_gnd, descriptors, descriptors)
    (row,) = score_benchmark(by_labels, descriptors)
    monkeypatch.setattr(evaluation, "_BLOCK_ELEMENTS", 7 * 20)
    (blocked,) = score_benchmark(by_labels, descriptors)
    for key in ("n_queries", "map", "mp@1", "mp@5", "mp@10"):
        assert row[key] == pytest.approx(expected[key])
        assert blocked[key] == pytest.approx(expected[key])
    assert "ns_score" not in row


def test_revisited_rows_and_bad_datasets():
    target, descriptors = _grouped_descriptors(n_groups=3, per_group=3)
    gnd = [{"easy": [1], "hard": [2], "junk": [0]}, {"easy": [4], "hard": [], "junk": []}]
    files = [f"{i}.jpg" for i in range(9)]
    data = _dataset(
        filenames=files, query_filenames=["a.jpg", "b.jpg"], gnd=gnd, positive_keys=("easy", "hard")
    )
    rows = score_benchmark(data, descriptors, descriptors[[0, 3]], ks=(1, 5))
    assert [row["protocol"] for row in rows] == ["easy", "medium", "hard"]
    assert [row["n_queries"] for row in rows] == [2, 2, 1]
    assert set(rows[0]) == {"protocol", "n_queries", "map", "mp@1", "mp@5"}
    with pytest.raises(ValueError, match="needs the labels"):
        score_benchmark(_dataset(), descriptors)
    with pytest.raises(ValueError, match="no query of toy has a positive"):
        score_benchmark(_dataset(target=np.arange(9)), descriptors)


class _Recorder(TransformerMixin, BaseEstimator):
    """Describes an image by its mean colour; records what it was given."""

    def __init__(self, scale=1.0):
        self.scale = scale

    def fit(self, X, y=None):
        self.fitted_on_ = len(X)
        self.calls_ = getattr(self, "calls_", [])
        return self

    def transform(self, X):
        self.calls_.append(len(X))
        pixels = [np.asarray(Image.open(x) if isinstance(x, str) else x, float) for x in X]
        return self.scale * np.stack([image.mean(axis=(0, 1)) for image in pixels])


@pytest.fixture
def photo_files(tmp_path):
    rng = np.random.default_rng(0)
    files = []
    for i in range(6):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(path)
        files.append(str(path))
    return files


def test_describe_benchmark_roles(photo_files):
    target = np.array([0, 0, 1, 1, 2, 2])
    # Leave-one-out: the queries are the database items, described once.
    recorder = _Recorder()
    database, queries = describe_benchmark(recorder, _dataset(filenames=photo_files, target=target))
    assert queries is None and database.shape == (6, 3) and recorder.calls_ == [6]
    # UKBench: explicit queries that are the database images: described once, shared.
    recorder = _Recorder()
    ukbench = _dataset(filenames=photo_files, query_filenames=list(photo_files))
    database, queries = describe_benchmark(recorder, ukbench)
    assert queries is database and recorder.calls_ == [6]
    # Queries with boxes are cropped before they are described.
    boxes = np.array([[0, 0, 10, 10], [5, 5, 30, 20]], dtype=float)
    cropped = _dataset(filenames=photo_files, query_filenames=photo_files[:2], query_boxes=boxes)
    database, queries = describe_benchmark(_Recorder(), cropped)
    first = np.asarray(Image.open(photo_files[0]).convert("RGB"), float)[:10, :10].mean((0, 1))
    assert queries.shape == (2, 3) and np.allclose(queries[0], first)
    # Pixels held in memory are described as they are.
    pixels = [np.full((4, 4, 3), i, dtype=np.uint8) for i in range(3)]
    database, _ = describe_benchmark(_Recorder(), _dataset(images=pixels, target=np.arange(3)))
    assert database[:, 0].tolist() == [0.0, 1.0, 2.0]


def test_describe_benchmark_cache(photo_files, tmp_path):
    cache = tmp_path / "cache"
    data = _dataset(filenames=photo_files, query_filenames=photo_files[:2])
    expected = describe_benchmark(_Recorder(), data)
    first = _Recorder()
    described = describe_benchmark(first, data, cache=cache, cache_tag="mean")
    assert first.calls_ == [6, 2]
    files = sorted(path.name for path in cache.iterdir())
    assert len(files) == 2 and files[0].startswith("toy-database-mean-")
    assert files[1].startswith("toy-queries-mean-")
    # Read back without fitting or running the estimator.
    second = _Recorder()
    cached = describe_benchmark(second, data, cache=cache, cache_tag="mean")
    assert not hasattr(second, "calls_")
    for ours, reference in zip(cached, expected, strict=True):
        np.testing.assert_allclose(ours, reference)
    for ours, reference in zip(described, expected, strict=True):
        np.testing.assert_allclose(ours, reference)
    # Other parameters are another entry.
    describe_benchmark(_Recorder(scale=2.0), data, cache=cache, cache_tag="mean")
    assert len(list(cache.iterdir())) == 4


def test_evaluate_benchmark_on_copies_of_real_photos():
    from skretrieval.datasets import make_copydays
    from skretrieval.extraction import CNNFeatureExtractor
    from skretrieval.pooling import GeMPooling

    data = make_copydays(2, sources=["coffee", "chelsea", "astronaut"], max_size=64)
    extractor = CNNFeatureExtractor(max_size=64, pooling=GeMPooling(), verbose=False)
    (row,) = evaluate_benchmark(extractor, data, ks=(1,))
    assert row["protocol"] == "all" and row["n_queries"] == 9
    assert row["mp@1"] >= 2 / 3 and 0.5 <= row["map"] <= 1


def test_evaluate_benchmark_passes_retriever_params():
    # The one-call evaluation ranks with query expansion exactly as the two-step one does.
    from sklearn.preprocessing import FunctionTransformer

    y, X = _grouped_descriptors()
    data = _dataset(images=list(X), target=y)
    params = {"query_expansion": "average", "qe_neighbors": 2}
    identity = FunctionTransformer(np.asarray)
    (row,) = evaluate_benchmark(identity, data, retriever_params=params)
    (expected,) = score_benchmark(data, X, retriever_params=params)
    (plain,) = score_benchmark(data, X)
    assert row["map"] == pytest.approx(expected["map"], rel=1e-12)
    assert row["map"] != plain["map"]


class _Weighted(_Recorder):
    """A recorder whose descriptors are scaled by a number read from a "weights" file."""

    def __init__(self, weights=None):
        self.weights = weights

    def transform(self, X):
        self.scale = float(Path(self.weights).read_text())
        return super().transform(X)


def test_describe_benchmark_cache_keys_and_damaged_entries(photo_files, tmp_path):
    cache = tmp_path / "cache"
    data = _dataset(filenames=photo_files)
    weights = tmp_path / "weights.txt"
    weights.write_text("1.0")
    first, _ = describe_benchmark(_Weighted(str(weights)), data, cache=cache)
    entries = set(cache.iterdir())
    # Same parameters, other weights in the same file: another entry, not stale descriptors.
    weights.write_text("2.0")
    recorder = _Weighted(str(weights))
    second, _ = describe_benchmark(recorder, data, cache=cache)
    assert recorder.calls_ == [6] and len(list(cache.iterdir())) == 2
    (entry,) = set(cache.iterdir()) - entries
    np.testing.assert_allclose(second, 2 * first)
    # What the parameters do not tell (e.g. the device's precision) goes in cache_key.
    recorder = _Weighted(str(weights))
    describe_benchmark(recorder, data, cache=cache, cache_key={"precision": "float16"})
    assert recorder.calls_ == [6] and len(list(cache.iterdir())) == 3
    recorder = _Weighted(str(weights))
    describe_benchmark(recorder, data, cache=cache, cache_key={"precision": "float16"})
    assert not hasattr(recorder, "calls_")

    # A damaged entry is reported, described again and rewritten; never unpickled.
    marker = tmp_path / "created_by_the_cache_file"
    planted = pickle.dumps(CreatesFolder(marker))  # unpickling it would create a folder
    for damage in (entry.read_bytes()[:60], planted, np.arange(3.0)):
        if isinstance(damage, bytes):
            entry.write_bytes(damage)
        else:
            np.save(entry, damage)  # readable, but the wrong shape
        recorder = _Weighted(str(weights))
        with pytest.warns(UserWarning, match="cached descriptors .* described again"):
            again, _ = describe_benchmark(recorder, data, cache=cache)
        assert recorder.calls_ == [6]
        np.testing.assert_allclose(again, second)
        np.testing.assert_allclose(np.load(entry), second)
    assert not marker.exists()


class _Precise(_Recorder):
    """A recorder that, like CNNFeatureExtractor, states settings its parameters do not tell."""

    precision = "float32"

    def descriptor_settings(self):
        return {"precision": self.precision}


def test_describe_benchmark_keys_the_cache_by_the_descriptor_settings(photo_files, tmp_path):
    from sklearn.pipeline import make_pipeline

    cache = tmp_path / "cache"
    data = _dataset(filenames=photo_files)
    for precision, described in [("float32", True), ("float16 autocast", True), ("float32", False)]:
        recorder = _Precise()
        recorder.precision = precision
        # Also when the extractor is a step of a pipeline.
        describe_benchmark(make_pipeline(recorder), data, cache=cache)
        assert hasattr(recorder, "calls_") == described
    assert len(list(cache.iterdir())) == 2
