"""Tests for skretrieval.metrics: oracles are scikit-learn, plain loops and hand-worked cases."""

import pickle
from fractions import Fraction

import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.metrics import average_precision_score
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer

from skretrieval.metrics import (
    RETRIEVAL_SCORERS,
    average_precision,
    evaluate_revisited,
    make_retrieval_scorer,
    map_scorer,
    map_trapezoid_scorer,
    mean_average_precision,
    precision_at_1_scorer,
    precision_at_5_scorer,
    precision_at_10_scorer,
    precision_at_k,
    recall_at_k,
    ukbench_score,
)

# --------------------------------------------------------------------------------------------
# Independent oracles (plain Python loops straight from the definitions)
# --------------------------------------------------------------------------------------------


def _trapezoid_oracle(positive_ranks, n_positives):
    """Oxford/Paris AP from the sorted 0-based ranks of the retrieved positives."""
    total = 0.0
    for j, r in enumerate(sorted(positive_ranks)):
        before = 1.0 if r == 0 else j / r
        after = (j + 1) / (r + 1)
        total += (before + after) / 2
    return total / n_positives


def _trapezoid_from_scores(y_true, y_score, junk=None):
    n = len(y_true)
    junk = np.zeros(n, dtype=bool) if junk is None else np.asarray(junk, dtype=bool)
    order = sorted(range(n), key=lambda i: -y_score[i])  # Python's sort is stable
    order = [i for i in order if not junk[i]]
    ranks = [r for r, i in enumerate(order) if y_true[i]]
    return _trapezoid_oracle(ranks, len(ranks))


def _random_case(rng, n_database, tie_levels=None):
    y_true = rng.random(n_database) < rng.uniform(0.05, 0.6)
    y_true[rng.integers(n_database)] = True  # at least one positive
    if tie_levels is None:
        y_score = rng.normal(size=n_database)
    else:
        y_score = rng.integers(0, tie_levels, size=n_database)
    return y_true, y_score


# --------------------------------------------------------------------------------------------
# Step AP == scikit-learn
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tie_levels", [None, 2, 3, 10])
def test_step_average_precision_matches_sklearn(tie_levels):
    rng = np.random.default_rng(tie_levels or 0)
    for _ in range(100):
        y_true, y_score = _random_case(rng, int(rng.integers(1, 40)), tie_levels)
        expected = average_precision_score(y_true, y_score)
        assert_allclose(average_precision(y_true, y_score), expected, rtol=1e-12, atol=1e-15)


def test_step_average_precision_all_scores_tied():
    # One threshold: precision = 2/5 for the whole list, recall jumps from 0 to 1.
    y_true = [1, 0, 0, 1, 0]
    assert average_precision(y_true, [7, 7, 7, 7, 7]) == pytest.approx(2 / 5)
    assert average_precision_score(y_true, [7, 7, 7, 7, 7]) == pytest.approx(2 / 5)


def test_step_mean_average_precision_matches_sklearn_per_row_with_ties():
    rng = np.random.default_rng(1)
    y_true = rng.random((30, 25)) < 0.3
    y_true[:, 0] = True
    y_score = rng.integers(0, 4, size=(30, 25))  # heavy ties
    expected = np.mean(
        [average_precision_score(t, s) for t, s in zip(y_true, y_score, strict=True)]
    )
    assert_allclose(mean_average_precision(y_true, y_score), expected, rtol=1e-12)


def test_step_junk_equals_sklearn_on_the_remaining_items():
    rng = np.random.default_rng(2)
    for _ in range(50):
        y_true, y_score = _random_case(rng, 30, tie_levels=5)
        junk = rng.random(30) < 0.3
        junk[np.flatnonzero(y_true)[0]] = False  # keep one positive
        expected = average_precision_score(y_true[~junk], y_score[~junk])
        assert_allclose(average_precision(y_true, y_score, junk=junk), expected, rtol=1e-12)


