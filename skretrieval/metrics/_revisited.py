"""The revisited Oxford/Paris protocol: mAP and mP@k in the easy, medium and hard settings."""

from numbers import Integral

import numpy as np
from sklearn.utils._param_validation import Interval, validate_params

from skretrieval.metrics._ranking import ranked_average_precision

# setting -> (ground-truth keys of the positives, ground-truth keys of the junk)
_REVISITED_SETTINGS = {
    "easy": (("easy",), ("junk", "hard")),
    "medium": (("easy", "hard"), ("junk",)),
    "hard": (("hard",), ("junk", "easy")),
}


def _check_ranks(ranks):
    """Validate a (n_queries, n_ranked) array of distinct non-negative database indices."""
    ranks = np.asarray(ranks)
    if ranks.ndim != 2:
        raise ValueError(
            "ranks must be a 2-D array (n_queries, n_ranked) of database indices, best first; "
            f"got shape {ranks.shape}."
        )
    if not np.issubdtype(ranks.dtype, np.integer):
        raise TypeError(f"ranks must hold integer database indices; got dtype {ranks.dtype}.")
    if ranks.size == 0:
        raise ValueError(f"ranks is empty (shape {ranks.shape}).")
    if ranks.min() < 0:
        raise ValueError("ranks contains negative database indices.")
    sorted_ranks = np.sort(ranks, axis=1)
    repeated = (sorted_ranks[:, 1:] == sorted_ranks[:, :-1]).any(axis=1)
    if repeated.any():
        raise ValueError(
            "each row of ranks must list distinct database indices; rows "
            f"{np.flatnonzero(repeated)[:5].tolist()} repeat an index."
        )
    return ranks


def _ground_truth_indices(gnd, n_queries, n_database):
    """Per key, (query row indices, database indices) of all entries of the ground truth.

    Every index is checked: a negative, non-integer or (with ``n_database``) out-of-range one
    is a ``ValueError`` naming the query and the key, never converted or wrapped around.
    """
    if isinstance(gnd, dict) or not hasattr(gnd, "__len__"):
        raise TypeError(
            "gnd must be a list with one dict per query (keys 'easy', 'hard', 'junk'); got "
            f"{type(gnd).__name__}."
        )
    if len(gnd) != n_queries:
        raise ValueError(
            f"gnd has {len(gnd)} entries but ranks has {n_queries} rows (one per query)."
        )
    entries = {}
    for key in ("easy", "hard", "junk"):
        lists = []
        for i, query_gnd in enumerate(gnd):
            if not hasattr(query_gnd, "keys") or key not in query_gnd:
                raise ValueError(f"gnd[{i}] has no key {key!r}; expected 'easy', 'hard', 'junk'.")
            lists.append(_check_indices(query_gnd[key], n_database, f"query {i}: gnd[{i}]", key))
        rows = np.repeat(np.arange(n_queries), [len(idx) for idx in lists])
        entries[key] = (rows, np.concatenate(lists))
    return entries


def _check_indices(values, n_database, query, key):
    try:
        indices = np.asarray(values)
    except ValueError:  # ragged nested lists
        indices = None
    if indices is None or indices.ndim > 1 or not (indices.size == 0 or indices.dtype.kind in "iu"):
        text = repr(values)
        raise ValueError(
            f"{query}[{key!r}] must be a list of integer database indices; got "
            f"{text if len(text) <= 80 else text[:77] + '...'}."
        )
    indices = indices.astype(np.intp).ravel()
    upper = np.inf if n_database is None else n_database
    outside = indices[(indices < 0) | (indices >= upper)]
    if outside.size:
        valid = "indices start at 0" if n_database is None else f"n_database={n_database}"
        raise ValueError(
            f"{query}[{key!r}] holds database index {int(outside[0])}, out of range "
            f"({valid}); the ground truth does not match the database."
        )
    return indices


