"""What the dataset loaders share: the result bunch of the dataset schema, missing-file errors,
benchmarks restricted to the images present, ground-truth masks and query crops."""

import os
import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.utils import Bunch

_OXFORD_IMAGES_URL = "https://www.robots.ox.ac.uk/~vgg/data/oxbuildings/oxbuild_images.tgz"
_PARIS_IMAGES_URL = (
    "https://www.robots.ox.ac.uk/~vgg/data/parisbuildings/paris_1.tgz and paris_2.tgz "
    "(flatten the per-landmark folders they unpack to)"
)
# The revisited and the original Oxford and Paris benchmarks share their images.
IMAGE_SOURCES = {
    "roxford5k": _OXFORD_IMAGES_URL,
    "oxford5k": _OXFORD_IMAGES_URL,
    "rparis6k": _PARIS_IMAGES_URL,
    "paris6k": _PARIS_IMAGES_URL,
}


class MissingDatasetFilesError(FileNotFoundError):
    """Files of a benchmark are missing from its folder; the message says which, and where.

    The loaders of :mod:`skretrieval.datasets` never download anything: the ground truth and
    the images must be fetched by hand from the benchmark's official site. This error is a
    :class:`FileNotFoundError`, so ``except FileNotFoundError`` catches it too.
    """


def dataset_bunch(
    name,
    *,
    descr,
    filenames=None,
    images=None,
    target=None,
    target_names=None,
    query_filenames=None,
    query_target=None,
    query_boxes=None,
    gnd=None,
    positive_keys=None,
    n_missing_images=None,
    n_missing_queries=None,
    **extras,
):
    """The bunch every loader returns: the schema keys in their order, then the ``extras``.

    The keys are those of the schema in :mod:`skretrieval.datasets`; a field left at None does
    not apply to the dataset. ``queries_without_positives`` is computed from ``gnd`` and
    ``positive_keys``.

    Raises
    ------
    MissingDatasetFilesError
        If ``gnd`` is given (a benchmark) but no query or no database image is present.
    """
    queries_without_positives = None
    if gnd is not None:
        if not query_filenames or not filenames:
            raise MissingDatasetFilesError(
                f"{name}: no {'query' if not query_filenames else 'database'} image is present, "
                "so there is nothing to evaluate; see the dataset's loader documentation for the "
                "files expected."
            )
        positive_keys = tuple(positive_keys)
        has_positive = np.array(
            [sum(len(entry[key]) for key in positive_keys) > 0 for entry in gnd], dtype=bool
        )
        queries_without_positives = np.flatnonzero(~has_positive)
    return Bunch(
        name=name,
        filenames=filenames,
        images=images,
        target=target,
        target_names=target_names,
        query_filenames=query_filenames,
        query_target=query_target,
        query_boxes=query_boxes,
        gnd=gnd,
        positive_keys=positive_keys,
        queries_without_positives=queries_without_positives,
        n_missing_images=None if n_missing_images is None else int(n_missing_images),
        n_missing_queries=None if n_missing_queries is None else int(n_missing_queries),
        DESCR=descr,
        **extras,
    )


# ---------------------------------------------------------------------------------------------
# Benchmark folders and missing files
# ---------------------------------------------------------------------------------------------


def check_benchmark_root(root):
    """``root`` as a :class:`~pathlib.Path`; it need not exist (the loaders say what is missing)."""
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a path (str or os.PathLike); got {type(root).__name__}.")
    return Path(root)


def check_dataset_name(name, allowed):
    """``name`` if it is one of ``allowed``, else a ``ValueError`` listing them."""
    if name not in allowed:
        raise ValueError(f"Unknown dataset name {name!r}; expected one of {list(allowed)}.")
    return name


def missing_files_message(what, missing, folder, source):
    """Sentence listing missing files: how many, the first one, where they go and where from.

    ``source`` is where to download them, or None for a dataset of the user's own.
    """
    fetch = f"download them from {source} and place them there" if source else "put them there"
    return (
        f"{len(missing)} {what} missing under {str(folder)!r} (first: {missing[0]!r}); "
        f"{fetch}, or pass allow_missing=True to evaluate on the images present."
    )


def images_folder(root, subfolder):
    """``root/subfolder`` when it exists (the layout of the official archives), else ``root``."""
    path = check_benchmark_root(root)
    return path / subfolder if (path / subfolder).is_dir() else path


