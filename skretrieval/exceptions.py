"""Errors of skretrieval that several modules raise or catch.

They live here, without torch, so that code handling them (an indexer skipping unreadable
files, a Dask worker reporting them) does not load the network code.

Examples
--------
>>> from skretrieval.exceptions import ImageReadError
>>> error = ImageReadError("X[2] ('a.jpg') is truncated", index=2, path="a.jpg",
...                        reason="is truncated")
>>> error.index, error.path, isinstance(error, ValueError)
(2, 'a.jpg', True)
"""

__all__ = ["ImageNotFoundError", "ImageReadError", "NoReadableImageError"]


class ImageReadError(ValueError):
    """An image file that cannot be opened or decoded.

    Raised by :meth:`CNNFeatureExtractor.transform` for a missing, unreadable, non-image,
    truncated or corrupt file (or a PIL image whose data cannot be decoded), with the position
    and the path of the image, so that a caller indexing many files can skip and report it.

    Attributes
    ----------
    index : int
        Position of the image in ``X``.
    path : str or None
        The file, or None for an in-memory image.
    reason : str
        What is wrong, without the position and path.
    """

    def __init__(self, message, *, index=None, path=None, reason=None):
        super().__init__(message)
        self.index = index
        self.path = path
        self.reason = message if reason is None else reason

    def __reduce__(self):
        # Rebuilt from the message, then the attributes restored: the error crosses process
        # boundaries (joblib, dask) intact, also once tblib (imported by dask.distributed) has
        # replaced the pickling of exceptions that have a custom __init__ but no __reduce__.
        return type(self), (self.args[0],), self.__dict__


class ImageNotFoundError(ImageReadError, FileNotFoundError):
    """An image file that does not exist (also a :class:`FileNotFoundError`)."""


class NoReadableImageError(ValueError):
    """None of the images of a call could be read, so there is no descriptor to return.

    Raised by :func:`skretrieval.distributed.transform` with ``on_error="skip"`` when every
    image is unreadable (the width of the descriptors is then unknown).

    Attributes
    ----------
    skipped : list of (int, str, str)
        ``(index, path, reason)`` of every image.
    """

    def __init__(self, message, *, skipped=()):
        super().__init__(message)
        self.skipped = list(skipped)

    def __reduce__(self):
        return type(self), (self.args[0],), self.__dict__
