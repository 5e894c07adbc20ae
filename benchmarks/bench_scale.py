"""Search at scale: exact top-k against product-quantised (PQ, IVF-PQ) compressed search.

A random but clustered float32 database (unit-norm rows, so cosine and Euclidean rankings agree)
is searched for the top k of each query by

- exact search: skretrieval ``ImageRetriever(metric="cosine")`` (the reference), faiss
  ``IndexFlatIP`` and scikit-learn ``NearestNeighbors(algorithm="brute", metric="cosine")``;
- skretrieval ``ProductQuantizer`` at 8, 16 and 32 bytes per vector, plain PQ and IVF-PQ.

For each method the script reports the build time (fit, training included) and the search time
separately, the memory of the searchable index (the database as the method stores it: float32
vectors, or codes; "serialized" is the whole faiss index as written to disk: codes, codebooks,
and for IVF-PQ also an 8-byte id per vector), the peak resident-memory increase of the build and
of the search, and recall@k against the reference (fraction of the exact top k found).

Peak memory is read from the kernel (``VmHWM`` in ``/proc/self/status``, reset before each step
through ``/proc/self/clear_refs``), so it includes faiss's C++ allocations, which
``tracemalloc`` cannot see; it is "n/a" where that interface is missing. It is the growth of
the resident set over what was resident before the step, input arrays excluded.

scikit-learn's brute force can be run on a subset of the queries (``--sklearn-queries``); its
search time is then scaled linearly to ``--n-queries`` and marked as such.

    python benchmarks/bench_scale.py --n-database 1000000 --n-queries 1000

The table is printed and written to ``benchmarks/results/bench_scale.md``.
"""

import os

# OpenMP threads that spin-wait make faiss many times slower on a machine shared with other
# work; this must be set before any OpenMP runtime starts.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import platform  # noqa: E402
from pathlib import Path  # noqa: E402

import faiss  # noqa: E402
import numpy as np  # noqa: E402
from _memory import measure, peak_reset_supported  # noqa: E402
from joblib import cpu_count  # noqa: E402
from sklearn.neighbors import NearestNeighbors  # noqa: E402

from skretrieval.neighbors import ImageRetriever  # noqa: E402
from skretrieval.quantization import ProductQuantizer  # noqa: E402


def _clustered_unit_vectors(n, d, rng, centres, chunk=100_000):
    """Unit-norm points around random centres, generated in float32 chunks (no float64 copy)."""
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        labels = rng.integers(0, len(centres), size=stop - start)
        block = centres[labels] + 0.5 * rng.standard_normal((stop - start, d), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start:stop] = block
    return out


def _recall(found, truth):
    """Mean fraction of the exact top k found in the top k (k-recall@k)."""
    hits = (found[:, :, None] == truth[:, None, :]).any(axis=2).sum(axis=1)
    return float(np.mean(hits) / truth.shape[1])


def _nearest_found(found, truth):
    """Fraction of queries whose exact nearest neighbour is in the top k (Jegou et al.'s R@k)."""
    return float(np.mean((found == truth[:, :1]).any(axis=1)))


def _arrays_nbytes(*objects):
    return sum(o.nbytes for o in objects if isinstance(o, np.ndarray))


def _format_bytes(n):
    return f"{n / 2**20:,.1f} MiB" if n >= 2**20 else f"{n / 2**10:,.1f} KiB"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-database", type=int, default=1_000_000)
    parser.add_argument("--n-queries", type=int, default=1000)
    parser.add_argument("--n-features", type=int, default=128)
    parser.add_argument("--n-clusters", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument(
        "--sklearn-queries",
        type=int,
        default=None,
        help="queries given to scikit-learn's brute force (default: all); time is scaled",
    )
    parser.add_argument("--bytes", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--n-lists", type=int, default=1024)
    parser.add_argument("--n-probe", type=int, default=16)
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).parent / "results" / "bench_scale.md"
    )
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((args.n_clusters, args.n_features), dtype=np.float32)
    database = _clustered_unit_vectors(args.n_database, args.n_features, rng, centres)
    queries = _clustered_unit_vectors(args.n_queries, args.n_features, rng, centres)
    n_sklearn = min(args.sklearn_queries or args.n_queries, args.n_queries)
    track = peak_reset_supported()
    k = args.k
    float_bytes = database.nbytes
    rows = []

    def record(name, fit, search, index_bytes, serialized, indices, n_searched=args.n_queries):
        fit_s, fit_peak, _ = fit
        search_s, search_peak, _ = search
        scale = args.n_queries / n_searched
        rows.append(
            {
                "method": name,
                "fit": fit_s,
                "search": search_s * scale,
                "scaled": scale != 1,
                "index": index_bytes,
                "serialized": serialized,
                "fit_peak": fit_peak,
                "search_peak": search_peak,
                "recall": _recall(indices, truth[:n_searched]),
                "nearest": _nearest_found(indices, truth[:n_searched]),
            }
        )
        print(f"  done: {name} (fit {fit_s:.1f} s, search {search_s:.1f} s)", flush=True)

    print(
        f"database {args.n_database:,} x {args.n_features} float32, {args.n_queries:,} queries, "
        f"k={k}; {cpu_count()} CPUs",
        flush=True,
    )

    # Each method runs in its own function, so that its index is freed before the next one.
    fit, search, index_bytes, serialized = _exact_retriever(database, queries, k, track)
    truth = search[2][1]
    record("skretrieval ImageRetriever (exact)", fit, search, index_bytes, serialized, truth)
    fit, search, index_bytes, serialized = _exact_faiss(database, queries, k, track)
    record("faiss IndexFlatIP (exact)", fit, search, index_bytes, serialized, search[2][1])
    fit, search, index_bytes, serialized = _exact_sklearn(database, queries[:n_sklearn], k, track)
    record(
        "sklearn NearestNeighbors brute (exact)",
        fit,
        search,
        index_bytes,
        serialized,
        search[2][1],
        n_searched=n_sklearn,
    )
    for n_bytes in args.bytes:
        for n_lists in (None, args.n_lists):
            model = ProductQuantizer(
                n_subquantizers=n_bytes,
                n_bits=8,
                n_lists=n_lists,
                n_probe=args.n_probe,
                random_state=0,
            )
            fit, search, index_bytes, serialized = _quantized(model, database, queries, k, track)
            name = (
                f"PQ {n_bytes} B"
                if n_lists is None
                else f"IVF{n_lists}-PQ {n_bytes} B, n_probe={args.n_probe}"
            )
            record(name, fit, search, index_bytes, serialized, search[2][1])

    table = _markdown(rows, args, float_bytes, n_sklearn, track)
    print()
    print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(table)
    print(f"written to {args.output}")


