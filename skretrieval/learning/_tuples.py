"""The fine-tuner's training tuples: label checks, hard negatives, tuples of an epoch."""

import numpy as np


def check_labels(images, y):
    """Integer codes of the labels ``y`` of ``images``: 2 classes or more, 2 images or more each."""
    if y is None:
        raise ValueError(
            "y is required: RetrievalFineTuner learns from labels (images with equal labels "
            "match); got y=None."
        )
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D, one label per image; got shape {y.shape}.")
    if len(y) != len(images):
        raise ValueError(f"X has {len(images)} images but y has {len(y)} labels.")
    classes, codes, counts = np.unique(y, return_inverse=True, return_counts=True)
    if len(classes) < 2:
        raise ValueError(
            f"y has a single class ({classes[0]!r}): at least 2 classes are needed to form "
            "negatives."
        )
    if (counts < 2).any():
        single = classes[counts < 2]
        raise ValueError(
            f"{len(single)} class(es) of y have a single image, e.g. {single[:3].tolist()}: "
            "every class needs at least 2 images to give a query its positive."
        )
    return codes


def mine_negatives(query_desc, query_labels, pool_desc, pool_labels, pool_indices, n_negatives):
    """Hard negatives of each query, mined from the pool.

    For each query the pool is ranked by Euclidean distance (descriptors are L2-normalised,
    so by decreasing dot product); walking down the ranking, the first image of each class
    other than the query's is kept, up to ``n_negatives`` (one per class, so that the negatives
    are not near-duplicates of each other). Returns a list of negative index arrays (training
    image indices); a query with no other class in the pool gets an empty array.
    """
    similarities = query_desc @ pool_desc.T
    ranking = np.argsort(-similarities, axis=1, kind="stable")
    negatives = []
    for query_label, ranked in zip(query_labels, ranking, strict=True):
        ranked_labels = pool_labels[ranked]
        others = ranked_labels != query_label
        candidates, candidate_labels = ranked[others], ranked_labels[others]
        _, first = np.unique(candidate_labels, return_index=True)
        chosen = candidates[np.sort(first)[:n_negatives]]
        negatives.append(pool_indices[chosen])
    return negatives


def tuple_batches(codes, members, negatives, batch_size, rng):
    """Yield the (query, positive, negative) rows of an epoch, ``batch_size`` queries at a time.

    Every image with negatives is the query once, in random order; its positive is a random
    other image of its class (``members[code]`` lists the images of each class), drawn anew
    every epoch, and it forms one row with each of its negatives.
    """
    queries = rng.permutation(len(codes))
    queries = queries[[len(negatives[query]) > 0 for query in queries]]
    for start in range(0, len(queries), batch_size):
        tuples = []
        for query in queries[start : start + batch_size]:
            same = members[codes[query]]
            positive = rng.choice(same[same != query])
            tuples.extend((query, positive, negative) for negative in negatives[query])
        yield tuples
