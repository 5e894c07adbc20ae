"""The ``skretrieval`` command line: ``demo``, ``index`` and ``search``.

``skretrieval demo``
    Builds a Copydays-style benchmark from real photos shipped with scikit-image and
    scikit-learn, describes it with a pretrained MobileNetV2 and several poolings, prints a mAP
    table and writes a PNG grid of queries and their top results.
``skretrieval index DIR -o INDEX``
    Describes every image under a folder and saves a fitted search index.
``skretrieval search INDEX IMAGE -k N``
    Prints the N database images closest to IMAGE, with their distances.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import joblib
import numpy as np

import skretrieval

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


def _save_atomically(obj, path):
    """Write with joblib to a temporary file beside ``path``, then rename it into place.

    A crash mid-write leaves the previous index (or nothing), never a truncated file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(handle)
    try:
        joblib.dump(obj, temporary)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _index(args):
    from skretrieval.datasets import list_images
    from skretrieval.neighbors import ImageRetriever

    paths = list_images(args.folder)
    if not paths:
        raise SystemExit(f"error: no images found under {args.folder}")
    extractor = _make_extractor(args, pooling=_make_pooling(args.pooling)).fit()
    descriptors = extractor.transform(paths)
    retriever = ImageRetriever(metric="cosine").fit(descriptors)
    index = {
        "skretrieval_version": skretrieval.__version__,
        "extractor": extractor,
        "retriever": retriever,
        "paths": [str(p) for p in paths],
    }
    _save_atomically(index, args.output)
    print(f"Indexed {len(paths)} images from {args.folder} into {args.output}")
    return 0


def _search(args):
    index = joblib.load(args.index)
    if not isinstance(index, dict) or "retriever" not in index:
        raise SystemExit(f"error: {args.index} is not an index written by 'skretrieval index'")
    if index.get("skretrieval_version") != skretrieval.__version__:
        print(
            f"warning: {args.index} was written by skretrieval "
            f"{index.get('skretrieval_version')}, this is {skretrieval.__version__}",
            file=sys.stderr,
        )
    extractor, retriever, paths = index["extractor"], index["retriever"], index["paths"]
    extractor.set_params(progress=False)
    k = min(args.k, len(paths))
    distances, indices = retriever.kneighbors(extractor.transform([args.image]), n_neighbors=k)
    for rank, (distance, position) in enumerate(zip(distances[0], indices[0], strict=True)):
        print(f"{rank + 1:4d}  {distance:.4f}  {paths[position]}")
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
    return parser


def main(argv=None):
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    return args.run(args)