@validate_params(
    {
        "ranks": ["array-like"],
        "gnd": [list, tuple],
        "ks": ["array-like"],
        "n_database": [Interval(Integral, 1, None, closed="left"), None],
    },
    prefer_skip_nested_validation=True,
)
def evaluate_revisited(ranks, gnd, ks=(1, 5, 10), *, n_database=None):
    """Evaluate rankings with the revisited Oxford/Paris protocol (easy, medium, hard).

    The three settings of Radenovic et al. (CVPR 2018) differ in which ground-truth images are
    positives and which are junk (deleted from the ranking before evaluation):

    ========  =================  ================
    setting   positives          junk
    ========  =================  ================
    easy      easy               junk + hard
    medium    easy + hard        junk
    hard      hard               junk + easy
    ========  =================  ================

    Average precision is the ``"trapezoid"`` (reference) AP after junk deletion; positives
    missing from a truncated ranking count 0. The mean precision at k, ``mP@k``, follows the
    reference code used to produce the published tables: with ``p`` the 1-based rank, after
    junk deletion, of the query's last retrieved positive, the precision at k is the fraction
    of positives among the first ``min(k, p)`` non-junk items. Capping at ``p`` keeps a query
    whose positives are all ranked first at precision 1 even when it has fewer than ``k``
    positives; it therefore differs from :func:`precision_at_k`, which always divides by ``k``.
    A query with no retrieved positive has precision 0. Queries with no positive in a setting
    are skipped in that setting.

    Parameters
    ----------
    ranks : array-like of int of shape (n_queries, n_ranked)
        Database indices for each query, best first. Normally each row ranks the whole
        database; truncated (top-``n_ranked``) rows are accepted, positives absent from them
        count as not retrieved. Indices within a row must be distinct.
    gnd : list of dict
        One dict per query with integer index arrays under ``"easy"``, ``"hard"`` and
        ``"junk"`` (other keys such as ``"bbx"`` are ignored). An index that is both a positive
        and junk in a setting is treated as junk.
    ks : sequence of int, default=(1, 5, 10)
        Ranks at which to report mP@k.
    n_database : int, default=None
        Number of database images. If given, an index of ``ranks`` or ``gnd`` that is not
        below it is an error; by default only negative indices are.

    Returns
    -------
    results : dict
        ``{"easy": ..., "medium": ..., "hard": ...}``, each a dict with

        - ``"map"``: float in [0, 1], mean AP over the evaluated queries (NaN if no query has a
          positive in this setting);
        - ``"mp@k"``: dict ``{k: float}``, mean precision at each k in ``ks``;
        - ``"ap"``: ndarray of shape (n_queries,), the AP of each query, NaN for skipped ones;
        - ``"n_queries"``: int, number of queries evaluated (with at least one positive).

    Raises
    ------
    ValueError
        If an index of ``gnd`` is negative, not an integer or (with ``n_database``) out of
        range; the message names the query and the key.

    Examples
    --------
    >>> import numpy as np
    >>> from skretrieval.metrics import evaluate_revisited
    >>> ranks = np.array([[0, 1, 2, 3]])
    >>> gnd = [{"easy": [0], "hard": [2], "junk": [1]}]
    >>> results = evaluate_revisited(ranks, gnd, ks=(1,))
    >>> float(results["easy"]["map"])  # easy positive ranked first
    1.0
    >>> float(results["medium"]["map"])  # ranks 0 and 1 once junk item 1 is deleted
    1.0
    >>> float(results["hard"]["map"])  # hard positive at rank 0 after deleting 0 and 1
    1.0
    """
    ranks = _check_ranks(ranks)
    ks = np.asarray(ks).ravel()
    if ks.size and (not np.issubdtype(ks.dtype, np.integer) or ks.min() < 1):
        raise ValueError(f"ks must be integers >= 1; got {ks.tolist()}.")
    ks = [int(k) for k in ks]
    n_queries = ranks.shape[0]
    if n_database is not None and ranks.max() >= n_database:
        raise ValueError(
            f"ranks holds database index {int(ranks.max())}, out of range for "
            f"n_database={n_database}."
        )
    entries = _ground_truth_indices(gnd, n_queries, n_database)
    n_columns = 1 + max(
        [int(ranks.max())] + [int(cols.max()) for _, cols in entries.values() if cols.size]
    )

    masks = {}
    for key, (rows, cols) in entries.items():
        mask = np.zeros((n_queries, n_columns), dtype=bool)
        mask[rows, cols] = True
        masks[key] = mask

    results = {}
    for setting, (positive_keys, junk_keys) in _REVISITED_SETTINGS.items():
        junk = np.logical_or.reduce([masks[key] for key in junk_keys])
        positive = np.logical_or.reduce([masks[key] for key in positive_keys]) & ~junk
        n_positives = positive.sum(axis=1)
        evaluated = n_positives > 0
        ranked_relevant = np.take_along_axis(positive, ranks, axis=1)
        ranked_keep = ~np.take_along_axis(junk, ranks, axis=1)
        ap = ranked_average_precision(
            ranked_relevant,
            ranked_keep,
            np.maximum(n_positives, 1),
            interpolation="trapezoid",
        )
        ap = np.where(evaluated, ap, np.nan)

        # 1-based rank (after junk deletion) of each item, and of each query's last positive.
        retrieved = np.cumsum(ranked_keep, axis=1)
        last_positive = np.where(ranked_relevant, retrieved, 0).max(axis=1)
        precisions = {}
        for k in ks:
            cutoff = np.minimum(last_positive, k)
            hits = (ranked_relevant & (retrieved <= cutoff[:, None])).sum(axis=1)
            precision = hits / np.maximum(cutoff, 1)
            precisions[k] = float(precision[evaluated].mean()) if evaluated.any() else np.nan
        results[setting] = {
            "map": float(ap[evaluated].mean()) if evaluated.any() else np.nan,
            "mp@k": precisions,
            "ap": ap,
            "n_queries": int(evaluated.sum()),
        }
    return results
