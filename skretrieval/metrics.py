"""Retrieval metrics: average precision, mAP, precision and recall at k, and scorers.

Two families of functions live here:

- **Score-based** functions (:func:`average_precision`, :func:`mean_average_precision`,
  :func:`precision_at_k`, :func:`recall_at_k`) take a relevance matrix ``y_true`` and a score
  matrix ``y_score`` of shape ``(n_queries, n_database)``, higher score = more similar (pass
  ``-distances``). One ``argsort`` over the whole matrix ranks every query at once.
- **Ranking-based** :func:`evaluate_revisited` takes ranked database indices and a revisited
  Oxford/Paris ground truth (Radenovic et al., "Revisiting Oxford and Paris: Large-Scale Image
  Retrieval Benchmarking", CVPR 2018) and reports mAP and mP@k for the easy, medium and hard
  settings.

Both families share one vectorised core that computes average precision from relevance flags
already put in ranked order. :func:`make_retrieval_scorer` wraps the metrics for
``GridSearchCV(scoring=...)`` and ``cross_val_score(scoring=...)``.

Two interpolations of average precision are offered:

``"step"``
    The non-interpolated AP of :func:`sklearn.metrics.average_precision_score`,
    ``sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds. Tied scores form a single
    threshold, so the result does not depend on how ties are ordered.
``"trapezoid"``
    The Oxford/Paris reference: for the j-th positive (0-based) at 0-based rank r, the precision
    before it is ``j / r`` (1 when ``r = 0``) and after it ``(j + 1) / (r + 1)``; AP is the mean
    over all positives of the average of the two, a positive that is not retrieved counting 0.
    Tied scores are ordered by a stable sort: the item with the smaller database index ranks
    first.

Scores may be infinite (``-inf`` ranks last, tied with other ``-inf``); NaN is an error.
Junk items (``junk=True``) are deleted before anything is computed: they are neither positive nor
negative and do not occupy a rank. An item flagged both relevant and junk is junk.
"""

from numbers import Integral

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions, validate_params
from sklearn.utils.validation import check_is_fitted

__all__ = [
    "RETRIEVAL_SCORERS",
    "average_precision",
    "evaluate_revisited",
    "make_retrieval_scorer",
    "map_scorer",
    "map_trapezoid_scorer",
    "mean_average_precision",
    "precision_at_1_scorer",
    "precision_at_10_scorer",
    "precision_at_5_scorer",
    "precision_at_k",
    "recall_at_k",
]

_INTERPOLATIONS = ("step", "trapezoid")


# --------------------------------------------------------------------------------------------
# Input checks and ranking
# --------------------------------------------------------------------------------------------


def _check_relevance(y_true, name):
    """Return ``y_true`` as a bool array; only 0/1 or bool values are accepted."""
    y_true = np.asarray(y_true)
    if y_true.dtype == bool:
        return y_true
    if not (np.issubdtype(y_true.dtype, np.integer) or np.issubdtype(y_true.dtype, np.floating)):
        raise TypeError(f"{name} must hold 0/1 or bool relevance flags; got dtype {y_true.dtype}.")
    if not np.isin(y_true, (0, 1)).all():
        bad = np.unique(y_true[~np.isin(y_true, (0, 1))])[:5]
        raise ValueError(
            f"{name} must hold binary relevance flags (0/1 or bool); found values {bad.tolist()}."
        )
    return y_true.astype(bool)


def _check_scores(y_score):
    """Return ``y_score`` as a real array; NaN is an error, infinities rank first or last."""
    y_score = np.asarray(y_score)
    if y_score.dtype == bool:
        return y_score.astype(np.int8)
    if not (np.issubdtype(y_score.dtype, np.integer) or np.issubdtype(y_score.dtype, np.floating)):
        raise TypeError(f"y_score must hold real numbers; got dtype {y_score.dtype}.")
    # Infinite scores are allowed: retrievers give -inf to items that must never be retrieved.
    if np.issubdtype(y_score.dtype, np.floating) and np.isnan(y_score).any():
        raise ValueError("y_score contains NaN.")
    return y_score


