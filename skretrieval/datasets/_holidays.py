"""The INRIA Holidays benchmark, read from disk."""

import numpy as np

from skretrieval.datasets._base import (
    MissingDatasetFilesError,
    dataset_bunch,
    group_ground_truth,
    images_folder,
    numbered_images,
    report_restriction,
)

_HOLIDAYS_URL = (
    "https://lear.inrialpes.fr/people/jegou/data.php#holidays (jpg1.tar.gz and jpg2.tar.gz)"
)
_HOLIDAYS_SIZE = (1491, 500)  # images, queries


def load_holidays(root, *, allow_missing=False):
    """Load the INRIA Holidays benchmark (Jegou et al., ECCV 2008) from disk.

    The images are named ``<number>.jpg`` (``100000.jpg``, ``100001.jpg``, ...); image
    ``number`` belongs to group ``number // 100``, and the first image of each group (the
    number ending in ``00``) is its query. The database is every other image, the queries
    being excluded as in the standard protocol; the positives of a query are the other images
    of its group. Nothing is downloaded.

    Parameters
    ----------
    root : str or os.PathLike
        Folder holding the images, directly or in a ``jpg`` sub-folder (the layout of the
        official archives ``jpg1.tar.gz`` and ``jpg2.tar.gz``).
    allow_missing : bool, default=False
        If False, anything but the full benchmark (1491 images, 500 queries) is an error. If
        True, the images present are used, and a :class:`UserWarning` says how many queries
        and database images remain and which queries have no positive left.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        The keys of the dataset schema (see :mod:`skretrieval.datasets`). The benchmark is
        files of whole images whose groups have no names: ``images``, ``target_names`` and
        ``query_boxes`` are None. The others are:

        name : str
            ``"holidays"``.
        filenames : list of str
            Paths of the database images (non-query images), sorted by number.
        target : ndarray of shape (n_images,), dtype int64
            Group of each database image.
        query_filenames : list of str
            Paths of the query images, sorted by number.
        query_target : ndarray of shape (n_queries,), dtype int64
            Group of each query.
        gnd : list of dict
            One dict per query with int64 index arrays into ``filenames``: ``"ok"`` (the other
            images of the group) and ``"junk"`` (empty).
        positive_keys : tuple of str
            ``("ok",)``.
        queries_without_positives : ndarray of int
            Queries whose group has no database image.
        n_missing_images : int
            Database images missing from the 991 of the full benchmark.
        n_missing_queries : int
            Queries missing from the 500 of the full benchmark.
        DESCR : str
            Description of the dataset.

    Raises
    ------
    MissingDatasetFilesError
        If no query image is found or, unless ``allow_missing``, the benchmark is incomplete.

    Notes
    -----
    Some Holidays images are stored rotated by 90 degrees.
    :class:`~skretrieval.extraction.CNNFeatureExtractor` applies their EXIF orientation by
    default; ``exif_transpose=False`` uses them as stored, as most published results do.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> from skretrieval.datasets import load_holidays
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for number in [100000, 100001, 100002, 100100, 100101]:
    ...     Image.new("RGB", (8, 8)).save(root / f"{number}.jpg")
    >>> import warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     data = load_holidays(root, allow_missing=True)
    >>> [pathlib.Path(p).name for p in data.query_filenames]
    ['100000.jpg', '100100.jpg']
    >>> [entry["ok"].tolist() for entry in data.gnd]
    [[0, 1], [2]]
    """
    folder = images_folder(root, "jpg")
    found = numbered_images(folder, r"(\d+)\.jpe?g")
    numbers = np.fromiter(found, dtype=np.int64, count=len(found))
    paths = list(found.values())
    is_query = numbers % 100 == 0
    n_images, n_queries = _HOLIDAYS_SIZE
    expected = f"the {n_images} images <number>.jpg ({n_queries} queries <number>00.jpg)"
    if not is_query.any() or (
        not allow_missing and (len(numbers) != n_images or is_query.sum() != n_queries)
    ):
        raise MissingDatasetFilesError(
            f"holidays: expected {expected} under {str(folder)!r}; found {len(numbers)} images "
            f"and {int(is_query.sum())} queries. Download them from {_HOLIDAYS_URL} and unpack "
            "them there" + ("." if allow_missing else ", or pass allow_missing=True.")
        )
    groups = numbers // 100
    database = np.flatnonzero(~is_query)
    gnd = group_ground_truth(groups[database], groups[is_query])
    data = dataset_bunch(
        "holidays",
        filenames=[paths[i] for i in database],
        target=groups[database],
        query_filenames=[paths[i] for i in np.flatnonzero(is_query)],
        query_target=groups[is_query],
        gnd=gnd,
        positive_keys=("ok",),
        n_missing_images=max(0, n_images - n_queries - len(database)),
        n_missing_queries=max(0, n_queries - int(is_query.sum())),
        descr=f"INRIA Holidays read from {str(folder)!r}: {int(is_query.sum())} queries, "
        f"{len(database)} database images (queries excluded); positives: the query's group.",
    )
    if data.n_missing_images or data.n_missing_queries or len(data.queries_without_positives):
        report_restriction(
            "holidays",
            len(data.query_filenames),
            len(data.filenames),
            data.n_missing_queries,
            data.n_missing_images,
            data.queries_without_positives,
        )
    return data