def test_score_dtypes_do_not_matter():
    y_true = np.array([0, 1, 1, 0, 1])
    scores = np.array([3, 1, 2, 0, 3])
    expected = average_precision_score(y_true, scores)
    for dtype in (np.uint8, np.int64, np.float32, np.float64):
        assert average_precision(y_true, scores.astype(dtype)) == pytest.approx(expected)
    assert average_precision(y_true.astype(bool), scores) == pytest.approx(expected)
    assert average_precision(y_true.tolist(), scores.tolist()) == pytest.approx(expected)


# --------------------------------------------------------------------------------------------
# Trapezoid AP: hand-worked cases
# --------------------------------------------------------------------------------------------


def test_trapezoid_hand_worked():
    # Positives at ranks 0 and 2 of 4.
    #   1st positive (j=0, r=0): before 1, after 1/1 -> (1 + 1) / 2 = 1
    #   2nd positive (j=1, r=2): before 1/2, after 2/3 -> (1/2 + 2/3) / 2 = 7/12
    #   AP = (1 + 7/12) / 2 = 19/24
    y_true = [1, 0, 1, 0]
    y_score = [4, 3, 2, 1]
    assert average_precision(y_true, y_score, interpolation="trapezoid") == pytest.approx(19 / 24)


def test_trapezoid_first_positive_not_first():
    # Positive at rank 1 only: before 0/1 = 0, after 1/2 -> AP = 1/4.
    assert average_precision([0, 1, 0], [3, 2, 1], interpolation="trapezoid") == pytest.approx(
        1 / 4
    )


def test_trapezoid_junk_removal_shifts_ranks():
    # Ranking: item 0 (positive), 1 (junk), 2 (positive), 3.
    # Without junk: ranks 0 and 2 -> 19/24. Deleting item 1: ranks 0 and 1 -> AP = 1.
    y_true = [1, 0, 1, 0]
    y_score = [4, 3, 2, 1]
    junk = [0, 1, 0, 0]
    assert average_precision(y_true, y_score, interpolation="trapezoid", junk=junk) == 1.0
    # A junk item that is also flagged relevant is junk: only item 2 remains positive, rank 1
    # after deleting item 0 -> (0/1 + 1/2) / 2 = 1/4.
    assert average_precision(
        y_true, y_score, interpolation="trapezoid", junk=[1, 0, 0, 0]
    ) == pytest.approx(1 / 4)


def test_trapezoid_ties_are_broken_by_database_index():
    # Items 0 and 1 tie: the stable sort ranks item 0 (negative) first, the positive second:
    # AP = (0/1 + 1/2) / 2 = 1/4. Swapping the items puts the positive first: AP = 1.
    assert average_precision([0, 1, 0], [5, 5, 1], interpolation="trapezoid") == 0.25
    assert average_precision([1, 0, 0], [5, 5, 1], interpolation="trapezoid") == 1.0


def test_trapezoid_matches_loop_oracle():
    rng = np.random.default_rng(3)
    y_true = rng.random((40, 30)) < 0.3
    y_true[:, 5] = True
    y_score = rng.integers(0, 6, size=(40, 30))
    junk = (rng.random((40, 30)) < 0.2) & ~y_true
    expected = [
        _trapezoid_from_scores(t, s, j) for t, s, j in zip(y_true, y_score, junk, strict=True)
    ]
    got = mean_average_precision(y_true, y_score, interpolation="trapezoid", junk=junk)
    assert_allclose(got, np.mean(expected), rtol=1e-12)
    for i in range(5):
        assert_allclose(
            average_precision(y_true[i], y_score[i], interpolation="trapezoid", junk=junk[i]),
            expected[i],
            rtol=1e-12,
        )


# --------------------------------------------------------------------------------------------
# mAP, P@k, R@k
# --------------------------------------------------------------------------------------------


