"""Building, updating and reading an index file: :func:`build_index`, :func:`load_index`."""

import os
import stat
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path

import numpy as np
from sklearn.base import clone
from sklearn.utils import Bunch
from tqdm.auto import tqdm

from skretrieval.exceptions import NoReadableImageError
from skretrieval.extraction import CNNFeatureExtractor, ImageNotFoundError, ImageReadError
from skretrieval.indexing._checkpoint import Checkpoint, Entry, partial_folder
from skretrieval.indexing._files import check_output, list_paths, write_skipped
from skretrieval.indexing._settings import settings_differences
from skretrieval.neighbors import ImageRetriever
from skretrieval.persistence import FileFormatError, load, save

# Marks a saved dict as an index; bumped if its keys ever change meaning.
_FORMAT = "skretrieval.index"
_FORMAT_VERSION = 1

# Images per call of the extractor: a bad file found while decoding costs at most this much
# work again (the rest of the call is retried without it), and a call is long enough for the
# extractor's worker threads to overlap decoding with the network.
_MIN_PIECE = 64


class IndexUpdateError(ValueError):
    """An existing index that :func:`build_index` cannot update: made with other settings, or
    not readable as an index. ``rebuild=True`` replaces it."""


class IndexFormatError(FileFormatError):
    """A file that :func:`skretrieval.persistence.load` reads but that holds no index."""


@dataclass(frozen=True)
class IndexReport:
    """What :func:`build_index` did.

    ``n_indexed = n_reused + n_new + n_changed`` and ``n_new + n_changed = n_described +
    n_resumed``.

    Attributes
    ----------
    output : pathlib.Path
        The index file written.
    n_indexed : int
        Images in the index.
    n_new : int
        Images added: not in the previous index (all of them for a first build).
    n_changed : int
        Images of the previous index described again because their size or modification time
        changed.
    n_reused : int
        Images whose descriptors were taken from the previous index, unchanged.
    n_removed : int
        Images of the previous index no longer indexed: deleted, or now unreadable.
    n_resumed : int
        Images whose descriptors were read from the checkpoint of an interrupted run.
    n_described : int
        Images run through the network by this call.
    skipped : list of (str, str)
        ``(path, reason)`` of the files that could not be read, sorted by path.
    skipped_file : pathlib.Path or None
        The tab-separated list of ``skipped`` written beside the index, or None when nothing
        was skipped.
    """

    output: Path
    n_indexed: int
    n_new: int
    n_changed: int
    n_reused: int
    n_removed: int
    n_resumed: int
    n_described: int
    skipped: list
    skipped_file: Path | None


def _check_arguments(extractor, on_error, checkpoint_every):
    if not isinstance(extractor, CNNFeatureExtractor) or extractor.pooling is None:
        raise TypeError(
            "extractor must be a CNNFeatureExtractor with a pooling, which gives one descriptor "
            "per image, e.g. CNNFeatureExtractor(pooling=GeMPooling()); got "
            f"{extractor!r}."
        )
    if extractor.weights is None and not isinstance(extractor.random_state, Integral):
        raise ValueError(
            "extractor has random weights (weights=None) without an integer random_state: they "
            "differ on every run, so an index of them could never be resumed or updated. Set "
            "random_state=0 (or any integer)."
        )
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip'; got {on_error!r}.")
    if not isinstance(checkpoint_every, Integral) or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be a positive integer; got {checkpoint_every!r}.")


def _stat_files(paths, on_error):
    """``{path: (size, mtime_ns)}`` of the readable files, and ``[(path, reason)]`` of others."""
    stats, skipped = {}, []
    for position, path in enumerate(paths):
        try:
            status = os.stat(path)
            error = None if stat.S_ISREG(status.st_mode) else "is not a regular file"
        except FileNotFoundError:
            error = "file not found"
        except OSError as exc:
            error = f"cannot be read: {exc.strerror}"
        if error is None:
            stats[path] = (status.st_size, status.st_mtime_ns)
            continue
        if on_error == "raise":
            kind = ImageNotFoundError if error == "file not found" else ImageReadError
            raise kind(
                f"cannot index {path!r}: {error}.", index=position, path=path, reason=error
            )
        skipped.append((path, error))
    return stats, skipped


def _cannot_index(error, path, position):
    """The error of ``on_error="raise"``: the image error, with the file and the remedy."""
    return type(error)(
        f"cannot index {path!r}: {error.reason}. Fix or remove the file, or pass "
        "on_error='skip' to skip unreadable images.",
        index=position,
        path=path,
        reason=error.reason,
    )


