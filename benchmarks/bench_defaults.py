"""Defaults of the descriptor branch chosen by measurement on three datasets.

Leave-one-out retrieval (each image queries all the others, relevant = same class), mAP with
``"step"`` interpolation, for the options of:

- ``LocalPCA(normalize=...)``: ``None``, ``"l2"``, ``"power"``;
- ``SparseCovariance(estimator=...)``: ``"ledoit_wolf"``, ``"oas"``, ``"empirical"``,
  ``"graphical_lasso"``, searched with ``affine_invariant`` and ``log_euclidean``;
- ``GMMDescriptor(reg_covar=...)``: 1e-6, 1e-4, 1e-3, 1e-2 (2 full components), searched with
  the mixture ``kl`` and ``wasserstein`` distances;
- and, for reference, the mean of the local features searched with ``cosine`` (a global
  descriptor).

Every option is crossed with every normalisation (the normalisation changes the scale that
``reg_covar`` is added to). Datasets:

- ``digits``: :func:`sklearn.datasets.load_digits` (the first 300 of its 8x8 images, 10
  classes). Each image becomes a tiny feature map of 9 channels, the 3x3 neighbourhood of
  every pixel (zero padded, intensities / 16), so a digit has 64 local features of dimension 9;
  ``LocalPCA(n_components=8)``.
- ``orl``: the ORL faces (40 people x 10), MobileNetV2 (ImageNet weights) feature maps at
  ``max_size=224`` as in ``bench_orl.py``; ``LocalPCA(n_components=16)``.
- ``copydays-hard``: ``make_copydays(n_copies_per_image=9, sources="all", transforms=["strong",
  "extreme", "occlude"], max_size=256)`` (``hard_copydays`` in ``_datasets.py``): 11 photos and
  99 hard copies, MobileNetV2 maps at ``max_size=256``; ``LocalPCA(n_components=16)``.

A covariance estimator that raises an error on a dataset (the graphical lasso with its default
``alpha`` on ill-conditioned images) scores 0 there. Rules: each default is the option with the
best mean mAP over the three datasets and the metrics of its branch. ``normalize`` first: each
normalisation scores the mean, over the two branches, of its best option's mean mAP; then the
estimator and ``reg_covar`` at the chosen normalisation.

``--part learning`` measures the defaults of :class:`~skretrieval.learning.EmbeddingLearner`
instead: ``kappa`` of ``loss="vmf"`` and ``margin`` of ``loss="contrastive"``, test mAP (test
images query the training images, cosine) on ``digits`` (all 1797 images as 64-d pixel vectors,
a stratified half / half split) and ``orl`` (MobileNetV2 + GeM descriptors, 5 / 5 faces per
person as in ``bench_learning.py``), averaged over the learner seeds 0 and 1. Rule: the value
with the best mean over the two datasets, kept only if it is at least as good as the old
default on each of them.

    python benchmarks/bench_defaults.py [--part descriptors|learning] [--orl-root DIR]
        [--output FILE]
"""

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
from _datasets import hard_copydays
from sklearn.datasets import load_digits

from skretrieval.datasets import load_image_folder
from skretrieval.descriptors import GMMDescriptor, LocalPCA, SparseCovariance
from skretrieval.extraction import CNNFeatureExtractor
from skretrieval.metrics import mean_average_precision
from skretrieval.neighbors import ImageRetriever

DEFAULT_ORL = Path(__file__).resolve().parent.parent / ".." / "shared" / "data" / "orl_faces"
NORMALIZE = (None, "l2", "power")
ESTIMATORS = ("ledoit_wolf", "oas", "empirical", "graphical_lasso")
SPD_METRICS = ("affine_invariant", "log_euclidean")
REG_COVARS = (1e-6, 1e-4, 1e-3, 1e-2)
MIXTURE_METRICS = ("kl", "wasserstein")


def digits_maps(n_images=300):
    """3x3 neighbourhoods of every pixel of the 8x8 digits: maps of shape (9, 8, 8)."""
    digits = load_digits()
    images = digits.images[:n_images] / 16.0
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)))
    channels = [padded[:, dy : dy + 8, dx : dx + 8] for dy in range(3) for dx in range(3)]
    return list(np.stack(channels, axis=1)), digits.target[:n_images], 8


