"""Metric-learning losses on batches of embeddings (pure torch functions).

Every loss takes embeddings as rows of a ``(n, d)`` tensor (L2-normalised where the loss says
so) and returns a scalar tensor through which gradients flow. Distances are squared Euclidean
unless stated otherwise. Batch-level losses take integer class labels of shape ``(n,)``.
"""

import torch
from torch import nn
from torch.nn import functional as F

from skretrieval._utils.linalg import squared_euclidean_distances

# Defaults of the PDDM double-header hinge loss (Huang, Loy and Tang 2016): margins on scores
# in [-1, 1] and on squared distances of unit vectors in [0, 4]; beta and lambda chosen on the
# digits test of tests/test_learning_embedding.py (beta = 1, lambda = 0.5 did 0.01 worse).
PDDM_SCORE_MARGIN = 0.5
PDDM_EMBEDDING_MARGIN = 0.5
PDDM_EMBEDDING_WEIGHT = 1.0


def _squared_distances(x):
    """All squared Euclidean distances between the rows of ``x``: ``(n, n)``.

    One matrix product (:func:`~skretrieval._utils.linalg.squared_euclidean_distances`)
    instead of an ``(n, n, d)`` tensor, with an exact 0 diagonal, which rounding would miss.
    """
    distances = squared_euclidean_distances(x, x)
    return distances * (1 - torch.eye(len(x), dtype=x.dtype, device=x.device))


def _pair_masks(labels):
    """``(positive, negative)`` boolean ``(n, n)`` masks; a row is never its own positive."""
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


# --------------------------------------------------------------------------------------------
# Triplet
# --------------------------------------------------------------------------------------------


def triplet_loss(anchor, positive, negative, margin=0.1):
    r"""Triplet ranking loss with squared Euclidean distances.

    .. math::

        L = \frac{1}{n} \sum_i \max\left(0,\; m + \lVert a_i - p_i \rVert^2
            - \lVert a_i - n_i \rVert^2\right)

    as in Gordo, Almazan, Revaud and Larlus, "End-to-end learning of deep
    visual representations for image retrieval", IJCV 2017.

    Parameters
    ----------
    anchor, positive, negative : torch.Tensor of shape (n, d)
        Row ``i`` of each tensor forms one triplet.
    margin : float, default=0.1
        Margin ``m`` by which the negative must be farther than the positive.

    Returns
    -------
    loss : torch.Tensor
        Scalar, mean over the ``n`` triplets.
    """
    positive_distance = (anchor - positive).pow(2).sum(dim=1)
    negative_distance = (anchor - negative).pow(2).sum(dim=1)
    return torch.clamp(margin + positive_distance - negative_distance, min=0).mean()


def batch_hard_triplets(embeddings, labels):
    """Hardest positive and hardest negative of every anchor in a batch.

    Batch-hard mining of Hermans, Beyer and Leibe, "In defense of the triplet loss for person
    re-identification", 2017: for anchor ``i`` the hardest positive is the sample of the same
    class (other than ``i``) farthest from it, the hardest negative the sample of another class
    closest to it, in squared Euclidean distance. Ties go to the smaller index.

    Parameters
    ----------
    embeddings : torch.Tensor of shape (n, d)
    labels : torch.Tensor of shape (n,)

    Returns
    -------
    positive : torch.LongTensor of shape (n,)
        Index of the hardest positive of each anchor.
    negative : torch.LongTensor of shape (n,)
        Index of the hardest negative of each anchor.
    valid : torch.BoolTensor of shape (n,)
        Anchors that have both a positive and a negative in the batch; the indices of the
        others are meaningless.
    """
    with torch.no_grad():
        distances = _squared_distances(embeddings)
        is_positive, is_negative = _pair_masks(labels)
        positive = distances.masked_fill(~is_positive, -torch.inf).argmax(dim=1)
        negative = distances.masked_fill(~is_negative, torch.inf).argmin(dim=1)
        valid = is_positive.any(dim=1) & is_negative.any(dim=1)
    return positive, negative, valid