def _describe(model, paths, positions, on_error):
    """Descriptors of ``paths`` (None for an unreadable file) and the reasons of those skipped.

    The extractor checks every file before decoding any: a bad file found then costs nothing;
    one found while decoding (truncated data) costs the call, retried without it.
    """
    descriptors, reasons = [None] * len(paths), [None] * len(paths)
    remaining = list(range(len(paths)))
    while remaining:
        try:
            rows = model.transform([paths[i] for i in remaining])
        except ImageReadError as exc:
            position = remaining.pop(exc.index)
            if on_error == "raise":
                raise _cannot_index(exc, paths[position], positions[position]) from None
            reasons[position] = exc.reason
            continue
        for position, row in zip(remaining, rows, strict=True):
            descriptors[position] = row
        break
    return descriptors, reasons


def _previous_entries(output, settings):
    """``{path: Entry}`` of the index already at ``output`` (none without one)."""
    if not output.exists():
        return {}
    try:
        index = load_index(output)
    except (FileFormatError, OSError) as exc:
        raise IndexUpdateError(
            f"the output {str(output)!r} exists but cannot be read as an index ({exc}); pass "
            "rebuild=True (--rebuild) to replace it, or choose another output."
        ) from exc
    if index.settings is None or index.sizes is None:
        raise IndexUpdateError(
            f"the index {str(output)!r} was written by an earlier version of skretrieval, "
            "without the file records that updating needs; pass rebuild=True (--rebuild) to "
            "build it anew."
        )
    if index.settings != settings:
        differences = "; ".join(settings_differences(index.settings, settings))
        raise IndexUpdateError(
            f"the index {str(output)!r} was made with other settings ({differences}); pass "
            "rebuild=True (--rebuild) to describe every image again with the new settings, or "
            "index with the settings of the index."
        )
    return {
        path: Entry(int(size), int(mtime), descriptor, None)
        for path, size, mtime, descriptor in zip(
            index.paths, index.sizes, index.mtimes_ns, index.descriptors, strict=True
        )
    }


