"""The zarr store of a distributed transform: its layout, the fingerprint of its inputs, and the
per-chunk writes that make a stopped run resumable.

Layout of the zarr group (format 3):

- attributes ``"skretrieval.distributed.transform"``: ``format`` (1), ``n_images``,
  ``chunk_size``, ``images`` (SHA-256 of the image paths) and ``estimator`` (a SHA-1
  fingerprint, :func:`joblib.hash`, of the fitted estimator's parameters and state);
- ``images`` ``(n_images,)`` strings: the image paths, in input order;
- ``descriptors`` ``(n_images, n_features)``, one zarr chunk per chunk of ``chunk_size``
  images: each chunk is written whole by one task, so no chunk is ever read, modified and
  written back by two writers. Rows of skipped images are NaN (0 for integer descriptors);
- ``errors`` ``(n_images,)`` strings, chunked alike: ``""`` for a described image, the reason
  for a skipped one;
- ``done`` ``(n_chunks,)`` booleans, one zarr chunk each: the marker of a chunk, written after
  its descriptors and errors.

zarr stores write each chunk as one object: a local directory store writes a temporary file and
renames it over the chunk (zarr 3's ``LocalStore``), object stores replace objects whole. A
chunk is therefore either absent or complete, never half-written, and a run that stops between
a chunk's data and its marker leaves a chunk that the next run computes and writes again, whole.
"""

import hashlib
import os

import numpy as np

from skretrieval.neighbors._distributed import INSTALL_HINT

ATTRIBUTE = "skretrieval.distributed.transform"
FORMAT = 1


def import_zarr():
    """Import and return ``zarr``, or raise an ImportError that names the optional extra."""
    try:
        import zarr
    except ImportError as exc:
        raise ImportError(f"store= needs zarr: {INSTALL_HINT}. ({exc})") from exc
    return zarr


# Parameters and attributes that say how or where an estimator runs, not what it computes: a
# run resumed with other values of these continues the same store.
_RUNTIME_ONLY = frozenset({"verbose", "progress", "n_jobs", "n_workers", "device_"})


def _canonical(value):
    """What the fingerprint of an estimator reads: its parameters and fitted state.

    Estimators become their class, parameters and public fitted attributes (names ending in
    ``_``), less :data:`_RUNTIME_ONLY`; torch modules their state dict; tensors numpy arrays.
    """
    if hasattr(value, "get_params") and not isinstance(value, type):
        fitted = {
            name: _canonical(attribute)
            for name, attribute in sorted(vars(value).items())
            if name.endswith("_") and not name.startswith("_") and name not in _RUNTIME_ONLY
        }
        params = {
            name: _canonical(param)
            for name, param in sorted(value.get_params(deep=False).items())
            if name not in _RUNTIME_ONLY
        }
        return (type(value).__module__, type(value).__qualname__, params, fitted)
    if callable(getattr(value, "state_dict", None)):
        return {name: _canonical(tensor) for name, tensor in value.state_dict().items()}
    if hasattr(value, "detach") and hasattr(value, "numpy"):
        return value.detach().cpu().numpy()
    if isinstance(value, dict):
        return {name: _canonical(item) for name, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value).__name__, [_canonical(item) for item in value]
    return value


def estimator_fingerprint(estimator):
    """SHA-1 (:func:`joblib.hash`) of a fitted estimator's parameters and fitted state."""
    import joblib

    return joblib.hash(_canonical(estimator), hash_name="sha1")


