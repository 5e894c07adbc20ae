"""Save and load fitted estimators and pipelines, without running code from the file.

:func:`save` writes a fitted estimator, a whole fitted :class:`~sklearn.pipeline.Pipeline`, or
a dict or list of them with numbers, strings and numpy arrays (what ``skretrieval index``
writes), in the format of :mod:`skops.io`, scikit-learn's recommended secure persistence: a
zip archive of a JSON description of the objects and of numpy arrays in ``.npy`` format.
Loading it never unpickles. The file names the type of each object, and :func:`load` builds
only the types it trusts:

- by default, the classes of skretrieval and scikit-learn, numpy arrays and dtypes, and the
  builtin and scipy types that skops trusts. Their objects are rebuilt from plain data by the
  libraries' own code; a class is trusted only if it is defined in the module the file names
  (never a function, nor a name imported into such a module). The scikit-learn tree classes
  that skops flags as unsafe (their node arrays are read without bounds checks) are not, nor
  skretrieval's ``DistanceKernel`` (a container of functions; retrievers store their kernel by
  name);
- anything else only when named in ``trusted=`` by the caller, who has inspected it: otherwise
  :class:`UntrustedTypesError` lists the types.

File layout: 16 magic bytes ``b"\\x89skretrieval\\r\\n\\x1a\\n"``; one line of JSON (at most
4096 bytes with its ``\\n``) holding ``format`` (``"skretrieval.persistence"``),
``format_version`` (2), ``payload`` (``"skops"``) and the versions of skretrieval,
scikit-learn and skops that wrote the file; then the skops archive, to the end of the file.
:func:`load` reads and checks the magic bytes and the header line before it reads anything
else: a wrong magic or an unknown format version is a :class:`FileFormatError`, other versions
of skretrieval or scikit-learn a :class:`VersionMismatchWarning`.

Pickle and joblib files, such as the indexes written by skretrieval 0.2, can run arbitrary code
when loaded. :func:`load` recognises them by their first bytes, without unpickling, and reads
them only with ``allow_pickle=True``; load such a file once that way and :func:`save` it again
to convert it.

Writes are atomic: the data go to a temporary file ``.<name>.<host>.<pid>.<random>.tmp`` in
the destination's directory, are flushed to disk, and the temporary file is then renamed over
the destination (:func:`os.replace`). An error in the middle leaves the previous file untouched
and removes the temporary file; the temporary file of a writer that was killed is removed by the
next :func:`save` or :func:`load` of the same path on the same host, once its process is gone.
"""

import importlib
import json
import os
import re
import secrets
import socket
import warnings
import zipfile
from contextlib import contextmanager
from pathlib import Path

import joblib
import numpy as np
import sklearn

import skretrieval

__all__ = [
    "FileFormatError",
    "PickleNotAllowedError",
    "UntrustedTypesError",
    "VersionMismatchWarning",
    "atomic_write",
    "load",
    "save",
]

_MAGIC = b"\x89skretrieval\r\n\x1a\n"
_FORMAT = "skretrieval.persistence"
_FORMAT_VERSION = 2
_PICKLE_FORMAT_VERSION = 1  # joblib files written by skretrieval 0.2
_MAX_HEADER_BYTES = 4096
# Classes of these packages are trusted when defined in the module the file names.
_TRUSTED_PACKAGES = ("skretrieval", "sklearn")
# Never trusted by default, besides those that skops.io.exceptions.UNTRUSTED_TYPE_REASONS lists.
_NEVER_TRUSTED = frozenset(
    {
        # Node indices read without bounds checks.
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        # A container of functions: estimators store kernels by name, never this object.
        "skretrieval.geometry._registry.DistanceKernel",
    }
)
# First bytes of pickles (protocol 2 and later) and of the compressed files joblib writes.
_PICKLE_SIGNATURES = (
    (re.compile(rb"\x80[\x02-\x05]"), "a pickle"),
    (re.compile(rb"\x78[\x01\x5e\x9c\xda]"), "a zlib-compressed joblib file"),
    (re.compile(rb"ZF"), "a zlib-compressed joblib file"),
    (re.compile(rb"\x1f\x8b"), "a gzip-compressed joblib file"),
    (re.compile(rb"BZh"), "a bz2-compressed joblib file"),
    (re.compile(rb"\xfd7zXZ\x00"), "an xz-compressed joblib file"),
    (re.compile(rb"\x5d\x00\x00"), "an lzma-compressed joblib file"),
    (re.compile(rb"\x04\x22\x4d\x18"), "an lz4-compressed joblib file"),
)
# The writer's host in temporary names: letters, digits and dashes only, so names split on dots.
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "localhost"
_TEMPORARY = re.compile(r"(?P<host>[A-Za-z0-9-]+)\.(?P<pid>[0-9]+)\.[0-9a-f]{12}\.tmp")


