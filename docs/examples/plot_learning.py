"""
Learning an embedding: vMF, PDDM, triplet and contrastive
=========================================================

When the database comes with labels (which images show the same object, person or digit),
a small network can learn an embedding of the descriptors in which images of a class are
close. :class:`~skretrieval.learning.EmbeddingLearner` trains one with one of four
metric-learning losses, and returns L2-normalised embeddings to search with
``ImageRetriever(metric="cosine")``.

Here the descriptors are the 64 pixels of scikit-learn's handwritten digits: half of the
images (with their labels) train the embedding and form the database, the other half query
it. The test mAP of each loss is compared with the raw pixels and with PCA. A last section
fine-tunes a whole CNN end to end with
:class:`~skretrieval.learning.RetrievalFineTuner`, on a few tiny photos.
"""

# %%
# The data: digits as descriptors
# -------------------------------
# ``train_test_split`` with ``stratify`` keeps every digit in both halves. The training
# images are the database; every test image queries it, and a database image is relevant
# when it shows the same digit.
import time

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.model_selection import train_test_split

from skretrieval.datasets import make_copydays
from skretrieval.learning import EmbeddingLearner, RetrievalFineTuner
from skretrieval.neighbors import ImageRetriever

descriptors, labels = load_digits(return_X_y=True)
train_descriptors, test_descriptors, train_labels, test_labels = train_test_split(
    descriptors, labels, test_size=0.5, stratify=labels, random_state=0
)
print(f"{len(train_labels)} database images, {len(test_labels)} queries, 64 pixels each")


def map_of_test_queries(database, queries):
    """mAP of the test queries against the training database, by cosine similarity."""
    retriever = ImageRetriever(metric="cosine").fit(database, train_labels)
    return retriever.score(queries, test_labels)


# %%
# Baselines: raw pixels and PCA
# -----------------------------
# No learning from the labels: the pixels themselves, and their projection on 32 principal
# axes (learned without labels on the training half).
test_maps = {"raw pixels": map_of_test_queries(train_descriptors, test_descriptors)}
pca = PCA(n_components=32, random_state=0).fit(train_descriptors)
test_maps["PCA (32)"] = map_of_test_queries(
    pca.transform(train_descriptors), pca.transform(test_descriptors)
)

# %%
# Four losses
# -----------
# Every learner maps the standardised pixels linearly to ``n_components=32`` dimensions and
# L2-normalises the result. The losses differ in what they ask of a batch (batches hold a few
# samples of each of several classes):
#
# - ``"vmf"``: each class is a von Mises-Fisher distribution on the unit sphere, with its
#   mean direction computed over the whole training set at the start of every epoch and a
#   concentration ``kappa`` shared by all classes; the loss is the cross-entropy of the
#   posterior of the true class, i.e. of the logits ``kappa * cosine(x, class mean)``
#   (Zhe, Chen and Yan 2018).
# - ``"pddm"``: a small position-dependent deep metric (PDDM) unit scores each pair from
#   ``|x_i - x_j|`` and ``(x_i + x_j) / 2``, so the similarity depends on where the pair
#   lies; it picks the hardest positive and negatives of each anchor, and a double-header
#   hinge loss trains it together with the embedding (Huang, Loy and Tang 2016).
# - ``"triplet"``: for each anchor, the farthest image of its class must be closer, by a
#   margin, than the nearest image of another class (batch-hard triplets).
# - ``"contrastive"``: every pair of the batch; images of a class are pulled together, images
#   of different classes pushed apart until they are a margin away.
#
# Early stopping (on by default) holds out 10% of each class of the training half, stops
# when their mAP has not improved for ``n_iter_no_change`` epochs, and keeps the weights of
# the best epoch. ``loss_curve_`` and ``validation_scores_`` record both per epoch.
losses = ["vmf", "pddm", "triplet", "contrastive"]
learners = {}
for loss in losses:
    learner = EmbeddingLearner(
        loss,
        n_components=32,
        max_epochs=60,
        n_iter_no_change=10,
        device="cpu",
        random_state=0,
        verbose=False,
    )
    start = time.perf_counter()
    learner.fit(train_descriptors, train_labels)
    fit_seconds = time.perf_counter() - start
    learners[loss] = learner
    test_maps[loss] = map_of_test_queries(
        learner.transform(train_descriptors), learner.transform(test_descriptors)
    )
    print(
        f"{loss:>11}: {learner.n_iter_:2d} epochs (best {learner.best_epoch_:2d}), "
        f"fit {fit_seconds:.1f} s"
    )

