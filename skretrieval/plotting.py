"""Plots for image retrieval: ranked result grids and precision-recall curves.

Figures are created with :mod:`matplotlib.pyplot` (imported only when a function is called, so
importing this module needs neither matplotlib's start-up cost nor a display) and returned; the
library never calls ``plt.show()``. Save a figure with ``fig.savefig("grid.png")`` and close it
with ``plt.close(fig)`` when many are made in a loop.
"""

import itertools
import numbers
import os

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve

__all__ = ["plot_precision_recall", "plot_retrieval_grid"]

_RELEVANT_COLOR = "tab:green"
_IRRELEVANT_COLOR = "tab:red"
_QUERY_COLOR = "tab:blue"


def _load_display_image(image, name, max_side=512):
    """Return an array ``imshow`` can draw from an array, PIL image or image file path."""
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        try:
            with Image.open(image) as opened:
                image = opened.convert("RGB")
        except OSError as exc:
            raise ValueError(f"{name}: cannot read image file {str(image)!r}: {exc}") from exc
    if isinstance(image, Image.Image):
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        # Large photos are shrunk only for display: a grid cell is a couple of inches wide.
        if max(image.size) > max_side:
            image = image.copy()
            image.thumbnail((max_side, max_side))
        return np.asarray(image)
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ValueError(
            f"{name} must be an image: an array of shape (H, W), (H, W, 3) or (H, W, 4), a PIL "
            f"image or a file path; got an array of shape {array.shape}."
        )
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"{name} has non-numeric dtype {array.dtype}.")
    return array


def _check_int_or_none(value, name):
    if value is None:
        return None
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be None or a positive integer; got {value!r}.")
    return int(value)


def _check_same_shape(values, shape, name):
    array = np.asarray(values)
    if array.shape != shape:
        raise ValueError(
            f"{name} must have the shape of indices {shape}; got an array of shape {array.shape}."
        )
    return array


def _draw_image(ax, image):
    cmap = "gray" if image.ndim == 2 else None
    ax.imshow(image, cmap=cmap)
    # Keep the spines (used as coloured frames) but hide ticks.
    ax.set_xticks([])
    ax.set_yticks([])


def _frame(ax, color, width=4.0):
    for spine in ax.spines.values():
        spine.set_edgecolor(color)
        spine.set_linewidth(width)