def test_mean_average_precision_skips_queries_without_positives():
    y_score = [[4, 3, 2, 1]] * 3
    y_true = [[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 0]]
    # Query 0: (1 + 2/3) / 2 = 5/6; query 1 skipped; query 2: 1/2. Mean = 2/3.
    assert mean_average_precision(y_true, y_score) == pytest.approx(2 / 3)
    # A query whose only positive is junk has no positive either.
    junk = [[0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0]]
    assert mean_average_precision(y_true, y_score, junk=junk) == pytest.approx(5 / 6)


def test_mean_average_precision_accepts_one_query_as_1d():
    assert mean_average_precision([1, 0, 1, 0], [4, 3, 2, 1]) == pytest.approx(5 / 6)


def test_precision_and_recall_at_k_hand_worked():
    y_score = [[5, 4, 3, 2, 1]] * 3
    y_true = [[1, 0, 1, 0, 1], [0, 0, 0, 0, 0], [0, 1, 0, 0, 0]]
    # Query 1 has no positive and is skipped.
    # P@1: q0 1/1, q2 0/1 -> 1/2. P@2: q0 1/2, q2 1/2 -> 1/2. P@5: q0 3/5, q2 1/5 -> 2/5.
    assert precision_at_k(y_true, y_score, 1) == pytest.approx(1 / 2)
    assert precision_at_k(y_true, y_score, 2) == pytest.approx(1 / 2)
    assert precision_at_k(y_true, y_score, 5) == pytest.approx(2 / 5)
    # R@1: q0 1/3, q2 0 -> 1/6. R@3: q0 2/3, q2 1 -> 5/6. R@5: 1.
    assert recall_at_k(y_true, y_score, 1) == pytest.approx(1 / 6)
    assert recall_at_k(y_true, y_score, 3) == pytest.approx(5 / 6)
    assert recall_at_k(y_true, y_score, 5) == pytest.approx(1.0)


def test_precision_and_recall_at_k_remove_junk_before_ranking():
    # Query 0 with item 0 junk: ranking 1, 2, 3, 4 with positives 2 and 4.
    y_true = [[1, 0, 1, 0, 1]]
    y_score = [[5, 4, 3, 2, 1]]
    junk = [[1, 0, 0, 0, 0]]
    assert precision_at_k(y_true, y_score, 1, junk=junk) == 0.0
    assert precision_at_k(y_true, y_score, 2, junk=junk) == 0.5  # items 1, 2
    assert recall_at_k(y_true, y_score, 2, junk=junk) == 0.5  # 1 of the 2 non-junk positives
    assert recall_at_k(y_true, y_score, 4, junk=junk) == 1.0


def test_precision_at_k_ties_use_stable_order():
    assert precision_at_k([0, 1, 0], [1, 1, 0], 1) == 0.0
    assert precision_at_k([1, 0, 0], [1, 1, 0], 1) == 1.0


def test_precision_at_k_matches_loop_oracle():
    rng = np.random.default_rng(4)
    y_true = rng.random((20, 15)) < 0.3
    y_score = rng.normal(size=(20, 15))
    has_positive = y_true.any(axis=1)
    for k in (1, 3, 15):
        top = np.argsort(-y_score, axis=1)[:, :k]
        hits = np.array([y_true[i, top[i]].sum() for i in range(20)])
        assert_allclose(precision_at_k(y_true, y_score, k), np.mean(hits[has_positive] / k))
        recall = hits[has_positive] / y_true[has_positive].sum(axis=1)
        assert_allclose(recall_at_k(y_true, y_score, k), np.mean(recall))


def test_ukbench_score_by_hand():
    target = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    indices = np.array([[0, 1, 4, 2, 3, 5, 6, 7], [4, 5, 6, 7, 0, 1, 2, 3]])
    y_true = np.array([0, 1])[:, None] == target[None, :]
    # Scores that rank each row of `indices` best first.
    y_score = np.empty(indices.shape)
    np.put_along_axis(y_score, indices, -np.arange(8.0), axis=1)
    # Query 0 (group 0): 0, 1, 2 in its top 4 -> 3; query 1 (group 1): all four -> 4.
    assert ukbench_score(y_true, y_score) == 3.5


