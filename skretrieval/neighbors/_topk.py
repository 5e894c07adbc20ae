"""Top-k selection: the k smallest distances of each row, from the whole row or one tile of
columns at a time; self-matches dropped, and the top-k blocks of a search stacked."""

import numpy as np


def smallest_k(distances, k):
    """Sorted distances and column indices of the ``k`` smallest entries of each row.

    On wide blocks a per-row threshold, the k-th smallest of an evenly spaced sample of the
    columns, bounds the answer from above: one vectorised comparison keeps the few entries below
    it and only those are sorted. That is several times faster than ``argpartition`` over every
    entry. When the threshold is loose (e.g. many ties) we fall back to ``argpartition``; both
    routes are exact, and equal distances come in column order (also across the k-th place).
    """
    n_rows, n_columns = distances.shape
    if k >= n_columns:
        return _sorted_rows(distances, np.broadcast_to(np.arange(n_columns), distances.shape))
    n_sampled = max(64 * k, n_columns // 16)
    if n_columns >= 4 * n_sampled:
        stride = n_columns // n_sampled
        threshold = np.partition(distances[:, ::stride], k - 1, axis=1)[:, k - 1 : k]
        # flatnonzero + divmod is several times faster than a 2-D nonzero.
        rows, columns = np.divmod(np.flatnonzero(distances <= threshold), n_columns)
        # Each row keeps at least its k sampled entries; expect about k * stride of them.
        if len(rows) <= 8 * k * stride * n_rows:
            values = distances[rows, columns]
            order = np.lexsort((columns, values, rows))
            rows, columns, values = rows[order], columns[order], values[order]
            rank_in_row = np.arange(len(rows)) - np.searchsorted(rows, rows)
            keep = rank_in_row < k
            return values[keep].reshape(n_rows, k), columns[keep].reshape(n_rows, k)
    # Candidates in column order, so that the stable sort puts equal distances by column.
    candidates = np.sort(np.argpartition(distances, k - 1, axis=1)[:, :k], axis=1)
    values, candidates = _sorted_rows(np.take_along_axis(distances, candidates, axis=1), candidates)
    # argpartition picks arbitrary columns among entries equal to the k-th smallest value; in
    # the rows where such ties cross the k-th place, keep the first columns instead.
    crossing = np.flatnonzero(np.count_nonzero(distances <= values[:, -1:], axis=1) > k)
    if len(crossing):
        order = np.argsort(distances[crossing], axis=1, kind="stable")[:, :k]
        candidates[crossing] = order
        values[crossing] = np.take_along_axis(distances[crossing], order, axis=1)
    return values, candidates


def _sorted_rows(distances, indices):
    """Sort each row of ``distances`` (ties by column order) and permute ``indices`` alike."""
    order = np.argsort(distances, axis=1, kind="stable")
    return np.take_along_axis(distances, order, axis=1), np.take_along_axis(indices, order, axis=1)


def _merge_smallest_k(distances, indices, tile, offset):
    """Merge a tile of distances into each row's running ``k`` smallest, in place.

    ``distances`` and ``indices`` (shape ``(n_rows, k)``, sorted, ties by index) hold the ``k``
    smallest distances to the database columns before ``offset``; ``tile`` holds the distances
    to the columns from ``offset`` on. A tile entry can only enter a row's list if it is
    strictly below the row's current ``k``-th distance (an equal one loses the tie to the
    smaller index already listed). Past the first tiles most rows have no such entry: a
    row-wise minimum (cheaper than an elementwise comparison) finds the rows that do, and only
    those are compared and re-sorted.
    """
    n_rows, k = distances.shape
    thresholds = distances[:, -1:]
    candidate_rows = np.flatnonzero(tile.min(axis=1) < thresholds[:, 0])
    if len(candidate_rows) == 0:
        return
    if 2 * len(candidate_rows) < n_rows:
        tile, thresholds = tile[candidate_rows], thresholds[candidate_rows]
    else:
        candidate_rows = np.arange(n_rows)
    rows, columns = np.divmod(np.flatnonzero(tile < thresholds), tile.shape[1])
    # Positions in the (possibly reduced) tile, and the rows they belong to.
    values = tile[rows, columns]
    rows = candidate_rows[rows]
    updated = np.unique(rows)
    all_rows = np.concatenate([np.repeat(updated, k), rows])
    all_values = np.concatenate([distances[updated].ravel(), values])
    all_columns = np.concatenate([indices[updated].ravel(), columns + offset])
    order = np.lexsort((all_columns, all_values, all_rows))
    all_rows, all_values, all_columns = all_rows[order], all_values[order], all_columns[order]
    keep = np.arange(len(all_rows)) - np.searchsorted(all_rows, all_rows) < k
    distances[updated] = all_values[keep].reshape(len(updated), k)
    indices[updated] = all_columns[keep].reshape(len(updated), k)


def tiled_smallest_k(tile_distances, n_columns, k, tile_columns):
    """:func:`smallest_k` of a distance matrix computed one tile of columns at a time.

    ``tile_distances(start, stop)`` returns the distances of every row to the columns
    ``start:stop``. Each tile is reduced to the running top ``k`` (:func:`_merge_smallest_k`)
    while it is still in cache, so the full ``(n_rows, n_columns)`` matrix is never formed.
    Same result as :func:`smallest_k` of the full matrix: ties by column index.
    """
    distances, indices = smallest_k(tile_distances(0, tile_columns), k)
    indices = indices.astype(np.intp, copy=False)
    for start in range(tile_columns, n_columns, tile_columns):
        tile = tile_distances(start, min(start + tile_columns, n_columns))
        _merge_smallest_k(distances, indices, tile, start)
    return distances, indices


def drop_self(distances, indices, n_neighbors):
    """Remove each query's own row number from its ``n_neighbors + 1`` results.

    Row ``i`` loses the entry equal to ``i`` wherever it appears, or its last entry when ``i``
    is absent, keeping ``n_neighbors`` entries in order.
    """
    is_self = indices == np.arange(len(indices))[:, None]
    # A query whose own item is not among its results (ties, or quantisation error) drops its
    # farthest result instead, so every row keeps exactly n_neighbors entries.
    is_self[~is_self.any(axis=1), -1] = True
    keep = ~is_self
    shape = (len(indices), n_neighbors)
    return distances[keep].reshape(shape), indices[keep].reshape(shape)


def concatenate_top_k(blocks):
    """Stack the ``(start, stop, distances, indices)`` top-k blocks of a search, in order."""
    blocks = list(blocks)
    return (
        np.concatenate([block[2] for block in blocks]),
        np.concatenate([block[3] for block in blocks]),
    )
