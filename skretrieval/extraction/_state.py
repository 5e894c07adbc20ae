"""Estimator state without torch objects, for persistence that never unpickles.

:mod:`skretrieval.persistence` stores estimators in the skops format, which holds numpy arrays,
numbers, strings and containers of them, but no torch object. The estimators that hold
networks (:class:`~skretrieval.extraction.CNNFeatureExtractor` and those of
:mod:`skretrieval.learning`) call these functions from ``__getstate__`` and ``__setstate__``:
network weights become numpy arrays on CPU, a ``torch.device`` or torchvision ``WeightsEnum``
parameter becomes a string, and the fitted device is resolved again on the loading machine.
Pickles written by older versions, whose weights are torch tensors, still load.
"""

import os

import numpy as np
import torch
from torchvision.models import WeightsEnum, get_weight

# A WeightsEnum parameter is stored as {_WEIGHTS_ENUM: "ResNet18_Weights.IMAGENET1K_V1"}.
_WEIGHTS_ENUM = "torchvision_weights"


def portable_state(state, networks):
    """A copy of an estimator's ``state`` (its ``__dict__``) that holds no torch object.

    Parameters
    ----------
    state : dict
        The estimator's attributes.
    networks : dict
        ``{attribute: key}``: the torch module under ``attribute`` is replaced by its state
        dict, as numpy arrays on CPU, under ``key``.

    Returns
    -------
    state : dict
        A new dict. ``device_`` is left out (:meth:`__setstate__` resolves the ``device``
        parameter again); a ``torch.device`` ``device`` is stored as its string, a
        ``WeightsEnum`` ``weights`` as its name and a path-like ``weights`` as a string.
    """
    state = dict(state)
    state.pop("device_", None)
    for attribute, key in networks.items():
        network = state.pop(attribute, None)
        if network is not None:
            state[key] = {
                name: value.detach().cpu().numpy() for name, value in network.state_dict().items()
            }
    if isinstance(state.get("device"), torch.device):
        state["device"] = str(state["device"])
    weights = state.get("weights")
    if isinstance(weights, WeightsEnum):
        state["weights"] = {_WEIGHTS_ENUM: f"{type(weights).__name__}.{weights.name}"}
    elif isinstance(weights, os.PathLike):
        state["weights"] = os.fspath(weights)
    return state


def restore_parameters(state):
    """``state`` with a ``weights`` parameter stored by :func:`portable_state` turned back into
    its torchvision ``WeightsEnum`` member (``state`` is modified and returned)."""
    weights = state.get("weights")
    if isinstance(weights, dict) and set(weights) == {_WEIGHTS_ENUM}:
        # torchvision looks the name up among its own weight enums only.
        state["weights"] = get_weight(str(weights[_WEIGHTS_ENUM]))
    return state


def as_tensors(weights):
    """A torch state dict from a stored one: numpy arrays (or tensors, from older pickles)."""
    return {
        name: value
        if isinstance(value, torch.Tensor)
        # torch.from_numpy shares memory and needs a writable array: copy only a read-only one.
        else torch.from_numpy(np.require(value, requirements=["W"]))
        for name, value in weights.items()
    }
