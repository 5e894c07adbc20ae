"""mAP change from PQ compression and from QE/DBA on ORL faces and a Copydays-style set.

Two small real-image sets, each described once by MobileNetV2 (ImageNet weights) +
``GeMPooling`` at ``max_size=224`` and then ``PCAWhitening(n_components=128)`` learned on the
*other* set:

- the ORL face database (Olivetti Research Laboratory, Cambridge, now AT&T Laboratories
  Cambridge; F. Samaria and A. Harter, "Parameterisation of a stochastic model for human face
  identification", IEEE WACV 1994): 40 people, 10 grey-level faces each, relevant = same
  person. Not shipped with skretrieval: unpack it at ``../shared/data/orl_faces`` next to the
  repository (folders ``s1`` ... ``s40``) or pass ``--orl-root``;
- the Copydays-style set of ``skretrieval demo`` (:func:`skretrieval.datasets.make_copydays`,
  photos shipped with scikit-image and scikit-learn, originals at most 384 pixels as in the
  demo), relevant = another version of the same photo. The demo's default (10 photos, 8 copies
  each: 90 images) is too small to train 8-bit PQ codebooks (256 centroids each) or a
  128-component whitening, so this benchmark asks for all 11 photos and 24 copies of each
  (275 images).

The whitening of each set is learned on the other one (faces for photos and vice versa;
unsupervised, labels unused), as whitening is normally learned on independent images. Learned
on the searched set itself, 128 components from 275 or 400 images mostly whiten noise: the
exact leave-one-out mAP drops from 0.85 (GeM alone) to 0.60 on ORL and from 0.998 to 0.32 on
the Copydays-style set, while the other set's whitening gives 0.79 and 0.99.

Protocol: leave-one-out retrieval, as ``benchmarks/bench_orl.py``: every image queries all
the others through ``ImageRetriever(metric="cosine").kneighbors(X=None, n_neighbors=n-1)``,
and mAP is :func:`skretrieval.metrics.mean_average_precision` (``"step"`` interpolation).
Pipelines (all cosine): exact search; ``ProductQuantizer(n_subquantizers=B, n_bits=8)`` at B =
8, 16, 32 and 64 bytes per vector (codebooks trained on the searched set; leave-one-out queries
are then the decoded database vectors, see ``ImageRetriever``); average query expansion (AQE)
with 2 and 3 neighbours; alpha-QE (5 neighbours, alpha 3); DBA (2 neighbours); DBA + alpha-QE;
PQ 16 B + alpha-QE. Two extra PQ rows use 4-bit codebooks (16 centroids per sub-space) at
8 and 16 bytes: on sets of a few hundred vectors, 8-bit codebooks of 256 centroids nearly
memorise the database (see the reconstruction-error column: the mean squared distance between
a unit database vector and its decoded version, 0 for exact search), which makes 8-bit PQ look
lossless here where it would not be on a large database.

    python benchmarks/bench_compression.py [--orl-root DIR] [--output FILE]

The table is printed and written to ``benchmarks/results/bench_compression.md``.
"""

import os

# OpenMP threads that spin-wait make faiss many times slower on a machine shared with other
# work; this must be set before any OpenMP runtime starts.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from bench_orl import CREDIT as ORL_CREDIT  # noqa: E402
from bench_orl import DEFAULT_ROOT as DEFAULT_ORL_ROOT  # noqa: E402
from bench_orl import _load as _load_orl  # noqa: E402
from joblib import cpu_count  # noqa: E402
from sklearn.preprocessing import normalize  # noqa: E402

from skretrieval.datasets import make_copydays  # noqa: E402
from skretrieval.extraction import CNNFeatureExtractor  # noqa: E402
from skretrieval.metrics import mean_average_precision  # noqa: E402
from skretrieval.neighbors import ImageRetriever  # noqa: E402
from skretrieval.pooling import GeMPooling  # noqa: E402
from skretrieval.quantization import ProductQuantizer  # noqa: E402
from skretrieval.whitening import PCAWhitening  # noqa: E402

REPOSITORY = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPOSITORY / "benchmarks" / "results" / "bench_compression.md"
N_COMPONENTS = 128
PQ_BYTES = (8, 16, 32, 64)
ALPHA_QE = {"query_expansion": "alpha", "qe_neighbors": 5, "qe_alpha": 3.0}


