"""Text and image encoders with the real packaged weights (MiniLM, EfficientNet-Lite0)."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before any Hugging Face import: never wait on the network

import json
import logging
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mmrec.data.schema import Catalog
from mmrec.config.encoders import (EncodersConfig, ImageEncoderConfig, LoRAConfig, TextEncoderConfig,
                                   template_fields)
from mmrec.encoders.text import item_texts, render_template
from mmrec.errors import ConfigError

CLIPART = Path("/usr/share/openclipart/png")
PENGUIN = CLIPART / "animals" / "birds" / "emperor_penguin_ralf_ste_01.png"
POSTERS_TAR = Path(os.environ.get("MMREC_DATA_HOME", "../shared/data")) / "ml-100k-posters-tmdb" / "posters_w92.tar"
KING_PENGUIN = 145  # ImageNet-1k class index


# -- fixtures -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def image_encoder(mmrec_home):
    from mmrec.encoders.image import ImageEncoder

    return ImageEncoder()


@pytest.fixture(scope="module")
def posters(tmp_path_factory):
    """A few real ML-100K posters (JPEG, 92 px wide)."""
    if not POSTERS_TAR.is_file():
        pytest.skip(f"posters archive not found at {POSTERS_TAR} (set MMREC_DATA_HOME)")
    out = tmp_path_factory.mktemp("posters")
    paths = []
    with tarfile.open(POSTERS_TAR) as tar:
        for name in ("posters_w92/1.jpg", "posters_w92/2.jpg", "posters_w92/50.jpg", "posters_w92/100.jpg"):
            data = tar.extractfile(name).read()
            p = out / Path(name).name
            p.write_bytes(data)
            paths.append(p)
    return paths


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# -- config and item text (no models) -------------------------------------------------------------

def test_config_validation():
    EncodersConfig()  # defaults are valid
    with pytest.raises(ConfigError, match="max_tokens"):
        TextEncoderConfig(max_tokens=0)
    with pytest.raises(ConfigError, match="template"):
        TextEncoderConfig(template="no fields here")
    with pytest.raises(ConfigError, match="placeholder"):
        TextEncoderConfig(template="{} and {0}")
    with pytest.raises(ConfigError, match="image_size"):
        ImageEncoderConfig(image_size=8)
    with pytest.raises(ConfigError, match="batch_size"):
        ImageEncoderConfig(batch_size=0)
    with pytest.raises(ConfigError, match="apply_to"):
        LoRAConfig(apply_to="audio")
    with pytest.raises(ConfigError, match="rank"):
        LoRAConfig(rank=0)
    with pytest.raises(ConfigError, match="dropout"):
        LoRAConfig(dropout=1.0)
    assert template_fields("{title}. {keywords}") == ["title", "keywords"]


@pytest.mark.parametrize("values, expected", [
    ({"title": "Alien", "categories": ["Horror", "Sci-Fi"], "description": "In space no one can hear you scream."},
     "Alien. Horror, Sci-Fi. In space no one can hear you scream."),
    ({"title": "Alien", "categories": [], "description": "Crew meets creature."}, "Alien. Crew meets creature."),
    ({"title": "", "categories": ["Horror"], "description": ""}, "Horror"),
    ({"title": "Dr. No.", "categories": [], "description": "Bond."}, "Dr. No. Bond."),
    ({"title": "  Spaced   out \n title ", "categories": None, "description": float("nan")}, "Spaced out title"),
    ({"title": "", "categories": [], "description": ""}, ""),
])
def test_render_template_skips_empty_fields(values, expected):
    assert render_template("{title}. {categories}. {description}", values) == expected


def test_render_template_labels_and_keywords():
    t = "Title: {title}\nKeywords: {keywords}."
    assert render_template(t, {"title": "", "keywords": ["penguin", "bird"]}) == "Keywords: penguin, bird."
    assert render_template(t, {"title": "Tux", "keywords": []}) == "Title: Tux."


def test_item_texts_from_catalog_with_extra_column():
    cat = Catalog(pd.DataFrame({"item_id": ["a", "b"], "title": ["Penguin", ""],
                                "keywords": [["bird", "ice"], []], "categories": [["animals"], []]}))
    cfg = TextEncoderConfig(template="{title}. {categories}. Keywords: {keywords}")
    assert item_texts(cat, cfg) == ["Penguin. animals. Keywords: bird, ice", ""]
    with pytest.raises(ConfigError, match="plot"):
        item_texts(cat, TextEncoderConfig(template="{title} {plot}"))


# -- text encoder ---------------------------------------------------------------------------------

def test_text_dimension_normalisation_determinism(text_encoder):
    texts = ["Toy Story. Animation. Toys come to life.", "GoldenEye. Action. James Bond saves the world.", ""]
    a = text_encoder.encode(texts)
    assert a.shape == (3, 384) and a.dtype == np.float32 and text_encoder.dim == 384
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    b = text_encoder.encode(list(reversed(texts)), batch_size=1)  # other batch composition, other order
    np.testing.assert_allclose(a, b[::-1], atol=1e-5)
    assert text_encoder.encode([]).shape == (0, 384)


def test_similar_plots_are_closer_than_unrelated(text_encoder):
    space1 = ("Star Wars. Sci-Fi. Rebels fight the galactic empire with starships and laser swords "
              "across distant planets.")
    space2 = ("Battlestar Galactica. Sci-Fi. A fleet of spaceships flees a robot empire through deep space, "
              "fighting battles among the stars.")
    cooking = ("The Great Bake Off. Reality. Amateur bakers compete to make the best cakes, bread and pastries "
               "in a tent.")
    v = text_encoder.encode([space1, space2, cooking])
    assert cos(v[0], v[1]) > cos(v[0], v[2]) + 0.2
    assert cos(v[0], v[1]) > cos(v[1], v[2]) + 0.2


def test_truncation_by_tokens_and_fingerprint(text_encoder, mmrec_home):
    from mmrec.encoders.text import TextEncoder, default_text_model_path

    # the packaged model named by its local path (the "any local folder" route) with a short token budget
    short = TextEncoder(TextEncoderConfig(model=str(default_text_model_path()), max_tokens=16))
    assert short.model.max_seq_length == 16 and short.dim == 384
    head = "word " * 30
    long_a, long_b = head + "about penguins on ice", head + "about a bank robbery in Chicago"
    assert short.count_tokens(long_a) > 16
    va, vb = short.encode([long_a, long_b])
    np.testing.assert_allclose(va, vb, atol=1e-6)  # the differing tails are past token 16
    fa, fb = text_encoder.encode([long_a, long_b])
    assert cos(fa, fb) < 0.999  # with 256 tokens the tails count
    # fingerprints: same weights hash, different preprocessing -> different keys
    assert short.weights_hash() == text_encoder.weights_hash()
    assert short.fingerprint != text_encoder.fingerprint
    assert len(text_encoder.fingerprint) == 64
    assert (mmrec_home / "cache" / "weights-hashes.json").is_file()  # hashed once, remembered


# -- image encoder: the assembled offline model ---------------------------------------------------

def test_assembled_model_loads_through_open_clip(image_encoder, mmrec_home):
    import open_clip
    import torch

    from mmrec.encoders.image import effnet_lite0_weights_path

    folder = mmrec_home / "models" / "mmrec-effnetlite0-minilm"
    assert (folder / "open_clip_config.json").is_file() and (folder / "open_clip_model.safetensors").is_file()
    cfg = json.loads((folder / "open_clip_config.json").read_text())
    assert cfg["model_cfg"]["vision_cfg"]["timm_model_name"] == "tf_efficientnet_lite0"
    assert cfg["preprocess_cfg"]["mean"] == [0.5, 0.5, 0.5] and cfg["preprocess_cfg"]["std"] == [0.5, 0.5, 0.5]

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    assert type(model).__name__ == "CustomTextCLIP"
    norm = [t for t in preprocess.transforms if type(t).__name__ == "Normalize"][0]
    assert list(norm.mean) == [0.5, 0.5, 0.5] and list(norm.std) == [0.5, 0.5, 0.5]
    # the saved trunk carries the package's ImageNet weights
    src = torch.load(effnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    torch.testing.assert_close(model.visual.trunk.conv_stem.weight, src["_conv_stem.weight"])
    torch.testing.assert_close(model.visual.trunk.bn2.running_var, src["_bn1.running_var"])
    # the encoder's model is the same as open_clip's plain load
    for (k, a), (_, b) in zip(model.state_dict().items(), image_encoder.model.state_dict().items()):
        torch.testing.assert_close(a, b, msg=k)
    assert image_encoder.dim == 1280
    assert tokenizer(["a penguin"]).shape[-1] == cfg["model_cfg"]["text_cfg"]["context_length"]


def test_clip_text_tower_is_minilm(image_encoder, text_encoder):
    """The CLIP text tower's mean-pooled output equals sentence-transformers' MiniLM embedding."""
    import torch
    import torch.nn.functional as F

    texts = ["a cartoon penguin on the ice", "a poster of a space adventure film"]
    tokens = image_encoder.tokenizer(texts)
    text_tower = image_encoder.model.text
    with torch.inference_mode():
        out = text_tower.transformer(input_ids=tokens, attention_mask=(tokens != 0).long())
        pooled = text_tower.pooler(out, (tokens != 0).long())
    np.testing.assert_allclose(F.normalize(pooled, dim=-1).numpy(), text_encoder.encode(texts), atol=1e-4)
    v = image_encoder.encode_text(texts)
    assert v.shape == (2, 1280)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


def test_penguin_clipart_is_classified_king_penguin(image_encoder):
    """Proves the ImageNet weights really loaded: clip-art emperor penguin -> 'king penguin' with high p."""
    import torch

    from mmrec.encoders.image import effnet_lite0_timm, load_image

    if not PENGUIN.is_file():
        pytest.skip(f"clip art not installed: {PENGUIN}")
    clf = effnet_lite0_timm(num_classes=1000)
    x = image_encoder.preprocess(load_image(PENGUIN)).unsqueeze(0)
    with torch.inference_mode():
        probs = clf(x).softmax(-1)[0]
        feats = clf.forward_head(clf.forward_features(x), pre_logits=True)
        trunk = image_encoder.model.visual.trunk(x)
    assert int(probs.argmax()) == KING_PENGUIN and float(probs[KING_PENGUIN]) > 0.8
    torch.testing.assert_close(trunk, feats, atol=1e-5, rtol=1e-4)  # the CLIP trunk == the classifier's features


def test_transparency_is_composited_onto_white(image_encoder, tmp_path):
    from mmrec.encoders.image import load_image, to_rgb

    transparent = tmp_path / "transparent.png"
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(transparent)  # invisible black
    white = tmp_path / "white.png"
    Image.new("RGB", (64, 64), (255, 255, 255)).save(white)
    assert load_image(transparent).getpixel((0, 0)) == (255, 255, 255)
    vecs, ok = image_encoder.encode_paths([transparent, white])
    assert ok.all()
    np.testing.assert_allclose(vecs[0], vecs[1], atol=1e-6)
    # real clip art: transparent corners become white, not black
    if PENGUIN.is_file():
        with Image.open(PENGUIN) as im:
            assert im.mode in ("RGBA", "LA", "P")
        assert load_image(PENGUIN).getpixel((0, 0)) == (255, 255, 255)
    # other modes
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 0, 0, 255, 0, 0])
    pal.info["transparency"] = 0
    assert to_rgb(pal).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.new("LA", (4, 4), (0, 0))).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.new("L", (4, 4), 128)).getpixel((0, 0)) == (128, 128, 128)
    assert to_rgb(Image.new("CMYK", (4, 4), (0, 0, 0, 0))).getpixel((0, 0)) == (255, 255, 255)
    sixteen = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert to_rgb(sixteen).getpixel((0, 0)) == (255, 255, 255)


def test_bad_images_do_not_break_the_batch(image_encoder, posters, tmp_path, caplog):
    good = posters[:2]
    zero = tmp_path / "zero.jpg"
    zero.write_bytes(b"")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(posters[2].read_bytes()[: posters[2].stat().st_size // 2])
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not an image" * 10)
    bomb = tmp_path / "bomb.png"
    Image.new("1", (8200, 8200)).save(bomb)  # 67 Mpx, a few KB on disk
    missing = tmp_path / "missing.jpg"
    paths = [good[0], zero, truncated, garbage, bomb, missing, None, good[1]]
    ids = [f"item{i}" for i in range(len(paths))]
    with caplog.at_level(logging.WARNING, logger="mmrec"):
        vecs, ok = image_encoder.encode_paths(paths, batch_size=4, item_ids=ids)
    assert ok.tolist() == [True, False, False, False, False, False, False, True]
    assert not vecs[~ok].any()
    alone, ok2 = image_encoder.encode_paths(good)
    assert ok2.all()
    np.testing.assert_allclose(vecs[[0, 7]], alone, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(alone, axis=1), 1.0, atol=1e-5)
    for i in range(1, 7):
        assert f"'item{i}'" in caplog.text
    for p in (zero, truncated, garbage, bomb, missing):
        assert str(p) in caplog.text
    assert "decompression bomb" in caplog.text


def test_reduced_resolution_and_named_model_with_local_checkpoint(image_encoder, mmrec_home, posters):
    """image_size override; and the named-model route (open_clip name + pretrained=<file>) for online users."""
    import open_clip

    from mmrec.encoders.image import ImageEncoder

    small = ImageEncoder(ImageEncoderConfig(image_size=160))
    assert small.preprocess_cfg["size"] in (160, (160, 160))
    assert small.fingerprint != image_encoder.fingerprint and small.dim == 1280
    v, ok = small.encode_paths(posters[:1])
    assert ok.all() and v.shape == (1, 1280)

    folder = mmrec_home / "models" / "mmrec-effnetlite0-minilm"
    cfg = json.loads((folder / "open_clip_config.json").read_text())
    reg = mmrec_home / "registered" / "mmrec-test-named.json"
    reg.parent.mkdir(exist_ok=True)
    reg.write_text(json.dumps(cfg["model_cfg"]))
    open_clip.add_model_config(reg)
    named = ImageEncoder(ImageEncoderConfig(model="mmrec-test-named",
                                            pretrained=str(folder / "open_clip_model.safetensors")))
    # same weights, but open_clip's default (OpenAI) normalisation for a bare name: a different cache key
    assert named.fingerprint != image_encoder.fingerprint
    v2, ok2 = named.encode_paths(posters[:1])
    assert ok2.all() and v2.shape == (1, 1280)


def test_embed_catalog_masks_cache_and_roundtrip(image_encoder, text_encoder, posters, tmp_path):
    from mmrec.encoders import EmbeddingCache, EncodersConfig, ItemFeatures, embed_catalog

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff garbage")
    cat = Catalog(pd.DataFrame({
        "item_id": ["m1", "m2", "m3", "m4", "m5"],
        "title": ["Toy Story", "GoldenEye", "", "Star Wars", "Fargo"],
        "categories": [["Animation"], ["Action"], [], ["Sci-Fi"], ["Crime"]],
        "image": [str(posters[0]), str(posters[1]), str(posters[2]), None, str(broken)],
    }))
    cfg = EncodersConfig()
    cache = EmbeddingCache(tmp_path / "cache")
    f = embed_catalog(cat, cfg, cache=cache, text_encoder=text_encoder, image_encoder=image_encoder,
                      show_progress=False)
    assert f.has_text.tolist() == [True, True, False, True, True]
    assert f.has_image.tolist() == [True, True, True, False, False]
    assert f.text.shape == (5, 384) and f.image.shape == (5, 1280)
    assert not f.text[2].any() and not f.image[3:].any()
    assert f.summary["text"] == {**f.summary["text"], "computed": 4, "from_cache": 0, "failed": 0, "skipped": 1}
    assert f.summary["image"] == {**f.summary["image"], "computed": 3, "from_cache": 0, "failed": 1, "skipped": 1}
    assert f.text_fingerprint == text_encoder.fingerprint and f.image_fingerprint == image_encoder.fingerprint

    again = embed_catalog(cat, cfg, cache=cache, text_encoder=text_encoder, image_encoder=image_encoder,
                          show_progress=False)
    assert again.summary["text"]["computed"] == 0 and again.summary["image"]["computed"] == 0
    assert again.summary["image"]["from_cache"] == 3 and again.summary["image"]["failed"] == 1
    np.testing.assert_array_equal(again.image, f.image)

    saved = f.save(tmp_path / "features")
    back = ItemFeatures.load(saved)
    assert back.item_ids == f.item_ids and back.summary == f.summary
    np.testing.assert_array_equal(back.text, f.text)
    np.testing.assert_array_equal(back.has_image, f.has_image)
    assert back.subset(["m4", "m1"]).item_ids == ["m4", "m1"]