def test_ukbench_score_conventions():
    # One query as 1-D; ties in index order, as precision_at_k.
    assert ukbench_score([0, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]) == 3.0
    assert ukbench_score([0, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]) == 4 * precision_at_k(
        [0, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1], 4
    )
    # The mean is over all queries, a query without a relevant item counting 0.
    assert ukbench_score([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]], [[5, 4, 3, 2, 1]] * 2) == 1.0
    with pytest.raises(ValueError, match="at least 4 database items"):
        ukbench_score([[1, 1, 0]], [[3, 2, 1]])
    with pytest.raises(ValueError, match="same shape"):
        ukbench_score([[1, 1, 0, 0]], [[3, 2, 1]])


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("function", [mean_average_precision, average_precision])
def test_shape_mismatch_is_an_error(function):
    with pytest.raises(ValueError, match="same shape"):
        function([1, 0, 1], [0.1, 0.2])


def test_nan_scores_are_an_error():
    with pytest.raises(ValueError, match="NaN"):
        mean_average_precision([[1, 0]], [[np.nan, 0.2]])
    with pytest.raises(ValueError, match="NaN"):
        precision_at_k([[1, 0]], [[np.nan, 0.2]], 1)


def test_infinite_scores_rank_first_or_last():
    # +inf ranks first, -inf last. Ranking: item 0 (positive), 1, then the tie {2, 3}.
    y_true = [1, 0, 0, 1]
    y_score = [np.inf, 0.5, -np.inf, -np.inf]
    # step: the tie is one threshold with precision 2/4 -> AP = (1 + 1/2) / 2 = 3/4
    assert average_precision(y_true, y_score) == pytest.approx(3 / 4)
    # trapezoid: stable order 2 then 3, positives at ranks 0 and 3:
    # (1 + (1/3 + 2/4) / 2) / 2 = (1 + 5/12) / 2 = 17/24
    assert average_precision(y_true, y_score, interpolation="trapezoid") == pytest.approx(17 / 24)


@pytest.mark.parametrize("function", [precision_at_k, recall_at_k])
def test_bad_k_is_an_error(function):
    with pytest.raises(ValueError, match="'k' parameter"):
        function([[1, 0]], [[1, 0]], 0)
    with pytest.raises(ValueError, match="larger than the number of database items"):
        function([[1, 0]], [[1, 0]], 3)


def test_unknown_interpolation_is_an_error():
    with pytest.raises(ValueError, match="'interpolation' parameter"):
        mean_average_precision([[1, 0]], [[1, 0]], interpolation="linear")


@pytest.mark.parametrize(
    "function, args",
    [
        (mean_average_precision, ()),
        (precision_at_k, (1,)),
        (recall_at_k, (1,)),
    ],
)
def test_all_queries_without_positives_is_an_error(function, args):
    with pytest.raises(ValueError, match="no query has a positive"):
        function([[0, 0], [0, 0]], [[1, 0], [0, 1]], *args)


def test_average_precision_errors():
    with pytest.raises(ValueError, match="no positive"):
        average_precision([0, 0, 0], [1, 2, 3])
    with pytest.raises(ValueError, match="no positive"):
        average_precision([1, 0, 0], [1, 2, 3], junk=[1, 0, 0])
    with pytest.raises(ValueError, match="one query"):
        average_precision([[1, 0]], [[1, 0]])
    with pytest.raises(ValueError, match="binary relevance"):
        average_precision([2, 0, 1], [1, 2, 3])
    with pytest.raises(ValueError, match="junk must have the same shape"):
        average_precision([1, 0, 1], [1, 2, 3], junk=[0, 1])
    with pytest.raises(TypeError, match="real numbers"):
        average_precision([1, 0], ["a", "b"])


