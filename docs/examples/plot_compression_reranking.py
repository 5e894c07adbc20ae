"""
Compression and re-ranking: PQ, IVF-PQ, query expansion, DBA
============================================================

Two things happen to a retrieval system once the collection grows: the descriptors no longer
fit in memory as float vectors, and the first ranking is worth refining with what the
database itself knows. :class:`~skretrieval.neighbors.ImageRetriever` does both:

- ``quantizer=ProductQuantizer(...)`` stores the database as product-quantisation codes of a
  few bytes per vector (Jégou, Douze and Schmid 2011), optionally behind an inverted file
  (IVF-PQ) that visits only a few cells per query;
- ``query_expansion``, ``dba_neighbors`` and ``rerank`` re-rank with the neighbours of the
  query and of the database items: query expansion (Chum et al. 2007), database-side
  augmentation (Arandjelović and Zisserman 2012), diffusion (Iscen et al. 2017) and
  k-reciprocal re-ranking (Zhong et al. 2017).

Compression needs many vectors to be measurable (a codebook of 256 centroids per sub-space
nearly memorises a database of a few hundred), so it is measured on 20,000 synthetic
descriptors with the structure of real ones; re-ranking is measured on descriptors of real
photos.
"""

# %%
# A collection of 20,000 descriptors
# ----------------------------------
# 1,000 objects seen 21 times each, 128 dimensions. Each object has a centre, each view is the
# centre plus noise, and both are drawn with a variance that decays along the axes, as the
# variance of PCA-reduced CNN descriptors decays along the principal axes; all vectors are
# L2-normalised. One view of every object is a query, the other 20,000 views are the
# database; a database view is relevant when it shows the query's object.
import time

import matplotlib.pyplot as plt
import numpy as np

from skretrieval.datasets import make_copydays
from skretrieval.extraction import CNNFeatureExtractor
from skretrieval.neighbors import ImageRetriever
from skretrieval.pooling import GeMPooling
from skretrieval.quantization import ProductQuantizer

rng = np.random.default_rng(0)
n_objects, n_views, n_features = 1000, 21, 128
axis_scale = np.arange(1, n_features + 1) ** -0.5
centres = rng.normal(size=(n_objects, n_features)) * axis_scale
views = np.repeat(centres, n_views, axis=0)
views += 0.7 * rng.normal(size=views.shape) * axis_scale
views = (views / np.linalg.norm(views, axis=1, keepdims=True)).astype(np.float32)
objects = np.repeat(np.arange(n_objects), n_views)

is_query = np.arange(len(objects)) % n_views == 0
queries, query_objects = views[is_query], objects[is_query]
database, database_objects = views[~is_query], objects[~is_query]
print(f"database {database.shape}, {len(queries)} queries")

# %%
# mAP of the top 100
# ------------------
# An inverted file only looks at part of the database, so the mAP is computed from the ranked
# lists that :meth:`~skretrieval.neighbors.ImageRetriever.kneighbors` returns: the top 100,
# enough for the 20 relevant views of every query; a relevant view outside the list counts as
# missed. (:meth:`~skretrieval.neighbors.ImageRetriever.score` would rank the whole decoded
# database and so ignore the inverted lists.) The time per query is that of ``kneighbors``
# over all 1,000 queries, the best of three runs, measured in this run.
N_RETURNED = 100


def map_of_ranked_lists(indices, relevant_per_query=n_views - 1):
    """Mean over the queries of the average precision of their ranked lists."""
    relevant = database_objects[indices] == query_objects[:, None]
    precision = np.cumsum(relevant, axis=1) / np.arange(1, indices.shape[1] + 1)
    return np.mean((precision * relevant).sum(axis=1) / relevant_per_query)