def orl_maps(root):
    data = load_image_folder(root, extensions=(".pgm",))
    extractor = CNNFeatureExtractor(max_size=224, verbose=False)
    return extractor.fit_transform(data.filenames), data.target, 16


def copydays_maps():
    images, target = hard_copydays(max_size=256, return_X_y=True)
    extractor = CNNFeatureExtractor(max_size=256, verbose=False)
    return extractor.fit_transform(images), target, 16


def loo_map(descriptors, metric, labels):
    retriever = ImageRetriever(metric=metric, n_jobs=2).fit(descriptors)
    distances, indices = retriever.kneighbors(n_neighbors=len(labels) - 1)
    relevant = labels[indices] == labels[:, None]
    return mean_average_precision(relevant, -distances)


def measure(name, maps, labels, n_components):
    """Rows ``(dataset, branch, option, normalize, metric, mAP)`` of one dataset."""
    rows = []
    for normalize in NORMALIZE:
        local = LocalPCA(n_components=n_components, normalize=normalize, random_state=0)
        features = local.fit_transform(maps)
        means = np.stack([f.mean(axis=0) for f in features])
        rows.append((name, "global", "mean", normalize, "cosine", loo_map(means, "cosine", labels)))
        for estimator in ESTIMATORS:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # regularised or unconverged images
                try:
                    covariances = SparseCovariance(estimator=estimator).fit_transform(features)
                except ValueError:
                    covariances = None  # the graphical lasso fails on ill-conditioned images
            for metric in SPD_METRICS:
                # A failed estimator scores 0: it cannot be a default.
                score = 0.0 if covariances is None else loo_map(covariances, metric, labels)
                rows.append((name, "covariance", estimator, normalize, metric, score))
        for reg_covar in REG_COVARS:
            gmm = GMMDescriptor(n_components=2, reg_covar=reg_covar, random_state=0, n_jobs=2)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mixtures = gmm.fit_transform(features)
            for metric in MIXTURE_METRICS:
                score = loo_map(mixtures, metric, labels)
                rows.append((name, "mixture", f"{reg_covar:g}", normalize, metric, score))
        print(f"  {name} normalize={normalize} done", flush=True)
    return rows


KAPPAS = (4.0, 8.0, 16.0, 32.0, 64.0)
MARGINS = (0.3, 0.5, 0.7, 1.0, 1.4)


