"""LoRA (peft) on the real packaged towers: wraps, trains a step, saves only adapters, merges exactly."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mmrec.config.encoders import ImageEncoderConfig, LoRAConfig, TextEncoderConfig

IMG_SIZE = 64  # small inputs keep the trunk's forward/backward cheap on 2 cores


@pytest.fixture(scope="module")
def image_encoder():
    from mmrec.encoders.image import ImageEncoder

    return ImageEncoder(ImageEncoderConfig(image_size=IMG_SIZE))


def _batch(n: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, IMG_SIZE, IMG_SIZE, generator=g) * 2 - 1


def _image_step(enc, x: torch.Tensor, target: torch.Tensor, params) -> float:
    opt = torch.optim.SGD(params, lr=0.5)
    feats = enc.model.encode_image(x, normalize=True)
    loss = 1.0 - (feats * target).sum(-1).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss)


def test_image_lora_wraps_trains_saves_and_merges(image_encoder, tmp_path):
    from safetensors.torch import load_file

    from mmrec.encoders.image import ImageEncoder
    from mmrec.encoders.lora import (apply_lora, load_lora, lora_parameters, merge_lora, save_lora,
                                     wrapped_towers)

    enc = ImageEncoder(ImageEncoderConfig(image_size=IMG_SIZE))
    x = _batch()
    with torch.inference_mode():
        before = enc.model.encode_image(x, normalize=True).clone()
    fp0 = enc.fingerprint
    cfg = LoRAConfig(enabled=True, rank=4, alpha=8, dropout=0.0, apply_to="image")
    apply_lora(enc, cfg)
    assert wrapped_towers(enc) == ["image"]
    params = lora_parameters(enc)
    assert params and all(p.requires_grad for p in params)
    trainable = [n for n, p in enc.model.visual.trunk.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    enc.model.eval()
    with torch.inference_mode():  # LoRA B starts at zero: a fresh adapter changes nothing
        assert torch.allclose(enc.model.encode_image(x, normalize=True), before, atol=1e-5)

    target = torch.nn.functional.normalize(torch.randn(len(x), enc.dim, generator=torch.Generator().manual_seed(1)),
                                           dim=-1)
    l1 = _image_step(enc, x, target, params)
    l2 = _image_step(enc, x, target, params)
    assert l2 < l1  # one SGD step on the adapters moved the loss
    enc.model.eval()
    with torch.inference_mode():
        adapted = enc.model.encode_image(x, normalize=True).clone()
    assert not torch.allclose(adapted, before, atol=1e-4)
    assert enc.refresh_fingerprint() != fp0  # cached vectors of the base model are not reused

    out = save_lora(enc, tmp_path / "adapters")
    f = out / "image" / "adapter_model.safetensors"
    assert f.is_file() and (out / "image" / "adapter_config.json").is_file()
    keys = list(load_file(str(f)))
    assert keys and all("lora_" in k for k in keys)
    full_bytes = sum(p.numel() * p.element_size() for p in enc.model.visual.parameters())
    assert f.stat().st_size < full_bytes / 20

    fresh = ImageEncoder(ImageEncoderConfig(image_size=IMG_SIZE))  # adapters round-trip onto a new encoder
    load_lora(fresh, out)
    fresh.model.eval()
    with torch.inference_mode():
        assert torch.allclose(fresh.model.encode_image(x, normalize=True), adapted, atol=1e-5)

    merge_lora(enc)
    assert wrapped_towers(enc) == []
    assert not any("lora_" in n for n, _ in enc.model.named_parameters())
    with torch.inference_mode():
        merged = enc.model.encode_image(x, normalize=True)
    assert torch.allclose(merged, adapted, atol=1e-5)


def test_text_lora_trains_a_step_and_merges(tmp_path):
    from safetensors.torch import load_file

    from mmrec.encoders.lora import apply_lora, lora_parameters, merge_lora, save_lora
    from mmrec.encoders.text import TextEncoder

    enc = TextEncoder(TextEncoderConfig(max_tokens=32))
    texts = ["a red dress with a floral print", "a science fiction film about robots", "a penguin on ice"]
    base = enc.encode(texts)
    fp0 = enc.fingerprint
    apply_lora(enc, LoRAConfig(enabled=True, rank=4, alpha=8, dropout=0.0, apply_to="text"))
    st = enc.model
    params = lora_parameters(enc)
    opt = torch.optim.SGD(params, lr=1.0)
    losses = []
    for _ in range(2):
        feats = st.tokenize(texts)
        emb = torch.nn.functional.normalize(st(feats)["sentence_embedding"], dim=-1)
        loss = (emb @ emb.t()).triu(1).sum()  # push the three texts apart
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[1] < losses[0]
    st.eval()
    adapted = enc.encode(texts)
    assert not np.allclose(adapted, base, atol=1e-4)
    assert enc.fingerprint != fp0 or enc.refresh_fingerprint() != fp0

    out = save_lora(enc, tmp_path / "text_adapters")
    keys = list(load_file(str(out / "text" / "adapter_model.safetensors")))
    assert keys and all("lora_" in k for k in keys)
    merge_lora(enc)
    np.testing.assert_allclose(enc.encode(texts), adapted, atol=1e-5)


def test_lora_config_errors():
    from mmrec.encoders.image import ImageEncoder
    from mmrec.encoders.lora import apply_lora, maybe_apply_lora
    from mmrec.errors import ConfigError, MMRecError

    assert maybe_apply_lora([None], LoRAConfig(enabled=False)) == {}
    enc = ImageEncoder(ImageEncoderConfig(image_size=IMG_SIZE))
    with pytest.raises(ConfigError, match="match no module"):
        apply_lora(enc, LoRAConfig(enabled=True, target_modules=["no_such_layer"]))
    with pytest.raises(MMRecError, match="no text"):
        maybe_apply_lora([enc], LoRAConfig(enabled=True, apply_to="both"))
