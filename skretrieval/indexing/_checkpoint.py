"""Checkpoints of an indexing run: chunks of descriptors that a restarted run reads back.

A checkpoint is a folder beside the index (``INDEX.partial``) holding numbered chunk files
``chunk-000000.npz``, each written atomically with the paths, sizes and modification times of
its images, the descriptors of those described, the reasons of those skipped, and the settings
they were made with. Only complete chunks ever exist under their final names; a chunk that
cannot be read is deleted (with a warning) and its images are described again.
"""

import json
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from skretrieval.indexing._settings import settings_differences
from skretrieval.persistence import atomic_write

_CHUNK_GLOB = "chunk-*.npz"
_CHUNK_FORMAT = 1


class Entry(NamedTuple):
    """One image of a chunk: a descriptor, or the reason it was skipped."""

    size: int
    mtime_ns: int
    descriptor: np.ndarray | None
    reason: str | None


class CheckpointWarning(UserWarning):
    """A checkpoint, or a chunk of it, is not reused: made with other settings, or unreadable."""


def partial_folder(output):
    """The checkpoint folder of the index file ``output``."""
    output = Path(output)
    return output.with_name(output.name + ".partial")


class Checkpoint:
    """The chunks of one indexing run, made with ``settings``."""

    def __init__(self, folder, settings):
        self.folder = Path(folder)
        self.settings = dict(settings)
        self._next_number = 0

    def check_writable(self):
        """Raise now, before any work, when the folder cannot be created."""
        if self.folder.exists() and not self.folder.is_dir():
            raise FileExistsError(
                f"the checkpoint folder {str(self.folder)!r} exists but is a file; remove it or "
                "choose another output."
            )

    def read(self):
        """The entries of the complete, readable chunks made with the same settings.

        Returns ``{path: Entry}``; later chunks win for a path that appears twice. Chunks made
        with other settings are deleted with a warning; so are chunks that cannot be read.
        """
        if not self.folder.is_dir():
            return {}
        for leftover in self.folder.glob(".*.tmp"):  # from a run killed mid-write
            leftover.unlink(missing_ok=True)
        entries, numbers, width = {}, [-1], None
        for chunk in sorted(self.folder.glob(_CHUNK_GLOB)):
            try:
                number = int(chunk.stem.split("-")[1])
                settings, rows = _read_chunk(chunk)
                if settings == self.settings:
                    width = width or _width(rows)
                    if _width(rows) not in (None, width):
                        raise ValueError("its descriptors differ in length from other chunks'")
            except (OSError, ValueError, EOFError, KeyError, IndexError, zipfile.BadZipFile) as exc:
                warnings.warn(
                    f"checkpoint chunk {str(chunk)!r} cannot be read ({type(exc).__name__}: "
                    f"{exc}); its images are described again.",
                    CheckpointWarning,
                    stacklevel=3,
                )
                chunk.unlink(missing_ok=True)
                continue
            if settings != self.settings:
                differences = "; ".join(settings_differences(settings, self.settings))
                warnings.warn(
                    f"the checkpoint in {str(self.folder)!r} was made with other settings "
                    f"({differences}); it is not reused and its images are described again.",
                    CheckpointWarning,
                    stacklevel=3,
                )
                self.clear()
                return {}
            entries.update(rows)
            numbers.append(number)
        self._next_number = max(numbers) + 1
        return entries

    def write(self, paths, entries):
        """Write one chunk: ``entries[i]`` is the :class:`Entry` of ``paths[i]``."""
        described = np.array([entry.descriptor is not None for entry in entries], dtype=bool)
        rows = [entry.descriptor for entry in entries if entry.descriptor is not None]
        descriptors = np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)
        arrays = {
            "format": np.array(_CHUNK_FORMAT),
            "settings": np.array(json.dumps(self.settings, sort_keys=True)),
            "paths": np.array(list(paths), dtype=str).reshape(-1),
            "sizes": np.array([entry.size for entry in entries], dtype=np.int64),
            "mtimes_ns": np.array([entry.mtime_ns for entry in entries], dtype=np.int64),
            "described": described,
            "reasons": np.array([entry.reason or "" for entry in entries], dtype=str).reshape(-1),
            "descriptors": descriptors,
        }
        path = self.folder / f"chunk-{self._next_number:06d}.npz"
        with atomic_write(path) as file:
            np.savez(file, **arrays)
        self._next_number += 1
        return path

    def clear(self):
        """Delete the checkpoint folder and everything in it."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self._next_number = 0


def _width(rows):
    for entry in rows.values():
        if entry.descriptor is not None:
            return entry.descriptor.shape[0]
    return None


def _read_chunk(path):
    """``(settings, {path: Entry})`` of a chunk file; raises when anything does not add up."""
    # The file is opened here so that it is closed also when np.load fails on a damaged one.
    with open(path, "rb") as file, np.load(file, allow_pickle=False) as arrays:
        data = {name: arrays[name] for name in arrays.files}  # reads (and checks) every member
    if int(data["format"]) != _CHUNK_FORMAT:
        raise ValueError(f"chunk format {int(data['format'])}, expected {_CHUNK_FORMAT}")
    settings = json.loads(str(data["settings"]))
    paths, described = data["paths"], data["described"].astype(bool)
    descriptors = data["descriptors"]
    n = len(paths)
    lengths = [len(data[name]) for name in ("sizes", "mtimes_ns", "described", "reasons")]
    if any(length != n for length in lengths) or len(descriptors) != int(described.sum()):
        raise ValueError("its arrays have inconsistent lengths")
    if described.any() and (descriptors.ndim != 2 or not np.isfinite(descriptors).all()):
        raise ValueError("its descriptors are not a finite 2-D array")
    rows, row = {}, 0
    for i, path_name in enumerate(paths.tolist()):
        descriptor = reason = None
        if described[i]:
            descriptor, row = descriptors[row], row + 1
        else:
            reason = str(data["reasons"][i])
        size, mtime_ns = int(data["sizes"][i]), int(data["mtimes_ns"][i])
        rows[path_name] = Entry(size, mtime_ns, descriptor, reason)
    return settings, rows
