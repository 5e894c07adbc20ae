"""Distributed extraction and search on a local Dask cluster, against the same work in one
process.

1. Search (run first: once torch has run in this process, numpy's searches were measured 2x
   slower there): 1,000 queries, top 10, cosine, over a 1,000,000 x 128 float32 database in
   ``--n-blocks`` blocks. The database is generated block by block on the workers (a dask
   array) and searched there by ``ImageRetriever`` fitted on the dask array; then the same
   blocks are generated in this process, concatenated, and searched by the in-memory
   retriever.
2. Extraction: a few hundred real photos (crops and rescales of scikit-image's and
   scikit-learn's sample photos, written as JPEG files to a temporary folder) are described by
   MobileNetV2 (ImageNet weights) + GeM, once with ``CNNFeatureExtractor.transform`` in this
   process and once with ``skretrieval.distributed.transform`` on the same cluster. A first,
   small job ships the estimator to the workers (and loads torch there) before the timed runs.

The cluster is a ``LocalCluster`` of 2 worker processes with one thread each, started without
dask's ``MALLOC_TRIM_THRESHOLD_`` (``--malloc-trim 65536`` restores it; see the comment in
``main``).

Wall times are the best of ``--repeats`` runs (the first included; the machine may be shared
with other work). "fit" includes generating the database: on the workers for the dask array, in
this process for the numpy one. The peak memory is that of the client process in the first
run: the growth of its resident set (``VmHWM`` from ``/proc/self/status``, reset through
``/proc/self/clear_refs`` before the step) over what was resident before the step. That counts
every allocation (torch, BLAS, dask's buffers), which tracemalloc cannot see; "n/a" where the
kernel interface is missing. The workers' memory is not counted (it is theirs).

The results are compared: descriptors (largest absolute difference), neighbours (identical
indices, largest distance difference, and whether every differing position is a tie up to
float32 rounding).

    python benchmarks/bench_distributed.py [--n-images 240] [--n-database 1000000]
"""

import os

# OpenMP threads left spinning by torch after the extraction would slow the in-memory search
# that follows; this must be set before any OpenMP runtime starts.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from _memory import measure, peak_reset_supported  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data  # noqa: E402
from sklearn.datasets import load_sample_images  # noqa: E402

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "cat", "camera"]


def _write_photos(folder, n_images, rng):
    """JPEG crops and rescales of real photos, 200 to 480 pixels on the longer side."""
    photos = [getattr(data, name)() for name in PHOTOS] + list(load_sample_images().images)
    paths = []
    for i in range(n_images):
        photo = photos[i % len(photos)]
        if photo.ndim == 2:
            photo = np.stack([photo] * 3, axis=-1)
        height, width = photo.shape[:2]
        crop_h, crop_w = int(height * rng.uniform(0.5, 1)), int(width * rng.uniform(0.5, 1))
        top, left = rng.integers(0, height - crop_h + 1), rng.integers(0, width - crop_w + 1)
        image = Image.fromarray(photo[top : top + crop_h, left : left + crop_w, :3])
        scale = rng.uniform(200, 480) / max(image.size)
        image = image.resize(
            (max(32, round(image.width * scale)), max(32, round(image.height * scale)))
        )
        path = Path(folder) / f"photo_{i:04d}.jpg"
        image.save(path, quality=90)
        paths.append(str(path))
    return paths


def _database_block(index, n_rows, n_features, n_clusters=1000):
    """Block ``index`` of a clustered, unit-norm float32 database (the same wherever made)."""
    centres = np.random.default_rng(0).standard_normal((n_clusters, n_features), np.float32)
    rng = np.random.default_rng(1 + index)
    block = centres[rng.integers(0, n_clusters, n_rows)]
    block += 0.5 * rng.standard_normal((n_rows, n_features), np.float32)
    block /= np.linalg.norm(block, axis=1, keepdims=True)
    return block


def _row(*cells):
    return "| " + " | ".join(cells) + " |"


def _mib(peak):
    return "n/a" if peak is None else f"{peak:,.0f}"


def _best(function, repeats):
    """Best wall time of ``repeats`` more runs (the machine may be shared)."""
    return min((measure(function, False)[0] for _ in range(repeats)), default=float("inf"))


def _extraction(args, client, track):
    from skretrieval.distributed import transform
    from skretrieval.extraction import CNNFeatureExtractor
    from skretrieval.pooling import GeMPooling

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        paths = _write_photos(folder, args.n_images, np.random.default_rng(0))
        extractor = CNNFeatureExtractor(
            max_size=args.max_size, pooling=GeMPooling(), verbose=False
        ).fit()
        extractor.transform(paths[:4])  # warm-up

        def in_process():
            return extractor.transform(paths)

        def on_cluster():
            return transform(
                extractor, paths, client=client, chunk_size=args.chunk_size, output="numpy"
            )

        first, peak, expected = measure(in_process, track)
        best = min(first, _best(in_process, args.repeats - 1))
        rows.append(
            _row("one process, `CNNFeatureExtractor.transform`", f"{best:.2f}", _mib(peak), "")
        )
        # The first job on the cluster ships the estimator and loads torch in the workers.
        warm, _, _ = measure(lambda: transform(extractor, paths[:8], client=client), track)
        first, peak, result = measure(on_cluster, track)
        best = min(first, _best(on_cluster, args.repeats - 1))
        difference = np.abs(result.descriptors - expected).max()
        rows.append(
            _row(
                f"LocalCluster, `distributed.transform` (chunk_size {args.chunk_size})",
                f"{best:.2f}",
                _mib(peak),
                f"first job on the cluster (8 images) {warm:.1f} s; max abs difference from "
                f"one process {difference:.1e}",
            )
        )
    print(f"extraction of {args.n_images} images: {rows}", flush=True)
    return rows