def batch_hard_triplet_loss(embeddings, labels, margin=0.1):
    """:func:`triplet_loss` over the batch-hard triplets of a batch (:func:`batch_hard_triplets`).

    Anchors without a positive or a negative in the batch are left out; the loss is the mean
    over the others (0 when there are none).

    Parameters
    ----------
    embeddings : torch.Tensor of shape (n, d)
    labels : torch.Tensor of shape (n,)
    margin : float, default=0.1

    Returns
    -------
    loss : torch.Tensor
        Scalar.
    """
    positive, negative, valid = batch_hard_triplets(embeddings, labels)
    if not bool(valid.any()):
        return embeddings.sum() * 0.0
    anchor = embeddings[valid]
    return triplet_loss(anchor, embeddings[positive[valid]], embeddings[negative[valid]], margin)


# --------------------------------------------------------------------------------------------
# Contrastive
# --------------------------------------------------------------------------------------------


def contrastive_loss(first, second, is_positive, margin=0.7):
    r"""Contrastive loss of pairs (Hadsell, Chopra and LeCun 2006; Radenovic et al. 2016).

    With :math:`d = \lVert x - y \rVert` (Euclidean, not squared), a positive pair costs
    :math:`d^2` and a negative pair :math:`\max(0, m - d)^2`; the loss is the mean over pairs.
    Radenovic, Tolias and Chum ("CNN image retrieval learns from BoW", ECCV 2016) use it on
    L2-normalised descriptors with ``m = 0.7``. The factor 1/2 of Hadsell et al. is left out.

    Parameters
    ----------
    first, second : torch.Tensor of shape (n, d)
        Row ``i`` of each tensor forms one pair.
    is_positive : torch.BoolTensor of shape (n,)
        Whether pair ``i`` is positive (same class).
    margin : float, default=0.7
        Distance ``m`` beyond which negative pairs cost nothing.

    Returns
    -------
    loss : torch.Tensor
        Scalar.
    """
    squared = (first - second).pow(2).sum(dim=1)
    return _contrastive_terms(squared, is_positive, margin).mean()


def _contrastive_terms(squared, is_positive, margin):
    # sqrt has an infinite gradient at 0: clamp, which only touches coincident negatives.
    distance = torch.sqrt(torch.clamp(squared, min=1e-12))
    return torch.where(is_positive, squared, torch.clamp(margin - distance, min=0).pow(2))


def batch_contrastive_loss(embeddings, labels, margin=0.7):
    r""":func:`contrastive_loss` over all pairs of a batch, positives and negatives balanced.

    Every unordered pair ``i < j`` of the batch is used (no mining). Because a batch holds far
    more negative than positive pairs, the two kinds are averaged separately and summed:

    .. math::

        L = \operatorname{mean}_{y_i = y_j} d_{ij}^2
            + \operatorname{mean}_{y_i \neq y_j} \max(0, m - d_{ij})^2

    A kind absent from the batch contributes 0.

    Parameters
    ----------
    embeddings : torch.Tensor of shape (n, d)
    labels : torch.Tensor of shape (n,)
    margin : float, default=0.7

    Returns
    -------
    loss : torch.Tensor
        Scalar.
    """
    squared = _squared_distances(embeddings)
    is_positive, is_negative = _pair_masks(labels)
    upper = torch.ones_like(is_positive).triu(diagonal=1)
    terms = _contrastive_terms(squared, is_positive, margin)
    loss = embeddings.sum() * 0.0
    for mask in (is_positive & upper, is_negative & upper):
        if bool(mask.any()):
            loss = loss + terms[mask].mean()
    return loss


# --------------------------------------------------------------------------------------------
# von Mises-Fisher
# --------------------------------------------------------------------------------------------


def vmf_class_means(embeddings, labels, n_classes):
    r"""Mean directions of the classes: :math:`\mu_c = \sum_{y_i = c} x_i / \lVert \cdot \rVert`.

    The maximum-likelihood mean direction of a von Mises-Fisher distribution. Computed without
    gradient: in :func:`vmf_loss` the means are constants.

    Parameters
    ----------
    embeddings : torch.Tensor of shape (n, d)
    labels : torch.LongTensor of shape (n,)
        Class indices in ``[0, n_classes)``.
    n_classes : int

    Returns
    -------
    means : torch.Tensor of shape (n_classes, d)
        Unit vectors (a class without samples gets a zero row).
    """
    with torch.no_grad():
        sums = torch.zeros(
            n_classes, embeddings.shape[1], dtype=embeddings.dtype, device=embeddings.device
        )
        sums.index_add_(0, labels, embeddings)
        return F.normalize(sums, dim=1)


