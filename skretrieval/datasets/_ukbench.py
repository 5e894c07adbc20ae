"""The UKBench benchmark, read from disk."""

import numpy as np

from skretrieval.datasets._base import (
    MissingDatasetFilesError,
    dataset_bunch,
    group_ground_truth,
    images_folder,
    missing_files_message,
    numbered_images,
    report_restriction,
)

_UKBENCH_URL = "https://archive.org/details/ukbench (ukbench.zip, formerly vis.uky.edu/~stewe)"
_UKBENCH_SIZE = 10200


def load_ukbench(root, *, allow_missing=False):
    """Load the UKBench benchmark (Nister and Stewenius, CVPR 2006) from disk.

    The 10200 images ``ukbench00000.jpg`` ... ``ukbench10199.jpg`` show 2550 objects, four
    consecutive images each. Every image is a query against all the others: the database is
    every image, and each query's own image is junk (deleted from its ranking), so its
    positives are the other three images of its group. Nothing is downloaded.

    Parameters
    ----------
    root : str or os.PathLike
        Folder holding the images, directly or in a ``full`` sub-folder (the layout of the
        official archive).
    allow_missing : bool, default=False
        If False, a missing image is an error. If True, the images present are used, and a
        :class:`UserWarning` says how many remain and which queries have no positive left.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        The keys of the dataset schema (see :mod:`skretrieval.datasets`). The benchmark is
        files of whole images whose groups have no names: ``images``, ``target_names`` and
        ``query_boxes`` are None. The others are:

        name : str
            ``"ukbench"``.
        filenames : list of str
            Paths of the images, sorted by number.
        target : ndarray of shape (n_images,), dtype int64
            Group (object) of each image, ``number // 4``.
        query_filenames : list of str
            The same paths: every image is a query.
        query_target : ndarray of shape (n_queries,), dtype int64
            The same groups.
        gnd : list of dict
            One dict per query with int64 index arrays into ``filenames``: ``"ok"`` (the other
            images of the group) and ``"junk"`` (the query itself).
        positive_keys : tuple of str
            ``("ok",)``.
        queries_without_positives : ndarray of int
            Queries whose group has no other image.
        n_missing_images, n_missing_queries : int
            Images missing from the full benchmark (the two counts are equal).
        DESCR : str
            Description of the dataset.

    Raises
    ------
    MissingDatasetFilesError
        If no image is found or, unless ``allow_missing``, any image is missing.

    Notes
    -----
    The usual UKBench score (N-S score) is the mean number of images of the query's group,
    the query itself included, among its top 4 results in the ranking of all images: 4 is
    perfect.

    Examples
    --------
    >>> import tempfile, pathlib, warnings
    >>> from PIL import Image
    >>> from skretrieval.datasets import load_ukbench
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for number in range(8):
    ...     Image.new("RGB", (8, 8)).save(root / f"ukbench{number:05d}.jpg")
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     data = load_ukbench(root, allow_missing=True)
    >>> data.target.tolist()
    [0, 0, 0, 0, 1, 1, 1, 1]
    >>> data.gnd[5]["ok"].tolist(), data.gnd[5]["junk"].tolist()
    ([4, 6, 7], [5])
    """
    folder = images_folder(root, "full")
    found = numbered_images(folder, r"ukbench(\d{5})\.jpe?g")
    numbers = np.fromiter(found, dtype=np.int64, count=len(found))
    paths = list(found.values())
    missing = [f"ukbench{number:05d}.jpg" for number in range(_UKBENCH_SIZE) if number not in found]
    if not found or (missing and not allow_missing):
        raise MissingDatasetFilesError(
            f"ukbench: expected the {_UKBENCH_SIZE} images ukbench00000.jpg ... "
            f"ukbench{_UKBENCH_SIZE - 1:05d}.jpg under {str(folder)!r}; "
            + missing_files_message("images", missing or ["ukbench00000.jpg"], folder, _UKBENCH_URL)
        )
    groups = numbers // 4
    gnd = group_ground_truth(groups, groups, self_index=np.arange(len(numbers)))
    data = dataset_bunch(
        "ukbench",
        filenames=paths,
        target=groups,
        query_filenames=list(paths),
        query_target=groups.copy(),
        gnd=gnd,
        positive_keys=("ok",),
        n_missing_images=len(missing),
        n_missing_queries=len(missing),
        descr=f"UKBench read from {str(folder)!r}: {len(paths)} images, each a query against all "
        "the others (itself excluded); positives: the other images of its group of four.",
    )
    if missing or len(data.queries_without_positives):
        report_restriction(
            "ukbench",
            len(paths),
            len(paths),
            len(missing),
            len(missing),
            data.queries_without_positives,
        )
    return data