def build_index(
    images,
    output,
    extractor,
    *,
    retriever=None,
    on_error="raise",
    checkpoint_every=500,
    rebuild=False,
    client=None,
    verbose=True,
):
    """Describe images and save a search index; resumable, incremental, skipping bad files.

    The output is checked first (its folder is created if needed and must accept a new file);
    then the images are described in chunks of ``checkpoint_every``, each saved atomically in
    the folder ``<output>.partial`` beside the index. A run that is killed and started again
    with the same settings reads the saved chunks instead of describing their images again.
    When ``output`` already holds an index made with the same settings, only new and changed
    files (by size and modification time) are described, and deleted ones are dropped. The
    index is saved with :func:`skretrieval.persistence.save` (atomically), the checkpoint folder
    is then removed.

    Parameters
    ----------
    images : str, path-like or sequence of path-like
        A folder, whose image files are listed recursively (as
        :func:`skretrieval.datasets.list_images` does), or a list of image files.
    output : str or path-like
        The index file.
    extractor : CNNFeatureExtractor
        A feature extractor with a ``pooling`` (one descriptor per image); a clone of it is
        fitted and saved in the index. Random weights need an integer ``random_state``.
    retriever : ImageRetriever, default=None
        The unfitted search estimator to fit on the descriptors; None:
        ``ImageRetriever(metric="cosine")``.
    on_error : {"raise", "skip"}, default="raise"
        What a missing, non-image, truncated or corrupt file does. ``"raise"``: the first one
        raises :class:`~skretrieval.extraction.ImageReadError` naming it (descriptors described
        so far are checkpointed). ``"skip"``: it is left out of the index and listed, with the
        reason, in ``<output>.skipped.tsv``.
    checkpoint_every : int, default=500
        Images per checkpoint chunk: the most work an interruption loses.
    rebuild : bool, default=False
        Ignore the index already at ``output`` (or any other file there) and describe every
        image. Needed when it was made with other settings (backbone, weights, pooling, image
        size, skretrieval version, device precision): updating such an index raises
        :class:`IndexUpdateError`. A checkpoint made with other settings is never reused (a
        warning says so); one made with the same settings is, also with ``rebuild=True``.
    client : distributed.Client, default=None
        A Dask cluster to describe the images on (see :func:`skretrieval.distributed.transform`):
        each checkpoint chunk is split among the workers, which must read the files under the
        same paths. Checkpoints, updates and skipped files work as without one; the settings
        record that the workers' devices made the descriptors, so such an index is updated
        or resumed with a cluster again (or rebuilt). None describes them in this process.
    verbose : bool, default=True
        Show a progress bar.

    Returns
    -------
    report : IndexReport
        How many images were indexed, new, changed, reused, removed, resumed and described, and
        the files skipped.

    Raises
    ------
    IsADirectoryError, NotADirectoryError, PermissionError
        Before any image is described, when ``output`` cannot be written.
    FileNotFoundError, NotADirectoryError, ValueError
        When ``images`` is not a folder of images or is empty.
    ImageReadError
        With ``on_error="raise"``, for the first file that cannot be read.
    IndexUpdateError
        When ``output`` holds an index that cannot be updated (other settings, other format).

    See Also
    --------
    load_index : read the index back.

    Notes
    -----
    The index is a dict with the fitted ``extractor`` and ``retriever``, the ``paths``
    (absolute, sorted), the ``descriptors`` in that order, each file's ``sizes`` and
    ``mtimes_ns``, and the ``settings`` (see
    :meth:`CNNFeatureExtractor.descriptor_settings`). Its content does not
    depend on how the work was split: a resumed or updated index equals one built in one run.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from PIL import Image
    >>> from skretrieval.extraction import CNNFeatureExtractor
    >>> from skretrieval.indexing import build_index, load_index
    >>> from skretrieval.pooling import GeMPooling
    >>> folder = Path(tempfile.mkdtemp())
    >>> for i in range(3):
    ...     pixels = np.full((32, 32, 3), 80 * i, dtype=np.uint8)
    ...     Image.fromarray(pixels).save(folder / f"{i}.png")
    >>> (folder / "broken.jpg").write_bytes(b"not an image")
    12
    >>> extractor = CNNFeatureExtractor(weights=None, random_state=0, max_size=32,
    ...                                 pooling=GeMPooling())
    >>> report = build_index(folder, folder / "index", extractor, on_error="skip",
    ...                      verbose=False)
    >>> report.n_indexed, [Path(path).name for path, reason in report.skipped]
    (3, ['broken.jpg'])
    >>> index = load_index(folder / "index")
    >>> [Path(path).name for path in index.paths], index.descriptors.shape
    (['0.png', '1.png', '2.png'], (3, 1280))
    >>> Image.fromarray(np.full((32, 32, 3), 250, dtype=np.uint8)).save(folder / "3.png")
    >>> report = build_index(folder, folder / "index", extractor, on_error="skip",
    ...                      verbose=False)
    >>> report.n_new, report.n_reused, report.n_described
    (1, 3, 1)
    """
    _check_arguments(extractor, on_error, checkpoint_every)
    output = Path(output)
    check_output(output)
    checkpoint_folder = partial_folder(output)
    paths = list_paths(images)
    stats, skipped = _stat_files(paths, on_error)
    model = clone(extractor).set_params(verbose=False).fit()
    settings = model.descriptor_settings()
    if client is not None:
        # Each worker runs on its own device (a GPU's float16 autocast, or a CPU's float32).
        settings["precision"] = "the devices of the cluster's workers"
    previous = {} if rebuild else _previous_entries(output, settings)
    checkpoint = Checkpoint(checkpoint_folder, settings)
    checkpoint.check_writable()
    # Also with rebuild=True: a checkpoint of the same settings holds valid descriptors (of a
    # rebuild that was interrupted, say), and one of other settings is discarded when read.
    resumable = checkpoint.read()

    entries, todo, n_reused, n_resumed = {}, [], 0, 0
    for path, record in stats.items():
        old, done = previous.get(path), resumable.get(path)
        if old is not None and (old.size, old.mtime_ns) == record:
            entries[path], n_reused = old, n_reused + 1
        # A verdict "unreadable" is trusted only when skipping: raising needs the error itself.
        elif done is not None and (done.size, done.mtime_ns) == record and (
            done.descriptor is not None or on_error == "skip"
        ):
            if done.descriptor is None:
                skipped.append((path, done.reason))
            else:
                entries[path], n_resumed = done, n_resumed + 1
        else:
            todo.append(path)

    n_described = _describe_all(
        model, todo, stats, entries, skipped, checkpoint, on_error, checkpoint_every, verbose,
        positions={path: position for position, path in enumerate(paths)},
        client=client,
    )
    skipped.sort()
    if not entries:
        skipped_list = write_skipped(output, skipped)
        raise ValueError(
            f"none of the {len(paths)} images could be read, so there is nothing to index; "
            f"the reasons are listed in {str(skipped_list)!r}."
        )
    indexed = sorted(entries)
    descriptors = np.stack([entries[path].descriptor for path in indexed])
    retriever = ImageRetriever(metric="cosine") if retriever is None else clone(retriever)
    model.set_params(verbose=extractor.verbose)
    index = {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        "extractor": model,
        "retriever": retriever.fit(descriptors),
        "paths": indexed,
        "descriptors": descriptors,
        "sizes": np.array([entries[path].size for path in indexed], dtype=np.int64),
        "mtimes_ns": np.array([entries[path].mtime_ns for path in indexed], dtype=np.int64),
        "settings": settings,
    }
    save(index, output)
    skipped_list = write_skipped(output, skipped)
    checkpoint.clear()
    n_new = sum(path not in previous for path in indexed)
    return IndexReport(
        output=output,
        n_indexed=len(indexed),
        n_new=n_new,
        n_changed=len(indexed) - n_new - n_reused,
        n_reused=n_reused,
        n_removed=sum(path not in entries for path in previous),
        n_resumed=n_resumed,
        n_described=n_described,
        skipped=skipped,
        skipped_file=skipped_list,
    )