def vmf_loss(embeddings, labels, class_means, kappa=16.0):
    r"""von Mises-Fisher loss: negative log posterior of the true class.

    Zhe, Chen and Yan, "Directional statistics-based deep metric learning for image
    classification and retrieval", Pattern Recognition 2019 (arXiv 2018). Each class ``c`` is a
    vMF distribution on the unit sphere with mean direction :math:`\mu_c` and a concentration
    :math:`\kappa` shared by all classes, so the normalising constants :math:`C_d(\kappa)`
    cancel and, with equal priors,

    .. math::

        L = -\frac{1}{n} \sum_i \log
            \frac{\exp(\kappa\, \mu_{y_i}^\top x_i)}{\sum_c \exp(\kappa\, \mu_c^\top x_i)}

    i.e. the cross-entropy of the logits :math:`\kappa\, \mu_c^\top x_i`. The means are not
    learned: they are given (the "global view" of the paper, computed over the whole training
    set by :func:`vmf_class_means`) and receive no gradient.

    Parameters
    ----------
    embeddings : torch.Tensor of shape (n, d)
        L2-normalised embeddings.
    labels : torch.LongTensor of shape (n,)
        Class indices, rows of ``class_means``.
    class_means : torch.Tensor of shape (n_classes, d)
        Unit mean directions.
    kappa : float, default=16.0
        Concentration.

    Returns
    -------
    loss : torch.Tensor
        Scalar.
    """
    logits = kappa * embeddings @ class_means.detach().T
    return F.cross_entropy(logits, labels)


# --------------------------------------------------------------------------------------------
# PDDM
# --------------------------------------------------------------------------------------------


class PDDMUnit(nn.Module):
    r"""Position-Dependent Deep Metric unit: a learned similarity of two embeddings.

    Huang, Loy and Tang, "Local similarity-aware deep feature embedding", NeurIPS 2016. For
    L2-normalised embeddings :math:`x_i, x_j`:

    .. math::

        u = |x_i - x_j|, \quad v = (x_i + x_j) / 2, \\
        u' = \frac{\mathrm{ReLU}(W_u u + b_u)}{\lVert \cdot \rVert}, \quad
        v' = \frac{\mathrm{ReLU}(W_v v + b_v)}{\lVert \cdot \rVert}, \\
        c = \mathrm{ReLU}(W_c [u'; v'] + b_c), \quad S = \tanh(W_s c + b_s) \in [-1, 1].

    The ``tanh`` is an addition: the paper's score is the linear output; bounding it gives the
    score margin a fixed scale.

    Parameters
    ----------
    n_features : int
        Dimension ``d`` of the embeddings.
    n_hidden : int
        Width of the hidden layers.
    """

    def __init__(self, n_features, n_hidden):
        super().__init__()
        self.difference = nn.Linear(n_features, n_hidden)
        self.mean = nn.Linear(n_features, n_hidden)
        self.combined = nn.Linear(2 * n_hidden, n_hidden)
        self.score = nn.Linear(n_hidden, 1)

    def _score(self, difference, mean_pre_activation):
        u = F.normalize(F.relu(self.difference(difference)), dim=-1)
        v = F.normalize(F.relu(mean_pre_activation), dim=-1)
        hidden = F.relu(self.combined(torch.cat([u, v], dim=-1)))
        return torch.tanh(self.score(hidden)).squeeze(-1)

    def forward(self, first, second):
        """Scores of the pairs ``(first[..., :], second[..., :])``, broadcast: shape ``(...)``."""
        return self._score(torch.abs(first - second), self.mean((first + second) / 2))

    def pairwise(self, embeddings):
        """Scores of all pairs of rows of ``embeddings``: symmetric ``(n, n)``, zero diagonal.

        The score is symmetric in the pair, so each unordered pair is scored once; the linear
        layer of ``v`` is applied to the rows before pairing them (it commutes with the mean).
        """
        n = len(embeddings)
        first, second = torch.triu_indices(n, n, offset=1, device=embeddings.device)
        projected = self.mean(embeddings)
        pair_scores = self._score(
            torch.abs(embeddings[first] - embeddings[second]),
            (projected[first] + projected[second]) / 2,
        )
        scores = embeddings.new_zeros(n, n)
        scores = scores.index_put((first, second), pair_scores)
        return scores.index_put((second, first), pair_scores)