print()
print(f"{'descriptor':>14}  test mAP")
for name, score in test_maps.items():
    print(f"{name:>14}  {score:.4f}")

# %%
# Learning curves
# ---------------
# The losses live on different scales, so each training curve is divided by its first
# epoch's value. The right panel shows the validation mAP that early stopping watches, with
# a dot at the epoch whose weights were kept.
fig, (loss_axis, map_axis) = plt.subplots(1, 2, figsize=(10, 4))
for loss, learner in learners.items():
    epochs = np.arange(1, learner.n_iter_ + 1)
    curve = np.asarray(learner.loss_curve_)
    loss_axis.plot(epochs, curve / curve[0], label=loss)
    (line,) = map_axis.plot(epochs, learner.validation_scores_, label=loss)
    best = learner.best_epoch_
    map_axis.plot(best, learner.validation_scores_[best - 1], "o", color=line.get_color())
loss_axis.set(xlabel="epoch", ylabel="training loss / first epoch", title="Training loss")
map_axis.axhline(test_maps["raw pixels"], color="gray", linestyle=":", label="raw pixels (test)")
map_axis.set(xlabel="epoch", ylabel="mAP", title="Validation mAP")
map_axis.legend()
fig.tight_layout()

# %%
# The PDDM loss rises above its first value while its validation mAP climbs with the others:
# its quadruplets are mined with the scores of the PDDM unit, which trains at the same time,
# so its loss compares different quadruplets from epoch to epoch. The validation mAP is the
# curve to watch, and the one early stopping uses.
#
# Test mAP
# --------
fig, axis = plt.subplots(figsize=(7, 3))
names = list(test_maps)
bars = axis.barh(names, [test_maps[name] for name in names], color=["gray"] * 2 + ["C0"] * 4)
axis.bar_label(bars, fmt="%.3f", padding=3)
axis.invert_yaxis()
axis.set(xlabel="test mAP", xlim=(0, 1.1), title="Digits: test images querying training images")
fig.tight_layout()

# %%
# Classes never seen in training
# ------------------------------
# Image retrieval often searches for objects that were not in the training set. Trained on
# the digits 0 to 4 only (at most 30 epochs here), is the embedding still better than the
# pixels for the digits 5 to 9? Half of those images query the other half.
seen = labels < 5
unseen_descriptors, unseen_labels = descriptors[~seen], labels[~seen]
unseen_queries, unseen_database, unseen_query_labels, unseen_database_labels = train_test_split(
    unseen_descriptors,
    unseen_labels,
    test_size=0.5,
    stratify=unseen_labels,
    random_state=0,
)


def unseen_map(transform):
    retriever = ImageRetriever(metric="cosine").fit(
        transform(unseen_database), unseen_database_labels
    )
    return retriever.score(transform(unseen_queries), unseen_query_labels)


print(f"{'descriptor':>14}  mAP on digits 5-9 (trained on 0-4)")
print(f"{'raw pixels':>14}  {unseen_map(lambda X: X):.4f}")
for loss in losses:
    learner = EmbeddingLearner(
        loss, n_components=32, max_epochs=30, device="cpu", random_state=0, verbose=False
    ).fit(descriptors[seen], labels[seen])
    print(f"{loss:>14}  {unseen_map(learner.transform):.4f}")

