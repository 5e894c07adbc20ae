"""Multi-scale descriptors and whitening for small collections: mAP on small benchmarks.

Datasets:

- Copydays-style: :func:`skretrieval.datasets.make_copydays` with all the offline photos
  (``sources="all"``) and 20 transformed copies each; relevant = other versions of the photo
  (``--copydays plain``).
- Harder Copydays-style: the set of ``bench_defaults.py`` (``hard_copydays`` in
  ``_datasets.py``: 11 photos, 9 copies each made only with the ``"strong"``, ``"extreme"`` and
  ``"occlude"`` transforms) at 256 px (``--copydays hard``). ``--copydays both`` (the default)
  runs the two.
- ORL faces (Olivetti Research Laboratory / AT&T Laboratories Cambridge; Samaria and Harter,
  1994): 40 people, 10 faces each, at ``../shared/data/orl_faces`` (or ``--orl-root``);
  relevant = same person. Skipped, with a note, when the folder is missing, or with
  ``--no-orl``.

Every descriptor comes from pretrained MobileNetV2 (ImageNet weights, as ``skretrieval demo``).
Three measurements, all leave-one-out (each image queries all the others it is searched with),
mAP with ``"step"`` interpolation:

1. single scale against multi-scale (``CNNFeatureExtractor(scales=(1, 2**-0.5, 0.5))``) for
   GeM (generalised mean over scales) and R-MAC (sum over scales), on the whole collection;
2. R-MAC with and without regional whitening (``RMAC(region_whitening=PCAWhitening(k))``),
   learned on other images than those searched: the groups (photos, people) are split in two
   halves, the whitening is learned on one and the other is searched, and the two directions
   are averaged, as ``skretrieval demo`` does;
3. ``PCAWhitening(n_components=128, shrinkage=s)`` of GeM descriptors learned on small training
   sets (20, 50, 200 images drawn from the other half; fewer where the half has fewer), for
   ``s`` in 0, 0.1, 0.5; mean over the two halves and three random draws. ``n_components``
   above what a training set allows is capped (with a warning, silenced here).

    python benchmarks/bench_multiscale_whitening.py [--orl-root DIR] [--no-orl]
        [--copydays {plain,hard,both}] [--output FILE]
"""

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
from _datasets import hard_copydays

from skretrieval.datasets import load_image_folder, make_copydays
from skretrieval.extraction import CNNFeatureExtractor
from skretrieval.metrics import mean_average_precision
from skretrieval.neighbors import ImageRetriever
from skretrieval.pooling import RMAC, GeMPooling
from skretrieval.whitening import PCAWhitening

ORL_ROOT = Path(__file__).resolve().parent.parent / ".." / "shared" / "data" / "orl_faces"
SCALES = (1, 2**-0.5, 0.5)
REGION_COMPONENTS = (64, 256)
TRAIN_SIZES = (20, 50, 200)
SHRINKAGES = (0.0, 0.1, 0.5)
N_DRAWS = 3


def _map(vectors, labels):
    """Leave-one-out mAP: each item queries all the others."""
    retriever = ImageRetriever(metric="cosine").fit(vectors)
    distances, indices = retriever.kneighbors(n_neighbors=len(labels) - 1)
    return mean_average_precision(labels[indices] == labels[:, None], -distances)


def _halves(labels):
    """The two halves of the groups: boolean masks of the images of even and odd groups."""
    groups = np.unique(labels)
    first = np.isin(labels, groups[::2])
    return first, ~first


def _datasets(orl_root, copydays, notes):
    if copydays in ("plain", "both"):
        data = make_copydays(n_copies_per_image=20, sources="all", max_size=384, random_state=0)
        yield "Copydays-style", list(data.images), np.asarray(data.target), 384
    if copydays in ("hard", "both"):
        data = hard_copydays(max_size=256)
        yield "Harder Copydays-style", list(data.images), np.asarray(data.target), 256
    if orl_root is None:
        return
    if not Path(orl_root).is_dir():
        notes.append(f"ORL faces not found at {orl_root}: skipped.")
        return
    orl = load_image_folder(orl_root, extensions=(".pgm",))
    yield "ORL faces", list(orl.filenames), np.asarray(orl.target), 224


