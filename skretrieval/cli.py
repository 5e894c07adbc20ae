"""The ``skretrieval`` command line: ``demo``, ``index``, ``search`` and ``evaluate``.

``skretrieval demo``
    Builds a Copydays-style benchmark from real photos shipped with scikit-image and
    scikit-learn, describes it with a pretrained MobileNetV2 and several poolings, prints a mAP
    table and writes a PNG grid of queries and their top results.
``skretrieval index DIR -o INDEX``
    Describes every image under a folder and saves a fitted search index.
``skretrieval search INDEX IMAGE -k N``
    Prints the N database images closest to IMAGE, with their distances.
``skretrieval evaluate DATASET --root DIR``
    Scores a pipeline (backbone, pooling, whitening, metric) on a retrieval benchmark read from
    disk (revisited Oxford/Paris, Oxford5k/Paris6k, Holidays, UKBench or an image folder),
    optionally writing a CSV and caching the descriptors.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import skretrieval
from skretrieval.persistence import FileFormatError, atomic_write, load, save

POOLINGS = ("spoc", "mac", "gem", "rmac")
_POOLING_NAMES = {"spoc": "SPoC", "mac": "MAC", "gem": "GeM", "rmac": "R-MAC"}


def _make_pooling(name):
    from skretrieval.pooling import RMAC, GeMPooling, MaxPooling, SumPooling

    return {"spoc": SumPooling, "mac": MaxPooling, "gem": GeMPooling, "rmac": RMAC}[name]()


def _make_extractor(args, pooling=None):
    from skretrieval.extraction import CNNFeatureExtractor

    return CNNFeatureExtractor(
        backbone=args.backbone,
        weights=None if args.weights == "none" else args.weights,
        max_size=args.max_size,
        batch_size=args.batch_size,
        device=args.device,
        pooling=pooling,
        progress=not args.quiet,
    )


# --- demo -----------------------------------------------------------------------------------


def _leave_one_out(vectors, labels):
    """Each item queries all others; returns (mAP, P@1, distances, indices) of the full ranking."""
    from skretrieval.metrics import mean_average_precision, precision_at_k
    from skretrieval.neighbors import ImageRetriever

    retriever = ImageRetriever().fit(vectors, labels)
    distances, indices = retriever.kneighbors(n_neighbors=len(labels) - 1)
    relevant = labels[indices] == labels[:, None]
    return (
        mean_average_precision(relevant, -distances),
        precision_at_k(relevant, -distances, 1),
        distances,
        indices,
    )


def _demo(args):
    from skretrieval.datasets import make_copydays
    from skretrieval.plotting import plot_retrieval_grid
    from skretrieval.whitening import PCAWhitening

    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    data = make_copydays(max_size=args.max_size, random_state=args.random_state)
    images, labels = list(data.images), np.asarray(data.target)
    n_originals = int(np.sum(data.is_original))
    print(
        f"Copydays-style benchmark: {n_originals} real photos and "
        f"{len(images) - n_originals} transformed copies (crops, rotations, "
        "rescales, JPEG, colour changes, combined attacks). Each image queries all the others; "
        "the relevant ones are the other versions of the same photo."
    )

    extractor = _make_extractor(args).fit()
    start = time.perf_counter()
    maps = extractor.transform(images)
    extraction_time = time.perf_counter() - start
    print(
        f"{args.backbone} feature maps of {len(images)} images in {extraction_time:.1f} s "
        f"({len(images) / extraction_time:.1f} images/s on {extractor.device_})."
    )

    # Whitening must be learned on images other than those searched: split the photos in two
    # halves, learn on one, search within the other, and average the two.
    photos = np.unique(labels)
    half = np.isin(labels, photos[::2])
    rows, best = [], None
    for pooling_name in POOLINGS:
        name = _POOLING_NAMES[pooling_name]
        start = time.perf_counter()
        vectors = _make_pooling(pooling_name).fit_transform(maps)
        score, p1, distances, indices = _leave_one_out(vectors, labels)
        rows.append((name, score, p1, time.perf_counter() - start))
        if best is None or score > best[1]:
            best = (name, score, distances, indices)

        start = time.perf_counter()
        halves = []
        for searched in (half, ~half):
            whitening = PCAWhitening(n_components=32).fit(vectors[~searched])
            halves.append(_leave_one_out(whitening.transform(vectors[searched]), labels[searched]))
        rows.append(
            (
                name + " + PCA whitening",
                np.mean([h[0] for h in halves]),
                np.mean([h[1] for h in halves]),
                time.perf_counter() - start,
            )
        )

    print()
    print(f"{'pipeline':28s}{'mAP':>8s}{'P@1':>8s}{'time (s)':>10s}")
    for name, score, p1, elapsed in rows:
        print(f"{name:28s}{score:8.3f}{p1:8.3f}{elapsed:10.3f}")
    print(
        "(PCA whitening, 32 components, is learned on the other half of the photos: about 45 "
        "images are far too few to learn it, which is why it loses here.)"
    )

    name, score, distances, indices = best
    queries = np.flatnonzero(data.is_original)
    k = 6
    top = indices[queries, :k]
    figure = plot_retrieval_grid(
        [images[i] for i in queries],
        images,
        top,
        distances=distances[queries, :k],
        relevant=labels[top] == labels[queries, None],
        query_titles=[str(data.target_names[labels[i]]) for i in queries],
    )
    figure.suptitle(
        f"{args.backbone} + {name}: leave-one-out mAP {score:.3f} "
        "(green frame: a version of the query photo)",
        y=1.0,
        va="bottom",
    )
    grid_path = output / "retrieval_grid.png"
    figure.savefig(grid_path, dpi=72, bbox_inches="tight")
    print(f"\nBest pipeline: {name} (mAP {score:.3f}). Result grid written to {grid_path}")
    return 0


# --- index and search -----------------------------------------------------------------------


def _index(args):
    from skretrieval.datasets import list_images
    from skretrieval.neighbors import ImageRetriever

    paths = list_images(args.folder)
    if not paths:
        raise SystemExit(f"error: no images found under {args.folder}")
    extractor = _make_extractor(args, pooling=_make_pooling(args.pooling)).fit()
    descriptors = extractor.transform(paths)
    retriever = ImageRetriever(metric="cosine").fit(descriptors)
    index = {"extractor": extractor, "retriever": retriever, "paths": [str(p) for p in paths]}
    # Atomic and versioned: a crash never leaves a half-written index.
    save(index, args.output)
    print(f"Indexed {len(paths)} images from {args.folder} into {args.output}")
    return 0


def _search(args):
    try:
        index = load(args.index)  # warns when written by another skretrieval version
    except (FileNotFoundError, FileFormatError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    if not isinstance(index, dict) or "retriever" not in index:
        raise SystemExit(f"error: {args.index} is not an index written by 'skretrieval index'")
    extractor, retriever, paths = index["extractor"], index["retriever"], index["paths"]
    extractor.set_params(progress=False)
    k = min(args.k, len(paths))
    distances, indices = retriever.kneighbors(extractor.transform([args.image]), n_neighbors=k)
    for rank, (distance, position) in enumerate(zip(distances[0], indices[0], strict=True)):
        print(f"{rank + 1:4d}  {distance:.4f}  {paths[position]}")
    return 0


# --- evaluate -------------------------------------------------------------------------------

DATASETS = ("roxford5k", "rparis6k", "oxford5k", "paris6k", "holidays", "ukbench", "folder")
_PRECISION_KS = (1, 5, 10)


def _load_dataset(name, root, allow_missing):
    """The benchmark as a bunch with ``images``, ``queries``, ``query_boxes``, ``gnd``, ...."""
    from sklearn.utils import Bunch

    from skretrieval import datasets

    root = Path(root)
    if not root.is_dir():
        raise SystemExit(f"error: --root {str(root)!r} is not an existing folder")
    if name in ("roxford5k", "rparis6k", "oxford5k", "paris6k"):
        # Accept the benchmark's own folder as well as the folder holding it.
        if root.name == name and not (root / name).is_dir():
            root = root.parent
        if name.startswith("r"):
            return datasets.load_revisited(root, name, allow_missing=allow_missing)
        return datasets.load_oxford_paris(root, name, allow_missing=allow_missing)
    if name == "holidays":
        return datasets.load_holidays(root, allow_missing=allow_missing)
    if name == "ukbench":
        return datasets.load_ukbench(root, allow_missing=allow_missing)
    # A class-per-folder tree: each image queries all the others, itself excluded.
    folder = datasets.load_image_folder(root)
    target = folder.target
    gnd = []
    for i, label in enumerate(target):
        same = np.flatnonzero(target == label)
        gnd.append({"ok": same[same != i], "junk": np.array([i])})
    return Bunch(
        name="folder",
        images=folder.filenames,
        queries=folder.filenames,
        query_boxes=None,
        gnd=gnd,
        positive_keys=("ok",),
        target=target,
        query_target=target,
    )


def _cache_path(args, role, paths, boxes):
    """Cache file of the pooled descriptors of one image list under one pipeline."""
    import hashlib
    import json

    key = {
        "dataset": args.dataset,
        "role": role,
        "backbone": args.backbone,
        "weights": args.weights,
        "max_size": args.max_size,
        "pooling": args.pooling,
        "images": [str(path) for path in paths],
        "boxes": None if boxes is None else np.asarray(boxes, dtype=np.float64).tolist(),
    }
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]
    name = f"{args.dataset}-{role}-{args.backbone}-{args.pooling}-{args.max_size}-{digest}.npy"
    return Path(args.cache) / name


def _descriptors(args, extractor, role, paths, boxes, load_images):
    """Pooled descriptors of ``paths``, read from the cache when it holds them."""
    # Random weights differ from run to run: nothing to reuse.
    cached = args.cache is not None and args.weights != "none"
    path = _cache_path(args, role, paths, boxes) if cached else None
    if path is not None and path.is_file():
        descriptors = np.load(path)
        if descriptors.ndim == 2 and descriptors.shape[0] == len(paths):
            print(f"{role}: {len(paths)} descriptors read from the cache {path}")
            return descriptors
    model = extractor()
    start = time.perf_counter()
    descriptors = model.transform(load_images())
    elapsed = time.perf_counter() - start
    print(f"{role}: {len(paths)} images described in {elapsed:.1f} s")
    if path is not None:
        with atomic_write(path) as file:
            np.save(file, np.asarray(descriptors))
    return descriptors


def _ukbench_score(indices, target, query_target):
    """UKBench N-S score: mean number of the query's group among its top 4 (itself counted)."""
    top = indices[:, :4]
    return float(np.mean(np.sum(target[top] == query_target[:, None], axis=1)))


