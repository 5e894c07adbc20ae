"""The settings that make an extractor's descriptors what they are, as comparable strings.

An index, a checkpoint or a descriptor cache records them, so that descriptors made with other
settings (other weights, pooling, sizes, precision, skretrieval version) are never mixed.
"""

import importlib.metadata
import numbers
import os

import skretrieval
from skretrieval._utils.devices import resolve_device
from skretrieval._utils.files import file_sha256
from skretrieval.extraction._weights import weights_file

# Parameters that change how fast descriptors are computed or what is shown, not their values.
# The device only matters through its precision, recorded on its own.
_NOT_SETTINGS = frozenset({"verbose", "progress", "batch_size", "n_workers", "device"})

def _weights_identity(backbone, weights, random_state):
    """The weights as their file's contents, or as the seed that draws them."""
    if weights is None:
        if not isinstance(random_state, numbers.Integral):
            return "random, unseeded"
        # The draw depends on torch's generator: its version is part of the identity.
        torch_version = importlib.metadata.version("torch")
        return f"random, random_state={int(random_state)}, torch {torch_version}"
    path = weights_file(backbone, weights)
    if path is not None and os.path.isfile(path):
        return f"sha256:{file_sha256(path)}"
    # Not downloaded yet (torchvision's file names carry a prefix of their hash), or missing.
    return repr(weights)


def _estimator_text(estimator):
    params = sorted(estimator.get_params(deep=True).items())
    return f"{type(estimator).__name__}({', '.join(f'{k}={v!r}' for k, v in params)})"


def descriptor_settings(extractor):
    """The settings that determine the descriptors of a feature extractor, as strings.

    Two extractors with equal settings give the same descriptors (up to float rounding), so an
    index, a checkpoint or a cache made with one can be reused with the other.

    Parameters
    ----------
    extractor : CNNFeatureExtractor
        Fitted or not.

    Returns
    -------
    settings : dict of str to str
        The skretrieval version; every parameter of the extractor except those that only
        change speed or display (``batch_size``, ``n_workers``, ``device``, ``verbose``); the
        pooling with all its parameters; the weights as the sha256 of the state-dict file they
        resolve to (for ``"imagenet"``: the file of the offline package or of the torch hub
        cache), or for random weights the seed and the torch version; and the precision of the
        device (``"float16 autocast"`` on CUDA and MPS, else ``"float32"``).

    Examples
    --------
    >>> from skretrieval.extraction import CNNFeatureExtractor
    >>> extractor = CNNFeatureExtractor(weights=None, random_state=0, max_size=64, device="cpu")
    >>> settings = extractor.descriptor_settings()
    >>> settings["backbone"], settings["max_size"], settings["precision"]
    ("'mobilenet_v2'", '64', 'float32')
    >>> settings["weights"].startswith("random, random_state=0")
    True
    """
    params = extractor.get_params(deep=False)
    settings = {"skretrieval": skretrieval.__version__, "extractor": type(extractor).__name__}
    for name, value in sorted(params.items()):
        if name in _NOT_SETTINGS or name == "random_state":
            continue
        if name == "weights":
            value = _weights_identity(params["backbone"], value, params.get("random_state"))
            settings[name] = value
        elif hasattr(value, "get_params"):
            settings[name] = _estimator_text(value)
        else:
            settings[name] = repr(value)
    device = getattr(extractor, "device_", None) or resolve_device(params.get("device", "auto"))
    settings["precision"] = "float16 autocast" if device.type in ("cuda", "mps") else "float32"
    return settings
