"""The public :func:`transform`: a fitted transformer applied to image files on a Dask cluster,
chunk by chunk, optionally written to a resumable zarr store."""

import os
import uuid
from numbers import Integral

import numpy as np
from sklearn.utils import Bunch
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions, validate_params
from sklearn.utils.validation import check_is_fitted

from skretrieval.distributed._chunks import chunk_descriptors, chunk_summary, run_chunk
from skretrieval.distributed._store import DescriptorStore, write_chunk
from skretrieval.exceptions import ImageNotFoundError, ImageReadError, NoReadableImageError
from skretrieval.neighbors._distributed import current_client, import_dask


class _ClientRunner:
    """Chunks as tasks of a ``distributed`` client; the estimator scattered to the workers
    once, the results left on the workers."""

    def __init__(self, client, estimator):
        self.client = client
        # broadcast: every worker starts with a copy, and no task ships the estimator. (dask's
        # active memory manager may drop idle copies; a worker then fetches it from a peer.)
        self.estimator = client.scatter(estimator, broadcast=True, hash=False)
        self.job = uuid.uuid4().hex[:8]

    def submit(self, chunks, on_error, store=None):
        return [
            self.client.submit(
                run_chunk,
                self.estimator,
                paths,
                start,
                on_error,
                store,
                index,
                key=f"skretrieval-chunk-{self.job}-{index}",
                pure=False,
            )
            for index, start, paths in chunks
        ]

    def summaries(self, handles):
        """``(position, summary)`` of each task as it completes."""
        from distributed import as_completed

        summaries = {
            self.client.submit(chunk_summary, handle, pure=False): position
            for position, handle in enumerate(handles)
        }
        for future in as_completed(summaries, loop=self.client.loop):
            yield summaries[future], future.result()

    def cancel(self, handles):
        self.client.cancel(handles)

    def blocks(self, handles, sizes, n_features, dtype, output):
        blocks = [
            self.client.submit(chunk_descriptors, handle, size, n_features, dtype, pure=False)
            for handle, size in zip(handles, sizes, strict=True)
        ]
        if output == "numpy":
            return np.concatenate(self.client.gather(blocks))
        import dask
        import dask.array as da

        return da.concatenate(
            [
                da.from_delayed(dask.delayed(block), shape=(size, n_features), dtype=dtype)
                for block, size in zip(blocks, sizes, strict=True)
            ]
        )


class _LocalRunner:
    """Chunks as ``dask.delayed`` tasks of dask's current local scheduler (threads by default,
    or the one set with ``dask.config.set(scheduler=...)``), the estimator one key of the
    graph."""

    def __init__(self, dask, estimator):
        self.dask = dask
        self.estimator = dask.delayed(estimator, traverse=False)

    def submit(self, chunks, on_error, store=None):
        task = self.dask.delayed(run_chunk, pure=False)
        return [
            task(self.estimator, paths, start, on_error, store, index)
            for index, start, paths in chunks
        ]

    def summaries(self, handles):
        self.results = self.dask.compute(*handles)
        for position, result in enumerate(self.results):
            yield position, chunk_summary(result)

    def cancel(self, handles):
        pass

    def blocks(self, handles, sizes, n_features, dtype, output):
        descriptors = np.concatenate(
            [
                chunk_descriptors(result, size, n_features, dtype)
                for result, size in zip(self.results, sizes, strict=True)
            ]
        )
        if output == "numpy":
            return descriptors
        import dask.array as da

        return da.from_array(descriptors, chunks=(max(sizes), n_features))


def _image_paths(images):
    paths = []
    for index, image in enumerate(images):
        if not isinstance(image, (str, os.PathLike)):
            raise TypeError(
                f"images[{index}] is a {type(image).__name__}; transform takes image file paths "
                "(str or os.PathLike) that every worker can read."
            )
        paths.append(os.fspath(image))
    if not paths:
        raise ValueError("images is empty: at least one image path is required.")
    return paths


def _image_error(index, path, reason, not_found):
    error = ImageNotFoundError if not_found else ImageReadError
    return error(
        f"images[{index}] ({path!r}): {reason}. Pass on_error='skip' to skip unreadable images "
        "and list them in the result's skipped.",
        index=index,
        path=path,
        reason=reason,
    )


def _no_image_read(paths, errors):
    skipped = [(index, paths[index], reason) for index, reason in enumerate(errors) if reason]
    reasons = "; ".join(f"images[{index}] ({path!r}): {reason}" for index, path, reason in skipped)
    return NoReadableImageError(
        f"None of the {len(paths)} images could be read: {reasons[:2000]}", skipped=skipped
    )


