"""Evaluate a retrieval pipeline on a benchmark: describe the images, rank, score.

The datasets of :mod:`skretrieval.datasets` all come in one schema, so one function evaluates
any pipeline on any of them:

>>> from skretrieval.evaluation import evaluate_benchmark
>>> rows = evaluate_benchmark(pipeline, load_revisited(root, "roxford5k"))  # doctest: +SKIP

:func:`evaluate_benchmark` is :func:`describe_benchmark` (fit the pipeline on the database
images, describe the database and the queries) followed by :func:`score_benchmark` (rank the
database for each query with :class:`~skretrieval.neighbors.ImageRetriever` and compute the
benchmark's own metrics). Call the two steps yourself to reuse descriptors across metrics, or
to describe with your own code.

What is scored depends on the dataset:

- revisited Oxford and Paris (``gnd`` with easy and hard positives): the protocol of Radenovic
  et al., one row each for easy, medium and hard (:func:`~skretrieval.metrics.evaluate_revisited`);
- other benchmarks with a ground truth (Oxford5k, Paris6k, Holidays, UKBench): one row, mAP
  with the reference (trapezoid) interpolation and mean precision at k, junk deleted; for UKBench
  also its N-S score (:func:`~skretrieval.metrics.ukbench_score`);
- labelled collections without queries (image folders, :func:`~skretrieval.datasets.make_copydays`):
  every image queries all the others, itself excluded, and the relevant images are those with
  its label.
"""

import os
import time
import warnings
from pathlib import Path

import joblib
import numpy as np

import skretrieval
from skretrieval._utils.files import file_sha256
from skretrieval.datasets import crop_queries, ground_truth_masks
from skretrieval.metrics import (
    evaluate_revisited,
    mean_average_precision,
    precision_at_k,
    ukbench_score,
)
from skretrieval.neighbors import ImageRetriever
from skretrieval.persistence import atomic_write

__all__ = [
    "database_inputs",
    "describe_benchmark",
    "evaluate_benchmark",
    "query_inputs",
    "score_benchmark",
]

# Query rows scored at once outside the revisited protocol: bounds the (queries x database)
# matrices of the metrics (scores, sorts, masks) on large benchmarks such as UKBench.
_BLOCK_ELEMENTS = 2**22

_REVISITED_SETTINGS = ("easy", "medium", "hard")


def database_inputs(data):
    """The database images of a dataset, as a feature extractor takes them.

    Parameters
    ----------
    data : :class:`~sklearn.utils.Bunch`
        A dataset of :mod:`skretrieval.datasets`.

    Returns
    -------
    images : list
        The file paths (``data.filenames``), or the pixel arrays (``data.images``) of datasets
        held in memory.

    Examples
    --------
    >>> from skretrieval.datasets import make_copydays
    >>> from skretrieval.evaluation import database_inputs
    >>> images = database_inputs(make_copydays(1, sources=["coffee"], max_size=32))
    >>> len(images), images[0].shape
    (2, (21, 32, 3))
    """
    return data.filenames if data.filenames is not None else data.images


def query_inputs(data):
    """The query images of a dataset, as the benchmark's protocol wants them described.

    Parameters
    ----------
    data : :class:`~sklearn.utils.Bunch`
        A dataset of :mod:`skretrieval.datasets`.

    Returns
    -------
    images : list or None
        The queries cropped to their boxes (PIL images, see
        :func:`~skretrieval.datasets.crop_queries`) when the dataset has ``query_boxes``, else
        the query files; None when every database image is in turn a query
        (``query_filenames`` is None).

    Examples
    --------
    >>> from skretrieval.datasets import make_copydays
    >>> from skretrieval.evaluation import query_inputs
    >>> print(query_inputs(make_copydays(1, sources=["coffee"], max_size=32)))
    None
    """
    if data.query_filenames is None:
        return None
    if data.query_boxes is not None:
        return crop_queries(data)
    return list(data.query_filenames)


def _queries_are_database(data):
    """Whether the queries are the database images themselves, uncropped (UKBench)."""
    return data.query_boxes is None and data.query_filenames == data.filenames


