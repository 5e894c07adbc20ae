"""Save and load fitted estimators and pipelines.

:func:`save` writes any picklable object -- a fitted
:class:`~skretrieval.neighbors.ImageRetriever`, a whole fitted
:class:`~sklearn.pipeline.Pipeline`, a dict of them -- with :mod:`joblib`, wrapped in a small
header that records the versions of skretrieval and scikit-learn that wrote it. :func:`load`
reads it back, refuses a file that :func:`save` did not write, and warns when the versions
differ from the running ones.

Writes are atomic: the data go to a temporary file in the destination's directory, are flushed
to disk, and the temporary file is then renamed over the destination (:func:`os.replace`). A
crash or an error in the middle leaves the previous file untouched and no temporary file
behind; readers never see a half-written file.

.. warning::
   Loading unpickles the file, which can run arbitrary code. Only load files you trust.
"""

import os
import secrets
import warnings
from contextlib import contextmanager
from pathlib import Path

import joblib
import sklearn

import skretrieval

__all__ = ["FileFormatError", "VersionMismatchWarning", "atomic_write", "load", "save"]

# Marks a file as written by save(); bumped if the header layout ever changes.
_FORMAT = "skretrieval.persistence"
_FORMAT_VERSION = 1


class FileFormatError(ValueError):
    """A file given to :func:`load` was not written by :func:`save`, or cannot be read back
    by this installation."""


class VersionMismatchWarning(UserWarning):
    """A file given to :func:`load` was written by other versions of skretrieval or
    scikit-learn than the running ones; the object may behave differently or fail."""


def _running_versions():
    # Read at call time, so that a monkeypatched or reloaded version is seen.
    return {"skretrieval_version": skretrieval.__version__, "sklearn_version": sklearn.__version__}


def save(obj, path, compress=3):
    """Write ``obj`` to ``path`` atomically, with the versions that wrote it.

    Parameters
    ----------
    obj : object
        Anything picklable, typically a fitted estimator or pipeline.
    path : str or path-like
        Destination file. Missing parent directories are created; an existing file is replaced
        only once the new one is complete.
    compress : int from 0 to 9, bool, str or tuple, default=3
        Compression, as :func:`joblib.dump` takes it: 0 for none, 3 is a good trade-off.

    Returns
    -------
    path : pathlib.Path
        The file written.

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
    ...     path = save(retriever, Path(folder) / "retriever.joblib")
    ...     restored = load(path)
    >>> restored.kneighbors([[0.0, 1.0, 0.1]], return_distance=False)
    array([[1]])
    """
    content = {"format": _FORMAT, "format_version": _FORMAT_VERSION, **_running_versions()}
    content["object"] = obj
    with atomic_write(path) as file:
        joblib.dump(content, file, compress=compress)
    return Path(path)


@contextmanager
def atomic_write(path):
    """Open ``path`` for binary writing so that it appears complete or not at all.

    The data go to a temporary file in ``path``'s directory, which is flushed to disk and then
    renamed over ``path`` when the ``with`` block ends without error. On any error (also
    ``KeyboardInterrupt``) the temporary file is removed and a previous ``path`` is untouched.
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

    Same directory, so that ``os.replace`` is a rename within one file system (atomic). Opened
    with mode 0o666 so that the permissions follow the umask like any new file (``mkstemp``
    would give 0o600); ``O_EXCL`` guarantees it is ours.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return temporary, os.open(temporary, flags, 0o666)
        except FileExistsError:  # a name collision: draw another
            continue


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


def load(path):
    """Read an object written by :func:`save`.

    Parameters
    ----------
    path : str or path-like
        A file written by :func:`save`.

    Returns
    -------
    obj : object
        The object given to :func:`save`.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    FileFormatError
        If ``path`` is not a file written by :func:`save` (not a joblib file, or a joblib file
        without the skretrieval header), naming the path.

    Warns
    -----
    VersionMismatchWarning
        If the file was written by other versions of skretrieval or scikit-learn than the
        running ones; the message names both.

    See Also
    --------
    save : write the file.

    Notes
    -----
    Loading unpickles the file, which can run arbitrary code: only load files you trust.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        content = joblib.load(path)
    except MemoryError:
        raise
    except (ImportError, AttributeError) as exc:
        # A valid pickle that refers to code this installation does not have.
        raise FileFormatError(
            f"cannot load {path}: it refers to code that this installation lacks "
            f"({type(exc).__name__}: {exc}); it may have been written by other versions of "
            "skretrieval or its dependencies."
        ) from exc
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
    if content.get("format_version") != _FORMAT_VERSION:
        raise FileFormatError(
            f"{path} was written in skretrieval file format version "
            f"{content.get('format_version')!r} (by skretrieval "
            f"{content.get('skretrieval_version')}); this version reads format {_FORMAT_VERSION}."
        )
    written, running = (
        {key: content.get(key) for key in ("skretrieval_version", "sklearn_version")},
        _running_versions(),
    )
    if written != running:
        warnings.warn(
            f"{path} was written by skretrieval {written['skretrieval_version']} with "
            f"scikit-learn {written['sklearn_version']}; this is skretrieval "
            f"{running['skretrieval_version']} with scikit-learn {running['sklearn_version']}. "
            "The loaded object may behave differently or fail; refit it if in doubt.",
            VersionMismatchWarning,
            stacklevel=2,
        )
    return content["object"]
