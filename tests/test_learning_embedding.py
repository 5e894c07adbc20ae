"""Tests of EmbeddingLearner: scikit-learn behaviour, input errors, and retrieval on digits."""

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits, load_iris
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import Normalizer
from sklearn.utils.estimator_checks import parametrize_with_checks

from skretrieval.learning import EmbeddingLearner
from skretrieval.metrics import map_scorer
from skretrieval.neighbors import ImageRetriever

LOSSES = ["vmf", "pddm", "triplet", "contrastive"]


@pytest.fixture(scope="module")
def iris():
    return load_iris(return_X_y=True)


def small_learner(**params):
    defaults = {"n_components": 4, "max_epochs": 3, "random_state": 0, "device": "cpu"}
    return EmbeddingLearner(**{**defaults, **params})


@parametrize_with_checks([EmbeddingLearner(n_components=3, max_epochs=2, device="cpu")])
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def test_get_params_and_clone():
    learner = EmbeddingLearner(
        "triplet", n_components=8, hidden_layer_sizes=(16,), margin=0.2, kappa=16.0
    )
    params = learner.get_params()
    assert params["loss"] == "triplet"
    assert params["hidden_layer_sizes"] == (16,)
    assert params["kappa"] == 16.0 and params["margin"] == 0.2
    cloned = clone(learner)
    assert cloned is not learner and cloned.get_params() == params
    assert cloned.set_params(n_components=3).n_components == 3


@pytest.mark.parametrize("loss", LOSSES)
def test_fit_returns_self_and_sets_attributes(iris, loss):
    X, y = iris
    learner = small_learner(loss=loss, hidden_layer_sizes=(8,))
    assert learner.fit(X, y) is learner
    assert learner.n_features_in_ == 4
    np.testing.assert_array_equal(learner.classes_, [0, 1, 2])
    assert len(learner.loss_curve_) == learner.n_iter_ == len(learner.validation_scores_)
    assert learner.best_epoch_ == int(np.argmax(learner.validation_scores_)) + 1
    assert np.all(np.isfinite(learner.loss_curve_))
    embeddings = learner.transform(X)
    assert embeddings.shape == (150, 4) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)
    assert list(learner.get_feature_names_out()) == [f"embeddinglearner{i}" for i in range(4)]


def test_without_early_stopping_runs_all_epochs(iris):
    X, y = iris
    learner = small_learner(early_stopping=False, max_epochs=4).fit(X, y)
    assert learner.n_iter_ == learner.best_epoch_ == 4
    assert learner.validation_scores_ is None and len(learner.loss_curve_) == 4


def test_early_stopping_stops_after_n_iter_no_change(iris):
    X, y = iris
    learner = small_learner(max_epochs=100, n_iter_no_change=2, tol=0.01).fit(X, y)
    assert learner.n_iter_ < 100
    scores = np.array(learner.validation_scores_)
    # The last 2 epochs did not beat the best score before them by more than tol.
    assert scores[-2:].max() <= scores[:-2].max() + 0.01
    assert learner.best_epoch_ == int(np.argmax(scores)) + 1


def test_standardises_inputs(iris):
    X, y = iris
    learner = small_learner().fit(X, y)
    np.testing.assert_allclose(learner.mean_, X.mean(axis=0), rtol=0.05)
    # Shifting and scaling the features is undone by the standardisation.
    shifted = small_learner().fit(X * 100 + 7, y)
    np.testing.assert_allclose(shifted.transform(X * 100 + 7), learner.transform(X), atol=1e-4)


def test_not_fitted_error(iris):
    with pytest.raises(NotFittedError):
        EmbeddingLearner().transform(iris[0])


def test_pickle_round_trip_gives_the_same_embeddings(iris):
    X, y = iris
    learner = small_learner(loss="pddm", hidden_layer_sizes=(6,)).fit(X, y)
    restored = pickle.loads(pickle.dumps(learner))
    np.testing.assert_array_equal(restored.transform(X), learner.transform(X))
    assert restored.loss_curve_ == learner.loss_curve_


def test_random_state_makes_fit_deterministic_and_leaves_global_rng_alone(iris):
    X, y = iris
    global_state = torch.get_rng_state()
    first = small_learner(loss="triplet", random_state=3).fit(X, y)
    assert torch.equal(torch.get_rng_state(), global_state)
    second = small_learner(loss="triplet", random_state=3).fit(X, y)
    np.testing.assert_array_equal(first.transform(X), second.transform(X))
    assert first.loss_curve_ == second.loss_curve_
    other = small_learner(loss="triplet", random_state=4).fit(X, y)
    assert not np.array_equal(first.transform(X), other.transform(X))


def test_pipeline_and_grid_search_with_map_scorer(iris):
    X, y = iris
    pipeline = Pipeline(
        [
            ("embed", small_learner(max_epochs=2, early_stopping=False)),
            ("retrieve", ImageRetriever(metric="cosine")),
        ]
    )
    search = GridSearchCV(
        pipeline, {"embed__loss": ["vmf", "triplet"]}, scoring=map_scorer, cv=2
    ).fit(X, y)
    assert search.best_params_["embed__loss"] in ("vmf", "triplet")
    assert 0 < search.best_score_ <= 1
    assert search.best_estimator_.score(X, y) == pytest.approx(
        map_scorer(search.best_estimator_, X, y)
    )


