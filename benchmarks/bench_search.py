"""Top-k search time: ImageRetriever against scikit-learn's brute-force NearestNeighbors.

Both search the same float32 database with cosine distance, in the same process; the script
checks that they return the same neighbours and prints the time of each and their ratio.

    python benchmarks/bench_search.py --n-database 100000 --n-features 512 --n-queries 1000
"""

import argparse
import time

import numpy as np
from sklearn.neighbors import NearestNeighbors

from skretrieval.neighbors import ImageRetriever


def _clustered(n, d, rng, n_clusters=1000):
    centres = rng.normal(size=(n_clusters, d)).astype(np.float32)
    labels = rng.integers(0, n_clusters, size=n)
    return centres[labels] + 0.5 * rng.normal(size=(n, d)).astype(np.float32)


def _best_of(repeats, function):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-database", type=int, default=100_000)
    parser.add_argument("--n-features", type=int, default=512)
    parser.add_argument("--n-queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    database = _clustered(args.n_database, args.n_features, rng)
    queries = _clustered(args.n_queries, args.n_features, rng)

    ours = ImageRetriever(n_neighbors=args.k, metric="cosine")
    theirs = NearestNeighbors(n_neighbors=args.k, metric="cosine", algorithm="brute")
    fit_ours, _ = _best_of(1, lambda: ours.fit(database))
    fit_theirs, _ = _best_of(1, lambda: theirs.fit(database))
    # Alternate the two so that neither gets a systematically warmer machine.
    search_ours, search_theirs = [], []
    for _ in range(args.repeats):
        t, (d_ours, i_ours) = _best_of(1, lambda: ours.kneighbors(queries))
        search_ours.append(t)
        t, (d_theirs, i_theirs) = _best_of(1, lambda: theirs.kneighbors(queries))
        search_theirs.append(t)

    agreement = np.mean(np.sort(i_ours, axis=1) == np.sort(i_theirs, axis=1))
    max_distance_gap = np.abs(d_ours.astype(np.float64) - d_theirs).max()
    print(
        f"database {args.n_database} x {args.n_features} float32, {args.n_queries} queries, "
        f"k={args.k}, cosine, best of {args.repeats}"
    )
    print(f"{'':34s}{'fit (s)':>10s}{'search (s)':>12s}{'queries/s':>12s}")
    for name, fit_time, search in (
        ("skretrieval ImageRetriever", fit_ours, min(search_ours)),
        ("sklearn NearestNeighbors (brute)", fit_theirs, min(search_theirs)),
    ):
        print(f"{name:34s}{fit_time:10.3f}{search:12.3f}{args.n_queries / search:12.0f}")
    print(f"speed-up of search: {min(search_theirs) / min(search_ours):.2f}x")
    print(f"same neighbours: {agreement:.4f} of entries; max distance gap {max_distance_gap:.2e}")


if __name__ == "__main__":
    main()