# %%
# A linear map of 64 pixels trained on five digits learns to tell those five apart, and
# drops directions that the other five need. To generalise to new classes the embedding
# needs many training classes and richer descriptors (CNN descriptors of photos rather than
# pixels); keep a held-out set of classes, as here, to check it.

# %%
# End to end: fine-tuning a CNN
# -----------------------------
# :class:`~skretrieval.learning.RetrievalFineTuner` trains the network itself: a torchvision
# trunk, then R-MAC pooling with a whitening layer initialised by PCA, trained with a triplet
# ranking loss on tuples (query, positive, hard negatives mined from the current
# descriptors) as Gordo et al. (2017) do. Each training step runs the CNN forward and
# backward on every image of every tuple, which is slow on a CPU: this run is a toy, six
# photos with five edited copies each, at 64 pixels, for three epochs. It queries the
# training images with new copies of the same photos (made with another seed).
sources = ["astronaut", "coffee", "chelsea", "rocket", "camera", "china"]
train_images, train_photos = make_copydays(
    5, sources=sources, max_size=96, random_state=0, return_X_y=True
)
query_images, query_photos = make_copydays(
    5, sources=sources, max_size=96, random_state=1, return_X_y=True
)
n_sources = len(sources)  # the originals come first; keep only the new copies as queries
query_images, query_photos = query_images[n_sources:], query_photos[n_sources:]

tuner_maps = {}
for max_epochs in (0, 3):  # 0 epochs: the initial network, PCA-initialised whitening
    tuner = RetrievalFineTuner(
        backbone="mobilenet_v2",
        weights="imagenet",
        pooling="rmac",
        n_components=64,
        max_size=64,
        n_negatives=2,
        batch_size=6,
        learning_rate=1e-4,
        max_epochs=max_epochs,
        device="cpu",
        random_state=0,
        verbose=False,
    )
    start = time.perf_counter()
    tuner.fit(train_images, train_photos)
    fit_seconds = time.perf_counter() - start
    retriever = ImageRetriever(metric="cosine").fit(tuner.transform(train_images), train_photos)
    tuner_maps[max_epochs] = retriever.score(tuner.transform(query_images), query_photos)
    print(f"{max_epochs} epochs: mAP {tuner_maps[max_epochs]:.4f}, fit {fit_seconds:.1f} s")

fig, axis = plt.subplots(figsize=(5, 3))
axis.plot(np.arange(1, tuner.n_iter_ + 1), tuner.loss_curve_, "o-")
axis.set(
    xlabel="epoch",
    ylabel="triplet loss",
    title=f"RetrievalFineTuner, {len(train_images)} images at 64 px",
    xticks=np.arange(1, tuner.n_iter_ + 1),
)
fig.tight_layout()

# %%
# The queries are new copies of the training photos: the classes were seen in training, the
# easy case, and six photos are too few to learn anything that transfers to other photos.
# On the ORL faces (200 training faces at 112 pixels), ``benchmarks/README.md`` measures
# fine-tuning MobileNetV2 from 0.853 to 0.923 mAP in five epochs of about 64 s each on a
# 2-core CPU, where the four learners above, on GeM descriptors of the same faces, reach
# 0.94-0.98 in 1 to 17 s.
#
# At scale
# --------
# :class:`~skretrieval.learning.EmbeddingLearner` works on any global descriptors: describe
# the labelled images with :class:`~skretrieval.extraction.CNNFeatureExtractor` (GeM or
# R-MAC pooling) and train on those; it is a transformer, so it goes in a
# :class:`~sklearn.pipeline.Pipeline` in front of the retriever and its ``loss``,
# ``n_components`` or ``kappa`` can be tuned with ``GridSearchCV`` and the mAP scorers of
# :mod:`skretrieval.metrics`. Training runs on ``device="cuda"`` when there is a GPU
# (``"auto"`` picks it). :class:`~skretrieval.learning.RetrievalFineTuner` is the route when
# the backbone's features themselves must change; on a GPU it trains in float16 autocast,
# and ``save_weights`` / ``load_weights`` keep the trained network.