# --------------------------------------------------------------------------------------------
# Revisited Oxford / Paris
# --------------------------------------------------------------------------------------------

# 8 database items, 3 queries.
_GND = [
    {"easy": [0, 3], "hard": [5], "junk": [1], "bbx": [0.0, 0.0, 10.0, 10.0]},
    {"easy": [], "hard": [2, 7], "junk": []},
    {"easy": [4], "hard": [], "junk": [0, 1, 2]},
]
_RANKS = np.array(
    [
        [0, 1, 2, 3, 4, 5, 6, 7],
        [7, 6, 5, 4, 3, 2, 1, 0],
        [0, 1, 2, 3, 4, 5, 6, 7],
    ]
)


def test_evaluate_revisited_hand_worked():
    F = Fraction
    # Query 0, ranking 0 1 2 3 4 5 6 7.
    #   easy   (pos {0, 3}, junk {1, 5}):    0P 2 3P 4 6 7 -> ranks 0, 2:
    #          AP = (1 + (1/2 + 2/3)/2) / 2 = 19/24; last positive at 1-based rank 3:
    #          P@1 = 1/1, P@5 = 2/min(5, 3) = 2/3
    #   medium (pos {0, 3, 5}, junk {1}):    0P 2 3P 4 5P 6 7 -> ranks 0, 2, 4:
    #          AP = (1 + 7/12 + (2/4 + 3/5)/2) / 3 = (1 + 7/12 + 11/20) / 3 = 32/45;
    #          P@1 = 1, P@5 = 3/5
    #   hard   (pos {5}, junk {1, 0, 3}):    2 4 5P 6 7 -> rank 2: AP = (0/2 + 1/3)/2 = 1/6;
    #          P@1 = 0/1, P@5 = 1/min(5, 3) = 1/3
    # Query 1, ranking 7 6 5 4 3 2 1 0 (no easy positive: skipped in easy).
    #   medium = hard (pos {2, 7}, no junk): ranks 0 and 5:
    #          AP = (1 + (1/5 + 2/6)/2) / 2 = (1 + 4/15) / 2 = 19/30; P@1 = 1, P@5 = 1/5
    # Query 2, ranking 0 1 2 3 4 5 6 7 (no hard positive: skipped in hard).
    #   easy = medium (pos {4}, junk {0, 1, 2}): 3 4P 5 6 7 -> rank 1:
    #          AP = (0/1 + 1/2)/2 = 1/4; P@1 = 0, P@5 = 1/min(5, 2) = 1/2
    expected = {
        "easy": (
            (F(19, 24) + F(1, 4)) / 2,  # 25/48
            {1: (1 + 0) / F(2), 5: (F(2, 3) + F(1, 2)) / 2},
            2,
        ),
        "medium": (
            (F(32, 45) + F(19, 30) + F(1, 4)) / 3,
            {1: (1 + 1 + 0) / F(3), 5: (F(3, 5) + F(1, 5) + F(1, 2)) / 3},
            3,
        ),
        "hard": (
            (F(1, 6) + F(19, 30)) / 2,  # 2/5
            {1: (0 + 1) / F(2), 5: (F(1, 3) + F(1, 5)) / 2},
            2,
        ),
    }
    results = evaluate_revisited(_RANKS, _GND, ks=(1, 5))
    assert set(results) == {"easy", "medium", "hard"}
    for setting, (map_, mp, n_queries) in expected.items():
        assert results[setting]["map"] == pytest.approx(float(map_), rel=1e-12)
        assert set(results[setting]["mp@k"]) == {1, 5}
        for k, value in mp.items():
            assert results[setting]["mp@k"][k] == pytest.approx(float(value), rel=1e-12)
        assert results[setting]["n_queries"] == n_queries
    assert np.isnan(results["easy"]["ap"][1])
    assert np.isnan(results["hard"]["ap"][2])
    assert_allclose(results["medium"]["ap"], [32 / 45, 19 / 30, 1 / 4])
    # The three settings really differ.
    assert len({results[s]["map"] for s in results}) == 3


