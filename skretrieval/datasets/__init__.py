"""Datasets for image retrieval: benchmark loaders, image folders and a copy-detection generator.

:func:`make_copydays` builds a small copy-detection benchmark from real photographs that ship
with scikit-image and scikit-learn, so that examples, the ``skretrieval demo`` command and the
tests run without any download. :func:`load_image_folder` reads a class-per-folder image tree
and :func:`list_images` lists the image files under a folder.

The benchmark loaders read standard benchmarks that the user has downloaded by hand (they never
download): :func:`load_revisited` (revisited Oxford and Paris, ``gnd_*.pkl``),
:func:`load_oxford_paris` (the original Oxford5k and Paris6k text ground truth),
:func:`load_holidays` (INRIA Holidays) and :func:`load_ukbench` (UKBench). Their ``gnd`` holds
one dict per query of integer index arrays into the database -- ``"easy"``, ``"hard"``,
``"junk"`` for the revisited benchmarks, as :func:`skretrieval.metrics.evaluate_revisited`
takes them, and ``"ok"`` and ``"junk"`` for the others, turned into the matrices of
:func:`skretrieval.metrics.mean_average_precision` by :func:`ground_truth_masks`.
:func:`crop_queries` crops the queries to their boxes. Missing files raise
:class:`MissingDatasetFilesError`, whose message says what to put where.

Dataset schema
--------------
Every loader returns a :class:`~sklearn.utils.Bunch` with the keys below, in this order, a key
that does not apply to the dataset being None; the loader's own extra keys, documented in its
"Returns" section, follow them.

=============================  ===================================================================
Key                            Value
=============================  ===================================================================
``name``                       str, the dataset: ``"copydays"``, ``"folder"``, ``"roxford5k"``,
                               ``"rparis6k"``, ``"oxford5k"``, ``"paris6k"``, ``"holidays"``,
                               ``"ukbench"``.
``filenames``                  list of str, paths of the database images; None when the dataset
                               holds pixels (:func:`make_copydays`).
``images``                     list of ``(H, W, 3)`` uint8 arrays, the database pixels; None when
                               the dataset is files. Pixel arrays only ever live here, file paths
                               never do.
``target``                     int64 array of shape ``(n_images,)``, the label of each database
                               image (class, group, source photo); None where there are no
                               labels (revisited Oxford and Paris, Oxford5k and Paris6k).
``target_names``               object array of label names (class folders, photo names); None
                               where labels have no names.
``query_filenames``            list of str, paths of the query images; None when every database
                               image is in turn a query against the others, itself excluded
                               (:func:`make_copydays`, :func:`load_image_folder`).
``query_target``               labels of the queries (Holidays, UKBench); None otherwise, in
                               particular when ``query_filenames`` is None (the queries are then
                               the database items, and ``target`` serves).
``query_boxes``                float64 array of shape ``(n_queries, 4)``, the query regions
                               ``[x1, y1, x2, y2]`` in pixels; None for whole images.
``gnd``                        list of one dict per query of int64 index arrays into the
                               database: ``"easy"``, ``"hard"``, ``"junk"`` and ``"bbx"`` for the
                               revisited benchmarks, ``"ok"`` and ``"junk"`` (and ``"bbx"``) for
                               the others; None when relevance comes from ``target``
                               (:func:`make_copydays`, :func:`load_image_folder`).
``positive_keys``              tuple of the keys of ``gnd`` that hold positives:
                               ``("easy", "hard")`` or ``("ok",)``; None when ``gnd`` is None.
``queries_without_positives``  int array of the queries with no positive; None when ``gnd`` is
                               None.
``n_missing_images``           int, database images missing from the benchmark; None where
                               nothing can be missing (:func:`make_copydays`,
                               :func:`load_image_folder`).
``n_missing_queries``          int, query images missing from the benchmark; None where nothing
                               can be missing.
``DESCR``                      str, a description of the dataset.
=============================  ===================================================================
"""

from skretrieval.datasets._base import MissingDatasetFilesError, crop_queries, ground_truth_masks
from skretrieval.datasets._copydays import COPYDAYS_TRANSFORMS, make_copydays
from skretrieval.datasets._folder import IMAGE_EXTENSIONS as IMAGE_EXTENSIONS
from skretrieval.datasets._folder import list_images, load_image_folder
from skretrieval.datasets._holidays import load_holidays
from skretrieval.datasets._oxford_paris import load_oxford_paris
from skretrieval.datasets._revisited import load_revisited
from skretrieval.datasets._ukbench import load_ukbench

__all__ = [
    "COPYDAYS_TRANSFORMS",
    "MissingDatasetFilesError",
    "crop_queries",
    "ground_truth_masks",
    "list_images",
    "load_holidays",
    "load_image_folder",
    "load_oxford_paris",
    "load_revisited",
    "load_ukbench",
    "make_copydays",
]
