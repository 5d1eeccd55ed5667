"""Membership metrics: hand-computed known answers, sklearn as an oracle, synthetic known-answer audits
(separable -> AUC 1, identical distributions -> AUC 0.5) and bootstrap determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from poisonlab.metrics.membership import (
    auc,
    balanced_accuracy,
    bootstrap_metrics,
    bootstrap_ratio,
    membership_metrics,
    roc_curve,
    tpr_at_fpr,
)


def test_hand_computed_small_arrays() -> None:
    # members 0.9, 0.8, 0.4; non-members 0.7, 0.3, 0.2, 0.1
    scores = [0.9, 0.8, 0.7, 0.4, 0.3, 0.2, 0.1]
    labels = [1, 1, 0, 1, 0, 0, 0]
    # pairs (member > non-member): 0.9: 4, 0.8: 4, 0.4: 3 -> 11 of 12
    assert auc(scores, labels) == pytest.approx(11 / 12)
    fpr, tpr, thr = roc_curve(scores, labels)
    np.testing.assert_allclose(fpr, [0, 0, 0, 0.25, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 2 / 3, 1, 1, 1, 1])
    assert thr[0] == np.inf and thr[1] == 0.9
    # strictly below 25% FPR: only FPR-0 points -> TPR 2/3; below 50%: the (0.25, 1) point
    assert tpr_at_fpr(scores, labels, 0.25) == pytest.approx(2 / 3)
    assert tpr_at_fpr(scores, labels, 0.26) == pytest.approx(1.0)
    # best threshold 0.4: TPR 1, FPR 0.25 -> 1 - 0.25 / 2
    assert balanced_accuracy(scores, labels) == pytest.approx(0.875)


def test_ties_count_half() -> None:
    scores = torch.tensor([1.0, 1.0, 0.0, 0.0])
    labels = torch.tensor([True, False, True, False])
    assert auc(scores, labels) == pytest.approx(0.5)  # pairs: tie 0.5, win 1, loss 0, tie 0.5
    fpr, tpr, _ = roc_curve(scores, labels)
    np.testing.assert_allclose(fpr, [0, 0.5, 1])  # tied scores make one ROC point, not two
    np.testing.assert_allclose(tpr, [0, 0.5, 1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_sklearn_oracle(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    n = 400
    labels = torch.rand(n, generator=g) < 0.4
    scores = torch.randn(n, generator=g) + 0.7 * labels
    scores = torch.round(scores * 8) / 8  # many ties
    assert auc(scores, labels) == pytest.approx(roc_auc_score(labels.numpy(), scores.numpy()), abs=1e-12)
    fpr, tpr, thr = roc_curve(scores, labels)
    sk_fpr, sk_tpr, sk_thr = sk_roc_curve(labels.numpy(), scores.numpy(), drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_allclose(thr[1:], sk_thr[1:])
    for a in (0.001, 0.01, 0.1, 0.3):  # the reference's rule applied to sklearn's curve
        assert tpr_at_fpr(scores, labels, a) == pytest.approx(sk_tpr[np.where(sk_fpr < a)[0][-1]])
    assert balanced_accuracy(scores, labels) == pytest.approx(np.max(1 - (sk_fpr + (1 - sk_tpr)) / 2))


def test_separable_members_auc_one_and_identical_auc_half() -> None:
    g = torch.Generator().manual_seed(0)
    members, non = torch.rand(2000, generator=g) + 1.5, torch.rand(2000, generator=g)
    scores, labels = torch.cat([members, non]), torch.cat([torch.ones(2000), torch.zeros(2000)])
    m = membership_metrics(scores, labels)
    assert m["auc"] == 1.0 and m["balanced_accuracy"] == 1.0
    assert m["tpr_at_fpr"] == {"0.001": 1.0, "0.01": 1.0}
    same = torch.randn(4000, generator=g)
    m0 = membership_metrics(same, labels)
    # AUC of two same-distribution samples of 2000: sd = sqrt((n1 + n2 + 1) / (12 n1 n2)) ~ 0.0091
    assert abs(m0["auc"] - 0.5) < 4 * 0.0091
    assert m0["tpr_at_fpr"]["0.01"] < 0.03
    point = m0["fpr_points"]["0.001"]
    assert point["n_negatives"] == 2000 and point["max_false_positives"] == 1 and point["false_positives"] <= 1


def test_bootstrap_deterministic_and_covering() -> None:
    g = torch.Generator().manual_seed(3)
    labels = torch.rand(3000, generator=g) < 0.5
    scores = torch.randn(3000, generator=g) + 0.5 * labels
    a = bootstrap_metrics(scores, labels, torch.Generator().manual_seed(7), n_boot=200)
    b = bootstrap_metrics(scores, labels, torch.Generator().manual_seed(7), n_boot=200)
    assert a == b
    full = membership_metrics(scores, labels)
    assert a["auc"]["lo"] < full["auc"] < a["auc"]["hi"]
    assert a["0.01"]["lo"] <= full["tpr_at_fpr"]["0.01"] <= a["0.01"]["hi"]
    assert a["balanced_accuracy"]["lo"] < full["balanced_accuracy"] < a["balanced_accuracy"]["hi"]
    with_iv = membership_metrics(scores, labels, generator=torch.Generator().manual_seed(7), n_boot=200)
    assert with_iv["intervals"] == a and "intervals" not in full


def test_weighted_resamples_equal_materialised_resamples() -> None:
    from poisonlab.metrics.membership import _counts, _stratified_indices, _weighted_metrics

    g = torch.Generator().manual_seed(5)
    labels = (torch.rand(300, generator=g) < 0.3).numpy()
    scores = torch.round(torch.randn(300, generator=g).double() * 4).numpy() / 4 + 0.5 * labels  # ties
    idx = _stratified_indices(labels, 6, torch.Generator().manual_seed(0))
    fast = _weighted_metrics(scores, labels, _counts(idx, 300), (0.01, 0.1))
    for b in range(6):
        m = membership_metrics(scores[idx[b]], labels[idx[b]], (0.01, 0.1))
        assert fast["auc"][b] == pytest.approx(m["auc"], abs=1e-12)
        assert fast["balanced_accuracy"][b] == pytest.approx(m["balanced_accuracy"], abs=1e-12)
        assert fast["0.01"][b] == pytest.approx(m["tpr_at_fpr"]["0.01"], abs=1e-12)
        assert fast["0.1"][b] == pytest.approx(m["tpr_at_fpr"]["0.1"], abs=1e-12)


def test_cluster_bootstrap_is_wider_for_repeated_points() -> None:
    # 200 points, each scored 10 times with the same score: entry-level resampling treats the 2000 entries
    # as independent and is ~sqrt(10) too narrow; resampling the points is not
    g = torch.Generator().manual_seed(6)
    labels = torch.rand(200, generator=g) < 0.5
    scores = torch.randn(200, generator=g) + 0.5 * labels
    s, y, pts = scores.repeat(10), labels.repeat(10), torch.arange(200).repeat(10)
    flat = bootstrap_metrics(s, y, torch.Generator().manual_seed(0), n_boot=300)["auc"]
    grouped = bootstrap_metrics(s, y, torch.Generator().manual_seed(0), n_boot=300, groups=pts)["auc"]
    single = bootstrap_metrics(scores, labels, torch.Generator().manual_seed(0), n_boot=300)["auc"]
    width = {k: v["hi"] - v["lo"] for k, v in (("flat", flat), ("grouped", grouped), ("single", single))}
    assert width["grouped"] > 2 * width["flat"]
    assert width["grouped"] == pytest.approx(width["single"], rel=0.3)
    with pytest.raises(ValueError, match="groups"):
        bootstrap_metrics(s, y, torch.Generator(), groups=pts[:5])


def test_bootstrap_ratio_paired() -> None:
    g = torch.Generator().manual_seed(4)
    labels = torch.rand(4000, generator=g) < 0.5
    noise = torch.randn(4000, generator=g)
    strong, weak = noise + 2.0 * labels, noise + 0.3 * labels
    r = bootstrap_ratio((strong, labels), (weak, labels), torch.Generator().manual_seed(0), metric="0.01", n_boot=200)
    assert r["ratio"] == pytest.approx(r["treated"] / r["control"])
    assert 1 < r["lo"] <= r["ratio"] <= r["hi"]
    same = bootstrap_ratio((weak, labels), (weak, labels), torch.Generator().manual_seed(0), metric="auc", n_boot=50)
    assert same["ratio"] == 1.0 and same["lo"] == 1.0 and same["hi"] == 1.0
    with pytest.raises(ValueError, match="paired"):
        bootstrap_ratio((weak, labels), (weak, ~labels), torch.Generator().manual_seed(0))


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="labels"):
        auc([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="same number"):
        auc([0.1, 0.2], [0])
    with pytest.raises(ValueError, match="fpr"):
        tpr_at_fpr([0.1, 0.2], [0, 1], 0.0)
    assert np.isnan(auc([0.1, 0.2], [1, 1]))