def numbered_images(folder, pattern):
    """``{number: path}`` of the files of ``folder`` whose name matches ``pattern``, by number."""
    regex = re.compile(pattern, re.IGNORECASE)
    found = {}
    if folder.is_dir():
        for path in folder.iterdir():
            match = regex.fullmatch(path.name)
            if match and path.is_file():
                found[int(match.group(1))] = str(path)
    return dict(sorted(found.items()))


def read_name_list(path):
    """The non-blank lines of a text file, stripped."""
    with open(path) as file:
        return [line.strip() for line in file if line.strip()]


# ---------------------------------------------------------------------------------------------
# Ground truth: benchmarks restricted to the images present
# ---------------------------------------------------------------------------------------------


def ground_truth_indices(values, n_database, *, query, key):
    """``values`` as an int64 array of indices into ``n_database`` images, checked.

    A negative, out-of-range or non-integer index is a ``ValueError`` naming ``query`` (e.g.
    ``"query 3 ('all_souls_000013')"``) and ``key``: nothing is silently converted, and a
    ``-1`` never stands for the last image.
    """
    try:
        indices = np.asarray(values)
    except ValueError:  # ragged nested lists
        indices = None
    if indices is None or indices.ndim > 1 or not (indices.size == 0 or indices.dtype.kind in "iu"):
        raise ValueError(
            f"{query}: {key!r} must be a list of integer database indices; got {_shorten(values)}."
        )
    indices = indices.astype(np.int64).ravel()
    outside = indices[(indices < 0) | (indices >= n_database)]
    if outside.size:
        raise ValueError(
            f"{query}: {key!r} holds index {int(outside[0])}, outside the {n_database} database "
            f"images (0 to {n_database - 1}); the ground truth does not match the image list."
        )
    return indices


def ground_truth_box(values, *, query):
    """``values`` as a float64 box ``[x1, y1, x2, y2]``, or a ``ValueError`` naming ``query``."""
    try:
        box = np.asarray(values)
    except ValueError:
        box = None
    if box is None or box.dtype.kind not in "iuf" or box.size != 4:
        box = None
    elif not np.isfinite(box).all():
        box = None
    if box is None:
        raise ValueError(
            f"{query}: 'bbx' must be four finite numbers [x1, y1, x2, y2]; got {_shorten(values)}."
        )
    return box.astype(np.float64).ravel()


def _shorten(values):
    text = repr(values)
    return text if len(text) <= 80 else text[:77] + "..."


def restriction_index(n_total, present):
    """Map old indices to new ones (-1 for the dropped), given a bool mask of kept items."""
    new_index = np.full(n_total, -1, dtype=np.int64)
    new_index[present] = np.arange(int(np.sum(present)))
    return new_index


def remap_indices(indices, new_index):
    """Indices checked by :func:`ground_truth_indices`, renumbered by
    :func:`restriction_index`, the dropped ones left out."""
    remapped = new_index[indices]
    return remapped[remapped >= 0]


def group_ground_truth(groups, query_groups, self_index=None):
    """Per query, the database indices of its group (``ok``), and itself as junk if given."""
    gnd = []
    for i, group in enumerate(query_groups):
        positives = np.flatnonzero(groups == group)
        junk = np.empty(0, dtype=np.int64)
        if self_index is not None:
            junk = np.array([self_index[i]], dtype=np.int64)
            positives = positives[positives != self_index[i]]
        gnd.append({"ok": positives.astype(np.int64), "junk": junk})
    return gnd


def report_restriction(
    name, n_queries, n_images, n_missing_queries, n_missing_images, without_positives
):
    """Warn how many queries and database images remain, and which queries lost all positives."""
    message = (
        f"{name}: {n_missing_images} database images and {n_missing_queries} query images are "
        f"missing; evaluating {n_queries} queries against {n_images} database images."
    )
    if len(without_positives):
        message += (
            f" {len(without_positives)} of the remaining queries have no positive left "
            f"(queries {np.asarray(without_positives)[:10].tolist()}); metrics skip them."
        )
    # Level 3: the caller of the loader that calls this.
    warnings.warn(message, UserWarning, stacklevel=3)


