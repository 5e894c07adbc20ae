"""
Quick start: index a folder of photos and query it
==================================================

The photos that ship with scikit-image make a small database. Each is described by the
pretrained MobileNetV2 (ImageNet weights, available offline) followed by GeM pooling, and
:class:`~skretrieval.neighbors.ImageRetriever` ranks the database for queries that are edited
copies of some of the photos: a crop, a mirror image and a darker version.
"""

# %%
# The database: photos of scikit-image
# ------------------------------------
import numpy as np
from skimage import data

from skretrieval.extraction import CNNFeatureExtractor
from skretrieval.neighbors import ImageRetriever
from skretrieval.plotting import plot_retrieval_grid
from skretrieval.pooling import GeMPooling


def rgb(image):
    """The photo as an ``H x W x 3`` uint8 array (grayscale photos repeated on 3 channels)."""
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]


names = [
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "camera",
    "immunohistochemistry",
    "horse",
    "brick",
    "grass",
    "gravel",
]
database = [rgb(getattr(data, name)()) for name in names]
if database[names.index("horse")].dtype == bool:  # the horse is a binary silhouette
    database[names.index("horse")] = database[names.index("horse")].astype(np.uint8) * 255

# %%
# The queries: edited copies
# --------------------------
# A central crop of the astronaut, the coffee cup mirrored, and the rocket darkened.
astronaut, coffee, rocket = (
    database[names.index(name)] for name in ("astronaut", "coffee", "rocket")
)
h, w = astronaut.shape[:2]
queries = [
    astronaut[h // 8 : 7 * h // 8, w // 8 : 7 * w // 8],
    coffee[:, ::-1],
    (rocket * 0.6).astype(np.uint8),
]
expected = [names.index("astronaut"), names.index("coffee"), names.index("rocket")]

# %%
# Describe and search
# -------------------
# ``max_size=128`` resizes each photo so that its longer side is 128 pixels: enough to tell
# these photos apart, and quick on a CPU. With ``pooling=``, the extractor returns one GeM
# descriptor per image, L2-normalised.
extractor = CNNFeatureExtractor(
    backbone="mobilenet_v2",
    weights="imagenet",
    max_size=128,
    pooling=GeMPooling(),
    device="cpu",
    verbose=False,
)
database_descriptors = extractor.fit_transform(database)
query_descriptors = extractor.transform(queries)

retriever = ImageRetriever(n_neighbors=4).fit(database_descriptors)
distances, indices = retriever.kneighbors(query_descriptors)
for query, ranking, target in zip(["crop", "mirror", "darker"], indices, expected, strict=True):
    print(f"{query:>6}: top match {names[ranking[0]]!r} (expected {names[target]!r})")

# %%
# Show the rankings
# -----------------
# Each row is a query followed by its four nearest photos; green frames mark the photo the query
# was made from.
relevant = indices == np.array(expected)[:, None]
fig = plot_retrieval_grid(
    queries,
    database,
    indices,
    distances=distances,
    relevant=relevant,
    query_titles=["crop", "mirror", "darker"],
)

# %%
# At scale
# --------
# The same three steps describe, index and search real collections:
#
# - describe photos at ``max_size=512`` to ``1024`` and, for harder copies, at three scales
#   (``scales=(1, 2 ** -0.5, 0.5)``); ``device="auto"`` uses a GPU where there is one, in mixed
#   precision;
# - :func:`skretrieval.indexing.build_index` (``skretrieval index PHOTOS -o PHOTOS.index`` on
#   the command line) describes a folder in checkpointed chunks, resumes after a crash, skips
#   and lists unreadable files, and updates the index with new and changed files only;
# - the search is one matrix product per block of queries, exact, in bounded memory; for
#   millions of images, ``ImageRetriever(quantizer=ProductQuantizer(...))`` keeps a few bytes per
#   image (PQ or IVF-PQ, through faiss), and :mod:`skretrieval.distributed` spreads the
#   description and the search over a Dask cluster.
#
# ``benchmarks/README.md`` has the measured speed of each step.