def test_evaluate_revisited_truncated_ranking_counts_missing_positives_as_zero():
    # Only the top 3 of 8 are listed. Medium positives of query 0: {0, 3, 5}, junk {1}:
    # listed 0P 2 (1 deleted); 3 and 5 are not retrieved -> AP = (1 + 0 + 0) / 3.
    results = evaluate_revisited(_RANKS[:, :3], _GND, ks=(1,))
    assert results["medium"]["ap"][0] == pytest.approx(1 / 3)
    # Query 2, easy positive {4} not listed: AP 0 and precision 0.
    assert results["easy"]["ap"][2] == 0.0
    assert results["easy"]["mp@k"][1] == pytest.approx((1 + 0) / 2)


def test_evaluate_revisited_matches_loop_oracle():
    rng = np.random.default_rng(5)
    n_queries, n_database = 12, 40
    ranks = np.array([rng.permutation(n_database) for _ in range(n_queries)])
    gnd = []
    for _ in range(n_queries):
        labels = rng.choice(4, size=n_database, p=[0.7, 0.1, 0.1, 0.1])  # none/easy/hard/junk
        gnd.append({key: np.flatnonzero(labels == value) for value, key in
                    [(1, "easy"), (2, "hard"), (3, "junk")]})
    results = evaluate_revisited(ranks, gnd, ks=(1, 5, 10))
    settings = {
        "easy": (("easy",), ("junk", "hard")),
        "medium": (("easy", "hard"), ("junk",)),
        "hard": (("hard",), ("junk", "easy")),
    }
    for setting, (pos_keys, junk_keys) in settings.items():
        aps, precisions = [], {k: [] for k in (1, 5, 10)}
        for i in range(n_queries):
            positives = set().union(*(set(gnd[i][key].tolist()) for key in pos_keys))
            junk = set().union(*(set(gnd[i][key].tolist()) for key in junk_keys))
            if not positives:
                continue
            kept = [item for item in ranks[i] if item not in junk]
            positive_ranks = [r for r, item in enumerate(kept) if item in positives]
            aps.append(_trapezoid_oracle(positive_ranks, len(positives)))
            for k in precisions:
                cutoff = min(max(positive_ranks) + 1, k)
                precisions[k].append(sum(r < cutoff for r in positive_ranks) / cutoff)
        assert results[setting]["map"] == pytest.approx(np.mean(aps), rel=1e-12)
        for k in precisions:
            assert results[setting]["mp@k"][k] == pytest.approx(np.mean(precisions[k]))


def test_evaluate_revisited_errors():
    with pytest.raises(ValueError, match="distinct"):
        evaluate_revisited([[0, 0, 1]], [{"easy": [0], "hard": [], "junk": []}])
    with pytest.raises(ValueError, match="no key 'junk'"):
        evaluate_revisited([[0, 1]], [{"easy": [0], "hard": []}])
    with pytest.raises(ValueError, match="2 entries but ranks has 1 rows"):
        evaluate_revisited([[0, 1]], [{"easy": [0], "hard": [], "junk": []}] * 2)
    with pytest.raises(ValueError, match="2-D"):
        evaluate_revisited([0, 1], [{"easy": [0], "hard": [], "junk": []}])
    with pytest.raises(ValueError, match="ks must be integers >= 1"):
        evaluate_revisited([[0, 1]], [{"easy": [0], "hard": [], "junk": []}], ks=(0,))


# --------------------------------------------------------------------------------------------
# Scorers
# --------------------------------------------------------------------------------------------