def pddm_hard_quadruplets(scores, labels):
    """Hard quadruplets ``(i, j, k, l)`` mined with PDDM scores, one per anchor ``i``.

    ``j``: the positive of ``i`` with the lowest score ``S_ij`` (hardest positive); ``k``: the
    negative of ``i`` with the highest ``S_ik``; ``l``: the negative of ``j`` with the highest
    ``S_jl`` (hardest negatives). Ties go to the smaller index.

    Parameters
    ----------
    scores : torch.Tensor of shape (n, n)
        PDDM scores of all pairs of the batch (:meth:`PDDMUnit.pairwise`).
    labels : torch.Tensor of shape (n,)

    Returns
    -------
    positive, negative, positive_negative : torch.LongTensor of shape (n,)
        ``j``, ``k`` and ``l`` for each anchor ``i``.
    valid : torch.BoolTensor of shape (n,)
        Anchors with a positive and a negative in the batch (``j`` then has a negative too).
    """
    with torch.no_grad():
        is_positive, is_negative = _pair_masks(labels)
        positive = scores.masked_fill(~is_positive, torch.inf).argmin(dim=1)
        hardest_negative = scores.masked_fill(~is_negative, -torch.inf).argmax(dim=1)
        valid = is_positive.any(dim=1) & is_negative.any(dim=1)
    return positive, hardest_negative, hardest_negative[positive], valid


def pddm_loss(
    embeddings,
    labels,
    pddm,
    score_margin=PDDM_SCORE_MARGIN,
    embedding_margin=PDDM_EMBEDDING_MARGIN,
    embedding_weight=PDDM_EMBEDDING_WEIGHT,
):
    r"""Double-header hinge loss of Huang, Loy and Tang (NeurIPS 2016) on PDDM-mined quadruplets.

    For the quadruplets ``(i, j, k, l)`` of :func:`pddm_hard_quadruplets`, with PDDM scores
    :math:`S` and squared Euclidean embedding distances :math:`D`:

    .. math::

        E_m = \operatorname{mean}_i \max(0, \alpha + \max(S_{ik}, S_{jl}) - S_{ij}) \\
        E_e = \operatorname{mean}_i \left[\max(0, \beta + D_{ij} - D_{ik})
              + \max(0, \beta + D_{ij} - D_{jl})\right] \\
        L = E_m + \lambda E_e

    :math:`E_m` (the PDDM hinge) pushes the score of the positive pair above those of both
    negative pairs by :math:`\alpha`, :math:`E_e` (the embedding hinge) the distance of the
    positive pair below those of the negative pairs by :math:`\beta`.

    Simplifications versus the paper: one quadruplet is mined per anchor of the batch (the
    paper mines per positive pair of the batch) and the losses are means, not sums; weight
    decay is left to the optimiser.

    Parameters
    ----------
    embeddings : torch.Tensor of shape (n, d)
        L2-normalised embeddings.
    labels : torch.Tensor of shape (n,)
    pddm : PDDMUnit
        Scores pairs; trained jointly with the embedding.
    score_margin : float, default=0.5
        :math:`\alpha`.
    embedding_margin : float, default=0.5
        :math:`\beta`.
    embedding_weight : float, default=1.0
        :math:`\lambda`.

    Returns
    -------
    loss : torch.Tensor
        Scalar (0 when no anchor has both a positive and a negative).
    """
    scores = pddm.pairwise(embeddings)
    positive, negative, positive_negative, valid = pddm_hard_quadruplets(scores, labels)
    if not bool(valid.any()):
        return scores.sum() * 0.0
    anchor = torch.nonzero(valid).squeeze(1)
    j, k, l = positive[valid], negative[valid], positive_negative[valid]
    score_loss = torch.clamp(
        score_margin + torch.maximum(scores[anchor, k], scores[j, l]) - scores[anchor, j], min=0
    ).mean()
    distances = _squared_distances(embeddings)
    d_ij = distances[anchor, j]
    embedding_loss = (
        torch.clamp(embedding_margin + d_ij - distances[anchor, k], min=0)
        + torch.clamp(embedding_margin + d_ij - distances[j, l], min=0)
    ).mean()
    return score_loss + embedding_weight * embedding_loss
