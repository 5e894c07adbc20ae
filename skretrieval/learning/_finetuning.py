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
from contextlib import closing
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
from sklearn.utils._param_validation import Hidden, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from torchvision.models import WeightsEnum
from tqdm.auto import tqdm

from skretrieval._utils.deprecation import renamed_parameter, upgrade_renamed_state
from skretrieval._utils.devices import autocast, normalize_pixels, resolve_device
from skretrieval.extraction._images import as_image_list, image_batches, plan, prepare_batch
from skretrieval.extraction._prefetch import prefetched
from skretrieval.extraction._trunk import check_backbone, make_trunk
from skretrieval.extraction._weights import build_trunk
from skretrieval.learning._losses import triplet_loss
from skretrieval.learning._network import (
    build_network,
    forward_images,
    init_whitening,
    place_network,
)
from skretrieval.learning._tuples import check_labels, mine_negatives, tuple_batches
from skretrieval.persistence import atomic_write

__all__ = ["RetrievalFineTuner"]

# The GeM exponent learns with this multiple of the learning rate (and no weight decay), as in
# Radenovic et al.: one scalar moves too slowly at the rate suited to the convolutions.
_P_LR_FACTOR = 10.0


class RetrievalFineTuner(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Fine-tune a CNN end to end for retrieval with a triplet ranking loss and hard negatives.

    The network is a torchvision trunk (as :class:`~skretrieval.extraction.CNNFeatureExtractor`
    cuts it) followed by a differentiable pooling head that outputs L2-normalised descriptors:

    - ``pooling="rmac"`` (Gordo et al. 2017): each region of the R-MAC grid
      (:func:`~skretrieval.pooling.rmac_regions`, 3 levels) is max-pooled and L2-normalised,
      goes through a shared fully connected layer with bias (the PCA shift and projection),
      is L2-normalised again; the regions are summed and the sum L2-normalised.
    - ``pooling="gem"`` (Radenovic et al. 2018): generalised mean pooling with a learnable
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
    max_size : int, default=224
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
    verbose : bool, default=True
        Show a tqdm progress bar over the epochs.
    image_size : int
        Former name of ``max_size``.

        .. deprecated:: 0.3
           ``image_size`` was renamed ``max_size`` in 0.3 and will be removed in 0.5.
    progress : bool
        Former name of ``verbose``.

        .. deprecated:: 0.3
           ``progress`` was renamed ``verbose`` in 0.3 and will be removed in 0.5.

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
    >>> tuner = RetrievalFineTuner(max_size=128, max_epochs=5, learning_rate=1e-4)
    >>> descriptors = tuner.fit(images, labels).transform(images)  # doctest: +SKIP
    >>> ImageRetriever().fit(descriptors, labels).kneighbors(descriptors)  # doctest: +SKIP
    """

    _parameter_constraints: dict = {
        "backbone": [str],
        "weights": [StrOptions({"imagenet"}), str, os.PathLike, WeightsEnum, None],
        "pooling": [StrOptions({"rmac", "gem"})],
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "p": [Interval(Real, 0, None, closed="neither")],
        "max_size": [Interval(Integral, 1, None, closed="left")],
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
        "verbose": ["boolean"],
        "image_size": [
            Interval(Integral, 1, None, closed="left"),
            Hidden(StrOptions({"deprecated"})),
        ],
        "progress": ["boolean", Hidden(StrOptions({"deprecated"}))],
    }

    def __init__(
        self,
        backbone="mobilenet_v2",
        weights="imagenet",
        pooling="rmac",
        n_components=None,
        p=3.0,
        max_size=224,
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
        verbose=True,
        image_size="deprecated",
        progress="deprecated",
    ):
        self.backbone = backbone
        self.weights = weights
        self.pooling = pooling
        self.n_components = n_components
        self.p = p
        self.max_size = max_size
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
        self.verbose = verbose
        self.image_size = image_size
        self.progress = progress

    # ---------------------------------------------------------------- fit

    def _decode_training_images(self, images, max_size):
        planned = plan(images, max_size, self.min_image_size_, self.backbone)
        pixels = [None] * len(planned)
        for batch in image_batches(planned, 64):
            decoded = prepare_batch(batch, pin_memory=False)
            for image, row in zip(batch, decoded, strict=True):
                pixels[image.index] = row
        return pixels

    def _describe(self, pixels, indices):
        """Descriptors of training images with the current network, without gradients."""
        with torch.no_grad():
            descriptors = forward_images(
                self.model_,
                pixels,
                list(indices),
                self.device_,
                self.mixed_precision,
                self.batch_size,
            )
        return descriptors.cpu().numpy().astype(np.float64)

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
        descriptors = forward_images(
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
        images = as_image_list(X)
        codes = check_labels(images, y)
        check_backbone(self.backbone)
        max_size = renamed_parameter(self, "image_size", "max_size")
        verbose = renamed_parameter(self, "progress", "verbose")
        rng = check_random_state(self.random_state)
        device = resolve_device(self.device)

        trunk = build_trunk(
            self.backbone, self.weights, progress=verbose, random_state=self.random_state
        )
        network = build_network(
            trunk.module, trunk.n_channels, self.backbone, self.pooling, self.n_components, self.p
        )
        network.head.to_empty(device="cpu")
        with torch.no_grad():
            if self.pooling == "gem":
                network.head.p.fill_(self.p)

        self.device_ = device
        self.model_ = place_network(network, device)
        self.n_channels_ = trunk.n_channels
        self.n_features_out_ = network.head.whiten.out_features
        self.min_image_size_ = trunk.min_image_size
        self._build_kwargs = trunk.build_kwargs

        pixels = self._decode_training_images(images, max_size)
        n_images = len(pixels)
        pool_size = n_images if self.pool_size is None else min(self.pool_size, n_images)
        initial_pool = np.sort(rng.choice(n_images, pool_size, replace=False))
        init_whitening(
            self.model_, pixels, initial_pool, device, self.mixed_precision, self.batch_size
        )

        members = [np.flatnonzero(codes == code) for code in range(codes.max() + 1)]
        optimizer = self._optimizer()
        scaler = torch.amp.GradScaler(
            "cuda", enabled=self.mixed_precision and device.type == "cuda"
        )
        self.loss_curve_ = []
        negatives = None
        epochs = tqdm(range(self.max_epochs), disable=not verbose, desc=type(self).__name__)
        for epoch in epochs:
            if epoch % self.pool_refresh == 0:
                pool = np.sort(rng.choice(n_images, pool_size, replace=False))
                descriptors = self._describe(pixels, np.arange(n_images))
                negatives = mine_negatives(
                    descriptors, codes, descriptors[pool], codes[pool], pool, self.n_negatives
                )
            losses, weights = [], []
            for tuples in tuple_batches(codes, members, negatives, self.batch_size, rng):
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
        max_size = renamed_parameter(self, "image_size", "max_size")
        images = plan(X, max_size, self.min_image_size_, self.backbone)
        device = self.device_
        pin_memory = device.type == "cuda"
        descriptors = np.empty((len(images), self.n_features_out_), dtype=np.float32)

        def prepare(batch):
            return prepare_batch(batch, pin_memory)

        batches = image_batches(images, self.batch_size)
        with closing(prefetched(prepare, batches, 1)) as results, torch.inference_mode():
            for batch, pixels in results:
                with autocast(device, enabled=self.mixed_precision, training=True):
                    output = self.model_(normalize_pixels(pixels, device))
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
            "max_size": int(renamed_parameter(self, "image_size", "max_size")),
            "p": self.p_,
            "loss_curve": [float(loss) for loss in self.loss_curve_],
            "n_iter": int(self.n_iter_),
        }

    def _cpu_state_dict(self):
        return {key: value.detach().cpu() for key, value in self.model_.state_dict().items()}

    def _rebuild(self, state_dict):
        """Rebuild ``model_`` from the configuration attributes and a state dict."""
        trunk, _, _ = make_trunk(self.backbone, self._build_kwargs)
        network = build_network(
            trunk, self.n_channels_, self.backbone, self.pooling, self.n_features_out_
        )
        network.load_state_dict(state_dict, assign=True)
        network.requires_grad_(False)
        self.device_ = resolve_device(self.device)
        self.model_ = place_network(network, self.device_)

    def save_weights(self, path):
        """Write the network's weights and configuration to a file, atomically.

        The file is a ``torch.save`` dictionary with ``"config"`` (backbone, pooling,
        descriptor length, GeM exponent, ...) and ``"state_dict"`` (on CPU), written with
        :func:`skretrieval.persistence.atomic_write`: to a temporary file in the same folder,
        then renamed over ``path``.

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
        content = {"config": self._config(), "state_dict": self._cpu_state_dict()}
        with atomic_write(path) as file:
            torch.save(content, file)
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
            # Files written before the rename of image_size hold that name.
            max_size=config["max_size"] if "max_size" in config else config["image_size"],
            batch_size=batch_size,
            device=device,
            mixed_precision=mixed_precision,
            verbose=False,
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
        from skretrieval.extraction._state import portable_state

        # Weights as numpy arrays on CPU: loadable without the device and without pickle.
        return portable_state(super().__getstate__(), {"model_": "_model_state"})

    def __setstate__(self, state):
        from skretrieval.extraction._state import as_tensors, restore_parameters

        model_state = state.pop("_model_state", None)
        renames = {"image_size": "max_size", "progress": "verbose"}
        super().__setstate__(restore_parameters(upgrade_renamed_state(state, renames)))
        if model_state is not None:
            self._rebuild(as_tensors(model_state))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Input is a list of images (file paths or arrays), not a numeric 2-D array.
        tags.input_tags.two_d_array = False
        tags.input_tags.one_d_array = True
        tags.input_tags.string = True
        tags.target_tags.required = True
        tags.transformer_tags.preserves_dtype = []
        return tags