class FileFormatError(ValueError):
    """A file given to :func:`load` was not written by :func:`save`, or cannot be read back
    by this installation; the message names the file."""


class UntrustedTypesError(FileFormatError):
    """A file given to :func:`load` holds objects of types that are not trusted by default.

    Attributes
    ----------
    types : list of str
        The untrusted types, by full name; pass those you trust as ``load(path, trusted=...)``.
    """

    def __init__(self, message, types):
        super().__init__(message)
        self.types = list(types)


class PickleNotAllowedError(FileFormatError):
    """A file given to :func:`load` is a pickle or joblib file, which loads only with
    ``allow_pickle=True`` since unpickling can run arbitrary code."""


class VersionMismatchWarning(UserWarning):
    """A file given to :func:`load` was written by other versions of skretrieval or
    scikit-learn than the running ones; the object may behave differently or fail."""


def _running_versions():
    # Read at call time, so that a monkeypatched or reloaded version is seen.
    return {"skretrieval_version": skretrieval.__version__, "sklearn_version": sklearn.__version__}


def _check_compress(compress):
    """The zip compression level of ``compress`` (0: stored), or a ``ValueError``."""
    if isinstance(compress, bool | np.bool_):
        return 3 if compress else 0
    if isinstance(compress, int | np.integer) and 0 <= compress <= 9:
        return int(compress)
    raise ValueError(
        f"compress must be an int from 0 (no compression) to 9, or a bool; got {compress!r}."
    )


def save(obj, path, *, compress=3):
    """Write ``obj`` to ``path`` atomically, in a format that loads without running code.

    Parameters
    ----------
    obj : object
        A fitted estimator or pipeline, or numbers, strings, numpy arrays and lists, tuples
        and dicts of them.
    path : str or path-like
        Destination file. Missing parent directories are created; an existing file is replaced
        only once the new one is complete.
    compress : int from 0 to 9 or bool, default=3
        Deflate level of the archive: 0 (or False) for none, 3 (or True) is a good trade-off.

    Returns
    -------
    path : pathlib.Path
        The file written.

    Raises
    ------
    TypeError
        If ``obj`` holds an object that cannot be stored without pickle (a function defined
        at run time, a torch tensor, an open file, ...); nothing is written.

    See Also
    --------
    load : read the file back.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from skretrieval.neighbors import ImageRetriever
    >>> from skretrieval.persistence import load, save
    >>> retriever = ImageRetriever(n_neighbors=1).fit(np.eye(3))
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = save(retriever, Path(folder) / "retriever.skr")
    ...     restored = load(path)
    >>> restored.kneighbors([[0.0, 1.0, 0.1]], return_distance=False)
    array([[1]])
    """
    # Imported when used: importing skops.io imports every scikit-learn estimator.
    import skops
    import skops.io

    level = _check_compress(compress)
    try:
        payload = skops.io.dumps(
            obj,
            compression=zipfile.ZIP_DEFLATED if level else zipfile.ZIP_STORED,
            compresslevel=level or None,
        )
    except MemoryError:
        raise
    except Exception as exc:
        raise TypeError(
            f"Cannot save {type(obj).__name__} to {os.fspath(path)}: it holds an object that "
            f"cannot be stored without pickle ({type(exc).__name__}: {exc}). save stores "
            "estimators, numpy arrays, numbers, strings and containers of them."
        ) from exc
    header = {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        "payload": "skops",
        "skops_version": skops.__version__,
        **_running_versions(),
    }
    with atomic_write(path) as file:
        file.write(_MAGIC)
        file.write(json.dumps(header, sort_keys=True).encode() + b"\n")
        file.write(payload)
    return Path(path)