def test_fit_without_y_names_y(iris):
    with pytest.raises(ValueError, match="requires y"):
        EmbeddingLearner().fit(iris[0])


def test_single_class_is_rejected(iris):
    X, _ = iris
    with pytest.raises(ValueError, match=r"only 1 class \(7\)"):
        small_learner().fit(X[:10], np.full(10, 7))


def test_classes_with_one_sample_are_named(iris):
    X, _ = iris
    y = np.array(["a"] * 5 + ["b"] + ["c"] * 5 + ["d"])
    with pytest.raises(ValueError, match=r"classes \['b', 'd'\] of y have a single sample"):
        small_learner().fit(X[:12], y)


def test_nan_in_X_is_rejected(iris):
    X, y = iris
    X = X.copy()
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        small_learner().fit(X, y)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"n_components": 0}, "n_components"),
        ({"n_components": 2.5}, "n_components"),
        ({"loss": "hinge"}, "loss"),
        ({"batch_size": 2}, "batch_size"),
        ({"validation_fraction": 1.0}, "validation_fraction"),
        ({"loss": "vmf", "margin": 0.3}, "margin=0.3 is not used by loss='vmf'"),
        ({"hidden_layer_sizes": (4, 0)}, "hidden_layer_sizes must hold positive integers"),
    ],
)
def test_invalid_parameters(iris, params, message):
    X, y = iris
    with pytest.raises(ValueError, match=message):
        small_learner(**params).fit(X, y)


def test_validation_fraction_too_small_to_hold_out(iris):
    X, y = iris
    # Classes of 2 samples must keep both for training.
    with pytest.raises(ValueError, match="holds out no sample"):
        small_learner(validation_fraction=0.5).fit(X[:6], [0, 0, 1, 1, 2, 2])
    # Otherwise at least one sample of every class of 3 or more is held out.
    learner = small_learner(validation_fraction=0.001, max_epochs=1)
    learner.fit(X[:9], np.repeat([0, 1, 2], 3))
    assert learner.validation_scores_ is not None


def test_transform_checks_the_number_of_features(iris):
    X, y = iris
    learner = small_learner().fit(X, y)
    with pytest.raises(ValueError, match="features"):
        learner.transform(X[:, :3])


# --------------------------------------------------------------------------------------------
# Evidence: supervised embeddings beat the unsupervised baseline on digits retrieval
# --------------------------------------------------------------------------------------------

# Measured with random_state 0..3 (10 epochs of 20 batches, 32 dimensions, 1257 training and
# 540 test digits, 1 to 5 s per fit on 2 CPU cores): test mAP of the baseline PCA + L2 0.675;
# vMF 0.884-0.889, PDDM 0.850-0.878, triplet 0.872-0.886, contrastive 0.809-0.822. PDDM trailed
# triplet by at most 0.022, vMF never by more than 0.
DIGITS_PARAMS = {
    "n_components": 32,
    "max_epochs": 10,
    "early_stopping": False,
    "learning_rate": 0.01,
    "batch_size": 64,
    "random_state": 0,
    "device": "cpu",
}
# Low concentration suits 10 classes; the contrastive margin of Radenovic et al. (0.7) is too
# lax in 32 dimensions.
LOSS_PARAMS = {"vmf": {"kappa": 4.0}, "contrastive": {"margin": 1.3}, "pddm": {}, "triplet": {}}
IMPROVEMENT = 0.10
TOLERANCE_VERSUS_TRIPLET = 0.03


def retrieval_map(embedder, X_train, X_test, y_train, y_test):
    embedder.fit(X_train, y_train)
    retriever = ImageRetriever(metric="cosine").fit(embedder.transform(X_train), y_train)
    return retriever.score(embedder.transform(X_test), y_test)


@pytest.fixture(scope="module")
def digits_maps():
    X, y = load_digits(return_X_y=True)
    split = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
    baseline = make_pipeline(PCA(32, random_state=0), Normalizer())
    maps = {"baseline": retrieval_map(baseline, *split)}
    for loss in LOSSES:
        learner = EmbeddingLearner(loss, **DIGITS_PARAMS, **LOSS_PARAMS[loss])
        maps[loss] = retrieval_map(learner, *split)
    return maps


@pytest.mark.parametrize("loss", LOSSES)
def test_every_loss_beats_the_unsupervised_baseline_on_digits(digits_maps, loss):
    assert digits_maps["baseline"] == pytest.approx(0.675, abs=0.01)
    assert digits_maps[loss] > digits_maps["baseline"] + IMPROVEMENT


@pytest.mark.parametrize("loss", ["vmf", "pddm"])
def test_vmf_and_pddm_are_not_worse_than_triplet_on_digits(digits_maps, loss):
    assert digits_maps[loss] >= digits_maps["triplet"] - TOLERANCE_VERSUS_TRIPLET
