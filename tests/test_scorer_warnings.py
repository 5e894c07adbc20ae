"""The retrieval scorers warn when queries are left out of a score and when the database has a
single label, the two ways unshuffled folds of data sorted by label mislead a grid search."""

import warnings

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold
from sklearn.pipeline import make_pipeline

from skretrieval.metrics import (
    RETRIEVAL_SCORERS,
    UndefinedRetrievalMetricWarning,
    make_retrieval_scorer,
    map_scorer,
)
from skretrieval.neighbors import ImageRetriever
from skretrieval.whitening import PCAWhitening


def sorted_dataset(n_labels=3):
    """4 vectors of each of ``n_labels`` labels, sorted by label."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(n_labels, 6)) * 3
    y = np.repeat(np.arange(n_labels), 4)
    X = centres[y] + rng.normal(size=(len(y), 6))
    return X, y


def grid(cv):
    return GridSearchCV(
        make_pipeline(PCAWhitening(), ImageRetriever()),
        {"pcawhitening__n_components": [2, 4]},
        scoring=map_scorer,
        cv=cv,
    )


def undefined(caught):
    return [str(w.message) for w in caught if w.category is UndefinedRetrievalMetricWarning]


def test_unshuffled_folds_of_sorted_labels_warn_with_the_count():
    X, y = sorted_dataset()
    # KFold(2) in order: the first test fold holds labels 0 (4 items) and 1 (2 items), its
    # training fold labels 1 and 2, so the 4 queries of label 0 have nothing to match; the
    # second fold mirrors it with the 4 queries of label 2.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        search = grid(KFold(2)).fit(X, y)
    messages = undefined(caught)
    # Two folds times two settings.
    assert len(messages) == 4
    assert all(m.startswith("4 of 6 queries have no database item of their") for m in messages)
    assert all("StratifiedKFold" in m for m in messages)
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()


def test_stratified_shuffled_folds_do_not_warn():
    X, y = sorted_dataset()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UndefinedRetrievalMetricWarning)
        grid(StratifiedKFold(2, shuffle=True, random_state=0)).fit(X, y)


def test_a_single_label_warns_that_every_setting_scores_one():
    X, _ = sorted_dataset()
    y = np.zeros(12, dtype=int)
    with pytest.warns(UndefinedRetrievalMetricWarning, match=r"same label \(0\).*1\.0") as caught:
        search = grid(KFold(3)).fit(X, y)
    assert len(undefined(caught)) == 6  # three folds times two settings
    assert np.all(search.cv_results_["mean_test_score"] == 1.0)


def test_warnings_of_direct_calls_and_every_predefined_scorer():
    X, y = sorted_dataset(n_labels=4)
    retriever = ImageRetriever().fit(X[:12], y[:12])  # labels 0, 1 and 2 only
    for name, scorer in RETRIEVAL_SCORERS.items():
        with pytest.warns(UndefinedRetrievalMetricWarning, match="^4 of 16 queries") as caught:
            scorer(retriever, X, y)
        assert len(undefined(caught)) == 1, name
    with pytest.warns(UndefinedRetrievalMetricWarning, match="^4 of 16 queries"):
        retriever.score(X, y)
    # A callable metric goes through the same scorer.
    scorer = make_retrieval_scorer(lambda y_true, y_score: 0.5)
    with pytest.warns(UndefinedRetrievalMetricWarning, match="^4 of 16 queries"):
        assert scorer(retriever, X, y) == 0.5
    # Every query matched: silent.
    with warnings.catch_warnings():
        warnings.simplefilter("error", UndefinedRetrievalMetricWarning)
        map_scorer(retriever, X[:12], y[:12])


def test_the_warning_is_a_user_warning():
    assert issubclass(UndefinedRetrievalMetricWarning, UserWarning)
