"""End-to-end fine-tuning of a CNN for image retrieval with a triplet ranking loss.

:class:`RetrievalFineTuner` trains a torchvision trunk followed by a differentiable pooling
head (R-MAC with a shifted, whitening fully connected layer, as Gordo et al. [1]_, or GeM with a
learnable exponent followed by a whitening layer, as Radenovic et al. [2]_) on labelled images,
with hard negatives mined from a pool of images described by the current network.

References
----------
.. [1] A. Gordo, J. Almazan, J. Revaud and D. Larlus, "End-to-end learning of deep visual
   representations for image retrieval", IJCV 2017.
.. [2] F. Radenovic, G. Tolias and O. Chum, "Fine-tuning CNN image retrieval with no human
   annotation", TPAMI 2018.
"""

import os
import tempfile
from contextlib import closing, nullcontext
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from torch import nn
from torchvision.models import WeightsEnum
from tqdm import tqdm

from ..extraction import (
    _as_image_list,
    _assign_trunk_state,
    _batches,
    _builder_kwargs,
    _check_backbone,
    _initial_state_dict,
    _make_trunk,
    _normalize_pixels,
    _plan,
    _prefetched,
    _prepare_batch,
    _probe_trunk,
    _resolve_device,
    _uses_channels_last,
    _weights_enum,
)
from ..pooling import rmac_regions
from ._losses import triplet_loss

__all__ = ["RetrievalFineTuner"]

# Lower clamp of the activations before GeM's power (as skretrieval.pooling.gem).
_GEM_EPS = 1e-6
# R-MAC grid of the head, as skretrieval.pooling.RMAC's defaults.
_RMAC_LEVELS = 3
_RMAC_OVERLAP = 0.4
# Eigenvalues of the initial PCA whitening get this fraction of their mean added, so that the
# directions of (near) zero variance, unavoidable with fewer descriptors than channels, are
# not blown up.
_WHITENING_SHRINKAGE = 0.1
# The GeM exponent learns with this multiple of the learning rate (and no weight decay), as in
# Radenovic et al.: one scalar moves too slowly at the rate suited to the convolutions.
_P_LR_FACTOR = 10.0


# --------------------------------------------------------------------------------------------
# Network: trunk + differentiable pooling head
# --------------------------------------------------------------------------------------------


def _l2(x, dim=-1):
    return nn.functional.normalize(x, p=2, dim=dim, eps=1e-12)


class _PoolingHead(nn.Module):
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
            self._regions[height, width] = rmac_regions(
                height, width, levels=_RMAC_LEVELS, overlap=_RMAC_OVERLAP
            ).tolist()
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
        autocast_off = (
            torch.autocast(fmaps.device.type, enabled=False)
            if torch.amp.is_autocast_available(fmaps.device.type)
            else nullcontext()
        )
        with autocast_off:
            whitened = _l2(self.whiten(self.local_vectors(fmaps)))
            return _l2(whitened.sum(dim=1))


class _RetrievalNetwork(nn.Module):
    def __init__(self, trunk, head):
        super().__init__()
        self.trunk = trunk
        self.head = head

    def forward(self, inputs):
        return self.head(self.trunk(inputs))


def _build_network(backbone, build_kwargs, pooling, n_components=None, p=3.0):
    """The network's structure on the meta device.

    Also returns the state dict keys of the whole classification model and the trunk's output
    shape for a probe image. ``n_components=None`` means the number of channels.
    """
    trunk, model_keys, probe_shape = _make_trunk(backbone, build_kwargs)
    n_channels = probe_shape[1]
    if n_components is None:
        n_components = n_channels
    if n_components > n_channels:
        raise ValueError(
            f"n_components={n_components} exceeds the {n_channels} channels of backbone "
            f"{backbone!r}."
        )
    with torch.device("meta"):
        head = _PoolingHead(pooling, n_channels, n_components, p)
    return _RetrievalNetwork(trunk, head), model_keys, probe_shape


def _place(network, device):
    network = network.to(device)
    if _uses_channels_last(device):
        network = network.to(memory_format=torch.channels_last)
    # Batch normalisation keeps its ImageNet statistics (inference mode throughout): batches of
    # a few tuples give poor statistics. Its affine parameters still train.
    return network.eval()


