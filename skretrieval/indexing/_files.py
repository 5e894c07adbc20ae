"""The files around an index: the images to list, the output to check, the skipped-files list."""

import os
import tempfile
from pathlib import Path

from skretrieval.datasets import list_images
from skretrieval.persistence import atomic_write


def skipped_file(output):
    """The list of skipped images beside the index file ``output``."""
    output = Path(output)
    return output.with_name(output.name + ".skipped.tsv")


def check_output(output):
    """Raise now, before any work, if the index file ``output`` cannot be written.

    Creates the missing parent folders, then creates and deletes a file in the parent folder.
    """
    output = Path(output)
    if output.is_dir():
        raise IsADirectoryError(
            f"the output {str(output)!r} is a folder; give the index a file name inside it, "
            f"such as {str(output / 'images.index')!r}."
        )
    parent = output.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise NotADirectoryError(
            f"cannot write the index {str(output)!r}: {str(parent)!r} or a folder above it is a "
            "file; choose another output."
        ) from None
    except OSError as exc:
        raise PermissionError(
            f"cannot create the folder {str(parent)!r} of the index {str(output)!r} "
            f"({exc.strerror}); choose another output."
        ) from None
    try:
        handle, probe = tempfile.mkstemp(dir=parent, prefix=f".{output.name}.", suffix=".probe")
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise PermissionError(
            f"cannot write the index {str(output)!r}: creating a file in {str(parent)!r} failed "
            f"({exc.strerror}); make the folder writable or choose another output."
        ) from None
    for beside in (skipped_file(output),):
        if beside.is_dir():
            raise IsADirectoryError(
                f"{str(beside)!r} is a folder, where the list of skipped images goes; remove it "
                "or choose another output."
            )


def list_paths(images):
    """Absolute, unique, sorted paths of a folder's images or of a list of files."""
    if isinstance(images, (str, os.PathLike)):
        folder = Path(images)
        if folder.is_dir():
            # os.walk ignores folders it cannot read: make an unreadable root an error.
            with os.scandir(folder):
                pass
        paths = list_images(folder)  # FileNotFoundError, NotADirectoryError
        if not paths:
            raise ValueError(
                f"no image files under {str(images)!r} (looked for .jpg, .jpeg, .png, .bmp, "
                ".gif, .tif, .tiff and .webp files, hidden ones excluded); give the folder that "
                "holds the images."
            )
    else:
        if isinstance(images, bytes):
            raise TypeError("images must be a folder or a list of image files; got bytes.")
        paths = [os.fspath(path) for path in images]
        if not paths:
            raise ValueError("images is an empty list: give at least one image file.")
    return sorted({os.path.abspath(path) for path in paths})


def _tsv_field(text):
    return str(text).replace("\t", " ").replace("\n", " ").replace("\r", " ")


def write_skipped(output, skipped):
    """Write ``[(path, reason)]`` beside the index, or remove the list when it is empty."""
    path = skipped_file(output)
    if not skipped:
        path.unlink(missing_ok=True)
        return None
    lines = ["path\treason"] + [f"{_tsv_field(p)}\t{_tsv_field(r)}" for p, r in skipped]
    with atomic_write(path) as file:
        file.write(("\n".join(lines) + "\n").encode("utf-8", errors="surrogateescape"))
    return path

