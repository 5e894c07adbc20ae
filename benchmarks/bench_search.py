"""Exact top-k search time: ImageRetriever against scikit-learn brute force and faiss.

All search the same float32 database with cosine distance (faiss: inner product of unit
vectors, ``IndexFlatIP``), in the same process. ImageRetriever runs twice: with its tiled top-k
search (the default) and with full rows of distances (the route before tiling, forced by
making a tile wider than the database). The script checks that all return the same neighbours
and prints the median time of each.

    python benchmarks/bench_search.py --n-database 100000 --n-features 512 --n-queries 1000
"""

import os

# faiss (OpenMP) threads spin while waiting unless told otherwise, which steals the CPU from
# whatever runs next; set before faiss is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from sklearn.neighbors import NearestNeighbors  # noqa: E402
from sklearn.preprocessing import normalize  # noqa: E402

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


def _full_rows(retriever, queries):
    """``retriever.kneighbors`` by the untiled route: one tile wider than the database."""
    tile_columns = blocked_search._TILE_COLUMNS
    blocked_search._TILE_COLUMNS = 2**62
    try:
        return retriever.kneighbors(queries)
    finally:
        blocked_search._TILE_COLUMNS = tile_columns


def _faiss_search(index, queries, k):
    similarities, indices = index.search(normalize(queries), k)
    return 1 - similarities, indices


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-database", type=int, default=100_000)
    parser.add_argument("--n-features", type=int, default=512)
    parser.add_argument("--n-queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-sklearn", action="store_true", help="its brute force is slow")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    database = _clustered(args.n_database, args.n_features, rng)
    queries = _clustered(args.n_queries, args.n_features, rng)

    ours = ImageRetriever(n_neighbors=args.k, metric="cosine")
    fit_ours, _ = _timed(lambda: ours.fit(database))
    methods = {
        "skretrieval ImageRetriever (tiled)": (fit_ours, lambda: ours.kneighbors(queries)),
        "skretrieval, full rows (before)": (fit_ours, lambda: _full_rows(ours, queries)),
    }
    if faiss is not None:
        index = faiss.IndexFlatIP(args.n_features)
        fit_faiss, _ = _timed(lambda: index.add(normalize(database)))
        methods["faiss IndexFlatIP"] = (fit_faiss, lambda: _faiss_search(index, queries, args.k))
    if not args.skip_sklearn:
        theirs = NearestNeighbors(n_neighbors=args.k, metric="cosine", algorithm="brute")
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

    print(
        f"database {args.n_database} x {args.n_features} float32, {args.n_queries} queries, "
        f"k={args.k}, cosine, median of {args.repeats}"
    )
    print(f"{'':36s}{'fit (s)':>9s}{'search (s)':>12s}{'queries/s':>11s}{'same top-k':>12s}")
    reference_distances, reference_indices = results["skretrieval ImageRetriever (tiled)"]
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


if __name__ == "__main__":
    main()
