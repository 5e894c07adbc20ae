"""What runs on the workers: one chunk of images through the fitted estimator, unreadable
images raised or skipped, the result kept or written to the store."""

import pickle
import threading
import weakref

import numpy as np

from skretrieval.distributed._store import write_chunk
from skretrieval.exceptions import ImageReadError

# Per worker process: the fitted estimator as it arrived -> its copy placed on this worker's
# device, built once and reused by every chunk of the job.
_PLACED = weakref.WeakKeyDictionary()
_PLACED_LOCK = threading.Lock()


def _components(estimator):
    """The estimator and every estimator nested in it (pipeline steps, their parameters)."""
    yield estimator
    if hasattr(estimator, "get_params"):
        for value in estimator.get_params(deep=True).values():
            if hasattr(value, "get_params") and not isinstance(value, type):
                yield value


def _placed_elsewhere(component):
    """Whether a fitted ``device="auto"`` component sits on another device than this machine's
    own choice (e.g. fitted on a CPU client, loaded on a GPU worker)."""
    device = getattr(component, "device", None)
    if not (isinstance(device, str) and device == "auto" and hasattr(component, "device_")):
        return False
    # Imported only here: a component with a device_ has loaded torch already.
    from skretrieval._utils.devices import resolve_device

    return str(component.device_) != str(resolve_device("auto"))


def on_this_worker(estimator):
    """The estimator with its ``device="auto"`` parts on this worker's device.

    :class:`~skretrieval.extraction.CNNFeatureExtractor` resolves ``device="auto"`` anew when it
    is unpickled, as on a worker process. Where an estimator arrives unpickled with a device
    that is not this worker's (a worker thread in the client's process is on the client's
    machine, so this is only a safeguard), one pickle round trip re-places it, once per
    worker.
    """
    if not any(map(_placed_elsewhere, _components(estimator))):
        return estimator
    with _PLACED_LOCK:
        try:
            placed = _PLACED.get(estimator)
        except TypeError:  # not weakly referenceable: re-placed for each chunk
            return pickle.loads(pickle.dumps(estimator))
        if placed is None:
            placed = pickle.loads(pickle.dumps(estimator))
            _PLACED[estimator] = placed
    return placed


def _read_error(exc, n_images):
    """Whether ``exc`` is an unreadable image of the list given to ``transform``."""
    return (
        isinstance(exc, ImageReadError)
        and isinstance(exc.index, int)
        and 0 <= exc.index < n_images
    )


def describe(estimator, paths, on_error):
    """``estimator.transform(paths)``, skipping or reporting unreadable images.

    Returns ``(descriptors, errors, failure)``: ``descriptors`` has one row per path (rows of
    skipped images NaN, or 0 for integer output) or is None when every image was skipped;
    ``errors[i]`` is ``""`` or the reason image ``i`` was skipped; ``failure`` is None or
    ``(position, path, reason, not_found)`` of the first unreadable image when ``on_error`` is
    ``"raise"``. A read error leaves the transform of the remaining images to run again without
    the image, as the extractor stops at the first one.
    """
    remaining = list(range(len(paths)))
    errors = [""] * len(paths)
    while remaining:
        try:
            output = np.asarray(estimator.transform([paths[i] for i in remaining]))
        except Exception as exc:
            if not _read_error(exc, len(remaining)):
                raise
            position = remaining[exc.index]
            reason = exc.reason or str(exc)
            if on_error == "raise":
                not_found = isinstance(exc, FileNotFoundError)
                return None, errors, (position, paths[position], reason, not_found)
            errors[position] = reason
            del remaining[exc.index]
            continue
        if output.ndim != 2 or len(output) != len(remaining):
            raise ValueError(
                f"{type(estimator).__name__}.transform must return one row of descriptors per "
                f"image, shape ({len(remaining)}, n_features); got shape {output.shape}."
            )
        if len(remaining) == len(paths):
            return output, errors, None
        fill = np.nan if np.issubdtype(output.dtype, np.floating) else 0
        descriptors = np.full((len(paths), output.shape[1]), fill, dtype=output.dtype)
        descriptors[remaining] = output
        return descriptors, errors, None
    return None, errors, None


def run_chunk(estimator, paths, start, on_error, store=None, chunk_index=None):
    """Describe one chunk on a worker; write it to ``store`` (then return no descriptors).

    Returns ``(descriptors, errors, failure)`` as :func:`describe`, ``descriptors`` None once
    written to the store.
    """
    descriptors, errors, failure = describe(on_this_worker(estimator), paths, on_error)
    if failure is None and store is not None:
        write_chunk(store, chunk_index, start, descriptors, errors)
        return None, errors, None
    return descriptors, errors, failure


def chunk_summary(result):
    """What the client needs of a chunk: ``(n_features, dtype, errors, failure)``."""
    descriptors, errors, failure = result
    if descriptors is None:
        return None, None, errors, failure
    return descriptors.shape[1], descriptors.dtype, errors, failure


def chunk_descriptors(result, n_rows, n_features, dtype):
    """A chunk's descriptors; all rows NaN when every image of it was skipped."""
    descriptors = result[0]
    if descriptors is None:
        fill = np.nan if np.issubdtype(dtype, np.floating) else 0
        return np.full((n_rows, n_features), fill, dtype=dtype)
    return descriptors
