"""No process-wide side effects: thread counts changed for speed are put back on every exit.

torch: ``torch.set_num_threads`` sets the calling thread's OpenMP count and the default that
threads started later inherit (in this build: the check below shows it). The extractor's
workers take a share of the cores each; afterwards the caller's count, the default of new
threads and the inter-op count must be as before, whether ``transform`` succeeded, failed on a
corrupt image in its third batch, or was interrupted. faiss: its OpenMP count is capped during
``fit``/``transform``/``kneighbors`` and restored, also when they fail. BLAS: nothing in a full
pipeline changes the thread pools that threadpoolctl sees.
"""

import threading

import faiss
import joblib
import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.base import BaseEstimator
from threadpoolctl import threadpool_info

from skretrieval.extraction import CNNFeatureExtractor, ImageReadError
from skretrieval.neighbors import ImageRetriever
from skretrieval.pooling import GeMPooling
from skretrieval.quantization import ProductQuantizer
from skretrieval.whitening import PCAWhitening


def in_new_thread(function):
    results = []
    thread = threading.Thread(target=lambda: results.append(function()))
    thread.start()
    thread.join()
    return results[0]


def torch_settings():
    """(caller's intra-op count, the count a new thread starts with, inter-op count)."""
    return (
        torch.get_num_threads(),
        in_new_thread(torch.get_num_threads),
        torch.get_num_interop_threads(),
    )


def test_set_num_threads_is_per_thread_and_sets_the_default_of_new_threads():
    # Why the extractor must restore both: what a worker thread sets is inherited by threads
    # started afterwards; with OpenMP (this build) the calling thread keeps its own count.
    before = torch_settings()
    try:
        in_new_thread(lambda: torch.set_num_threads(before[0] + 1))
        assert in_new_thread(torch.get_num_threads) == before[0] + 1
        if "parallel backend: OpenMP" in torch.__config__.parallel_info():
            assert torch.get_num_threads() == before[0]
    finally:
        torch.set_num_threads(before[0])
        in_new_thread(lambda: torch.set_num_threads(before[1]))
    assert torch_settings() == before


@pytest.fixture(scope="module")
def extractor():
    # Two workers: each sets its own share of the cores (half of them) in its thread.
    return CNNFeatureExtractor(
        backbone="resnet18",
        weights=None,
        max_size=48,
        batch_size=1,
        n_workers=2,
        verbose=False,
        random_state=0,
    ).fit()


def photos(n):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for _ in range(n)]


@pytest.fixture
def corrupt_third(tmp_path):
    """Two good images and a truncated PNG: the third batch fails while decoding."""
    good = photos(2)
    path = tmp_path / "truncated.png"
    Image.fromarray(photos(1)[0]).save(path)
    path.write_bytes(path.read_bytes()[:200])
    return [*good, path]


def test_transform_leaves_torch_threads_as_they_were(extractor):
    before = torch_settings()
    extractor.transform(photos(5))
    assert torch_settings() == before


def test_failed_transform_leaves_torch_threads_as_they_were(extractor, corrupt_third):
    before = torch_settings()
    with pytest.raises(ImageReadError, match="X\\[2\\]"):
        extractor.transform(corrupt_third)
    assert torch_settings() == before


class _Interrupting(BaseEstimator):
    """A pooling step that stands for Ctrl-C on the second batch."""

    def fit(self, X, y=None):
        return self

    def fit_transform(self, X, y=None):
        return np.zeros((len(X), 1))

    def transform(self, X):
        raise KeyboardInterrupt


def test_interrupted_transform_leaves_torch_threads_as_they_were(extractor):
    before = torch_settings()
    interrupted = extractor.set_params(pooling=_Interrupting())
    try:
        with pytest.raises(KeyboardInterrupt):
            interrupted.transform(photos(4))
    finally:
        extractor.set_params(pooling=None)
    assert torch_settings() == before


def test_caller_count_and_default_are_restored_separately(extractor, corrupt_third):
    # A caller whose own count differs from the default of new threads keeps both.
    original = torch_settings()
    default = max(1, original[0] - 1) if original[0] > 1 else 2
    try:
        in_new_thread(lambda: torch.set_num_threads(default))
        before = torch_settings()
        assert before[1] == default
        extractor.transform(photos(3))
        assert torch_settings() == before
        with pytest.raises(ImageReadError):
            extractor.transform(corrupt_third)
        assert torch_settings() == before
    finally:
        in_new_thread(lambda: torch.set_num_threads(original[1]))
    assert torch_settings() == original


@pytest.fixture
def faiss_threads_above_cpus():
    """Ask faiss for more threads than the CPUs, so that the estimators cap (change) it."""
    previous = faiss.omp_get_max_threads()
    requested = joblib.cpu_count() + 3
    faiss.omp_set_num_threads(requested)
    yield requested
    faiss.omp_set_num_threads(previous)


@pytest.mark.parametrize("method", ["train", "sa_encode", "search", "sa_decode"])
@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_faiss_threads_are_restored_when_faiss_fails(
    method, error, faiss_threads_above_cpus, monkeypatch
):
    X = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    quantizer = ProductQuantizer(n_subquantizers=2, n_bits=4, random_state=0)
    if method != "train":
        quantizer.fit(X)
    seen = []

    def fail(self, *args, **kwargs):
        seen.append(faiss.omp_get_max_threads())
        raise error("faiss failed")

    monkeypatch.setattr(faiss.IndexPQ, method, fail)
    call = {
        "train": lambda: quantizer.fit(X),
        "sa_encode": lambda: quantizer.transform(X),
        "search": lambda: quantizer.kneighbors(X[:3], 2),
        "sa_decode": lambda: quantizer.inverse_transform(np.zeros((2, 1), np.uint8)),
    }[method]
    with pytest.raises(error, match="faiss failed"):
        call()
    # Capped while faiss ran, restored after it failed.
    assert seen == [joblib.cpu_count()]
    assert faiss.omp_get_max_threads() == faiss_threads_above_cpus


def test_a_whole_pipeline_leaves_thread_pools_alone(extractor):
    def pools():
        return sorted(
            (pool["internal_api"], pool["filepath"], pool["num_threads"])
            for pool in threadpool_info()
        )

    before = pools(), torch_settings(), faiss.omp_get_max_threads()
    X = GeMPooling().fit_transform(extractor.transform(photos(40)))
    X = PCAWhitening(n_components=8).fit_transform(X)
    quantizer = ProductQuantizer(n_subquantizers=2, n_bits=4, random_state=0)
    retriever = ImageRetriever(n_neighbors=3, quantizer=quantizer).fit(X, np.arange(40) % 4)
    retriever.kneighbors(X[:5])
    ImageRetriever(n_neighbors=3, n_jobs=2).fit(X).kneighbors()
    assert (pools(), torch_settings(), faiss.omp_get_max_threads()) == before