def _run(runner, chunks, on_error, store=None):
    """Run ``chunks`` (``(index, start, paths)``); return their handles and summaries by index.

    An unreadable image with ``on_error="raise"`` cancels the chunks not yet done and raises.
    """
    handles = runner.submit(chunks, on_error, store)
    summaries = {}
    try:
        for position, summary in runner.summaries(handles):
            index, start, _ = chunks[position]
            failure = summary[3]
            if failure is not None:
                raise _image_error(start + failure[0], *failure[1:])
            summaries[index] = summary
    except BaseException:
        # Any error, or an interrupt: the chunks not yet run are not run.
        runner.cancel(handles)
        raise
    return handles, summaries


@validate_params(
    {
        "estimator": [HasMethods(["transform"])],
        "images": ["array-like"],
        "client": [HasMethods(["submit", "scatter"]), None],
        "chunk_size": [Interval(Integral, 1, None, closed="left")],
        "store": [str, os.PathLike, None],
        "on_error": [StrOptions({"raise", "skip"})],
        "output": [StrOptions({"dask", "numpy"})],
    },
    prefer_skip_nested_validation=True,
)
def transform(
    estimator, images, *, client=None, chunk_size=64, store=None, on_error="raise", output="dask"
):
    """Describe image files on a Dask cluster with a fitted transformer or pipeline.

    The images are cut into chunks of ``chunk_size``; each worker decodes and describes its
    chunks with the estimator, which is scattered to the workers once, not shipped with every
    task. A worker that dies loses no image: dask runs its chunks again elsewhere.
    ``device="auto"`` estimators such as :class:`~skretrieval.extraction.CNNFeatureExtractor`
    run on each worker's own device (its GPU where it has one).

    The job runs when the function is called. Without ``store`` the descriptors stay on the
    workers and are returned as a ``dask.array`` (one block per chunk) that, for example,
    :class:`~skretrieval.neighbors.ImageRetriever` searches where it lies. With ``store`` each
    chunk is written to a zarr array as soon as it is computed, followed by a per-chunk "done"
    marker; calling ``transform`` again with the same ``store`` (after the client was stopped,
    or the cluster lost) computes only the chunks without a marker.

    Parameters
    ----------
    estimator : fitted estimator
        A transformer (or pipeline ending with one) whose ``transform`` maps a list of image
        paths to an ``(n, n_features)`` array, e.g. ``CNNFeatureExtractor(pooling=GeMPooling())``
        or a pipeline of it and :class:`~skretrieval.whitening.PCAWhitening`.
    images : list of str or path-like
        Image files, readable by every worker under these paths (a shared file system).
    client : distributed.Client, default=None
        The cluster. None uses the client dask's collections would use now (the last one
        created), else dask's local scheduler (threads, or the scheduler set with
        ``dask.config.set(scheduler=...)``).
    chunk_size : int, default=64
        Images per task (and per zarr chunk): large enough to fill the estimator's batches,
        small enough that a lost worker costs little.
    store : str or path-like, default=None
        A zarr store (a local folder, or an URL zarr understands) that every worker can write:
        created if absent. An existing store must have been written for the same images,
        estimator (parameters and fitted state) and ``chunk_size``, or a ``ValueError`` says
        what differs. One run at a time per store.
    on_error : {"raise", "skip"}, default="raise"
        What an unreadable image does (a missing, corrupt or non-image file, as
        :class:`~skretrieval.extraction.ImageReadError` reports): ``"raise"`` that error, with
        the image's position and path, once its chunk has run (chunks already written to a
        store stay written); ``"skip"`` describe the other images, mark the image as not
        valid (its row is NaN) and list it in ``skipped``.
    output : {"dask", "numpy"}, default="dask"
        The type of ``descriptors``: a ``dask.array`` (held by the workers, or read from the
        store), or a numpy array gathered on the client.

    Returns
    -------
    result : sklearn.utils.Bunch
        ``descriptors``: ``(n_images, n_features)`` array, one row per image in input order;
        the rows of skipped images are NaN (0 for integer descriptors).
        ``valid``: boolean ndarray ``(n_images,)``, False for skipped images; select the
        described rows with ``descriptors[valid]``.
        ``skipped``: list of ``(index, path, reason)`` of the skipped images.
        ``computed_chunks``: list of the chunk numbers computed by this call (chunk ``i``
        holds images ``i * chunk_size`` to ``(i + 1) * chunk_size - 1``); with a store, the
        others were already done.

    Notes
    -----
    The store is a zarr group with the arrays ``descriptors``, ``errors`` (the reason for each
    skipped image, ``""`` otherwise), ``images`` (the paths) and ``done`` (one marker per
    chunk). Each chunk of descriptors is written whole by one task, before its marker: a zarr
    chunk is one object, replaced whole by the store (a temporary file renamed over it for a
    local folder), so a chunk is never half-written, and a chunk whose marker is missing is
    computed and written again, whole. A chunk that a presumed-dead worker finishes after its
    retry is written twice with the same values. Read a store later with
    ``dask.array.from_zarr(store, component="descriptors")``.

    Examples
    --------
    Without a cluster, dask's synchronous scheduler runs the chunks in this process:

    >>> import os, tempfile
    >>> import dask
    >>> from PIL import Image
    >>> from skretrieval.distributed import transform
    >>> from skretrieval.extraction import CNNFeatureExtractor
    >>> from skretrieval.pooling import GeMPooling
    >>> folder = tempfile.mkdtemp()
    >>> paths = [os.path.join(folder, f"{i}.png") for i in range(5)]
    >>> for i, path in enumerate(paths):
    ...     Image.new("RGB", (48, 40), (50 * i, 90, 200)).save(path)
    >>> extractor = CNNFeatureExtractor(weights=None, max_size=48, pooling=GeMPooling(),
    ...                                 verbose=False, random_state=0).fit()
    >>> with dask.config.set(scheduler="synchronous"):
    ...     result = transform(extractor, paths + ["missing.png"], chunk_size=2,
    ...                        on_error="skip")
    >>> result.descriptors.shape, result.descriptors.chunks[0]
    ((6, 1280), (2, 2, 2))
    >>> result.valid.tolist()
    [True, True, True, True, True, False]
    >>> result.skipped
    [(5, 'missing.png', 'file not found')]

    On a cluster, with descriptors written to a resumable store:

    >>> from distributed import Client  # doctest: +SKIP
    >>> client = Client("tcp://scheduler:8786")  # doctest: +SKIP
    >>> result = transform(extractor, paths, client=client, store="descriptors.zarr")
    ... # doctest: +SKIP
    """
    dask = import_dask()
    check_is_fitted(estimator)
    paths = _image_paths(images)
    if client is None:
        client = current_client()
    runner = _LocalRunner(dask, estimator) if client is None else _ClientRunner(client, estimator)
    chunks = [
        (index, start, paths[start : start + chunk_size])
        for index, start in enumerate(range(0, len(paths), chunk_size))
    ]
    if store is None:
        descriptors, errors, computed = _in_memory(runner, chunks, paths, on_error, output)
    else:
        store = DescriptorStore(store, paths, chunk_size, estimator)
        descriptors, errors, computed = _to_store(runner, chunks, paths, store, on_error, output)
    valid = np.asarray([not error for error in errors], dtype=bool)
    skipped = [(index, paths[index], str(errors[index])) for index in np.flatnonzero(~valid)]
    return Bunch(
        descriptors=descriptors,
        valid=valid,
        skipped=[(int(index), path, reason) for index, path, reason in skipped],
        computed_chunks=computed,
    )