def search_ms_per_query(retriever, queries, n_neighbors, repeats=3):
    """Best of ``repeats`` timings of ``kneighbors``, in milliseconds per query, and its result."""
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        indices = retriever.kneighbors(queries, n_neighbors, return_distance=False)
        timings.append(time.perf_counter() - start)
    return 1000 * min(timings) / len(queries), indices


def measure_compression(quantizer=None):
    start = time.perf_counter()
    retriever = ImageRetriever(metric="cosine", quantizer=quantizer).fit(database)
    fit_seconds = time.perf_counter() - start
    search_ms, indices = search_ms_per_query(retriever, queries, N_RETURNED)
    if quantizer is None:
        bytes_per_vector = database.dtype.itemsize * n_features
    else:
        bytes_per_vector = retriever.quantizer_.code_size_
    return {
        "mAP@100": map_of_ranked_lists(indices),
        "bytes/vector": bytes_per_vector,
        "fit (s)": fit_seconds,
        "ms/query": search_ms,
    }


# %%
# Exact search, PQ and IVF-PQ
# ---------------------------
# ``ProductQuantizer(n_subquantizers=M, n_bits=8)`` cuts each vector into M sub-vectors and
# stores each as one byte, the index of its nearest centroid among 256: M bytes instead of
# 512. Search compares the raw query with the decoded database vectors (asymmetric distance).
# With ``n_lists=128``, each vector is first assigned to one of 128 coarse cells, its residual
# is quantised, and a query visits only the ``n_probe`` nearest cells (the cell number adds
# one byte to the code). faiss trains the k-means codebooks; it wants about 39 training
# vectors per centroid, here 20,000 for 256 centroids per sub-space and 156 per coarse cell.
compression = {"exact (float32)": measure_compression()}
for n_subquantizers in (4, 8, 16):
    compression[f"PQ {n_subquantizers} B"] = measure_compression(
        ProductQuantizer(n_subquantizers=n_subquantizers, n_bits=8, random_state=0)
    )
for n_probe in (4, 16, 64):
    compression[f"IVF128-PQ 16 B, n_probe={n_probe}"] = measure_compression(
        ProductQuantizer(n_subquantizers=16, n_bits=8, n_lists=128, n_probe=n_probe, random_state=0)
    )

columns = ["mAP@100", "bytes/vector", "fit (s)", "ms/query"]
print(f"{'search':<30}" + "".join(f"{column:>14}" for column in columns))
for name, row in compression.items():
    print(
        f"{name:<30}{row['mAP@100']:>14.4f}{row['bytes/vector']:>14d}"
        f"{row['fit (s)']:>14.2f}{row['ms/query']:>14.3f}"
    )

# %%
# The trade-off
# -------------
# Left: accuracy against memory (log scale). Right: accuracy against search time per query.
fig, (memory_axis, time_axis) = plt.subplots(1, 2, figsize=(10, 4))
groups = {
    "exact": ["exact (float32)"],
    "PQ": [name for name in compression if name.startswith("PQ")],
    "IVF128-PQ 16 B": [name for name in compression if name.startswith("IVF")],
}
for (label, names), marker in zip(groups.items(), ["s", "o-", "^"], strict=True):
    rows = [compression[name] for name in names]
    maps = [row["mAP@100"] for row in rows]
    memory_axis.plot([row["bytes/vector"] for row in rows], maps, marker, label=label)
    time_axis.plot([row["ms/query"] for row in rows], maps, marker, label=label)
for name, row in compression.items():
    short_name = name.replace("IVF128-PQ 16 B, ", "").replace(" (float32)", "")
    for axis, x in ((memory_axis, row["bytes/vector"]), (time_axis, row["ms/query"])):
        axis.annotate(
            short_name,
            (x, row["mAP@100"]),
            fontsize=8,
            xytext=(4, -10),
            textcoords="offset points",
        )
memory_axis.set(
    xscale="log",
    xlim=(2, 2000),
    xlabel="bytes per vector",
    ylabel="mAP of the top 100",
    title="Memory",
)
time_axis.set(xlabel="search time per query (ms, this run)", title="Speed")
memory_axis.legend(loc="lower right")
fig.tight_layout()

