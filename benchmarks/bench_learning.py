"""Learned embeddings on the ORL faces: mAP of each loss, learned whitening, fine-tuning.

The ORL face database (Olivetti Research Laboratory, Cambridge, now AT&T Laboratories
Cambridge; F. Samaria and A. Harter, 1994): 40 people, 10 grey-level 92x112 images each. It is
not shipped with skretrieval: unpack it at ``../shared/data/orl_faces`` next to the repository
(or anywhere, and pass ``--root``).

Protocol: split by image, 5 training and 5 test faces per person (a seeded random
split); every test face queries the 200 training faces, relevant = same person; mAP with
``"step"`` interpolation. Rows:

- pretrained MobileNetV2 + GeM, the unsupervised baseline (and with PCA whitening);
- + :class:`~skretrieval.learning.EmbeddingLearner` for each loss, with its defaults;
- + :class:`~skretrieval.whitening.LearnedWhitening`, on GeM and on the best loss;
- :class:`~skretrieval.learning.RetrievalFineTuner`: MobileNetV2 + GeM fine-tuned end to end.

Times are for ``fit`` on the 200 training descriptors (per epoch: fit time / ``n_iter_``).
The curves (training loss and test mAP after each epoch, without early stopping) go to
``--plot``: a run of e epochs with a fixed seed is the first e epochs of a longer run, so the
curve is drawn from runs of growing length.

    python benchmarks/bench_learning.py [--root DIR] [--max-size 224] [--output FILE]
"""

import argparse
import time
from pathlib import Path

import numpy as np
from bench_orl import CREDIT, DEFAULT_ROOT, _load

from skretrieval.extraction import CNNFeatureExtractor
from skretrieval.learning import EmbeddingLearner, RetrievalFineTuner
from skretrieval.neighbors import ImageRetriever
from skretrieval.pooling import GeMPooling
from skretrieval.whitening import LearnedWhitening, PCAWhitening

LOSSES = ("vmf", "pddm", "triplet", "contrastive")
CURVE_EPOCHS = (1, 2, 3, 5, 8, 12, 20, 30, 50)


