"""Item tower, sequence encoder, objectives and batching on hand-built cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmrec.config.model import LossConfig, ModelConfig
from mmrec.model.losses import clip_loss, masked_item_loss
from mmrec.model.seqrec import MMRecModel
from mmrec.model.history import right_align
from mmrec.train.batches import EpochBatches, make_batch, windows_for_epoch


def _model(**kw) -> MMRecModel:
    torch.manual_seed(0)
    cfg = ModelConfig(dim=16, layers=1, heads=2, max_len=8, dropout=0.0, attn_dropout=0.0, **kw)
    m = MMRecModel(cfg, LossConfig(), n_items=10, text_dim=6, image_dim=5, n_id_items=8 if cfg.use_id else 0)
    g = torch.Generator().manual_seed(1)
    has_image = np.array([True] * 7 + [False] * 3)
    m.set_features(torch.randn(10, 6, generator=g).numpy(), torch.randn(10, 5, generator=g).numpy(),
                   np.ones(10, bool), has_image, np.r_[np.arange(8), [-1, -1]], np.r_[np.ones(8, bool), [0, 0]])
    return m.eval()


@pytest.mark.parametrize("fusion", ["sum", "gated", "concat"])
def test_item_tower_masks_missing_modalities(fusion):
    m = _model(fusion=fusion)
    v = m.item_vectors()
    assert v.shape == (10, 16)
    assert torch.allclose(v.norm(dim=-1), torch.ones(10), atol=1e-5)
    # item 8 has no image: changing its (meaningless) image row must not change its vector
    before = m.item_vectors(torch.tensor([8]))
    m.image_feats[8] = 100.0
    assert torch.allclose(before, m.item_vectors(torch.tensor([8])), atol=1e-6)
    # and an item with an image does depend on it
    before = m.item_vectors(torch.tensor([0]))
    m.image_feats[0] += 1.0
    assert not torch.allclose(before, m.item_vectors(torch.tensor([0])), atol=1e-4)


def test_sum_fusion_of_a_text_only_item_is_its_text_projection():
    m = _model(fusion="sum")
    t = m.tower
    expected = F.normalize(t.norm(t.proj["text"](m.text_feats[9:10])), dim=-1)
    assert torch.allclose(m.item_vectors(torch.tensor([9])), expected, atol=1e-6)


def test_cold_items_use_content_only_and_id_dropout_never_empties_an_item():
    m = _model(use_id=True, id_dropout=0.9)
    cold = m.item_vectors(torch.tensor([8]))
    from mmrec.model.seqrec import ContentBatch
    direct = m.encode_content(ContentBatch(text=m.text_feats[8:9], image=m.image_feats[8:9],
                                           has_text=m.has_text[8:9], has_image=m.has_image[8:9]))
    assert torch.allclose(cold, direct, atol=1e-6)  # no ID row, same as onboarding from content
    p = torch.tensor([[False, False, True]] * 100 + [[True, True, True]] * 100)
    m.tower.train()
    kept = m.tower._dropout_mask(p)
    assert kept.any(1).all() and not (kept & ~p).any()


def test_user_vector_ignores_padding_and_causal_ignores_the_future():
    m = _model()
    h1 = torch.tensor([[-1, -1, -1, -1, 2, 5, 3]])
    h2 = torch.tensor([[2, 5, 3]])
    assert torch.allclose(m.user_vectors(h1), m.user_vectors(h2), atol=1e-5)
    mc = _model(causal=True)
    x = torch.tensor([[1, 2, 3, 4]])
    vecs = mc.item_vectors(x.flatten()).view(1, 4, -1)
    out1 = mc.encode_sequence(x, vecs)
    vecs2 = vecs.clone()
    vecs2[0, 3] = torch.linspace(-2.0, 2.0, vecs.shape[-1])  # not a uniform shift: the input LayerNorm removes those
    out2 = mc.encode_sequence(x, vecs2)
    assert torch.allclose(out1[:, :3], out2[:, :3], atol=1e-5) and not torch.allclose(out1[:, 3], out2[:, 3])


def test_masked_item_loss_low_when_aligned_high_when_shuffled():
    torch.manual_seed(0)
    cand = F.normalize(torch.randn(20, 16), dim=-1)
    target = torch.arange(20)
    scale = torch.tensor(20.0)
    aligned = masked_item_loss(cand.clone(), cand, target, scale)
    shuffled = masked_item_loss(cand[torch.randperm(20)], cand, target, scale)
    assert aligned < 0.5 < math.log(20) < shuffled + 2
    # two orthonormal candidates, user = candidate 0: loss = log(1 + e^-s)
    c = torch.eye(2)
    loss = masked_item_loss(c[:1], c, torch.tensor([0]), torch.tensor(3.0))
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-3.0)), rel=1e-5)


def test_false_negatives_are_excluded():
    c = torch.eye(3)
    cand = torch.stack([c[0], c[1], c[0]])  # candidate 2 is the same item as the target (0)
    user = F.normalize(torch.tensor([[1.0, 0.2, 0.0]]), dim=-1)
    fn = torch.tensor([[True, False, True]])
    with_mask = masked_item_loss(user, cand, torch.tensor([0]), torch.tensor(5.0), fn)
    without_dup = masked_item_loss(user, cand[:2], torch.tensor([0]), torch.tensor(5.0))
    assert with_mask.item() == pytest.approx(without_dup.item(), rel=1e-6)


def test_clip_loss_hand_case_and_direction():
    a = torch.eye(2)
    s = 4.0
    expected = math.log(1 + math.exp(-s))  # each row: e^s / (e^s + e^0)
    assert clip_loss(a, a, torch.tensor(s)).item() == pytest.approx(expected, rel=1e-5)
    torch.manual_seed(0)
    x = F.normalize(torch.randn(32, 8), dim=-1)
    assert clip_loss(x, x, torch.tensor(10.0)) < clip_loss(x, x[torch.randperm(32)], torch.tensor(10.0))


def test_windows_cover_every_item_and_masking_rules():
    seq = np.arange(23)
    wins = windows_for_epoch([seq], max_len=8, seed=0, epoch=3)
    covered = set(np.concatenate(wins).tolist())
    assert covered == set(range(23)) and all(len(w) <= 8 for w in wins)
    rng = np.random.default_rng(0)
    b = make_batch([np.array([4, 5, 6])], 6, causal=False, mask_prob=0.5, last_mask_share=1.0, rng=rng)
    assert b.items.tolist() == [[-1, -1, -1, 4, 5, 6]] and b.scored.tolist() == [[False] * 5 + [True]]
    b = make_batch([np.array([4, 5, 6])], 6, causal=False, mask_prob=1e-9, last_mask_share=0.0, rng=rng)
    assert b.scored[0, :3].sum() == 0 and b.scored.sum() == 1  # never pad, at least one per row
    b = make_batch([np.array([4, 5, 6])], 4, causal=True, mask_prob=0.2, last_mask_share=0.0, rng=rng)
    assert b.items.tolist() == [[-1, -1, 4, 5]] and b.targets.tolist() == [[-1, 4, 5, 6]]
    assert b.scored.tolist() == [[False, False, True, True]]


def test_epoch_batches_are_deterministic_and_disjoint_across_processes():
    seqs = [np.arange(i, i + 10) for i in range(40)]
    kw = dict(max_len=6, causal=False, mask_prob=0.3, last_mask_share=0.5, global_batch=8, seed=5, epoch=1)
    r0 = EpochBatches(seqs, rank=0, world=2, **kw)
    r1 = EpochBatches(seqs, rank=1, world=2, **kw)
    assert len(r0) == len(r1) > 0
    assert not set(np.concatenate(r0.batches)) & set(np.concatenate(r1.batches))
    a = [b.items for b in EpochBatches(seqs, **kw).iterate(2)]
    b = list(EpochBatches(seqs, **kw).iterate(0))[2:]
    assert all(torch.equal(x, y.items) for x, y in zip(a, b))
    assert right_align([np.array([1, 2])], 4).tolist() == [[-1, -1, 1, 2]]


def test_one_step_reduces_the_masked_item_loss():
    m = _model().train()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    rng = np.random.default_rng(0)
    seqs = [np.array([0, 1, 2, 3, 4, 5]), np.array([6, 7, 0, 1, 2]), np.array([3, 4, 5, 6, 7])]
    batch = make_batch(seqs, 8, False, 0.4, 0.0, rng)
    losses = []
    for _ in range(30):
        out = m(batch.items, batch.scored, batch.targets)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert losses[-1] < 0.5 * losses[0]


def test_causal_model_with_left_padding_gives_finite_scores():
    torch.manual_seed(0)
    cfg = ModelConfig(dim=16, layers=2, heads=2, max_len=8, dropout=0.0, attn_dropout=0.0, causal=True)
    m = MMRecModel(cfg, LossConfig(), n_items=10, text_dim=6)
    m.set_features(torch.randn(10, 6).numpy(), None, np.ones(10, bool), None)
    m.eval()
    u = m.user_vectors(torch.tensor([[-1, -1, -1, -1, -1, 3, 4, 5], [-1] * 7 + [2]]))
    assert torch.isfinite(u).all()
    m.train()
    out = m(torch.tensor([[-1, -1, 1, 2]]), torch.tensor([[False, False, True, True]]), torch.tensor([[-1, 1, 2, 3]]))
    assert torch.isfinite(out["loss"])


def _dense(pairs, m: int, c: int) -> torch.Tensor:
    out = torch.zeros(m, c, dtype=torch.bool)
    out[pairs] = True
    assert int(out.sum()) == len(pairs[0])  # pairs are distinct
    return out


def test_seen_candidates_mark_what_each_scored_position_can_see():
    m = _model(causal=True, seen_bias=True)
    items = torch.tensor([[-1, 2, 5, 2]])
    scored = torch.tensor([[False, True, True, True]])
    seen = _dense(m._seen_candidates(items, scored, torch.arange(10)), 3, 10)
    assert [set(torch.nonzero(r).flatten().tolist()) for r in seen] == [{2}, {2, 5}, {2, 5}]
    # candidates gathered across processes may repeat: every copy of a seen item is marked
    seen = _dense(m._seen_candidates(items, scored, torch.tensor([5, 2, 9, 5])), 3, 4)
    assert seen.tolist() == [[False, True, False, False], [True, True, False, True], [True, True, False, True]]
    mb = _model(causal=False, seen_bias=True)  # bidirectional: the row's unmasked items
    seen = _dense(mb._seen_candidates(torch.tensor([[4, 6, 8, 1]]), torch.tensor([[False, True, False, True]]),
                                      torch.arange(10)), 2, 10)
    assert [set(torch.nonzero(r).flatten().tolist()) for r in seen] == [{4, 8}, {4, 8}]


def test_seen_offset_in_the_loss_equals_the_dense_formula_with_its_gradient():
    torch.manual_seed(0)
    user = F.normalize(torch.randn(5, 8), dim=-1)
    cand = F.normalize(torch.randn(7, 8), dim=-1)
    target = torch.tensor([0, 3, 6, 2, 2])
    seen = torch.zeros(5, 7, dtype=torch.bool)
    seen[[0, 0, 2, 4, 4], [1, 0, 5, 2, 6]] = True  # includes a target (row 4 saw item 2 before)
    scale = torch.tensor(7.0)
    b1 = torch.tensor(-0.4, requires_grad=True)
    got = masked_item_loss(user, cand, target, scale, seen=torch.nonzero(seen, as_tuple=True), seen_bias=b1)
    got.backward()
    b2 = torch.tensor(-0.4, requires_grad=True)
    ref = F.cross_entropy(scale * (user @ cand.T + b2 * seen.float()), target)
    ref.backward()
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)
    assert b1.grad.item() == pytest.approx(b2.grad.item(), rel=1e-5)


def test_score_items_offsets_only_the_visible_window():
    from mmrec.model.seqrec import SEEN_BIAS_GAIN
    m = _model(causal=True, seen_bias=True)  # max_len 8
    hist = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7, 8, 2]])  # 0 and 1 fall outside the 8-item window
    vecs = m.item_vectors()
    plain = m.user_vectors(hist, vecs) @ vecs.T
    assert torch.allclose(m.score_items(hist, vecs), plain)  # offset starts at 0
    with torch.no_grad():
        m.seen_bias.fill_(-0.3 / SEEN_BIAS_GAIN)
    assert m.seen_offset() == pytest.approx(-0.3)
    diff = (m.score_items(hist, vecs) - plain)[0]
    expected = torch.tensor([0.0, 0.0] + [-0.3] * 7 + [0.0])  # item 2 seen twice: offset once; item 9 unseen
    assert torch.allclose(diff, expected, atol=1e-6)
    off = _model(causal=True, seen_bias=False)
    assert off.seen_offset() == 0.0 and off.seen_bias is None


@pytest.mark.parametrize("repeats", [True, False])
def test_seen_bias_learns_whether_users_come_back(repeats):
    """Cycling through 3 items (every next item was just seen) -> positive offset; never
    repeating an item -> negative. The offset is learned, not fixed."""
    torch.manual_seed(0)
    cfg = ModelConfig(dim=16, layers=1, heads=2, max_len=8, dropout=0.0, attn_dropout=0.0, causal=True,
                      use_id=False, use_image=False, seen_bias=True)
    m = MMRecModel(cfg, LossConfig(), n_items=12, text_dim=6)
    m.set_features(torch.randn(12, 6, generator=torch.Generator().manual_seed(3)).numpy(), None,
                   np.ones(12, bool), None)
    rng = np.random.default_rng(0)
    if repeats:
        seqs = [np.tile(rng.choice(12, 3, replace=False), 3) for _ in range(32)]
    else:
        seqs = [rng.permutation(12)[:9] for _ in range(32)]
    batch = make_batch(seqs, 8, True, 0.2, 0.0, rng)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    m.train()
    for _ in range(60):
        loss = m(batch.items, batch.scored, batch.targets)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (m.seen_offset() > 0.1) if repeats else (m.seen_offset() < -0.5)
