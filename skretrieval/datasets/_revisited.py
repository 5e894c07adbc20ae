"""The revisited Oxford and Paris benchmarks (ROxford5k, RParis6k), read from disk."""

import codecs
import importlib
import os
import pickle

import numpy as np

from skretrieval.datasets._base import (
    IMAGE_SOURCES,
    MissingDatasetFilesError,
    check_benchmark_root,
    dataset_bunch,
    ground_truth_box,
    ground_truth_indices,
    missing_files_message,
    remap_indices,
    report_restriction,
    restriction_index,
)

_REVISITED_NAMES = ("roxford5k", "rparis6k")
_REVISITED_GND_URL = "http://cmp.felk.cvut.cz/revisitop/data/datasets/{name}/gnd_{name}.pkl"


def _numpy_function(submodule, name):
    # numpy >= 2 keeps its internals in numpy._core; numpy 1.x, and its pickles, in numpy.core.
    try:
        return getattr(importlib.import_module(f"numpy._core.{submodule}"), name)
    except ImportError:
        return getattr(importlib.import_module(f"numpy.core.{submodule}"), name)


def _latin1_encode(text, encoding="latin1"):
    """What pickle protocols 0 to 2 store bytes as: ``_codecs.encode(text, "latin1")``."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return codecs.encode(text, "latin1")


def _allowed_globals():
    """The only globals that the published ground truth (dicts, lists, strings, numbers and
    numpy arrays, pickled by Python 2 or 3 with numpy 1.x or 2.x) refers to."""
    numpy_functions = {
        ("multiarray", "_reconstruct"): _numpy_function("multiarray", "_reconstruct"),
        ("multiarray", "scalar"): _numpy_function("multiarray", "scalar"),
        ("numeric", "_frombuffer"): _numpy_function("numeric", "_frombuffer"),
    }
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for (submodule, name), function in numpy_functions.items():
        for package in ("numpy._core", "numpy.core"):
            allowed[f"{package}.{submodule}", name] = function
    for module in ("builtins", "__builtin__"):
        for container in (set, frozenset, bytes, bytearray, complex):
            allowed[module, container.__name__] = container
    allowed["_codecs", "encode"] = _latin1_encode
    return allowed


class _RefusedGlobal(pickle.UnpicklingError):
    pass


class _GroundTruthUnpickler(pickle.Unpickler):
    """Unpickles only builtin containers, numbers, strings and numpy arrays: no other class or
    function is ever imported or called, so a tampered file cannot run code."""

    def __init__(self, file):
        # latin1: how numpy arrays pickled by Python 2 read back.
        super().__init__(file, encoding="latin1")
        self._allowed = _allowed_globals()

    def find_class(self, module, name):
        try:
            return self._allowed[module, name]
        except KeyError:
            raise _RefusedGlobal(f"{module}.{name}") from None


def _read_revisited_gnd(path):
    with open(path, "rb") as file:
        try:
            cfg = _GroundTruthUnpickler(file).load()
        except _RefusedGlobal as exc:
            raise ValueError(
                f"{str(path)!r} refers to {exc}, which the published ground truth never holds: "
                "it is not the published gnd_*.pkl file, and was not loaded (nothing in it ran)."
            ) from None
        except Exception as exc:
            raise ValueError(f"{str(path)!r} is not a readable pickle file: {exc}") from exc
    if not isinstance(cfg, dict) or not {"imlist", "qimlist", "gnd"} <= set(cfg):
        raise ValueError(
            f"{str(path)!r} is not a revisited ground truth: expected a pickled dict with keys "
            "'imlist', 'qimlist' and 'gnd'."
        )
    if len(cfg["gnd"]) != len(cfg["qimlist"]):
        raise ValueError(
            f"{str(path)!r}: 'gnd' has {len(cfg['gnd'])} entries but 'qimlist' has "
            f"{len(cfg['qimlist'])} queries."
        )
    n_database = len(cfg["imlist"])
    gnd = []
    for i, (entry, image) in enumerate(zip(cfg["gnd"], cfg["qimlist"], strict=True)):
        query = f"{str(path)!r}: query {i} ({str(image)!r})"
        if not isinstance(entry, dict):
            raise ValueError(f"{query}: gnd[{i}] is a {type(entry).__name__}, not a dict.")
        absent = [key for key in ("easy", "hard", "junk", "bbx") if key not in entry]
        if absent:
            raise ValueError(f"{query}: gnd[{i}] has no key(s) {absent}.")
        checked = {
            key: ground_truth_indices(entry[key], n_database, query=query, key=key)
            for key in ("easy", "hard", "junk")
        }
        gnd.append({**checked, "bbx": ground_truth_box(entry["bbx"], query=query)})
    return {**cfg, "gnd": gnd}


def _check_benchmark_name(name):
    """A published name, or one folder name (no path) for a benchmark of the user's own."""
    if name in _REVISITED_NAMES:
        return name
    if name in ("oxford5k", "paris6k"):
        raise ValueError(
            f"Unknown dataset name {name!r} for load_revisited: the original benchmark (its "
            f"gt/ text files) is read by load_oxford_paris(root, {name!r}); its revisited "
            f"version is 'r{name}'."
        )
    separators = {"/", os.sep, os.altsep} - {None}
    if not isinstance(name, str) or name in ("", ".", "..") or any(c in name for c in separators):
        raise ValueError(
            f"Unknown dataset name {name!r}: give 'roxford5k', 'rparis6k' or the name of a "
            "folder of root holding a benchmark in their format (one folder name, not a path)."
        )
    return name