# %%
# Each halving of the code costs mAP; 16 bytes, 32 times less memory than float32, keep
# most of it. Plain PQ saves memory, not time: it still scores every database code, and at
# this size exact search is one fast matrix product. The inverted file is what makes search
# faster, when it visits a small fraction of the cells, and it misses the relevant views
# stored in the cells it does not visit: the fewer cells, the faster and the lower the mAP.
# Encoding the residuals from the cell centres also makes 16-byte IVF-PQ codes more accurate
# than plain 16-byte PQ codes, which shows once enough cells are visited.
#
# Real photos: a hard copy-detection set
# --------------------------------------
# :func:`~skretrieval.datasets.make_copydays` builds a copy-detection set from the photos
# that ship with scikit-image and scikit-learn; with only the strongest edits (chains of
# crops, tilts, colour changes, occlusions and heavy JPEG) it is hard for a global
# descriptor. Each image is described by MobileNetV2 (ImageNet weights) and GeM pooling at
# 128 pixels. Ten copies of every photo query the rest of the set.
images, photos = make_copydays(
    40,
    sources="all",
    transforms=["strong", "extreme", "occlude"],
    max_size=128,
    random_state=0,
    return_X_y=True,
)
extractor = CNNFeatureExtractor(
    backbone="mobilenet_v2",
    weights="imagenet",
    max_size=128,
    pooling=GeMPooling(),
    device="cpu",
    verbose=False,
)
start = time.perf_counter()
descriptors = extractor.fit_transform(images)
print(
    f"{len(images)} images of {len(np.unique(photos))} photos, "
    f"described in {time.perf_counter() - start:.1f} s: {descriptors.shape}"
)

is_photo_query = np.zeros(len(photos), dtype=bool)
copy_rng = np.random.default_rng(0)
for photo in np.unique(photos):
    copies = np.flatnonzero(photos == photo)[1:]  # not the original
    is_photo_query[copy_rng.choice(copies, 10, replace=False)] = True
photo_queries, query_photos = descriptors[is_photo_query], photos[is_photo_query]
photo_database, database_photos = descriptors[~is_photo_query], photos[~is_photo_query]

# %%
# Query expansion, DBA, diffusion and k-reciprocal re-ranking
# -----------------------------------------------------------
# - ``query_expansion="average"`` searches again with the query plus its
#   ``qe_neighbors`` first results (AQE); ``"alpha"`` weights each result by its cosine
#   similarity to the query to the power ``qe_alpha`` (alpha-QE, Radenović et al. 2018).
# - ``dba_neighbors`` replaces each database vector, at ``fit``, by the sum of itself and its
#   nearest database neighbours (DBA); ``dba_alpha`` weights them as alpha-QE does.
# - ``rerank="diffusion"`` spreads the query's similarities over the k-nearest-neighbour
#   graph of the database; ``rerank="k_reciprocal"`` mixes the distance with the Jaccard
#   distance of the k-reciprocal neighbourhoods.
#
# Here the mAP ranks the whole database (:meth:`~skretrieval.neighbors.ImageRetriever.score`).
reranking_options = {
    "exact": {},
    "AQE, k=2": {"query_expansion": "average", "qe_neighbors": 2},
    "alpha-QE, k=3": {"query_expansion": "alpha", "qe_neighbors": 3},
    "DBA, k=2": {"dba_neighbors": 2},
    "alpha-DBA + alpha-QE, k=3": {
        "dba_neighbors": 3,
        "dba_alpha": 3.0,
        "query_expansion": "alpha",
        "qe_neighbors": 3,
    },
    "diffusion, k=10": {"rerank": "diffusion", "rerank_neighbors": 10},
    "k-reciprocal, k1=20, k2=6": {"rerank": "k_reciprocal"},
    "PQ 16 B, 4-bit": {"quantizer": ProductQuantizer(n_subquantizers=32, n_bits=4, random_state=0)},
}
reranking = {}
for name, options in reranking_options.items():
    start = time.perf_counter()
    retriever = ImageRetriever(metric="cosine", **options).fit(photo_database, database_photos)
    fit_ms = 1000 * (time.perf_counter() - start)
    search_ms, _ = search_ms_per_query(retriever, photo_queries, 10)
    bytes_per_vector = (
        retriever.quantizer_.code_size_
        if retriever.quantizer_ is not None
        else photo_database.dtype.itemsize * photo_database.shape[1]
    )
    reranking[name] = {
        "mAP": retriever.score(photo_queries, query_photos),
        "bytes/vector": bytes_per_vector,
        "fit (ms)": fit_ms,
        "ms/query": search_ms,
    }