def _pq(n_bytes, n_bits=8):
    return ProductQuantizer(n_subquantizers=8 * n_bytes // n_bits, n_bits=n_bits, random_state=0)


def _pipelines():
    """(name, bytes per database vector, ImageRetriever parameters), exact search first."""
    float_bytes = 4 * N_COMPONENTS
    rows = [("exact", float_bytes, {})]
    rows += [(f"PQ {b} B", b, {"quantizer": _pq(b)}) for b in PQ_BYTES]
    rows += [(f"PQ {b} B, 4-bit codes", b, {"quantizer": _pq(b, n_bits=4)}) for b in (8, 16)]
    rows += [
        ("AQE k=2", float_bytes, {"query_expansion": "average", "qe_neighbors": 2}),
        ("AQE k=3", float_bytes, {"query_expansion": "average", "qe_neighbors": 3}),
        ("alpha-QE k=5, alpha=3", float_bytes, ALPHA_QE),
        ("DBA k=2", float_bytes, {"dba_neighbors": 2}),
        ("DBA k=2 + alpha-QE k=5, alpha=3", float_bytes, {"dba_neighbors": 2, **ALPHA_QE}),
        ("PQ 16 B + alpha-QE k=5, alpha=3", 16, {"quantizer": _pq(16), **ALPHA_QE}),
    ]
    return rows


def _leave_one_out_map(vectors, labels, params):
    """Leave-one-out mAP, and the mean squared reconstruction error of the unit database."""
    retriever = ImageRetriever(metric="cosine", **params).fit(vectors)
    distances, indices = retriever.kneighbors(n_neighbors=len(labels) - 1)
    relevant = labels[indices] == labels[:, None]
    error = 0.0
    if retriever.quantizer_ is not None and "dba_neighbors" not in params:
        quantizer = retriever.quantizer_
        decoded = quantizer.inverse_transform(quantizer.codes_)
        error = float(np.mean(np.sum((normalize(vectors) - decoded) ** 2, axis=1)))
    return mean_average_precision(relevant, -distances), error


def _copydays(n_copies):
    data = make_copydays(n_copies_per_image=n_copies, sources="all", max_size=384, random_state=0)
    return list(data.images), np.asarray(data.target)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orl-root", type=Path, default=DEFAULT_ORL_ROOT, help="ORL folder")
    parser.add_argument("--max-size", type=int, default=224, help="longer image side, pixels")
    parser.add_argument("--copies", type=int, default=24, help="Copydays copies per photo")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="Markdown table")
    args = parser.parse_args(argv)

    datasets = {
        "ORL": _load_orl(args.orl_root, option="--orl-root"),
        "Copydays-style": _copydays(args.copies),
    }
    extractor = CNNFeatureExtractor(max_size=args.max_size, pooling=GeMPooling(), verbose=False)
    header = [
        f"ORL: {ORL_CREDIT}. Copydays-style: skretrieval.datasets.make_copydays(sources='all', "
        f"n_copies_per_image={args.copies}, max_size=384, random_state=0).",
        f"CNNFeatureExtractor(backbone='mobilenet_v2', weights='imagenet', "
        f"max_size={args.max_size}, pooling=GeMPooling()) -> PCAWhitening(n_components="
        f"{N_COMPONENTS}) learned on the other set; leave-one-out mAP, cosine.",
        f"Machine: {platform.machine()}, {cpu_count()} CPUs usable, {platform.platform()}.",
        "",
        "| dataset | pipeline | bytes/vector | reconstruction error | mAP | delta vs exact |",
        "|---|---|---:|---:|---:|---:|",
    ]
    print("\n".join(header), flush=True)
    rows = []
    descriptors = {}
    for dataset, (images, labels) in datasets.items():
        start = time.perf_counter()
        descriptors[dataset] = extractor.fit_transform(images)
        print(
            f"{dataset}: {len(images)} images, {len(np.unique(labels))} groups, described in "
            f"{time.perf_counter() - start:.1f} s",
            file=sys.stderr,
            flush=True,
        )
    for dataset, (_, labels) in datasets.items():
        (other,) = [X for name, X in descriptors.items() if name != dataset]
        whitening = PCAWhitening(n_components=N_COMPONENTS).fit(other)
        vectors = whitening.transform(descriptors[dataset])
        exact = None
        for name, n_bytes, params in _pipelines():
            score, error = _leave_one_out_map(vectors, labels, params)
            exact = score if exact is None else exact
            # Rounded first, so that a difference below 5e-5 prints as +0.0000, not -0.0000.
            delta = "" if name == "exact" else f"{round(score - exact, 4) + 0.0:+.4f}"
            error = "" if "quantizer" not in params else f"{error:.4f}"
            row = f"| {dataset} | {name} | {n_bytes} | {error} | {score:.4f} | {delta} |"
            rows.append(row)
            print(row, flush=True)

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(header + rows) + "\n")


if __name__ == "__main__":
    main()
