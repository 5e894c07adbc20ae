"""A thread pool that computes results ahead of their consumer, in order, with bounded memory."""

from collections import deque
from concurrent.futures import ThreadPoolExecutor

# Batches in flight (being decoded, waiting, or running) per worker thread.
_PREFETCH_PER_WORKER = 2


def prefetched(function, items, n_workers, initializer=None):
    """Yield ``(item, function(item))`` in order, computed ahead by ``n_workers`` threads.

    At most ``_PREFETCH_PER_WORKER * n_workers`` results wait at any time, so memory stays
    bounded. ``initializer`` runs once in each thread. ``n_workers=0`` computes in the calling
    thread, on demand.
    """
    if n_workers == 0:
        for item in items:
            yield item, function(item)
        return
    with ThreadPoolExecutor(
        n_workers, thread_name_prefix="skretrieval-extract", initializer=initializer
    ) as executor:
        items = iter(items)
        pending = deque()

        def submit():
            item = next(items, None)
            if item is not None:
                pending.append((item, executor.submit(function, item)))

        for _ in range(_PREFETCH_PER_WORKER * n_workers):
            submit()
        try:
            while pending:
                item, future = pending.popleft()
                result = future.result()
                submit()
                yield item, result
        finally:
            for _, future in pending:
                future.cancel()