print(f"{'search':<27}{'mAP':>8}{'gain':>9}{'bytes/vector':>14}{'fit (ms)':>10}{'ms/query':>10}")
for name, row in reranking.items():
    gain = row["mAP"] - reranking["exact"]["mAP"]
    print(
        f"{name:<27}{row['mAP']:>8.4f}{gain:>+9.4f}{row['bytes/vector']:>14d}"
        f"{row['fit (ms)']:>10.1f}{row['ms/query']:>10.3f}"
    )

# %%
# The last row stores the 1,280-dimensional descriptors as 32 sub-vectors of 4 bits (16
# centroids each): with 256 centroids per sub-space, a database of 300-odd vectors would be
# nearly memorised and look lossless.
names = list(reranking)[1:]
gains = [reranking[name]["mAP"] - reranking["exact"]["mAP"] for name in names]
fig, axis = plt.subplots(figsize=(7, 3.5))
bars = axis.barh(names, gains, color=["C2" if gain > 0 else "C3" for gain in gains])
axis.bar_label(bars, fmt="%+.3f", padding=3)
axis.axvline(0, color="black", linewidth=0.8)
axis.invert_yaxis()
axis.margins(x=0.25)
axis.set(
    xlabel="mAP gain over exact search",
    title=f"Hard copies of real photos (exact mAP {reranking['exact']['mAP']:.3f})",
)
fig.tight_layout()

# %%
# Every re-ranking builds on the neighbours of the first ranking, so it helps as much as
# those neighbours are right; here the descriptor confuses many copies with other photos,
# and the gains are a few points of mAP. Which option is best, and with which ``k``, depends
# on the data: ``benchmarks/README.md`` (section "Re-ranking") measures them on the ORL
# faces and on a smaller set of these hard copies (9 copies per photo, 256 pixels), where
# k-reciprocal re-ranking with ``k1=5`` and alpha-DBA + alpha-QE gained the most and
# diffusion lost at every ``k`` tried: 9 relevant images per query make small compact
# clusters, not the manifolds that diffusion is made for (here each query has 31). Tune
# ``rerank_neighbors``, ``qe_neighbors`` and ``dba_neighbors`` with ``GridSearchCV`` and
# the mAP scorers of :mod:`skretrieval.metrics`.
#
# At scale
# --------
# ``benchmarks/README.md`` (section "Search at scale") measures a database of 1,000,000
# vectors of 128 dimensions on a 2-core CPU: exact search is about as fast as faiss's
# ``IndexFlatIP`` and holds 488 MiB; 16-byte PQ codes hold 15 MiB, and IVF-PQ with 1,024
# lists, 16 of them visited, answers 6-13 times faster than exact search. The quantizer is
# cloned at ``fit``, so ``quantizer__n_subquantizers`` or ``quantizer__n_probe`` can be tuned
# like any other parameter. Descriptors of a large collection are extracted and indexed on
# disk with :mod:`skretrieval.indexing`, or on a Dask cluster with
# :mod:`skretrieval.distributed`.
