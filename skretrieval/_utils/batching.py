"""Items of equal shape grouped into batches, so that each batch stacks into one array."""

import math


def batches_by_shape(shapes, batch_size=None, *, max_elements=None):
    """Group the positions of items by equal shape, in batches.

    Parameters
    ----------
    shapes : iterable of tuple of int
        Shape of each item.
    batch_size : int or None, default=None
        Most items in a batch; None for no limit.
    max_elements : int or None, default=None
        Most elements (the product of the shape, summed over the batch) in a batch, but at least
        one item per batch whatever its size; None for no limit.

    Yields
    ------
    positions : list of int
        Positions of items of one shape, in input order. Shapes come in order of first
        appearance, and each shape's items are cut into consecutive batches.

    Examples
    --------
    >>> from skretrieval._utils.batching import batches_by_shape
    >>> list(batches_by_shape([(2, 3), (4, 4), (2, 3), (2, 3)], batch_size=2))
    [[0, 2], [3], [1]]
    >>> list(batches_by_shape([(4, 4), (4, 4), (1, 2)], max_elements=20))
    [[0], [1], [2]]
    """
    groups = {}
    for position, shape in enumerate(shapes):
        groups.setdefault(tuple(shape), []).append(position)
    for shape, positions in groups.items():
        size = len(positions) if batch_size is None else batch_size
        if max_elements is not None:
            size = max(1, min(size, max_elements // max(1, math.prod(shape))))
        for start in range(0, len(positions), size):
            yield positions[start : start + size]
