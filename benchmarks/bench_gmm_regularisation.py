"""Is ``GMMDescriptor(reg_covar=1e-2)`` a sound default, or does it drown the mixtures?

``reg_covar`` is absolute: it is added to the diagonal of every component covariance whatever
the scale of the local features. This script puts it next to the scale of the data and measures
what it does to the fitted mixtures and to retrieval.

Datasets (MobileNetV2 ImageNet feature maps, ``LocalPCA(n_components=16, random_state=0)`` as
in ``bench_defaults.py``):

- ``copydays``: the Copydays-style set, ``make_copydays(sources="all", max_size=256)``, 11
  photos and 8 copies each (one per default transform), maps at ``max_size=256``;
- ``copydays-hard``: ``hard_copydays()`` of ``_datasets.py`` (11 photos, 99 hard copies),
  maps at ``max_size=256``;
- ``orl``: the ORL faces (Olivetti Research Laboratory / AT&T Laboratories Cambridge; Samaria
  and Harter, 1994), 40 people x 10 faces, maps at ``max_size=224`` (7 x 6 positions, 42 local
  features a face), at ``../shared/data/orl_faces`` or ``--orl-root``;
- ``digits`` (only with ``--datasets ... digits``): the first 300 8x8 digits as 3x3
  neighbourhood maps, ``LocalPCA(n_components=8)``, as in ``bench_defaults.py``.

Local features and regulariser, five variants:

- ``l2``: ``LocalPCA(normalize="l2")``, the settings of ``bench_defaults.py`` (the default);
- ``l2+whiten``: the same with ``whiten=True`` (unit variance per axis over the collection);
- ``relative``: ``l2`` features, with a regulariser relative to each image's scale. Image ``i``'s
  local features are divided by ``s_i``, the square root of their mean per-axis variance, the
  mixture is fitted with ``reg_covar=r``, and its means and covariances are multiplied back by
  ``s_i`` and ``s_i**2``. EM (and its k-means initialisation) is equivariant under this scaling,
  so this is exactly a mixture of the ``l2`` features fitted with ``reg_covar = r * s_i**2``:
  only the regulariser changes, the descriptor keeps the scale (and so the means) of ``l2``;
- ``l2 x median``, ``l2+whiten x median``: one regulariser for the whole collection,
  ``reg_covar = c * v``, ``v`` the median over images and axes of the per-axis variance of each
  image's local features (table 1; computed without labels).

For each dataset, variant, ``K`` in 1, 2, 3 full-covariance components and regulariser,
``GMMDescriptor(random_state=0)`` then leave-one-out mAP (``ImageRetriever(metric).fit(X, y)
.score(None, y)``, relevant = same photo / person) with the mixture ``"kl"`` and
``"wasserstein"`` distances. Reference row ``mean``: the mean of each image's local features
searched with ``"euclidean"`` (the Wasserstein distance of single Gaussians of equal covariance:
what is left when the regulariser swamps every covariance).

Tables:

1. scale of the local features: median (10th - 90th percentile) of the per-axis variance of
   each image's local features (``within var/axis``), median per-image total variance;
2. mAP per dataset;
3. fitted mixtures: eigenvalues of the component covariances (10th / 50th / 90th percentile
   over all components and axes), ``floor``: median share of the regulariser in a component's
   total variance (``d * reg / trace``), ``floor>1/2``: share of eigenvalues at most twice the
   regulariser (axes where it is at least half the variance), ``between``: median share of an
   image's mixture variance carried by the spread of the component means
   (``sum_k w_k |mu_k - mu|^2 / total``; 0 for one component or collapsed components),
   ``eff K``: median ``exp`` of the entropy of the weights;
4. mean mAP over the datasets, per variant, regulariser, ``K`` and metric.

    python benchmarks/bench_gmm_regularisation.py [--orl-root DIR]
        [--datasets copydays copydays-hard orl digits] [--n-jobs 2] [--output FILE]
"""

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
from _datasets import hard_copydays
from bench_defaults import digits_maps

from skretrieval.datasets import load_image_folder, make_copydays
from skretrieval.descriptors import GaussianMixtures, GMMDescriptor, LocalPCA
from skretrieval.extraction import CNNFeatureExtractor
from skretrieval.neighbors import ImageRetriever

DEFAULT_ORL = Path(__file__).resolve().parent.parent / ".." / "shared" / "data" / "orl_faces"
DATASETS = ("copydays", "copydays-hard", "orl")
N_COMPONENTS = (1, 2, 3)
METRICS = ("kl", "wasserstein")
# name -> (whiten, scaling, regularisers). Scaling: "absolute" (reg_covar as given), "image"
# (times each image's mean per-axis variance), "collection" (times the median per-axis variance).
VARIANTS = {
    "l2": (False, "absolute", (1e-4, 1e-3, 1e-2, 1e-1)),
    "l2+whiten": (True, "absolute", (1e-4, 1e-3, 1e-2, 1e-1, 1.0)),
    "relative": (False, "image", (1e-3, 1e-2, 1e-1, 1.0)),
    "l2 x median": (False, "collection", (1.0, 3.0, 10.0)),
    "l2+whiten x median": (True, "collection", (1.0, 3.0, 10.0)),
}
SUFFIX = {"absolute": "", "image": " x s_i^2", "collection": " x median"}