def _search(args, client, track):
    import dask
    import dask.array as da

    from skretrieval.neighbors import ImageRetriever

    n, d, k = args.n_database, args.n_features, args.k
    sizes = [len(part) for part in np.array_split(np.arange(n), args.n_blocks)]
    queries = _database_block(10_000, args.n_queries, d)
    rows = []

    def search_rows(name, make, retriever):
        fit_s, fit_peak, fitted = measure(lambda: retriever.fit(make()), track)
        first, search_peak, found = measure(lambda: fitted.kneighbors(queries), track)
        best = min(first, _best(lambda: fitted.kneighbors(queries), args.repeats - 1))
        rows.append(_row(name, f"{fit_s:.2f}", f"{best:.2f}", _mib(fit_peak), _mib(search_peak)))
        return found

    def dask_database():
        blocks = [
            da.from_delayed(
                dask.delayed(_database_block)(i, size, d), shape=(size, d), dtype=np.float32
            )
            for i, size in enumerate(sizes)
        ]
        return da.concatenate(blocks)

    def numpy_database():
        return np.concatenate([_database_block(i, size, d) for i, size in enumerate(sizes)])

    with client.as_current():
        found = search_rows(
            f"dask array in {args.n_blocks} blocks, on the LocalCluster",
            dask_database,
            ImageRetriever(n_neighbors=k),
        )
    expected = search_rows("numpy array, in this process", numpy_database, ImageRetriever(k))
    same_rows = (found[1] == expected[1]).all(axis=1)
    distance_gap = np.abs(found[0] - expected[0]).max()
    differing = found[1] != expected[1]
    # A differing position is a tie up to rounding when its two distances are that close.
    ties_only = bool(np.all(np.abs(found[0] - expected[0])[differing] <= 1e-6))
    rows.append(
        f"\nIdentical neighbour lists for {same_rows.sum()} of {len(same_rows)} queries; "
        f"largest distance difference {distance_gap:.1e}; differing positions "
        f"{int(differing.sum())}, all ties up to float32 rounding: {ties_only}."
    )
    print(f"search: {rows}", flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=240)
    parser.add_argument("--max-size", type=int, default=224)
    parser.add_argument("--chunk-size", type=int, default=16)
    parser.add_argument("--n-database", type=int, default=1_000_000)
    parser.add_argument("--n-features", type=int, default=128)
    parser.add_argument("--n-queries", type=int, default=1000)
    parser.add_argument("--n-blocks", type=int, default=8)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the best is kept")
    parser.add_argument(
        "--malloc-trim",
        type=int,
        default=None,
        help="MALLOC_TRIM_THRESHOLD_ of the workers (default: unset; dask's default is 65536)",
    )
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).parent / "results" / "bench_distributed.md"
    )
    args = parser.parse_args(argv)

    import dask
    from distributed import Client, LocalCluster

    track = peak_reset_supported()
    start = time.perf_counter()
    # dask starts workers with MALLOC_TRIM_THRESHOLD_=65536, which also turns off glibc's
    # dynamic mmap threshold: every large buffer (activations, tiles of distances) is then
    # mapped afresh, page faults included; measured 1.6x slower extraction and search.
    # --malloc-trim 65536 keeps dask's default.
    trim = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": args.malloc_trim}
    with (
        dask.config.set(trim),
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        startup = time.perf_counter() - start
        # Search first: once torch has run in this process, its numpy searches were measured
        # about 2x slower (2 cores), which would penalise the in-memory search unfairly.
        search = _search(args, client, track)
        extraction = _extraction(args, client, track)
    lines = [
        f"{os.cpu_count()} CPUs; LocalCluster of 2 worker processes x 1 thread "
        f"(MALLOC_TRIM_THRESHOLD_={args.malloc_trim or 'unset'}), started in {startup:.1f} s.",
        "",
        f"Extraction of {args.n_images} JPEG photos, MobileNetV2 (ImageNet) + GeM, max_size "
        f"{args.max_size}:",
        "",
        "| job | wall time (s), best of " + str(args.repeats) + " | client peak RSS growth "
        "(MiB), first run | notes |",
        "|---|---:|---:|---|",
        *extraction,
        "",
        f"Search: {args.n_queries:,} queries, top {args.k}, cosine, {args.n_database:,} x "
        f"{args.n_features} float32:",
        "",
        "| database | fit (s) | search (s), best of " + str(args.repeats) + " | client peak RSS "
        "growth, fit (MiB) | client peak RSS growth, first search (MiB) |",
        "|---|---:|---:|---:|---:|",
        *search,
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)


if __name__ == "__main__":
    main()
