"""The fine-tuner's network: a CNN trunk and a differentiable pooling and whitening head.

The head pools as :mod:`skretrieval.pooling` does (GeM, the R-MAC grid) and its whitening layer
starts as the PCA whitening of :mod:`skretrieval.whitening`.
"""

import numpy as np
import torch
from torch import nn

from skretrieval._utils.batching import batches_by_shape
from skretrieval._utils.devices import (
    autocast,
    full_precision,
    normalize_pixels,
    uses_channels_last,
)
from skretrieval.pooling import RMAC, GeMPooling, rmac_regions
from skretrieval.whitening import principal_axes, whitening_scale

# The head pools as the numpy poolings do by default: GeM's lower clamp before the power, and
# the levels and overlap of the R-MAC grid.
_GEM_EPS = GeMPooling().get_params()["eps"]
_RMAC_GRID = {name: RMAC().get_params()[name] for name in ("levels", "overlap")}
# Eigenvalues of the initial PCA whitening get this fraction of their mean added, so that the
# directions of (near) zero variance, unavoidable with fewer descriptors than channels, are
# not blown up.
_WHITENING_SHRINKAGE = 0.1


def _l2(x, dim=-1):
    return nn.functional.normalize(x, p=2, dim=dim, eps=1e-12)


class PoolingHead(nn.Module):
    """Feature maps (N, C, h, w) -> L2-normalised descriptors (N, d).

    ``"gem"``: GeM with learnable ``p``, L2, whitening (FC with bias), L2.
    ``"rmac"``: per-region max pooling over the R-MAC grid, L2 per region, the shared whitening
    FC (Gordo's shift + FC) per region, L2 per region, sum over regions, L2.
    """

    def __init__(self, pooling, n_channels, n_components, p=3.0):
        super().__init__()
        self.pooling = pooling
        self.whiten = nn.Linear(n_channels, n_components, bias=True)
        if pooling == "gem":
            self.p = nn.Parameter(torch.tensor(float(p)))
        self._regions = {}

    def _region_grid(self, height, width):
        if (height, width) not in self._regions:
            self._regions[height, width] = rmac_regions(height, width, **_RMAC_GRID).tolist()
        return self._regions[height, width]

    def local_vectors(self, fmaps):
        """L2-normalised vectors before whitening: (N, R, C), R = 1 for GeM."""
        fmaps = fmaps.float()
        if self.pooling == "gem":
            p = self.p
            pooled = fmaps.clamp(min=_GEM_EPS).pow(p).mean(dim=(-2, -1)).pow(1.0 / p)
            return _l2(pooled)[:, None, :]
        height, width = fmaps.shape[-2:]
        regions = [
            fmaps[:, :, y0 : y0 + h, x0 : x0 + w].amax(dim=(-2, -1))
            for y0, x0, h, w in self._region_grid(height, width)
        ]
        return _l2(torch.stack(regions, dim=1))

    def forward(self, fmaps):
        # In float32 even under autocast: powers and sums of many regions overflow float16.
        with full_precision(fmaps.device):
            whitened = _l2(self.whiten(self.local_vectors(fmaps)))
            return _l2(whitened.sum(dim=1))


class RetrievalNetwork(nn.Module):
    """The trunk followed by the head: images -> L2-normalised descriptors."""

    def __init__(self, trunk, head):
        super().__init__()
        self.trunk = trunk
        self.head = head

    def forward(self, inputs):
        return self.head(self.trunk(inputs))


def build_network(trunk, n_channels, backbone, pooling, n_components=None, p=3.0):
    """``trunk`` followed by a head whose parameters are on the meta device (not allocated).

    ``n_components=None`` means ``n_channels``; more is an error that names ``backbone``.
    """
    if n_components is None:
        n_components = n_channels
    if n_components > n_channels:
        raise ValueError(
            f"n_components={n_components} exceeds the {n_channels} channels of backbone "
            f"{backbone!r}."
        )
    with torch.device("meta"):
        head = PoolingHead(pooling, n_channels, n_components, p)
    return RetrievalNetwork(trunk, head)


def place_network(network, device):
    """``network`` on ``device``, channels-last where convolutions run faster so, in eval mode."""
    network = network.to(device)
    if uses_channels_last(device):
        network = network.to(memory_format=torch.channels_last)
    # Batch normalisation keeps its ImageNet statistics (inference mode throughout): batches of
    # a few tuples give poor statistics. Its affine parameters still train.
    return network.eval()


def _shape_batches(pixels, indices, batch_size):
    """Positions in ``indices`` of images of equal shape, at most ``batch_size`` at a time."""
    shapes = [pixels[index].shape for index in indices]
    return batches_by_shape(shapes, batch_size)


def forward_images(network, pixels, indices, device, mixed_precision, batch_size=None):
    """Descriptors (len(indices), d) of the decoded training images ``pixels[indices]``.

    Images of equal shape go through the network together (in chunks of ``batch_size``);
    rows come back in the order of ``indices``.
    """
    outputs, order = [], []
    for chunk in _shape_batches(pixels, indices, batch_size):
        batch = torch.stack([pixels[indices[position]] for position in chunk])
        with autocast(device, enabled=mixed_precision, training=True):
            outputs.append(network(normalize_pixels(batch, device)).float())
        order.extend(chunk)
    descriptors = torch.cat(outputs)
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.as_tensor(order)] = torch.arange(len(order))
    return descriptors[inverse.to(descriptors.device)]


def whitening_layer(vectors, n_components, shrinkage=_WHITENING_SHRINKAGE):
    """Weight (d, C) and bias (d,) of the PCA whitening ``x -> diag(s) V^T (x - mean)``.

    ``V`` holds the ``n_components`` leading principal axes of ``vectors`` (rows) and ``s``
    their :func:`~skretrieval.whitening.whitening_scale` with ``shrinkage`` times the mean
    variance over all ``C`` axes added to every variance.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    mean, components, variances, total_variance = principal_axes(vectors, n_components)
    eps = shrinkage * max(total_variance / vectors.shape[1], 1e-12)
    weight = components * whitening_scale(variances, eps=eps)[:, None]
    return weight, -weight @ mean


def init_whitening(network, pixels, indices, device, mixed_precision, batch_size):
    """Set the head's whitening layer to the PCA whitening of the local vectors of the decoded
    images ``pixels[indices]``, as the network describes them now."""
    head = network.head
    vectors = []
    with torch.no_grad():
        for chunk in _shape_batches(pixels, indices, batch_size):
            batch = torch.stack([pixels[indices[position]] for position in chunk])
            with autocast(device, enabled=mixed_precision, training=True):
                fmaps = network.trunk(normalize_pixels(batch, device))
            local = head.local_vectors(fmaps)
            vectors.append(local.reshape(-1, local.shape[-1]).cpu().numpy())
        weight, bias = whitening_layer(np.concatenate(vectors), head.whiten.out_features)
        head.whiten.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        head.whiten.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
