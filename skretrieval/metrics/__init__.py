"""Retrieval metrics: average precision, mAP, precision and recall at k, N-S score, scorers.

Two families of functions live here:

- **Score-based** functions (:func:`average_precision`, :func:`mean_average_precision`,
  :func:`precision_at_k`, :func:`recall_at_k`, :func:`ukbench_score`) take a relevance matrix
  ``y_true`` and a score matrix ``y_score`` of shape ``(n_queries, n_database)``, higher score =
  more similar (pass ``-distances``). One ``argsort`` over the whole matrix ranks every query at
  once.
- **Ranking-based** :func:`evaluate_revisited` takes ranked database indices and a revisited
  Oxford/Paris ground truth (Radenovic et al., "Revisiting Oxford and Paris: Large-Scale Image
  Retrieval Benchmarking", CVPR 2018) and reports mAP and mP@k for the easy, medium and hard
  settings.

Both families share one vectorised core that computes average precision from relevance flags
already put in ranked order. :func:`make_retrieval_scorer` wraps the metrics for
``GridSearchCV(scoring=...)`` and ``cross_val_score(scoring=...)``; they warn
(:class:`UndefinedRetrievalMetricWarning`) when queries are left out for want of a database item
of their label, or when the database holds a single label, as unshuffled folds of data sorted
by label produce: use ``StratifiedKFold(shuffle=True)``.

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

from skretrieval.metrics._ranking import (
    average_precision,
    mean_average_precision,
    precision_at_k,
    recall_at_k,
    ukbench_score,
)
from skretrieval.metrics._revisited import evaluate_revisited
from skretrieval.metrics._scorer import (
    RETRIEVAL_SCORERS,
    UndefinedRetrievalMetricWarning,
    make_retrieval_scorer,
    map_scorer,
    map_trapezoid_scorer,
    precision_at_1_scorer,
    precision_at_5_scorer,
    precision_at_10_scorer,
)

__all__ = [
    "RETRIEVAL_SCORERS",
    "UndefinedRetrievalMetricWarning",
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
    "ukbench_score",
]