def _descriptor_settings(estimator):
    """What the estimator (or each step of a pipeline) says makes its descriptors, if it says.

    :meth:`CNNFeatureExtractor.descriptor_settings` knows what the parameters do not tell: the
    contents of the file that ``weights="imagenet"`` resolves to, the device's precision.
    """
    steps = getattr(estimator, "steps", [(None, estimator)])
    return [
        sorted(step.descriptor_settings().items())
        for _, step in steps
        if hasattr(step, "descriptor_settings")
    ]


def _cache_file(cache, cache_tag, data, role, estimator, images, boxes, cache_key):
    """The file keeping the descriptors of one image list under one estimator."""
    # Every parameter but the progress display changes what the descriptors are or how they
    # are computed (a device's precision, a batch's composition).
    params = {
        name: value
        for name, value in estimator.get_params(deep=True).items()
        if not name.endswith(("verbose", "progress"))
    }
    # Weights given as a file: what counts is what the file holds, not its name.
    weights_files = {
        name: file_sha256(value)
        for name, value in params.items()
        if name.endswith("weights")
        and isinstance(value, (str, os.PathLike))
        and os.path.isfile(value)
    }
    key = {
        "skretrieval": skretrieval.__version__,
        "dataset": data.name,
        "role": role,
        "estimator": repr(sorted(params.items())),
        "weights_files": weights_files,
        "descriptor_settings": repr(_descriptor_settings(estimator)),
        "cache_key": None if cache_key is None else repr(sorted(dict(cache_key).items())),
        # File paths, or the pixels themselves (joblib hashes array contents).
        "images": [str(image) if isinstance(image, (str, Path)) else image for image in images],
        "boxes": None if boxes is None else np.asarray(boxes, dtype=np.float64),
    }
    return Path(cache) / f"{data.name}-{role}-{cache_tag}-{joblib.hash(key)[:16]}.npy"


def _read_cache(path, n_images, role):
    """The descriptors cached in ``path``, or None (with a warning) when it is unusable."""
    try:
        with open(path, "rb") as file:  # closed also when np.load fails
            descriptors = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        problem = f"cannot be read ({type(exc).__name__}: {exc})"
    else:
        if descriptors.ndim == 2 and descriptors.shape[0] == n_images:
            return descriptors
        problem = f"holds an array of shape {descriptors.shape}, not ({n_images}, d)"
    warnings.warn(
        f"the cached descriptors {str(path)!r} {problem}; the {role} images are described "
        "again and the file is rewritten.",
        UserWarning,
        stacklevel=4,
    )
    return None


