"""Approximate affine-invariant search on real covariance descriptors: recall and speed-up.

``ImageRetriever(metric="affine_invariant", metric_params={"shortlist": s})`` ranks a shortlist
of ``s`` candidates per query (Euclidean distance in the tangent space at the database's
log-Euclidean mean) by the exact distance. This script measures recall@10 against exact search
and the speed-up, leave-one-out over the ORL faces (each of the 400 covariance descriptors
queries the other 399), in the same process.

    python benchmarks/bench_shortlist.py --dims 16 32 --shortlists 20 50 100
"""

import argparse
import time

import numpy as np
from bench_orl import CREDIT, DEFAULT_ROOT, _load
from sklearn.pipeline import make_pipeline

from skretrieval.descriptors import LocalPCA, SparseCovariance
from skretrieval.extraction import CNNFeatureExtractor
from skretrieval.neighbors import ImageRetriever


def _search(covariances, **params):
    retriever = ImageRetriever(n_neighbors=10, metric="affine_invariant", **params)
    retriever.fit(covariances)
    start = time.perf_counter()
    indices = retriever.kneighbors(return_distance=False)
    return indices, time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=DEFAULT_ROOT, help="ORL folder")
    parser.add_argument("--dims", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--shortlists", type=int, nargs="+", default=[20, 50, 100])
    args = parser.parse_args(argv)

    paths, _ = _load(args.root, n_people=40)
    maps = CNNFeatureExtractor(max_size=224, verbose=False).fit_transform(paths)
    print(f"{CREDIT}: {len(paths)} faces, MobileNetV2 (ImageNet) maps at max_size=224")
    print(f"{'d':>3s}{'shortlist':>10s}{'recall@10':>11s}{'exact s':>9s}{'approx s':>10s}"
          f"{'speed-up':>10s}")
    for dim in args.dims:
        covariances = make_pipeline(
            LocalPCA(n_components=dim, random_state=0), SparseCovariance(estimator="oas")
        ).fit_transform(maps)
        exact, exact_time = _search(covariances)
        for shortlist in args.shortlists:
            approx, approx_time = _search(covariances, metric_params={"shortlist": shortlist})
            recall = np.mean(
                [len(set(a) & set(e)) / e.size for a, e in zip(approx, exact, strict=True)]
            )
            print(f"{dim:3d}{shortlist:10d}{recall:11.4f}{exact_time:9.2f}{approx_time:10.2f}"
                  f"{exact_time / approx_time:9.1f}x")


if __name__ == "__main__":
    main()