@contextmanager
def atomic_write(path):
    """Open ``path`` for binary writing so that it appears complete or not at all.

    The data go to a temporary file in ``path``'s directory, which is flushed to disk and then
    renamed over ``path`` when the ``with`` block ends without error. On any error (also
    ``KeyboardInterrupt``) the temporary file is removed and a previous ``path`` is untouched.
    Temporary files that killed writers left for ``path`` on this host are removed first.
    Missing parent directories are created.

    Parameters
    ----------
    path : str or path-like
        Destination file.

    Yields
    ------
    file : binary file object
        Write the content here.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder) / "descriptors.npy"
    ...     with atomic_write(path) as file:
    ...         np.save(file, np.zeros(3))
    ...     np.load(path)
    array([0., 0., 0.])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    temporary, handle = _create_temporary_beside(path)
    try:
        with os.fdopen(handle, "wb") as file:
            yield file
            file.flush()
            # On disk before the rename, so that the rename never exposes missing data.
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _sync_directory(path.parent)


def _create_temporary_beside(path):
    """Create and open a new hidden file in ``path``'s directory: ``(path, file descriptor)``.

    Same directory, so that ``os.replace`` is a rename within one file system (atomic). The
    name records the host and process, so that a later writer can tell a temporary file whose
    writer is gone. Opened with mode 0o666 so that the permissions follow the umask like any
    new file (``mkstemp`` would give 0o600); ``O_EXCL`` guarantees it is ours.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        name = f".{path.name}.{_HOST}.{os.getpid()}.{secrets.token_hex(6)}.tmp"
        temporary = path.with_name(name)
        try:
            return temporary, os.open(temporary, flags, 0o666)
        except FileExistsError:  # a name collision: draw another
            continue


def _process_is_gone(pid):
    """Whether no process ``pid`` exists on this host (POSIX); False when in doubt."""
    if os.name != "posix" or pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):  # e.g. PermissionError: another user's process
        return False
    return False


def _remove_stale_temporaries(path):
    """Remove the temporary files of ``path`` left by writers of this host that are gone."""
    prefix = f".{path.name}."
    try:
        with os.scandir(path.parent) as scan:
            entries = [entry.name for entry in scan]
    except OSError:
        return
    for name in entries:
        match = name.startswith(prefix) and _TEMPORARY.fullmatch(name, len(prefix))
        if match and match["host"] == _HOST and _process_is_gone(int(match["pid"])):
            try:
                os.unlink(path.parent / name)
            except OSError:  # removed meanwhile, or not ours to remove
                pass