def describe_benchmark(
    estimator,
    data,
    *,
    fit=True,
    cache=None,
    cache_tag=None,
    cache_key=None,
    client=None,
    verbose=False,
):
    """Descriptors of a dataset's database and queries.

    Parameters
    ----------
    estimator : estimator
        A transformer or pipeline from images to descriptors, e.g.
        ``make_pipeline(CNNFeatureExtractor(pooling=GeMPooling()), PCAWhitening())``.
    data : :class:`~sklearn.utils.Bunch`
        A dataset of :mod:`skretrieval.datasets`.
    fit : bool, default=True
        Fit ``estimator`` on the database images first; then anything it learns, such as a
        whitening, is learned on the database, the usual setting of these benchmarks when no
        separate training set is given. False: ``estimator`` is already fitted.
    cache : str or path-like, default=None
        Folder keeping the descriptors (arrays) between calls: a later call with an estimator
        of the same parameters on the same images reads them instead of running the estimator,
        which is then neither fitted nor run. Each image list is one ``.npy`` file named after
        the dataset, the role (``database`` or ``queries``) and ``cache_tag``, written
        atomically and read without pickle. Its name holds a hash of the skretrieval version,
        the estimator's parameters (except progress display), the contents of any weights file
        among them, ``cache_key``, the image files (or pixels) and the query boxes. A file that
        cannot be read or holds the wrong shape is reported with a warning and rewritten.
        Only numeric arrays are cached. Meant for estimators whose fit does not depend on the
        images (a feature extractor,
        with or without fused pooling); random weights must be seeded (``random_state``).
    cache_tag : str, default=None
        Readable part of the cache file names, e.g. ``"mobilenet_v2-gem-1024"``; None uses the
        estimator's class name.
    cache_key : dict, default=None
        Further values that determine the descriptors but are not parameters of the
        estimator. Not needed for skretrieval's extractor, whose
        :meth:`~skretrieval.extraction.CNNFeatureExtractor.descriptor_settings` (the contents
        of the weights file, the device's precision) are part of the key already, also as a
        step of a pipeline.
    client : distributed.Client, default=None
        A Dask cluster to describe the image files on, with
        :func:`skretrieval.distributed.transform` (the workers must read the files under the
        same paths). The estimator must then be fitted (``fit=False``) or fit without images,
        as :class:`~skretrieval.extraction.CNNFeatureExtractor` does (``fit=True`` calls
        ``estimator.fit()``). Images held in memory, such as queries cropped to their boxes,
        are described in this process.
    verbose : bool, default=False
        Print, for each image list, whether it was read from the cache or described, and how
        long that took.

    Returns
    -------
    database : array-like
        Descriptors of the database images.
    queries : array-like or None
        Descriptors of the queries (cropped to their boxes where the dataset has boxes); the
        database descriptors themselves when the queries are the database images (UKBench);
        None when every database image is in turn a query (see :func:`score_benchmark`).

    Examples
    --------
    >>> from skretrieval.datasets import make_copydays
    >>> from skretrieval.evaluation import describe_benchmark, score_benchmark
    >>> from skretrieval.extraction import CNNFeatureExtractor
    >>> from skretrieval.pooling import GeMPooling
    >>> data = make_copydays(2, sources=["coffee", "chelsea"], max_size=64)
    >>> extractor = CNNFeatureExtractor(max_size=64, pooling=GeMPooling(), verbose=False)
    >>> database, queries = describe_benchmark(extractor, data)
    >>> database.shape, queries is None  # every image queries the others
    ((6, 1280), True)
    >>> (row,) = score_benchmark(data, database, retriever_params={"query_expansion": "average"})
    >>> row["n_queries"]
    6
    """
    if cache_tag is None:
        cache_tag = type(estimator).__name__
    fitted = []

    def describe(role, files, boxes, images):
        """Descriptors of ``images()``; ``files`` and ``boxes`` identify them in the cache."""
        path = None
        if cache is not None:
            path = _cache_file(cache, cache_tag, data, role, estimator, files, boxes, cache_key)
            descriptors = _read_cache(path, len(files), role) if path.is_file() else None
            if descriptors is not None:
                if verbose:
                    print(f"{role}: {len(files)} descriptors read from the cache {path}")
                return descriptors
        start = time.perf_counter()
        inputs = images()
        if client is not None and all(isinstance(x, (str, os.PathLike)) for x in inputs):
            if fit and not fitted:
                _fit_without_images(estimator)
            descriptors = _describe_on_cluster(estimator, inputs, client)
        elif fit and not fitted and role == "database":
            descriptors = estimator.fit_transform(inputs)
        else:
            if fit and not fitted:
                if client is not None:
                    _fit_without_images(estimator)
                else:
                    estimator.fit(database_inputs(data))
            descriptors = estimator.transform(inputs)
        fitted.append(True)
        if verbose:
            elapsed = time.perf_counter() - start
            print(f"{role}: {len(files)} images described in {elapsed:.1f} s")
        if path is not None and np.asarray(descriptors).dtype != object:
            with atomic_write(path) as file:
                np.save(file, np.asarray(descriptors), allow_pickle=False)
        return descriptors

    database = describe("database", database_inputs(data), None, lambda: database_inputs(data))
    if data.query_filenames is None:
        return database, None
    if _queries_are_database(data):
        return database, database
    queries = describe(
        "queries", data.query_filenames, data.query_boxes, lambda: query_inputs(data)
    )
    return database, queries


