"""Indexing a collection of images: resumable, incremental, skipping and reporting bad files.

:func:`build_index` is what ``skretrieval index`` runs: it describes the images of a folder (or
a list of files) with a :class:`~skretrieval.extraction.CNNFeatureExtractor` and saves a search
index, that :func:`load_index` reads back:

>>> from skretrieval.indexing import build_index, load_index
>>> report = build_index("photos/", "photos.index", extractor, on_error="skip")  # doctest: +SKIP
>>> report.n_indexed, report.skipped  # doctest: +SKIP
(10412, [('/data/photos/broken.jpg', 'could not be decoded (truncated or corrupt ...)')])

Built for collections that take hours and for files that cannot all be trusted:

- the output is checked before any work: an unwritable output is an error at once;
- descriptors are checkpointed every ``checkpoint_every`` images in ``<output>.partial/``
  (atomic writes, checked when read back): a run that is killed and started again continues
  where it stopped, unless its settings changed;
- an existing index made with the same settings is updated: only new and changed files (by
  size and modification time) are described, deleted ones are dropped;
- with ``on_error="skip"``, unreadable files are left out and listed with the reason in
  ``<output>.skipped.tsv``;
- the settings that make the descriptors (:meth:`CNNFeatureExtractor.descriptor_settings
  <skretrieval.extraction.CNNFeatureExtractor.descriptor_settings>`: skretrieval version,
  backbone, a hash of the weights file, pooling, image size, device precision) are stored and
  compared, so descriptors of other settings are never mixed.

The private modules: ``_settings`` (settings compared in words), ``_checkpoint`` (the chunks
of an interrupted run), ``_files`` (listing the images, checking the output, the list of skipped
files) and ``_build`` (:func:`build_index`, :func:`load_index`).
"""

from skretrieval.indexing._build import (
    IndexFormatError,
    IndexReport,
    IndexUpdateError,
    build_index,
    load_index,
)
from skretrieval.indexing._checkpoint import CheckpointWarning

__all__ = [
    "CheckpointWarning",
    "IndexFormatError",
    "IndexReport",
    "IndexUpdateError",
    "build_index",
    "load_index",
]
