"""Torch devices, mixed precision and pixel tensors, for extraction and learning.

The one torch module of :mod:`skretrieval._utils`: only :mod:`skretrieval.extraction` and
:mod:`skretrieval.learning` import it, so that the numpy modules never load torch.
"""

import functools
import threading
from contextlib import contextmanager, nullcontext

import numpy as np
import torch

# Normalisation every torchvision ImageNet classification model was trained with.
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def resolve_device(device):
    """Return the ``torch.device`` that ``device`` names; ``"auto"``: CUDA, then MPS, then CPU."""
    if isinstance(device, str) and device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device={device!r} is not a torch device; use 'auto', 'cpu', 'cuda', 'cuda:<index>' "
            "or 'mps'."
        ) from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was requested but CUDA is not available; use device='auto' "
                "or 'cpu'."
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} was requested but only {torch.cuda.device_count()} CUDA "
                "device(s) are present."
            )
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r} was requested but MPS is not available.")
    return resolved


def _in_new_thread(function):
    """``function()`` run in a thread started for it, as code started later would run it."""
    results = []
    thread = threading.Thread(target=lambda: results.append(function()), daemon=True)
    thread.start()
    thread.join()
    return results[0]


# Concurrent users of preserved_torch_threads (extractors run from several threads, e.g. the
# threads of a dask worker): the first to enter records the thread counts, the last to leave
# puts them back. Each recording its own would restore what another had changed meanwhile.
_THREADS_LOCK = threading.Lock()
_threads_state = {"users": 0, "default": None}


@contextmanager
def preserved_torch_threads():
    """Put torch's intra-op thread counts back on exit, normal or not (exceptions, Ctrl-C).

    ``torch.set_num_threads`` sets the OpenMP thread count of the thread that calls it, and
    also the default that threads touching torch for the first time later start with. Code
    inside may call it in any thread (extraction workers take a share of the cores each):
    on exit the calling thread gets its own count back and, once the last of several
    concurrent users leaves, new threads get the default they had before the first came in.
    Inter-op threads are not touched.

    Examples
    --------
    >>> import torch
    >>> from skretrieval._utils.devices import preserved_torch_threads
    >>> before = torch.get_num_threads()
    >>> with preserved_torch_threads():
    ...     torch.set_num_threads(1)
    >>> torch.get_num_threads() == before
    True
    """
    caller = torch.get_num_threads()
    with _THREADS_LOCK:
        if _threads_state["users"] == 0:
            _threads_state["default"] = _in_new_thread(torch.get_num_threads)
        _threads_state["users"] += 1
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _threads_state["users"] -= 1
            last = _threads_state["users"] == 0
            # Also sets the default for new threads: right when the caller's count is it.
            torch.set_num_threads(caller)
            default = _threads_state["default"]
            if last and default != caller:
                # set_num_threads from a thread of its own: the default changes, the caller's
                # count stays.
                _in_new_thread(lambda: torch.set_num_threads(default))


def uses_channels_last(device):
    """Whether networks run in the channels-last layout on ``device``.

    oneDNN (CPU) and cuDNN (CUDA) run convolutions natively in NHWC; MPS support for it has been
    fragile.
    """
    return device.type in ("cpu", "cuda")


def autocast(device, *, enabled=True, training=False):
    """float16 autocast on accelerators; the CPU stays in float32 so that its results are exact.

    CUDA always; MPS for inference only, because training in float16 needs a gradient scaler,
    which only CUDA has. ``enabled=False`` (or a CPU) gives a context that changes nothing.
    """
    accelerators = ("cuda",) if training else ("cuda", "mps")
    if (
        enabled
        and device.type in accelerators
        and torch.amp.is_autocast_available(device.type)
    ):
        return torch.autocast(device.type, dtype=torch.float16)
    return nullcontext()


def full_precision(device):
    """A context that turns an enclosing autocast off on ``device``: float32 inside."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return nullcontext()


@functools.lru_cache(maxsize=None)
def _imagenet_mean_std(device):
    """ImageNet mean and std as ``(1, 3, 1, 1)`` tensors on ``device``, made once per device.

    Once: building them per batch would copy from pageable host memory, a synchronisation
    point on CUDA. Made outside inference mode so that training code may use them too.
    """
    with torch.inference_mode(False):
        mean = torch.as_tensor(IMAGENET_MEAN, device=device).reshape(1, 3, 1, 1)
        std = torch.as_tensor(IMAGENET_STD, device=device).reshape(1, 3, 1, 1)
    return mean, std


def normalize_pixels(pixels, device):
    """uint8 ``(n, h, w, 3)`` pixels -> float ``(n, 3, h, w)`` on ``device``, as ToTensor +
    Normalize compute it; channels-last strides where the network runs channels-last."""
    mean, std = _imagenet_mean_std(device)
    # Asynchronous from pinned memory on CUDA; a no-op on CPU.
    inputs = pixels.to(device, non_blocking=True).permute(0, 3, 1, 2).float()
    inputs = inputs.div_(255).sub_(mean).div_(std)
    return inputs if uses_channels_last(device) else inputs.contiguous()
