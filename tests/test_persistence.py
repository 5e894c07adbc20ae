import importlib
import inspect
import json
import os
import pkgutil
import signal
import stat
import subprocess
import sys
import textwrap
import warnings
import zipfile
from io import BytesIO

import joblib
import numpy as np
import pytest
import sklearn
from sklearn.base import BaseEstimator
from sklearn.pipeline import make_pipeline

import skretrieval
from skretrieval.descriptors import GMMDescriptor, LocalPCA, SparseCovariance
from skretrieval.extraction import CNNFeatureExtractor
from skretrieval.learning import EmbeddingLearner, RetrievalFineTuner
from skretrieval.neighbors import ImageRetriever
from skretrieval.persistence import (
    FileFormatError,
    PickleNotAllowedError,
    UntrustedTypesError,
    VersionMismatchWarning,
    atomic_write,
    load,
    save,
)
from skretrieval.pooling import RMAC, GeMPooling, MaxPooling, SumPooling
from skretrieval.quantization import ProductQuantizer
from skretrieval.whitening import LearnedWhitening, PCAWhitening

MAGIC = b"\x89skretrieval\r\n\x1a\n"


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    database = rng.normal(size=(40, 12))
    queries = rng.normal(size=(5, 12))
    labels = np.arange(40) % 4
    return database, queries, labels


