"""Supervised embedding of global descriptors with metric-learning losses."""

import copy
import math
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
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from skretrieval._utils.devices import resolve_device
from skretrieval.learning._losses import (
    PDDMUnit,
    batch_contrastive_loss,
    batch_hard_triplet_loss,
    pddm_loss,
    vmf_class_means,
    vmf_loss,
)
from skretrieval.metrics import mean_average_precision

# Margin used when ``margin=None``, per loss (vMF has none).
# The contrastive margin is wider than the 0.7 of Radenovic et al.: 1.4 gave a higher test mAP on
# both digits and the ORL faces (benchmarks/bench_defaults.py --part learning).
_DEFAULT_MARGINS = {"triplet": 0.1, "contrastive": 1.4, "pddm": 0.5}
# Fewest samples of a class in a batch (the K of P x K), when the batch size allows it.
_MIN_SAMPLES_PER_CLASS = 4
# Rows embedded at once outside training, and queries scored at once for validation.
_INFERENCE_BLOCK = 4096
_VALIDATION_BLOCK = 1024


class _EmbeddingNetwork(nn.Module):
    """Linear layers with ReLU in between, then L2 normalisation of the output."""

    def __init__(self, n_features, hidden_layer_sizes, n_components):
        super().__init__()
        layers = []
        width = n_features
        for size in hidden_layer_sizes:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, n_components))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return F.normalize(self.layers(x), dim=1)


def _check_hidden_layer_sizes(hidden_layer_sizes):
    sizes = tuple(hidden_layer_sizes)
    for size in sizes:
        if not isinstance(size, Integral | np.integer) or isinstance(size, bool) or size < 1:
            raise ValueError(
                f"hidden_layer_sizes must hold positive integers; got {hidden_layer_sizes!r}."
            )
    return tuple(int(size) for size in sizes)


def _check_class_counts(classes, counts):
    if len(classes) < 2:
        raise ValueError(
            f"y has only 1 class ({classes.tolist()[0]!r}); metric learning needs at least 2 "
            "classes."
        )
    single = classes[counts < 2]
    if len(single):
        raise ValueError(
            f"classes {single.tolist()} of y have a single sample, so no positive pair; every "
            "class needs at least 2 samples."
        )


def _stratified_split(y_index, n_classes, validation_fraction, rng):
    """Indices ``(train, validation)``: ``ceil(validation_fraction * n_c)`` samples of every
    class held out, but never leaving a class fewer than 2 training samples."""
    train, validation = [], []
    for label in range(n_classes):
        members = rng.permutation(np.flatnonzero(y_index == label))
        n_validation = min(math.ceil(validation_fraction * len(members)), len(members) - 2)
        validation.append(members[:n_validation])
        train.append(members[n_validation:])
    train, validation = np.sort(np.concatenate(train)), np.sort(np.concatenate(validation))
    if len(validation) == 0:
        raise ValueError(
            f"validation_fraction={validation_fraction} holds out no sample (every class keeps "
            "at least 2 training samples); increase it or set early_stopping=False."
        )
    return train, validation