def _exact_retriever(database, queries, k, track):
    retriever = ImageRetriever(n_neighbors=k, metric="cosine")
    fit = measure(lambda: retriever.fit(database), track)
    search = measure(lambda: retriever.kneighbors(queries), track)
    # The retriever keeps the database and its normalised copy (the same array if already so).
    stored = {id(a): a for a in (retriever._fit_X, retriever._fit_state)}
    return fit, search, _arrays_nbytes(*stored.values()), None


def _exact_faiss(database, queries, k, track):
    index = faiss.IndexFlatIP(database.shape[1])
    fit = measure(lambda: index.add(database), track)
    search = measure(lambda: index.search(queries, k), track)
    return fit, search, index.ntotal * index.code_size, None


def _exact_sklearn(database, queries, k, track):
    brute = NearestNeighbors(n_neighbors=k, algorithm="brute", metric="cosine")
    fit = measure(lambda: brute.fit(database), track)
    search = measure(lambda: brute.kneighbors(queries), track)
    return fit, search, brute._fit_X.nbytes, None


def _quantized(model, database, queries, k, track):
    fit = measure(lambda: model.fit(database), track)
    search = measure(lambda: model.kneighbors(queries, k), track)
    return fit, search, model.codes_.nbytes, faiss.serialize_index(model._index).nbytes


def _markdown(rows, args, float_bytes, n_sklearn, track):
    def peak(value):
        return "n/a" if value is None else f"{value:,.0f}"

    lines = [
        f"Database {args.n_database:,} x {args.n_features} float32 (unit-norm, "
        f"{args.n_clusters} Gaussian clusters; {_format_bytes(float_bytes)} as float32), "
        f"{args.n_queries:,} queries, top {args.k}. Machine: {platform.machine()}, "
        f"{cpu_count()} CPUs, faiss {faiss.__version__}. Recall@{args.k}: fraction of the "
        f"exact top {args.k} (skretrieval's exact search) found in the top {args.k}; NN in top "
        f"{args.k}: fraction of queries whose exact nearest neighbour is in the top {args.k} "
        f"(the recall@R of Jegou et al.). PQ codes are 8 bits per sub-vector; IVF-PQ uses "
        f"{args.n_lists} lists and visits {args.n_probe}.",
        "",
        f"| method | fit (s) | search (s) | queries/s | index | bytes/vector "
        f"| serialized | peak RSS fit (MiB) | peak RSS search (MiB) | recall@{args.k} "
        f"| NN in top {args.k} |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        mark = "*" if row["scaled"] else ""
        serialized = "" if row["serialized"] is None else _format_bytes(row["serialized"])
        lines.append(
            f"| {row['method']} | {row['fit']:.2f} | {row['search']:.2f}{mark} "
            f"| {args.n_queries / row['search']:,.0f}{mark} | {_format_bytes(row['index'])} "
            f"| {row['index'] / args.n_database:g} | {serialized} | {peak(row['fit_peak'])} "
            f"| {peak(row['search_peak'])} | {row['recall']:.3f} | {row['nearest']:.3f} |"
        )
    lines.append("")
    if n_sklearn < args.n_queries:
        lines.append(
            f"\\* scikit-learn searched {n_sklearn:,} of the {args.n_queries:,} queries; its "
            "time is scaled linearly and its recall is over those queries."
        )
        lines.append("")
    lines.append(
        "Index: the searchable database as stored (float32 vectors or uint8 codes; "
        "ImageRetriever keeps, for cosine, only the L2-normalised copy). "
        "Serialized: the whole faiss index (codes, codebooks, coarse centroids and, for IVF, an "
        "int64 id per vector). ProductQuantizer also keeps a copy of the codes in `codes_`. "
        "Fit times include k-means training (faiss subsamples at most 256 points per "
        "centroid). Peak RSS: growth of the resident set during the step "
        + (
            "(VmHWM reset via /proc/self/clear_refs; includes C++ allocations, unlike tracemalloc)."
            if track
            else "(not available on this system)."
        )
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