def _check_targets(y_true, y_score, junk, *, single_query=False):
    """Validate the score-based inputs and return them as 2-D ``(n_queries, n_database)`` arrays.

    Returns ``(relevant, keep, y_score)``: ``relevant`` marks relevant non-junk items, ``keep``
    marks the non-junk items, both bool.
    """
    y_true = _check_relevance(y_true, "y_true")
    y_score = _check_scores(y_score)
    if y_true.shape != y_score.shape:
        raise ValueError(
            f"y_true and y_score must have the same shape; got {y_true.shape} and {y_score.shape}."
        )
    if single_query and y_true.ndim != 1:
        raise ValueError(
            "average_precision scores one query: y_true and y_score must be 1-D arrays of shape "
            f"(n_database,); got shape {y_true.shape}. Use mean_average_precision for several "
            "queries."
        )
    if y_true.ndim not in (1, 2):
        raise ValueError(
            "y_true and y_score must be 1-D (one query) or 2-D (n_queries, n_database); got "
            f"{y_true.ndim}-D arrays."
        )
    if y_true.size == 0:
        raise ValueError(f"y_true and y_score are empty (shape {y_true.shape}).")
    if junk is None:
        keep = np.ones(y_true.shape, dtype=bool)
    else:
        junk = _check_relevance(junk, "junk")
        if junk.shape != y_true.shape:
            raise ValueError(
                f"junk must have the same shape as y_true; got {junk.shape} and {y_true.shape}."
            )
        keep = ~junk
    relevant = y_true & keep
    return np.atleast_2d(relevant), np.atleast_2d(keep), np.atleast_2d(y_score)


def _rank_descending(y_score):
    """Column order of each row of ``y_score``, best (highest) first; ties in index order.

    Sorting the reversed rows ascending with a stable sort and reversing the result gives a
    stable descending order without negating the scores (which would wrap unsigned integers).
    """
    n_database = y_score.shape[1]
    return (n_database - 1) - np.argsort(y_score[:, ::-1], axis=1, kind="stable")[:, ::-1]


def _tie_group_ends(sorted_scores):
    """For each ranked position, the position of the last item with the same score."""
    n_database = sorted_scores.shape[1]
    positions = np.arange(n_database)
    is_end = np.ones(sorted_scores.shape, dtype=bool)
    is_end[:, :-1] = sorted_scores[:, 1:] != sorted_scores[:, :-1]
    # Reverse cumulative minimum of the end positions: the first group end at or after each item.
    ends = np.where(is_end, positions, n_database)
    return np.minimum.accumulate(ends[:, ::-1], axis=1)[:, ::-1]


# --------------------------------------------------------------------------------------------
# Vectorised core: per-query metrics from relevance flags in ranked order
# --------------------------------------------------------------------------------------------


def _ranked_average_precision(
    relevant, keep, n_positives, *, interpolation, sorted_scores=None
):
    """Average precision of each query from its ranked relevance flags.

    Parameters
    ----------
    relevant : ndarray of shape (n_queries, n_ranked), dtype bool
        Relevant (non-junk) items, in ranked order (best first).
    keep : ndarray of shape (n_queries, n_ranked), dtype bool
        Non-junk items, in ranked order; junk items are deleted and take no rank.
    n_positives : ndarray of shape (n_queries,)
        Number of positives of each query, including positives missing from the ranking
        (they count as not retrieved). Must be > 0.
    interpolation : {"step", "trapezoid"}
    sorted_scores : ndarray of shape (n_queries, n_ranked), default=None
        Scores in ranked order, used by "step" to treat tied scores as one threshold. ``None``
        means no ties (a strict ranking).

    Returns
    -------
    ap : ndarray of shape (n_queries,)
    """
    true_positives = np.cumsum(relevant, axis=1)  # positives at or before each position
    retrieved = np.cumsum(keep, axis=1)  # 1-based rank of each kept item after junk deletion
    if interpolation == "step":
        if sorted_scores is not None:
            # Every item of a tie group is evaluated at the threshold below the whole group.
            ends = _tie_group_ends(sorted_scores)
            true_positives = np.take_along_axis(true_positives, ends, axis=1)
            retrieved = np.take_along_axis(retrieved, ends, axis=1)
        precision = true_positives / np.maximum(retrieved, 1)
        contributions = np.where(relevant, precision, 0.0)
    else:
        j = true_positives - 1  # 0-based index of the positive among the positives
        r = retrieved - 1  # 0-based rank after junk deletion
        precision_before = np.where(r == 0, 1.0, j / np.maximum(r, 1))
        precision_after = true_positives / np.maximum(retrieved, 1)
        contributions = np.where(relevant, (precision_before + precision_after) / 2, 0.0)
    return contributions.sum(axis=1) / n_positives