def _sync_directory(directory):
    """Persist the rename itself (POSIX); directories cannot be opened so on Windows."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def load(path, *, trusted=None, allow_pickle=False):
    """Read an object written by :func:`save`, creating only trusted types.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save`.
    trusted : list of str or type, default=None
        Types to create besides those trusted by default (skretrieval's and scikit-learn's
        classes, numpy arrays, builtin containers): full names as listed by
        :class:`UntrustedTypesError`, or the types themselves. Trusting a type lets the file
        create objects of it: name only types you have inspected, in a file you trust.
    allow_pickle : bool, default=False
        Also read pickle and joblib files, such as those written by skretrieval 0.2.
        Unpickling can run arbitrary code: allow it only for a file you trust.

    Returns
    -------
    obj : object
        The object given to :func:`save`.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    IsADirectoryError
        If ``path`` is a directory.
    FileFormatError
        If ``path`` is not a file written by :func:`save`, is damaged, is written in an
        unknown format version, or refers to classes this installation lacks; the message
        names the path. Its subclasses:
    UntrustedTypesError
        If the file holds types that are neither trusted by default nor in ``trusted``.
    PickleNotAllowedError
        If the file is a pickle or joblib file and ``allow_pickle`` is False.

    Warns
    -----
    VersionMismatchWarning
        If the file was written by other versions of skretrieval or scikit-learn than the
        running ones; the message names both.

    See Also
    --------
    save : write the file.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from skretrieval.persistence import load, save
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = save({"paths": ["a.jpg", "b.jpg"], "k": 5}, Path(folder) / "index.skr")
    ...     load(path)
    {'paths': ['a.jpg', 'b.jpg'], 'k': 5}
    """
    path = Path(path)
    trusted_names = _type_names(trusted)
    if path.is_dir():
        raise IsADirectoryError(
            f"{path} is a directory; give the file written by skretrieval.persistence.save."
        )
    _remove_stale_temporaries(path)
    try:
        file = open(path, "rb")
    except FileNotFoundError:
        raise FileNotFoundError(f"No such file: {path}") from None
    with file:
        head = file.read(len(_MAGIC))
        if head != _MAGIC:
            return _load_pickle(path, head, allow_pickle)
        header = _read_header(path, file)
        _check_versions(path, header, stacklevel=3)
        payload = file.read()
    return _load_payload(path, payload, trusted_names)


def _type_names(trusted):
    if trusted is None:
        return set()
    if isinstance(trusted, str | type):
        trusted = [trusted]
    names = set()
    for item in trusted:
        if isinstance(item, str):
            names.add(item)
        elif isinstance(item, type):
            names.add(f"{item.__module__}.{item.__qualname__}")
        else:
            raise TypeError(
                "trusted must be a list of type names (str, as UntrustedTypesError lists them) "
                f"or of types; got an item of type {type(item).__name__}."
            )
    return names


def _read_header(path, file):
    """The JSON header line after the magic bytes, checked; nothing after it is read."""
    line = file.readline(_MAX_HEADER_BYTES)
    try:
        header = json.loads(line) if line.endswith(b"\n") else None
    except ValueError:  # not JSON, or not UTF-8
        header = None
    if not isinstance(header, dict) or header.get("format") != _FORMAT:
        raise FileFormatError(
            f"{path} starts like a file written by skretrieval.persistence.save but its header "
            "line is damaged; the file cannot be read."
        )
    if header.get("format_version") != _FORMAT_VERSION or header.get("payload") != "skops":
        raise FileFormatError(
            f"{path} was written in skretrieval file format version "
            f"{header.get('format_version')!r} (by skretrieval "
            f"{header.get('skretrieval_version')}); this version reads format {_FORMAT_VERSION}: "
            "load it with the skretrieval version that wrote it."
        )
    return header


def _check_versions(path, header, stacklevel):
    """Warn if the versions in ``header`` are not the running ones (``stacklevel``: of the
    caller of :func:`load`)."""
    written = {key: header.get(key) for key in ("skretrieval_version", "sklearn_version")}
    running = _running_versions()
    if written != running:
        warnings.warn(
            f"{path} was written by skretrieval {written['skretrieval_version']} with "
            f"scikit-learn {written['sklearn_version']}; this is skretrieval "
            f"{running['skretrieval_version']} with scikit-learn {running['sklearn_version']}. "
            "The loaded object may behave differently or fail; refit it if in doubt.",
            VersionMismatchWarning,
            stacklevel=stacklevel,
        )


def _trust_by_default(name):
    """``"trusted"``, ``"missing"`` (a class of a trusted package that is not installed) or
    ``"refused"`` for the type ``name`` that a file refers to."""
    from skops.io import exceptions

    module_name, _, class_name = name.rpartition(".")
    parts = module_name.split(".")
    if (
        name in _NEVER_TRUSTED
        or name in getattr(exceptions, "UNTRUSTED_TYPE_REASONS", {})
        or parts[0] not in _TRUSTED_PACKAGES
        or not all(part.isidentifier() and not part.startswith("__") for part in parts)
        or "tests" in parts
        or not class_name.isidentifier()
    ):
        return "refused"
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError):
        return "missing"
    # A class defined there: not a function, nor anything imported into the module.
    is_own_class = isinstance(cls, type) and (cls.__module__, cls.__qualname__) == (
        module_name,
        class_name,
    )
    return "trusted" if is_own_class else "refused"


def _load_payload(path, payload, trusted_names):
    import skops.io

    try:
        found = skops.io.get_untrusted_types(data=payload)
    except MemoryError:
        raise
    except Exception as exc:
        raise FileFormatError(
            f"{path} has a valid skretrieval header but its content is damaged or truncated "
            f"({type(exc).__name__}: {exc}); the file cannot be read."
        ) from None
    verdicts = {name: _trust_by_default(name) for name in found if name not in trusted_names}
    refused = sorted(name for name, verdict in verdicts.items() if verdict == "refused")
    if refused:
        raise UntrustedTypesError(
            f"{path} holds objects of types that are not trusted by default: {refused}. Loading "
            "creates them from the file and runs their code; if you know these types and trust "
            f"the file, load it with load(path, trusted={refused!r}).",
            refused,
        )
    missing = sorted(name for name, verdict in verdicts.items() if verdict == "missing")
    if missing:
        raise FileFormatError(
            f"Cannot load {path}: it refers to classes that this installation lacks "
            f"({missing}); it may have been written by other versions of skretrieval or "
            "scikit-learn."
        )
    try:
        return skops.io.loads(payload, trusted=sorted(found))
    except MemoryError:
        raise
    except (ImportError, AttributeError) as exc:
        raise _lacking_code(path, exc) from exc
    except Exception as exc:
        raise FileFormatError(
            f"Cannot rebuild the objects stored in {path} ({type(exc).__name__}: {exc}); the "
            "file is damaged or was written by other versions of skretrieval or its "
            "dependencies."
        ) from exc


def _lacking_code(path, exc):
    """The error for a file that refers to code this installation does not have."""
    return FileFormatError(
        f"Cannot load {path}: it refers to code that this installation lacks "
        f"({type(exc).__name__}: {exc}); it may have been written by other versions of "
        "skretrieval or its dependencies."
    )


def _load_pickle(path, head, allow_pickle):
    """The object of a pickle or joblib file written by skretrieval 0.2, if allowed."""
    kind = next((kind for pattern, kind in _PICKLE_SIGNATURES if pattern.match(head)), None)
    if not allow_pickle:
        if kind is None:
            raise FileFormatError(
                f"{path} is not a file written by skretrieval.persistence.save: it does not "
                "start with the skretrieval header."
            )
        raise PickleNotAllowedError(
            f"{path} is {kind} (such as the files written by skretrieval 0.2), and loading "
            "it can run arbitrary code. If you trust it, load it with "
            "load(path, allow_pickle=True), then save it again to convert it to the safe format."
        )
    try:
        content = joblib.load(path)
    except MemoryError:
        raise
    except (ImportError, AttributeError) as exc:
        # A valid pickle that refers to code this installation does not have.
        raise _lacking_code(path, exc) from exc
    except Exception as exc:
        raise FileFormatError(
            f"{path} is not a file written by skretrieval.persistence.save: joblib cannot read "
            f"it ({type(exc).__name__}: {exc})."
        ) from exc
    if not (isinstance(content, dict) and content.get("format") == _FORMAT):
        raise FileFormatError(
            f"{path} is a joblib/pickle file but not one written by "
            f"skretrieval.persistence.save (it holds an object of type {type(content).__name__}, "
            "without the skretrieval header); read it with joblib.load if you trust it."
        )
    if content.get("format_version") != _PICKLE_FORMAT_VERSION:
        raise FileFormatError(
            f"{path} was written in skretrieval file format version "
            f"{content.get('format_version')!r} (by skretrieval "
            f"{content.get('skretrieval_version')}); this version reads format "
            f"{_PICKLE_FORMAT_VERSION} pickles."
        )
    _check_versions(path, content, stacklevel=4)
    return content["object"]
