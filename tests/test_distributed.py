"""skretrieval on a Dask cluster: transform of image files (store, resume, unreadable images,
a worker dying), the retriever on a dask array database, and joblib's dask backend."""

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")

from skretrieval.descriptors import GMMDescriptor, SparseCovariance  # noqa: E402
from skretrieval.distributed import transform  # noqa: E402
from skretrieval.extraction import CNNFeatureExtractor, ImageNotFoundError, ImageReadError  # noqa: E402
from skretrieval.metrics import map_scorer  # noqa: E402
from skretrieval.neighbors import ImageRetriever  # noqa: E402
from skretrieval.pooling import GeMPooling  # noqa: E402
from skretrieval.quantization import ProductQuantizer  # noqa: E402
from skretrieval.whitening import PCAWhitening  # noqa: E402


@pytest.fixture(scope="module")
def client():
    """Two single-threaded workers in this process: fast to start, the graph as on a cluster."""
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster, set_as_default=False) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def image_paths(tmp_path_factory):
    """30 small real photos (crops and rescales of scikit-image's), 32 to 48 pixels."""
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    paths = []
    for i in range(30):
        photo = photos[i % len(photos)]
        height, width = photo.shape[:2]
        top, left = (i * 37) % (height // 2), (i * 53) % (width // 2)
        crop = Image.fromarray(photo[top : top + height // 2, left : left + width // 2])
        size = (32 + (i * 7) % 17, 32 + (i * 5) % 17)
        path = folder / f"photo_{i:02d}.png"
        crop.resize(size).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def pipeline(image_paths):
    extractor = CNNFeatureExtractor(
        backbone="resnet18", weights=None, max_size=48, pooling=GeMPooling(), verbose=False,
        random_state=0,
    )
    return make_pipeline(extractor, PCAWhitening(n_components=8)).fit(image_paths)


class ImageStats(TransformerMixin, BaseEstimator):
    """Light, exact descriptors of image files (mean colour and size), logging each call.

    Each ``transform`` writes one file named after its first image to ``log`` (so tests count
    the chunks computed), fails when a file ``fail-<first image name>`` exists there, and kills
    its own process when ``kill-<first image name>`` exists (removing it first: once).
    """

    def __init__(self, log=None):
        self.log = log

    def fit(self, X=None, y=None):
        self.fitted_ = True
        return self

    def transform(self, X):
        first = Path(X[0]).name
        if self.log is not None:
            log = Path(self.log)
            (log / f"call-{first}-{uuid.uuid4().hex}").touch()
            if (log / f"fail-{first}").exists():
                raise RuntimeError(f"planted failure on {first}")
            kill = log / f"kill-{first}"
            if kill.exists():
                kill.unlink()
                os.kill(os.getpid(), signal.SIGKILL)
        rows = []
        for path in X:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
            rows.append([*pixels.mean(axis=(0, 1)), *pixels.shape[:2]])
        return np.asarray(rows)

    def __setstate__(self, state):
        # Counts the copies unpickled (one per worker expected), in the log folder.
        super().__setstate__(state)
        if self.log is not None and Path(self.log).is_dir():
            (Path(self.log) / f"unpickled-{uuid.uuid4().hex}").touch()


def _calls(log):
    return sorted(path.name.split("-")[1] for path in Path(log).glob("call-*"))


# ------------------------------------------------------------------------------------------
# transform
# ------------------------------------------------------------------------------------------


def test_transform_equals_the_in_process_transform(client, image_paths, pipeline):
    expected = pipeline.transform(image_paths)
    result = transform(pipeline, image_paths, client=client, chunk_size=8)
    assert isinstance(result.descriptors, da.Array)
    assert result.descriptors.chunks == ((8, 8, 8, 6), (8,))
    computed = client.compute(result.descriptors).result()
    np.testing.assert_allclose(computed, expected, rtol=1e-4, atol=1e-5)
    assert result.valid.all() and result.skipped == [] and result.computed_chunks == [0, 1, 2, 3]
    as_numpy = transform(pipeline, image_paths, client=client, chunk_size=8, output="numpy")
    assert isinstance(as_numpy.descriptors, np.ndarray)
    np.testing.assert_allclose(as_numpy.descriptors, expected, rtol=1e-4, atol=1e-5)


def test_transform_without_a_client_uses_dask_local_scheduler(image_paths):
    estimator = ImageStats().fit()
    with dask.config.set(scheduler="threads"):
        result = transform(estimator, image_paths, chunk_size=7, output="numpy")
    np.testing.assert_array_equal(result.descriptors, estimator.transform(image_paths))


def test_store_resumes_only_the_missing_chunks(client, image_paths, tmp_path):
    log = tmp_path / "log"
    log.mkdir()
    estimator = ImageStats(log=str(log)).fit()
    store = tmp_path / "descriptors.zarr"
    first = transform(estimator, image_paths, client=client, chunk_size=8, store=store)
    assert first.computed_chunks == [0, 1, 2, 3] and len(_calls(log)) == 4
    expected = ImageStats().fit().transform(image_paths)
    np.testing.assert_array_equal(first.descriptors.compute(), expected)
    # Nothing to do: every chunk has its marker.
    again = transform(estimator, image_paths, client=client, chunk_size=8, store=store)
    assert again.computed_chunks == [] and len(_calls(log)) == 4
    # Chunks whose marker is lost (e.g. killed between data and marker) are computed again.
    zarr.open_group(str(store), mode="r+")["done"][[1, 3]] = False
    for path in log.iterdir():
        path.unlink()
    resumed = transform(estimator, image_paths, client=client, chunk_size=8, store=store)
    assert resumed.computed_chunks == [1, 3]
    assert _calls(log) == [Path(image_paths[8]).name, Path(image_paths[24]).name]
    np.testing.assert_array_equal(resumed.descriptors.compute(), expected)
    np.testing.assert_array_equal(da.from_zarr(str(store), component="descriptors"), expected)


def test_store_resumes_a_run_stopped_midway(image_paths, tmp_path):
    log = tmp_path / "log"
    log.mkdir()
    estimator = ImageStats(log=str(log)).fit()
    store = str(tmp_path / "descriptors.zarr")
    (log / f"fail-{Path(image_paths[16]).name}").touch()
    # One chunk at a time: the job stops at chunk 2, with the chunks run before it written.
    with dask.config.set(scheduler="synchronous"), pytest.raises(RuntimeError, match="planted"):
        transform(estimator, image_paths, chunk_size=8, store=store)
    done = zarr.open_group(store, mode="r")["done"][:]
    assert done[0] and not done[2]
    missing = np.flatnonzero(~done).tolist()
    for path in log.iterdir():
        path.unlink()
    with dask.config.set(scheduler="synchronous"):
        resumed = transform(estimator, image_paths, chunk_size=8, store=store, output="numpy")
    assert resumed.computed_chunks == missing
    assert _calls(log) == [Path(image_paths[8 * i]).name for i in missing]
    np.testing.assert_array_equal(resumed.descriptors, ImageStats().fit().transform(image_paths))


def test_store_refuses_other_inputs(image_paths, tmp_path):
    store = str(tmp_path / "descriptors.zarr")
    estimator = ImageStats().fit()
    with dask.config.set(scheduler="synchronous"):
        transform(estimator, image_paths, chunk_size=8, store=store)
        with pytest.raises(ValueError, match="other inputs: the list of images differ"):
            transform(estimator, image_paths[::-1], chunk_size=8, store=store)
        with pytest.raises(ValueError, match=r"the number of images \(30 in the store, 29 now\)"):
            transform(estimator, image_paths[:-1], chunk_size=8, store=store)
        with pytest.raises(ValueError, match=r"chunk_size \(8 in the store, 4 now\)"):
            transform(estimator, image_paths, chunk_size=4, store=store)
        other = ImageStats(log=str(tmp_path)).fit()
        with pytest.raises(ValueError, match="the estimator .* differ"):
            transform(other, image_paths, chunk_size=8, store=store)
        (tmp_path / "not_a_store").mkdir()
        (tmp_path / "not_a_store" / "notes.txt").write_text("mine")
        with pytest.raises(ValueError, match="non-empty folder that is not a zarr store"):
            transform(estimator, image_paths, store=str(tmp_path / "not_a_store"))


def test_store_fingerprint_sees_fitted_weights(pipeline, image_paths, tmp_path):
    """Same parameters, other weights (another seed): refused."""
    store = str(tmp_path / "descriptors.zarr")
    subset = image_paths[:4]
    with dask.config.set(scheduler="synchronous"):
        transform(pipeline, subset, chunk_size=2, store=store)
        reseeded = make_pipeline(
            CNNFeatureExtractor(
                backbone="resnet18", weights=None, max_size=48, pooling=GeMPooling(),
                verbose=False, random_state=1,
            ),
            PCAWhitening(n_components=8),
        ).fit(image_paths)
        reseeded[0].set_params(random_state=0)  # parameters equal, weights not
        with pytest.raises(ValueError, match="the estimator"):
            transform(reseeded, subset, chunk_size=2, store=store)


@pytest.fixture
def bad_images(image_paths, tmp_path):
    """The photos with a missing file, a corrupt JPEG and a text file; chunk 2 of size 4 is all
    unreadable."""
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    text = tmp_path / "notes.png"
    text.write_text("no pixels here")
    missing = str(tmp_path / "missing.jpg")
    images = [*image_paths[:8], missing, str(corrupt), str(text), missing, *image_paths[8:13]]
    return images, [8, 9, 10, 11]


def test_skip_policy_marks_and_lists_unreadable_images(client, pipeline, bad_images, tmp_path):
    images, bad = bad_images
    good = [i for i in range(len(images)) if i not in bad]
    expected = pipeline.transform([images[i] for i in good])
    for store in (None, str(tmp_path / "descriptors.zarr")):
        result = transform(
            pipeline, images, client=client, chunk_size=4, on_error="skip", store=store
        )
        descriptors = client.compute(result.descriptors).result()
        assert np.flatnonzero(~result.valid).tolist() == bad
        assert [(index, path) for index, path, _ in result.skipped] == [(i, images[i]) for i in bad]
        assert result.skipped[0][2] == "file not found"
        assert "PIL" in result.skipped[2][2] or "image" in result.skipped[2][2]
        assert np.isnan(descriptors[bad]).all()
        np.testing.assert_allclose(descriptors[result.valid], expected, rtol=1e-4, atol=1e-5)
    # Resumed from the store: nothing computed, the same images listed.
    again = transform(pipeline, images, client=client, chunk_size=4, on_error="skip", store=store)
    assert again.computed_chunks == [] and again.skipped == result.skipped


def test_raise_policy_names_the_file(client, pipeline, bad_images):
    images, _ = bad_images
    with pytest.raises(ImageNotFoundError, match=r"images\[8\] .*missing\.jpg") as raised:
        transform(pipeline, images[:9], client=client, chunk_size=4)
    assert raised.value.index == 8 and raised.value.path == images[8]
    with pytest.raises(ImageReadError, match=r"images\[8\] .*corrupt\.jpg"):
        transform(pipeline, [*images[:8], images[9]], client=client, chunk_size=4)


def test_every_image_unreadable_is_an_error(client, pipeline, bad_images):
    images, bad = bad_images
    with pytest.raises(ValueError, match="None of the 4 images could be read"):
        transform(pipeline, [images[i] for i in bad], client=client, on_error="skip")


def test_bad_arguments(client, image_paths):
    with pytest.raises(TypeError, match=r"images\[1\] is a ndarray; transform takes image file"):
        transform(ImageStats().fit(), [image_paths[0], np.zeros((8, 8, 3))], client=client)
    with pytest.raises(ValueError, match="on_error"):
        transform(ImageStats().fit(), image_paths, client=client, on_error="ignore")
    with pytest.raises(Exception, match="not fitted"):
        transform(ImageStats(), image_paths, client=client)


def test_extractor_is_placed_on_the_worker_device(client, image_paths):
    """An extractor whose fitted device is not this machine's "auto" device is re-placed."""
    import torch

    extractor = CNNFeatureExtractor(
        backbone="resnet18", weights=None, max_size=48, pooling=GeMPooling(), verbose=False,
        random_state=0,
    ).fit()
    expected = extractor.transform(image_paths[:6])
    extractor.device_ = torch.device("meta")  # as if fitted where "auto" meant another device
    result = transform(extractor, image_paths[:6], client=client, chunk_size=3, output="numpy")
    np.testing.assert_allclose(result.descriptors, expected, rtol=1e-4, atol=1e-5)
    assert extractor.device_ == torch.device("meta")  # the caller's estimator is untouched


def test_a_dying_worker_loses_no_image(image_paths, tmp_path):
    """A worker process killed mid-job: its chunks run again elsewhere, same result."""
    import cloudpickle

    log = tmp_path / "log"
    log.mkdir()
    estimator = ImageStats(log=str(log)).fit()
    (log / f"kill-{Path(image_paths[12]).name}").touch()
    # The workers cannot import this test module: send ImageStats by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        with (
            distributed.LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            distributed.Client(cluster, set_as_default=False) as client,
        ):
            result = transform(estimator, image_paths, client=client, chunk_size=3)
            descriptors = client.compute(result.descriptors).result()
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert not (log / f"kill-{Path(image_paths[12]).name}").exists()  # the worker did die
    assert _calls(log).count(Path(image_paths[12]).name) == 2  # its chunk ran twice
    np.testing.assert_array_equal(descriptors, estimator.transform(image_paths))
    assert result.valid.all() and result.computed_chunks == list(range(10))
    # The estimator travelled once per worker (and maybe to the restarted one), not once per
    # chunk (10 chunks).
    assert 2 <= len(list(log.glob("unpickled-*"))) <= 3


def test_without_dask_the_error_names_the_extra(monkeypatch, image_paths, tmp_path):
    estimator = ImageStats().fit()
    monkeypatch.setitem(sys.modules, "zarr", None)
    with pytest.raises(ImportError, match=r'store= needs zarr: pip install "scikit-retrieval\['):
        transform(estimator, image_paths, store=str(tmp_path / "store.zarr"))
    monkeypatch.setitem(sys.modules, "dask", None)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[distributed\]"'):
        transform(estimator, image_paths)


def test_importing_the_package_needs_no_dask():
    code = (
        "import sys\n"
        "for name in ('dask', 'dask.array', 'distributed', 'zarr'):\n"
        "    sys.modules[name] = None\n"
        "import numpy as np\n"
        "import skretrieval.distributed\n"
        "from skretrieval.neighbors import ImageRetriever\n"
        "print(ImageRetriever(n_neighbors=1).fit(np.eye(3)).kneighbors([[1.0, 0, 0]])[1])\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert output.strip() == "[[0]]"


# ------------------------------------------------------------------------------------------
# ImageRetriever on a dask array database
# ------------------------------------------------------------------------------------------

# Blocks of unequal sizes, two of them smaller than the 10 neighbours asked for.
CHUNKS = (7, 40, 3, 50, 20)


@pytest.fixture(scope="module")
def vectors():
    rng = np.random.default_rng(0)
    return rng.normal(size=(120, 12)), rng.normal(size=(25, 12))


def _dask(X, chunks=CHUNKS):
    return da.from_array(X, chunks=(chunks, X.shape[1]))


def _assert_same_search(expected, result, exact=False):
    np.testing.assert_array_equal(result[1], expected[1])
    if exact:
        np.testing.assert_array_equal(result[0], expected[0])
    else:
        np.testing.assert_allclose(result[0], expected[0], rtol=1e-12, atol=1e-12)
    assert result[0].dtype == expected[0].dtype


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_dask_database_search_equals_in_memory(client, vectors, metric):
    database, queries = vectors
    labels = np.arange(len(database)) % 5
    in_memory = ImageRetriever(n_neighbors=10, metric=metric).fit(database, labels)
    with client.as_current():
        on_cluster = ImageRetriever(n_neighbors=10, metric=metric).fit(_dask(database), labels)
        _assert_same_search(in_memory.kneighbors(queries), on_cluster.kneighbors(queries))
        _assert_same_search(in_memory.kneighbors(), on_cluster.kneighbors())  # leave-one-out
        _assert_same_search(
            in_memory.kneighbors(queries, n_neighbors=120),
            on_cluster.kneighbors(queries, n_neighbors=120),
        )
        for X in (queries, None):
            expected = list(in_memory.distance_blocks(X))
            blocks = list(on_cluster.distance_blocks(X))
            np.testing.assert_allclose(
                np.vstack([block[2] for block in blocks]),
                np.vstack([block[2] for block in expected]),
                rtol=1e-12,
                atol=1e-12,
            )
        query_labels = np.arange(len(queries)) % 5
        assert on_cluster.score(queries, query_labels) == pytest.approx(
            in_memory.score(queries, query_labels), abs=1e-12
        )
    assert on_cluster.n_samples_fit_ == 120 and on_cluster.n_features_in_ == 12


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_dask_database_breaks_ties_by_index_as_in_memory(client, metric):
    """Many exact ties (few distinct vectors, exact arithmetic) across blocks."""
    rng = np.random.default_rng(1)
    # Entries -1, 0, 1 with four non-zero ones: norm 2, so cosine similarities are exact too.
    patterns = np.zeros((6, 8))
    for pattern in patterns:
        pattern[rng.choice(8, 4, replace=False)] = rng.choice([-1.0, 1.0], 4)
    database = patterns[rng.integers(0, 6, size=90)]
    queries = patterns[[0, 3, 5]]
    in_memory = ImageRetriever(n_neighbors=25, metric=metric).fit(database)
    with client.as_current():
        on_cluster = ImageRetriever(n_neighbors=25, metric=metric).fit(
            _dask(database, (11, 30, 4, 45))
        )
        _assert_same_search(in_memory.kneighbors(queries), on_cluster.kneighbors(queries), True)
        _assert_same_search(in_memory.kneighbors(), on_cluster.kneighbors(), True)
    indices = on_cluster.kneighbors(queries)[1]
    distances = on_cluster.kneighbors(queries)[0]
    tied = distances[:, 1:] == distances[:, :-1]
    assert tied.any() and (indices[:, 1:][tied] > indices[:, :-1][tied]).all()


def test_dask_database_with_query_expansion(client, vectors):
    database, queries = vectors
    params = dict(n_neighbors=10, query_expansion="alpha", qe_neighbors=3, qe_alpha=2.0)
    in_memory = ImageRetriever(**params).fit(database)
    with client.as_current():
        on_cluster = ImageRetriever(**params).fit(_dask(database))
        _assert_same_search(in_memory.kneighbors(queries), on_cluster.kneighbors(queries))
        with pytest.raises(ValueError, match="query_expansion='alpha' with X=None"):
            on_cluster.kneighbors()


def test_dask_database_float32(client, vectors):
    database, queries = (X.astype(np.float32) for X in vectors)
    in_memory = ImageRetriever(n_neighbors=5, metric="euclidean").fit(database)
    with client.as_current():
        on_cluster = ImageRetriever(n_neighbors=5, metric="euclidean").fit(_dask(database))
        distances, _ = on_cluster.kneighbors(queries)
    assert distances.dtype == np.float32
    # Sorted distances are robust to float32 near-ties swapping places.
    np.testing.assert_allclose(distances, in_memory.kneighbors(queries)[0], rtol=1e-5)


def test_dask_database_product_quantisation(client, single_faiss_thread):
    rng = np.random.default_rng(2)
    database = rng.normal(size=(300, 16)).astype(np.float32)
    queries = rng.normal(size=(6, 16)).astype(np.float32)
    quantizer = ProductQuantizer(n_subquantizers=4, n_bits=4, random_state=0)
    in_memory = ImageRetriever(n_neighbors=8, quantizer=quantizer).fit(database)
    with client.as_current():
        on_cluster = ImageRetriever(n_neighbors=8, quantizer=quantizer).fit(
            _dask(database, (100, 37, 163))
        )
        distances, indices = on_cluster.kneighbors(queries)
    # Trained on the whole (small) database, as in memory: the same codebooks and codes.
    np.testing.assert_array_equal(on_cluster.quantizer_.codebooks_, in_memory.quantizer_.codebooks_)
    # The returned distances are the ADC distances of those items (computed independently,
    # float64, from the in-memory codes), and they are the smallest ones.
    decoded = in_memory.quantizer_.inverse_transform(in_memory.quantizer_.codes_).astype(float)
    unit = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    adc = ((unit[:, None, :] - decoded[None]) ** 2).sum(-1) / 2
    np.testing.assert_allclose(distances, np.take_along_axis(adc, indices, 1), atol=1e-5)
    np.testing.assert_allclose(distances, np.sort(adc, axis=1)[:, :8], atol=1e-5)
    np.testing.assert_allclose(distances, in_memory.kneighbors(queries)[0], atol=1e-5)


def test_dask_database_clear_errors(client, vectors):
    database, _ = vectors
    with client.as_current():
        spd = da.from_array(np.stack([np.eye(3)] * 6), chunks=3)
        with pytest.raises(ValueError, match="metric='cosine' or 'euclidean'; got metric='aff"):
            ImageRetriever(metric="affine_invariant").fit(spd)
        with pytest.raises(ValueError, match="dba_neighbors=2 is not supported with a dask"):
            ImageRetriever(dba_neighbors=2).fit(_dask(database))
        with_nan = database.copy()
        with_nan[60] = np.nan
        with pytest.raises(ValueError, match=r"NaN or infinity \(row 60 .*X\[result\.valid\]"):
            ImageRetriever().fit(_dask(with_nan))
        with pytest.raises(ValueError, match="n_neighbors=121 is larger than the database"):
            ImageRetriever().fit(_dask(database)).kneighbors(database[:2], n_neighbors=121)


# ------------------------------------------------------------------------------------------
# scikit-learn's parallelism on the cluster
# ------------------------------------------------------------------------------------------


def test_joblib_dask_backend_gives_the_serial_results(client):
    import joblib

    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(4), 6)
    centres = rng.normal(size=(4, 10, 4, 4)).astype(np.float32)
    maps = [np.abs(centres[label] + 0.5 * rng.normal(size=(10, 4, 4))) for label in labels]
    local = [rng.normal(size=(30, 3)) @ rng.normal(size=(3, 3)) for _ in range(6)]
    grid = {"gempooling__p": [1.0, 3.0], "pcawhitening__n_components": [4, 6]}

    def search(n_jobs):
        pipeline = make_pipeline(GeMPooling(), PCAWhitening(), ImageRetriever())
        cv = StratifiedKFold(3, shuffle=True, random_state=0)
        return GridSearchCV(pipeline, grid, scoring=map_scorer, cv=cv, n_jobs=n_jobs)

    serial = search(None).fit(maps, labels)
    serial_covariances = SparseCovariance().fit_transform(local)
    serial_mixtures = GMMDescriptor(n_components=2, random_state=0).fit_transform(local)
    with (
        client.as_current(),
        joblib.parallel_backend("dask"),
        distributed.get_task_stream(client) as tasks,
    ):
        parallel = search(2).fit(maps, labels)
        covariances = SparseCovariance(n_jobs=2).fit_transform(local)
        mixtures = GMMDescriptor(n_components=2, random_state=0, n_jobs=2).fit_transform(local)
    assert len(tasks.data) >= 12 + 6 + 6  # the fits and the images ran on the cluster
    assert 0.5 < serial.best_score_ <= 1
    np.testing.assert_array_equal(
        parallel.cv_results_["mean_test_score"], serial.cv_results_["mean_test_score"]
    )
    assert parallel.best_params_ == serial.best_params_
    np.testing.assert_array_equal(covariances, serial_covariances)
    for name in ("weights", "means", "covariances"):
        np.testing.assert_array_equal(getattr(mixtures, name), getattr(serial_mixtures, name))