def _load_quietly(path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", VersionMismatchWarning)
        return load(path, **kwargs)


def _write_old_format(path, obj, **header):
    """A file as skretrieval 0.2's save wrote it: a joblib pickle with the header inside."""
    content = {
        "format": "skretrieval.persistence",
        "format_version": 1,
        "skretrieval_version": skretrieval.__version__,
        "sklearn_version": sklearn.__version__,
        **header,
        "object": obj,
    }
    joblib.dump(content, path, compress=3)
    return path


def _split(path):
    """(header dict, skops archive bytes) of a file written by save, read independently."""
    raw = path.read_bytes()
    assert raw.startswith(MAGIC)
    line, _, archive = raw[len(MAGIC) :].partition(b"\n")
    return json.loads(line), archive


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------


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
    path = save(retriever, tmp_path / "retriever.skr")
    assert path == tmp_path / "retriever.skr"
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
    restored = _load_quietly(save(pipeline, tmp_path / "pipeline.skr", compress=0))
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
    restored = _load_quietly(save(pipeline, tmp_path / "sub" / "dir" / "pooled.skr"))
    np.testing.assert_array_equal(
        restored[-1].kneighbors(restored[:-1].transform(maps[:4]))[1],
        pipeline[-1].kneighbors(pipeline[:-1].transform(maps[:4]))[1],
    )


# Every public estimator, fitted on tiny data, with a function of a fitted estimator that
# returns its outputs (transform, kneighbors, ...).


def _images(n=6):
    rng = np.random.default_rng(2)
    return [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(n)]


def _maps():
    rng = np.random.default_rng(3)
    return [rng.random((8, 3 + i % 2, 4)).astype(np.float32) for i in range(12)]


def _vectors():
    rng = np.random.default_rng(4)
    return rng.normal(size=(64, 16)), np.arange(64) % 4


def _local_features():
    return LocalPCA(n_components=3, random_state=0).fit_transform(_maps())


def _transformer(estimator, X, y=None):
    estimator.fit(X, y)
    return estimator, lambda fitted: fitted.transform(X)


def _retriever(X, **params):
    queries = X[:4]

    def outputs(fitted):
        return (*fitted.kneighbors(queries, n_neighbors=3), *fitted.kneighbors())

    return ImageRetriever(n_neighbors=3, **params).fit(X), outputs


def _quantizer(**params):
    X, _ = _vectors()

    def outputs(fitted):
        return (fitted.transform(X), *fitted.kneighbors(X[:3], 5))

    return ProductQuantizer(n_subquantizers=4, n_bits=4, random_state=0, **params).fit(X), outputs


def _gmm():
    X = _local_features()

    def outputs(fitted):
        mixtures = fitted.transform(X)
        return mixtures.weights, mixtures.means, mixtures.covariances

    return GMMDescriptor(n_components=2, random_state=0).fit(X), outputs


def _extractor():
    extractor = CNNFeatureExtractor(
        backbone="squeezenet1_1", weights=None, max_size=32, verbose=False, random_state=0
    )
    return extractor.fit(), lambda fitted: fitted.transform(_images(2))


def _fine_tuner():
    tuner = RetrievalFineTuner(
        backbone="squeezenet1_1",
        weights=None,
        max_size=32,
        n_negatives=1,
        max_epochs=1,
        batch_size=4,
        verbose=False,
        random_state=0,
    )
    return tuner.fit(_images(), np.repeat([0, 1, 2], 2)), lambda f: f.transform(_images(2))


FITTED = {
    "CNNFeatureExtractor": _extractor,
    "GeMPooling": lambda: _transformer(GeMPooling(p=2.5), _maps()),
    "MaxPooling": lambda: _transformer(MaxPooling(), _maps()),
    "SumPooling": lambda: _transformer(SumPooling(), _maps()),
    "RMAC": lambda: _transformer(RMAC(), _maps()),
    "PCAWhitening": lambda: _transformer(PCAWhitening(n_components=5), _vectors()[0]),
    "LearnedWhitening": lambda: _transformer(LearnedWhitening(), *_vectors()),
    "LocalPCA": lambda: _transformer(LocalPCA(n_components=3, random_state=0), _maps()),
    "SparseCovariance": lambda: _transformer(SparseCovariance(), _local_features()),
    "GMMDescriptor": _gmm,
    "ImageRetriever": lambda: _retriever(_vectors()[0], query_expansion="alpha", dba_neighbors=2),
    "ProductQuantizer": _quantizer,
    "EmbeddingLearner": lambda: _transformer(
        EmbeddingLearner(n_components=3, max_epochs=1, device="cpu", random_state=0), *_vectors()
    ),
    "RetrievalFineTuner": _fine_tuner,
}
# More configurations of the estimators whose state differs with their parameters.
VARIANTS = {
    "IVF-PQ": lambda: _quantizer(n_lists=2),
    "retriever, euclidean": lambda: _retriever(_vectors()[0], metric="euclidean"),
    "retriever, PQ": lambda: _retriever(
        _vectors()[0], quantizer=ProductQuantizer(n_subquantizers=4, n_bits=4, random_state=0)
    ),
    "retriever, IVF-PQ": lambda: _retriever(
        _vectors()[0],
        quantizer=ProductQuantizer(n_subquantizers=4, n_bits=4, n_lists=2, random_state=0),
    ),
    "retriever, SPD": lambda: _retriever(
        SparseCovariance().fit_transform(_local_features()), metric="affine_invariant"
    ),
    "retriever, Gaussian mixtures": lambda: _retriever(
        GMMDescriptor(n_components=2, random_state=0).fit_transform(_local_features()),
        metric="wasserstein",
    ),
    "pipeline": lambda: _transformer(
        make_pipeline(GeMPooling(), PCAWhitening(n_components=2)), _maps()
    ),
}


def _public_estimators():
    """Names of the estimator classes in the ``__all__`` of skretrieval's public modules."""
    names = set()
    for info in pkgutil.walk_packages(skretrieval.__path__, "skretrieval."):
        if any(part.startswith("_") for part in info.name.split(".")):
            continue
        module = importlib.import_module(info.name)
        for name in getattr(module, "__all__", ()):
            value = getattr(module, name)
            if inspect.isclass(value) and issubclass(value, BaseEstimator):
                names.add(name)
    return names


def test_every_public_estimator_is_covered():
    assert len(_public_estimators()) >= 14
    assert _public_estimators() - set(FITTED) == set(), "add a fitted example to FITTED"


def _as_arrays(outputs):
    """Flat list of the arrays in ``outputs`` (arrays, lists of arrays, tuples of them)."""
    if isinstance(outputs, tuple | list):
        return [array for item in outputs for array in _as_arrays(item)]
    return [np.asarray(outputs)]


@pytest.mark.parametrize("name", [*FITTED, *VARIANTS])
def test_every_estimator_round_trips_without_trusted_types(tmp_path, name, single_faiss_thread):
    estimator, outputs = {**FITTED, **VARIANTS}[name]()
    expected = _as_arrays(outputs(estimator))
    # No trusted=: nothing but skretrieval, scikit-learn, numpy and builtin types in the file.
    restored = _load_quietly(save(estimator, tmp_path / "estimator.skr"))
    assert type(restored) is type(estimator)
    assert restored.get_params(deep=False).keys() == estimator.get_params(deep=False).keys()
    got = _as_arrays(outputs(restored))
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_an_index_as_the_command_line_writes_it_round_trips(tmp_path):
    extractor = CNNFeatureExtractor(
        backbone="squeezenet1_1",
        weights=None,
        max_size=32,
        verbose=False,
        pooling=GeMPooling(),
        random_state=0,
    ).fit()
    images = _images(4)
    retriever = ImageRetriever(metric="cosine").fit(extractor.transform(images))
    index = {"extractor": extractor, "retriever": retriever, "paths": ["a.jpg", "b/c.png"] * 2}
    restored = _load_quietly(save(index, tmp_path / "photos.index"))
    assert restored["paths"] == index["paths"]
    query = restored["extractor"].transform(images[:1])
    np.testing.assert_array_equal(query, extractor.transform(images[:1]))
    np.testing.assert_array_equal(
        restored["retriever"].kneighbors(query, n_neighbors=4)[1],
        retriever.kneighbors(query, n_neighbors=4)[1],
    )


# ---------------------------------------------------------------------------------------------
# The file: header first, then the skops archive
# ---------------------------------------------------------------------------------------------


def test_the_file_is_a_header_then_a_skops_archive(tmp_path):
    import skops.io

    path = save({"anything": [1, 2], "array": np.arange(3)}, tmp_path / "object.skr")
    header, archive = _split(path)
    assert header["format"] == "skretrieval.persistence" and header["format_version"] == 2
    assert header["skretrieval_version"] == skretrieval.__version__
    assert header["sklearn_version"] == sklearn.__version__
    assert header["payload"] == "skops"
    assert zipfile.is_zipfile(BytesIO(archive))
    content = skops.io.loads(archive)
    assert content["anything"] == [1, 2] and content["array"].tolist() == [0, 1, 2]
    restored = _load_quietly(path)
    assert restored["anything"] == [1, 2] and restored["array"].tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    "compress, method",
    [
        (0, zipfile.ZIP_STORED),
        (False, zipfile.ZIP_STORED),
        (3, zipfile.ZIP_DEFLATED),
        (True, zipfile.ZIP_DEFLATED),
        (9, zipfile.ZIP_DEFLATED),
    ],
)
def test_compression(tmp_path, compress, method):
    path = save(np.zeros(10_000), tmp_path / "zeros.skr", compress=compress)
    with zipfile.ZipFile(BytesIO(_split(path)[1])) as archive:
        assert {info.compress_type for info in archive.infolist()} == {method}
    np.testing.assert_array_equal(_load_quietly(path), np.zeros(10_000))