def _measure(name, images, labels, max_size, rows):
    extractor = CNNFeatureExtractor(max_size=max_size, verbose=False).fit()
    start = time.perf_counter()
    maps = extractor.transform(images)
    single_seconds = time.perf_counter() - start
    print(
        f"{name}: {len(images)} images, {len(np.unique(labels))} groups, feature maps at "
        f"{max_size} px in {single_seconds:.1f} s",
        flush=True,
    )

    def row(section, pipeline, score, seconds=None):
        rows.append((name, section, pipeline, score, seconds))
        timing = "" if seconds is None else f"  ({seconds:.1f} s)"
        print(f"  {section:>18s} | {pipeline:52s} {score:.4f}{timing}", flush=True)

    # 1. Single scale against multi-scale.
    for label, pooling in (("GeM", GeMPooling()), ("R-MAC", RMAC())):
        row("scales", f"{label}, max_size {max_size}", _map(pooling.fit_transform(maps), labels))
        start = time.perf_counter()
        multi = extractor.set_params(pooling=pooling, scales=SCALES).transform(images)
        seconds = time.perf_counter() - start
        sizes = "/".join(str(max(1, round(max_size * s))) for s in SCALES)
        row("scales", f"{label}, scales {sizes}", _map(multi, labels), seconds)
    extractor.set_params(pooling=None, scales=None)

    # 2. R-MAC with and without regional whitening, learned on the other half.
    halves = _halves(labels)

    def half_protocol(describe):
        scores = []
        for searched in halves:
            train = [maps[i] for i in np.flatnonzero(~searched)]
            test = [maps[i] for i in np.flatnonzero(searched)]
            scores.append(_map(describe(train, test), labels[searched]))
        return float(np.mean(scores))

    row(
        "regional whitening", "R-MAC", half_protocol(lambda train, test: RMAC().fit_transform(test))
    )
    for k in REGION_COMPONENTS:
        rmac = RMAC(region_whitening=PCAWhitening(n_components=k))
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            score = half_protocol(lambda train, test, rmac=rmac: rmac.fit(train).transform(test))
        row(
            "regional whitening",
            f"R-MAC + regional PCAWhitening({k})",
            score,
            time.perf_counter() - start,
        )
    row(
        "regional whitening",
        "R-MAC + PCAWhitening(128) of the sums",
        half_protocol(lambda train, test: _pca_after(RMAC(), train, test)),
    )

    # 3. PCA whitening of GeM descriptors learned on small training sets, with shrinkage.
    gem = GeMPooling().fit_transform(maps)
    baseline = np.mean([_map(gem[searched], labels[searched]) for searched in halves])
    row("shrinkage", "GeM, no whitening", baseline)
    rng = np.random.default_rng(0)
    for n_train in TRAIN_SIZES:
        draws = []
        for searched in halves:
            pool = np.flatnonzero(~searched)
            size = min(n_train, len(pool))
            draws.extend((searched, rng.choice(pool, size, replace=False)) for _ in range(N_DRAWS))
        # The two halves may cap the draws at different sizes: name both.
        size = "/".join(str(n) for n in sorted({len(train) for _, train in draws}))
        for shrinkage in SHRINKAGES:
            scores = []
            for searched, train in draws:
                whitening = PCAWhitening(n_components=128, shrinkage=shrinkage)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    whitening.fit(gem[train])
                scores.append(_map(whitening.transform(gem[searched]), labels[searched]))
            row(
                "shrinkage",
                f"GeM + PCAWhitening(128, shrinkage={shrinkage}), {size} train",
                float(np.mean(scores)),
            )


def _pca_after(pooling, train, test):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        whitening = PCAWhitening(n_components=128).fit(pooling.fit_transform(train))
    return whitening.transform(pooling.transform(test))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orl-root", type=Path, default=ORL_ROOT, help="ORL faces folder")
    parser.add_argument("--no-orl", action="store_true", help="skip the ORL faces")
    parser.add_argument(
        "--copydays",
        choices=("plain", "hard", "both"),
        default="both",
        help="which Copydays-style set(s): the plain one, the harder one (default: both)",
    )
    parser.add_argument("--output", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    rows, notes = [], []
    start = time.perf_counter()
    orl_root = None if args.no_orl else args.orl_root
    for name, images, labels, max_size in _datasets(orl_root, args.copydays, notes):
        _measure(name, images, labels, max_size, rows)
    lines = ["| dataset | measurement | pipeline | mAP |", "|---|---|---|---:|"]
    lines += [f"| {d} | {s} | {p} | {score:.4f} |" for d, s, p, score, _ in rows]
    lines += [f"\n{note}" for note in notes]
    lines.append(f"\nTotal {time.perf_counter() - start:.0f} s.")
    print("\n".join(lines))
    if args.output is not None:
        args.output.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
