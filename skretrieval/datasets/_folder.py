"""Image files under a folder, and class-per-folder image trees."""

import os
from pathlib import Path

import numpy as np

from skretrieval.datasets._base import dataset_bunch

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _check_extensions(extensions):
    if isinstance(extensions, str):
        extensions = (extensions,)
    try:
        extensions = tuple(extensions)
    except TypeError:
        raise TypeError(
            f"extensions must be a string or a sequence of strings; got "
            f"{type(extensions).__name__}."
        ) from None
    if not extensions:
        raise ValueError("extensions is empty: give at least one file extension such as '.jpg'.")
    normalised = []
    for extension in extensions:
        if not isinstance(extension, str) or not extension.strip("."):
            raise ValueError(f"Invalid file extension {extension!r}; expected e.g. '.jpg'.")
        extension = extension.lower()
        normalised.append(extension if extension.startswith(".") else "." + extension)
    return tuple(normalised)


def _check_root(root):
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a path (str or os.PathLike); got {type(root).__name__}.")
    path = Path(root)
    if not path.exists():
        raise FileNotFoundError(f"Image folder {str(root)!r} does not exist.")
    if not path.is_dir():
        raise NotADirectoryError(f"Image folder {str(root)!r} is not a directory.")
    return path


def _is_hidden(name):
    return name.startswith(".")


def _walk_images(path, extensions):
    """Image files under ``path`` (recursively), skipping hidden files and folders, sorted."""
    found = []
    for directory, subdirectories, filenames in os.walk(path):
        # Prune hidden folders in place so os.walk does not descend into them.
        subdirectories[:] = [name for name in subdirectories if not _is_hidden(name)]
        for filename in filenames:
            if not _is_hidden(filename) and filename.lower().endswith(extensions):
                found.append(Path(directory, filename))
    # Sort by path components so that a folder's files stay together ("a/b" before "a-b").
    found.sort(key=lambda file: file.relative_to(path).parts)
    return [str(file) for file in found]


def list_images(root, extensions=IMAGE_EXTENSIONS):
    """List the image files under a folder, recursively, in sorted order.

    Parameters
    ----------
    root : str or os.PathLike
        Folder to search.
    extensions : str or sequence of str, default=(".jpg", ".jpeg", ".png", ".bmp", ".gif", \
".tif", ".tiff", ".webp")
        File extensions counted as images, matched case-insensitively. Files with other
        extensions are not images by this definition and are skipped.

    Returns
    -------
    filenames : list of str
        Paths of the image files (``root`` joined with the relative path), sorted by their
        path components. Hidden files and anything inside hidden folders (names starting
        with ``"."``) are skipped. The list is empty if there is no image.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from skretrieval.datasets import list_images
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ["b/2.png", "b/1.JPG", "a.jpg", "notes.txt"]:
    ...     (root / name).parent.mkdir(exist_ok=True)
    ...     (root / name).touch()
    >>> [pathlib.Path(f).relative_to(root).as_posix() for f in list_images(root)]
    ['a.jpg', 'b/1.JPG', 'b/2.png']
    """
    extensions = _check_extensions(extensions)
    return _walk_images(_check_root(root), extensions)


def load_image_folder(root, *, extensions=IMAGE_EXTENSIONS, allow_empty=False):
    """Load the file names and labels of a class-per-folder image tree.

    Each sub-folder of ``root`` is one class, in sorted order; every image file below it
    (searched recursively) belongs to that class. The images are not decoded: pass
    ``filenames`` to a feature extractor, which reads them.

    Parameters
    ----------
    root : str or os.PathLike
        Folder whose sub-folders are the classes.
    extensions : str or sequence of str, default=(".jpg", ".jpeg", ".png", ".bmp", ".gif", \
".tif", ".tiff", ".webp")
        File extensions counted as images, matched case-insensitively. Files with other
        extensions (text files, annotations, ...) are not images by this definition and are
        ignored.
    allow_empty : bool, default=False
        If False, a class folder without images is an error. If True, it is kept as a class
        with no images (its index still counts in ``target_names``).

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        The keys of the dataset schema (see :mod:`skretrieval.datasets`). Every image is in
        turn a query against the others, relevant where ``target`` is equal: ``images``,
        ``query_filenames``, ``query_target``, ``query_boxes``, ``gnd``, ``positive_keys``,
        ``queries_without_positives``, ``n_missing_images`` and ``n_missing_queries`` are None.
        The others are:

        name : str
            ``"folder"``.
        filenames : list of str
            Paths of the image files, grouped by class and sorted within each class.
        target : ndarray of shape (n_images,), dtype int64
            Class index of each image.
        target_names : ndarray of shape (n_classes,), dtype object
            Name of each class folder.
        DESCR : str
            Description of the dataset.

    Raises
    ------
    FileNotFoundError
        If ``root`` does not exist, has no class sub-folders, or (unless ``allow_empty``) a
        class folder holds no image.
    NotADirectoryError
        If ``root`` is not a directory.
    ValueError
        If image files lie directly in ``root``, outside any class folder: they would have no
        label.

    Notes
    -----
    Hidden files and folders (names starting with ``"."``) are ignored.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from skretrieval.datasets import load_image_folder
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ["cats/1.jpg", "cats/2.jpg", "dogs/1.png"]:
    ...     (root / name).parent.mkdir(exist_ok=True)
    ...     (root / name).touch()
    >>> data = load_image_folder(root)
    >>> data.target_names.tolist(), data.target.tolist()
    (['cats', 'dogs'], [0, 0, 1])
    """
    extensions = _check_extensions(extensions)
    path = _check_root(root)
    entries = sorted(entry for entry in os.listdir(path) if not _is_hidden(entry))
    stray = [
        entry
        for entry in entries
        if (path / entry).is_file() and entry.lower().endswith(extensions)
    ]
    if stray:
        raise ValueError(
            f"Image folder {str(root)!r} holds image files outside any class sub-folder "
            f"(e.g. {stray[0]!r}); put each image in the sub-folder of its class."
        )
    class_names = [entry for entry in entries if (path / entry).is_dir()]
    if not class_names:
        raise FileNotFoundError(
            f"Image folder {str(root)!r} has no class sub-folders; expected one sub-folder per "
            f"class holding image files with extensions {list(extensions)}."
        )

    filenames = []
    target = []
    for label, name in enumerate(class_names):
        files = _walk_images(path / name, extensions)
        if not files and not allow_empty:
            raise FileNotFoundError(
                f"Class folder {str(path / name)!r} holds no image file with extensions "
                f"{list(extensions)}; remove it or pass allow_empty=True."
            )
        filenames.extend(files)
        target.extend([label] * len(files))
    if not filenames:
        raise FileNotFoundError(
            f"Image folder {str(root)!r} holds no image file with extensions {list(extensions)} "
            "in any of its class sub-folders."
        )

    descr = (
        f"Image folder {str(root)!r}: {len(filenames)} images in {len(class_names)} classes "
        "(one class per sub-folder)."
    )
    return dataset_bunch(
        "folder",
        filenames=filenames,
        target=np.asarray(target, dtype=np.int64),
        target_names=np.asarray(class_names, dtype=object),
        descr=descr,
    )