# Queries ranked at once, outside the revisited protocol: bounds the (queries x database)
# matrices (scores, ranks, masks and the metrics' sorts) on large benchmarks such as UKBench.
_BLOCK_ELEMENTS = 2**22


def _score(data, retriever, queries):
    """Rank the database for each query and score; rows: easy/medium/hard, or one ("all")."""
    from skretrieval.datasets import ground_truth_masks
    from skretrieval.metrics import evaluate_revisited, mean_average_precision, precision_at_k

    n_database = len(data.images)
    if data.positive_keys == ("easy", "hard"):
        _, indices = retriever.kneighbors(queries, n_neighbors=n_database)
        results = evaluate_revisited(indices, data.gnd, ks=_PRECISION_KS)
        return [
            {
                "protocol": setting,
                "n_queries": results[setting]["n_queries"],
                "map": results[setting]["map"],
                **{f"mp@{k}": results[setting]["mp@k"][k] for k in _PRECISION_KS},
            }
            for setting in ("easy", "medium", "hard")
        ]

    # Blocks of queries; each metric is a mean over the queries with a positive, so the block
    # means are combined weighted by their numbers of such queries.
    ks = [k for k in _PRECISION_KS if k <= n_database]
    totals = dict.fromkeys(["map", "ns_score", *ks], 0.0)
    n_evaluated = 0
    block = max(1, _BLOCK_ELEMENTS // n_database)
    for start in range(0, len(queries), block):
        stop = min(start + block, len(queries))
        distances, indices = retriever.kneighbors(queries[start:stop], n_neighbors=n_database)
        if data.name == "ukbench":
            query_target = data.query_target[start:stop]
            totals["ns_score"] += _ukbench_score(indices, data.target, query_target) * (
                stop - start
            )
        relevant, junk = ground_truth_masks(
            data.gnd[start:stop], n_database, positive_keys=data.positive_keys
        )
        n_block = int(np.sum(relevant.any(axis=1)))
        if n_block == 0:
            continue
        scores = np.empty(indices.shape, dtype=np.float64)
        np.put_along_axis(scores, indices, -distances, axis=1)
        # The reference AP of Oxford/Paris, also that of the Holidays evaluation script.
        totals["map"] += n_block * mean_average_precision(
            relevant, scores, junk=junk, interpolation="trapezoid"
        )
        for k in ks:
            totals[k] += n_block * precision_at_k(relevant, scores, k, junk=junk)
        n_evaluated += n_block
    if n_evaluated == 0:
        raise SystemExit(f"error: no query of {data.name} has a positive database image")
    row = {"protocol": "all", "n_queries": n_evaluated, "map": totals["map"] / n_evaluated}
    for k in _PRECISION_KS:
        row[f"mp@{k}"] = totals[k] / n_evaluated if k in ks else np.nan
    if data.name == "ukbench":
        row["ns_score"] = totals["ns_score"] / len(queries)
    return [row]


_CSV_COLUMNS = (
    "dataset",
    "protocol",
    "n_queries",
    "n_database",
    "map",
    "mp@1",
    "mp@5",
    "mp@10",
    "ns_score",
    "backbone",
    "weights",
    "pooling",
    "whitening",
    "metric",
    "max_size",
)


def _write_csv(rows, path):
    import csv

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=_CSV_COLUMNS, restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {key: "" if isinstance(v, float) and np.isnan(v) else v for key, v in row.items()}
            )


def _print_results(rows):
    header = f"{'protocol':10s}{'queries':>8s}{'mAP':>8s}" + "".join(
        f"{f'mP@{k}':>8s}" for k in _PRECISION_KS
    )
    ukbench = "ns_score" in rows[0]
    print(header + (f"{'N-S':>8s}" if ukbench else ""))
    for row in rows:
        line = f"{row['protocol']:10s}{row['n_queries']:8d}{row['map']:8.4f}" + "".join(
            f"{row[f'mp@{k}']:8.4f}" for k in _PRECISION_KS
        )
        print(line + (f"{row['ns_score']:8.4f}" if ukbench else ""))


def _evaluate(args):
    import warnings

    from skretrieval.datasets import MissingDatasetFilesError, crop_queries
    from skretrieval.neighbors import ImageRetriever
    from skretrieval.whitening import PCAWhitening

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            data = _load_dataset(args.dataset, args.root, args.allow_missing)
    except (MissingDatasetFilesError, FileNotFoundError, NotADirectoryError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    crops = data.query_boxes is not None
    print(
        f"{args.dataset}: {len(data.queries)} queries"
        + (" (cropped to their boxes)" if crops else "")
        + f", {len(data.images)} database images. Pipeline: {args.backbone}, "
        f"{_POOLING_NAMES[args.pooling]}, max size {args.max_size}"
        + (", PCA whitening learned on the database" if args.whitening == "pca" else "")
        + f", {args.metric} distance."
    )

    fitted = []

    def extractor():  # built only when something is not cached
        if not fitted:
            fitted.append(_make_extractor(args, pooling=_make_pooling(args.pooling)).fit())
        return fitted[0]

    database = _descriptors(
        args, extractor, "database", data.images, None, lambda: list(data.images)
    )
    if data.queries == data.images:  # leave-one-out: the queries are the database images
        queries = database
    else:
        queries = _descriptors(
            args,
            extractor,
            "queries",
            data.queries,
            data.query_boxes,
            (lambda: crop_queries(data)) if crops else (lambda: list(data.queries)),
        )
    if args.whitening == "pca":
        # Learned on the database images (no separate training set): an optimistic setting.
        whitening = PCAWhitening().fit(database)
        database, queries = whitening.transform(database), whitening.transform(queries)

    n_database = len(data.images)
    retriever = ImageRetriever(n_neighbors=n_database, metric=args.metric).fit(database)
    rows = _score(data, retriever, queries)
    print()
    _print_results(rows)
    if args.output is not None:
        settings = {
            "dataset": args.dataset,
            "n_database": n_database,
            "backbone": args.backbone,
            "weights": args.weights,
            "pooling": args.pooling,
            "whitening": args.whitening,
            "metric": args.metric,
            "max_size": args.max_size,
        }
        _write_csv([{**settings, **row} for row in rows], args.output)
        print(f"\nResults written to {args.output}")
    return 0


# --- argument parsing -----------------------------------------------------------------------


def _add_extractor_options(parser, *, max_size):
    parser.add_argument("--backbone", default="mobilenet_v2", help="torchvision model name")
    parser.add_argument(
        "--weights",
        default="imagenet",
        help="'imagenet', a state-dict file, or 'none' for random weights",
    )
    parser.add_argument("--max-size", type=int, default=max_size, help="longer image side")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda', 'mps', ...")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser():
    """The argument parser of the ``skretrieval`` command."""
    parser = argparse.ArgumentParser(
        prog="skretrieval", description="Content-based image retrieval the scikit-learn way."
    )
    parser.add_argument("--version", action="version", version=skretrieval.__version__)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="retrieval of real photos from transformed copies")
    _add_extractor_options(demo, max_size=384)
    demo.add_argument("--output", default="demo_output", help="folder for the result grid")
    demo.add_argument("--random-state", type=int, default=0)
    demo.set_defaults(run=_demo)

    index = commands.add_parser("index", help="describe a folder of images and save an index")
    index.add_argument("folder")
    index.add_argument("-o", "--output", required=True, help="index file to write")
    index.add_argument("--pooling", choices=POOLINGS, default="gem")
    _add_extractor_options(index, max_size=512)
    index.set_defaults(run=_index)

    search = commands.add_parser("search", help="rank an index's images for a query image")
    search.add_argument("index", help="index file written by 'skretrieval index'")
    search.add_argument("image", help="query image file")
    search.add_argument("-k", type=int, default=10, help="number of results")
    search.set_defaults(run=_search)

    evaluate = commands.add_parser(
        "evaluate",
        help="mAP of a pipeline on a retrieval benchmark (revisited Oxford/Paris, Holidays, ...)",
        description=(
            "Describe a benchmark's database and queries with a CNN pipeline, rank the database "
            "for each query and print mAP and mean precision at 1, 5 and 10 (easy, medium and "
            "hard for the revisited Oxford and Paris). Nothing is downloaded: --root must hold "
            "the benchmark's files (see skretrieval.datasets)."
        ),
    )
    evaluate.add_argument("dataset", choices=DATASETS, help="benchmark")
    evaluate.add_argument(
        "--root",
        required=True,
        help=(
            "for roxford5k, rparis6k, oxford5k, paris6k: the folder holding <dataset>/ (or that "
            "folder itself); for holidays, ukbench: the image folder; for folder: a "
            "class-per-folder image tree"
        ),
    )
    evaluate.add_argument("--pooling", choices=POOLINGS, default="gem")
    evaluate.add_argument(
        "--whitening",
        choices=("none", "pca"),
        default="none",
        help="'pca': PCA whitening learned on the database descriptors",
    )
    evaluate.add_argument("--metric", choices=("cosine", "euclidean"), default="cosine")
    _add_extractor_options(evaluate, max_size=1024)
    evaluate.add_argument("--output", help="CSV file for the results, one row per protocol")
    evaluate.add_argument(
        "--cache",
        help="folder keeping the pooled descriptors for later runs (not with --weights none)",
    )
    evaluate.add_argument(
        "--allow-missing",
        action="store_true",
        help="evaluate on the images present when some are missing",
    )
    evaluate.set_defaults(run=_evaluate)
    return parser


def main(argv=None):
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    return args.run(args)
