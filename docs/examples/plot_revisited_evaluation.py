"""
Evaluating on a revisited Oxford/Paris-style benchmark
======================================================

The revisited Oxford and Paris benchmarks (Radenovic et al. 2018) label every database image
of every query as easy, hard, unclear (junk) or negative, and score a ranking in three
settings: easy, medium and hard. This example writes a miniature benchmark in exactly their
file format from the photos that ship with scikit-image and scikit-learn, loads it with
:func:`~skretrieval.datasets.load_revisited`, evaluates two pipelines with
:func:`~skretrieval.evaluation.evaluate_benchmark` and shows a ranking with its labels. The
same code runs on the real ROxford5k and RParis6k once they are downloaded.
"""

# %%
# Images: queries, positives, junk and distractors
# ------------------------------------------------
# Five photos play the landmarks that are queried. Their database images are copies made by
# :func:`~skretrieval.datasets.make_copydays`: mild ones (JPEG re-encoding, colour change,
# downscaling) are the *easy* positives; chains of edits are the *hard* ones (``"strong"``:
# crop, tilt, colour change, rescale and JPEG; ``"extreme"``: a fifth to two fifths of the
# photo, tilted, occluded, at JPEG quality 5 to 12); a bare corner of the photo, three tenths
# of its width and height, shows so little of it that it is *junk*, like the benchmark's images
# on which even a person cannot tell the landmark. Six other photos and their copies are
# distractors; they, and the images of the other landmarks, are the negatives of a query.
import pickle
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from skretrieval.datasets import (
    MissingDatasetFilesError,
    crop_queries,
    load_revisited,
    make_copydays,
)
from skretrieval.evaluation import describe_benchmark, evaluate_benchmark, score_benchmark
from skretrieval.extraction import CNNFeatureExtractor
from skretrieval.metrics import evaluate_revisited
from skretrieval.neighbors import ImageRetriever
from skretrieval.plotting import plot_retrieval_grid
from skretrieval.pooling import GeMPooling