def plot_retrieval_grid(
    query_images,
    database_images,
    indices,
    *,
    distances=None,
    relevant=None,
    labels=None,
    label_colors=None,
    query_titles=None,
    max_queries=10,
    ax_size=2.0,
):
    """Plot each query followed by its top-ranked database images, one row per query.

    Parameters
    ----------
    query_images : sequence of images
        Query images, one per row of ``indices``. An image is an array of shape (H, W),
        (H, W, 3) or (H, W, 4) (uint8, or float in [0, 1]), a :class:`PIL.Image.Image` or the
        path of an image file.
    database_images : sequence of images
        The database the indices point into, in the same formats. Only the images shown are
        read.
    indices : array-like of shape (n_queries, k)
        Database positions of the ranked results of each query, best first, as returned by
        ``ImageRetriever.kneighbors(..., return_distance=False)``.
    distances : array-like of shape (n_queries, k), default=None
        If given, each result is labelled with its distance.
    relevant : array-like of bool of shape (n_queries, k), default=None
        If given, each result is framed in green when relevant and in red when not.
    labels : array-like of str of shape (n_queries, k), default=None
        A category per result, instead of ``relevant``: written under the result and framing
        it in the category's colour, e.g. ``"easy"``, ``"hard"``, ``"junk"`` and
        ``"negative"`` for the revisited Oxford and Paris benchmarks.
    label_colors : dict, default=None
        Colour of each category of ``labels`` (any matplotlib colour). Categories it does not
        name take the colours of matplotlib's cycle, in order of first appearance.
    query_titles : sequence of str of length n_queries, default=None
        Titles of the query images; ``"query i"`` by default.
    max_queries : int or None, default=10
        Plot only the first ``max_queries`` queries; None plots all of them.
    ax_size : float, default=2.0
        Size in inches of each image cell.

    Returns
    -------
    fig : :class:`matplotlib.figure.Figure`
        The figure, with ``n_rows * (k + 1)`` axes in row-major order, where
        ``n_rows = min(n_queries, max_queries)``.

    Examples
    --------
    >>> import numpy as np
    >>> from skretrieval.plotting import plot_retrieval_grid
    >>> rng = np.random.RandomState(0)
    >>> images = [rng.randint(0, 256, size=(8, 8, 3), dtype=np.uint8) for _ in range(5)]
    >>> fig = plot_retrieval_grid(images[:2], images, [[0, 3, 4], [1, 2, 0]],
    ...                           relevant=[[True, False, False], [True, True, False]])
    >>> len(fig.axes)
    8
    >>> fig = plot_retrieval_grid(images[:1], images, [[0, 3, 4]],
    ...                           labels=[["easy", "junk", "negative"]],
    ...                           label_colors={"easy": "green", "negative": "red"})
    """
    import matplotlib.pyplot as plt

    indices = np.asarray(indices)
    if indices.ndim != 2:
        raise ValueError(
            f"indices must be a 2-D array of shape (n_queries, k); got shape {indices.shape}."
        )
    if indices.size and not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"indices must hold integer database positions; got {indices.dtype}.")
    n_queries, k = indices.shape
    if n_queries == 0:
        raise ValueError("indices has no rows: there is no query to plot.")
    if len(query_images) != n_queries:
        raise ValueError(
            f"query_images has {len(query_images)} images but indices has {n_queries} rows."
        )
    n_database = len(database_images)
    if indices.size and (indices.min() < 0 or indices.max() >= n_database):
        raise ValueError(
            f"indices must lie in [0, {n_database}) (the database size); got values from "
            f"{indices.min()} to {indices.max()}."
        )
    if distances is not None:
        distances = _check_same_shape(distances, indices.shape, "distances").astype(float)
    if relevant is not None:
        relevant = _check_same_shape(relevant, indices.shape, "relevant")
        if relevant.dtype != bool:
            if not np.isin(relevant, (0, 1)).all():
                raise ValueError("relevant must be boolean (or 0/1).")
            relevant = relevant.astype(bool)
    if labels is not None:
        if relevant is not None:
            raise ValueError("give relevant or labels, not both: both set the frames.")
        labels = _check_same_shape(labels, indices.shape, "labels").astype(str)
        label_colors = _label_colors(labels, label_colors)
    if query_titles is not None:
        if isinstance(query_titles, str) or len(query_titles) != n_queries:
            raise ValueError(
                f"query_titles must be a sequence of {n_queries} strings, one per query."
            )
    max_queries = _check_int_or_none(max_queries, "max_queries")
    if not isinstance(ax_size, numbers.Real) or ax_size <= 0:
        raise ValueError(f"ax_size must be a positive number; got {ax_size!r}.")

    n_rows = n_queries if max_queries is None else min(n_queries, max_queries)
    n_cols = k + 1
    # Extra height leaves room for the title above and the distance below each cell.
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(ax_size * n_cols, ax_size * n_rows * 1.2),
        squeeze=False,
    )
    for row in range(n_rows):
        query_ax = axes[row, 0]
        _draw_image(query_ax, _load_display_image(query_images[row], f"query_images[{row}]"))
        _frame(query_ax, _QUERY_COLOR)
        title = f"query {row}" if query_titles is None else str(query_titles[row])
        query_ax.set_title(title, fontsize=9, fontweight="bold")
        for rank in range(k):
            ax = axes[row, rank + 1]
            position = int(indices[row, rank])
            image = _load_display_image(database_images[position], f"database_images[{position}]")
            _draw_image(ax, image)
            ax.set_title(f"#{rank + 1}", fontsize=8)
            if relevant is not None:
                _frame(ax, _RELEVANT_COLOR if relevant[row, rank] else _IRRELEVANT_COLOR)
            caption = []
            if labels is not None:
                _frame(ax, label_colors[labels[row, rank]])
                caption.append(labels[row, rank])
            if distances is not None:
                caption.append(f"{distances[row, rank]:.3g}")
            if caption:
                ax.set_xlabel("  ".join(caption), fontsize=8)
    fig.tight_layout()
    return fig


def _label_colors(labels, label_colors):
    """A colour for every category of ``labels``: the given ones, then matplotlib's cycle."""
    import matplotlib.pyplot as plt

    if label_colors is not None and not isinstance(label_colors, dict):
        raise ValueError(
            f"label_colors must be a dict from category to colour; got {label_colors!r}."
        )
    colors = dict(label_colors or {})
    cycle = itertools.cycle(plt.rcParams["axes.prop_cycle"].by_key()["color"])
    for label in dict.fromkeys(labels.flat):
        if label not in colors:
            colors[label] = next(cycle)
    return colors