@pytest.mark.parametrize("compress", [42, -1, "zlib", ("gzip", 3), 2.5])
def test_bad_compression_is_an_error_and_leaves_nothing(tmp_path, compress):
    with pytest.raises(ValueError, match="compress must be an int from 0"):
        save("value", tmp_path / "value.skr", compress=compress)
    assert os.listdir(tmp_path) == []


def test_an_object_that_needs_pickle_is_refused_and_nothing_is_written(tmp_path):
    with pytest.raises(TypeError, match="cannot be stored without pickle") as info:
        save({"lazy": (i for i in range(3))}, tmp_path / "value.skr")
    assert str(tmp_path / "value.skr") in str(info.value)
    assert os.listdir(tmp_path) == []


def test_overwriting_replaces_the_file(tmp_path):
    path = tmp_path / "value.skr"
    save("first", path)
    save("second", path)
    assert _load_quietly(path) == "second"
    assert os.listdir(tmp_path) == ["value.skr"]


def test_permissions_follow_the_umask(tmp_path):
    old_umask = os.umask(0o022)
    try:
        path = save("value", tmp_path / "value.skr")
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


@pytest.mark.parametrize("error", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_a_crash_mid_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch, error):
    path = tmp_path / "index.skr"
    save("previous", path)
    before = path.read_bytes()
    written = []

    def fail_after_writing(descriptor):
        # The new content is in the temporary file, not yet renamed over the old one.
        (temporary,) = [name for name in os.listdir(tmp_path) if name != "index.skr"]
        written.append((tmp_path / temporary).stat().st_size)
        raise error

    monkeypatch.setattr(os, "fsync", fail_after_writing)
    with pytest.raises(type(error)):
        save("next", path)
    monkeypatch.undo()
    assert written and written[0] > 0
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["index.skr"]
    assert _load_quietly(path) == "previous"