def _load_split(root, seed=0):
    """Paths and labels of a seeded 5 / 5 split of each person's faces."""
    filenames, labels = _load(root)
    filenames = np.asarray(filenames, dtype=object)
    rng = np.random.default_rng(seed)
    train = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        train[rng.choice(members, size=len(members) // 2, replace=False)] = True
    return filenames[train], labels[train], filenames[~train], labels[~train]


def _test_map(train, y_train, test, y_test):
    return ImageRetriever(metric="cosine").fit(train, y_train).score(test, y_test)


def _timed_fit(estimator, X, y):
    start = time.perf_counter()
    estimator.fit(X, y)
    return estimator, time.perf_counter() - start


def _curves(train, y_train, test, y_test):
    """Per loss: training loss per epoch and test mAP after 1, 2, 3, 5, ... epochs."""
    curves = {}
    for loss in LOSSES:
        maps = []
        for epochs in CURVE_EPOCHS:
            learner = EmbeddingLearner(
                loss, max_epochs=epochs, early_stopping=False, random_state=0
            ).fit(train, y_train)
            maps.append(
                _test_map(learner.transform(train), y_train, learner.transform(test), y_test)
            )
        curves[loss] = (np.asarray(learner.loss_curve_), np.asarray(maps))
        print(f"  curve {loss}: mAP {' '.join(f'{m:.3f}' for m in maps)}", flush=True)
    return curves


def _plot(curves, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for loss, (loss_curve, maps) in curves.items():
        # The losses have different scales: each curve relative to its first epoch.
        left.plot(np.arange(1, len(loss_curve) + 1), loss_curve / loss_curve[0], label=loss)
        right.plot(CURVE_EPOCHS, maps, marker="o", label=loss)
    left.set(xlabel="epoch", ylabel="training loss / first epoch's", title="Training loss")
    right.set(xlabel="epochs", ylabel="test mAP", title="Test mAP (ORL, 5 / 5 split)")
    for axes in (left, right):
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="ORL folder")
    parser.add_argument("--max-size", type=int, default=224, help="longer image side, pixels")
    parser.add_argument("--finetune-epochs", type=int, default=5, help="0 skips fine-tuning")
    parser.add_argument("--finetune-size", type=int, default=112, help="fine-tuning image side")
    parser.add_argument("--plot", type=Path, help="write the loss and mAP curves here (PNG)")
    parser.add_argument("--output", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)

    train_paths, y_train, test_paths, y_test = _load_split(args.root)
    extractor = CNNFeatureExtractor(max_size=args.max_size, pooling=GeMPooling(), verbose=False)
    start = time.perf_counter()
    extractor.fit()
    train, test = extractor.transform(list(train_paths)), extractor.transform(list(test_paths))
    extract_seconds = time.perf_counter() - start
    header = [
        f"{CREDIT}: {len(y_train)} training and {len(y_test)} test faces of "
        f"{len(np.unique(y_train))} people; test faces query the training faces.",
        f"CNNFeatureExtractor(backbone='mobilenet_v2', weights='imagenet', max_size="
        f"{args.max_size}, pooling=GeMPooling()): {train.shape[1]}-d, {extract_seconds:.1f} s.",
        "",
        "| descriptor | test mAP | fit (s) | epochs | s / epoch |",
        "|---|---:|---:|---:|---:|",
    ]
    print("\n".join(header), flush=True)
    rows = []

    def report(name, train_out, test_out, seconds=None, epochs=None):
        mean_ap = _test_map(train_out, y_train, test_out, y_test)
        timing = "| | |" if seconds is None else f"| {seconds:.2f} |"
        if seconds is not None:
            timing += f" {epochs} | {seconds / epochs:.3f} |" if epochs else " | |"
        rows.append(f"| {name} | {mean_ap:.4f} {timing}")
        print(rows[-1], flush=True)
        return mean_ap

    report("GeM (baseline)", train, test)
    pca, seconds = _timed_fit(PCAWhitening(), train, y_train)
    report("GeM + PCAWhitening", pca.transform(train), pca.transform(test), seconds)
    learned, seconds = _timed_fit(LearnedWhitening(shrinkage=0.1), train, y_train)
    report(
        "GeM + LearnedWhitening(shrinkage=0.1)",
        learned.transform(train),
        learned.transform(test),
        seconds,
    )

    best_loss, best_map = None, -1.0
    for loss in LOSSES:
        learner, seconds = _timed_fit(EmbeddingLearner(loss, random_state=0), train, y_train)
        mean_ap = report(
            f"GeM + EmbeddingLearner('{loss}')",
            learner.transform(train),
            learner.transform(test),
            seconds,
            learner.n_iter_,
        )
        if mean_ap > best_map:
            best_loss, best_map, best_learner = loss, mean_ap, learner

    embedded_train, embedded_test = best_learner.transform(train), best_learner.transform(test)
    learned, seconds = _timed_fit(LearnedWhitening(shrinkage=0.1), embedded_train, y_train)
    report(
        f"GeM + EmbeddingLearner('{best_loss}') + LearnedWhitening(shrinkage=0.1)",
        learned.transform(embedded_train),
        learned.transform(embedded_test),
        seconds,
    )

    if args.finetune_epochs:
        tuner = RetrievalFineTuner(
            pooling="gem",
            max_size=args.finetune_size,
            max_epochs=args.finetune_epochs,
            random_state=0,
            verbose=False,
        )
        tuner, seconds = _timed_fit(tuner, list(train_paths), y_train)
        report(
            f"RetrievalFineTuner(MobileNetV2 + GeM, {args.finetune_size} px)",
            tuner.transform(list(train_paths)),
            tuner.transform(list(test_paths)),
            seconds,
            tuner.n_iter_,
        )

    if args.plot is not None:
        _plot(_curves(train, y_train, test, y_test), args.plot)
        print(f"curves written to {args.plot}")
    if args.output is not None:
        args.output.write_text("\n".join(header + rows) + "\n")


if __name__ == "__main__":
    main()