def _mean_over_queries_with_positives(values, n_positives, function_name):
    """Mean of ``values`` over the queries with at least one positive."""
    has_positive = n_positives > 0
    if not has_positive.any():
        raise ValueError(
            f"{function_name}: no query has a positive (relevant, non-junk) database item, so the "
            "metric is undefined."
        )
    return float(values[has_positive].mean())


def _top_k_hits(relevant, keep, y_score, k):
    """Number of relevant items among the first ``k`` non-junk items of each query."""
    n_database = relevant.shape[1]
    if k > n_database:
        raise ValueError(f"k={k} is larger than the number of database items ({n_database}).")
    order = _rank_descending(y_score)
    ranked_relevant = np.take_along_axis(relevant, order, axis=1)
    ranked_keep = np.take_along_axis(keep, order, axis=1)
    in_top_k = ranked_keep & (np.cumsum(ranked_keep, axis=1) <= k)
    return (ranked_relevant & in_top_k).sum(axis=1)


# --------------------------------------------------------------------------------------------
# Score-based public functions
# --------------------------------------------------------------------------------------------


def _per_query_average_precision(relevant, keep, y_score, interpolation):
    """AP of every query (NaN where a query has no positive) from validated 2-D inputs."""
    n_positives = relevant.sum(axis=1)
    order = _rank_descending(y_score)
    sorted_scores = np.take_along_axis(y_score, order, axis=1)
    ap = _ranked_average_precision(
        np.take_along_axis(relevant, order, axis=1),
        np.take_along_axis(keep, order, axis=1),
        np.maximum(n_positives, 1),
        interpolation=interpolation,
        sorted_scores=sorted_scores if interpolation == "step" else None,
    )
    return np.where(n_positives > 0, ap, np.nan), n_positives


@validate_params(
    {
        "y_true": ["array-like"],
        "y_score": ["array-like"],
        "interpolation": [StrOptions(set(_INTERPOLATIONS))],
        "junk": ["array-like", None],
    },
    prefer_skip_nested_validation=True,
)
def average_precision(y_true, y_score, *, interpolation="step", junk=None):
    """Average precision of one query against the database.

    Parameters
    ----------
    y_true : array-like of shape (n_database,)
        Relevance of each database item to the query (bool or 0/1).
    y_score : array-like of shape (n_database,)
        Similarity of each database item to the query, higher = more similar. Pass
        ``-distances`` for distances.
    interpolation : {"step", "trapezoid"}, default="step"
        ``"step"`` equals :func:`sklearn.metrics.average_precision_score` (tied scores form one
        threshold). ``"trapezoid"`` is the Oxford/Paris reference AP (ties broken by a stable
        sort: the smaller database index ranks first). See the module docstring.
    junk : array-like of shape (n_database,), default=None
        Items to delete before computing (neither positive nor negative, no rank).

    Returns
    -------
    ap : float
        Average precision in [0, 1].

    Raises
    ------
    ValueError
        If the query has no positive (relevant, non-junk) item.

    See Also
    --------
    mean_average_precision : The mean over several queries.

    Examples
    --------
    >>> from skretrieval.metrics import average_precision
    >>> y_true = [1, 0, 1, 0]
    >>> y_score = [0.9, 0.8, 0.7, 0.1]
    >>> round(average_precision(y_true, y_score), 4)  # (1 + 2/3) / 2
    0.8333
    >>> round(average_precision(y_true, y_score, interpolation="trapezoid"), 4)
    0.7917
    """
    relevant, keep, y_score = _check_targets(y_true, y_score, junk, single_query=True)
    ap, n_positives = _per_query_average_precision(relevant, keep, y_score, interpolation)
    if n_positives[0] == 0:
        raise ValueError(
            "average_precision is undefined for a query with no positive (relevant, non-junk) "
            "database item."
        )
    return float(ap[0])


