"""The original Oxford5k and Paris6k benchmarks, read from their text ground-truth files."""

import numpy as np

from skretrieval.datasets._base import (
    IMAGE_SOURCES,
    MissingDatasetFilesError,
    check_benchmark_root,
    check_dataset_name,
    dataset_bunch,
    ground_truth_box,
    missing_files_message,
    read_name_list,
    report_restriction,
)

_CLASSIC_NAMES = ("oxford5k", "paris6k")
_CLASSIC_GT_URLS = {
    "oxford5k": "https://www.robots.ox.ac.uk/~vgg/data/oxbuildings/gt_files_170407.tgz",
    "paris6k": "https://www.robots.ox.ac.uk/~vgg/data/parisbuildings/paris_120310.tgz",
}


def _strip_prefix(image):
    # The Oxford query files name images "oxc1_<image>"; the good/ok/junk lists do not.
    return image[len("oxc1_") :] if image.startswith("oxc1_") else image


def _read_classic_query(path, query):
    """(image name, box) of a ``*_query.txt`` file: ``[query_id] image x1 y1 x2 y2``.

    ``query`` names the query in error messages.
    """
    lines = read_name_list(path)
    fields = lines[0].split() if lines else []
    if len(fields) == 6:  # a leading query id
        fields = fields[1:]
    if len(lines) != 1 or len(fields) != 5:
        raise ValueError(
            f"{str(path)!r} must hold one line '<image> x1 y1 x2 y2'; got {lines[:2]!r}."
        )
    try:
        box = [float(value) for value in fields[1:]]
    except ValueError:
        box = fields[1:]
    return _strip_prefix(fields[0]), ground_truth_box(box, query=query)


