"""A metric given descriptors of a type it does not take is a clear error, raised at ``fit``.

The message names the metric, the descriptor type it got and the metrics of that type, as the
registry has them at the time (so a newly registered kernel shows up). The oracle for "the
metrics of that type" is the built-in catalogue of the package's documentation.
"""

import re

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from skretrieval.descriptors import GaussianMixtures
from skretrieval.geometry import (
    DistanceKernel,
    get_kernel,
    register_kernel,
    registered_metrics,
)
from skretrieval.neighbors import ImageRetriever

# The documented metrics of each descriptor type (skretrieval.geometry's docstring).
BUILT_IN = {
    "vectors": {"cosine", "euclidean"},
    "SPD matrices": {"affine_invariant", "jeffreys", "kl", "log_euclidean", "stein", "wasserstein"},
    "Gaussian mixtures": {"kl", "wasserstein"},
}


def descriptor_sets():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(6, 3))
    A = rng.normal(size=(6, 3, 5))
    spd = A @ A.transpose(0, 2, 1) / 5 + 0.1 * np.eye(3)
    mixtures = GaussianMixtures(
        np.full((6, 2), 0.5), rng.normal(size=(6, 2, 3)), rng.uniform(0.5, 2, (6, 2, 3)), "diag"
    )
    return {"vectors": vectors, "SPD matrices": spd, "Gaussian mixtures": mixtures}


SETS = descriptor_sets()
LAYOUTS = {
    "vectors": r"vectors of shape \(n, d\)",
    "SPD matrices": r"SPD matrices of shape \(n, d, d\)",
    "Gaussian mixtures": r"Gaussian mixtures in a GaussianMixtures set",
}
MISMATCHES = [
    (metric, kind)
    for metric in sorted(set().union(*BUILT_IN.values()))
    for kind in BUILT_IN
    if metric not in BUILT_IN[kind]
]
MATCHES = [(metric, kind) for kind in BUILT_IN for metric in sorted(BUILT_IN[kind])]


def listed_metrics(message):
    """The metric names quoted after 'the metrics for ... are' in an error message."""
    tail = message.split(" are ", 1)[1]
    return set(re.findall(r"'([^']+)'", tail))


@pytest.mark.parametrize("metric, kind", MISMATCHES)
def test_mismatch_is_a_clear_error_at_fit(metric, kind):
    X = SETS[kind]
    retriever = ImageRetriever(n_neighbors=2, metric=metric)
    with pytest.raises(ValueError) as caught:
        retriever.fit(X)
    message = str(caught.value)
    assert f"metric {metric!r} expects" in message
    assert re.search(f"read as {LAYOUTS[kind]}", message), message
    listed = listed_metrics(message)
    assert BUILT_IN[kind] <= listed <= set(registered_metrics())
    # The error comes before anything is fitted.
    with pytest.raises(NotFittedError):
        retriever.kneighbors(X)
    # get_kernel says the same.
    with pytest.raises(ValueError, match=re.escape(message)):
        get_kernel(metric, X)


@pytest.mark.parametrize("metric, kind", MATCHES)
def test_every_documented_combination_fits(metric, kind):
    X = SETS[kind]
    kernel = get_kernel(metric, X)
    assert kernel.descriptor == kind
    indices = ImageRetriever(n_neighbors=1, metric=metric).fit(X).kneighbors(X)[1]
    assert indices.shape == (6, 1)


def test_queries_of_another_type_are_named_at_query_time():
    retriever = ImageRetriever(n_neighbors=2).fit(SETS["vectors"])
    for kind in ("SPD matrices", "Gaussian mixtures"):
        with pytest.raises(ValueError, match=f"metric 'cosine' expects vectors; .*{kind}"):
            retriever.kneighbors(SETS[kind])


def test_input_of_no_known_type_lists_every_type():
    with pytest.raises(ValueError) as caught:
        get_kernel("affine_invariant", np.ones(4))
    message = str(caught.value)
    assert "none of the descriptor types" in message
    for layout in LAYOUTS.values():
        assert re.search(layout, message), message
    assert "X.reshape(1, -1)" in message
    # A ragged list of 2-D arrays is neither vectors nor SPD matrices.
    with pytest.raises(ValueError, match="none of the descriptor types"):
        ImageRetriever(metric="stein").fit([np.eye(2), np.eye(3)])


def test_unknown_metric_lists_every_registered_metric():
    with pytest.raises(ValueError) as caught:
        ImageRetriever(metric="cosin").fit(SETS["vectors"])
    message = str(caught.value)
    assert "Unknown metric 'cosin'" in message
    assert set(re.findall(r"'([^']+)'", message.split("are", 1)[1])) == set(registered_metrics())


def test_a_newly_registered_kernel_is_listed_for_its_type():
    from skretrieval.geometry import _registry

    kernel = DistanceKernel(
        name="_test_l1",
        descriptor="vectors",
        validate=lambda X, name="X": np.asarray(X, dtype=float),
        prepare=lambda X: np.asarray(X),
        pairwise=lambda Q, D: np.abs(Q[:, None, :] - D[None, :, :]).sum(-1),
        accepts=lambda X: np.ndim(X) == 2,
        layout="of shape (n, d)",
    )
    register_kernel(kernel)
    try:
        with pytest.raises(ValueError) as caught:
            ImageRetriever(metric="stein").fit(SETS["vectors"])
        assert "_test_l1" in listed_metrics(str(caught.value))
        with pytest.raises(ValueError, match="read as SPD matrices"):
            ImageRetriever(metric="_test_l1").fit(SETS["SPD matrices"])
    finally:
        del _registry._KERNELS["_test_l1"]
    with pytest.raises(ValueError) as caught:
        ImageRetriever(metric="stein").fit(SETS["vectors"])
    assert "_test_l1" not in str(caught.value)
