"""A file given to ``load`` never runs code unless the caller opts in: crafted pickles, joblib
files and skops archives referring to untrusted types are refused before anything is built,
and the version header is checked before the content is read."""

import io
import json
import os
import pickle
import sys
import types
import warnings
import zipfile

import joblib
import numpy as np
import pytest
import skops.io
from payloads import CreatesFile

import skretrieval
from skretrieval.neighbors import ImageRetriever
from skretrieval.persistence import (
    FileFormatError,
    PickleNotAllowedError,
    UntrustedTypesError,
    VersionMismatchWarning,
    load,
    save,
)

MAGIC = b"\x89skretrieval\r\n\x1a\n"


def _header(**changes):
    header = {
        "format": "skretrieval.persistence",
        "format_version": 2,
        "payload": "skops",
        "skretrieval_version": skretrieval.__version__,
        "sklearn_version": __import__("sklearn").__version__,
        **changes,
    }
    return MAGIC + json.dumps(header).encode() + b"\n"


class _SetsMarker:
    """Its ``__setstate__``, which skops calls when it builds the object, creates the marker."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __setstate__(self, state):
        open(state["marker"], "w").close()
        self.__dict__.update(state)


# ---------------------------------------------------------------------------------------------
# Pickles and joblib files
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_a_crafted_pickle_runs_nothing_and_is_named(tmp_path, protocol):
    marker = tmp_path / "marker"
    path = tmp_path / "index.skr"
    path.write_bytes(pickle.dumps({"retriever": CreatesFile(marker)}, protocol=protocol))
    with pytest.raises(PickleNotAllowedError) as info:
        load(path)
    message = str(info.value)
    assert str(path) in message and "a pickle" in message and "arbitrary code" in message
    assert "allow_pickle=True" in message
    assert isinstance(info.value, FileFormatError)
    assert not marker.exists()


@pytest.mark.parametrize("compress", ["zlib", "gzip", "bz2", "xz", "lzma", None])
def test_the_same_payload_in_a_joblib_file_runs_nothing(tmp_path, compress):
    marker = tmp_path / "marker"
    path = tmp_path / "index.joblib"
    joblib.dump({"retriever": CreatesFile(marker)}, path, compress=(compress, 3) if compress else 0)
    with pytest.raises(PickleNotAllowedError, match="joblib file|a pickle") as info:
        load(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_a_protocol_0_pickle_is_not_read_either(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "index.skr"
    path.write_bytes(pickle.dumps(CreatesFile(marker), protocol=0))
    with pytest.raises(FileFormatError, match="does not start with the skretrieval header"):
        load(path)
    assert not marker.exists()


def test_allow_pickle_is_an_explicit_opt_in(tmp_path):
    # With the opt-in the file is unpickled, as asked: its code runs.
    marker = tmp_path / "marker"
    path = tmp_path / "index.joblib"
    joblib.dump({"retriever": CreatesFile(marker)}, path)
    with pytest.raises(FileFormatError, match="without the skretrieval header"):
        load(path, allow_pickle=True)
    assert marker.exists()


# ---------------------------------------------------------------------------------------------
# skops archives with untrusted types
# ---------------------------------------------------------------------------------------------


def _skops_file(tmp_path, obj, name="index.skr"):
    path = tmp_path / name
    path.write_bytes(_header() + skops.io.dumps(obj))
    return path


def test_a_custom_class_is_refused_then_trusted_on_request(tmp_path):
    marker = tmp_path / "marker"
    path = _skops_file(tmp_path, {"retriever": _SetsMarker(marker), "paths": ["a"]})
    type_name = f"{__name__}._SetsMarker"
    with pytest.raises(UntrustedTypesError) as info:
        load(path)
    assert info.value.types == [type_name]
    message = str(info.value)
    assert str(path) in message and type_name in message
    assert f"trusted=[{type_name!r}]" in message
    assert isinstance(info.value, FileFormatError)
    assert not marker.exists()
    # Trusted explicitly, by name or as the type: built, and its code runs.
    for trusted in ([type_name], [_SetsMarker]):
        marker.unlink(missing_ok=True)
        content = load(path, trusted=trusted)
        assert isinstance(content["retriever"], _SetsMarker) and marker.exists()


@pytest.mark.parametrize("function", [eval, os.system, os.remove, pickle.loads])
def test_a_reference_to_a_dangerous_function_is_refused(tmp_path, function):
    path = _skops_file(tmp_path, {"metric": function})
    with pytest.raises(UntrustedTypesError) as info:
        load(path)
    assert info.value.types == [f"{function.__module__}.{function.__name__}"]


def _schema_file(tmp_path, node):
    """A file whose skops archive holds the node ``node`` (a state dict), as a crafted file."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zip_file:
        schema = {**node, "protocol": skops.io._protocol.PROTOCOL, "_skops_version": "0.16.0"}
        zip_file.writestr("schema.json", json.dumps(schema))
    path = tmp_path / "crafted.skr"
    path.write_bytes(_header() + archive.getvalue())
    return path


def _call_node(module, name, *args):
    """A skops node that, once trusted, calls ``module.name(*args)`` to build the object."""
    return {
        "__class__": name,
        "__module__": module,
        "__loader__": "ConstructorFromReduceNode",
        "content": {
            "__class__": "tuple",
            "__module__": "builtins",
            "__loader__": "TupleNode",
            "content": [
                {"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode",
                 "content": json.dumps(arg), "is_json": True}
                for arg in args
            ],
        },
    }  # fmt: skip


