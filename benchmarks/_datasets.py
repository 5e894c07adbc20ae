"""Datasets shared by several benchmark scripts.

The harder Copydays-style set: every offline photo (``sources="all"``, 11 photos) and 9 copies
each made only with the hardest transforms (``"strong"`` chains, ``"extreme"`` crops and
rescales, ``"occlude"``), 110 images at ``max_size=256``. Retrieval on it is far from
saturated (the best global pipelines of ``bench_defaults.py`` reach about 0.49 mAP), where the
plain ``make_copydays()`` set is near 0.99 for most of them.
"""

from skretrieval.datasets import make_copydays

HARD_COPYDAYS_TRANSFORMS = ("strong", "extreme", "occlude")


def hard_copydays(max_size=256, random_state=0, return_X_y=False):
    """The harder Copydays-style set: 11 photos and 99 hard copies.

    Parameters
    ----------
    max_size : int, default=256
        Longest side of the generated images, in pixels.
    random_state : int, default=0
        Seed of the copy transforms.
    return_X_y : bool, default=False
        Return ``(images, target)`` instead of the bunch, as ``make_copydays`` does.

    Returns
    -------
    data : Bunch or tuple
        What :func:`skretrieval.datasets.make_copydays` returns.
    """
    return make_copydays(
        n_copies_per_image=9,
        sources="all",
        transforms=list(HARD_COPYDAYS_TRANSFORMS),
        max_size=max_size,
        random_state=random_state,
        return_X_y=return_X_y,
    )
