"""Fixtures shared by several test modules."""

import pytest


@pytest.fixture(scope="module")
def single_faiss_thread():
    """Run faiss on one OpenMP thread for a module, then restore the previous setting.

    OpenMP threads spin while waiting; on a loaded CI machine two of them make the small k-means
    runs of these tests 10x slower. The estimators never use more threads than the caller
    allows.
    """
    import faiss

    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(previous)


@pytest.fixture(autouse=True)
def _metric_registry_restored(monkeypatch):
    """A kernel that a test registers does not outlive the test: the registry is process-wide."""
    from skretrieval.geometry import _registry

    snapshot = {name: dict(kernels) for name, kernels in _registry._KERNELS.items()}
    monkeypatch.setattr(_registry, "_KERNELS", snapshot)