def _fit_without_images(estimator):
    try:
        estimator.fit()
    except TypeError:
        raise ValueError(
            f"with a Dask client, the estimator is fitted without images, which "
            f"{type(estimator).__name__} cannot do (its fit needs data): fit it first and "
            "pass fit=False."
        ) from None


def _describe_on_cluster(estimator, files, client):
    from skretrieval.distributed import transform

    return transform(estimator, files, client=client, output="numpy").descriptors


def score_benchmark(
    data, database, queries=None, *, metric="cosine", ks=(1, 5, 10), retriever_params=None
):
    """Rank a dataset's database for each query and score the rankings.

    Parameters
    ----------
    data : :class:`~sklearn.utils.Bunch`
        A dataset of :mod:`skretrieval.datasets`: its ground truth ``gnd`` or, without one,
        its labels ``target`` define relevance.
    database : array-like
        Descriptors of the database images, in the order of the dataset.
    queries : array-like or None, default=None
        Descriptors of the queries. None: every database image queries all the others, itself
        excluded (datasets without ``query_filenames``).
    metric : str, default="cosine"
        Distance of the :class:`~skretrieval.neighbors.ImageRetriever` that ranks the database.
    ks : sequence of int, default=(1, 5, 10)
        Ranks of the mean precisions ``mp@k``; NaN for a ``k`` larger than the database.
    retriever_params : dict, default=None
        Further parameters of the :class:`~skretrieval.neighbors.ImageRetriever`, such as
        ``{"query_expansion": "alpha", "rerank": "diffusion"}``: the rankings scored are those
        of the expanded queries, the augmented database, the re-ranked distances.

    Returns
    -------
    rows : list of dict
        One dict per protocol with ``"protocol"`` (``"easy"``, ``"medium"`` and ``"hard"`` for
        the revisited benchmarks, else ``"all"``), ``"n_queries"`` (queries evaluated: those
        with a positive), ``"map"`` and ``"mp@k"`` for each ``k``; for UKBench also
        ``"ns_score"``, averaged over all queries.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.utils import Bunch
    >>> from skretrieval.evaluation import score_benchmark
    >>> data = Bunch(name="toy", target=np.array([0, 0, 1, 1]), gnd=None)
    >>> descriptors = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.2, 0.9]])
    >>> score_benchmark(data, descriptors, ks=(1,))
    [{'protocol': 'all', 'n_queries': 4, 'map': 1.0, 'mp@1': 1.0}]
    """
    retriever = ImageRetriever(metric=metric, **(retriever_params or {})).fit(database)
    n_database = retriever.n_samples_fit_
    if queries is None and data.target is None:
        raise ValueError(
            f"{data.name}: without query descriptors every database image queries the others, "
            "which needs the labels data.target to tell the relevant ones; this dataset has none."
        )
    if data.gnd is not None and tuple(data.positive_keys) == ("easy", "hard"):
        return _score_revisited(data, retriever, queries, ks)
    return _score_blocks(data, retriever, queries, n_database, ks)


def _score_revisited(data, retriever, queries, ks):
    _, ranks = retriever.kneighbors(queries, n_neighbors=retriever.n_samples_fit_)
    results = evaluate_revisited(ranks, data.gnd, ks=ks)
    return [
        {
            "protocol": setting,
            "n_queries": results[setting]["n_queries"],
            "map": results[setting]["map"],
            **{f"mp@{k}": results[setting]["mp@k"][k] for k in ks},
        }
        for setting in _REVISITED_SETTINGS
    ]


def _relevance(data, rows, n_database, leave_one_out):
    """Relevant and junk masks of the queries ``rows``: from ``gnd``, else from the labels."""
    if data.gnd is not None:
        gnd = [data.gnd[row] for row in rows]
        return ground_truth_masks(gnd, n_database, positive_keys=data.positive_keys)
    query_labels = data.target[rows] if leave_one_out else data.query_target[rows]
    relevant = query_labels[:, None] == data.target[None, :]
    junk = np.zeros_like(relevant)
    if leave_one_out:  # a query is not its own result
        junk[np.arange(len(rows)), rows] = True
    return relevant & ~junk, junk