def load_revisited(root, name, *, allow_missing=False):
    """Load the revisited Oxford or Paris benchmark (ROxford5k, RParis6k) from disk.

    Reads the published ground truth ``root/<name>/gnd_<name>.pkl`` of Radenovic et al.
    (CVPR 2018) and lists the images ``root/<name>/jpg/<image>.jpg``. Nothing is downloaded.
    The ground truth comes in the form :func:`skretrieval.metrics.evaluate_revisited` takes:
    rank the database ``filenames`` for each of the ``query_filenames`` (cropped to
    ``query_boxes`` with :func:`crop_queries`, as the protocol requires) and pass the ranks and
    ``gnd``.

    Parameters
    ----------
    root : str or os.PathLike
        Folder holding one sub-folder per benchmark, e.g. ``root/roxford5k/gnd_roxford5k.pkl``
        and ``root/roxford5k/jpg/all_souls_000000.jpg``.
    name : str
        Benchmark: ``"roxford5k"``, ``"rparis6k"``, or the folder name of a benchmark of your
        own in the same format (``root/<name>/gnd_<name>.pkl`` and ``root/<name>/jpg/``),
        evaluated with the same protocol.
    allow_missing : bool, default=False
        If False, a missing image is an error. If True, the benchmark is restricted to the
        images present: missing database images are removed and the ground-truth indices
        renumbered, queries whose image is missing are dropped, and a :class:`UserWarning`
        says how many queries and database images remain and which queries have no positive
        left.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        The keys of the dataset schema (see :mod:`skretrieval.datasets`). The benchmark is
        files, and relevance comes from ``gnd``: ``images``, ``target``, ``target_names`` and
        ``query_target`` are None. The others are:

        name : str
            The benchmark name.
        filenames : list of str
            Paths of the database images, in the order of the ground truth's ``imlist``.
        query_filenames : list of str
            Paths of the (uncropped) query images.
        query_boxes : ndarray of shape (n_queries, 4), dtype float64
            Query regions ``[x1, y1, x2, y2]`` in pixels.
        gnd : list of dict
            One dict per query with int64 index arrays into ``filenames`` under ``"easy"``,
            ``"hard"`` and ``"junk"``, and the box under ``"bbx"``.
        positive_keys : tuple of str
            ``("easy", "hard")``: the keys of ``gnd`` holding positives (medium setting).
        queries_without_positives : ndarray of int
            Queries with neither easy nor hard positive.
        n_missing_images : int
            Database images missing (0 unless ``allow_missing``).
        n_missing_queries : int
            Queries dropped because their image is missing.
        DESCR : str
            Description of the dataset.

    Raises
    ------
    MissingDatasetFilesError
        If the ground-truth file is missing or, unless ``allow_missing``, any image is; the
        message says which files go where and where to download them.
    ValueError
        If ``name`` is unknown or the ground-truth file is not in the published format: an
        object other than dicts, lists, strings, numbers and numpy arrays, or an index out of
        range, negative or not an integer, or a box that is not four finite numbers (the
        message names the query and the key).

    See Also
    --------
    crop_queries : The query images cropped to their boxes.
    skretrieval.metrics.evaluate_revisited : mAP and mP@k for easy, medium and hard.

    Notes
    -----
    The ground truth is a pickle, read with a restricted unpickler: it creates builtin
    containers, numbers, strings and numpy arrays only, and refuses any other class or
    function, so a tampered file cannot run code.

    Examples
    --------
    >>> import pickle, tempfile, pathlib
    >>> from PIL import Image
    >>> from skretrieval.datasets import load_revisited
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> (root / "roxford5k" / "jpg").mkdir(parents=True)
    >>> for image in ["a", "b", "c"]:
    ...     Image.new("RGB", (8, 8)).save(root / "roxford5k" / "jpg" / f"{image}.jpg")
    >>> gnd = [{"easy": [1], "hard": [2], "junk": [], "bbx": [0, 0, 4, 4]}]
    >>> with open(root / "roxford5k" / "gnd_roxford5k.pkl", "wb") as file:
    ...     pickle.dump({"imlist": ["a", "b", "c"], "qimlist": ["a"], "gnd": gnd}, file)
    >>> data = load_revisited(root, "roxford5k")
    >>> len(data.filenames), len(data.query_filenames), data.query_boxes.tolist()
    (3, 1, [[0.0, 0.0, 4.0, 4.0]])
    """
    name = _check_benchmark_name(name)
    folder = check_benchmark_root(root) / name
    gnd_path = folder / f"gnd_{name}.pkl"
    jpg = folder / "jpg"
    published = name in _REVISITED_NAMES
    if not gnd_path.is_file():
        fetch = (
            f"; download it from {_REVISITED_GND_URL.format(name=name)} and place it there. "
            f"The images go under {str(jpg)!r} as <image>.jpg; download them from "
            f"{IMAGE_SOURCES[name]}."
            if published
            else " (a pickled dict with imlist, qimlist and gnd, as the revisited benchmarks "
            f"publish it); the images go under {str(jpg)!r} as <image>.jpg."
        )
        raise MissingDatasetFilesError(
            f"{name}: expected the ground truth at {str(gnd_path)!r}{fetch}"
        )
    cfg = _read_revisited_gnd(gnd_path)
    imlist = [str(image) for image in cfg["imlist"]]
    qimlist = [str(image) for image in cfg["qimlist"]]
    image_present = np.array([(jpg / f"{im}.jpg").is_file() for im in imlist], dtype=bool)
    query_present = np.array([(jpg / f"{im}.jpg").is_file() for im in qimlist], dtype=bool)
    if not allow_missing and not (image_present.all() and query_present.all()):
        missing = [f"{im}.jpg" for im in imlist if not (jpg / f"{im}.jpg").is_file()]
        missing += [f"{im}.jpg" for im, ok in zip(qimlist, query_present, strict=True) if not ok]
        missing = list(dict.fromkeys(missing))
        raise MissingDatasetFilesError(
            f"{name}: {missing_files_message('images', missing, jpg, IMAGE_SOURCES.get(name))}"
        )

    new_index = restriction_index(len(imlist), image_present)
    gnd = []
    for entry, present in zip(cfg["gnd"], query_present, strict=True):
        if present:
            gnd.append(
                {
                    "easy": remap_indices(entry["easy"], new_index),
                    "hard": remap_indices(entry["hard"], new_index),
                    "junk": remap_indices(entry["junk"], new_index),
                    "bbx": entry["bbx"],
                }
            )
    filenames = [str(jpg / f"{im}.jpg") for im, ok in zip(imlist, image_present, strict=True) if ok]
    queries = [str(jpg / f"{im}.jpg") for im, ok in zip(qimlist, query_present, strict=True) if ok]
    n_missing_images = int(np.sum(~image_present))
    n_missing_queries = int(np.sum(~query_present))
    data = dataset_bunch(
        name,
        filenames=filenames,
        query_filenames=queries,
        query_boxes=np.array([entry["bbx"] for entry in gnd], dtype=np.float64).reshape(-1, 4),
        gnd=gnd,
        positive_keys=("easy", "hard"),
        n_missing_images=n_missing_images,
        n_missing_queries=n_missing_queries,
        descr=f"Revisited {name} (Radenovic et al., CVPR 2018) read from {str(folder)!r}: "
        f"{len(queries)} queries (cropped to their boxes by the protocol), {len(filenames)} "
        "database images; settings easy, medium and hard.",
    )
    if n_missing_images or n_missing_queries:
        report_restriction(
            name,
            len(queries),
            len(filenames),
            n_missing_queries,
            n_missing_images,
            data.queries_without_positives,
        )
    return data
