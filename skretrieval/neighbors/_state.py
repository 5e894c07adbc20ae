"""Pickling of :class:`~skretrieval.neighbors.ImageRetriever`: its distance kernel travels by
name and is looked up in the loading process's registry."""

from skretrieval.geometry import get_kernel


def kernel_by_name(state):
    """``state`` (a copy of the retriever's ``__dict__``) with the kernel as ``(name, type)``."""
    if state.get("_kernel") is not None:
        state["_kernel"] = (state["_kernel"].name, state["_kernel"].descriptor)
    return state


def kernel_from_registry(state):
    """``state`` with the ``(name, type)`` kernel replaced by the registered kernel, or raise."""
    if not isinstance(state.get("_kernel"), tuple | list):
        return state
    (metric, descriptor), fit_X = map(str, state["_kernel"]), state.get("_fit_X")
    try:  # with the database, as fit chose: descriptor types may share a name
        kernel = get_kernel(metric) if fit_X is None else get_kernel(metric, fit_X)
    except ValueError:
        kernel = None
    if kernel is None or kernel.descriptor != descriptor:
        raise ValueError(
            f"The saved ImageRetriever uses metric {metric!r} on {descriptor}, which is not "
            "registered in this process; register its kernel with "
            "skretrieval.geometry.register_kernel before loading."
        )
    return {**state, "_kernel": kernel}
