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
    from mmrec.encoders.align import load_align_config, run_alignment

    out = tmp_path_factory.mktemp("align")
    cfg = load_align_config(None, SMALL + [f"output_dir={out / 'heads'}", f"results_json={out / 'results.json'}"])
    return cfg, run_alignment(cfg, show_progress=False), out


def test_retrieval_recall_exact():
    from mmrec.encoders.align import retrieval_recall

    z = np.eye(4, dtype=np.float32)
    r = retrieval_recall(z, z)
    assert r["t2i_r@1"] == r["i2t_r@1"] == 1.0
    r = retrieval_recall(z, z[[1, 0, 2, 3]])  # two swapped pairs: half right at 1, all within 5
    assert r["t2i_r@1"] == 0.5 and r["t2i_r@5"] == 1.0


def test_split_is_seeded_and_disjoint():
    from mmrec.encoders.align import split_items

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
    from mmrec.encoders.align import load_alignment_heads

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
    from mmrec.encoders.align import load_alignment_heads
    from mmrec.errors import MMRecError

    with pytest.raises(MMRecError, match="run `mmrec align` first"):
        load_alignment_heads(tmp_path)


def test_align_config_validation():
    from mmrec.encoders.align import load_align_config
    from mmrec.errors import ConfigError

    with pytest.raises(ConfigError, match="holdout_fraction"):
        load_align_config(None, ["holdout_fraction=0.9"])
    with pytest.raises(ConfigError):
        load_align_config(None, ["no_such_key=1"])