def _batch_shape(batch_size, n_classes):
    """``(P, K)``: P classes of up to K samples per batch, P, K >= 2 and P * K <= batch_size."""
    n_per_class = max(batch_size // n_classes, min(_MIN_SAMPLES_PER_CLASS, batch_size // 2))
    return min(n_classes, batch_size // n_per_class), n_per_class


def _class_batches(members, n_batches, n_classes_per_batch, n_per_class, rng):
    """Yield index arrays: ``n_classes_per_batch`` random classes, up to ``n_per_class`` random
    samples of each, without replacement."""
    for _ in range(n_batches):
        classes = rng.choice(len(members), n_classes_per_batch, replace=False)
        yield np.concatenate(
            [
                rng.choice(members[c], min(n_per_class, len(members[c])), replace=False)
                for c in classes
            ]
        )


def _embed(network, X):
    with torch.inference_mode():
        return torch.cat(
            [
                network(X[start : start + _INFERENCE_BLOCK])
                for start in range(0, len(X), _INFERENCE_BLOCK)
            ]
        )


def _retrieval_map(queries, query_labels, database, database_labels):
    """mAP of ``queries`` against ``database`` by cosine similarity (unit-norm rows), relevance =
    equal labels; every query must have a relevant database item."""
    total = 0.0
    for start in range(0, len(queries), _VALIDATION_BLOCK):
        stop = min(start + _VALIDATION_BLOCK, len(queries))
        similarities = (queries[start:stop] @ database.T).cpu().numpy()
        relevant = query_labels[start:stop, None] == database_labels[None, :]
        total += (stop - start) * mean_average_precision(relevant, similarities)
    return total / len(queries)


class EmbeddingLearner(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Learn an embedding of descriptors in which items of the same class are near.

    A small network (linear, or a multilayer perceptron with ReLU) maps standardised descriptors
    to ``n_components`` dimensions followed by L2 normalisation, trained with a metric-learning
    loss on labelled descriptors. :meth:`transform` returns unit-norm embeddings to search with
    ``ImageRetriever(metric="cosine")``.

    Training uses Adam with decoupled weight decay (AdamW) on batches of P classes x K samples,
    so that every sample of a batch has positives: K is ``max(batch_size // n_classes, min(4,
    batch_size // 2))``, P is ``min(n_classes, batch_size // K)``, classes and samples are drawn
    at random without replacement (a class with fewer than K samples gives all of them). An
    epoch is ``ceil(n_train / (P * K))`` batches.

    Parameters
    ----------
    loss : {"vmf", "pddm", "triplet", "contrastive"}, default="vmf"
        - ``"vmf"``: von Mises-Fisher loss (Zhe, Chen and Yan 2018), see
          :func:`~skretrieval.learning._losses.vmf_loss`. The class mean directions are
          computed over the whole training set (global view) at the start of every epoch, from
          the embeddings of the current network without gradient; they are constants within
          the epoch.
        - ``"pddm"``: PDDM hard-quadruplet mining and double-header hinge loss (Huang, Loy and
          Tang 2016), see :func:`~skretrieval.learning._losses.pddm_loss`; the PDDM unit, of
          width ``n_components``, is trained with the embedding and discarded after ``fit``.
        - ``"triplet"``: triplet loss with squared distances (Gordo et al. 2017) on batch-hard
          triplets (Hermans et al. 2017).
        - ``"contrastive"``: contrastive loss (Hadsell et al. 2006, Radenovic et al. 2016) over
          all pairs of the batch, positive and negative pairs averaged separately.
    n_components : int, default=64
        Dimension of the embedding.
    hidden_layer_sizes : tuple of int, default=()
        Widths of the hidden layers; ``()`` is a linear map.
    margin : float or None, default=None
        Margin of the loss: triplet (on squared distances, default 0.1), contrastive (on
        distances, default 1.4), PDDM score margin alpha (default 0.5; the embedding margin beta
        is 0.5 and its weight lambda 1). Must be None for ``"vmf"``, which has no margin.
    kappa : float, default=4.0
        Concentration shared by the classes' vMF distributions (``loss="vmf"`` only): the
        logits are ``kappa`` times the cosines to the class means. Measured test mAP on digits
        and the ORL faces fell as ``kappa`` grew from 4 to 64 (``benchmarks/
        bench_defaults.py --part learning``), hence the low default.
    max_epochs : int, default=50
        Largest number of epochs.
    batch_size : int, default=128
        Largest number of samples in a batch (at least 4, so that a batch holds 2 classes of
        2 samples).
    learning_rate : float, default=1e-3
        Learning rate of AdamW.
    weight_decay : float, default=1e-4
        Decoupled weight decay of AdamW.
    early_stopping : bool, default=True
        Hold out ``validation_fraction`` of the samples, stratified by class, and stop when
        their mAP has not improved for ``n_iter_no_change`` epochs; the weights of the best
        epoch are kept. The validation mAP ranks the training samples for each held-out sample
        by cosine similarity of the embeddings (relevance = same class, step interpolation of
        :func:`skretrieval.metrics.mean_average_precision`). False trains on all samples for
        ``max_epochs``.
    validation_fraction : float, default=0.1
        Fraction of every class held out when ``early_stopping``, rounded up; a class always
        keeps at least 2 training samples (so classes of 2 samples are not validated).
    n_iter_no_change : int, default=5
        Epochs without improvement of the validation mAP by more than ``tol`` before stopping.
    tol : float, default=1e-4
        Smallest increase of the validation mAP that counts as an improvement.
    device : str or torch.device, default="auto"
        ``"auto"`` picks CUDA when available, then MPS, else CPU, as
        :class:`~skretrieval.extraction.CNNFeatureExtractor`.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation (through a private torch generator state; torch's global one is
        left as it was), the validation split and the batches. Training on CPU is then
        deterministic.
    verbose : bool, default=False
        Show a tqdm progress bar over the epochs with the training loss and validation mAP.

    Attributes
    ----------
    n_features_in_ : int
        Number of features seen during :meth:`fit`.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during :meth:`fit`, only when ``X`` has string feature names.
    classes_ : ndarray of shape (n_classes,)
        Class labels.
    mean_ : ndarray of shape (n_features_in_,)
        Mean of the training descriptors, subtracted before the network.
    scale_ : ndarray of shape (n_features_in_,)
        Standard deviation of the training descriptors (1 where it is 0), divided by before the
        network.
    network_ : torch.nn.Module
        The trained embedding network, on ``device_``, in eval mode.
    device_ : torch.device
        Device the network runs on.
    loss_curve_ : list of float
        Mean training loss of every epoch.
    validation_scores_ : list of float or None
        Validation mAP after every epoch; None without early stopping.
    n_iter_ : int
        Number of epochs run.
    best_epoch_ : int
        Epoch (counted from 1) whose weights are kept: the best validation mAP with early
        stopping, else the last.

    Notes
    -----
    Inputs are standardised inside (per feature, with the mean and standard deviation of the
    training samples), so descriptors of any scale train with the same learning rate.
    Pickling stores the network weights on CPU and rebuilds the network when loaded (on
    ``device_`` again, ``device="auto"`` being resolved anew).

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from skretrieval.learning import EmbeddingLearner
    >>> X, y = load_iris(return_X_y=True)
    >>> learner = EmbeddingLearner(n_components=2, max_epochs=5, random_state=0).fit(X, y)
    >>> embeddings = learner.transform(X)
    >>> embeddings.shape, embeddings.dtype
    ((150, 2), dtype('float32'))
    """

    _parameter_constraints: dict = {
        "loss": [StrOptions({"vmf", "pddm", "triplet", "contrastive"})],
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "hidden_layer_sizes": ["array-like"],
        "margin": [Interval(Real, 0, None, closed="neither"), None],
        "kappa": [Interval(Real, 0, None, closed="neither")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 4, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "device": [str, torch.device],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(
        self,
        loss="vmf",
        *,
        n_components=64,
        hidden_layer_sizes=(),
        margin=None,
        kappa=4.0,
        max_epochs=50,
        batch_size=128,
        learning_rate=1e-3,
        weight_decay=1e-4,
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=5,
        tol=1e-4,
        device="auto",
        random_state=None,
        verbose=False,
    ):
        self.loss = loss
        self.n_components = n_components
        self.hidden_layer_sizes = hidden_layer_sizes
        self.margin = margin
        self.kappa = kappa
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.tol = tol
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _margin(self):
        if self.loss == "vmf":
            if self.margin is not None:
                raise ValueError(
                    f"margin={self.margin!r} is not used by loss='vmf'; leave it None (the vMF "
                    "loss is tuned by kappa)."
                )
            return None
        return _DEFAULT_MARGINS[self.loss] if self.margin is None else float(self.margin)

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Train the embedding network on labelled descriptors.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training descriptors.
        y : array-like of shape (n_samples,)
            Class labels: at least 2 classes, each with at least 2 samples. Required; the
            default None only gives a clear error.

        Returns
        -------
        self : object
            The fitted learner.
        """
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        classes, y_index, counts = np.unique(y, return_inverse=True, return_counts=True)
        _check_class_counts(classes, counts)
        hidden_layer_sizes = _check_hidden_layer_sizes(self.hidden_layer_sizes)
        margin = self._margin()
        device = resolve_device(self.device)
        rng = check_random_state(self.random_state)
        n_classes = len(classes)

        if self.early_stopping:
            train, validation = _stratified_split(y_index, n_classes, self.validation_fraction, rng)
        else:
            train, validation = np.arange(len(y_index)), np.arange(0)
        mean = X[train].mean(axis=0, dtype=np.float64)
        scale = X[train].std(axis=0, dtype=np.float64)
        scale[scale == 0] = 1.0

        def as_tensor(rows):
            return torch.as_tensor(((X[rows] - mean) / scale).astype(np.float32), device=device)

        X_train, X_validation = as_tensor(train), as_tensor(validation)
        y_train_np, y_validation_np = y_index[train], y_index[validation]
        y_train = torch.as_tensor(y_train_np, dtype=torch.long, device=device)

        seed = rng.randint(np.iinfo(np.int32).max)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            network = _EmbeddingNetwork(X.shape[1], hidden_layer_sizes, self.n_components)
            pddm = PDDMUnit(self.n_components, self.n_components) if self.loss == "pddm" else None
        network.to(device)
        parameters = list(network.parameters())
        if pddm is not None:
            pddm.to(device)
            parameters += list(pddm.parameters())
        optimizer = torch.optim.AdamW(
            parameters, lr=self.learning_rate, weight_decay=self.weight_decay
        )

        def batch_loss(embeddings, labels):
            if self.loss == "vmf":
                return vmf_loss(embeddings, labels, class_means, self.kappa)
            if self.loss == "pddm":
                return pddm_loss(embeddings, labels, pddm, score_margin=margin)
            if self.loss == "triplet":
                return batch_hard_triplet_loss(embeddings, labels, margin)
            return batch_contrastive_loss(embeddings, labels, margin)

        members = [np.flatnonzero(y_train_np == label) for label in range(n_classes)]
        n_classes_per_batch, n_per_class = _batch_shape(self.batch_size, n_classes)
        n_batches = math.ceil(len(train) / (n_classes_per_batch * n_per_class))

        self.loss_curve_ = []
        self.validation_scores_ = [] if self.early_stopping else None
        best_score, best_state, best_epoch, n_no_change = -np.inf, None, 0, 0
        train_embeddings = _embed(network, X_train) if self.loss == "vmf" else None
        epochs = tqdm(
            range(self.max_epochs),
            disable=not self.verbose,
            desc=type(self).__name__,
            unit="epoch",
        )
        epoch = 0
        for epoch in epochs:
            if self.loss == "vmf":
                # Global view: means over the whole training set, fixed during the epoch.
                class_means = vmf_class_means(train_embeddings, y_train, n_classes)
            network.train()
            losses = []
            for batch in _class_batches(members, n_batches, n_classes_per_batch, n_per_class, rng):
                batch = torch.as_tensor(batch, device=device)
                loss = batch_loss(network(X_train[batch]), y_train[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
            network.eval()
            self.loss_curve_.append(float(np.mean(losses)))
            if self.loss == "vmf" or self.early_stopping:
                train_embeddings = _embed(network, X_train)
            if not self.early_stopping:
                epochs.set_postfix(loss=self.loss_curve_[-1])
                continue
            score = _retrieval_map(
                _embed(network, X_validation), y_validation_np, train_embeddings, y_train_np
            )
            self.validation_scores_.append(score)
            epochs.set_postfix(loss=self.loss_curve_[-1], validation_map=score)
            # As scikit-learn's MLP: the best weights are kept, but only gains above tol
            # reset the patience.
            n_no_change = n_no_change + 1 if score <= best_score + self.tol else 0
            if score > best_score:
                best_score, best_epoch = score, epoch + 1
                best_state = copy.deepcopy(network.state_dict())
            if n_no_change >= self.n_iter_no_change:
                break
        epochs.close()
        if self.early_stopping:
            network.load_state_dict(best_state)
        else:
            best_epoch = epoch + 1

        self.classes_ = classes
        self.mean_ = mean
        self.scale_ = scale
        self.network_ = network.eval()
        self.device_ = device
        self.n_iter_ = epoch + 1
        self.best_epoch_ = best_epoch
        self._hidden_layer_sizes = hidden_layer_sizes
        return self

    def transform(self, X):
        """Embed descriptors.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features_in_)
            Descriptors.

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_components)
            Float32 embeddings of unit L2 norm.
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        inputs = torch.as_tensor(
            ((X - self.mean_) / self.scale_).astype(np.float32), device=self.device_
        )
        return _embed(self.network_, inputs).cpu().numpy()

    @property
    def _n_features_out(self):
        return self.n_components

    def __getstate__(self):
        from skretrieval.extraction._state import portable_state

        # Weights as numpy arrays on CPU: loadable without the device and without pickle.
        return portable_state(super().__getstate__(), {"network_": "_network_state"})

    def __setstate__(self, state):
        from skretrieval.extraction._state import as_tensors

        network_state = state.pop("_network_state", None)
        super().__setstate__(state)
        if network_state is not None:
            self.device_ = resolve_device(self.device)
            network = _EmbeddingNetwork(
                self.n_features_in_, self._hidden_layer_sizes, self.n_components
            )
            network.load_state_dict(as_tensors(network_state))
            self.network_ = network.to(self.device_).eval()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        # Embeddings are float32 whatever the input.
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags
