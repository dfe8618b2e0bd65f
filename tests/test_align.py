"""Cross-modal alignment on real posters: loss falls, held-out recall beats untrained heads, heads load."""
from __future__ import annotations

import numpy as np
import pytest
import torch

# a small seeded subset of ML-100K at reduced resolution (the w92 posters are 92 px wide anyway)
SMALL = ["sources=[ml-100k]", "max_items_per_source=300", "holdout_fraction=0.2", "encoders.image.image_size=96",
         "encoders.text.max_tokens=96", "dim=64", "epochs=30", "lora.enabled=false"]


@pytest.fixture(scope="module")
def small_run(data_home, tmp_path_factory):
    from mmrec.align import load_align_config, run_alignment

    out = tmp_path_factory.mktemp("align")
    cfg = load_align_config(None, SMALL + [f"output_dir={out / 'heads'}", f"results_json={out / 'results.json'}"])
    return cfg, run_alignment(cfg, show_progress=False), out


def test_retrieval_recall_exact():
    from mmrec.align import retrieval_recall

    z = np.eye(4, dtype=np.float32)
    r = retrieval_recall(z, z)
    assert r["t2i_r@1"] == r["i2t_r@1"] == 1.0
    r = retrieval_recall(z, z[[1, 0, 2, 3]])  # two swapped pairs: half right at 1, all within 5
    assert r["t2i_r@1"] == 0.5 and r["t2i_r@5"] == 1.0


def test_split_is_seeded_and_disjoint():
    from mmrec.align import split_items

    tr, ho = split_items(100, 0.1, seed=3)
    tr2, ho2 = split_items(100, 0.1, seed=3)
    assert len(ho) == 10 and len(tr) == 90 and not set(tr) & set(ho)
    assert (ho == ho2).all() and (tr == tr2).all()
    assert not (split_items(100, 0.1, seed=4)[1] == ho).all()


def test_loss_decreases_and_trained_heads_beat_untrained(small_run):
    _cfg, res, _out = small_run
    loss = res["history"]["loss"]
    assert loss[-1] < 0.8 * loss[0]
    src = res["sources"]["ml-100k"]
    assert src["heldout"] == pytest.approx(0.2 * src["pairs"], abs=1)
    a, b = res["mean"]["untrained"], res["mean"]["trained"]
    score = lambda r: (r["t2i_r@10"] + r["i2t_r@10"]) / 2  # noqa: E731
    assert score(b) > score(a) + 0.08, (a, b)
    assert score(b) > 1.5 * score(a)


def test_heads_load_into_item_tower_projections(small_run):
    from mmrec.align import load_alignment_heads

    cfg, res, out = small_run
    sd = load_alignment_heads(res["heads_dir"])
    assert set(sd) == {"text.weight", "text.bias", "image.weight", "image.bias"}
    proj = torch.nn.ModuleDict({"text": torch.nn.Linear(384, cfg.dim), "image": torch.nn.Linear(1280, cfg.dim)})
    proj.load_state_dict(sd)  # exactly the item tower's proj layout
    assert (out / "results.json").is_file()
    try:
        from mmrec.config import ModelConfig
        from mmrec.model.item_tower import ItemTower
    except ImportError:  # the model package is built in another issue
        return
    tower = ItemTower(ModelConfig(dim=cfg.dim, projection="linear"), text_dim=384, image_dim=1280)
    tower.proj.load_state_dict(sd)
    assert torch.equal(tower.proj["image"].weight, sd["image.weight"])


def test_load_alignment_heads_errors(tmp_path):
    from mmrec.align import load_alignment_heads
    from mmrec.errors import MMRecError

    with pytest.raises(MMRecError, match="run `mmrec align` first"):
        load_alignment_heads(tmp_path)


def test_align_config_validation():
    from mmrec.align import load_align_config
    from mmrec.errors import ConfigError

    with pytest.raises(ConfigError, match="holdout_fraction"):
        load_align_config(None, ["holdout_fraction=0.9"])
    with pytest.raises(ConfigError):
        load_align_config(None, ["no_such_key=1"])


# -- model.init_projections_from -----------------------------------------------------------------

def _tiny_model(dim=16, text_dim=8, image_dim=12, **kw):
    from mmrec.config.model import LossConfig, ModelConfig
    from mmrec.model.seqrec import MMRecModel

    cfg = ModelConfig(dim=dim, layers=1, heads=2, max_len=8, **kw)
    torch.manual_seed(0)
    return cfg, MMRecModel(cfg, LossConfig(), n_items=6, text_dim=text_dim, image_dim=image_dim, n_id_items=6)