def _score_blocks(data, retriever, queries, n_database, ks):
    """mAP (trapezoid), mP@k and the N-S score over blocks of queries."""
    leave_one_out = queries is None
    defined_ks = [k for k in ks if k <= n_database]
    with_ns_score = data.name == "ukbench"
    totals = dict.fromkeys(["map", "ns_score", *defined_ks], 0.0)
    n_evaluated = n_queries = 0
    rows_per_chunk = max(1, _BLOCK_ELEMENTS // n_database)
    for start, stop, distances in retriever.distance_blocks(queries):
        for first in range(0, stop - start, rows_per_chunk):
            scores = -distances[first : first + rows_per_chunk]
            rows = np.arange(start + first, start + first + len(scores))
            n_queries += len(rows)
            if with_ns_score:
                same_group = data.query_target[rows, None] == data.target[None, :]
                totals["ns_score"] += len(rows) * ukbench_score(same_group, scores)
            relevant, junk = _relevance(data, rows, n_database, leave_one_out)
            # Each metric is a mean over the queries with a positive: block means are combined
            # weighted by their numbers of such queries.
            n_block = int(np.sum(relevant.any(axis=1)))
            if n_block == 0:
                continue
            # The reference AP of Oxford/Paris, also that of the Holidays evaluation script.
            totals["map"] += n_block * mean_average_precision(
                relevant, scores, junk=junk, interpolation="trapezoid"
            )
            for k in defined_ks:
                totals[k] += n_block * precision_at_k(relevant, scores, k, junk=junk)
            n_evaluated += n_block
    if n_evaluated == 0:
        raise ValueError(f"no query of {data.name} has a positive database image")
    row = {"protocol": "all", "n_queries": n_evaluated, "map": totals["map"] / n_evaluated}
    for k in ks:
        row[f"mp@{k}"] = totals[k] / n_evaluated if k in defined_ks else np.nan
    if with_ns_score:
        row["ns_score"] = totals["ns_score"] / n_queries
    return [row]


def evaluate_benchmark(
    estimator,
    data,
    *,
    fit=True,
    metric="cosine",
    ks=(1, 5, 10),
    retriever_params=None,
    cache=None,
    verbose=False,
):
    """Describe a dataset with a pipeline, rank its database for each query and score.

    :func:`describe_benchmark` followed by :func:`score_benchmark`.

    Parameters
    ----------
    estimator : estimator
        A transformer or pipeline from images to descriptors.
    data : :class:`~sklearn.utils.Bunch`
        A dataset of :mod:`skretrieval.datasets`.
    fit : bool, default=True
        Fit ``estimator`` on the database images first.
    metric : str, default="cosine"
        Distance used to rank the database.
    ks : sequence of int, default=(1, 5, 10)
        Ranks of the mean precisions.
    retriever_params : dict, default=None
        Further parameters of the :class:`~skretrieval.neighbors.ImageRetriever` that ranks
        the database (query expansion, DBA, re-ranking), as in :func:`score_benchmark`.
    cache : str or path-like, default=None
        Folder keeping the descriptors between calls, see :func:`describe_benchmark`.
    verbose : bool, default=False
        Print what is described or read from the cache.

    Returns
    -------
    rows : list of dict
        As :func:`score_benchmark`.

    Examples
    --------
    >>> from skretrieval.datasets import make_copydays
    >>> from skretrieval.evaluation import evaluate_benchmark
    >>> from skretrieval.extraction import CNNFeatureExtractor
    >>> from skretrieval.pooling import GeMPooling
    >>> data = make_copydays(2, sources=["coffee", "chelsea"], max_size=64)
    >>> extractor = CNNFeatureExtractor(max_size=64, pooling=GeMPooling(), verbose=False)
    >>> (row,) = evaluate_benchmark(extractor, data, ks=(1,))
    >>> row["protocol"], row["n_queries"], row["mp@1"]
    ('all', 6, 1.0)
    """
    database, queries = describe_benchmark(
        estimator, data, fit=fit, cache=cache, verbose=verbose
    )
    return score_benchmark(
        data, database, queries, metric=metric, ks=ks, retriever_params=retriever_params
    )