@pytest.mark.parametrize(
    "module, name",
    [
        ("builtins", "open"),
        ("io", "open"),
        # Names under trusted packages that are not classes defined there: a function, and a
        # function imported into a scikit-learn module. Trusting by prefix alone would call
        # them.
        ("sklearn.datasets._base", "makedirs"),
        ("skretrieval.persistence", "save"),
        ("skretrieval.persistence", "os"),
        ("skretrieval.__main__", "main"),
    ],
)
def test_a_crafted_call_is_refused_and_runs_nothing(tmp_path, module, name):
    marker = tmp_path / "marker"
    path = _schema_file(tmp_path, _call_node(module, name, str(marker), "w"))
    with pytest.raises(UntrustedTypesError) as info:
        load(path)
    assert info.value.types == [f"{module}.{name}"]
    assert not marker.exists()


def test_a_trusted_class_built_from_a_crafted_call_runs_only_its_own_code(tmp_path):
    # ImageRetriever(*args) only stores parameters: a trusted class is safe to call.
    path = _schema_file(tmp_path, _call_node("skretrieval.neighbors._retriever", "ImageRetriever"))
    assert isinstance(load(path), ImageRetriever)


def test_unsafe_scikit_learn_types_are_not_trusted_by_default(tmp_path):
    from sklearn.tree import DecisionTreeClassifier

    tree = DecisionTreeClassifier(max_depth=2).fit(np.eye(4), [0, 1, 0, 1])
    path = save(tree, tmp_path / "tree.skr")
    with pytest.raises(UntrustedTypesError) as info:
        load(path)
    assert info.value.types == ["sklearn.tree._tree.Tree"]
    restored = load(path, trusted=["sklearn.tree._tree.Tree"])
    assert restored.predict(np.eye(4)).tolist() == [0, 1, 0, 1]


def test_a_stored_distance_kernel_is_not_trusted(tmp_path):
    # Retrievers store their kernel by name; a DistanceKernel object holds functions.
    from skretrieval.geometry import get_kernel

    path = _skops_file(tmp_path, {"kernel": get_kernel("cosine")})
    with pytest.raises(UntrustedTypesError) as info:
        load(path)
    assert "skretrieval.geometry._registry.DistanceKernel" in info.value.types


def test_trusted_must_name_types(tmp_path):
    path = save(1, tmp_path / "one.skr")
    with pytest.raises(TypeError, match="trusted must be a list of type names"):
        load(path, trusted=[42])


# ---------------------------------------------------------------------------------------------
# The header is checked first
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def content_never_read(monkeypatch):
    """Fail the test if load hands anything to skops or joblib."""

    def forbidden(*args, **kwargs):
        raise AssertionError("the content was read")

    for module, name in [
        (skops.io, "loads"),
        (skops.io, "load"),
        (skops.io, "get_untrusted_types"),
        (joblib, "load"),
        (pickle, "load"),
        (pickle, "loads"),
    ]:
        monkeypatch.setattr(module, name, forbidden)


@pytest.mark.parametrize(
    "header, reason",
    [
        (_header(format_version=3), "format version 3"),
        (_header(payload="pickle"), "format version 2"),
        (_header(format="other"), "header line is damaged"),
        (MAGIC + b"\xff\xfe not utf-8\n", "header line is damaged"),
        (b"\x89skretrievaL\r\n\x1a\n" + _header()[len(MAGIC) :], "does not start with"),
        (MAGIC.replace(b"\r\n", b"\n") + _header()[len(MAGIC) :], "does not start with"),
    ],
)
def test_a_wrong_header_is_refused_without_reading_the_content(
    tmp_path, content_never_read, header, reason
):
    marker = tmp_path / "marker"
    path = tmp_path / "index.skr"
    path.write_bytes(header + pickle.dumps(CreatesFile(marker)))
    # allow_pickle=True reads pickles, not a damaged skretrieval file.
    for allow_pickle in (False, True) if header.startswith(MAGIC) else (False,):
        with pytest.raises(FileFormatError, match=reason) as info:
            load(path, allow_pickle=allow_pickle)
        assert str(path) in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "body",
    [b"", b"garbage" * 100, b"PK\x03\x04" + b"\x00" * 40, pickle.dumps({"a": 1})],
)
def test_a_right_header_with_a_garbage_body_is_a_clear_error(tmp_path, body):
    path = tmp_path / "index.skr"
    path.write_bytes(_header() + body)
    with pytest.raises(FileFormatError, match="valid skretrieval header but its content") as info:
        load(path)
    assert str(path) in str(info.value)


def test_the_versions_are_checked_before_the_content(tmp_path):
    path = tmp_path / "index.skr"
    path.write_bytes(_header(skretrieval_version="0.0.1") + b"garbage")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        with pytest.raises(FileFormatError, match="content is damaged"):
            load(path)
    assert [w.category for w in record] == [VersionMismatchWarning]


def test_a_vanished_module_is_untrusted_not_imported(tmp_path, monkeypatch):
    # A type of a module that is not installed: refused as untrusted before any import.
    module = types.ModuleType("_skretrieval_planted")
    module._SetsMarker = _SetsMarker
    monkeypatch.setattr(_SetsMarker, "__module__", module.__name__)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    path = _skops_file(tmp_path, _SetsMarker(tmp_path / "marker"))
    monkeypatch.undo()
    with pytest.raises(UntrustedTypesError, match="_skretrieval_planted._SetsMarker"):
        load(path)
    assert "_skretrieval_planted" not in sys.modules