def images_fingerprint(paths):
    """SHA-256 of the image paths, in order."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.encode("utf-8", "surrogateescape") + b"\0")
    return digest.hexdigest()


class DescriptorStore:
    """The client's handle on a store: created or checked, then read and written per chunk."""

    def __init__(self, store, paths, chunk_size, estimator):
        self.zarr = import_zarr()
        store = os.fspath(store)
        # Workers resolve a relative path in their own working directory: make it absolute.
        self.store = store if "://" in store else os.path.abspath(store)
        self.n_images = len(paths)
        self.chunk_size = chunk_size
        self.n_chunks = -(-self.n_images // chunk_size)
        expected = {
            "format": FORMAT,
            "n_images": self.n_images,
            "chunk_size": chunk_size,
            "images": images_fingerprint(paths),
            "estimator": estimator_fingerprint(estimator),
        }
        self.group = self._open(expected, paths)

    def _open(self, expected, paths):
        zarr = self.zarr
        try:
            group = zarr.open_group(self.store, mode="r+")
        except FileNotFoundError:
            group = None
        if group is None:
            if os.path.isdir(self.store) and os.listdir(self.store):
                raise ValueError(
                    f"store={self.store!r} is a non-empty folder that is not a "
                    "zarr store; choose a new path for the descriptors."
                )
            group = zarr.open_group(self.store, mode="w-", zarr_format=3)
            images = group.create_array(
                "images", shape=(self.n_images,), chunks=(self.chunk_size,), dtype=str
            )
            images[:] = np.asarray(paths, dtype=object)
            # Last: a store whose attributes are set is complete up to its arrays of results.
            group.attrs[ATTRIBUTE] = expected
            return group
        recorded = group.attrs.get(ATTRIBUTE)
        if recorded is None:
            raise ValueError(
                f"store={self.store!r} is a zarr group that was not written by "
                "skretrieval.distributed.transform; choose a new path for the descriptors."
            )
        different = [name for name in expected if recorded.get(name) != expected[name]]
        if different:
            what = {
                "format": "the store's format version",
                "n_images": f"the number of images ({recorded.get('n_images')} in the store, "
                f"{self.n_images} now)",
                "chunk_size": f"chunk_size ({recorded.get('chunk_size')} in the store, "
                f"{self.chunk_size} now)",
                "images": "the list of images",
                "estimator": "the estimator (its parameters or fitted state)",
            }
            raise ValueError(
                f"store={self.store!r} holds descriptors made with other inputs: "
                f"{'; '.join(what[name] for name in different)} differ. Use a new store path, "
                "or delete this one to start over."
            )
        return group

    @property
    def has_arrays(self):
        return "done" in self.group

    def create_arrays(self, n_features, dtype):
        """The arrays of results, once the descriptor length is known (from a first chunk)."""
        dtype = np.dtype(dtype)
        fill = np.nan if np.issubdtype(dtype, np.floating) else 0
        self.group.create_array(
            "descriptors",
            shape=(self.n_images, n_features),
            chunks=(self.chunk_size, n_features),
            dtype=dtype,
            fill_value=fill,
        )
        self.group.create_array(
            "errors", shape=(self.n_images,), chunks=(self.chunk_size,), dtype=str, fill_value=""
        )
        # Last: its presence says the other arrays exist.
        self.group.create_array(
            "done", shape=(self.n_chunks,), chunks=(1,), dtype=bool, fill_value=False
        )

    def done(self):
        return np.asarray(self.group["done"][:], dtype=bool)

    def errors(self):
        return np.asarray(self.group["errors"][:], dtype=object)

    def descriptors(self, output):
        if output == "numpy":
            return self.group["descriptors"][:]
        import dask.array as da

        return da.from_zarr(self.store, component="descriptors")


def write_chunk(store, chunk_index, start, descriptors, errors):
    """Write one chunk's descriptors and errors, then its ``done`` marker (on a worker).

    ``descriptors`` is None when every image of the chunk was skipped: its rows keep the fill
    value (NaN).
    """
    zarr = import_zarr()
    group = zarr.open_group(store, mode="r+")
    stop = start + len(errors)
    if descriptors is not None:
        group["descriptors"][start:stop] = descriptors
    group["errors"][start:stop] = np.asarray(errors, dtype=object)
    group["done"][chunk_index] = True
