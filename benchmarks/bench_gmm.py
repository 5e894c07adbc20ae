"""Distances between Gaussian mixtures: skretrieval's MW2 against POT.

Two tables.

1. Search cost. ``--n-queries`` query mixtures against each of the ``--n-database`` sizes of
   database, ``--n-components`` full-covariance components in ``--dim`` dimensions.
   skretrieval's ``"wasserstein"`` kernel (``prepare`` once on the database, then ``pairwise``
   on the query block, as ``ImageRetriever`` does) against POT's ``ot.gmm.gmm_ot_loss`` called
   once per pair of mixtures in a Python loop, on ``--n-pot-pairs`` pairs. Both are timed in
   this process, interleaved: each of the ``--repeats`` repetitions times skretrieval on all
   pairs, then POT on its pairs, so that the two timings of a repetition see the same load.
   The table gives the median time per pair of each, and the median, lowest and highest of the
   per-repetition ratios. POT's values on its pairs are checked against ours (POT returns
   MW2^2, we return MW2).
2. Mixtures against raw local features. Two images, each a synthetic clustered cloud of
   ``n`` local features (``--n-local``): fitting ``sklearn.mixture.GaussianMixture`` on each
   cloud (reported separately), MW2 between the two mixtures, and the exact ``ot.emd2``
   between the raw clouds (uniform weights, squared Euclidean cost).

    python benchmarks/bench_gmm.py --skip-local
"""

import argparse
import time

import numpy as np
import ot
from sklearn.mixture import GaussianMixture

from skretrieval.descriptors import GaussianMixtures
from skretrieval.geometry import get_kernel


def _random_mixtures(rng, n, n_components, d):
    weights = rng.dirichlet(np.full(n_components, 2.0), size=n)
    means = 3.0 * rng.standard_normal((n, n_components, d))
    A = rng.standard_normal((n, n_components, d, 2 * d))
    covariances = A @ A.swapaxes(-1, -2) / (2 * d) + 1e-3 * np.eye(d)
    return GaussianMixtures(weights, means, covariances)


def _clustered_cloud(rng, n_points, d, n_clusters=8):
    centres = 4.0 * rng.standard_normal((n_clusters, d))
    labels = rng.integers(0, n_clusters, size=n_points)
    scales = rng.uniform(0.3, 1.5, size=(n_clusters, d))
    return centres[labels] + scales[labels] * rng.standard_normal((n_points, d))


def _timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def _pot_losses(queries, database, pairs):
    return [
        ot.gmm.gmm_ot_loss(
            queries.means[i],
            database.means[j],
            queries.covariances[i],
            database.covariances[j],
            queries.weights[i],
            database.weights[j],
        )
        for i, j in pairs
    ]


def _search(kernel, queries, database_state):
    return kernel.pairwise(kernel.prepare(queries), database_state)


def search_table(args, rng):
    print(
        f"\nMW2, {args.n_queries} query mixture(s) x n database mixtures, K={args.n_components}, "
        f"d={args.dim}, full covariances; {args.repeats} interleaved repetitions, medians"
    )
    print(
        f"{'n database':>10} {'prepare (s)':>12} {'ours (ms/pair)':>15} {'POT (ms/pair)':>14} "
        f"{'POT / ours':>11} {'(min - max)':>14} {'max |error|':>12}"
    )
    queries = _random_mixtures(rng, args.n_queries, args.n_components, args.dim)
    for n_database in args.n_database:
        database = _random_mixtures(rng, n_database, args.n_components, args.dim)
        kernel = get_kernel("wasserstein", database)
        database_state, prepare_time = _timed(kernel.prepare, database)
        n_pairs = args.n_queries * n_database
        pairs = [(i % args.n_queries, (7 * i) % n_database) for i in range(args.n_pot_pairs)]
        ours_times, pot_times = [], []
        for _ in range(args.repeats):
            ours, ours_time = _timed(_search, kernel, queries, database_state)
            pot_values, pot_time = _timed(_pot_losses, queries, database, pairs)
            ours_times.append(ours_time / n_pairs)
            pot_times.append(pot_time / len(pairs))
        ours_times, pot_times = np.array(ours_times), np.array(pot_times)
        ratios = pot_times / ours_times
        error = np.max(np.abs(np.array([ours[i, j] for i, j in pairs]) - np.sqrt(pot_values)))
        print(
            f"{n_database:>10} {prepare_time:>12.2f} {1e3 * np.median(ours_times):>15.3f} "
            f"{1e3 * np.median(pot_times):>14.2f} {np.median(ratios):>10.1f}x "
            f"{f'({ratios.min():.1f} - {ratios.max():.1f})':>14} {error:>12.1e}"
        )


def local_features_table(args, rng):
    print(
        f"\nTwo images: MW2 of {args.n_components}-component mixtures vs exact OT between the "
        f"raw local features (d={args.dim})"
    )
    header = (
        f"{'n local':>8} {'GMM fit x2 (s)':>15} {'MW2 (s)':>9} {'emd2 raw (s)':>13} "
        f"{'MW2':>9} {'W2 raw':>9}"
    )
    print(header)
    kernel = get_kernel("wasserstein", _random_mixtures(rng, 1, 1, 1))
    for n_local in args.n_local:
        clouds = [_clustered_cloud(rng, n_local, args.dim) for _ in range(2)]
        start = time.perf_counter()
        models = [
            GaussianMixture(args.n_components, covariance_type="full", random_state=0).fit(cloud)
            for cloud in clouds
        ]
        fit_time = time.perf_counter() - start
        f, g = (
            GaussianMixtures(m.weights_[None], m.means_[None], m.covariances_[None]) for m in models
        )
        start = time.perf_counter()
        mw2 = kernel.pairwise(kernel.prepare(f), kernel.prepare(g))[0, 0]
        mw2_time = time.perf_counter() - start
        start = time.perf_counter()
        cost = ot.dist(clouds[0], clouds[1], metric="sqeuclidean")
        uniform = np.full(n_local, 1.0 / n_local)
        raw = np.sqrt(ot.emd2(uniform, uniform, cost, numItermax=10_000_000))
        raw_time = time.perf_counter() - start
        print(
            f"{n_local:>8} {fit_time:>15.2f} {mw2_time:>9.4f} {raw_time:>13.2f} "
            f"{mw2:>9.3f} {raw:>9.3f}"
        )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-queries", type=int, default=1)
    parser.add_argument("--n-database", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--n-components", type=int, default=8)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--n-pot-pairs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n-local", type=int, nargs="+", default=[200, 1000, 4000])
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--skip-local", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    if not args.skip_search:
        search_table(args, rng)
    if not args.skip_local:
        local_features_table(args, rng)


if __name__ == "__main__":
    main()
