"""LiRA: stable logit-scaled confidence, query views, the Gaussian likelihood ratio against a direct scipy
evaluation of the reference's formulas, and synthetic known answers (separable -> AUC ~ 1, identical ->
AUC ~ 0.5, per-example calibration beats the global threshold)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch

from poisonlab.attacks.inference.lira import (
    ATTACKS,
    lira_offline,
    lira_online,
    logit_scaled_confidence,
    pooled_scores,
    query_shifts,
    shift_images,
)
from poisonlab.attacks.inference.shadows import keep_masks
from poisonlab.errors import ConfigError
from poisonlab.metrics.membership import auc, tpr_at_fpr


def test_phi_matches_definition_and_is_stable() -> None:
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(50, 10, generator=g) * 3, torch.randint(0, 10, (50,), generator=g)
    p = torch.softmax(logits.double(), 1)[torch.arange(50), labels]
    torch.testing.assert_close(logit_scaled_confidence(logits, labels), torch.log(p) - torch.log1p(-p))
    extreme = torch.tensor([[1000.0, 0.0, 0.0], [-1000.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    phi = logit_scaled_confidence(extreme, torch.zeros(3, dtype=torch.long))
    torch.testing.assert_close(phi, torch.tensor([1000 - math.log(2), -1000 - math.log(2), -math.log(2)]).double())
    # batched (..., C) inputs: (models, points, classes)
    batched = logit_scaled_confidence(logits.expand(3, 50, 10), labels.expand(3, 50))
    assert batched.shape == (3, 50) and torch.equal(batched[2], logit_scaled_confidence(logits, labels))


def test_query_views_and_shifts() -> None:
    assert query_shifts(0) == [(0, 0)]
    assert query_shifts(1) == [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]
    x = torch.arange(9.0).view(1, 1, 3, 3)
    assert shift_images(x, 1, 0)[0, 0].tolist() == [[0, 0, 0], [0, 1, 2], [3, 4, 5]]
    assert shift_images(x, 0, -1)[0, 0].tolist() == [[1, 2, 0], [4, 5, 0], [7, 8, 0]]
    assert shift_images(x, 0, 0) is x


def _reference_online(shadow_phi, keep, target_phi, fixed):
    """The reference's generate_ours, one point at a time with scipy (groups truncated to the smallest size)."""
    in_size, out_size = keep.sum(0).min(), (~keep).sum(0).min()
    out = []
    sigma_in_all = np.sqrt(
        np.mean(
            np.concatenate(
                [
                    (d - np.median(d, 0)) ** 2
                    for d in (shadow_phi[keep[:, j], j][:in_size] for j in range(keep.shape[1]))
                ]
            ),
            0,  # one sigma per view, pooled over points
        )
    )
    for j in range(keep.shape[1]):
        din, dout = shadow_phi[keep[:, j], j][:in_size], shadow_phi[~keep[:, j], j][:out_size]
        mi, mo = np.median(din, 0), np.median(dout, 0)
        si, so = (sigma_in_all, sigma_in_all) if fixed else (np.std(din, 0), np.std(dout, 0))
        s = scipy.stats.norm.logpdf(target_phi[j], mi, si) - scipy.stats.norm.logpdf(target_phi[j], mo, so)
        out.append(s.mean())
    return np.array(out)


@pytest.mark.parametrize("fixed", [False, True])
def test_online_matches_direct_evaluation(fixed: bool) -> None:
    rng = np.random.default_rng(0)
    keep = keep_masks(10, 30, torch.Generator().manual_seed(1)).numpy()[1:]  # 4 or 5 IN per point
    phi, target = rng.normal(size=(9, 30, 3)), rng.normal(size=(30, 3))
    np.testing.assert_allclose(lira_online(phi, keep, target, fixed), _reference_online(phi, keep, target, fixed))


def test_offline_is_one_sided_normal_cdf() -> None:
    rng = np.random.default_rng(1)
    keep = keep_masks(9, 20, torch.Generator().manual_seed(2)).numpy()[1:]
    phi, target = rng.normal(size=(8, 20, 1)), rng.normal(size=(20, 1))
    got = lira_offline(phi, keep, target)
    k = (~keep).sum(0).min()
    want = [
        scipy.stats.norm.logcdf(target[j, 0], np.median(phi[~keep[:, j], j, 0][:k]), np.std(phi[~keep[:, j], j, 0][:k]))
        for j in range(20)
    ]
    np.testing.assert_allclose(got, want)


def _synthetic(effect: float, n_models: int = 16, n: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """phi of members = per-point difficulty + effect (+ noise); non-members = difficulty (+ noise)."""
    g = torch.Generator().manual_seed(seed)
    keep = keep_masks(n_models, n, g).numpy()
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0, 4, size=n)  # points differ far more than membership moves them
    phi = difficulty[None, :, None] + effect * keep[:, :, None] + rng.normal(0, 1, size=(n_models, n, 2))
    return phi, keep


def test_separable_members_give_auc_one() -> None:
    phi, keep = _synthetic(effect=20.0)
    for attack in ("lira-online-fixed", "lira-online", "lira-offline-fixed"):
        scores, labels = pooled_scores(attack, phi, keep)
        assert auc(scores, labels) > 0.999
        assert tpr_at_fpr(scores, labels, 0.001) > 0.99


def test_identical_distributions_give_auc_half() -> None:
    phi, keep = _synthetic(effect=0.0)
    for attack in ATTACKS:
        scores, labels = pooled_scores(attack, phi, keep)
        assert len(scores) == 16 * 1000 and labels.sum() == 8 * 1000
        # AUC sd for 8000 vs 8000 independent scores is ~0.0046; rotations share points, allow 5x
        assert abs(auc(scores, labels) - 0.5) < 0.023, attack


def test_per_point_calibration_beats_global_threshold() -> None:
    phi, keep = _synthetic(effect=1.5)
    lira = pooled_scores("lira-online-fixed", phi, keep)
    base = pooled_scores("global", phi, keep)
    assert auc(*lira) > auc(*base) + 0.1
    assert tpr_at_fpr(*lira, 0.01) > 3 * tpr_at_fpr(*base, 0.01)


def test_pooled_labels_are_the_target_rows_and_points_select() -> None:
    phi, keep = _synthetic(effect=1.0, n_models=6, n=50)
    scores, labels = pooled_scores("global", phi, keep, points=np.array([3, 7]))
    np.testing.assert_array_equal(labels, keep[:, [3, 7]].reshape(-1))
    np.testing.assert_allclose(scores, phi[:, [3, 7]].mean(-1).reshape(-1))
    with pytest.raises(ConfigError, match="attack"):
        pooled_scores("nope", phi, keep)
    with pytest.raises(ConfigError, match="no IN shadow"):
        lira_online(phi[:1], keep[:1] & False, phi[0])