def ground_truth_masks(gnd, n_database, *, positive_keys=("ok",), junk_keys=("junk",)):
    """Relevance and junk matrices of a benchmark ground truth, for the score-based metrics.

    Parameters
    ----------
    gnd : list of dict
        One dict per query with integer index arrays into the database, such as the ``gnd``
        of :func:`load_oxford_paris`, :func:`load_holidays`, :func:`load_ukbench` or
        :func:`load_revisited`.
    n_database : int
        Number of database images.
    positive_keys : sequence of str, default=("ok",)
        Keys of the positives; the bunches give theirs as ``positive_keys`` (for the revisited
        benchmarks ``("easy", "hard")``, the medium setting).
    junk_keys : sequence of str, default=("junk",)
        Keys of the items to ignore.

    Returns
    -------
    relevant : ndarray of shape (n_queries, n_database), dtype bool
        Positives that are not junk.
    junk : ndarray of shape (n_queries, n_database), dtype bool
        Junk items, for the ``junk`` argument of
        :func:`skretrieval.metrics.mean_average_precision` and :func:`~skretrieval.metrics.
        precision_at_k`.

    Raises
    ------
    ValueError
        If an index is negative, not below ``n_database`` or not an integer; the message names
        the query and the key.

    Examples
    --------
    >>> from skretrieval.datasets import ground_truth_masks
    >>> relevant, junk = ground_truth_masks([{"ok": [0, 2], "junk": [1]}], 4)
    >>> relevant.astype(int).tolist(), junk.astype(int).tolist()
    ([[1, 0, 1, 0]], [[0, 1, 0, 0]])
    """
    n_queries = len(gnd)
    masks = []
    for keys in (positive_keys, junk_keys):
        mask = np.zeros((n_queries, n_database), dtype=bool)
        for key in keys:
            lists = [
                ground_truth_indices(entry[key], n_database, query=f"gnd[{i}] (query {i})", key=key)
                for i, entry in enumerate(gnd)
            ]
            rows = np.repeat(np.arange(n_queries), [len(indices) for indices in lists])
            columns = np.concatenate(lists) if lists else np.empty(0, dtype=np.int64)
            mask[rows, columns] = True
        masks.append(mask)
    relevant, junk = masks
    return relevant & ~junk, junk


def crop_queries(data):
    """The query images of a benchmark, cropped to their boxes as the protocol requires.

    Parameters
    ----------
    data : :class:`~sklearn.utils.Bunch`
        A bunch from one of the benchmark loaders, with ``query_filenames`` (paths) and
        ``query_boxes`` (``(n_queries, 4)`` boxes ``[x1, y1, x2, y2]``, or None for whole
        images).

    Returns
    -------
    images : list of PIL.Image.Image
        RGB query images. Box corners are rounded to the nearest pixel (as
        :meth:`PIL.Image.Image.crop` does) and clipped to the image.

    Raises
    ------
    ValueError
        If ``data`` has no query files (its queries are its database items) or a box is empty
        once clipped to its image.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from PIL import Image
    >>> from sklearn.utils import Bunch
    >>> from skretrieval.datasets import crop_queries
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "query.png"
    >>> Image.new("RGB", (40, 30)).save(path)
    >>> data = Bunch(query_filenames=[str(path)], query_boxes=np.array([[5.2, 4.0, 25.0, 100.0]]))
    >>> crop_queries(data)[0].size
    (20, 26)
    """
    filenames = data.query_filenames
    if filenames is None:
        raise ValueError(
            "data.query_filenames is None: the queries of this dataset are its database items, "
            "with no query files to crop."
        )
    boxes = data.query_boxes
    if boxes is not None:
        boxes = np.asarray(boxes, dtype=np.float64)
        if boxes.shape != (len(filenames), 4):
            raise ValueError(
                f"query_boxes must have shape ({len(filenames)}, 4); got {boxes.shape}."
            )
    images = []
    for i, path in enumerate(filenames):
        with Image.open(path) as image:
            image = image.convert("RGB")
        if boxes is not None:
            width, height = image.size
            x1, y1, x2, y2 = np.round(boxes[i]).astype(int)
            x1, x2 = np.clip([x1, x2], 0, width)
            y1, y2 = np.clip([y1, y2], 0, height)
            if x2 <= x1 or y2 <= y1:
                raise ValueError(
                    f"The box {boxes[i].tolist()} of query {i} ({path!r}) is empty within its "
                    f"{width}x{height} image."
                )
            image = image.crop((int(x1), int(y1), int(x2), int(y2)))
        images.append(image)
    return images