def load_oxford_paris(root, name, *, allow_missing=False):
    """Load the original Oxford5k or Paris6k benchmark from its text ground-truth files.

    Reads ``root/<name>/gt/<query>_query.txt`` (one line ``<image> x1 y1 x2 y2``; a leading
    query id is accepted, and the ``oxc1_`` prefix of Oxford's image names is stripped) and
    the image lists ``<query>_good.txt``, ``<query>_ok.txt`` and ``<query>_junk.txt``. The
    database is every ``.jpg`` file under ``root/<name>/jpg/``, sorted. Positives are the good
    and ok images, junk the junk images, as in the reference evaluation. Nothing is
    downloaded.

    Parameters
    ----------
    root : str or os.PathLike
        Folder holding one sub-folder per benchmark, e.g. ``root/oxford5k/gt/`` and
        ``root/oxford5k/jpg/``.
    name : {"oxford5k", "paris6k"}
        Benchmark.
    allow_missing : bool, default=False
        If False, an image named by the ground truth but absent from ``jpg/`` is an error. If
        True, it is left out of the ground truth, queries whose image is missing are dropped,
        and a :class:`UserWarning` says how many queries and database images remain.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        The keys of the dataset schema (see :mod:`skretrieval.datasets`), set as by
        :func:`load_revisited` (``images``, ``target``, ``target_names`` and ``query_target``
        are None), except that each ``gnd`` dict holds ``"ok"`` (good + ok positives),
        ``"junk"`` and ``"bbx"``, ``positive_keys`` is ``("ok",)``, and ``n_missing_images``
        counts the ground-truth images absent from ``jpg/``. The extra key, after the schema
        keys:

        query_ids : list of str
            Query names, from the ground-truth file names (``"all_souls_1"``, ...).

    Raises
    ------
    MissingDatasetFilesError
        If the ``gt`` folder or its query files are missing or, unless ``allow_missing``, an
        image named by the ground truth is.
    ValueError
        If ``name`` is unknown or a ground-truth file is malformed (e.g. a box that is not
        four finite numbers; the message names the query).

    See Also
    --------
    ground_truth_masks : Relevance and junk matrices for
        :func:`skretrieval.metrics.mean_average_precision` (use ``interpolation="trapezoid"``
        for the reference AP).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> from skretrieval.datasets import load_oxford_paris
    >>> folder = pathlib.Path(tempfile.mkdtemp()) / "oxford5k"
    >>> (folder / "jpg").mkdir(parents=True); (folder / "gt").mkdir()
    >>> for image in ["a_1", "a_2", "b_1"]:
    ...     Image.new("RGB", (8, 8)).save(folder / "jpg" / f"{image}.jpg")
    >>> _ = (folder / "gt" / "a_1_query.txt").write_text("oxc1_a_1 0 0 4 4\\n")
    >>> _ = (folder / "gt" / "a_1_good.txt").write_text("a_1\\n")
    >>> _ = (folder / "gt" / "a_1_ok.txt").write_text("a_2\\n")
    >>> _ = (folder / "gt" / "a_1_junk.txt").write_text("")
    >>> data = load_oxford_paris(folder.parent, "oxford5k")
    >>> data.query_ids, data.gnd[0]["ok"].tolist(), data.gnd[0]["junk"].tolist()
    (['a_1'], [0, 1], [])
    """
    name = check_dataset_name(name, _CLASSIC_NAMES)
    folder = check_benchmark_root(root) / name
    gt, jpg = folder / "gt", folder / "jpg"
    query_files = sorted(gt.glob("*_query.txt")) if gt.is_dir() else []
    if not query_files:
        raise MissingDatasetFilesError(
            f"{name}: expected the ground-truth files <query>_query.txt, _good.txt, _ok.txt and "
            f"_junk.txt under {str(gt)!r}; download them from {_CLASSIC_GT_URLS[name]} and "
            f"unpack them there. The images go under {str(jpg)!r} as <image>.jpg; download them "
            f"from {IMAGE_SOURCES[name]}."
        )
    database = (
        sorted(p.stem for p in jpg.iterdir() if p.suffix.lower() == ".jpg" and p.is_file())
        if jpg.is_dir()
        else []
    )
    position = {image: i for i, image in enumerate(database)}

    queries, query_ids, boxes, gnd = [], [], [], []
    referenced, missing_queries = set(), []
    for number, query_file in enumerate(query_files):
        query_id = query_file.name[: -len("_query.txt")]
        lists = {}
        for kind in ("good", "ok", "junk"):
            path = gt / f"{query_id}_{kind}.txt"
            if not path.is_file():
                raise MissingDatasetFilesError(
                    f"{name}: {str(path)!r} is missing; every <query>_query.txt needs its "
                    f"_good.txt, _ok.txt and _junk.txt beside it (from {_CLASSIC_GT_URLS[name]})."
                )
            lists[kind] = [_strip_prefix(image) for image in read_name_list(path)]
            referenced.update(lists[kind])
        image, box = _read_classic_query(
            query_file, f"{str(query_file)!r}: query {number} ({query_id!r})"
        )
        referenced.add(image)
        if image not in position:
            missing_queries.append(image)
            continue
        positives = [position[im] for im in lists["good"] + lists["ok"] if im in position]
        junk = [position[im] for im in lists["junk"] if im in position]
        queries.append(str(jpg / f"{image}.jpg"))
        query_ids.append(query_id)
        boxes.append(box)
        gnd.append(
            {
                "ok": np.unique(np.asarray(positives, dtype=np.int64)),
                "junk": np.unique(np.asarray(junk, dtype=np.int64)),
                "bbx": box,
            }
        )
    missing = sorted(f"{image}.jpg" for image in referenced if image not in position)
    if missing and not allow_missing:
        raise MissingDatasetFilesError(
            f"{name}: "
            + missing_files_message("ground-truth images", missing, jpg, IMAGE_SOURCES[name])
        )
    filenames = [str(jpg / f"{image}.jpg") for image in database]
    data = dataset_bunch(
        name,
        filenames=filenames,
        query_filenames=queries,
        query_boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        gnd=gnd,
        positive_keys=("ok",),
        n_missing_images=len(missing),
        n_missing_queries=len(missing_queries),
        descr=f"{name} (Philbin et al.) read from {str(folder)!r}: {len(queries)} queries "
        f"(cropped to their boxes), {len(filenames)} database images; positives good + ok, junk "
        "ignored.",
        query_ids=query_ids,
    )
    if missing:
        report_restriction(
            name,
            len(queries),
            len(filenames),
            len(missing_queries),
            len(missing),
            data.queries_without_positives,
        )
    return data
