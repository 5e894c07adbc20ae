"""Face retrieval on the ORL database: mAP and P@1 of skretrieval's pipelines.

The ORL face database (Olivetti Research Laboratory, Cambridge, now AT&T Laboratories
Cambridge; F. Samaria and A. Harter, "Parameterisation of a stochastic model for human face
identification", IEEE WACV 1994): 40 people, 10 grey-level 92x112 PGM images each, in folders
``s1`` ... ``s40``. It is not shipped with skretrieval: unpack it at ``../shared/data/orl_faces``
next to the repository (or anywhere, and pass ``--root``).

Protocol: leave-one-out retrieval, each face queries all the others, relevant = same person;
mAP (``"step"`` interpolation) and precision at 1. Every pipeline starts from one extraction of
MobileNetV2 (ImageNet weights) feature maps:

- global poolings SPoC, MAC, GeM and R-MAC, searched with the cosine distance;
- ``LocalPCA`` -> ``SparseCovariance(estimator="oas")``, searched with SPD-matrix metrics;
- ``LocalPCA`` -> ``GMMDescriptor``, searched with the mixture Wasserstein distance (MW2) and
  the KL divergence of mixtures, where ``skretrieval.geometry`` has kernels for mixtures.

Times: ``describe`` is the descriptor computation from the feature maps (a stage shared by
several rows, such as one ``LocalPCA``, is computed once and counted in every row using it);
``search`` is ``ImageRetriever.fit`` plus ``kneighbors`` of every query against all the others.
The extraction is timed once.

    python benchmarks/bench_orl.py [--root DIR] [--max-size 224] [--quick] [--output FILE]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed

from skretrieval.datasets import load_image_folder
from skretrieval.descriptors import GaussianMixtures, GMMDescriptor, LocalPCA, SparseCovariance
from skretrieval.extraction import CNNFeatureExtractor
from skretrieval.geometry import get_kernel
from skretrieval.metrics import mean_average_precision, precision_at_k
from skretrieval.neighbors import ImageRetriever
from skretrieval.pooling import RMAC, GeMPooling, MaxPooling, SumPooling

CREDIT = (
    "ORL face database, Olivetti Research Laboratory / AT&T Laboratories Cambridge "
    "(Samaria and Harter, 1994)"
)
DEFAULT_ROOT = Path(__file__).resolve().parent.parent / ".." / "shared" / "data" / "orl_faces"
POOLINGS = {"SPoC": SumPooling(), "MAC": MaxPooling(), "GeM": GeMPooling(), "R-MAC": RMAC()}
SPD_METRICS = ("affine_invariant", "log_euclidean", "jeffreys", "wasserstein")
MIXTURE_METRICS = ("wasserstein", "kl")
COVARIANCE_DIM = 16
# (LocalPCA dimension, mixture components, covariance type); --quick keeps the first.
GMM_CONFIGS = ((8, 2, "full"), (16, 2, "full"), (16, 4, "diag"), (8, 4, "full"))
# LocalPCA's features are L2-normalised, variances ~1e-2 per axis. With 42 local features per
# face (max_size=224), reg_covar=1e-6 (the default before 0.3) leaves components nearly
# singular, which the KL divergence punishes: LocalPCA(16) + GMM(K=2, full) + "kl" mAP 0.26,
# against 0.81 with 1e-3. The recorded table was measured with 1e-3, kept here so that it can be
# reproduced; the default is now 1e-2 (bench_defaults.py).
GMM_REG_COVAR = 1e-3


def _load(root, n_people=40, option="--root"):
    """Paths and labels of the first ``n_people`` people; ``option`` names the CLI flag."""
    root = Path(root)
    if not root.is_dir():
        sys.exit(
            f"ORL face database not found at {root.resolve()}.\nUnpack it there (folders "
            f"s1 ... s40 of 1.pgm ... 10.pgm) or pass {option}; it is not part of the repository."
        )
    data = load_image_folder(root, extensions=(".pgm",))
    keep = data.target < n_people
    return [f for f, k in zip(data.filenames, keep, strict=True) if k], data.target[keep]


def _timed(function, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


def _mixture_metric_available(metric):
    """Whether ``skretrieval.geometry`` has a kernel for ``metric`` on Gaussian mixtures yet."""
    probe = GaussianMixtures(np.ones((1, 1)), np.zeros((1, 1, 2)), np.ones((1, 1, 2)), "diag")
    try:
        get_kernel(metric, probe)
    except (ValueError, TypeError):
        return False
    return True


def _evaluate(descriptors, metric, labels, n_jobs):
    """Leave-one-out mAP and P@1 of ``descriptors`` under ``metric``, and the search time."""
    start = time.perf_counter()
    retriever = ImageRetriever(metric=metric, n_jobs=n_jobs).fit(descriptors)
    distances, indices = retriever.kneighbors(n_neighbors=len(labels) - 1)
    seconds = time.perf_counter() - start
    relevant = labels[indices] == labels[:, None]
    return (
        mean_average_precision(relevant, -distances),
        precision_at_k(relevant, -distances, 1),
        seconds,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="ORL folder")
    parser.add_argument("--max-size", type=int, default=224, help="longer image side, pixels")
    parser.add_argument("--quick", action="store_true", help="10 people, one GMM setting")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--output", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)

    filenames, labels = _load(args.root, 10 if args.quick else 40)
    extractor = CNNFeatureExtractor(max_size=args.max_size, verbose=False)
    maps, extract_seconds = _timed(extractor.fit_transform, filenames)
    # Start joblib's worker processes now, so that the first timed GMM fit does not pay for it.
    Parallel(n_jobs=args.n_jobs)(delayed(abs)(i) for i in range(args.n_jobs))
    header = [
        f"{CREDIT}: {len(filenames)} faces of {len(np.unique(labels))} people, leave-one-out.",
        f"CNNFeatureExtractor(backbone='mobilenet_v2', weights='imagenet', "
        f"max_size={args.max_size}): feature maps {maps[0].shape}, {extract_seconds:.1f} s. "
        f"LocalPCA(random_state=0); SparseCovariance(estimator='oas'); GMMDescriptor("
        f"reg_covar={GMM_REG_COVAR}, random_state=0); GMMDescriptor and ImageRetriever "
        f"n_jobs={args.n_jobs}.",
        "",
        "| pipeline | metric | mAP | P@1 | describe (s) | search (s) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    print("\n".join(header), flush=True)
    rows = []

    def report(pipeline, descriptors, describe_seconds, metrics):
        for metric in metrics:
            if descriptors is None:
                row = f"| {pipeline} | {metric} | not available yet | | | |"
            else:
                mean_ap, p_at_1, seconds = _evaluate(descriptors, metric, labels, args.n_jobs)
                row = (
                    f"| {pipeline} | {metric} | {mean_ap:.4f} | {p_at_1:.4f} | "
                    f"{describe_seconds:.2f} | {seconds:.2f} |"
                )
            rows.append(row)
            print(row, flush=True)

    for name, pooling in POOLINGS.items():
        report(name, *_timed(pooling.fit_transform, maps), ["cosine"])

    local_features = {}  # LocalPCA dimension -> (features, seconds), fitted once each

    def local(n_components):
        if n_components not in local_features:
            pca = LocalPCA(n_components=n_components, random_state=0)
            local_features[n_components] = _timed(pca.fit_transform, maps)
        return local_features[n_components]

    features, pca_seconds = local(COVARIANCE_DIM)
    # One image's covariance takes about a millisecond: sequential beats joblib's overheads.
    oas = SparseCovariance(estimator="oas")
    covariances, seconds = _timed(oas.fit_transform, features)
    report(f"LocalPCA({COVARIANCE_DIM}) + OAS", covariances, pca_seconds + seconds, SPD_METRICS)

    available = [m for m in MIXTURE_METRICS if _mixture_metric_available(m)]
    missing = [m for m in MIXTURE_METRICS if m not in available]
    for dim, n_components, covariance_type in GMM_CONFIGS[: 1 if args.quick else None]:
        name = f"LocalPCA({dim}) + GMM(K={n_components}, {covariance_type})"
        report(name, None, 0.0, missing)
        if available:
            features, pca_seconds = local(dim)
            gmm = GMMDescriptor(
                n_components=n_components,
                covariance_type=covariance_type,
                reg_covar=GMM_REG_COVAR,
                random_state=0,
                n_jobs=args.n_jobs,
            )
            mixtures, seconds = _timed(gmm.fit_transform, features)
            report(name, mixtures, pca_seconds + seconds, available)

    if args.output is not None:
        args.output.write_text("\n".join(header + rows) + "\n")


if __name__ == "__main__":
    main()