def load(name, orl_root):
    """``(maps, labels, LocalPCA n_components)`` of one dataset."""
    if name == "digits":
        maps, labels, n_components = digits_maps()
        return maps, np.asarray(labels), n_components
    if name == "orl":
        data = load_image_folder(orl_root, extensions=(".pgm",))
        maps = CNNFeatureExtractor(max_size=224, verbose=False).fit_transform(data.filenames)
        return maps, np.asarray(data.target), 16
    if name == "copydays":
        images, labels = make_copydays(sources="all", max_size=256, random_state=0, return_X_y=True)
    else:
        images, labels = hard_copydays(max_size=256, return_X_y=True)
    maps = CNNFeatureExtractor(max_size=256, verbose=False).fit_transform(images)
    return maps, np.asarray(labels), 16


def mixtures_of(features, n_components, reg_covar, relative, n_jobs):
    """Mixtures of every image, and the absolute regulariser each one was fitted with."""
    gmm = GMMDescriptor(
        n_components=n_components, reg_covar=reg_covar, random_state=0, n_jobs=n_jobs
    )
    if not relative:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unconverged EM on a few images
            mixtures = gmm.fit_transform(features)
        return mixtures, np.full(len(features), reg_covar)
    scales = np.sqrt([f.var(axis=0).mean() for f in features])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scaled = gmm.fit_transform([f / s for f, s in zip(features, scales, strict=True)])
    mixtures = GaussianMixtures(
        scaled.weights,
        scaled.means * scales[:, None, None],
        scaled.covariances * scales[:, None, None, None] ** 2,
    )
    return mixtures, reg_covar * scales**2


def mixture_stats(mixtures, regs):
    """Diagnostics of table 3 (see the module docstring)."""
    weights, means = mixtures.weights, mixtures.means
    eigenvalues = np.linalg.eigvalsh(mixtures.covariances)  # (n, K, d)
    d = eigenvalues.shape[-1]
    traces = eigenvalues.sum(axis=-1)
    centre = np.einsum("nk,nkd->nd", weights, means)
    between = np.einsum("nk,nk->n", weights, ((means - centre[:, None]) ** 2).sum(axis=-1))
    within = np.einsum("nk,nk->n", weights, traces)
    entropy = -np.sum(weights * np.log(np.clip(weights, 1e-300, None)), axis=1)
    return {
        "eig": np.quantile(eigenvalues, [0.1, 0.5, 0.9]),
        "floor": np.median(d * regs[:, None] / traces),
        "floor_half": np.mean(eigenvalues <= 2 * regs[:, None, None]),
        "between": np.median(between / (between + within)),
        "eff_k": np.median(np.exp(entropy)),
    }


def loo_map(descriptors, metric, labels, n_jobs):
    retriever = ImageRetriever(metric=metric, n_jobs=n_jobs).fit(descriptors, labels)
    return retriever.score(None, labels)


def measure(name, maps, labels, n_components, n_jobs):
    """Scale rows, mAP rows and diagnostic rows of one dataset."""
    scale_rows, map_rows, stat_rows = [], [], []
    for variant, (whiten, scaling, regs) in VARIANTS.items():
        local = LocalPCA(n_components=n_components, whiten=whiten, random_state=0)
        features = [f.astype(np.float64) for f in local.fit_transform(maps)]
        per_axis = np.concatenate([f.var(axis=0) for f in features])
        median_variance = np.median(per_axis)
        if scaling == "absolute":
            totals = [f.var(axis=0).sum() for f in features]
            scale_rows.append(
                (
                    name,
                    variant,
                    len(features),
                    np.median([len(f) for f in features]),
                    n_components,
                    *np.quantile(per_axis, [0.5, 0.1, 0.9]),
                    np.median(totals),
                )
            )
        means = np.stack([f.mean(axis=0) for f in features])
        map_rows.append(
            (name, variant, "mean", 0, "euclidean", loo_map(means, "euclidean", labels, n_jobs))
        )
        for reg in regs:
            reg_covar = reg * median_variance if scaling == "collection" else reg
            for k in N_COMPONENTS:
                mixtures, absolute = mixtures_of(features, k, reg_covar, scaling == "image", n_jobs)
                stat_rows.append((name, variant, reg, k, mixture_stats(mixtures, absolute)))
                for metric in METRICS:
                    score = loo_map(mixtures, metric, labels, n_jobs)
                    map_rows.append((name, variant, reg, k, metric, score))
        print(f"  {name} {variant} done", flush=True)
    return scale_rows, map_rows, stat_rows


