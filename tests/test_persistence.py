import os
import pickle
import stat
import sys
import types
import warnings

import joblib
import numpy as np
import pytest
import sklearn
from sklearn.pipeline import make_pipeline

import skretrieval
from skretrieval.neighbors import ImageRetriever
from skretrieval.persistence import FileFormatError, VersionMismatchWarning, load, save
from skretrieval.pooling import GeMPooling
from skretrieval.whitening import PCAWhitening


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    database = rng.normal(size=(40, 12))
    queries = rng.normal(size=(5, 12))
    labels = np.arange(40) % 4
    return database, queries, labels


def _load_quietly(path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", VersionMismatchWarning)
        return load(path)


@pytest.mark.parametrize(
    "retriever",
    [
        ImageRetriever(n_neighbors=5),
        ImageRetriever(n_neighbors=5, query_expansion="alpha", dba_neighbors=3),
        ImageRetriever(n_neighbors=5, metric="euclidean"),
    ],
)
def test_round_trip_of_a_fitted_retriever(tmp_path, data, retriever):
    database, queries, labels = data
    retriever.fit(database, labels)
    path = save(retriever, tmp_path / "retriever.joblib")
    assert path == tmp_path / "retriever.joblib"
    restored = _load_quietly(path)
    assert type(restored) is ImageRetriever
    assert restored.get_params() == retriever.get_params()
    for X in (queries, None):
        expected = retriever.kneighbors(X)
        got = restored.kneighbors(X)
        np.testing.assert_array_equal(got[1], expected[1])
        np.testing.assert_array_equal(got[0], expected[0])
    assert restored.score(queries, labels[:5]) == retriever.score(queries, labels[:5])


def test_round_trip_of_a_fitted_pipeline(tmp_path, data):
    database, queries, labels = data
    pipeline = make_pipeline(PCAWhitening(n_components=6), ImageRetriever(n_neighbors=4))
    pipeline.fit(database, labels)
    restored = _load_quietly(save(pipeline, tmp_path / "pipeline.joblib", compress=0))
    expected = pipeline[-1].kneighbors(pipeline[:-1].transform(queries))
    got = restored[-1].kneighbors(restored[:-1].transform(queries))
    np.testing.assert_array_equal(got[1], expected[1])
    np.testing.assert_array_equal(got[0], expected[0])
    assert restored.score(queries, labels[:5]) == pipeline.score(queries, labels[:5])


def test_round_trip_of_a_pooling_pipeline(tmp_path):
    rng = np.random.default_rng(1)
    maps = [rng.random((8, 3 + i % 3, 4)).astype(np.float32) for i in range(20)]
    labels = np.arange(20) % 5
    pipeline = make_pipeline(GeMPooling(), PCAWhitening(), ImageRetriever(n_neighbors=3))
    pipeline.fit(maps, labels)
    restored = _load_quietly(save(pipeline, tmp_path / "sub" / "dir" / "pooled.joblib"))
    np.testing.assert_array_equal(
        restored[-1].kneighbors(restored[:-1].transform(maps[:4]))[1],
        pipeline[-1].kneighbors(pipeline[:-1].transform(maps[:4]))[1],
    )


def test_the_file_records_the_versions(tmp_path):
    path = save({"anything": [1, 2]}, tmp_path / "object.joblib")
    content = joblib.load(path)
    assert content["skretrieval_version"] == skretrieval.__version__
    assert content["sklearn_version"] == sklearn.__version__
    assert content["object"] == {"anything": [1, 2]}
    assert _load_quietly(path) == {"anything": [1, 2]}


def test_overwriting_replaces_the_file(tmp_path):
    path = tmp_path / "value.joblib"
    save("first", path)
    save("second", path)
    assert _load_quietly(path) == "second"
    assert os.listdir(tmp_path) == ["value.joblib"]


def test_permissions_follow_the_umask(tmp_path):
    old_umask = os.umask(0o022)
    try:
        path = save("value", tmp_path / "value.joblib")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


@pytest.mark.parametrize("error", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_a_crash_mid_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch, error):
    path = tmp_path / "index.joblib"
    save("previous", path)
    before = path.read_bytes()

    def dump_half_then_fail(value, file, **kwargs):
        file.write(pickle.dumps(value)[:20])
        raise error

    monkeypatch.setattr(joblib, "dump", dump_half_then_fail)
    with pytest.raises(type(error)):
        save("next", path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["index.joblib"]
    monkeypatch.undo()
    assert _load_quietly(path) == "previous"


def test_a_failed_first_write_leaves_nothing(tmp_path, monkeypatch):
    def fail(value, file, **kwargs):
        raise OSError("no space left on device")

    monkeypatch.setattr(joblib, "dump", fail)
    with pytest.raises(OSError, match="no space"):
        save("value", tmp_path / "new.joblib")
    assert os.listdir(tmp_path) == []


def test_version_mismatch_warns_with_both_versions(tmp_path, monkeypatch):
    monkeypatch.setattr(skretrieval, "__version__", "0.0.1")
    monkeypatch.setattr(sklearn, "__version__", "1.0.0")
    path = save([1, 2, 3], tmp_path / "old.joblib")
    monkeypatch.undo()
    with pytest.warns(VersionMismatchWarning) as record:
        assert load(path) == [1, 2, 3]
    (message,) = [str(w.message) for w in record if w.category is VersionMismatchWarning]
    assert str(path) in message
    assert "skretrieval 0.0.1 with scikit-learn 1.0.0" in message
    assert f"this is skretrieval {skretrieval.__version__}" in message
    assert f"scikit-learn {sklearn.__version__}" in message


@pytest.mark.parametrize(
    "write, reason",
    [
        (lambda path: path.write_text("not a pickle at all\n"), "joblib cannot read it"),
        (lambda path: path.write_bytes(b""), "joblib cannot read it"),
        (lambda path: joblib.dump({"retriever": 1}, path), "without the skretrieval header"),
        (lambda path: joblib.dump(ImageRetriever(), path), "type ImageRetriever"),
    ],
)
def test_a_file_not_written_by_save_is_a_clear_error(tmp_path, write, reason):
    path = tmp_path / "foreign.joblib"
    write(path)
    with pytest.raises(FileFormatError, match=reason) as info:
        load(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_a_truncated_file_is_a_clear_error(tmp_path):
    path = save(np.arange(10_000), tmp_path / "whole.joblib")
    truncated = tmp_path / "truncated.joblib"
    truncated.write_bytes(path.read_bytes()[:100])
    with pytest.raises(FileFormatError, match="truncated.joblib is not a file written by"):
        load(truncated)


def test_another_format_version_is_a_clear_error(tmp_path):
    path = tmp_path / "future.joblib"
    joblib.dump({"format": "skretrieval.persistence", "format_version": 99, "object": 1}, path)
    with pytest.raises(FileFormatError, match="format version 99"):
        load(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.joblib"):
        load(tmp_path / "missing.joblib")


class _Gone:
    """Stands for a class that the loading installation no longer has."""


def test_a_file_referring_to_missing_code_is_a_clear_error(tmp_path, monkeypatch):
    module = types.ModuleType("_skretrieval_vanished_module")
    monkeypatch.setattr(_Gone, "__module__", module.__name__)
    module._Gone = _Gone
    monkeypatch.setitem(sys.modules, module.__name__, module)
    path = save(_Gone(), tmp_path / "gone.joblib")
    monkeypatch.delitem(sys.modules, module.__name__)
    with pytest.raises(FileFormatError, match="gone.joblib: it refers to code") as info:
        load(path)
    assert "_skretrieval_vanished_module" in str(info.value)


def test_bad_compression_is_joblibs_error_and_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="compress"):
        save("value", tmp_path / "value.joblib", compress=42)
    assert os.listdir(tmp_path) == []
