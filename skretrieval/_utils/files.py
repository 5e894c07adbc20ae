"""File contents as hashes: what makes a weights file or a cached entry what it is."""

import hashlib
import os

# sha256 of files already read in this process: (path, size, mtime_ns) -> hex digest.
_DIGESTS = {}


def file_sha256(path):
    """Hex sha256 of a file's contents, remembered while its size and mtime stay the same."""
    path = os.path.realpath(path)
    stat = os.stat(path)
    key = (path, stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        with open(path, "rb") as file:
            _DIGESTS[key] = hashlib.file_digest(file, "sha256").hexdigest()
    return _DIGESTS[key]
