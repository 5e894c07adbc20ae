"""One SPD covariance matrix per image, and the embedding of Gaussians as SPD matrices."""

import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.covariance import GraphicalLasso, empirical_covariance, ledoit_wolf, oas
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.parallel import Parallel, delayed

from skretrieval._utils.validation import check_local_features
from skretrieval.descriptors._local import check_n_features


class RegularizationWarning(UserWarning):
    """An image's covariance estimate was singular and was shrunk towards a scaled identity."""


def gaussian_to_spd(means, covariances):
    """Embed Gaussians ``N(m, S)`` as SPD ``[[S + m m^T, m], [m^T, 1]]`` (Lovric et al. 2000).

    The embedding is a bijection between ``d``-variate Gaussians and ``(d + 1) x (d + 1)``
    SPD matrices with last diagonal entry 1; its Schur complement is ``S``, so it is SPD
    exactly when ``S`` is.

    Parameters
    ----------
    means : ndarray of shape (..., d)
        Means.
    covariances : ndarray of shape (..., d, d)
        SPD covariance matrices.

    Returns
    -------
    embedded : ndarray of shape (..., d + 1, d + 1)

    Examples
    --------
    >>> import numpy as np
    >>> from skretrieval.descriptors import gaussian_to_spd
    >>> gaussian_to_spd(np.array([2.0]), np.array([[3.0]]))
    array([[7., 2.],
           [2., 1.]])
    """
    means = np.asarray(means, dtype=np.float64)
    covariances = np.asarray(covariances, dtype=np.float64)
    d = means.shape[-1]
    if covariances.shape[-2:] != (d, d) or covariances.shape[:-2] != means.shape[:-1]:
        raise ValueError(
            f"covariances of shape {covariances.shape} do not match means of shape "
            f"{means.shape}; expected {means.shape[:-1] + (d, d)}."
        )
    embedded = np.empty(means.shape[:-1] + (d + 1, d + 1))
    embedded[..., :d, :d] = covariances + means[..., :, None] * means[..., None, :]
    embedded[..., :d, d] = means
    embedded[..., d, :d] = means
    embedded[..., d, d] = 1.0
    return embedded


def _estimate_covariance(features, estimator, alpha, assume_centered, max_iter, tol):
    """Covariance of one image's local features; returns ``(covariance, error, converged)``.

    Runs in joblib workers, whose warnings would be lost: convergence is reported back and
    warned about by the caller instead.
    """
    if estimator == "empirical":
        return empirical_covariance(features, assume_centered=assume_centered), None, True
    if estimator == "ledoit_wolf":
        return ledoit_wolf(features, assume_centered=assume_centered)[0], None, True
    if estimator == "oas":
        return oas(features, assume_centered=assume_centered)[0], None, True
    model = GraphicalLasso(alpha=alpha, assume_centered=assume_centered, max_iter=max_iter, tol=tol)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        try:
            model.fit(features)
        except FloatingPointError as error:
            return None, str(error), False
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return model.covariance_, None, converged


def _shrink_to_identity(covariance, reg):
    """``(1 - reg) S + reg * (tr S / d) I``: smallest eigenvalue at least ``reg * tr S / d``."""
    d = covariance.shape[0]
    scale = np.trace(covariance) / d
    shrunk = (1.0 - reg) * covariance
    shrunk[np.diag_indices(d)] += reg * scale
    return shrunk


