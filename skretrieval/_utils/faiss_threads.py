"""faiss's OpenMP thread count, capped for the duration of a call and then restored."""

import contextlib

from joblib import cpu_count


@contextlib.contextmanager
def faiss_threads(max_threads=None):
    """Run faiss with no more OpenMP threads than the CPUs this process may use.

    OpenMP counts the machine's cores, not the container's CPU quota (which joblib reads),
    and oversubscribed OpenMP threads spin. ``max_threads`` lowers the cap further (e.g. the
    share of one of several threads that call faiss at once); a caller's lower setting is
    kept. The previous setting is restored on every exit, so faiss's global state is never
    changed for other code. faiss is imported here, not by the modules that import this one.

    Examples
    --------
    >>> import faiss
    >>> from skretrieval._utils.faiss_threads import faiss_threads
    >>> before = faiss.omp_get_max_threads()
    >>> with faiss_threads(1):
    ...     faiss.omp_get_max_threads()
    1
    >>> faiss.omp_get_max_threads() == before
    True
    """
    import faiss

    previous = faiss.omp_get_max_threads()
    limit = min(previous, cpu_count())
    if max_threads is not None:
        limit = min(limit, max_threads)
    faiss.omp_set_num_threads(max(1, limit))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)