def _in_memory(runner, chunks, paths, on_error, output):
    handles, summaries = _run(runner, chunks, on_error)
    known = [summary for summary in summaries.values() if summary[0] is not None]
    errors = [error for index in sorted(summaries) for error in summaries[index][2]]
    if not known:
        raise _no_image_read(paths, errors)
    n_features, dtype = known[0][:2]
    for summary in known:
        if summary[:2] != (n_features, dtype):
            raise ValueError(
                f"The estimator returned descriptors of different lengths or types across chunks "
                f"({n_features}, {dtype} and {summary[0]}, {summary[1]}); transform needs one "
                "(n_images, n_features) array."
            )
    sizes = [len(chunk[2]) for chunk in chunks]
    descriptors = runner.blocks(handles, sizes, n_features, dtype, output)
    return descriptors, errors, sorted(summaries)


def _to_store(runner, chunks, paths, store, on_error, output):
    computed = []
    if not store.has_arrays:
        # The arrays need the descriptor length: the first chunks run alone until one has a
        # readable image, and the client writes them.
        first = {}
        for chunk in chunks:
            handles, summaries = _run(runner, [chunk], on_error)
            result = _gather_first(runner, handles)
            first[chunk[0]] = result
            if result[0] is not None:
                break
        else:
            raise _no_image_read(paths, [e for result in first.values() for e in result[1]])
        store.create_arrays(result[0].shape[1], result[0].dtype)
        for index, (descriptors, errors, _) in first.items():
            write_chunk(store.store, index, chunks[index][1], descriptors, errors)
            computed.append(index)
    done = store.done()
    missing = [chunk for chunk in chunks if not done[chunk[0]]]
    if missing:
        _, summaries = _run(runner, missing, on_error, store.store)
        computed.extend(summaries)
    errors = store.errors()
    return store.descriptors(output), list(errors), sorted(computed)


def _gather_first(runner, handles):
    """The full result of a single chunk, on the client."""
    if isinstance(runner, _ClientRunner):
        return handles[0].result()
    return runner.results[0]