@validate_params(
    {
        "y_true": ["array-like"],
        "y_score": ["array-like"],
        "interpolation": [StrOptions(set(_INTERPOLATIONS))],
        "junk": ["array-like", None],
    },
    prefer_skip_nested_validation=True,
)
def mean_average_precision(y_true, y_score, *, interpolation="step", junk=None):
    """Mean average precision (mAP) over queries.

    All queries are ranked at once by one ``argsort`` over the score matrix.

    Parameters
    ----------
    y_true : array-like of shape (n_queries, n_database) or (n_database,)
        Relevance of each database item to each query (bool or 0/1). A 1-D array is one query.
    y_score : array-like of the same shape as ``y_true``
        Similarities, higher = more similar (pass ``-distances``).
    interpolation : {"step", "trapezoid"}, default="step"
        See :func:`average_precision`.
    junk : array-like of the same shape as ``y_true``, default=None
        Items to delete for each query before computing.

    Returns
    -------
    map : float
        Mean of the average precisions of the queries that have at least one positive (queries
        without a positive are skipped).

    Raises
    ------
    ValueError
        If no query has a positive.

    Examples
    --------
    >>> import numpy as np
    >>> from skretrieval.metrics import mean_average_precision
    >>> y_true = np.array([[1, 0, 1], [0, 0, 0], [0, 1, 0]])
    >>> y_score = np.array([[3, 2, 1], [3, 2, 1], [3, 2, 1]])
    >>> # query 0: (1 + 2/3) / 2; query 1 has no positive and is skipped; query 2: 1/2
    >>> round(mean_average_precision(y_true, y_score), 4)
    0.6667
    """
    relevant, keep, y_score = _check_targets(y_true, y_score, junk)
    ap, n_positives = _per_query_average_precision(relevant, keep, y_score, interpolation)
    return _mean_over_queries_with_positives(ap, n_positives, "mean_average_precision")


@validate_params(
    {
        "y_true": ["array-like"],
        "y_score": ["array-like"],
        "k": [Interval(Integral, 1, None, closed="left")],
        "junk": ["array-like", None],
    },
    prefer_skip_nested_validation=True,
)
def precision_at_k(y_true, y_score, k, *, junk=None):
    """Mean precision at rank ``k`` over queries.

    The precision at k of a query is the number of relevant items among its ``k`` best-scored
    non-junk items, divided by ``k``. Tied scores are ordered by a stable sort (the smaller
    database index first).

    Parameters
    ----------
    y_true : array-like of shape (n_queries, n_database) or (n_database,)
        Relevance flags (bool or 0/1). A 1-D array is one query.
    y_score : array-like of the same shape as ``y_true``
        Similarities, higher = more similar.
    k : int >= 1
        Cut-off rank; at most ``n_database``.
    junk : array-like of the same shape as ``y_true``, default=None
        Items deleted before ranking.

    Returns
    -------
    precision : float
        Mean over the queries with at least one positive.

    See Also
    --------
    evaluate_revisited : mP@k of the revisited Oxford/Paris protocol, which caps ``k`` at the
        rank of the last positive.

    Examples
    --------
    >>> from skretrieval.metrics import precision_at_k
    >>> precision_at_k([[1, 0, 1, 0]], [[4, 3, 2, 1]], k=2)
    0.5
    """
    relevant, keep, y_score = _check_targets(y_true, y_score, junk)
    hits = _top_k_hits(relevant, keep, y_score, k)
    return _mean_over_queries_with_positives(hits / k, relevant.sum(axis=1), "precision_at_k")