def test_init_projections_from_copies_the_heads_into_the_tower(tmp_path):
    from mmrec.align import apply_init_projections, make_heads, save_alignment_heads
    from mmrec.config import load_config

    heads = make_heads(8, 12, 16, seed=7)
    save_alignment_heads(heads, tmp_path / "heads")
    cfg = load_config(None, [f"model.init_projections_from={tmp_path / 'heads'}", "model.dim=16"]).model
    assert cfg.init_projections_from == str(tmp_path / "heads")
    cfg, model = _tiny_model(init_projections_from=cfg.init_projections_from)
    id_before = model.tower.id_emb.weight.clone()
    assert not torch.equal(model.tower.proj["text"].weight, heads.text.weight)
    info = apply_init_projections(model, cfg)
    assert info["modalities"] == ["text", "image"]
    for m in ("text", "image"):
        assert torch.equal(model.tower.proj[m].weight, getattr(heads, m).weight)
        assert torch.equal(model.tower.proj[m].bias, getattr(heads, m).bias)
    assert torch.equal(model.tower.id_emb.weight, id_before)  # only the projections change
    # unset: a no-op
    cfg0, model0 = _tiny_model()
    w0 = model0.tower.proj["text"].weight.clone()
    assert apply_init_projections(model0, cfg0) is None
    assert torch.equal(model0.tower.proj["text"].weight, w0)


def test_init_projections_from_mismatch_and_missing_are_clear_errors(tmp_path):
    from mmrec.align import apply_init_projections, make_heads, save_alignment_heads
    from mmrec.config import load_config
    from mmrec.errors import ConfigError

    save_alignment_heads(make_heads(8, 12, 32, seed=0), tmp_path / "heads32")
    cfg, model = _tiny_model(init_projections_from=str(tmp_path / "heads32"))
    with pytest.raises(ConfigError, match=r"heads32.*text head Linear\(8 -> 32\).*Linear\(8 -> 16\).*model.dim=16"):
        apply_init_projections(model, cfg)
    save_alignment_heads(make_heads(10, 12, 16, seed=0), tmp_path / "heads_t10")  # other text-encoder size
    cfg, model = _tiny_model(init_projections_from=str(tmp_path / "heads_t10"))
    with pytest.raises(ConfigError, match=r"heads_t10.*Linear\(10 -> 16\)"):
        apply_init_projections(model, cfg)
    cfg, model = _tiny_model(init_projections_from=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=r"nowhere.*run `mmrec align` first"):
        apply_init_projections(model, cfg)
    with pytest.raises(ConfigError, match="projection=linear"):
        load_config(None, [f"model.init_projections_from={tmp_path / 'heads32'}", "model.projection=mlp"])


def test_one_clip_loss_in_the_code_base(monkeypatch):
    """The align trainer computes its loss with mmrec.model.losses.clip_loss, the only CLIP loss there is."""
    import re
    from pathlib import Path

    import mmrec
    from mmrec.align import AlignConfig, SourcePairs, train_heads
    from mmrec.model import losses

    calls = []
    real = losses.clip_loss

    def counting(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(losses, "clip_loss", counting)
    rng = np.random.default_rng(0)
    n = 64
    src = SourcePairs(name="synthetic", item_ids=[str(i) for i in range(n)],
                      texts=rng.normal(size=(n, 8)).astype(np.float32),
                      images=rng.normal(size=(n, 12)).astype(np.float32),
                      paths=[""] * n, train=np.arange(48), heldout=np.arange(48, n))
    cfg = AlignConfig(sources=["synthetic"], dim=4, epochs=2, batch_size=16, val_fraction=0.0)
    _heads, hist = train_heads([src], cfg, show_progress=False)
    assert len(calls) == 2 * (48 // 16) == len(hist["loss"]) * 3
    root = Path(mmrec.__file__).parent
    defs = [str(p.relative_to(root)) for p in root.rglob("*.py")
            if re.search(r"^def clip_loss\b|^\s+def clip_loss\b", p.read_text(encoding="utf-8"), re.MULTILINE)]
    assert defs == ["model/losses.py"], defs
    assert not [p for p in (root / "align").rglob("*.py") if "cross_entropy" in p.read_text(encoding="utf-8")]
