"""Metrics against hand-computed rankings (issue 7, item 1)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmrec.errors import MMRecError
from mmrec.eval import (
    BeyondAccuracyAccumulator,
    RankingAccumulator,
    batch_ranking_metrics,
    beyond_accuracy_metrics,
    catalog_coverage,
    exclusion_mask,
    intra_list_diversity,
    popularity_bias,
    ranking_metrics,
    target_ranks,
    topk_items,
)

# 3 users x 6 items. Ranks by hand (0-based, count of other items scored >= target):
#   user 0: target 2 (0.5); 0.9 and 0.7 are above           -> rank 2
#   user 1: target 1 (0.8); nothing above                    -> rank 0
#   user 2: target 5 (0.1); all five others are above        -> rank 5
SCORES = torch.tensor(
    [
        [0.9, 0.1, 0.5, 0.3, 0.7, 0.2],
        [0.2, 0.8, 0.1, 0.4, 0.3, 0.6],
        [0.6, 0.5, 0.4, 0.3, 0.2, 0.1],
    ]
)
TARGETS = torch.tensor([2, 1, 5])


def test_hand_computed_ranks():
    assert target_ranks(SCORES, TARGETS).tolist() == [2, 0, 5]


@pytest.mark.parametrize(
    "k, hr, ndcg, mrr",
    [
        # only user 1 (rank 0) is inside the top 1 and top 2
        (1, 1 / 3, 1 / 3, 1 / 3),
        (2, 1 / 3, 1 / 3, 1 / 3),
        # users 0 (rank 2) and 1 (rank 0): ndcg = (1/log2(4) + 1/log2(2)) / 3 = 1.5 / 3,
        # mrr = (1/3 + 1) / 3 = 4/9
        (5, 2 / 3, 0.5, 4 / 9),
    ],
)
def test_hand_computed_metrics(k, hr, ndcg, mrr):
    m = ranking_metrics(target_ranks(SCORES, TARGETS), ks=(k,))
    assert set(m) == {f"hr@{k}", f"recall@{k}", f"ndcg@{k}", f"mrr@{k}"}
    assert m[f"hr@{k}"] == pytest.approx(hr, abs=1e-12)
    assert m[f"recall@{k}"] == pytest.approx(hr, abs=1e-12)  # leave-one-out: recall == HR
    assert m[f"ndcg@{k}"] == pytest.approx(ndcg, abs=1e-12)
    assert m[f"mrr@{k}"] == pytest.approx(mrr, abs=1e-12)


def test_ndcg_uses_log2_of_rank_plus_two():
    m = ranking_metrics(torch.tensor([5]), ks=(6,))
    assert m["ndcg@6"] == pytest.approx(1 / math.log2(7))
    assert m["mrr@6"] == pytest.approx(1 / 6)
    assert ranking_metrics(torch.tensor([6]), ks=(6,))["ndcg@6"] == 0.0


def test_default_keys_are_the_json_keys():
    m = batch_ranking_metrics(SCORES, TARGETS)
    for k in (10, 20):
        for name in ("hr", "recall", "ndcg", "mrr"):
            assert isinstance(m[f"{name}@{k}"], float)
    assert m["hr@10"] == 1.0  # 6 items: every target is inside the top 10


def test_constant_scorer_ties_are_pessimistic():
    n = 6
    ranks = target_ranks(torch.zeros(4, n), torch.tensor([0, 1, 3, 5]))
    assert ranks.tolist() == [n - 1] * 4
    assert ranking_metrics(ranks, ks=(1, 5)) == {
        "hr@1": 0.0, "recall@1": 0.0, "ndcg@1": 0.0, "mrr@1": 0.0,
        "hr@5": 0.0, "recall@5": 0.0, "ndcg@5": 0.0, "mrr@5": 0.0,
    }


def test_partial_tie_counts_tied_items_ahead():
    # item 1 ties with the target, item 2 is above, item 3 is below -> rank 2
    assert target_ranks(torch.tensor([[0.5, 0.5, 0.9, 0.1]]), torch.tensor([0])).tolist() == [2]


@pytest.mark.parametrize("form", ["list", "numpy", "tensor_list", "mask", "numpy_mask"])
def test_history_exclusion_moves_target_up_by_excluded_items_above(form):
    # user 0: exclude item 0 (0.9, above the target) and item 1 (0.1, below) -> rank 2 - 1 = 1
    # user 1: exclude items 3, 5 (both below the rank-0 target)            -> stays 0
    # user 2: exclude 0, 1, 2 (all above)                                   -> rank 5 - 3 = 2
    hist = [[0, 1], [3, 5], [0, 1, 2]]
    if form == "list":
        exclude = hist
    elif form == "numpy":
        exclude = [np.array(h) for h in hist]
    elif form == "tensor_list":
        exclude = [torch.tensor(h) for h in hist]
    else:
        mask = np.zeros((3, 6), dtype=bool)
        for u, h in enumerate(hist):
            mask[u, h] = True
        exclude = mask if form == "numpy_mask" else torch.from_numpy(mask)
    assert target_ranks(SCORES, TARGETS, exclude).tolist() == [1, 0, 2]
    assert target_ranks(SCORES, TARGETS, None).tolist() == [2, 0, 5]  # the switch off


def test_target_in_history_stays_rankable():
    # user 0's history holds the target (2) and item 4 (0.7, above it): only item 4 goes,
    # the target is ranked as usual -> rank 1 (item 0 is still above it)
    ranks = target_ranks(SCORES[:1], TARGETS[:1], [[2, 4]])
    assert ranks.tolist() == [1]
    # a history that is only the target changes nothing
    assert target_ranks(SCORES[:1], TARGETS[:1], [[2, 2]]).tolist() == [2]


def test_exclusion_matches_brute_force_with_ties():
    gen = torch.Generator().manual_seed(0)
    b, n = 40, 15
    scores = torch.randint(0, 5, (b, n), generator=gen).float()  # many ties
    targets = torch.randint(0, n, (b,), generator=gen)
    mask = torch.rand(b, n, generator=gen) < 0.3
    got = target_ranks(scores, targets, mask).tolist()
    for u in range(b):
        t = int(targets[u])
        expected = sum(
            1 for i in range(n) if i != t and not mask[u, i] and scores[u, i] >= scores[u, t]
        )
        assert got[u] == expected


def test_perfect_model_scores_one_everywhere():
    gen = torch.Generator().manual_seed(1)
    scores = torch.rand(7, 30, generator=gen)
    targets = torch.randint(0, 30, (7,), generator=gen)
    scores[torch.arange(7), targets] = 2.0  # the true item is first
    history = [list(range(5)) for _ in range(7)]  # even if the target is in it
    for exclude in (None, history):
        m = batch_ranking_metrics(scores, targets, exclude, ks=(1, 10, 20))
        assert m and all(v == 1.0 for v in m.values()), m


def test_accumulator_over_batches_equals_one_shot():
    gen = torch.Generator().manual_seed(2)
    scores = torch.randn(50, 40, generator=gen)
    targets = torch.randint(0, 40, (50,), generator=gen)
    history = torch.rand(50, 40, generator=gen) < 0.2
    one_shot = batch_ranking_metrics(scores, targets, history, ks=(1, 5, 10))

    acc = RankingAccumulator(ks=(1, 5, 10))
    for lo, hi in ((0, 7), (7, 8), (8, 31), (31, 50)):  # uneven batch sizes
        acc.update_scores(scores[lo:hi], targets[lo:hi], history[lo:hi])
    streamed = acc.compute()
    assert acc.n_users == 50
    assert streamed.keys() == one_shot.keys()
    for key in one_shot:
        assert streamed[key] == pytest.approx(one_shot[key], abs=1e-12)
    assert 0.0 < one_shot["ndcg@10"] < 1.0  # a non-trivial case


def test_empty_accumulator_raises():
    with pytest.raises(MMRecError):
        RankingAccumulator().compute()


def test_nan_scores_raise():
    bad = SCORES.clone()
    bad[1, 3] = float("nan")
    with pytest.raises(MMRecError, match="NaN"):
        target_ranks(bad, TARGETS)
    with pytest.raises(MMRecError, match="NaN"):
        RankingAccumulator().update_scores(bad, TARGETS)
    with pytest.raises(MMRecError, match="NaN"):
        topk_items(bad, 2)


def test_bad_inputs_raise_project_error():
    with pytest.raises(MMRecError):
        target_ranks(SCORES, torch.tensor([0, 1]))  # wrong number of targets
    with pytest.raises(MMRecError):
        target_ranks(SCORES, torch.tensor([0, 1, 6]))  # target outside the catalog
    with pytest.raises(MMRecError):
        target_ranks(SCORES, TARGETS, [[0], [7], []])  # history item outside the catalog
    with pytest.raises(MMRecError):
        target_ranks(SCORES, TARGETS, torch.zeros(3, 5, dtype=torch.bool))  # mask shape


def test_exclusion_mask_from_lists():
    mask = exclusion_mask([[1, 1, 3], [], [0]], 3, 4)
    assert mask.tolist() == [
        [False, True, False, True],
        [False, False, False, False],
        [True, False, False, False],
    ]


def test_topk_items_with_exclusion():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.7], [0.4, 0.3, 0.2, 0.1]])
    assert topk_items(scores, 2).tolist() == [[1, 3], [0, 1]]
    # excluded items never appear (no target to keep here)
    assert topk_items(scores, 2, [[1], [0, 1]]).tolist() == [[3, 2], [2, 3]]
    with pytest.raises(MMRecError):
        topk_items(scores, 3, [[1], [0, 1]])  # user 1 has only 2 items left


def test_catalog_coverage():
    assert catalog_coverage(torch.tensor([[0, 1], [1, 2]]), 5) == pytest.approx(3 / 5)
    assert catalog_coverage(torch.tensor([[4, 4], [4, 4]]), 5) == pytest.approx(1 / 5)


def test_intra_list_diversity_normalises_vectors():
    # unnormalised vectors: item 0 -> x axis, item 1 -> y axis (length 2), item 2 -> 45 degrees
    vectors = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    # list [0, 1]: cos 0 -> distance 1; list [1, 2]: cos 1/sqrt(2) -> distance 1 - 1/sqrt(2)
    expected = (1.0 + (1.0 - 1 / math.sqrt(2))) / 2
    assert intra_list_diversity(torch.tensor([[0, 1], [1, 2]]), vectors) == pytest.approx(expected)
    # three items: a and b point the same way (distance 0), c is orthogonal to both (1, 1) -> 2/3
    vectors3 = torch.tensor([[1.0, 0.0], [5.0, 0.0], [0.0, 1.0]])
    assert intra_list_diversity(torch.tensor([[0, 1, 2]]), vectors3) == pytest.approx(2 / 3)
    assert intra_list_diversity(torch.tensor([[0, 1]]), vectors3) == pytest.approx(0.0, abs=1e-12)


def test_popularity_and_novelty():
    counts = torch.tensor([3, 1, 0, 4])  # total 8; item 2 never seen in training
    topk = torch.tensor([[0, 1], [2, 3]])
    got = popularity_bias(topk, counts)
    assert got["popularity"] == pytest.approx((math.log(4) + math.log(2) + 0.0 + math.log(5)) / 4)
    # self-information -log2(count/8); the unseen item counts as once seen -> 3 bits
    assert got["novelty"] == pytest.approx((math.log2(8 / 3) + 3.0 + 3.0 + 1.0) / 4)
    assert math.isfinite(got["novelty"])


def test_beyond_accuracy_keys_and_streaming_union():
    vectors = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0], [1.0, 1.0], [0.0, 1.0]])
    counts = torch.tensor([3, 1, 0, 4, 2])
    lists = torch.tensor([[0, 1], [1, 2]])
    one_shot = beyond_accuracy_metrics(lists, 5, vectors, counts)
    assert set(one_shot) == {"coverage@2", "diversity@2", "popularity@2", "novelty@2"}
    assert one_shot["coverage@2"] == pytest.approx(3 / 5)  # {0, 1, 2}

    acc = BeyondAccuracyAccumulator(5, vectors, counts)
    acc.update(lists[:1])
    acc.update(lists[1:])
    streamed = acc.compute()
    # coverage is of the union of all batches, not the mean of per-batch coverage (2/5)
    for key in one_shot:
        assert streamed[key] == pytest.approx(one_shot[key])

    assert beyond_accuracy_metrics(lists, 5) == {"coverage@2": pytest.approx(3 / 5)}


def test_topk_feeds_beyond_accuracy():
    scores = torch.tensor([[0.9, 0.8, 0.1, 0.0], [0.9, 0.0, 0.8, 0.1]])
    top = topk_items(scores, 2, [[0], []])  # [[1, 2], [0, 2]]
    assert top.tolist() == [[1, 2], [0, 2]]
    assert catalog_coverage(top, 4) == pytest.approx(3 / 4)