# auto_wrap_output_keys=None: a 3-D array of matrices, which set_output's pandas or polars
# containers cannot hold.
class SparseCovariance(TransformerMixin, BaseEstimator, auto_wrap_output_keys=None):
    """One SPD covariance matrix per image from its local features.

    Each image is modelled by a Gaussian of its local features (e.g. the output of
    :class:`LocalPCA`) and described by its covariance (Qian et al. 2017), estimated with one of
    scikit-learn's estimators. The output is guaranteed SPD: an estimate whose smallest
    eigenvalue is at most ``reg * tr(S) / d`` (always the case for ``"empirical"`` when an
    image has no more local features than dimensions) is shrunk towards a scaled identity,
    ``(1 - reg) S + reg * tr(S) / d * I``, and a :class:`RegularizationWarning` names those
    images with their numbers of local features. Ledoit-Wolf, OAS and the graphical lasso
    are themselves well conditioned for few samples, so they rarely need it.

    The transformer is stateless: ``fit`` only validates ``X`` and records
    ``n_features_in_``, and ``transform`` works without it.

    Parameters
    ----------
    estimator : {"oas", "ledoit_wolf", "empirical", "graphical_lasso"}, default="oas"
        Covariance estimator applied to each image:
        :func:`~sklearn.covariance.oas`, :func:`~sklearn.covariance.ledoit_wolf`,
        :func:`~sklearn.covariance.empirical_covariance` (maximum likelihood), or
        :class:`~sklearn.covariance.GraphicalLasso` (sparse precision matrix, penalty
        ``alpha``). OAS is the default because it gave the best mean leave-one-out mAP over
        three datasets (digits, ORL faces, hard Copydays-style copies; see
        ``benchmarks/bench_defaults.py``), slightly ahead of Ledoit-Wolf and the empirical
        covariance; the graphical lasso with ``alpha=0.01`` was far behind. A graphical lasso
        that does not converge in ``max_iter`` iterations keeps its last (SPD) iterate and a
        ``ConvergenceWarning`` names the images; one whose system is too ill-conditioned to
        solve raises a ``ValueError`` naming the image (raise ``alpha`` or use ``"oas"``).
    alpha : float, default=0.01
        L1 penalty of the graphical lasso, > 0. Ignored by the other estimators.
    assume_centered : bool, default=False
        Treat the local features as zero-mean (second moments instead of covariances).
    with_mean : bool, default=False
        Describe each image by its whole Gaussian ``N(m, S)``, embedded as the
        ``(d + 1) x (d + 1)`` SPD matrix ``[[S + m m^T, m], [m^T, 1]]`` (Lovric et al. 2000; see
        :func:`gaussian_to_spd`). Incompatible with ``assume_centered=True``. A covariance
        lost in the rounding of ``m m^T`` (a tiny spread far from zero) raises a
        ``ValueError`` naming the image.
    reg : float, default=1e-6
        Relative shrinkage towards ``tr(S) / d * I`` applied to singular or ill-conditioned
        estimates, in (0, 1).
    max_iter : int, default=100
        Maximum number of iterations of the graphical lasso.
    tol : float, default=1e-4
        Convergence tolerance of the graphical lasso.
    n_jobs : int or None, default=None
        Number of jobs estimating images in parallel (joblib); ``None`` means 1 unless in a
        ``joblib.parallel_backend`` context, -1 means all processors.

    Attributes
    ----------
    n_features_in_ : int
        Dimension ``d`` of the local features seen in ``fit``.

    Notes
    -----
    A covariance needs two local features per image (unless ``assume_centered=True``), and
    local features that are all equal have no scale to regularise towards: both raise a
    ``ValueError`` naming the image rather than produce an arbitrary matrix.

    Examples
    --------
    >>> import numpy as np
    >>> from skretrieval.descriptors import SparseCovariance
    >>> rng = np.random.default_rng(0)
    >>> local = [rng.normal(size=(30, 4)), rng.normal(size=(50, 4))]
    >>> covariances = SparseCovariance().fit_transform(local)
    >>> covariances.shape
    (2, 4, 4)
    >>> bool(np.all(np.linalg.eigvalsh(covariances) > 0))
    True
    >>> SparseCovariance(with_mean=True).fit_transform(local).shape
    (2, 5, 5)
    """

    _parameter_constraints: dict = {
        "estimator": [StrOptions({"ledoit_wolf", "oas", "empirical", "graphical_lasso"})],
        "alpha": [Interval(Real, 0, None, closed="neither")],
        "assume_centered": ["boolean"],
        "with_mean": ["boolean"],
        "reg": [Interval(Real, 0, 1, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="neither")],
        "n_jobs": [Integral, None],
    }

    def __init__(
        self,
        estimator="oas",
        alpha=0.01,
        assume_centered=False,
        with_mean=False,
        reg=1e-6,
        max_iter=100,
        tol=1e-4,
        n_jobs=None,
    ):
        self.estimator = estimator
        self.alpha = alpha
        self.assume_centered = assume_centered
        self.with_mean = with_mean
        self.reg = reg
        self.max_iter = max_iter
        self.tol = tol
        self.n_jobs = n_jobs

    def _check_params(self):
        if self.with_mean and self.assume_centered:
            raise ValueError(
                "with_mean=True embeds each image's mean, which assume_centered=True fixes at "
                "zero; use one or the other."
            )

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
        self : SparseCovariance
            Fitted estimator.
        """
        self._check_params()
        features = check_local_features(X)
        check_n_features(self, features[0].shape[1], reset=True)
        return self

    def transform(self, X):
        """Estimate one SPD covariance (or Gaussian embedding) per image.

        Parameters
        ----------
        X : list of ndarray of shape (n_i, d), or ndarray of shape (n, m, d)
            Local features of each image.

        Returns
        -------
        covariances : ndarray of shape (n, d, d), or (n, d + 1, d + 1) with ``with_mean``
            SPD matrices, float64.
        """
        self._validate_params()
        self._check_params()
        features = check_local_features(X)
        d = features[0].shape[1]
        check_n_features(self, d, reset=False)
        min_count = 1 if self.assume_centered else 2
        for i, image in enumerate(features):
            if image.shape[0] < min_count:
                raise ValueError(
                    f"X[{i}] has a single local feature: its covariance is undefined (set "
                    "assume_centered=True to use second moments, or drop the image)."
                )
        results = Parallel(n_jobs=self.n_jobs)(
            delayed(_estimate_covariance)(
                image, self.estimator, self.alpha, self.assume_centered, self.max_iter, self.tol
            )
            for image in features
        )
        covariances = np.empty((len(features), d, d))
        not_converged = []
        for i, (covariance, error, converged) in enumerate(results):
            if error is not None:
                raise ValueError(
                    f"The graphical lasso failed on X[{i}] ({features[i].shape[0]} local "
                    f"features of dimension {d}): {error.rstrip('.')}. Increase alpha or use "
                    "estimator='oas'."
                )
            if not converged:
                not_converged.append(i)
            covariances[i] = covariance
        covariances = (covariances + np.swapaxes(covariances, 1, 2)) / 2.0
        scales = np.trace(covariances, axis1=1, axis2=2) / d
        # Equal local features leave a covariance of rounding errors, about (eps |x|)^2.
        floor = 0.0
        if not self.assume_centered:
            magnitudes = np.array([np.abs(image).max() for image in features])
            floor = (16 * np.finfo(np.float64).eps * magnitudes) ** 2
        zero_variance = np.flatnonzero(~(scales > floor))
        if zero_variance.size:
            i = zero_variance[0]
            raise ValueError(
                f"X[{i}] has {features[i].shape[0]} local features that are all equal (to "
                "rounding): its covariance is zero and cannot be regularised to an SPD matrix."
            )
        regularised = np.flatnonzero(np.linalg.eigvalsh(covariances)[:, 0] <= self.reg * scales)
        for i in regularised:
            covariances[i] = _shrink_to_identity(covariances[i], self.reg)
        if not_converged:
            warnings.warn(
                f"The graphical lasso did not converge in max_iter={self.max_iter} iterations "
                f"for images {not_converged}; their last iterates are used. Increase max_iter "
                "or alpha.",
                ConvergenceWarning,
                stacklevel=2,
            )
        if regularised.size:
            details = ", ".join(
                f"X[{i}] ({features[i].shape[0]} local features)" for i in regularised
            )
            warnings.warn(
                f"Singular {self.estimator} covariance estimates for {details} in dimension "
                f"{d} were shrunk towards a scaled identity with reg={self.reg}.",
                RegularizationWarning,
                stacklevel=2,
            )
        if self.with_mean:
            means = np.stack([image.mean(axis=0) for image in features])
            embedded = gaussian_to_spd(means, covariances)
            # S + m m^T keeps S only when S is not lost in the rounding of m m^T.
            singular = np.flatnonzero(~(np.linalg.eigvalsh(embedded)[:, 0] > 0))
            if singular.size:
                i = singular[0]
                raise ValueError(
                    f"X[{i}] has a covariance (trace {np.trace(covariances[i]):.3g}) too small "
                    f"next to its mean (norm {np.linalg.norm(means[i]):.3g}) for the Gaussian "
                    "embedding to be positive definite in float64. Centre or standardise the "
                    "local features (e.g. LocalPCA), or use with_mean=False."
                )
            return embedded
        return covariances

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Input is a ragged list of (n_i, d) local-feature arrays.
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.requires_fit = False
        tags.transformer_tags.preserves_dtype = ["float64"]
        return tags
