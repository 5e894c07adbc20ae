"""The database of a product-quantised retriever: decoded vectors, the quantizer's top-k search
and the asymmetric (ADC) distances, in the retriever's metric."""

from typing import NamedTuple

import numpy as np

from skretrieval._utils.linalg import (
    l2_normalize,
    squared_euclidean_distances,
    squared_row_norms,
)
from skretrieval.neighbors._expansion import expanded_search
from skretrieval.neighbors._topk import drop_self


class Reconstructions(NamedTuple):
    """Database state of a product-quantised retriever: the decoded database vectors."""

    vectors: np.ndarray  # (n_database, d) float32, ``quantizer_.inverse_transform(codes_)``
    squared_norms: np.ndarray  # (n_database,) float32


def reconstruction_state(quantizer):
    """Decode the quantizer's whole database once (float32), with its squared norms."""
    vectors = as_float32(quantizer.inverse_transform(quantizer.codes_))
    return Reconstructions(vectors, squared_row_norms(vectors))


def as_float32(X):
    """``X`` as a C-contiguous float32 array, the layout the quantizer searches; no copy if it
    is one already."""
    return np.ascontiguousarray(X, dtype=np.float32)


def prepare_quantized_queries(X, metric):
    """Queries as the quantizer compares them: float32, unit rows for the cosine metric."""
    # l2_normalize rather than sklearn's normalize: it does not overflow for huge float32 rows.
    return as_float32(l2_normalize(np.asarray(X)) if metric == "cosine" else X)


def squared_to_metric(squared_distances, metric):
    """Convert squared Euclidean (ADC) distances to the retriever's metric, in place.

    For unit vectors ``1 - <q, x> = |q - x|^2 / 2``, so the cosine distance is half the
    squared distance; the Euclidean distance is its square root. Rounding can make a squared
    distance slightly negative: it is clipped at 0.
    """
    np.maximum(squared_distances, 0, out=squared_distances)
    if metric == "cosine":
        squared_distances *= 0.5
        return squared_distances
    return np.sqrt(squared_distances, out=squared_distances)


def reconstruction_distances(queries, reconstructions, metric):
    """Asymmetric (ADC) distances of float32 queries to every decoded database vector.

    ``|q - x_hat|^2 = |q|^2 + |x_hat|^2 - 2 <q, x_hat>`` with one matrix product, converted
    to ``metric``; these are the distances a product quantizer's table-based search computes.
    """
    squared_distances = squared_euclidean_distances(
        queries, reconstructions.vectors, D_squared_norms=reconstructions.squared_norms
    )
    return squared_to_metric(squared_distances, metric)


def quantized_kneighbors(quantizer, queries, n_neighbors, metric, *, exclude_self=False):
    """``quantizer.kneighbors`` in the retriever's metric; without self-matches if asked.

    With ``exclude_self`` the queries are the database items themselves: one more neighbour is
    searched and each item is dropped from its own list (:func:`drop_self`).
    """
    k = n_neighbors + exclude_self
    squared_distances, indices = quantizer.kneighbors(queries, n_neighbors=k)
    distances = squared_to_metric(np.asarray(squared_distances, dtype=np.float32), metric)
    if exclude_self:
        distances, indices = drop_self(distances, indices, n_neighbors)
    return distances, indices


def decode_neighbours(quantizer, indices):
    """Decode only the database items in ``indices``: ``(vectors, positions)``, float32.

    ``positions`` has the shape of ``indices`` and gives the row of each item in ``vectors``
    (the items renumbered ``0..n_unique-1``), as query expansion takes them.
    """
    unique, positions = np.unique(indices, return_inverse=True)
    vectors = as_float32(quantizer.inverse_transform(quantizer.codes_[unique]))
    return vectors, positions.reshape(indices.shape)


def quantized_search(retriever, queries, n_neighbors):
    """Top ``n_neighbors`` from the quantizer's table-based search, with query expansion.

    The flow of exact search (``expanded_search``), with the quantizer's top-k search in
    place of exact distances: search, expand with the decoded neighbours, search again.
    ``queries`` are validated, or None to query the decoded database leave-one-out.
    """
    quantizer = retriever.quantizer_
    exclude_self = queries is None
    if exclude_self:
        queries = quantizer.inverse_transform(quantizer.codes_)

    def search(queries, k):
        return quantized_kneighbors(
            quantizer, as_float32(queries), k, retriever.metric, exclude_self=exclude_self
        )

    expansion = retriever.query_expansion
    return expanded_search(
        prepare_quantized_queries(queries, retriever.metric),
        lambda queries: search(queries, n_neighbors),
        first_search=search,
        # Decode only the neighbours, renumbered 0..n_unique-1 for the weighted sum.
        neighbour_vectors=lambda indices: decode_neighbours(quantizer, indices),
        n_expansion=None if expansion is None else retriever.qe_neighbors,
        alpha=retriever.qe_alpha if expansion == "alpha" else None,
    )