def scale_table(rows):
    lines = [
        "| dataset | variant | images | local/image | d | within var/axis, median (p10 - p90) "
        "| total var/image |",
        "|---|---|---:|---:|---:|---|---:|",
    ]
    for name, variant, n, n_local, d, median, low, high, total in rows:
        lines.append(
            f"| {name} | {variant} | {n} | {n_local:.0f} | {d} | {median:.2g} ({low:.2g} - "
            f"{high:.2g}) | {total:.3g} |"
        )
    return lines


def map_table(name, rows):
    ks = " | ".join(f"KL K={k}" for k in N_COMPONENTS)
    ws = " | ".join(f"W K={k}" for k in N_COMPONENTS)
    lines = [f"\n{name}: leave-one-out mAP", f"| variant | reg_covar | {ks} | {ws} |"]
    lines.append("|---|---|" + "---:|" * (2 * len(N_COMPONENTS)))
    scores = {row[1:5]: row[5] for row in rows if row[0] == name}
    for variant, (_, scaling, regs) in VARIANTS.items():
        mean = scores[(variant, "mean", 0, "euclidean")]
        lines.append(f"| {variant} | mean, euclidean | {mean:.3f} |" + " |" * 5)
        for reg in regs:
            cells = [scores[(variant, reg, k, m)] for m in METRICS for k in N_COMPONENTS]
            label = f"{reg:g}{SUFFIX[scaling]}"
            lines.append(f"| {variant} | {label} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    return lines


def stats_table(rows):
    lines = [
        "\nFitted mixtures",
        "| dataset | variant | reg_covar | K | eigenvalues p10 / p50 / p90 | floor | floor>1/2 "
        "| between | eff K |",
        "|---|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for name, variant, reg, k, s in rows:
        low, mid, high = s["eig"]
        lines.append(
            f"| {name} | {variant} | {reg:g}{SUFFIX[VARIANTS[variant][1]]} | {k} | "
            f"{low:.2g} / {mid:.2g} / {high:.2g} | "
            f"{s['floor']:.2f} | {s['floor_half']:.2f} | {s['between']:.2f} | {s['eff_k']:.2f} |"
        )
    return lines


def summary_table(rows, datasets):
    lines = [
        f"\nMean mAP over {', '.join(datasets)}",
        "| variant | reg_covar | K | KL | W | both |",
        "|---|---|---:|---:|---:|---:|",
    ]
    scores = {row[:5]: row[5] for row in rows}
    best = {}
    for variant, (_, _, regs) in VARIANTS.items():
        for reg in regs:
            for k in N_COMPONENTS:
                by_metric = [
                    np.mean([scores[(d, variant, reg, k, m)] for d in datasets]) for m in METRICS
                ]
                both = np.mean(by_metric)
                best.setdefault(variant, []).append((both, reg, k))
                lines.append(
                    f"| {variant} | {reg:g}{SUFFIX[VARIANTS[variant][1]]} | {k} | "
                    + " | ".join(f"{s:.3f}" for s in by_metric)
                    + f" | {both:.3f} |"
                )
    lines.append("")
    for variant, entries in best.items():
        both, reg, k = max(entries)
        mean = np.mean([scores[(d, variant, "mean", 0, "euclidean")] for d in datasets])
        lines.append(
            f"- {variant}: best reg_covar={reg:g}{SUFFIX[VARIANTS[variant][1]]}, K={k} "
            f"(mean of KL and W {both:.3f}); "
            f"mean of local features, euclidean: {mean:.3f}"
        )
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orl-root", type=Path, default=DEFAULT_ORL)
    parser.add_argument(
        "--datasets", nargs="+", choices=(*DATASETS, "digits"), default=list(DATASETS)
    )
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--output", type=Path, help="also write the tables to this file")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    scale_rows, map_rows, stat_rows = [], [], []
    for name in args.datasets:
        maps, labels, n_components = load(name, args.orl_root)
        print(f"{name}: {len(maps)} images, maps {maps[0].shape}", flush=True)
        scales, scores, stats = measure(name, maps, labels, n_components, args.n_jobs)
        scale_rows += scales
        map_rows += scores
        stat_rows += stats
    lines = scale_table(scale_rows)
    for name in args.datasets:
        lines += map_table(name, map_rows)
    lines += stats_table(stat_rows)
    lines += summary_table(map_rows, args.datasets)
    lines.append(f"\nTotal {time.perf_counter() - start:.0f} s.")
    text = "\n".join(lines)
    print(text)
    if args.output is not None:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
