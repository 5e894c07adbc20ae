"""Tests of the metric-learning losses against hand-worked cases."""

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from skretrieval.learning._losses import (
    PDDMUnit,
    batch_contrastive_loss,
    batch_hard_triplet_loss,
    batch_hard_triplets,
    contrastive_loss,
    pddm_hard_quadruplets,
    pddm_loss,
    triplet_loss,
    vmf_class_means,
    vmf_loss,
)


def tensor(values):
    return torch.tensor(values, dtype=torch.float64)


# Four 2-D points: class 0 at (0, 0) and (1, 0), class 1 at (0, 2) and (3, 0).
POINTS = tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
LABELS = torch.tensor([0, 0, 1, 1])


def test_triplet_loss_hand_worked():
    anchor = tensor([[0.0, 0.0], [0.0, 0.0]])
    positive = tensor([[1.0, 0.0], [1.0, 0.0]])
    negative = tensor([[0.0, 2.0], [0.0, 1.0]])
    # |a-p|^2 = 1; |a-n|^2 = 4 and 1: max(0, 0.5 + 1 - 4) = 0, max(0, 0.5 + 1 - 1) = 0.5.
    loss = triplet_loss(anchor, positive, negative, margin=0.5)
    assert loss.item() == pytest.approx(0.25)
    assert triplet_loss(anchor, positive, negative).item() == pytest.approx(0.1 / 2)


def test_batch_hard_triplets_pick_farthest_positive_and_closest_negative():
    positive, negative, valid = batch_hard_triplets(POINTS, LABELS)
    # Squared distances: d01=1, d02=4, d03=9, d12=5, d13=4, d23=13.
    assert positive.tolist() == [1, 0, 3, 2]
    # 0: negatives 2 (4), 3 (9) -> 2; 1: 2 (5), 3 (4) -> 3; 2: 0 (4), 1 (5) -> 0;
    # 3: 0 (9), 1 (4) -> 1.
    assert negative.tolist() == [2, 3, 0, 1]
    assert valid.all()
    loss = batch_hard_triplet_loss(POINTS, LABELS, margin=1.0)
    # max(0, 1 + 1 - 4) = 0, max(0, 1 + 1 - 4) = 0, max(0, 1 + 13 - 4) = 10, max(0, 1 + 13 - 4)
    assert loss.item() == pytest.approx(20 / 4)


def test_batch_hard_triplets_flag_anchors_without_positive():
    labels = torch.tensor([0, 0, 1])
    _, _, valid = batch_hard_triplets(POINTS[:3], labels)
    assert valid.tolist() == [True, True, False]
    # Only anchors 0 and 1 count: max(0, 1 + 1 - 4) = 0 and max(0, 1 + 1 - 5) = 0.
    assert batch_hard_triplet_loss(POINTS[:3], labels, margin=1.0).item() == 0.0
    # A batch of one class has no triplet: zero loss, still differentiable.
    points = POINTS.clone().requires_grad_(True)
    loss = batch_hard_triplet_loss(points, torch.zeros(4, dtype=torch.long))
    loss.backward()
    assert loss.item() == 0.0 and points.grad is not None


def test_contrastive_loss_hand_worked():
    first = tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    second = tensor([[0.6, 0.8], [0.3, 0.4], [3.0, 4.0]])
    is_positive = torch.tensor([True, False, False])
    # positive: d^2 = 1; negatives: d = 0.5 -> (1 - 0.5)^2 = 0.25; d = 5 -> 0.
    loss = contrastive_loss(first, second, is_positive, margin=1.0)
    assert loss.item() == pytest.approx((1 + 0.25 + 0) / 3)


def test_batch_contrastive_loss_balances_positive_and_negative_pairs():
    margin = 2.5
    # Positive pairs (0,1): d^2 = 1, (2,3): 13 -> mean 7. Negative pairs: d = 2, 3, sqrt(5), 2
    # -> (0.5^2 + 0 + (2.5 - sqrt 5)^2 + 0.5^2) / 4.
    expected = 7 + (0.25 + 0 + (margin - math.sqrt(5)) ** 2 + 0.25) / 4
    loss = batch_contrastive_loss(POINTS, LABELS, margin=margin)
    assert loss.item() == pytest.approx(expected)


def test_vmf_loss_is_cross_entropy_of_scaled_cosines():
    rng = np.random.default_rng(0)
    embeddings = F.normalize(tensor(rng.normal(size=(6, 3))), dim=1)
    means = F.normalize(tensor(rng.normal(size=(4, 3))), dim=1)
    labels = torch.tensor([0, 1, 2, 3, 0, 2])
    kappa = 5.0
    cosines = embeddings.numpy() @ means.numpy().T
    log_posterior = kappa * cosines - np.log(np.exp(kappa * cosines).sum(axis=1, keepdims=True))
    expected = -log_posterior[np.arange(6), labels.numpy()].mean()
    assert vmf_loss(embeddings, labels, means, kappa=kappa).item() == pytest.approx(expected)


