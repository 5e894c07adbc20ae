"""SPD-matrix distances: skretrieval's batched kernels against pyriemann's distance functions.

One query against a database of SPD matrices (default 10,000 of 32x32 and of 64x64). For each
metric the script times

- ``prepare``: skretrieval's one-time work on the database (validation included), as done by
  ``ImageRetriever.fit``;
- ``per query``: skretrieval's validation, preparation and distances of one query against the
  prepared database;
- ``pyriemann loop``: pyriemann's distance function called once per pair in a Python loop, timed
  on ``--n-loop`` pairs and scaled to the whole database (the output says so);
- for the affine-invariant distance also pyriemann's own batched ``distance_riemann(DB, q)``,
  which broadcasts the query over the database, and skretrieval's approximate search
  (``metric_params={"shortlist": k}``: tangent-space shortlist, exact re-rank), with its
  recall@10 against the exact search over ``--n-recall`` queries.

It checks that both give the same distances, and prints a table of times and ratios
(pyriemann time / skretrieval per-query time).

    python benchmarks/bench_geometry.py --n-database 10000 --dims 32 64
"""

import argparse
import time

import numpy as np
from pyriemann.geometry.distance import (
    distance_kullback,
    distance_kullback_sym,
    distance_logdet,
    distance_logeuclid,
    distance_riemann,
    distance_wasserstein,
)

from skretrieval.geometry import get_kernel

PYRIEMANN = {
    "affine_invariant": distance_riemann,
    "log_euclidean": distance_logeuclid,
    "kl": distance_kullback,
    "jeffreys": distance_kullback_sym,
    "wasserstein": distance_wasserstein,
    "stein": distance_logdet,
}


def _covariances(n, d, rng, batch=1000):
    """Sample covariances of 2d Gaussian vectors each, plus a small ridge: SPD, realistic."""
    out = np.empty((n, d, d))
    for start in range(0, n, batch):
        stop = min(start + batch, n)
        A = rng.normal(size=(stop - start, d, 2 * d))
        out[start:stop] = A @ A.transpose(0, 2, 1) / (2 * d)
    out += 1e-3 * np.eye(d)
    return out


def _best_of(repeats, function):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def _bench_metric(metric, database, query, n_loop, repeats):
    kernel = get_kernel(metric, database)
    prepare_time, database_state = _best_of(
        1, lambda: kernel.prepare(kernel.validate(database, "X"))
    )

    def one_query():
        return kernel.pairwise(kernel.prepare(kernel.validate(query, "X")), database_state)[0]

    query_time, ours = _best_of(repeats, one_query)

    distance = PYRIEMANN[metric]
    q = query[0]
    subset = database[:n_loop]
    loop_subset_time, looped = _best_of(1, lambda: np.array([distance(q, d) for d in subset]))
    loop_time = loop_subset_time * len(database) / len(subset)
    np.testing.assert_allclose(ours[:n_loop], looped, rtol=1e-6, atol=1e-8)

    row = {
        "metric": metric,
        "prepare": prepare_time,
        "query": query_time,
        "loop": loop_time,
        "batched": None,
    }
    if metric == "affine_invariant":
        batched_time, batched = _best_of(repeats, lambda: distance_riemann(database, query))
        np.testing.assert_allclose(ours, batched, rtol=1e-6, atol=1e-8)
        row["batched"] = batched_time
    return row


def _bench_shortlist(database, queries, shortlist, repeats, k=10):
    """Approximate affine-invariant search: prepare time, per-query time, recall@k vs exact."""
    kernel = get_kernel("affine_invariant")
    prepare_time, database_state = _best_of(
        1, lambda: kernel.prepare(kernel.validate(database, "X"), shortlist=shortlist)
    )

    def search(query, **params):
        # As ImageRetriever does: queries get the kernel's lighter query preparation.
        prepare = kernel.prepare_queries or kernel.prepare
        query_state = prepare(kernel.validate(query, "X"), **params)
        return kernel.pairwise(query_state, database_state if params else exact_state)[0]

    query_time, _ = _best_of(repeats, lambda: search(queries[:1], shortlist=shortlist))
    exact_state = kernel.prepare(database)
    recalls = []
    for i in range(len(queries)):
        found = np.argsort(search(queries[i : i + 1], shortlist=shortlist))[:k]
        true = np.argsort(search(queries[i : i + 1]))[:k]
        recalls.append(len(set(found) & set(true)) / k)
    return prepare_time, query_time, float(np.mean(recalls))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-database", type=int, default=10_000)
    parser.add_argument("--dims", type=int, nargs="+", default=[32, 64])
    parser.add_argument(
        "--metrics",
        nargs="+",
        default=["affine_invariant", "log_euclidean", "kl", "jeffreys", "wasserstein", "stein"],
        choices=sorted(PYRIEMANN),
    )
    parser.add_argument(
        "--n-loop", type=int, default=500, help="pairs timed for the looped pyriemann baseline"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--shortlist", type=int, default=200, help="candidates of the approximate affine search"
    )
    parser.add_argument("--n-recall", type=int, default=5, help="queries for the recall@10")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    n_loop = min(args.n_loop, args.n_database)
    print(
        f"One query against {args.n_database} SPD matrices; best of {args.repeats} for "
        f"skretrieval and the batched baseline. The pyriemann loop is timed on {n_loop} pairs "
        f"and scaled to {args.n_database}."
    )
    header = (
        f"{'d':>3} {'metric':<17} {'prepare DB s':>12} {'per query s':>12} "
        f"{'pyr loop s':>11} {'x loop':>8} {'pyr batch s':>12} {'x batch':>8}"
    )
    print(header)
    print("-" * len(header))
    for d in args.dims:
        database = _covariances(args.n_database, d, rng)
        query = _covariances(1, d, rng)
        for metric in args.metrics:
            row = _bench_metric(metric, database, query, n_loop, args.repeats)
            batched = (
                f"{row['batched']:>12.4f} {row['batched'] / row['query']:>8.1f}"
                if row["batched"] is not None
                else f"{'':>12} {'':>8}"
            )
            print(
                f"{d:>3} {metric:<17} {row['prepare']:>12.4f} {row['query']:>12.4f} "
                f"{row['loop']:>11.3f} {row['loop'] / row['query']:>8.1f} {batched}",
                flush=True,
            )
            if metric == "affine_invariant" and args.shortlist:
                queries = np.concatenate([query, _covariances(args.n_recall - 1, d, rng)])
                prepare, per_query, recall = _bench_shortlist(
                    database, queries, args.shortlist, args.repeats
                )
                name = f"  shortlist={args.shortlist}"
                print(
                    f"{d:>3} {name:<17} {prepare:>12.4f} {per_query:>12.4f} {'':>11} {'':>8} "
                    f"{row['batched']:>12.4f} {row['batched'] / per_query:>8.1f}  "
                    f"recall@10 {recall:.2f} ({len(queries)} queries)",
                    flush=True,
                )


if __name__ == "__main__":
    main()