def _describe_all(
    model,
    todo,
    stats,
    entries,
    skipped,
    checkpoint,
    on_error,
    checkpoint_every,
    verbose,
    positions,
    client=None,
):
    """Describe ``todo`` piece by piece into ``entries``, checkpointing every chunk."""
    piece = min(checkpoint_every, max(_MIN_PIECE, 4 * model.batch_size))
    chunk_paths, chunk_entries, n_described = [], [], 0
    with tqdm(total=len(todo), disable=not verbose, desc="Indexing", unit="img") as progress:
        try:
            for chunk_start in range(0, len(todo), checkpoint_every):
                chunk = todo[chunk_start : chunk_start + checkpoint_every]
                # On a cluster, the workers share a whole chunk, a piece each.
                step = len(chunk) if client is not None else piece
                for start in range(0, len(chunk), step):
                    paths = chunk[start : start + step]
                    path_positions = [positions[path] for path in paths]
                    if client is None:
                        descriptors, reasons = _describe(model, paths, path_positions, on_error)
                    else:
                        descriptors, reasons = _describe_on_cluster(
                            model, paths, path_positions, on_error, client, piece
                        )
                    for path, descriptor, reason in zip(paths, descriptors, reasons, strict=True):
                        entry = Entry(*stats[path], descriptor, reason)
                        chunk_paths.append(path)
                        chunk_entries.append(entry)
                        if descriptor is None:
                            skipped.append((path, reason))
                        else:
                            entries[path] = entry
                            n_described += 1
                    progress.update(len(paths))
                checkpoint.write(chunk_paths, chunk_entries)
                chunk_paths, chunk_entries = [], []
        finally:
            # Also on an error or an interruption: what was described is kept for the next run.
            if chunk_paths:
                checkpoint.write(chunk_paths, chunk_entries)
    return n_described


def _describe_on_cluster(model, paths, positions, on_error, client, piece):
    """:func:`_describe` on the workers of ``client``, ``piece`` images per task."""
    from skretrieval.distributed import transform

    try:
        result = transform(
            model, paths, client=client, chunk_size=piece, on_error=on_error, output="numpy"
        )
    except ImageReadError as exc:
        raise _cannot_index(exc, paths[exc.index], positions[exc.index]) from None
    except NoReadableImageError as exc:  # every image of this piece is unreadable: all skipped
        descriptors, skipped = [None] * len(paths), exc.skipped
    else:
        descriptors = [
            row if valid else None
            for row, valid in zip(result.descriptors, result.valid, strict=True)
        ]
        skipped = result.skipped
    reasons = [None] * len(paths)
    for index, _, reason in skipped:
        reasons[index] = reason
    return descriptors, reasons


def load_index(path, **load_kwargs):
    """Read an index written by :func:`build_index` or ``skretrieval index``.

    Parameters
    ----------
    path : str or path-like
        The index file.
    **load_kwargs
        Passed to :func:`skretrieval.persistence.load`, e.g. ``allow_pickle=True`` for an index
        written by skretrieval 0.2 (a pickle: only for files you trust).

    Returns
    -------
    index : :class:`~sklearn.utils.Bunch`
        ``extractor`` (fitted), ``retriever`` (fitted), ``paths``; and ``descriptors``,
        ``sizes``, ``mtimes_ns`` and ``settings``, which are None in an index of skretrieval
        0.2.

    Raises
    ------
    FileNotFoundError, IsADirectoryError
        When ``path`` is not a file.
    skretrieval.persistence.FileFormatError
        When the file cannot be read (:class:`IndexFormatError` when it holds no index).

    Examples
    --------
    >>> from skretrieval.indexing import load_index
    >>> index = load_index("photos.index")  # doctest: +SKIP
    >>> distances, positions = index.retriever.kneighbors(
    ...     index.extractor.transform(["query.jpg"]), n_neighbors=5)  # doctest: +SKIP
    >>> [index.paths[i] for i in positions[0]]  # doctest: +SKIP
    """
    content = load(path, **load_kwargs)
    if not (isinstance(content, dict) and {"extractor", "retriever", "paths"} <= set(content)):
        raise IndexFormatError(
            f"{str(path)!r} holds a {type(content).__name__}, not an index written by "
            "build_index or 'skretrieval index'; index the images again."
        )
    index = Bunch(descriptors=None, sizes=None, mtimes_ns=None, settings=None)
    index.update(content)
    index.paths = [str(p) for p in index.paths]
    return index