def test_vmf_class_means_are_normalised_sums_without_gradient():
    embeddings = tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.6, 0.8]]).requires_grad_(True)
    means = vmf_class_means(embeddings, torch.tensor([0, 0, 1, 2]), 4)
    s = 1 / math.sqrt(2)
    np.testing.assert_allclose(means.numpy(), [[s, s], [-1, 0], [0.6, 0.8], [0, 0]], atol=1e-12)
    assert not means.requires_grad
    loss = vmf_loss(embeddings[:3], torch.tensor([0, 0, 1]), means[:2])
    loss.backward()
    assert embeddings.grad is not None


def test_pddm_unit_scores_are_symmetric_and_bounded():
    torch.manual_seed(0)
    unit = PDDMUnit(3, 5).double()
    embeddings = F.normalize(torch.randn(6, 3, dtype=torch.float64), dim=1)
    scores = unit.pairwise(embeddings).detach()
    assert scores.shape == (6, 6)
    np.testing.assert_allclose(scores.numpy(), scores.numpy().T)
    assert float(scores.abs().max()) <= 1.0
    assert np.all(np.diag(scores.numpy()) == 0)
    # pairwise() matches scoring each pair with forward().
    direct = unit(embeddings[:, None, :], embeddings[None, :, :]).detach().numpy()
    off_diagonal = ~np.eye(6, dtype=bool)
    np.testing.assert_allclose(scores.numpy()[off_diagonal], direct[off_diagonal])


def test_pddm_mining_picks_lowest_positive_and_highest_negative_scores():
    labels = torch.tensor([0, 0, 0, 1, 1])
    scores = tensor(
        [
            [0.0, 0.9, 0.2, 0.1, 0.5],
            [0.9, 0.0, 0.4, 0.7, 0.3],
            [0.2, 0.4, 0.0, -0.2, -0.5],
            [0.1, 0.7, -0.2, 0.0, 0.6],
            [0.5, 0.3, -0.5, 0.6, 0.0],
        ]
    )
    positive, negative, positive_negative, valid = pddm_hard_quadruplets(scores, labels)
    assert positive.tolist() == [2, 2, 0, 4, 3]
    assert negative.tolist() == [4, 3, 3, 1, 0]
    # l = hardest negative of j.
    assert positive_negative.tolist() == [3, 3, 4, 0, 1]
    assert valid.all()


def test_pddm_loss_hand_worked_with_a_fixed_unit():
    class FixedScores(torch.nn.Module):
        def __init__(self, scores):
            super().__init__()
            self.scores = scores

        def pairwise(self, embeddings):
            return self.scores

    # Anchors 0 and 1 (class 0), 2 and 3 (class 1).
    scores = tensor(
        [
            [0.0, 0.2, 0.5, -0.1],
            [0.2, 0.0, 0.3, 0.4],
            [0.5, 0.3, 0.0, 0.6],
            [-0.1, 0.4, 0.6, 0.0],
        ]
    )
    # Quadruplets (i, j, k, l): (0, 1, 2, 3), (1, 0, 3, 2), (2, 3, 0, 1), (3, 2, 1, 0).
    # Score hinge with alpha = 0.5: max(0, 0.5 + max(S_ik, S_jl) - S_ij):
    # 0.5 + max(0.5, 0.4) - 0.2 = 0.8; 0.5 + max(0.4, 0.5) - 0.2 = 0.8;
    # 0.5 + max(0.5, 0.4) - 0.6 = 0.4; 0.5 + max(0.4, 0.5) - 0.6 = 0.4.
    score_loss = (0.8 + 0.8 + 0.4 + 0.4) / 4
    # Embedding hinge with beta = 1 on POINTS: D01 = 1, D23 = 13, D02 = 4, D13 = 4, D03 = 9,
    # D12 = 5. (0,1,2,3): [1 + 1 - 4]+ + [1 + 1 - 4]+ = 0; (1,0,3,2): [2 - 4]+ + [2 - 4]+ = 0;
    # (2,3,0,1): [14 - 4]+ + [14 - 4]+ = 20; (3,2,1,0): [14 - 4]+ + [14 - 4]+ = 20.
    embedding_loss = 40 / 4
    loss = pddm_loss(POINTS, LABELS, FixedScores(scores), 0.5, 1.0, 0.5)
    assert loss.item() == pytest.approx(score_loss + 0.5 * embedding_loss)


@pytest.mark.parametrize("name", ["triplet", "contrastive", "vmf", "pddm"])
def test_gradients_reach_the_embeddings_and_the_pddm_unit(name):
    torch.manual_seed(0)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    raw = torch.randn(6, 4, requires_grad=True)
    embeddings = F.normalize(raw, dim=1)
    unit = PDDMUnit(4, 8)
    if name == "triplet":
        loss = batch_hard_triplet_loss(embeddings, labels, margin=2.0)
    elif name == "contrastive":
        loss = batch_contrastive_loss(embeddings, labels)
    elif name == "vmf":
        loss = vmf_loss(embeddings, labels, vmf_class_means(embeddings, labels, 3))
    else:
        loss = pddm_loss(embeddings, labels, unit, score_margin=2.0)
    loss.backward()
    assert torch.isfinite(raw.grad).all() and raw.grad.abs().sum() > 0
    if name == "pddm":
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in unit.parameters())