@validate_params(
    {
        "y_true": ["array-like"],
        "y_score": ["array-like"],
        "k": [Interval(Integral, 1, None, closed="left")],
        "junk": ["array-like", None],
    },
    prefer_skip_nested_validation=True,
)
def recall_at_k(y_true, y_score, k, *, junk=None):
    """Mean recall at rank ``k`` over queries.

    The recall at k of a query is the number of relevant items among its ``k`` best-scored
    non-junk items, divided by its number of relevant non-junk items. Tied scores are ordered
    by a stable sort (the smaller database index first).

    Parameters
    ----------
    y_true : array-like of shape (n_queries, n_database) or (n_database,)
        Relevance flags (bool or 0/1). A 1-D array is one query.
    y_score : array-like of the same shape as ``y_true``
        Similarities, higher = more similar.
    k : int >= 1
        Cut-off rank; at most ``n_database``.
    junk : array-like of the same shape as ``y_true``, default=None
        Items deleted before ranking.

    Returns
    -------
    recall : float
        Mean over the queries with at least one positive.

    Examples
    --------
    >>> from skretrieval.metrics import recall_at_k
    >>> recall_at_k([[1, 0, 1, 0]], [[4, 3, 2, 1]], k=2)
    0.5
    """
    relevant, keep, y_score = _check_targets(y_true, y_score, junk)
    hits = _top_k_hits(relevant, keep, y_score, k)
    n_positives = relevant.sum(axis=1)
    return _mean_over_queries_with_positives(
        hits / np.maximum(n_positives, 1), n_positives, "recall_at_k"
    )


# --------------------------------------------------------------------------------------------
# Revisited Oxford / Paris
# --------------------------------------------------------------------------------------------

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


def _ground_truth_indices(gnd, n_queries):
    """Per key, (query row indices, database indices) of all entries of the ground truth."""
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
            indices = np.asarray(query_gnd[key]).ravel()
            if indices.size and not np.issubdtype(indices.dtype, np.integer):
                raise TypeError(
                    f"gnd[{i}][{key!r}] must hold integer database indices; got dtype "
                    f"{indices.dtype}."
                )
            if indices.size and indices.min() < 0:
                raise ValueError(f"gnd[{i}][{key!r}] contains negative database indices.")
            lists.append(indices.astype(np.intp))
        rows = np.repeat(np.arange(n_queries), [len(idx) for idx in lists])
        entries[key] = (rows, np.concatenate(lists))
    return entries


@validate_params(
    {
        "ranks": ["array-like"],
        "gnd": [list, tuple],
        "ks": ["array-like"],
    },
    prefer_skip_nested_validation=True,
)
def evaluate_revisited(ranks, gnd, ks=(1, 5, 10)):
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

    Returns
    -------
    results : dict
        ``{"easy": ..., "medium": ..., "hard": ...}``, each a dict with

        - ``"map"``: float in [0, 1], mean AP over the evaluated queries (NaN if no query has a
          positive in this setting);
        - ``"mp@k"``: dict ``{k: float}``, mean precision at each k in ``ks``;
        - ``"ap"``: ndarray of shape (n_queries,), the AP of each query, NaN for skipped ones;
        - ``"n_queries"``: int, number of queries evaluated (with at least one positive).

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
    entries = _ground_truth_indices(gnd, n_queries)
    n_database = 1 + max(
        [int(ranks.max())] + [int(cols.max()) for _, cols in entries.values() if cols.size]
    )

    masks = {}
    for key, (rows, cols) in entries.items():
        mask = np.zeros((n_queries, n_database), dtype=bool)
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
        ap = _ranked_average_precision(
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


# --------------------------------------------------------------------------------------------
# Scorers
# --------------------------------------------------------------------------------------------

_SCORE_FUNCTIONS = {
    "map": mean_average_precision,
    "precision_at_k": precision_at_k,
    "recall_at_k": recall_at_k,
}


def _split_retriever(estimator, X):
    """Return ``(retriever, Xt)``: the final retriever and ``X`` transformed up to it."""
    steps = getattr(estimator, "steps", None)
    retriever, Xt = estimator, X
    if steps is not None:  # a Pipeline ending in the retriever
        retriever = steps[-1][1]
        # Step by step rather than ``estimator[:-1].transform``: a sliced Pipeline judges
        # itself unfitted when its last transformer is stateless.
        for _, transformer in steps[:-1]:
            if transformer is not None and transformer != "passthrough":
                Xt = transformer.transform(Xt)
    if not hasattr(retriever, "_distance_blocks"):
        raise TypeError(
            "retrieval scorers need an ImageRetriever or a Pipeline ending in one; got "
            f"{type(retriever).__name__}."
        )
    return retriever, Xt


class _RetrievalScorer:
    """Callable ``scorer(estimator, X, y) -> float`` for a fitted retriever (greater is better).

    Built by :func:`make_retrieval_scorer`; see there.
    """

    def __init__(self, score_func, kwargs):
        self._score_func = score_func
        self._kwargs = kwargs

    @property
    def _function(self):
        if callable(self._score_func):
            return self._score_func
        return _SCORE_FUNCTIONS[self._score_func]

    def __call__(self, estimator, X, y=None):
        """Score ``estimator``: queries ``X`` with labels ``y`` against its fitted database.

        Database item j is relevant to query i when ``y[i] == retriever.y_[j]``. The metric is
        averaged over all queries that have at least one relevant database item.
        """
        retriever, Xt = _split_retriever(estimator, X)
        check_is_fitted(retriever)
        database_labels = getattr(retriever, "y_", None)
        if database_labels is None:
            raise ValueError(
                f"{type(retriever).__name__} was fitted without labels: the retriever must be "
                "fitted with labels y to be scored (relevance = equal labels)."
            )
        if y is None:
            raise ValueError("retrieval scorers need the query labels y; got y=None.")
        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError(f"query labels y must be 1-D; got shape {y.shape}.")
        database_labels = np.asarray(database_labels)

        function = self._function
        total = 0.0
        n_scored = 0
        n_seen = 0
        for start, stop, distances in retriever._distance_blocks(Xt):
            if stop > len(y):
                raise ValueError(
                    f"the retriever returned distances for {stop} queries but y has {len(y)} "
                    "labels."
                )
            relevant = y[start:stop, None] == database_labels[None, :]
            # The metric of a block is a mean over its queries with positives; weighting it by
            # their number gives the mean over all queries, not a mean of block means.
            n_block = int(relevant.any(axis=1).sum())
            if n_block:
                total += n_block * function(relevant, -distances, **self._kwargs)
                n_scored += n_block
            n_seen += stop - start
        if n_seen != len(y):
            raise ValueError(f"y has {len(y)} labels but X has {n_seen} queries.")
        if n_scored == 0:
            raise ValueError(
                "no query has a relevant database item (no query label occurs among the "
                "database labels), so the retrieval score is undefined."
            )
        return float(total / n_scored)

    def __repr__(self):
        name = self._score_func
        if callable(name):
            name = getattr(name, "__name__", repr(name))
        else:
            name = repr(name)
        arguments = [name] + [f"{key}={value!r}" for key, value in self._kwargs.items()]
        return f"make_retrieval_scorer({', '.join(arguments)})"


@validate_params(
    {
        "score_func": [StrOptions(set(_SCORE_FUNCTIONS)), callable],
        "k": [Interval(Integral, 1, None, closed="left"), None],
        "interpolation": [StrOptions(set(_INTERPOLATIONS))],
    },
    prefer_skip_nested_validation=True,
)
def make_retrieval_scorer(score_func="map", *, k=None, interpolation="step", **kwargs):
    """Make a scorer for ``GridSearchCV(scoring=...)`` from a retrieval metric.

    The scorer is called as ``scorer(estimator, X, y)``, where ``estimator`` is a fitted
    :class:`~skretrieval.neighbors.ImageRetriever` or a :class:`~sklearn.pipeline.Pipeline`
    ending in one (``X`` then goes through the other steps first). ``X`` are the queries, ``y``
    their labels; the retriever must have been fitted with database labels ``y`` and database
    item j is relevant to query i when their labels are equal. Queries are scored block by
    block, and the metric is averaged over all queries with at least one relevant item.
    Greater is better.

    Parameters
    ----------
    score_func : {"map", "precision_at_k", "recall_at_k"} or callable, default="map"
        Metric. A callable must have the signature of the functions of this module,
        ``score_func(y_true, y_score, **kwargs) -> float`` with ``y_true`` and ``y_score`` of
        shape (n_queries, n_database), skip the queries without positives and return their mean.
    k : int >= 1, default=None
        Cut-off rank; required by "precision_at_k" and "recall_at_k", not accepted by "map".
        Passed to a callable when given.
    interpolation : {"step", "trapezoid"}, default="step"
        Average precision interpolation of "map" (see :func:`average_precision`).
    **kwargs
        Further keyword arguments passed to a callable ``score_func``.

    Returns
    -------
    scorer : callable
        ``scorer(estimator, X, y) -> float``.

    Examples
    --------
    >>> from skretrieval.metrics import make_retrieval_scorer
    >>> make_retrieval_scorer("precision_at_k", k=5)
    make_retrieval_scorer('precision_at_k', k=5)
    >>> make_retrieval_scorer(interpolation="trapezoid")
    make_retrieval_scorer('map', interpolation='trapezoid')
    """
    if callable(score_func):
        if interpolation != "step":
            kwargs = {"interpolation": interpolation, **kwargs}
        if k is not None:
            kwargs = {"k": k, **kwargs}
        return _RetrievalScorer(score_func, kwargs)
    if kwargs:
        raise TypeError(
            f"extra keyword arguments {sorted(kwargs)} are only accepted with a callable "
            "score_func."
        )
    if score_func == "map":
        if k is not None:
            raise ValueError("k is not used by score_func='map'; leave it as None.")
        params = {} if interpolation == "step" else {"interpolation": interpolation}
        return _RetrievalScorer("map", params)
    if k is None:
        raise ValueError(f"score_func={score_func!r} needs a cut-off rank k (an int >= 1).")
    if interpolation != "step":
        raise ValueError(f"interpolation only applies to score_func='map', not {score_func!r}.")
    return _RetrievalScorer(score_func, {"k": k})


map_scorer = make_retrieval_scorer("map")
map_trapezoid_scorer = make_retrieval_scorer("map", interpolation="trapezoid")
precision_at_1_scorer = make_retrieval_scorer("precision_at_k", k=1)
precision_at_5_scorer = make_retrieval_scorer("precision_at_k", k=5)
precision_at_10_scorer = make_retrieval_scorer("precision_at_k", k=10)

#: Ready-made scorers by name, for ``GridSearchCV(scoring=RETRIEVAL_SCORERS["map"])`` or as a
#: multi-metric ``scoring`` dict.
RETRIEVAL_SCORERS = {
    "map": map_scorer,
    "map_trapezoid": map_trapezoid_scorer,
    "precision_at_1": precision_at_1_scorer,
    "precision_at_5": precision_at_5_scorer,
    "precision_at_10": precision_at_10_scorer,
    "recall_at_1": make_retrieval_scorer("recall_at_k", k=1),
    "recall_at_5": make_retrieval_scorer("recall_at_k", k=5),
    "recall_at_10": make_retrieval_scorer("recall_at_k", k=10),
}
