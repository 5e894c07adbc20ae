import copy
import pickle

import faiss
import joblib
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

from skretrieval.quantization import ProductQuantizer

pytestmark = pytest.mark.usefixtures("single_faiss_thread")


@parametrize_with_checks(
    # One sub-quantizer divides any feature count; 4 centroids fit the checks' small data.
    [ProductQuantizer(n_subquantizers=1, n_bits=2, random_state=0)]
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


def _clustered(n, d, seed, n_clusters=20, spread=0.3):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, d))
    labels = rng.integers(0, n_clusters, size=n)
    return (centres[labels] + spread * rng.normal(size=(n, d))).astype(np.float32)


def _squared_distances(queries, database):
    """Exact squared Euclidean distances in float64: the oracle."""
    queries, database = queries.astype(np.float64), database.astype(np.float64)
    return ((queries[:, None, :] - database[None, :, :]) ** 2).sum(axis=-1)


def _exact_top_k(queries, database, k):
    return np.argsort(_squared_distances(queries, database), axis=1, kind="stable")[:, :k]


def _recall(found, truth):
    overlaps = [len(np.intersect1d(f, t)) for f, t in zip(found, truth, strict=True)]
    return np.mean(overlaps) / truth.shape[1]


def _decode_8_bit(codes, codebooks):
    """Independent PQ decoder for 8-bit codes: sub-vector m is centroid codes[:, m] of book m."""
    n_subquantizers = codebooks.shape[0]
    parts = [codebooks[m, codes[:, m]] for m in range(n_subquantizers)]
    return np.concatenate(parts, axis=1)


@pytest.fixture(scope="module")
def data():
    database = _clustered(1200, 32, seed=0)
    queries = _clustered(40, 32, seed=1)
    return database, queries


@pytest.fixture(scope="module")
def fitted_pq(data):
    return ProductQuantizer(n_subquantizers=8, n_bits=8, random_state=0).fit(data[0])


@pytest.fixture(scope="module")
def fitted_ivf(data):
    return ProductQuantizer(n_subquantizers=8, n_lists=16, n_probe=4, random_state=0).fit(data[0])


def test_fitted_attributes(data, fitted_pq, fitted_ivf):
    database, _ = data
    for model in (fitted_pq, fitted_ivf):
        assert model.n_samples_fit_ == 1200
        assert model.n_features_in_ == 32
        assert model.codebooks_.shape == (8, 256, 4)
        assert model.codebooks_.dtype == np.float32
        assert model.codes_.dtype == np.uint8
        assert model.codes_.shape == (1200, model.code_size_)
    assert fitted_pq.code_size_ == 8
    assert fitted_pq.coarse_centroids_ is None
    # IVF codes carry the list number in front: one byte for 16 lists.
    assert fitted_ivf.code_size_ == 9
    assert fitted_ivf.coarse_centroids_.shape == (16, 32)


