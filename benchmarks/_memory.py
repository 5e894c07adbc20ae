"""Peak resident memory of a step, read from Linux's ``/proc/self`` (shared by the benchmarks).

The kernel's peak-RSS counter (``VmHWM``) is reset to the current RSS before the step, so the
figure counts everything the step made the process touch (native allocators, BLAS and faiss
buffers, thread stacks), which tracemalloc cannot see.
"""

import ctypes
import ctypes.util
import time
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def memory_kib(field):
    """A field of ``/proc/self/status`` in KiB, e.g. ``"VmRSS"`` or ``"VmHWM"`` (the peak)."""
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak():
    """Reset the peak resident set size (``VmHWM``) to the current one."""
    _CLEAR_REFS.write_text("5")


def peak_reset_supported():
    """Whether this system lets a process reset and read its peak RSS (Linux, not every VM)."""
    try:
        reset_peak()
        memory_kib("VmHWM")
        return True
    except (OSError, KeyError):
        return False


def release_freed_memory():
    """Hand memory freed by earlier steps back to the system (glibc keeps it otherwise).

    Without this a step that reuses memory freed by the previous one shows no growth at all.
    """
    name = ctypes.util.find_library("c")
    if name:
        libc = ctypes.CDLL(name)
        if hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)


def measure(function, track_memory):
    """Run ``function``; return (seconds, peak RSS growth in MiB or None, result)."""
    if track_memory:
        release_freed_memory()
        reset_peak()
        before = memory_kib("VmRSS")
    start = time.perf_counter()
    result = function()
    seconds = time.perf_counter() - start
    peak = (memory_kib("VmHWM") - before) / 1024 if track_memory else None
    return seconds, peak, result
