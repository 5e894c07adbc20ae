"""Scorers for ``GridSearchCV`` and ``cross_val_score``: retrieval metrics of a fitted retriever."""

import warnings
from numbers import Integral

import numpy as np
from sklearn.utils._param_validation import Interval, StrOptions, validate_params
from sklearn.utils.validation import check_is_fitted

from skretrieval.metrics._ranking import (
    INTERPOLATIONS,
    mean_average_precision,
    precision_at_k,
    recall_at_k,
)

# The advice of the warnings: with cross-validation, every test fold's classes in its
# training fold, in the same proportions.
_FOLDS_ADVICE = (
    "With cross-validation, use shuffled, stratified folds (e.g. cv=StratifiedKFold("
    "n_splits, shuffle=True, random_state=0), with y as the labels) so that every class of a "
    "test fold is in its training fold."
)


class UndefinedRetrievalMetricWarning(UserWarning):
    """A retrieval score computed on some of the queries only, or unable to rank settings.

    Issued by the scorers of :func:`make_retrieval_scorer` (and
    :meth:`ImageRetriever.score <skretrieval.neighbors.ImageRetriever.score>`) when queries are
    left out because no database item shares their label, and when the database holds a
    single label, so that every query scores 1.0 whatever the parameters. Both happen with
    unshuffled cross-validation folds of data sorted by label.

    Examples
    --------
    >>> import warnings
    >>> from skretrieval.metrics import UndefinedRetrievalMetricWarning
    >>> from skretrieval.neighbors import ImageRetriever
    >>> retriever = ImageRetriever().fit([[1.0, 0.0], [0.0, 1.0]], y=[0, 0])
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     retriever.score([[1.0, 0.0]], [0])
    1.0
    >>> caught[0].category is UndefinedRetrievalMetricWarning
    True
    """


_SCORE_FUNCTIONS = {
    "map": mean_average_precision,
    "precision_at_k": precision_at_k,
    "recall_at_k": recall_at_k,
}


def _split_retriever(estimator, X):
    """Return ``(retriever, Xt)``: the final retriever and ``X`` transformed up to it.

    ``X=None`` stays None: the fitted database queries itself.
    """
    steps = getattr(estimator, "steps", None)
    retriever, Xt = estimator, X
    if steps is not None:  # a Pipeline ending in the retriever
        retriever = steps[-1][1]
        # Step by step rather than ``estimator[:-1].transform``: a sliced Pipeline judges
        # itself unfitted when its last transformer is stateless.
        for _, transformer in steps[:-1]:
            if Xt is not None and transformer is not None and transformer != "passthrough":
                Xt = transformer.transform(Xt)
    # Any estimator with ImageRetriever's public distance_blocks method can be scored.
    if not hasattr(retriever, "distance_blocks"):
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
        averaged over all queries that have at least one relevant database item. ``X=None``
        is leave-one-out: each database item queries the others, and is not its own match.
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
        for start, stop, distances in retriever.distance_blocks(Xt):
            if stop > len(y):
                raise ValueError(
                    f"the retriever returned distances for {stop} queries but y has {len(y)} "
                    "labels."
                )
            relevant = y[start:stop, None] == database_labels[None, :]
            if Xt is None:
                # Leave-one-out: the item itself (last, at an infinite distance) is no match.
                rows = np.arange(stop - start)
                relevant[rows, start + rows] = False
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
                "database labels), so the retrieval score is undefined. " + _FOLDS_ADVICE
            )
        _warn_if_undefined(n_seen, n_scored, database_labels)
        return float(total / n_scored)

    def __repr__(self):
        name = self._score_func
        if callable(name):
            name = getattr(name, "__name__", repr(name))
        else:
            name = repr(name)
        arguments = [name] + [f"{key}={value!r}" for key, value in self._kwargs.items()]
        return f"make_retrieval_scorer({', '.join(arguments)})"


def _warn_if_undefined(n_queries, n_scored, database_labels):
    """Warn about queries left out of a score, and about a database of a single class."""
    if n_scored < n_queries:
        warnings.warn(
            f"{n_queries - n_scored} of {n_queries} queries have no database item of their "
            "label and were left out of the retrieval score, which is the mean over the other "
            f"{n_scored}. {_FOLDS_ADVICE}",
            UndefinedRetrievalMetricWarning,
            stacklevel=3,
        )
    labels = np.unique(database_labels)
    if len(labels) == 1:
        warnings.warn(
            f"all {len(database_labels)} database items have the same label "
            f"({labels.tolist()[0]!r}): "
            "every database item is relevant to every scored query, so the score is 1.0 "
            "whatever the parameters and a grid search learns nothing. Fit the retriever on "
            f"several labels. {_FOLDS_ADVICE}",
            UndefinedRetrievalMetricWarning,
            stacklevel=3,
        )


@validate_params(
    {
        "score_func": [StrOptions(set(_SCORE_FUNCTIONS)), callable],
        "k": [Interval(Integral, 1, None, closed="left"), None],
        "interpolation": [StrOptions(set(INTERPOLATIONS))],
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
        Metric. A callable must have the signature of the functions of
        :mod:`skretrieval.metrics`, ``score_func(y_true, y_score, **kwargs) -> float`` with
        ``y_true`` and ``y_score`` of shape (n_queries, n_database), skip the queries without
        positives and return their mean.
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