def corner(image, random_state):
    """A corner of the photo, 3/10 of its width and height: too little to tell what it shows."""
    width, height = image.size
    left = random_state.choice([0, width - 3 * width // 10])
    top = random_state.choice([0, height - 3 * height // 10])
    return image.crop((left, top, left + 3 * width // 10, top + 3 * height // 10))


EASY = ("jpeg", "color", "scale")
HARD = ("strong", "extreme", "extreme")
JUNK = (corner, corner)
# Query regions [x1, y1, x2, y2] as fractions of each photo's width and height.
QUERY_BOXES = {
    "astronaut": (0.1, 0.0, 0.75, 1.0),
    "coffee": (0.15, 0.1, 0.85, 0.9),
    "chelsea": (0.25, 0.05, 0.85, 0.95),
    "rocket": (0.3, 0.0, 0.75, 1.0),
    "china": (0.05, 0.05, 0.65, 0.85),
}
DISTRACTORS = ("camera", "coins", "hubble_deep_field", "immunohistochemistry", "clock", "flower")

landmarks = make_copydays(
    n_copies_per_image=len(EASY + HARD + JUNK),
    sources=list(QUERY_BOXES),
    transforms=EASY + HARD + JUNK,
    max_size=256,
    random_state=0,
)
distractors = make_copydays(
    n_copies_per_image=4, sources=list(DISTRACTORS), max_size=256, random_state=0
)


# %%
# The benchmark's files
# ---------------------
# A revisited benchmark is a folder ``<root>/<name>/`` with the images under ``jpg/`` as
# ``<image>.jpg`` and the ground truth in ``gnd_<name>.pkl``: a pickled dict with
#
# * ``imlist``: the database image names (without ``.jpg``), in index order;
# * ``qimlist``: the query image names;
# * ``gnd``: one dict per query, with ``bbx``, the query region ``[x1, y1, x2, y2]`` in
#   pixels, and ``easy``, ``hard`` and ``junk``, lists of indices into ``imlist``. Every image
#   in none of them is a negative.
#
# :func:`~skretrieval.datasets.load_revisited` reads the two published benchmarks by their
# names, ``roxford5k`` and ``rparis6k``, and a benchmark of your own in the same format by its
# folder name: here ``miniature``.
def save_jpeg(pixels, path):
    Image.fromarray(pixels).save(path, quality=95)


workdir = tempfile.TemporaryDirectory()
root = Path(workdir.name)
images_dir = root / "miniature" / "jpg"
images_dir.mkdir(parents=True)

imlist, labels = [], []  # labels: (landmark, "easy" / "hard" / "junk") or None for negatives
for i in np.flatnonzero(~landmarks.is_original):
    landmark = landmarks.target_names[landmarks.target[i]]
    family = landmarks.transform_family[i]
    kind = "easy" if family in EASY else "hard" if family in HARD else "junk"
    imlist.append(f"{landmark}_{kind}_{len(imlist):03d}")
    labels.append((landmark, kind))
    save_jpeg(landmarks.images[i], images_dir / f"{imlist[-1]}.jpg")
for i, pixels in enumerate(distractors.images):
    imlist.append(f"{distractors.target_names[distractors.target[i]]}_{len(imlist):03d}")
    labels.append(None)
    save_jpeg(pixels, images_dir / f"{imlist[-1]}.jpg")

qimlist, gnd = [], []
for landmark, (x1, y1, x2, y2) in QUERY_BOXES.items():
    original = landmarks.images[list(landmarks.target_names).index(landmark)]
    height, width = original.shape[:2]
    qimlist.append(f"{landmark}_query")
    save_jpeg(original, images_dir / f"{qimlist[-1]}.jpg")
    gnd.append(
        {
            "bbx": [x1 * width, y1 * height, x2 * width, y2 * height],
            **{
                kind: [j for j, label in enumerate(labels) if label == (landmark, kind)]
                for kind in ("easy", "hard", "junk")
            },
        }
    )
with open(root / "miniature" / "gnd_miniature.pkl", "wb") as file:
    pickle.dump({"imlist": imlist, "qimlist": qimlist, "gnd": gnd}, file)

data = load_revisited(root, "miniature")
print(f"{len(data.query_filenames)} queries, {len(data.filenames)} database images")
print(f"ground truth of {qimlist[0]!r}:")
for key, value in data.gnd[0].items():
    print(f"  {key}: {np.asarray(value).tolist()}")

# %%
# The queries, cropped to their boxes as the protocol requires
# (:func:`~skretrieval.datasets.crop_queries` does it):
queries = crop_queries(data)
fig, axes = plt.subplots(1, len(queries), figsize=(2.2 * len(queries), 2.4))
for ax, query, name in zip(axes, queries, qimlist, strict=True):
    ax.imshow(query)
    ax.set_title(name, fontsize=9)
    ax.axis("off")
fig.tight_layout()

# %%
# The protocol
# ------------
# The three settings differ in which labelled images are positives and which are junk, removed
# from the ranking before it is scored (they neither help nor hurt):
#
# ========  =================  ================
# setting   positives          junk
# ========  =================  ================
# easy      easy               junk + hard
# medium    easy + hard        junk
# hard      hard               junk + easy
# ========  =================  ================
#
# Each reports the mean average precision over the queries (AP with the trapezoid
# interpolation of the Oxford reference code) and the mean precision at 1, 5 and 10 (mP@k,
# as the reference code computes it: over the first ``min(k, p)`` images, ``p`` the rank of
# the query's last positive, so that a query with fewer than ``k`` positives, all ranked
# first, still scores 1). The hard setting asks whether a method finds the difficult views at
# all, ignoring how well it ranks the easy ones.

# %%
# Two pipelines
# -------------
# :func:`~skretrieval.evaluation.evaluate_benchmark` describes the database and the cropped
# queries (fitting the pipeline on the database first), ranks the whole database for each
# query by cosine distance and scores the ranking in the three settings.
extractor = CNNFeatureExtractor(
    backbone="mobilenet_v2",
    weights="imagenet",
    max_size=256,
    pooling=GeMPooling(),
    device="cpu",
    verbose=False,
)
gem_rows = evaluate_benchmark(extractor, data)

# %%
# The second pipeline adds alpha query expansion (Radenovic, Tolias and Chum 2018): each query
# is searched again as the weighted sum of itself and its two nearest database images. It
# changes only the search, so the descriptors are computed once with
# :func:`~skretrieval.evaluation.describe_benchmark` (the first step of ``evaluate_benchmark``)
# and scored with other search settings by :func:`~skretrieval.evaluation.score_benchmark`.
database_descriptors, query_descriptors = describe_benchmark(extractor, data, fit=False)
expanded_rows = score_benchmark(
    data,
    database_descriptors,
    query_descriptors,
    retriever_params={"query_expansion": "alpha", "qe_neighbors": 2},
)

print(f"{'pipeline':<10}{'setting':<8}{'queries':>8}{'mAP':>7}{'mP@1':>7}{'mP@5':>7}{'mP@10':>7}")
for pipeline, rows in (("GeM", gem_rows), ("GeM + QE", expanded_rows)):
    for row in rows:
        print(
            f"{pipeline:<10}{row['protocol']:<8}{row['n_queries']:>8}{row['map']:>7.3f}"
            f"{row['mp@1']:>7.3f}{row['mp@5']:>7.3f}{row['mp@10']:>7.3f}"
        )

# %%
# mAP per setting for both pipelines:
settings = [row["protocol"] for row in gem_rows]
positions = np.arange(len(settings))
fig, ax = plt.subplots(figsize=(6, 3.5))
for offset, (pipeline, rows) in zip(
    (-0.2, 0.2), (("GeM", gem_rows), ("GeM + alpha-QE", expanded_rows)), strict=True
):
    bars = ax.bar(positions + offset, [row["map"] for row in rows], width=0.4, label=pipeline)
    ax.bar_label(bars, fmt="%.3f", fontsize=8)
ax.set_xticks(positions, settings)
ax.set_ylim(0, 1.1)
ax.set_ylabel("mAP")
ax.set_title("Miniature revisited benchmark")
ax.legend(loc="lower left")
fig.tight_layout()

# %%
# One ranking, labelled
# ---------------------
# :func:`~skretrieval.metrics.evaluate_revisited` is the metric underneath: it takes, for each
# query, the database indices best first, and the ground truth. The per-query average
# precisions it returns tell which queries fail.
retriever = ImageRetriever().fit(database_descriptors)
_, ranks = retriever.kneighbors(query_descriptors, n_neighbors=len(data.filenames))
results = evaluate_revisited(ranks, data.gnd)
for setting in settings:
    print(f"{setting:<7} AP per query:", np.round(results[setting]["ap"], 3))

# %%
# The top 8 of each query: green frames are easy positives, orange ones hard positives, gray
# ones junk and red ones negatives. The tags under the images give each one's label.
top = ranks[:, :8]
kind_of = np.full(top.shape, "negative", dtype=object)
for q, entry in enumerate(data.gnd):
    for kind in ("easy", "hard", "junk"):
        kind_of[q][np.isin(top[q], entry[kind])] = kind
fig = plot_retrieval_grid(
    queries,
    data.filenames,
    top,
    labels=kind_of,
    label_colors={
        "easy": "tab:green",
        "hard": "tab:orange",
        "junk": "tab:gray",
        "negative": "tab:red",
    },
    query_titles=qimlist,
)

# %%
# On the real benchmarks
# ----------------------
# The loaders never download: download ROxford5k or RParis6k yourself, into
# ``DIR/roxford5k/`` (or ``DIR/rparis6k/``) laid out as above. A missing file is a
# :class:`~skretrieval.datasets.MissingDatasetFilesError` whose message says what to download
# from where and where to put it:
downloads = root / "downloads"
for name in ("roxford5k", "rparis6k"):
    try:
        load_revisited(downloads, name)
    except MissingDatasetFilesError as error:
        print(str(error).replace(str(downloads), "DIR"), end="\n\n")
workdir.cleanup()

# %%
# Then ``load_revisited(DIR, "roxford5k")`` and the code above evaluate any pipeline on it, or
# from the command line::
#
#     skretrieval evaluate roxford5k --root DIR --pooling gem --max-size 1024
#
# At the usual resolution (``max_size=1024``, the extractor's default), describing the
# thousands of database images is the expensive step: run it on a GPU (``device="auto"``),
# keep the descriptors with ``describe_benchmark(..., cache=...)`` (``--cache`` on the command
# line) to score other search settings without describing again, or describe on a Dask
# cluster with ``describe_benchmark(..., client=...)`` (``--scheduler``). The original Paris6k
# images include 20 corrupt files: delete them and pass ``allow_missing=True``.