def _autocast(device, enabled):
    """float16 autocast on CUDA when ``enabled``; everything else runs in float32."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return nullcontext()


def _shape_groups(pixels, indices, batch_size=None):
    """Lists of positions in ``indices`` whose images have equal shapes, at most ``batch_size``."""
    groups = {}
    for position, index in enumerate(indices):
        groups.setdefault(tuple(pixels[index].shape), []).append(position)
    for positions in groups.values():
        step = batch_size or len(positions)
        for start in range(0, len(positions), step):
            yield positions[start : start + step]


def _forward_images(network, pixels, indices, device, mixed_precision, batch_size=None):
    """Descriptors (len(indices), d) of the decoded training images ``pixels[indices]``.

    Images of equal shape go through the network together (in chunks of ``batch_size``);
    rows come back in the order of ``indices``.
    """
    outputs, order = [], []
    for chunk in _shape_groups(pixels, indices, batch_size):
        batch = torch.stack([pixels[indices[position]] for position in chunk])
        with _autocast(device, mixed_precision):
            outputs.append(network(_normalize_pixels(batch, device)).float())
        order.extend(chunk)
    descriptors = torch.cat(outputs)
    inverse = torch.empty(len(order), dtype=torch.long)
    inverse[torch.as_tensor(order)] = torch.arange(len(order))
    return descriptors[inverse.to(descriptors.device)]


# --------------------------------------------------------------------------------------------
# Initialisation and mining (numpy)
# --------------------------------------------------------------------------------------------


def _pca_whitening(vectors, n_components, shrinkage=_WHITENING_SHRINKAGE):
    """Weight (d, C) and bias (d,) of ``x -> diag(lambda)^-1/2 V^T (x - mean)``.

    ``V`` holds the ``n_components`` leading eigenvectors of the covariance of ``vectors``
    (rows), ``lambda`` their eigenvalues plus ``shrinkage`` times the mean eigenvalue.
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    mean = vectors.mean(axis=0)
    centred = vectors - mean
    covariance = centred.T @ centred / len(vectors)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1][:n_components]
    regularised = np.clip(eigenvalues[order], 0, None) + shrinkage * max(eigenvalues.mean(), 1e-12)
    weight = eigenvectors[:, order].T / np.sqrt(regularised)[:, None]
    return weight, -weight @ mean


def _mine_negatives(query_desc, query_labels, pool_desc, pool_labels, pool_indices, n_negatives):
    """Hard negatives of each query, mined from the pool.

    For each query the pool is ranked by Euclidean distance (descriptors are L2-normalised,
    so by decreasing dot product); walking down the ranking, the first image of each class
    other than the query's is kept, up to ``n_negatives`` (one per class, so that the negatives
    are not near-duplicates of each other). Returns a list of negative index arrays (training
    image indices); a query with no other class in the pool gets an empty array.
    """
    similarities = query_desc @ pool_desc.T
    ranking = np.argsort(-similarities, axis=1, kind="stable")
    negatives = []
    for query_label, ranked in zip(query_labels, ranking, strict=True):
        ranked_labels = pool_labels[ranked]
        others = ranked_labels != query_label
        candidates, candidate_labels = ranked[others], ranked_labels[others]
        _, first = np.unique(candidate_labels, return_index=True)
        chosen = candidates[np.sort(first)[:n_negatives]]
        negatives.append(pool_indices[chosen])
    return negatives


# --------------------------------------------------------------------------------------------
# Estimator
# --------------------------------------------------------------------------------------------