def test_a_failed_first_write_leaves_nothing(tmp_path, monkeypatch):
    def fail(descriptor):
        raise OSError("no space left on device")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="no space"):
        save("value", tmp_path / "new.skr")
    assert os.listdir(tmp_path) == []


def test_version_mismatch_warns_with_both_versions(tmp_path, monkeypatch):
    monkeypatch.setattr(skretrieval, "__version__", "0.0.1")
    monkeypatch.setattr(sklearn, "__version__", "1.0.0")
    path = save([1, 2, 3], tmp_path / "old.skr")
    monkeypatch.undo()
    with pytest.warns(VersionMismatchWarning) as record:
        assert load(path) == [1, 2, 3]
    (warning,) = [w for w in record if w.category is VersionMismatchWarning]
    message = str(warning.message)
    assert str(path) in message
    assert "skretrieval 0.0.1 with scikit-learn 1.0.0" in message
    assert f"this is skretrieval {skretrieval.__version__}" in message
    assert f"scikit-learn {sklearn.__version__}" in message
    assert warning.filename == __file__  # points at the caller of load


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"not a pickle at all\n", "does not start with the skretrieval header"),
        (b"", "does not start with the skretrieval header"),
        (b"PK\x03\x04 a zip archive", "does not start with the skretrieval header"),
        (MAGIC + b"not json\n", "header line is damaged"),
        (MAGIC + b'{"format": "something else", "format_version": 2}\n', "header line is damaged"),
        (MAGIC + b"[1, 2]\n", "header line is damaged"),
        (MAGIC + b'{"format": "skretrieval.persistence"', "header line is damaged"),
        (MAGIC + b"{" + b" " * 5000 + b"}\n", "header line is damaged"),
    ],
)
def test_a_file_not_written_by_save_is_a_clear_error(tmp_path, content, reason):
    path = tmp_path / "foreign.skr"
    path.write_bytes(content)
    with pytest.raises(FileFormatError, match=reason) as info:
        load(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_a_truncated_file_is_a_clear_error(tmp_path):
    path = save(np.arange(10_000), tmp_path / "whole.skr")
    truncated = tmp_path / "truncated.skr"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(FileFormatError, match="truncated.skr has a valid skretrieval header"):
        _load_quietly(truncated)


def test_another_format_version_is_a_clear_error(tmp_path):
    path = save(1, tmp_path / "future.skr")
    header, archive = _split(path)
    header["format_version"] = 99
    path.write_bytes(MAGIC + json.dumps(header).encode() + b"\n" + archive)
    with pytest.raises(FileFormatError, match="format version 99"):
        load(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.skr"):
        load(tmp_path / "missing.skr")
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        load(tmp_path)


class _Gone:
    """Stands for a class that the loading installation no longer has."""


def test_a_file_referring_to_missing_code_is_a_clear_error(tmp_path, monkeypatch):
    import types

    name = "_skretrieval_vanished_module"
    module = types.ModuleType(name)
    monkeypatch.setattr(_Gone, "__module__", name)
    module._Gone = _Gone
    monkeypatch.setitem(sys.modules, name, module)
    path = save(_Gone(), tmp_path / "gone.skr")
    monkeypatch.delitem(sys.modules, name)
    with pytest.raises(FileFormatError, match="gone.skr: it refers to code") as info:
        _load_quietly(path, trusted=[f"{name}._Gone"])
    assert name in str(info.value)


def test_a_file_referring_to_a_missing_skretrieval_class_is_a_clear_error(tmp_path, monkeypatch):
    # A class of a trusted package that this installation lacks: an error, not a trust prompt.
    monkeypatch.setattr(_Gone, "__module__", "skretrieval.neighbors")
    monkeypatch.setattr(sys.modules["skretrieval.neighbors"], "_Gone", _Gone, raising=False)
    path = save([_Gone()], tmp_path / "gone.skr")
    monkeypatch.undo()
    with pytest.raises(FileFormatError, match="classes that this installation lacks") as info:
        _load_quietly(path)
    assert not isinstance(info.value, UntrustedTypesError)
    assert "skretrieval.neighbors._Gone" in str(info.value)


# ---------------------------------------------------------------------------------------------
# Files written by skretrieval 0.2 (joblib pickles): only with allow_pickle=True
# ---------------------------------------------------------------------------------------------


def test_an_old_index_needs_the_opt_in_and_converts(tmp_path, data):
    database, queries, labels = data
    retriever = ImageRetriever(n_neighbors=3).fit(database, labels)
    old = _write_old_format(tmp_path / "old.joblib", {"retriever": retriever, "paths": ["a"]})
    with pytest.raises(PickleNotAllowedError) as info:
        load(old)
    message = str(info.value)
    assert str(old) in message and "arbitrary code" in message
    assert "allow_pickle=True" in message and "save it again" in message
    content = _load_quietly(old, allow_pickle=True)
    np.testing.assert_array_equal(
        content["retriever"].kneighbors(queries)[1], retriever.kneighbors(queries)[1]
    )
    # Converted: the new file loads without the opt-in.
    converted = _load_quietly(save(content, tmp_path / "new.skr"))
    assert converted["paths"] == ["a"]
    np.testing.assert_array_equal(
        converted["retriever"].kneighbors(queries)[1], retriever.kneighbors(queries)[1]
    )


def test_an_old_file_with_other_versions_warns(tmp_path):
    old = _write_old_format(tmp_path / "old.joblib", [1], skretrieval_version="0.0.1")
    with pytest.warns(VersionMismatchWarning, match="skretrieval 0.0.1"):
        assert load(old, allow_pickle=True) == [1]


@pytest.mark.parametrize(
    "write, reason",
    [
        (lambda path: path.write_text("not a pickle at all\n"), "joblib cannot read it"),
        (lambda path: joblib.dump({"retriever": 1}, path), "without the skretrieval header"),
        (lambda path: joblib.dump(ImageRetriever(), path), "type ImageRetriever"),
        (
            lambda path: _write_old_format(path, 1, format_version=99),
            "format version 99",
        ),
    ],
)
def test_with_the_opt_in_a_foreign_pickle_is_still_a_clear_error(tmp_path, write, reason):
    path = tmp_path / "foreign.joblib"
    write(path)
    with pytest.raises(FileFormatError, match=reason) as info:
        load(path, allow_pickle=True)
    assert str(path) in str(info.value)


def test_the_opt_in_still_reads_the_safe_format_safely(tmp_path):
    path = save({"a": 1}, tmp_path / "new.skr")
    assert _load_quietly(path, allow_pickle=True) == {"a": 1}


# ---------------------------------------------------------------------------------------------
# Temporary files of killed writers
# ---------------------------------------------------------------------------------------------

# Starts a save of `path` and stops it for good once the content is in the temporary file,
# before the rename: the state in which a killed writer leaves things.
_STALLED_WRITER = textwrap.dedent(
    """
    import os, sys, time
    import numpy as np
    from skretrieval.persistence import save

    def stall(descriptor):
        print("writing", flush=True)
        time.sleep(600)

    os.fsync = stall
    save({"database": np.ones((2000, 64))}, sys.argv[1])
    """
)


def _temporaries(folder):
    return sorted(name for name in os.listdir(folder) if name.endswith(".tmp"))


@pytest.fixture
def stalled_writer():
    """Start writers stalled mid-save; kill and reap whatever is left at the end."""
    started = []

    def start(path):
        process = subprocess.Popen(
            [sys.executable, "-c", _STALLED_WRITER, str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        started.append(process)
        line = process.stdout.readline()
        assert line == b"writing\n", process.stderr.read().decode()
        return process

    yield start
    for process in started:
        process.kill()
        process.wait()
        process.stdout.close()
        process.stderr.close()


@pytest.mark.skipif(os.name != "posix", reason="writers are told apart by POSIX process ids")
@pytest.mark.parametrize("next_call", ["load", "save", "atomic_write"])
def test_a_killed_save_leaves_the_old_file_and_its_temporary_is_cleaned(
    tmp_path, stalled_writer, next_call
):
    path = tmp_path / "index.skr"
    save({"database": np.zeros((3, 2))}, path)
    before = path.read_bytes()
    writer = stalled_writer(path)
    (temporary,) = _temporaries(tmp_path)
    assert temporary.startswith(".index.skr.") and f".{writer.pid}." in temporary
    # A live writer's temporary file is never touched.
    np.testing.assert_array_equal(_load_quietly(path)["database"], np.zeros((3, 2)))
    assert _temporaries(tmp_path) == [temporary]

    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert path.read_bytes() == before
    assert _temporaries(tmp_path) == [temporary]  # what a killed writer leaves

    if next_call == "load":
        np.testing.assert_array_equal(_load_quietly(path)["database"], np.zeros((3, 2)))
    elif next_call == "save":
        save({"database": np.ones((3, 2))}, path)
        np.testing.assert_array_equal(_load_quietly(path)["database"], np.ones((3, 2)))
    else:
        with atomic_write(path) as file:
            file.write(b"replaced")
    assert _temporaries(tmp_path) == []


@pytest.mark.skipif(os.name != "posix", reason="writers are told apart by POSIX process ids")
def test_only_the_temporaries_of_gone_writers_of_this_path_and_host_are_removed(
    tmp_path, stalled_writer
):
    path = tmp_path / "index.skr"
    save(1, path)
    stalled_writer(path)
    (live_temporary,) = _temporaries(tmp_path)
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True
    )
    gone_pid = int(gone.stdout)
    host = live_temporary.split(".")[3]
    kept = [
        live_temporary,
        f".index.skr.{host}.{os.getpid()}.0123456789ab.tmp",  # this process: may be writing
        f".index.skr.other-host.{gone_pid}.0123456789ab.tmp",  # cannot tell on another host
        f".index.skr.bak.{host}.{gone_pid}.0123456789ab.tmp",  # of the file index.skr.bak
        f".index.skr.{host}.{gone_pid}.not-hex.tmp",  # not a name save gives
    ]
    removed = f".index.skr.{host}.{gone_pid}.0123456789ab.tmp"
    for name in kept + [removed]:
        (tmp_path / name).touch()
    assert _load_quietly(path) == 1
    assert _temporaries(tmp_path) == sorted(kept)


# ---------------------------------------------------------------------------------------------
# Torch estimators: a state without torch objects, and the torch state of older pickles
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [_extractor, _fine_tuner, FITTED["EmbeddingLearner"]])
def test_torch_estimators_store_numpy_and_still_read_older_torch_states(make):
    import torch

    estimator, outputs = make()
    expected = outputs(estimator)
    state = estimator.__getstate__()
    (weights_key,) = [key for key in state if key in ("_model_state", "_network_state")]
    assert "device_" not in state
    assert all(type(value) is np.ndarray for value in state[weights_key].values())
    assert not [key for key, value in state.items() if type(value).__module__.startswith("torch")]
    # As pickles written before held them: torch tensors, and the fitted torch.device.
    older = {**state, "device_": torch.device("cpu")}
    older[weights_key] = {key: torch.from_numpy(value) for key, value in state[weights_key].items()}
    restored = type(estimator).__new__(type(estimator))
    restored.__setstate__(older)
    assert restored.device_ == torch.device("cpu")
    for a, b in zip(_as_arrays(outputs(restored)), _as_arrays(expected), strict=True):
        np.testing.assert_array_equal(a, b)


def test_torch_parameters_are_stored_as_strings(tmp_path):
    import pathlib

    import torch
    from torchvision.models import ResNet18_Weights

    for weights, device, expected_weights in [
        (ResNet18_Weights.IMAGENET1K_V1, torch.device("cpu"), ResNet18_Weights.IMAGENET1K_V1),
        (pathlib.Path("weights") / "trunk.pth", "cpu", str(pathlib.Path("weights/trunk.pth"))),
    ]:
        extractor = CNNFeatureExtractor(backbone="resnet18", weights=weights, device=device)
        tuner = RetrievalFineTuner(backbone="resnet18", weights=weights, device=device)
        for estimator in (extractor, tuner):
            restored = _load_quietly(save(estimator, tmp_path / "unfitted.skr"))
            assert restored.weights == expected_weights
            assert restored.device == "cpu"


def test_a_quantizer_with_a_foreign_faiss_index_is_refused(tmp_path, single_faiss_thread):
    X, _ = _vectors()
    quantizer = ProductQuantizer(n_subquantizers=4, n_bits=4, random_state=0).fit(X)
    other = ProductQuantizer(n_subquantizers=2, n_bits=4, random_state=0).fit(X[:, :8])
    quantizer._index = other._index  # as a tampered file would hold
    path = save(quantizer, tmp_path / "tampered.skr")
    with pytest.raises(FileFormatError, match="does not match the ProductQuantizer") as info:
        _load_quietly(path)
    assert str(path) in str(info.value)
    state = ProductQuantizer(n_subquantizers=4, n_bits=4).fit(X).__getstate__()
    state["_index"] = np.frombuffer(b"not a faiss index", dtype=np.uint8)
    with pytest.raises(ValueError, match="stored faiss index cannot be read"):
        ProductQuantizer.__new__(ProductQuantizer).__setstate__(state)


def test_a_retriever_needs_its_kernel_registered_when_loaded(tmp_path, monkeypatch):
    from dataclasses import replace

    from skretrieval.geometry import _registry, get_kernel, register_kernel

    monkeypatch.setattr(_registry, "_KERNELS", dict(_registry._KERNELS))
    register_kernel(replace(get_kernel("euclidean"), name="my_euclidean"))
    X, _ = _vectors()
    retriever = ImageRetriever(metric="my_euclidean", n_neighbors=2).fit(X)
    path = save(retriever, tmp_path / "custom.skr")
    np.testing.assert_array_equal(
        _load_quietly(path).kneighbors(X[:3])[1], retriever.kneighbors(X[:3])[1]
    )
    monkeypatch.undo()
    with pytest.raises(FileFormatError, match="'my_euclidean' on vectors, which is not registered"):
        _load_quietly(path)
