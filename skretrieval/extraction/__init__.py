"""CNN feature maps of images with a torchvision backbone.

:class:`CNNFeatureExtractor` turns images (file paths, PIL images or arrays) into the feature maps
of the convolutional trunk of an ImageNet classification network: one ``(C, h_i, w_i)`` float32
array per image, ready for the global poolings of :mod:`skretrieval.pooling`.

This package and :mod:`skretrieval.learning` are the only ones that import torch (with the
device helpers of ``skretrieval._utils.devices``).

How extraction is made fast
---------------------------
- The network is cut where the classifier's global pooling starts (found generically by tracing
  the model's forward pass with ``torch.fx``), batch normalisation is folded into the preceding
  convolutions, and weights and activations use the channels-last memory layout, which lets
  oneDNN (CPU) and cuDNN (GPU) skip layout conversions between layers.
- Images whose resized shapes are equal are batched together. On CPU, worker threads each
  decode a batch and run it with a share of torch's threads (batches capped at 512x512 pixels,
  beyond which they get slower per image); on GPU, workers decode while the network runs.
- The forward pass runs under :func:`torch.inference_mode`; on GPU in float16 autocast from pinned
  host memory with non-blocking copies, the uint8 pixels being normalised on the device.

See ``benchmarks/bench_extraction.py`` for the measurements behind these choices.

The private modules, one concept each: ``_images`` (checks, resized shapes, decoding into
batches), ``_trunk`` (cutting the network, folding batch normalisation, probing its shapes),
``_weights`` (resolving and loading weights), ``_prefetch`` (the worker threads) and
``_extractor`` (the estimator).
"""

from skretrieval.exceptions import ImageNotFoundError, ImageReadError
from skretrieval.extraction._extractor import CNNFeatureExtractor

__all__ = ["CNNFeatureExtractor", "ImageNotFoundError", "ImageReadError"]