class RetrievalFineTuner(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Fine-tune a CNN end to end for retrieval with a triplet ranking loss and hard negatives.

    The network is a torchvision trunk (as :class:`~skretrieval.extraction.CNNFeatureExtractor`
    cuts it) followed by a differentiable pooling head that outputs L2-normalised descriptors:

    - ``pooling="rmac"`` (Gordo et al. [1]_): each region of the R-MAC grid
      (:func:`~skretrieval.pooling.rmac_regions`, 3 levels) is max-pooled and L2-normalised,
      goes through a shared fully connected layer with bias (the PCA shift and projection),
      is L2-normalised again; the regions are summed and the sum L2-normalised.
    - ``pooling="gem"`` (Radenovic et al. [2]_): generalised mean pooling with a learnable
      exponent ``p``, L2, the fully connected whitening layer, L2.

    The whitening layer starts as the PCA whitening of the initial descriptors (of the region
    vectors for R-MAC) of up to ``pool_size`` training images, as Gordo et al. initialise it;
    eigenvalues get 10% of their mean added so that directions of near-zero variance are not
    blown up.

    Training uses tuples (query, positive, ``n_negatives`` negatives) pushed through the same
    network (siamese streams with shared weights) and the triplet loss
    ``max(0, margin + |q - p|^2 - |q - n|^2)`` averaged over queries and negatives. Every
    ``pool_refresh`` epochs the current network describes (without gradients) a random pool of
    ``pool_size`` training images and every query; for each query the negatives are the closest
    pool images of other classes, at most one per class (walking down the ranking). The positive
    is a random other image of the query's class, drawn anew every epoch: the hardest positive
    would favour label noise and near-empty views. An epoch uses every training image once as
    the query, in random order, ``batch_size`` tuples per optimiser step (Adam); a query whose
    class is the only one in the pool has no negative and sits that mining round out (only
    possible when ``pool_size`` is smaller than the training set).

    Parameters
    ----------
    backbone : str, default="mobilenet_v2"
        Name of a torchvision convolutional classification model, cut as by
        :class:`~skretrieval.extraction.CNNFeatureExtractor`.
    weights : "imagenet", str, path-like, torchvision ``WeightsEnum`` member or None, \
            default="imagenet"
        Initial weights of the trunk, resolved as by
        :class:`~skretrieval.extraction.CNNFeatureExtractor` (offline first for
        ``"imagenet"``; never downloaded when offline copies exist). None: random.
    pooling : {"rmac", "gem"}, default="rmac"
        Differentiable pooling head, see above.
    n_components : int or None, default=None
        Descriptor length: outputs of the whitening layer, at most the number of channels.
        None: the number of channels.
    p : float, default=3.0
        Initial GeM exponent (``pooling="gem"``); it is learnt, with 10 times the learning
        rate and no weight decay, as Radenovic et al. do.
    image_size : int, default=224
        Longer side, in pixels, to which images are resized (aspect ratio kept) for training
        and :meth:`transform`.
    margin : float, default=0.1
        Margin of the triplet loss.
    n_negatives : int, default=5
        Hard negatives per query (fewer when the pool has fewer other classes).
    pool_size : int or None, default=2000
        Number of training images, drawn at random at every refresh, among which negatives are
        mined (and from which the whitening is initialised). None: all.
    pool_refresh : int, default=1
        Mine new negatives every ``pool_refresh`` epochs.
    max_epochs : int, default=10
        Number of epochs. 0 builds and initialises the network without training (a baseline).
    batch_size : int, default=8
        Tuples per optimiser step; also images per batch in :meth:`transform` and in mining.
    learning_rate : float, default=1e-5
        Adam learning rate.
    weight_decay : float, default=1e-6
        Adam weight decay (L2 penalty) on the trunk and the whitening layer.
    train_backbone : bool, default=True
        Train the trunk's weights too; False trains only the head (whitening layer and ``p``).
    device : str or torch.device, default="auto"
        ``"auto"``: CUDA, then MPS, else CPU.
    mixed_precision : bool, default=True
        On CUDA, run the network in float16 autocast with a gradient scaler (the head stays in
        float32). Elsewhere everything runs in float32: bfloat16 autocast on CPU is slower on
        most CPUs and too coarse for small loss differences.
    random_state : int, RandomState instance or None, default=None
        Seed of the pools, the query order, the positives, and of the random trunk when
        ``weights=None``.
    progress : bool, default=True
        Show a tqdm progress bar over the epochs.

    Attributes
    ----------
    model_ : torch.nn.Module
        The trained network (``trunk`` and ``head``) on ``device_``, in eval mode.
    device_ : torch.device
        Device the network runs on.
    n_channels_ : int
        Channels of the trunk's feature maps.
    n_features_out_ : int
        Descriptor length.
    min_image_size_ : int
        Smallest image side, after resizing, that the trunk accepts.
    loss_curve_ : list of float
        Mean training loss of each epoch.
    n_iter_ : int
        Number of epochs run.
    p_ : float or None
        Learnt GeM exponent (None for R-MAC).

    See Also
    --------
    skretrieval.extraction.CNNFeatureExtractor : Feature maps of a pretrained trunk.
    skretrieval.neighbors.ImageRetriever : Search the descriptors.

    Notes
    -----
    Batch normalisation layers keep their ImageNet running statistics throughout (the network
    stays in inference mode); their scale and shift train with the convolutions. Images are
    decoded and resized once, at the start of :meth:`fit`.

    Pickling stores the weights on CPU and rebuilds the network when loaded (``device="auto"``
    is resolved anew). :meth:`save_weights` and :meth:`load_weights` do the same through a
    file.

    Examples
    --------
    >>> from skretrieval.learning import RetrievalFineTuner
    >>> from skretrieval.neighbors import ImageRetriever
    >>> tuner = RetrievalFineTuner(image_size=128, max_epochs=5, learning_rate=1e-4)
    >>> descriptors = tuner.fit(images, labels).transform(images)  # doctest: +SKIP
    >>> ImageRetriever().fit(descriptors, labels).kneighbors(descriptors)  # doctest: +SKIP
    """

    _parameter_constraints: dict = {
        "backbone": [str],
        "weights": [StrOptions({"imagenet"}), str, os.PathLike, WeightsEnum, None],
        "pooling": [StrOptions({"rmac", "gem"})],
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "p": [Interval(Real, 0, None, closed="neither")],
        "image_size": [Interval(Integral, 1, None, closed="left")],
        "margin": [Interval(Real, 0, None, closed="left")],
        "n_negatives": [Interval(Integral, 1, None, closed="left")],
        "pool_size": [Interval(Integral, 2, None, closed="left"), None],
        "pool_refresh": [Interval(Integral, 1, None, closed="left")],
        "max_epochs": [Interval(Integral, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "train_backbone": ["boolean"],
        "device": [str, torch.device],
        "mixed_precision": ["boolean"],
        "random_state": ["random_state"],
        "progress": ["boolean"],
    }

    def __init__(
        self,
        backbone="mobilenet_v2",
        weights="imagenet",
        pooling="rmac",
        n_components=None,
        p=3.0,
        image_size=224,
        margin=0.1,
        n_negatives=5,
        pool_size=2000,
        pool_refresh=1,
        max_epochs=10,
        batch_size=8,
        learning_rate=1e-5,
        weight_decay=1e-6,
        train_backbone=True,
        device="auto",
        mixed_precision=True,
        random_state=None,
        progress=True,
    ):
        self.backbone = backbone
        self.weights = weights
        self.pooling = pooling
        self.n_components = n_components
        self.p = p
        self.image_size = image_size
        self.margin = margin
        self.n_negatives = n_negatives
        self.pool_size = pool_size
        self.pool_refresh = pool_refresh
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.train_backbone = train_backbone
        self.device = device
        self.mixed_precision = mixed_precision
        self.random_state = random_state
        self.progress = progress

    # ---------------------------------------------------------------- input checks

    @staticmethod
    def _check_labels(images, y):
        if y is None:
            raise ValueError(
                "y is required: RetrievalFineTuner learns from labels (images with equal labels "
                "match); got y=None."
            )
        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D, one label per image; got shape {y.shape}.")
        if len(y) != len(images):
            raise ValueError(f"X has {len(images)} images but y has {len(y)} labels.")
        classes, codes, counts = np.unique(y, return_inverse=True, return_counts=True)
        if len(classes) < 2:
            raise ValueError(
                f"y has a single class ({classes[0]!r}): at least 2 classes are needed to form "
                "negatives."
            )
        if (counts < 2).any():
            single = classes[counts < 2]
            raise ValueError(
                f"{len(single)} class(es) of y have a single image, e.g. {single[:3].tolist()}: "
                "every class needs at least 2 images to give a query its positive."
            )
        return codes

    # ---------------------------------------------------------------- fit

    def _initial_trunk_state(self):
        """Builder arguments and initial full-model state dict, as CNNFeatureExtractor does."""
        weights_enum = _weights_enum(self.backbone, self.weights)
        build_kwargs = _builder_kwargs(self.backbone, weights_enum)

        def initial_state():
            return _initial_state_dict(
                self.backbone,
                self.weights,
                weights_enum,
                build_kwargs,
                self.progress,
                self.random_state,
            )

        return build_kwargs, initial_state

    def _decode_training_images(self, images):
        planned = _plan(images, self.image_size, self.min_image_size_, self.backbone)
        pixels = [None] * len(planned)
        for batch in _batches(planned, 64, None):
            decoded = _prepare_batch(batch, pin_memory=False)
            for image, row in zip(batch, decoded, strict=True):
                pixels[image.index] = row
        return pixels

    def _describe(self, pixels, indices):
        """Descriptors of training images with the current network, without gradients."""
        with torch.no_grad():
            descriptors = _forward_images(
                self.model_,
                pixels,
                list(indices),
                self.device_,
                self.mixed_precision,
                self.batch_size,
            )
        return descriptors.cpu().numpy().astype(np.float64)

    def _init_whitening(self, pixels, indices):
        """Set the whitening layer to the PCA whitening of the initial local vectors."""
        head = self.model_.head
        vectors = []
        with torch.no_grad():
            for chunk in _shape_groups(pixels, indices, self.batch_size):
                batch = torch.stack([pixels[indices[position]] for position in chunk])
                with _autocast(self.device_, self.mixed_precision):
                    fmaps = self.model_.trunk(_normalize_pixels(batch, self.device_))
                local = head.local_vectors(fmaps)
                vectors.append(local.reshape(-1, local.shape[-1]).cpu().numpy())
        weight, bias = _pca_whitening(np.concatenate(vectors), head.whiten.out_features)
        head.whiten.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
        head.whiten.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))

    def _optimizer(self):
        network = self.model_
        network.requires_grad_(True)
        network.trunk.requires_grad_(self.train_backbone)
        decayed = list(network.head.whiten.parameters())
        if self.train_backbone:
            decayed += list(network.trunk.parameters())
        groups = [{"params": decayed, "weight_decay": self.weight_decay}]
        if self.pooling == "gem":
            groups.append(
                {
                    "params": [network.head.p],
                    "lr": _P_LR_FACTOR * self.learning_rate,
                    "weight_decay": 0.0,
                }
            )
        return torch.optim.Adam(groups, lr=self.learning_rate)

    def _train_step(self, tuples, pixels, optimizer, scaler):
        """One optimiser step on (query, positive, negative) rows; returns the loss."""
        # Every distinct image of the batch goes through the network once (shared weights).
        unique, inverse = np.unique(np.asarray(tuples).ravel(), return_inverse=True)
        inverse = torch.as_tensor(inverse.reshape(-1, 3), device=self.device_)
        descriptors = _forward_images(
            self.model_, pixels, unique.tolist(), self.device_, self.mixed_precision
        )
        loss = triplet_loss(
            descriptors[inverse[:, 0]],
            descriptors[inverse[:, 1]],
            descriptors[inverse[:, 2]],
            margin=self.margin,
        )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return float(loss.detach())

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Build the network, initialise its whitening and train it on labelled images.

        Parameters
        ----------
        X : list of str, path-like, PIL.Image.Image or ndarray
            Training images, as :class:`~skretrieval.extraction.CNNFeatureExtractor` accepts.
        y : array-like of shape (n_images,)
            Labels: images with equal labels match. At least 2 classes, each with at least 2
            images.

        Returns
        -------
        self : RetrievalFineTuner
            The fitted estimator.
        """
        images = _as_image_list(X)
        codes = self._check_labels(images, y)
        _check_backbone(self.backbone)
        rng = check_random_state(self.random_state)
        device = _resolve_device(self.device)

        build_kwargs, initial_state = self._initial_trunk_state()
        network, model_keys, probe_shape = _build_network(
            self.backbone, build_kwargs, self.pooling, self.n_components, self.p
        )
        _, _, min_image_size = _probe_trunk(network.trunk, probe_shape)
        state_dict, source = initial_state()
        _assign_trunk_state(network.trunk, state_dict, model_keys, self.backbone, source)
        network.head.to_empty(device="cpu")
        with torch.no_grad():
            if self.pooling == "gem":
                network.head.p.fill_(self.p)

        self.device_ = device
        self.model_ = _place(network, device)
        self.n_channels_ = probe_shape[1]
        self.n_features_out_ = network.head.whiten.out_features
        self.min_image_size_ = min_image_size
        self._build_kwargs = build_kwargs

        pixels = self._decode_training_images(images)
        n_images = len(pixels)
        pool_size = n_images if self.pool_size is None else min(self.pool_size, n_images)
        initial_pool = np.sort(rng.choice(n_images, pool_size, replace=False))
        with torch.no_grad():
            self._init_whitening(pixels, initial_pool)

        members = [np.flatnonzero(codes == code) for code in range(codes.max() + 1)]
        optimizer = self._optimizer()
        scaler = torch.amp.GradScaler(
            "cuda", enabled=self.mixed_precision and device.type == "cuda"
        )
        self.loss_curve_ = []
        negatives = None
        epochs = tqdm(range(self.max_epochs), disable=not self.progress, desc=type(self).__name__)
        for epoch in epochs:
            if epoch % self.pool_refresh == 0:
                pool = np.sort(rng.choice(n_images, pool_size, replace=False))
                descriptors = self._describe(pixels, np.arange(n_images))
                negatives = _mine_negatives(
                    descriptors, codes, descriptors[pool], codes[pool], pool, self.n_negatives
                )
            queries = rng.permutation(n_images)
            queries = queries[[len(negatives[query]) > 0 for query in queries]]
            losses, weights = [], []
            for start in range(0, len(queries), self.batch_size):
                tuples = []
                for query in queries[start : start + self.batch_size]:
                    same = members[codes[query]]
                    positive = rng.choice(same[same != query])
                    tuples.extend((query, positive, negative) for negative in negatives[query])
                losses.append(self._train_step(tuples, pixels, optimizer, scaler))
                weights.append(len(tuples))
            self.loss_curve_.append(
                float(np.average(losses, weights=weights)) if losses else float("nan")
            )
        self.model_.requires_grad_(False)
        self.model_.eval()
        self.n_iter_ = self.max_epochs
        self.p_ = float(self.model_.head.p) if self.pooling == "gem" else None
        return self

    # ---------------------------------------------------------------- transform

    def transform(self, X):
        """L2-normalised descriptors of images.

        Parameters
        ----------
        X : list of str, path-like, PIL.Image.Image or ndarray
            Images, as :class:`~skretrieval.extraction.CNNFeatureExtractor` accepts.

        Returns
        -------
        descriptors : ndarray of shape (n_images, n_features_out_), dtype float32
            Rows of unit L2 norm, in input order.
        """
        check_is_fitted(self)
        images = _plan(X, self.image_size, self.min_image_size_, self.backbone)
        device = self.device_
        pin_memory = device.type == "cuda"
        descriptors = np.empty((len(images), self.n_features_out_), dtype=np.float32)

        def prepare(batch):
            return _prepare_batch(batch, pin_memory)

        batches = _batches(images, self.batch_size, None)
        with closing(_prefetched(prepare, batches, 1)) as results, torch.inference_mode():
            for batch, pixels in results:
                with _autocast(device, self.mixed_precision):
                    output = self.model_(_normalize_pixels(pixels, device))
                descriptors[[image.index for image in batch]] = output.float().cpu().numpy()
        return descriptors

    @property
    def _n_features_out(self):
        return self.n_features_out_

    # ---------------------------------------------------------------- persistence

    def _config(self):
        return {
            "backbone": self.backbone,
            "build_kwargs": dict(self._build_kwargs),
            "pooling": self.pooling,
            "n_components": int(self.n_features_out_),
            "n_channels": int(self.n_channels_),
            "min_image_size": int(self.min_image_size_),
            "image_size": int(self.image_size),
            "p": self.p_,
            "loss_curve": [float(loss) for loss in self.loss_curve_],
            "n_iter": int(self.n_iter_),
        }

    def _cpu_state_dict(self):
        return {key: value.detach().cpu() for key, value in self.model_.state_dict().items()}

    def _rebuild(self, state_dict):
        """Rebuild ``model_`` from the configuration attributes and a state dict."""
        network, _, _ = _build_network(
            self.backbone, self._build_kwargs, self.pooling, self.n_features_out_
        )
        network.load_state_dict(state_dict, assign=True)
        network.requires_grad_(False)
        self.device_ = _resolve_device(self.device)
        self.model_ = _place(network, self.device_)

    def save_weights(self, path):
        """Write the network's weights and configuration to a file, atomically.

        The file is a ``torch.save`` dictionary with ``"config"`` (backbone, pooling,
        descriptor length, GeM exponent, ...) and ``"state_dict"`` (on CPU). It is written to a
        temporary file in the same folder, then renamed over ``path``.

        Parameters
        ----------
        path : str or path-like
            Destination file.

        Returns
        -------
        self : RetrievalFineTuner
            The estimator.
        """
        check_is_fitted(self)
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        descriptor, temporary = tempfile.mkstemp(dir=folder, prefix=".skretrieval-", suffix=".pt")
        try:
            with os.fdopen(descriptor, "wb") as file:
                torch.save({"config": self._config(), "state_dict": self._cpu_state_dict()}, file)
            os.replace(temporary, path)
        except BaseException:
            if os.path.exists(temporary):
                os.remove(temporary)
            raise
        return self

    @classmethod
    def load_weights(cls, path, *, device="auto", batch_size=8, mixed_precision=True):
        """A fitted estimator from a file written by :meth:`save_weights`.

        Parameters
        ----------
        path : str or path-like
            File written by :meth:`save_weights`.
        device : str or torch.device, default="auto"
            Device to run the network on.
        batch_size : int, default=8
            Images per batch in :meth:`transform`.
        mixed_precision : bool, default=True
            float16 autocast on CUDA.

        Returns
        -------
        tuner : RetrievalFineTuner
            Fitted: :meth:`transform` gives the descriptors of the saved network. Its
            parameters describe the saved network with ``weights=None``, so fitting it again
            starts from a random trunk.
        """
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"Weights file not found: {os.fspath(path)!r}.") from exc
        if not isinstance(saved, dict) or set(saved) != {"config", "state_dict"}:
            raise ValueError(
                f"{os.fspath(path)!r} was not written by RetrievalFineTuner.save_weights: "
                "expected a dict with 'config' and 'state_dict'."
            )
        config = saved["config"]
        tuner = cls(
            backbone=config["backbone"],
            weights=None,
            pooling=config["pooling"],
            n_components=config["n_components"],
            p=3.0 if config["p"] is None else config["p"],
            image_size=config["image_size"],
            batch_size=batch_size,
            device=device,
            mixed_precision=mixed_precision,
            progress=False,
        )
        tuner._build_kwargs = config["build_kwargs"]
        tuner.n_features_out_ = config["n_components"]
        tuner.n_channels_ = config["n_channels"]
        tuner.min_image_size_ = config["min_image_size"]
        tuner.loss_curve_ = list(config["loss_curve"])
        tuner.n_iter_ = config["n_iter"]
        tuner.p_ = config["p"]
        tuner._rebuild(saved["state_dict"])
        return tuner

    def __getstate__(self):
        state = dict(super().__getstate__())
        model = state.pop("model_", None)
        if model is not None:
            state["_model_state"] = self._cpu_state_dict()
        return state

    def __setstate__(self, state):
        model_state = state.pop("_model_state", None)
        super().__setstate__(state)
        if model_state is not None:
            self._rebuild(model_state)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Input is a list of images (file paths or arrays), not a numeric 2-D array.
        tags.input_tags.two_d_array = False
        tags.input_tags.one_d_array = True
        tags.input_tags.string = True
        tags.target_tags.required = True
        tags.transformer_tags.preserves_dtype = []
        return tags