def _check_relevance_scores(y_true, y_score):
    y_true = np.asarray(y_true)
    y_score = np.asarray(y_score, dtype=float)
    if y_true.ndim == 1:
        y_true = y_true[None, :]
    if y_score.ndim == 1:
        y_score = y_score[None, :]
    if y_true.ndim != 2:
        raise ValueError(
            f"y_true must be a 2-D array of shape (n_queries, n_database); got shape "
            f"{y_true.shape}."
        )
    if y_true.shape != y_score.shape:
        raise ValueError(
            f"y_true and y_score must have the same shape; got {y_true.shape} and {y_score.shape}."
        )
    if y_true.size == 0:
        raise ValueError("y_true is empty: at least one query and one database item are needed.")
    if y_true.dtype != bool:
        if not np.isin(y_true, (0, 1)).all():
            raise ValueError("y_true must be binary relevance (bool or 0/1).")
        y_true = y_true.astype(bool)
    if not np.isfinite(y_score).all():
        raise ValueError("y_score contains NaN or infinity.")
    return y_true, y_score


def _interpolated_precision(y_true, y_score, recall_levels):
    """Interpolated precision of one query at each of ``recall_levels``.

    The interpolated precision at recall r is the highest precision reached at any recall
    >= r, which makes the curve non-increasing in recall.
    """
    precision, recall, _ = precision_recall_curve(y_true, y_score)
    # Drop scikit-learn's appended (recall 0, precision 1) end point: it is not a ranking cut-off.
    # The remaining points run from recall 1 down; reverse them to increasing recall.
    precision = precision[-2::-1]
    recall = recall[-2::-1]
    best_from_here = np.maximum.accumulate(precision[::-1])[::-1]
    # First cut-off whose recall reaches each level; recall ends at 1, so one always exists. The
    # small tolerance keeps a level such as linspace's 0.6000000000000001 on the cut-off at 3/5.
    positions = np.searchsorted(recall, recall_levels - 1e-9, side="left")
    return best_from_here[positions]


def plot_precision_recall(y_true, y_score, *, ax=None, label=None, per_query=False, n_levels=101):
    """Plot the mean interpolated precision-recall curve of a set of retrieval queries.

    For each query the database is ranked by decreasing ``y_score``; precision is interpolated
    (the highest precision at any recall at least as large) at ``n_levels`` evenly spaced
    recall levels and averaged over the queries. The legend shows the mean average precision
    (non-interpolated, as :func:`sklearn.metrics.average_precision_score`).

    Parameters
    ----------
    y_true : array-like of shape (n_queries, n_database) or (n_database,)
        Relevance of each database item to each query (bool or 0/1). Queries without any
        relevant item are skipped, as in the Oxford/Paris protocol.
    y_score : array-like of the same shape as ``y_true``
        Similarity of each database item to each query: higher ranks first. Pass
        ``-distances`` for distances.
    ax : :class:`matplotlib.axes.Axes`, default=None
        Axes to draw on; a new figure is created when None.
    label : str, default=None
        Legend label of the mean curve, completed with its mAP.
    per_query : bool, default=False
        Also draw each query's interpolated curve, thin and transparent.
    n_levels : int, default=101
        Number of recall levels in [0, 1] at which precision is interpolated.

    Returns
    -------
    ax : :class:`matplotlib.axes.Axes`
        The axes drawn on.

    Examples
    --------
    >>> import numpy as np
    >>> from skretrieval.plotting import plot_precision_recall
    >>> y_true = np.array([[1, 0, 1, 0], [0, 1, 0, 0]])
    >>> y_score = np.array([[0.9, 0.8, 0.7, 0.1], [0.2, 0.9, 0.5, 0.4]])
    >>> ax = plot_precision_recall(y_true, y_score, label="toy")
    >>> ax.get_legend_handles_labels()[1]
    ['toy (mAP = 0.917)']
    """
    import matplotlib.pyplot as plt

    y_true, y_score = _check_relevance_scores(y_true, y_score)
    if not isinstance(n_levels, numbers.Integral) or isinstance(n_levels, bool) or n_levels < 2:
        raise ValueError(f"n_levels must be an integer >= 2; got {n_levels!r}.")
    has_positive = y_true.any(axis=1)
    if not has_positive.any():
        raise ValueError("No query has a relevant database item: the curve is undefined.")

    recall_levels = np.linspace(0.0, 1.0, n_levels)
    # One curve per query (a loop over queries, not over pairs).
    curves = np.array(
        [
            _interpolated_precision(truth, score, recall_levels)
            for truth, score in zip(y_true[has_positive], y_score[has_positive], strict=True)
        ]
    )
    mean_ap = np.mean(
        [
            average_precision_score(truth, score)
            for truth, score in zip(y_true[has_positive], y_score[has_positive], strict=True)
        ]
    )

    if ax is None:
        _, ax = plt.subplots()
    if per_query:
        for curve in curves:
            ax.plot(recall_levels, curve, color="0.6", linewidth=0.5, alpha=0.4)
    name = "mean" if label is None else str(label)
    ax.plot(recall_levels, curves.mean(axis=0), linewidth=2, label=f"{name} (mAP = {mean_ap:.3f})")
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision (interpolated)")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.05)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left")
    return ax