@pytest.mark.parametrize(
    "n_subquantizers, n_bits, expected_size", [(8, 4, 4), (4, 6, 3), (2, 1, 1), (16, 8, 16)]
)
def test_code_size_and_codebooks_shape(data, n_subquantizers, n_bits, expected_size):
    model = ProductQuantizer(n_subquantizers, n_bits, random_state=0).fit(data[0])
    assert model.code_size_ == expected_size
    assert model.transform(data[1]).shape == (40, expected_size)
    assert model.codebooks_.shape == (n_subquantizers, 2**n_bits, 32 // n_subquantizers)


def test_codes_are_nearest_centroids(data, fitted_pq):
    # Oracle: in every sub-space, the code is the nearest centroid of that sub-space's codebook.
    _, queries = data
    codes = fitted_pq.transform(queries)
    sub_vectors = queries.reshape(len(queries), 8, 4)
    for m in range(8):
        distances = _squared_distances(sub_vectors[:, m], fitted_pq.codebooks_[m])
        chosen = distances[np.arange(len(queries)), codes[:, m]]
        np.testing.assert_allclose(chosen, distances.min(axis=1), rtol=1e-5, atol=1e-6)


def test_inverse_transform_matches_numpy_decoder(data, fitted_pq, fitted_ivf):
    database, _ = data
    expected = _decode_8_bit(fitted_pq.codes_, fitted_pq.codebooks_)
    np.testing.assert_allclose(fitted_pq.inverse_transform(fitted_pq.codes_), expected, atol=1e-6)
    # IVF-PQ: list centroid (first byte) plus the decoded residual.
    codes = fitted_ivf.codes_
    expected = fitted_ivf.coarse_centroids_[codes[:, 0]] + _decode_8_bit(
        codes[:, 1:], fitted_ivf.codebooks_
    )
    np.testing.assert_allclose(fitted_ivf.inverse_transform(codes), expected, atol=1e-5)
    assert fitted_ivf.inverse_transform(codes).dtype == np.float32


@pytest.mark.parametrize("model_name", ["fitted_pq", "fitted_ivf_all_lists"])
def test_adc_distances_are_distances_to_reconstructions(data, fitted_pq, model_name):
    database, queries = data
    if model_name == "fitted_pq":
        model = fitted_pq
    else:
        model = ProductQuantizer(8, n_lists=16, n_probe=16, random_state=0).fit(database)
    reconstructed = model.inverse_transform(model.codes_)
    oracle = _squared_distances(queries, reconstructed)
    distances, indices = model.kneighbors(queries, n_neighbors=10)
    assert distances.shape == indices.shape == (40, 10)
    assert np.all(np.diff(distances, axis=1) >= 0)
    # Each reported distance is the exact squared distance to that reconstruction ...
    np.testing.assert_allclose(
        distances, np.take_along_axis(oracle, indices, axis=1), rtol=1e-4, atol=1e-4
    )
    # ... and they are the 10 smallest over the whole (reconstructed) database.
    np.testing.assert_allclose(distances, np.sort(oracle, axis=1)[:, :10], rtol=1e-4, atol=1e-4)


def test_reconstruction_error_decreases_with_more_bytes(data):
    database, queries = data
    errors = []
    for n_subquantizers in (2, 4, 8, 16):
        model = ProductQuantizer(n_subquantizers, random_state=0).fit(database)
        reconstructed = model.inverse_transform(model.transform(queries))
        errors.append(np.mean((reconstructed - queries) ** 2))
    assert all(later < earlier for earlier, later in zip(errors[:-1], errors[1:], strict=True))


def test_recall_at_10_high_with_16_bytes(data):
    database, queries = data
    truth = _exact_top_k(queries, database, 10)
    model = ProductQuantizer(n_subquantizers=16, random_state=0).fit(database)
    _, indices = model.kneighbors(queries, n_neighbors=10)
    assert _recall(indices, truth) >= 0.8
    # Fewer bytes, lower recall: the codes really are lossy.
    coarse = ProductQuantizer(n_subquantizers=2, random_state=0).fit(database)
    assert _recall(coarse.kneighbors(queries, n_neighbors=10)[1], truth) < _recall(indices, truth)


def test_ivf_visiting_every_list_is_as_good_as_plain_pq(data):
    database, queries = data
    truth = _exact_top_k(queries, database, 10)
    plain = ProductQuantizer(n_subquantizers=8, random_state=0).fit(database)
    ivf = ProductQuantizer(n_subquantizers=8, n_lists=16, n_probe=16, random_state=0)
    plain_recall = _recall(plain.kneighbors(queries, 10)[1], truth)
    ivf_recall = _recall(ivf.fit(database).kneighbors(queries, 10)[1], truth)
    # Residuals from 16 cells are easier to quantise than raw vectors: not worse than plain PQ.
    assert ivf_recall >= plain_recall - 0.05
    # Visiting fewer lists can only lose candidates.
    one_list = copy.deepcopy(ivf).set_params(n_probe=1)
    assert _recall(one_list.kneighbors(queries, 10)[1], truth) <= ivf_recall


def test_n_probe_above_n_lists_visits_every_list(data, fitted_ivf):
    database, queries = data
    # n_probe is read at search time, so a fitted copy can change it.
    every = copy.deepcopy(fitted_ivf).set_params(n_probe=16)
    beyond = copy.deepcopy(fitted_ivf).set_params(n_probe=100)
    np.testing.assert_array_equal(every.kneighbors(queries, 5)[1], beyond.kneighbors(queries, 5)[1])


def test_ivf_queries_with_too_few_candidates_are_searched_over_all_lists(data):
    database, queries = data
    model = ProductQuantizer(8, n_lists=64, n_probe=1, random_state=0).fit(database)
    # k = the median size of the list nearest to each query: about half the rows fall short.
    list_sizes = np.bincount(model.codes_[:, 0], minlength=64)
    nearest_list = _squared_distances(queries, model.coarse_centroids_).argmin(axis=1)
    k = int(np.median(list_sizes[nearest_list])) + 1
    # The premise: with one list visited, faiss alone leaves holes (-1) in some rows.
    raw_distances, raw_indices = model._index.search(queries, k)
    holes = (raw_indices < 0).any(axis=1)
    assert holes.any() and not holes.all()
    distances, indices = model.kneighbors(queries, n_neighbors=k)
    assert indices.min() >= 0
    assert all(len(np.unique(row)) == k for row in indices)
    assert np.all(np.diff(distances, axis=1) >= 0)
    full = copy.deepcopy(model).set_params(n_probe=64).kneighbors(queries[holes], k)
    np.testing.assert_array_equal(indices[holes], full[1])
    np.testing.assert_array_equal(distances[holes], full[0])
    # Rows that were complete keep their n_probe=1 answer.
    np.testing.assert_array_equal(indices[~holes], raw_indices[~holes])


@pytest.mark.parametrize("n_lists", [None, 16])
def test_random_state_makes_fit_deterministic(data, n_lists):
    database, queries = data
    first = ProductQuantizer(8, n_lists=n_lists, random_state=3).fit(database)
    second = ProductQuantizer(8, n_lists=n_lists, random_state=3).fit(database)
    np.testing.assert_array_equal(first.codebooks_, second.codebooks_)
    np.testing.assert_array_equal(first.codes_, second.codes_)
    np.testing.assert_array_equal(first.kneighbors(queries, 5)[1], second.kneighbors(queries, 5)[1])
    other = ProductQuantizer(8, n_lists=n_lists, random_state=4).fit(database)
    assert not np.array_equal(first.codebooks_, other.codebooks_)


def test_float64_input_and_return_distance(data, fitted_pq):
    database, queries = data
    model = clone(fitted_pq).fit(database.astype(np.float64))
    np.testing.assert_array_equal(model.codes_, fitted_pq.codes_)
    indices = model.kneighbors(queries.astype(np.float64), 3, return_distance=False)
    np.testing.assert_array_equal(indices, fitted_pq.kneighbors(queries, 3)[1])


def test_faiss_thread_setting_is_capped_and_restored(data):
    from skretrieval import quantization

    requested = joblib.cpu_count() + 3
    faiss.omp_set_num_threads(requested)
    try:
        with quantization._faiss_threads():
            assert faiss.omp_get_max_threads() == joblib.cpu_count()
        assert faiss.omp_get_max_threads() == requested
    finally:
        faiss.omp_set_num_threads(1)
    # A caller's lower limit is kept, and fitting leaves the setting as it was.
    ProductQuantizer(8, 4, random_state=0).fit(data[0]).kneighbors(data[1], 3)
    assert faiss.omp_get_max_threads() == 1


def test_feature_count_not_divisible_names_both_numbers(data):
    with pytest.raises(ValueError, match=r"features \(32\).*n_subquantizers \(5\)"):
        ProductQuantizer(n_subquantizers=5).fit(data[0])


def test_too_few_training_samples(data):
    database, _ = data
    with pytest.raises(ValueError, match=r"n_bits=8 needs at least 2\*\*8 = 256 .* n_samples=100"):
        ProductQuantizer(4, 8).fit(database[:100])
    with pytest.raises(ValueError, match=r"n_lists=500 needs at least 500 .* got n_samples=300"):
        ProductQuantizer(4, 4, n_lists=500).fit(database[:300])


@pytest.mark.parametrize(
    "params",
    [
        {"n_bits": 0},
        {"n_bits": 17},
        {"n_subquantizers": 0},
        {"n_lists": 0},
        {"n_probe": 0},
        {"n_bits": 8.0},
    ],
)
def test_invalid_parameters(data, params):
    with pytest.raises(InvalidParameterError):
        ProductQuantizer(**params).fit(data[0])


def test_kneighbors_errors(data, fitted_pq):
    _, queries = data
    with pytest.raises(ValueError, match="between 1 and the database size n_samples_fit_=1200"):
        fitted_pq.kneighbors(queries, n_neighbors=1201)
    with pytest.raises(ValueError, match="got 0"):
        fitted_pq.kneighbors(queries, n_neighbors=0)
    with pytest.raises(TypeError, match="n_neighbors must be an integer"):
        fitted_pq.kneighbors(queries, n_neighbors=True)
    with pytest.raises(ValueError, match="32 features"):
        fitted_pq.kneighbors(queries[:, :16], n_neighbors=3)
    with pytest.raises(ValueError, match="NaN"):
        fitted_pq.kneighbors(np.full((1, 32), np.nan), n_neighbors=3)


def test_inverse_transform_errors(fitted_pq, fitted_ivf):
    with pytest.raises(ValueError, match=r"code_size_=8"):
        fitted_pq.inverse_transform(np.zeros((2, 7), dtype=np.uint8))
    with pytest.raises(TypeError, match="integer bytes"):
        fitted_pq.inverse_transform(np.zeros((2, 8)))
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        fitted_pq.inverse_transform(np.full((2, 8), 256))
    # List 200 does not exist; faiss itself would abort the process.
    codes = fitted_ivf.codes_[:2].copy()
    codes[:, 0] = 200
    with pytest.raises(ValueError, match="inverted list 200.*n_lists=16"):
        fitted_ivf.inverse_transform(codes)
    # Integer codes of another dtype are accepted.
    np.testing.assert_array_equal(
        fitted_pq.inverse_transform(fitted_pq.codes_[:3].astype(np.int64)),
        fitted_pq.inverse_transform(fitted_pq.codes_[:3]),
    )


def test_not_fitted_errors(data):
    model = ProductQuantizer()
    for call in (
        lambda: model.kneighbors(data[1], 3),
        lambda: model.transform(data[1]),
        lambda: model.inverse_transform(np.zeros((1, 8), dtype=np.uint8)),
    ):
        with pytest.raises(NotFittedError):
            call()


def test_clone_and_params():
    model = ProductQuantizer(16, 4, n_lists=32, n_probe=2, random_state=7)
    params = model.get_params()
    assert params == {
        "n_subquantizers": 16,
        "n_bits": 4,
        "n_lists": 32,
        "n_probe": 2,
        "random_state": 7,
    }
    copied = clone(model)
    assert copied is not model and copied.get_params() == params
    assert model.set_params(n_probe=5) is model and model.n_probe == 5


@pytest.mark.parametrize("model_name", ["fitted_pq", "fitted_ivf"])
def test_pickle_joblib_and_deepcopy_round_trips(data, tmp_path, request, model_name):
    model = request.getfixturevalue(model_name)
    _, queries = data
    expected_distances, expected_indices = model.kneighbors(queries, 10)
    path = tmp_path / "model.joblib"
    joblib.dump(model, path)
    copies = [pickle.loads(pickle.dumps(model)), joblib.load(path), copy.deepcopy(model)]
    for restored in copies:
        distances, indices = restored.kneighbors(queries, 10)
        np.testing.assert_array_equal(indices, expected_indices)
        np.testing.assert_array_equal(distances, expected_distances)
        np.testing.assert_array_equal(restored.transform(queries), model.transform(queries))
        np.testing.assert_array_equal(restored.codes_, model.codes_)
    # Pickling leaves the original usable.
    np.testing.assert_array_equal(model.kneighbors(queries, 10)[1], expected_indices)


@pytest.mark.parametrize("n_lists", [None, 16])
def test_encoding_in_batches_changes_nothing(data, monkeypatch, n_lists):
    # faiss's encoder needs memory proportional to the rows encoded at once, so large inputs go
    # in batches; force batches of 4 KiB of tables (~1 row at M=4, 256 centroids) and compare.
    from skretrieval import quantization

    database, queries = data
    whole = ProductQuantizer(4, n_lists=n_lists, random_state=0).fit(database)
    batches = quantization._encoding_batches
    monkeypatch.setattr(
        quantization,
        "_encoding_batches",
        lambda n, index: batches(n, index, budget_bytes=4096 * 50),
    )
    batched = ProductQuantizer(4, n_lists=n_lists, random_state=0).fit(database)
    np.testing.assert_array_equal(batched.codes_, whole.codes_)
    np.testing.assert_array_equal(batched.transform(queries), whole.transform(queries))
    for a, b in zip(batched.kneighbors(queries, 7), whole.kneighbors(queries, 7), strict=True):
        np.testing.assert_array_equal(a, b)
