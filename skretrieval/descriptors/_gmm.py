"""One Gaussian mixture per image, fitted to its local features."""

import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.parallel import Parallel, delayed
from sklearn.utils.validation import check_is_fitted

from skretrieval._utils.validation import check_local_features
from skretrieval.descriptors._local import check_n_features
from skretrieval.descriptors._mixtures import GaussianMixtures


def _fit_mixture(index, features, n_components, covariance_type, reg_covar, max_iter, tol, seed):
    """Fit the GaussianMixture of image ``index``.

    Returns ``(weights, means, covariances, converged)``.
    """
    model = GaussianMixture(
        n_components=n_components,
        covariance_type=covariance_type,
        reg_covar=reg_covar,
        max_iter=max_iter,
        tol=tol,
        random_state=seed,
    )
    with warnings.catch_warnings():
        # Reported once by the caller: warnings raised in joblib workers would be lost.
        warnings.simplefilter("ignore", ConvergenceWarning)
        try:
            model.fit(features)
        except ValueError as error:
            raise ValueError(
                f"Fitting the Gaussian mixture of X[{index}] ({features.shape[0]} local "
                f"features of dimension {features.shape[1]}) failed: {error}"
            ) from error
    covariances = model.covariances_
    smallest = covariances if covariance_type == "diag" else np.linalg.eigvalsh(covariances)
    if not np.all(smallest > 0):
        # reg_covar is absolute: next to large local features it can be lost to rounding.
        raise ValueError(
            f"The Gaussian mixture of X[{index}] ({features.shape[0]} local features of "
            f"dimension {features.shape[1]}, up to {np.abs(features).max():.3g} in magnitude) "
            "has a covariance that is not positive definite: its local features spread too "
            "little for their size. Scale them (e.g. LocalPCA) or increase reg_covar."
        )
    return model.weights_, model.means_, covariances, model.converged_


_AUTO_NOT_FITTED = (
    "GMMDescriptor(reg_covar='auto') learns its regularisation in fit: call fit (or "
    "fit_transform) on training images first, or give reg_covar a number."
)

# GaussianMixture's own default: the floor of a learned regularisation on constant features.
_MIN_REG_COVAR = 1e-6


def _auto_reg_covar(features):
    """3 x the median, over images and axes, of the per-axis variance within an image.

    One value for the collection (not per image): a per-image floor gives the images whose
    features spread little sharp Gaussians, which the KL divergence punishes (measured worse
    in ``benchmarks/bench_gmm_regularisation.py``).
    """
    per_axis = np.concatenate([image.var(axis=0, dtype=np.float64) for image in features])
    return max(3.0 * float(np.median(per_axis)), _MIN_REG_COVAR)


