"""Score-based ranking metrics: input checks, the vectorised ranking core, AP, mAP, P@k, R@k."""

from numbers import Integral

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions, validate_params

INTERPOLATIONS = ("step", "trapezoid")


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


def ranked_average_precision(
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
    ap = ranked_average_precision(
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
        "interpolation": [StrOptions(set(INTERPOLATIONS))],
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
        sort: the smaller database index ranks first). See :mod:`skretrieval.metrics`.
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
        "interpolation": [StrOptions(set(INTERPOLATIONS))],
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


@validate_params(
    {"y_true": ["array-like"], "y_score": ["array-like"]},
    prefer_skip_nested_validation=True,
)
def ukbench_score(y_true, y_score):
    """UKBench N-S score: mean number of relevant items among the 4 best-scored ones.

    The score of Nister and Stewenius ("Scalable recognition with a vocabulary tree", CVPR
    2006) for the UKBench benchmark, where every object is shown in 4 images and every image is
    a query against all of them, itself included: a perfect ranking scores 4. Tied scores are
    ordered by a stable sort (the smaller database index first), as in :func:`precision_at_k`.

    Parameters
    ----------
    y_true : array-like of shape (n_queries, n_database) or (n_database,)
        Relevance flags (bool or 0/1). A 1-D array is one query. In UKBench the query itself
        is in the database and counts as relevant.
    y_score : array-like of the same shape as ``y_true``
        Similarities, higher = more similar.

    Returns
    -------
    score : float
        Mean over all queries of the number of relevant items among the 4 best-scored, in
        ``[0, 4]``.

    See Also
    --------
    precision_at_k : The same count divided by ``k``, averaged over the queries with a positive.

    Examples
    --------
    >>> from skretrieval.metrics import ukbench_score
    >>> y_true = [[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1]]
    >>> y_score = [[6, 5, 1, 4, 3, 2], [1, 2, 6, 5, 4, 3]]
    >>> ukbench_score(y_true, y_score)  # 3 of the top 4, then all 4
    3.5
    """
    relevant, keep, y_score = _check_targets(y_true, y_score, None)
    n_database = relevant.shape[1]
    if n_database < 4:
        raise ValueError(
            f"ukbench_score counts the 4 best-scored items: it needs at least 4 database items; "
            f"got {n_database}."
        )
    return float(_top_k_hits(relevant, keep, y_score, 4).mean())
