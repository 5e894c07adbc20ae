"""Exact top-k search time: ImageRetriever against scikit-learn brute force and faiss.

All search the same float32 database with cosine distance (faiss: inner product of unit
vectors, ``IndexFlatIP``) or Euclidean distance (``IndexFlatL2``), in the same process.
ImageRetriever runs three ways: its default route (faiss's kNN on the prepared database, ties
re-sorted by database index), its numpy route of tiles (the route before, forced by hiding
faiss from the search) and full rows of distances (the route before tiling, forced by making a
tile wider than the database and hiding faiss). The script checks that all return the same
neighbours, prints the median time of each, and the memory ``fit`` keeps.

    python benchmarks/bench_search.py --n-database 100000 --n-features 512 --n-queries 1000
    python benchmarks/bench_search.py --metric euclidean --threads 1 --skip-sklearn
"""

import os

# faiss (OpenMP) threads spin while waiting unless told otherwise, which steals the CPU from
# whatever runs next; set before faiss is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402
from sklearn.neighbors import NearestNeighbors  # noqa: E402
from sklearn.preprocessing import normalize  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

import skretrieval.neighbors._search as blocked_search  # noqa: E402
from skretrieval.neighbors import ImageRetriever  # noqa: E402

try:
    import faiss
except ImportError:  # faiss is optional
    faiss = None


def _clustered(n, d, rng, n_clusters=1000):
    centres = rng.normal(size=(n_clusters, d)).astype(np.float32)
    labels = rng.integers(0, n_clusters, size=n)
    return centres[labels] + 0.5 * rng.normal(size=(n, d)).astype(np.float32)


def _timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


@contextlib.contextmanager
def _numpy_route(tile_columns=None):
    """The retriever's numpy search: faiss hidden from it, tiles of ``tile_columns`` items."""
    flat_metric, columns = blocked_search.flat_metric, blocked_search._TILE_COLUMNS
    blocked_search.flat_metric = lambda kernel, state: None
    blocked_search._TILE_COLUMNS = tile_columns or columns
    try:
        yield
    finally:
        blocked_search.flat_metric, blocked_search._TILE_COLUMNS = flat_metric, columns


def _numpy_tiles(retriever, queries):
    with _numpy_route():
        return retriever.kneighbors(queries)


def _full_rows(retriever, queries):
    """``retriever.kneighbors`` by the untiled route: one tile wider than the database."""
    with _numpy_route(2**62):
        return retriever.kneighbors(queries)


def _faiss_search(index, queries, k, metric):
    if metric == "cosine":
        similarities, indices = index.search(normalize(queries), k)
        return 1 - similarities, indices
    squared, indices = index.search(queries, k)
    return np.sqrt(np.maximum(squared, 0)), indices


def _fit_memory(metric, database):
    """Bytes a fitted ImageRetriever holds once the caller drops its database (tracemalloc)."""
    tracemalloc.start()
    try:
        given = database.copy()
        retriever = ImageRetriever(metric=metric).fit(given)
        del given
        kept, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del retriever
    return kept


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-database", type=int, default=100_000)
    parser.add_argument("--n-features", type=int, default=512)
    parser.add_argument("--n-queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--metric", choices=["cosine", "euclidean"], default="cosine")
    parser.add_argument("--threads", type=int, default=None, help="BLAS and OpenMP threads")
    parser.add_argument("--skip-full-rows", action="store_true", help="the slowest route")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-sklearn", action="store_true", help="its brute force is slow")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    database = _clustered(args.n_database, args.n_features, rng)
    queries = _clustered(args.n_queries, args.n_features, rng)

    if args.threads is not None:
        threadpool_limits(args.threads)
        if faiss is not None:
            faiss.omp_set_num_threads(args.threads)
    metric = args.metric
    ours = ImageRetriever(n_neighbors=args.k, metric=metric)
    fit_ours, _ = _timed(lambda: ours.fit(database))
    methods = {
        "skretrieval ImageRetriever": (fit_ours, lambda: ours.kneighbors(queries)),
        "skretrieval, numpy tiles (before)": (fit_ours, lambda: _numpy_tiles(ours, queries)),
    }
    if not args.skip_full_rows:
        methods["skretrieval, numpy full rows"] = (fit_ours, lambda: _full_rows(ours, queries))
    if faiss is not None:
        flat = faiss.IndexFlatIP if metric == "cosine" else faiss.IndexFlatL2
        index = flat(args.n_features)
        added = normalize(database) if metric == "cosine" else database
        fit_faiss, _ = _timed(lambda: index.add(added))
        methods[f"faiss {flat.__name__}"] = (
            fit_faiss,
            lambda: _faiss_search(index, queries, args.k, metric),
        )
    if not args.skip_sklearn:
        theirs = NearestNeighbors(n_neighbors=args.k, metric=metric, algorithm="brute")
        fit_theirs, _ = _timed(lambda: theirs.fit(database))
        methods["sklearn NearestNeighbors (brute)"] = (
            fit_theirs,
            lambda: theirs.kneighbors(queries),
        )

    # Round-robin over the methods so that none gets a systematically warmer or quieter machine.
    times = {name: [] for name in methods}
    results = {}
    for _ in range(args.repeats):
        for name, (_, search) in methods.items():
            elapsed, results[name] = _timed(search)
            times[name].append(elapsed)

    threads = "all" if args.threads is None else args.threads
    print(
        f"database {args.n_database} x {args.n_features} float32, {args.n_queries} queries, "
        f"k={args.k}, {metric}, threads: {threads}, median of {args.repeats}"
    )
    print(f"{'':36s}{'fit (s)':>9s}{'search (s)':>12s}{'queries/s':>11s}{'same top-k':>12s}")
    reference_distances, reference_indices = results["skretrieval ImageRetriever"]
    before = results["skretrieval, numpy tiles (before)"][1]
    print(f"identical neighbour lists (order included) to the numpy route: "
          f"{np.mean(np.all(before == reference_indices, axis=1)):.4f} of the queries")
    for name, (fit_time, _) in methods.items():
        search = float(np.median(times[name]))
        distances, indices = results[name]
        same = np.mean(np.sort(indices, axis=1) == np.sort(reference_indices, axis=1))
        gap = np.abs(np.asarray(distances, dtype=np.float64) - reference_distances).max()
        print(
            f"{name:36s}{fit_time:9.3f}{search:12.3f}{args.n_queries / search:11.0f}"
            f"{same:12.4f}   (max distance gap {gap:.1e}; runs "
            + ", ".join(f"{t:.2f}" for t in times[name])
            + ")"
        )
    if faiss is not None:
        ratio = np.median(times["skretrieval ImageRetriever"]) / np.median(
            times[f"faiss {flat.__name__}"]
        )
        print(f"ImageRetriever / faiss: {ratio:.3f}")
    kept = _fit_memory(metric, database)
    print(f"fit keeps {kept / 2**20:.1f} MiB ({kept / database.nbytes:.2f}x the database)")


if __name__ == "__main__":
    main()