class _BruteForceRetriever(BaseEstimator):
    """Stand-in for ImageRetriever: the attributes and generator the scorers rely on."""

    def __init__(self, block_size=4):
        self.block_size = block_size

    def fit(self, X, y=None):
        self.database_ = np.asarray(X, dtype=float)
        self.y_ = None if y is None else np.asarray(y)
        return self

    def distance_blocks(self, X):
        X = np.asarray(X, dtype=float)
        for start in range(0, len(X), self.block_size):
            stop = min(start + self.block_size, len(X))
            diff = X[start:stop, None, :] - self.database_[None, :, :]
            yield start, stop, np.sqrt((diff**2).sum(axis=-1))


class _Scramble(TransformerMixin, BaseEstimator):
    """Replaces the features by noise when ``destroy`` is True (kills the retrieval signal)."""

    def __init__(self, destroy=False):
        self.destroy = destroy

    def fit(self, X, y=None):
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def transform(self, X):
        X = np.asarray(X, dtype=float)
        if not self.destroy:
            return X
        return np.random.default_rng(len(X)).normal(size=X.shape)


def _clustered(n_classes=4, per_class=12, n_features=6, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(n_classes, n_features))
    y = np.repeat(np.arange(n_classes), per_class)
    X = centres[y] + rng.normal(size=(len(y), n_features))
    return X, y


def _direct_scores(X_db, y_db, X_q, y_q):
    distances = np.sqrt(((X_q[:, None] - X_db[None]) ** 2).sum(-1))
    return y_q[:, None] == y_db[None, :], -distances


@pytest.mark.parametrize("block_size", [1, 3, 7, 100])
def test_scorer_blocks_aggregate_to_the_unblocked_value(block_size):
    X, y = _clustered(seed=1)
    X_db, y_db, X_q, y_q = X[::2], y[::2], X[1::2], y[1::2].copy()
    y_q[:5] = 99  # queries without any relevant database item: skipped, whichever block
    retriever = _BruteForceRetriever(block_size=block_size).fit(X_db, y_db)
    y_true, y_score = _direct_scores(X_db, y_db, X_q, y_q)
    cases = [
        (map_scorer, mean_average_precision(y_true, y_score)),
        (map_trapezoid_scorer, mean_average_precision(y_true, y_score, interpolation="trapezoid")),
        (precision_at_1_scorer, precision_at_k(y_true, y_score, 1)),
        (precision_at_5_scorer, precision_at_k(y_true, y_score, 5)),
        (precision_at_10_scorer, precision_at_k(y_true, y_score, 10)),
        (RETRIEVAL_SCORERS["recall_at_5"], recall_at_k(y_true, y_score, 5)),
    ]
    for scorer, expected in cases:
        assert scorer(retriever, X_q, y_q) == pytest.approx(expected, rel=1e-12)


def test_scorer_in_pipeline_and_callable_score_func():
    X, y = _clustered(seed=2)
    pipe = Pipeline([("scale", Normalizer()), ("retriever", _BruteForceRetriever())])
    pipe.fit(X[::2], y[::2])
    Xt_db, Xt_q = Normalizer().transform(X[::2]), Normalizer().transform(X[1::2])
    y_true, y_score = _direct_scores(Xt_db, y[::2], Xt_q, y[1::2])
    assert map_scorer(pipe, X[1::2], y[1::2]) == pytest.approx(
        mean_average_precision(y_true, y_score)
    )
    scorer = make_retrieval_scorer(recall_at_k, k=3)
    assert scorer(pipe, X[1::2], y[1::2]) == pytest.approx(recall_at_k(y_true, y_score, 3))