# auto_wrap_output_keys=None: a GaussianMixtures container, which set_output's pandas or polars
# containers cannot hold.
class GMMDescriptor(TransformerMixin, BaseEstimator, auto_wrap_output_keys=None):
    """One Gaussian mixture per image, fitted to its local features.

    Each image's local features (e.g. the output of :class:`LocalPCA`) are modelled by a
    :class:`~sklearn.mixture.GaussianMixture` with ``n_components`` components, fitted by EM
    independently per image (in parallel with ``n_jobs``). The mixtures are returned in a
    :class:`GaussianMixtures` container. Images whose EM does not converge keep their last
    estimate and are named in one ``ConvergenceWarning``.

    With a number as ``reg_covar`` the transformer is stateless: ``fit`` only validates ``X``
    and records ``n_features_in_``, and ``transform`` works without it. ``reg_covar="auto"``
    learns the regularisation from the training images in ``fit``.

    Parameters
    ----------
    n_components : int, default=4
        Number ``K`` of components per image. An image with fewer local features (or with
        a single one: EM needs two) raises a ``ValueError`` naming it.
    covariance_type : {"full", "diag"}, default="full"
        Full covariance matrices or diagonal (per-dimension) variances.
    reg_covar : float or "auto", default=1e-2
        Non-negative regularisation added to the covariance diagonals, the same for every
        image. Nearly singular components make the KL divergence of mixtures unreliable: with
        ``1e-6``, the mean leave-one-out mAP of the mixture KL over three datasets (see
        ``benchmarks/bench_defaults.py``) was 0.28, against 0.52 with ``1e-2``.

        A number is absolute. 1e-2 suits the default output of :class:`LocalPCA` (CNN local
        features L2-normalised, then projected), whose per-axis variance within an image is
        about 0.003-0.007 (median): the floor is then 45-80% of each component's variance,
        so components that lie close together merge, and a single component scored as well as
        2 or 3 in ``benchmarks/bench_gmm_regularisation.py``. Features of another scale need
        another value: whitened ones (``LocalPCA(whiten=True)``) about 1.

        ``"auto"`` learns it in ``fit``: 3 times the median, over the training images and
        axes, of the per-axis variance of an image's local features (``reg_covar_``). On the
        three datasets of that benchmark (two components, mean leave-one-out mAP of KL and
        MW2) it matched 1e-2 on the default features (0.727 against 0.724) and the best fixed
        value on whitened ones (0.771 for both; 1e-2 gave 0.723 there).
    max_iter : int, default=100
        Maximum number of EM iterations.
    tol : float, default=1e-3
        EM convergence threshold on the lower bound.
    random_state : int, RandomState instance or None, default=None
        Seed of every image's ``GaussianMixture`` initialisation: each image is fitted with
        ``GaussianMixture(random_state=random_state)`` for an int. A RandomState instance is
        first reduced to one integer seed, so the result never depends on ``n_jobs``.
    n_jobs : int or None, default=None
        Number of images fitted in parallel (joblib); ``None`` means 1 unless in a
        ``joblib.parallel_backend`` context, -1 means all processors.

    Attributes
    ----------
    n_features_in_ : int
        Dimension ``d`` of the local features seen in ``fit``.
    reg_covar_ : float
        The regularisation ``transform`` uses: ``reg_covar`` itself, or the value learned for
        ``"auto"``.

    Examples
    --------
    >>> import numpy as np
    >>> from skretrieval.descriptors import GMMDescriptor
    >>> rng = np.random.default_rng(0)
    >>> local = [rng.normal(size=(40, 3)), rng.normal(size=(30, 3))]
    >>> mixtures = GMMDescriptor(n_components=2, random_state=0).fit_transform(local)
    >>> mixtures
    GaussianMixtures(n_mixtures=2, n_components=2, n_features=3, covariance_type='full')
    >>> mixtures.covariances.shape
    (2, 2, 3, 3)
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "covariance_type": [StrOptions({"full", "diag"})],
        "reg_covar": [Interval(Real, 0.0, None, closed="left"), StrOptions({"auto"})],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0.0, None, closed="left")],
        "random_state": ["random_state"],
        "n_jobs": [Integral, None],
    }

    def __init__(
        self,
        n_components=4,
        covariance_type="full",
        reg_covar=1e-2,
        max_iter=100,
        tol=1e-3,
        random_state=None,
        n_jobs=None,
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.n_jobs = n_jobs

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Validate ``X`` and record the dimension of its local features.

        Parameters
        ----------
        X : list of ndarray of shape (n_i, d), or ndarray of shape (n, m, d)
            Local features of each image, e.g. the output of :class:`LocalPCA`.
        y : None
            Ignored.

        Returns
        -------
        self : GMMDescriptor
            Fitted estimator.
        """
        features = check_local_features(X)
        check_n_features(self, features[0].shape[1], reset=True)
        if self.reg_covar == "auto":
            self.reg_covar_ = _auto_reg_covar(features)
        else:
            self.reg_covar_ = float(self.reg_covar)
        return self

    def transform(self, X):
        """Fit one Gaussian mixture per image.

        Parameters
        ----------
        X : list of ndarray of shape (n_i, d), or ndarray of shape (n, m, d)
            Local features of each image.

        Returns
        -------
        mixtures : GaussianMixtures
            ``n`` mixtures of ``n_components`` components in dimension ``d``.
        """
        self._validate_params()
        if self.reg_covar == "auto":
            check_is_fitted(self, "reg_covar_", msg=_AUTO_NOT_FITTED)
            reg_covar = self.reg_covar_
        else:
            reg_covar = self.reg_covar
        features = check_local_features(X)
        check_n_features(self, features[0].shape[1], reset=False)
        for i, image in enumerate(features):
            if image.shape[0] < self.n_components:
                raise ValueError(
                    f"X[{i}] has {image.shape[0]} local features, fewer than "
                    f"n_components={self.n_components}: a mixture needs at least one local "
                    "feature per component."
                )
            if image.shape[0] < 2:
                raise ValueError(
                    f"X[{i}] has a single local feature: EM needs at least 2 to fit a "
                    "Gaussian mixture (drop the image, or give it more local features)."
                )
        seed = self.random_state
        if isinstance(seed, np.random.RandomState):
            seed = int(seed.randint(np.iinfo(np.int32).max))
        results = Parallel(n_jobs=self.n_jobs)(
            delayed(_fit_mixture)(
                i,
                image,
                self.n_components,
                self.covariance_type,
                reg_covar,
                self.max_iter,
                self.tol,
                seed,
            )
            for i, image in enumerate(features)
        )
        weights, means, covariances, converged = zip(*results, strict=True)
        not_converged = [i for i, flag in enumerate(converged) if not flag]
        if not_converged:
            warnings.warn(
                f"EM did not converge in max_iter={self.max_iter} iterations for images "
                f"{not_converged}; their last estimates are used. Increase max_iter or tol.",
                ConvergenceWarning,
                stacklevel=2,
            )
        return GaussianMixtures(
            np.stack(weights), np.stack(means), np.stack(covariances), self.covariance_type
        )

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Input is a ragged list of (n_i, d) local-feature arrays; output a GaussianMixtures.
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.requires_fit = False
        tags.transformer_tags.preserves_dtype = []
        return tags
