"""Re-ranking (diffusion, k-reciprocal) against query expansion and DBA: mAP and time.

Up to three datasets, each image querying all the others (leave-one-out), relevant = same
person / same photo, mAP with ``"step"`` interpolation and precision at 1:

- the ORL faces (40 people, 10 images each; see ``bench_orl.py`` for the credit and where to
  unpack them, ``--root``);
- the Copydays-style set of ``skretrieval.datasets.make_copydays`` (real photos and their
  transformed copies), as ``skretrieval demo`` builds it (``--copydays plain``);
- the harder Copydays-style set of ``bench_defaults.py`` (``hard_copydays`` in
  ``_datasets.py``: 11 photos, 9 copies each made only with the ``"strong"``, ``"extreme"`` and
  ``"occlude"`` transforms, 256 px; ``--copydays hard``). ``--copydays both`` (the default)
  runs the two Copydays-style sets, ``--no-orl`` skips the faces.

Descriptors: MobileNetV2 (ImageNet weights) feature maps, GeM pooling (p = 3), cosine distance.
Time: ``ImageRetriever.fit`` (the re-ranking graph is built there) plus ``kneighbors`` of every
query against all the others; the extraction is timed once per dataset.

    python benchmarks/bench_reranking.py [--root DIR] [--no-orl] [--copydays {plain,hard,both}]
        [--quick] [--output FILE]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from _datasets import hard_copydays

from skretrieval.datasets import load_image_folder, make_copydays
from skretrieval.extraction import CNNFeatureExtractor
from skretrieval.metrics import mean_average_precision, precision_at_k
from skretrieval.neighbors import ImageRetriever
from skretrieval.pooling import GeMPooling

DEFAULT_ROOT = Path(__file__).resolve().parent.parent / ".." / "shared" / "data" / "orl_faces"
OPTIONS = {
    "plain": {},
    "AQE, k=2": {"query_expansion": "average", "qe_neighbors": 2},
    "alpha-QE, k=3": {"query_expansion": "alpha", "qe_neighbors": 3},
    "DBA, k=2": {"dba_neighbors": 2},
    "alpha-DBA + alpha-QE, k=3": {
        "dba_neighbors": 3, "dba_alpha": 3.0, "query_expansion": "alpha", "qe_neighbors": 3,
    },
    **{
        f"diffusion, k={k}": {"rerank": "diffusion", "rerank_neighbors": k}
        for k in (5, 10, 20)
    },
    **{
        f"k-reciprocal, k1={k}, k2={k2}": {
            "rerank": "k_reciprocal", "rerank_neighbors": k, "reciprocal_expansion": k2,
        }
        for k, k2 in ((5, 2), (10, 3), (20, 6))
    },
}


def _evaluate(vectors, labels, options):
    start = time.perf_counter()
    retriever = ImageRetriever(**options).fit(vectors)
    distances, indices = retriever.kneighbors(n_neighbors=len(labels) - 1)
    seconds = time.perf_counter() - start
    relevant = labels[indices] == labels[:, None]
    return (
        mean_average_precision(relevant, -distances),
        precision_at_k(relevant, -distances, 1),
        seconds,
    )


def _describe(images, max_size):
    start = time.perf_counter()
    maps = CNNFeatureExtractor(max_size=max_size, verbose=False).fit_transform(images)
    return GeMPooling(p=3).fit_transform(maps), time.perf_counter() - start


def _table(title, vectors, labels, options):
    lines = [title, "", "| search | mAP | P@1 | fit + search (s) |", "|---|---:|---:|---:|"]
    for name, params in options.items():
        mean_ap, p_at_1, seconds = _evaluate(vectors, labels, params)
        lines.append(f"| {name} | {mean_ap:.4f} | {p_at_1:.4f} | {seconds:.3f} |")
        print(lines[-1], flush=True)
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="ORL folder")
    parser.add_argument("--no-orl", action="store_true", help="skip the ORL faces")
    parser.add_argument(
        "--copydays",
        choices=("plain", "hard", "both"),
        default="both",
        help="which Copydays-style set(s): make_copydays() or the harder set (default: both)",
    )
    parser.add_argument("--quick", action="store_true", help="plain and k=10 settings only")
    parser.add_argument("--output", type=Path, help="also write the tables to this file")
    args = parser.parse_args(argv)
    options = OPTIONS
    if args.quick:
        options = {n: o for n, o in OPTIONS.items() if n == "plain" or "10" in n}

    lines = []
    if not args.no_orl and args.root.is_dir():
        faces = load_image_folder(args.root, extensions=(".pgm",))
        vectors, seconds = _describe(list(faces.filenames), 224)
        title = (
            f"ORL faces: {len(vectors)} images of {len(np.unique(faces.target))} people, "
            f"leave-one-out; MobileNetV2 max_size=224 + GeM, extraction {seconds:.1f} s."
        )
        print(title, flush=True)
        lines += _table(title, vectors, np.asarray(faces.target), options) + [""]
    elif not args.no_orl:
        print(f"ORL faces not found at {args.root.resolve()}; skipped.", file=sys.stderr)

    sets = {
        "plain": ("Copydays-style set", lambda: make_copydays(max_size=384, random_state=0), 384),
        "hard": ("Harder Copydays-style set", lambda: hard_copydays(max_size=256), 256),
    }
    for key in ("plain", "hard") if args.copydays == "both" else (args.copydays,):
        name, make, max_size = sets[key]
        data = make()
        labels = np.asarray(data.target)
        vectors, seconds = _describe(list(data.images), max_size)
        title = (
            f"{name}: {len(vectors)} images of {len(np.unique(labels))} photos, leave-one-out; "
            f"MobileNetV2 max_size={max_size} + GeM, extraction {seconds:.1f} s."
        )
        print(title, flush=True)
        lines += _table(title, vectors, labels, options) + [""]
    if args.output:
        args.output.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