def test_scorer_in_grid_search_and_cross_val_score():
    X, y = _clustered(seed=3)
    pipe = Pipeline([("scramble", _Scramble()), ("retriever", _BruteForceRetriever())])
    cv = KFold(3, shuffle=True, random_state=0)
    search = GridSearchCV(
        pipe, {"scramble__destroy": [True, False]}, scoring=map_scorer, cv=cv
    ).fit(X, y)
    assert search.best_params_ == {"scramble__destroy": False}
    assert search.best_score_ > 0.9
    scores = cross_val_score(_BruteForceRetriever(), X, y, scoring=map_trapezoid_scorer, cv=cv)
    assert scores.shape == (3,) and np.all((scores > 0.9) & (scores <= 1))
    multi = GridSearchCV(
        pipe,
        {"scramble__destroy": [True, False]},
        scoring={"map": RETRIEVAL_SCORERS["map"], "p@1": RETRIEVAL_SCORERS["precision_at_1"]},
        refit="map",
        cv=cv,
    ).fit(X, y)
    assert multi.best_params_ == {"scramble__destroy": False}


def test_image_retriever_in_grid_search():
    neighbors = pytest.importorskip(
        "skretrieval.neighbors", reason="skretrieval.neighbors (ImageRetriever) not written yet"
    )
    X, y = _clustered(n_classes=5, per_class=10, seed=4)
    pipe = Pipeline(
        [
            ("scramble", _Scramble()),
            ("scale", Normalizer()),
            ("retriever", neighbors.ImageRetriever(metric="cosine")),
        ]
    )
    search = GridSearchCV(
        pipe,
        {"scramble__destroy": [True, False]},
        scoring=RETRIEVAL_SCORERS["map"],
        cv=KFold(3, shuffle=True, random_state=0),
    ).fit(X, y)
    assert search.best_params_ == {"scramble__destroy": False}
    means = search.cv_results_["mean_test_score"]
    assert means[1] > means[0]
    assert search.best_score_ > 0.8


def test_scorer_repr_and_pickle():
    assert repr(map_scorer) == "make_retrieval_scorer('map')"
    assert repr(map_trapezoid_scorer) == "make_retrieval_scorer('map', interpolation='trapezoid')"
    assert repr(precision_at_5_scorer) == "make_retrieval_scorer('precision_at_k', k=5)"
    scorer = make_retrieval_scorer(recall_at_k, k=2)
    assert repr(scorer) == "make_retrieval_scorer(recall_at_k, k=2)"
    X, y = _clustered(seed=6)
    retriever = _BruteForceRetriever().fit(X[::2], y[::2])
    restored = pickle.loads(pickle.dumps(precision_at_5_scorer))
    assert restored(retriever, X[1::2], y[1::2]) == precision_at_5_scorer(
        retriever, X[1::2], y[1::2]
    )


def test_scorer_errors():
    X, y = _clustered(seed=7)
    unlabelled = _BruteForceRetriever().fit(X[::2])
    with pytest.raises(ValueError, match="must be fitted with labels y"):
        map_scorer(unlabelled, X[1::2], y[1::2])
    labelled = _BruteForceRetriever().fit(X[::2], y[::2])
    with pytest.raises(ValueError, match="query labels y"):
        map_scorer(labelled, X[1::2], None)
    with pytest.raises(ValueError, match="no query has a relevant database item"):
        map_scorer(labelled, X[1::2], np.full(len(X[1::2]), -1))
    with pytest.raises(ValueError, match="labels"):
        map_scorer(labelled, X[1::2], y[1::4])
    with pytest.raises(TypeError, match="ImageRetriever or a Pipeline ending in one"):
        map_scorer(Normalizer().fit(X), X, y)
    with pytest.raises(ValueError, match="needs a cut-off rank k"):
        make_retrieval_scorer("precision_at_k")
    with pytest.raises(ValueError, match="k is not used"):
        make_retrieval_scorer("map", k=3)
    with pytest.raises(ValueError, match="'score_func' parameter"):
        make_retrieval_scorer("ndcg")
    with pytest.raises(ValueError, match="interpolation only applies"):
        make_retrieval_scorer("recall_at_k", k=1, interpolation="trapezoid")