def learning_splits(orl_root):
    """``name -> (train, y_train, test, y_test)`` for digits and the ORL faces."""
    from sklearn.model_selection import train_test_split

    from skretrieval.pooling import GeMPooling

    X, y = load_digits(return_X_y=True)
    splits = {"digits": train_test_split(X, y, test_size=0.5, stratify=y, random_state=0)}
    data = load_image_folder(orl_root, extensions=(".pgm",))
    rng = np.random.default_rng(0)
    train = np.zeros(len(data.target), dtype=bool)
    for label in np.unique(data.target):
        members = np.flatnonzero(data.target == label)
        train[rng.choice(members, size=len(members) // 2, replace=False)] = True
    extractor = CNNFeatureExtractor(max_size=224, pooling=GeMPooling(), verbose=False)
    descriptors = extractor.fit_transform(data.filenames)
    splits["orl"] = [
        descriptors[train],
        descriptors[~train],
        data.target[train],
        data.target[~train],
    ]
    return {name: (a, c, b, d) for name, (a, b, c, d) in splits.items()}


def measure_learning(orl_root):
    from skretrieval.learning import EmbeddingLearner

    splits = learning_splits(orl_root)
    settings = [("vmf", {"kappa": k}) for k in KAPPAS]
    settings += [("contrastive", {"margin": m}) for m in MARGINS]
    lines = ["| loss | parameter | " + " | ".join(splits) + " | mean |"]
    lines.append("|---|---|" + "---:|" * (len(splits) + 1))
    for loss, params in settings:
        scores = []
        for train, y_train, test, y_test in splits.values():
            seeds = []
            for seed in (0, 1):
                learner = EmbeddingLearner(loss, random_state=seed, **params).fit(train, y_train)
                retriever = ImageRetriever(metric="cosine").fit(learner.transform(train), y_train)
                seeds.append(retriever.score(learner.transform(test), y_test))
            scores.append(np.mean(seeds))
        ((name, value),) = params.items()
        lines.append(
            f"| {loss} | {name}={value:g} | "
            + " | ".join(f"{s:.3f}" for s in scores)
            + f" | {np.mean(scores):.3f} |"
        )
        print(lines[-1], flush=True)
    return lines


def mean_of(rows, **where):
    keys = ("dataset", "branch", "option", "normalize", "metric")
    picked = [row[-1] for row in rows if all(row[keys.index(k)] == v for k, v in where.items())]
    return float(np.mean(picked))


BRANCH_OPTIONS = {"covariance": ESTIMATORS, "mixture": [f"{r:g}" for r in REG_COVARS]}


def best_options(rows, datasets, normalize):
    """Per branch: ``{option: mean mAP over datasets and metrics}`` at ``normalize``."""
    return {
        branch: {
            o: np.mean(
                [
                    mean_of(rows, dataset=d, branch=branch, option=o, normalize=normalize)
                    for d in datasets
                ]
            )
            for o in options
        }
        for branch, options in BRANCH_OPTIONS.items()
    }


def choose(rows, datasets):
    """The rules of the module docstring: summary lines naming each chosen default."""
    # Each normalisation is scored with the best option of each branch, so that an estimator
    # that fails does not count against the normalisation it was run with.
    by_normalize = {
        n: np.mean([max(means.values()) for means in best_options(rows, datasets, n).values()])
        for n in NORMALIZE
    }
    normalize = max(by_normalize, key=by_normalize.get)
    summary = [
        "",
        "Means over datasets and metrics:",
        "- normalize (mean of the best option of each branch): "
        + ", ".join(f"{n}: {v:.3f}" for n, v in by_normalize.items())
        + f" -> {normalize}",
    ]
    for branch, means in best_options(rows, datasets, normalize).items():
        summary.append(
            f"- {branch} (normalize={normalize}): "
            + ", ".join(f"{o}: {v:.3f}" for o, v in means.items())
            + f" -> {max(means, key=means.get)}"
        )
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("descriptors", "learning"), default="descriptors")
    parser.add_argument("--orl-root", type=Path, default=DEFAULT_ORL)
    parser.add_argument("--output", type=Path, help="also write the tables to this file")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    if args.part == "learning":
        lines = measure_learning(args.orl_root)
        text = "\n".join(lines + [f"\nTotal {time.perf_counter() - start:.0f} s."])
        print(text)
        if args.output is not None:
            args.output.write_text(text + "\n")
        return
    loaders = {
        "digits": digits_maps,
        "orl": lambda: orl_maps(args.orl_root),
        "copydays-hard": copydays_maps,
    }
    rows = []
    for name, loader in loaders.items():
        maps, labels, n_components = loader()
        print(f"{name}: {len(maps)} images, maps {maps[0].shape}", flush=True)
        rows += measure(name, maps, np.asarray(labels), n_components)
    datasets = list(loaders)
    lines = ["| branch | option | normalize | metric | " + " | ".join(datasets) + " | mean |"]
    lines.append("|---|---|---|---|" + "---:|" * (len(datasets) + 1))
    seen = []
    for row in rows:
        if row[1:5] not in seen:
            seen.append(row[1:5])
    for branch, option, normalize, metric in seen:
        scores = [
            mean_of(
                rows, dataset=d, branch=branch, option=option, normalize=normalize, metric=metric
            )
            for d in datasets
        ]
        lines.append(
            f"| {branch} | {option} | {normalize} | {metric} | "
            + " | ".join(f"{s:.3f}" for s in scores)
            + f" | {np.mean(scores):.3f} |"
        )

    summary = choose(rows, datasets)
    summary.append(f"\nTotal {time.perf_counter() - start:.0f} s.")
    text = "\n".join(lines + summary)
    print(text)
    if args.output is not None:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
